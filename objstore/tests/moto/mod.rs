//! A real S3 server for tests: `moto_server` (PyPI `moto[server]`), installed once into a venv
//! under the target directory, started on a free loopback port and stopped (by pid) on drop.
//! Shared by the object-store tests of several crates (`#[path]`-included).
#![allow(dead_code, clippy::print_stderr)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The moto version the tests are written against.
const MOTO: &str = "moto[server]==5.2.5";

/// A running moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    port: u16,
}

fn venv_dir() -> PathBuf {
    // Integration tests get CARGO_TARGET_TMPDIR; one venv serves every crate's tests.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moto-venv")
}

/// Installs moto into the venv (once, under a file lock); `None` (after saying so) where pip
/// itself is missing.
fn install() -> Option<PathBuf> {
    let venv = venv_dir();
    let bin = venv.join("bin").join("moto_server");
    std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
    let lock = File::create(venv.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if bin.exists() {
        return Some(bin);
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_pip = Command::new(&python)
        .args(["-m", "pip", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_pip {
        eprintln!("SKIPPED: {python} -m pip is missing, so moto_server cannot be installed");
        return None;
    }
    eprintln!("installing {MOTO} into {} (once)", venv.display());
    let ok = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap()
        .success();
    assert!(ok, "python3 -m venv {} failed", venv.display());
    let ok = Command::new(venv.join("bin").join("pip"))
        .args(["install", "-q", MOTO])
        .status()
        .unwrap()
        .success();
    assert!(ok, "pip install {MOTO} failed");
    assert!(bin.exists(), "{} missing after install", bin.display());
    Some(bin)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One raw HTTP/1.1 request (moto accepts unsigned ones); returns the status code.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

impl Moto {
    /// Starts a server, or `None` where pip is missing (the caller skips visibly).
    pub fn start() -> Option<Moto> {
        let bin = install()?;
        let port = free_port();
        let log = File::create(venv_dir().with_file_name(format!("moto-{port}.log"))).unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let m = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        };
        let t = Instant::now();
        while http(port, "GET", "/").is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "moto_server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(m)
    }

    /// Creates a bucket.
    pub fn bucket(&self, name: &str) {
        let code = http(self.port, "PUT", &format!("/{name}")).unwrap();
        assert_eq!(code, 200, "creating bucket {name}");
    }

    /// Environment for a `gyre` child process reaching this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// Options reaching this server.
    pub fn options(&self) -> gyre_objstore::StoreOptions {
        gyre_objstore::StoreOptions {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            allow_http: true,
            credentials: Some(("testing".into(), "testing".into())),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of a data file shared with the engine's tests.
pub fn shared(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}
