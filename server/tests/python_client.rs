//! Runs `examples/python/client.py` against a real server when Python is available: it
//! installs grpcio, grpcio-tools, h5py and numpy into a temporary venv, loads the shared
//! MiniLM set with payloads through `UpsertStream`, checks recall, a filtered search and count,
//! and a scroll. It says SKIPPED (and passes) when
//! python3, venv, the package index or the shared dataset is missing.
#![allow(clippy::print_stderr)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn skip(why: &str) {
    eprintln!("SKIPPED python client test: {why}");
}

#[test]
fn python_client_example_runs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dataset = root.join("../shared/datasets/docs-minilm-384-angular.hdf5");
    if !dataset.exists() {
        return skip(&format!("{} not found", dataset.display()));
    }
    let Some(venv) = common::venv_with(
        "python client test",
        &["grpcio", "grpcio-tools", "h5py", "numpy"],
    ) else {
        return;
    };
    let py = venv.path().join("bin/python");
    let data = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_gyre"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--data-dir",
        ])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server output").unwrap();
        if let Some(rest) = line.strip_prefix("gyre: listening on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let out = Command::new(&py)
        .arg(root.join("examples/python/client.py"))
        .args(["--target", &addr, "--queries", "200"])
        .arg("--dataset")
        .arg(Path::new(&dataset))
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client failed");
    assert!(stdout.contains("upserted 50000 points"), "{stdout}");
    assert!(stdout.contains("recall@10"), "{stdout}");
    assert!(stdout.contains("all matching: True"), "{stdout}");
    assert!(
        stdout.contains("scroll: ids [3, 10, 17, 24, 31]"),
        "{stdout}"
    );
}
