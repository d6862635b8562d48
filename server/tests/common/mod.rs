//! What the server test binaries share: starting the real `gyre serve` on free loopback
//! ports and stopping it by pid, deterministic rows, small request builders, raw HTTP GETs.

#![allow(dead_code, clippy::print_stderr)] // each test binary uses its own subset; skips say so

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use gyre_proto::v1 as pb;
use gyre_proto::v1::{
    admin_client::AdminClient, collections_client::CollectionsClient, points_client::PointsClient,
    search_client::SearchClient,
};
use tonic::transport::Channel;

/// One channel to a server and a client of each service on it.
pub struct Clients {
    pub ch: Channel,
    pub cols: CollectionsClient<Channel>,
    pub points: PointsClient<Channel>,
    pub search: SearchClient<Channel>,
    pub admin: AdminClient<Channel>,
}

/// The binary under test: this build's `gyre`, or `GYRE_TEST_BIN` (to run these tests
/// against another build, for instance an older one a fix is checked against).
pub fn gyre_bin() -> std::path::PathBuf {
    std::env::var_os("GYRE_TEST_BIN").map_or_else(|| env!("CARGO_BIN_EXE_gyre").into(), Into::into)
}

/// `gyre serve` on a free loopback port with `metrics` as its metrics address, `extra`
/// flags and `envs`; stdout piped (the chosen addresses are read from it).
pub fn serve_command(
    dir: &std::path::Path,
    metrics: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Command {
    let mut c = Command::new(gyre_bin());
    c.envs(envs.iter().copied())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            metrics,
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped());
    c
}

/// A temporary Python venv with `packages` installed by pip, or `None` after printing
/// `SKIPPED <what>: <why>` when python3, venv or the package index is missing.
pub fn venv_with(what: &str, packages: &[&str]) -> Option<tempfile::TempDir> {
    let skip = |why: &str| {
        eprintln!("SKIPPED {what}: {why}");
        None
    };
    if Command::new("python3").arg("--version").output().is_err() {
        return skip("python3 not found");
    }
    let venv = tempfile::tempdir().unwrap();
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !quiet(
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv.path()),
    ) {
        return skip("python3 -m venv failed");
    }
    if !quiet(
        Command::new(venv.path().join("bin/python"))
            .args(["-m", "pip", "install", "-q"])
            .args(packages),
    ) {
        return skip(&format!("pip could not install {}", packages.join(", ")));
    }
    Some(venv)
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub metrics: Option<String>,
}

impl Server {
    pub fn start(dir: &std::path::Path, extra: &[&str]) -> Server {
        Server::start_env(dir, extra, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    pub fn start_env(dir: &std::path::Path, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut child = serve_command(dir, "127.0.0.1:0", extra, envs)
            .stderr(match std::env::var_os("GYRE_TEST_SERVER_STDERR") {
                Some(_) => Stdio::inherit(),
                None => Stdio::null(),
            })
            .spawn()
            .expect("start gyre serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut addr, mut metrics) = (None, None);
        while addr.is_none() {
            let line = lines.next().expect("server output").unwrap();
            if let Some(rest) = line.strip_prefix("gyre: metrics on http://") {
                metrics = Some(rest.trim_end_matches("/metrics").to_string());
            }
            if let Some(rest) = line
                .strip_prefix("gyre: listening on http://")
                .or(line.strip_prefix("gyre: listening on https://"))
            {
                addr = Some(rest.split_whitespace().next().unwrap().to_string());
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr: addr.unwrap(),
            metrics,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    /// A new channel and a client of each service on it.
    pub async fn clients(&self) -> Clients {
        let ch = self.channel().await;
        Clients {
            cols: CollectionsClient::new(ch.clone()),
            points: PointsClient::new(ch.clone()),
            search: SearchClient::new(ch.clone()),
            admin: AdminClient::new(ch.clone()),
            ch,
        }
    }

    /// SIGTERM, then the exit status (graceful shutdown must exit 0).
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rows(n: usize, d: usize, seed: u32) -> Vec<f32> {
    // A small deterministic generator (no dependency on the engine's RNG in the protocol tests).
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n * d)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

pub fn create(name: &str, dim: u32) -> pb::CreateCollectionRequest {
    pb::CreateCollectionRequest {
        name: name.into(),
        dim,
        metric: pb::Metric::L2.into(),
        bits: 4,
        rerank: pb::RerankStorage::F32.into(),
        ..Default::default()
    }
}

pub fn fetch_metrics(addr: &str) -> String {
    fetch(addr, "/metrics")
}

pub fn fetch(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

pub fn with_key<T>(msg: T, key: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    r
}

/// Runs `gyre serve` with `args` and `envs`, expecting it to refuse to start: returns its
/// error output (panics if it started serving or did not exit within 30 s).
pub fn fails_to_start(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut child = serve_command(dir, "off", args, envs)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gyre serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            );
            assert!(
                !status.success(),
                "gyre serve {args:?} exited 0: {stdout}{stderr}"
            );
            assert!(!stdout.contains("listening"), "it served: {stdout}");
            return stderr;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("gyre serve {args:?} did not exit (it should refuse to start)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A codec that sends and receives raw message bytes, for requests no generated client can
/// make (malformed messages, unknown methods).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug)]
pub struct RawCoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;
    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }
    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl tonic::codec::Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// A generic gRPC client on `ch`, ready to send.
async fn ready(ch: Channel) -> Result<tonic::client::Grpc<Channel>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(grpc)
}

/// Sends `body` as the raw message of a unary call to `path`.
pub async fn raw_call(
    ch: Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = ready(ch).await?;
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Sends `messages` (raw bytes each) as a client stream to `path`.
pub async fn raw_stream(
    ch: Channel,
    path: &'static str,
    messages: Vec<Vec<u8>>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = ready(ch).await?;
    grpc.client_streaming(
        tonic::Request::new(tokio_stream::iter(messages)),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}
