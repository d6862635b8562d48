//! The measuring scripts under `bench/` that the README and the results pages cite: they parse,
//! refuse bad arguments with a message before they start anything long, and the table maker
//! computes what its docstring says (QPS at a recall target, log-interpolated).

use std::path::{Path, PathBuf};
use std::process::Command;

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().expect("the interpreter runs");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn shell_scripts_parse_and_refuse_bad_arguments() {
    let dir = bench_dir();
    for script in ["graph-suite.sh", "build-times.sh", "memory-limit.sh"] {
        let path = dir.join(script);
        let (code, out) = run(Command::new("bash").arg("-n").arg(&path));
        assert_eq!(code, Some(0), "{script} does not parse: {out}");
        // No arguments: a usage line and a failure, nothing run.
        let (code, out) = run(Command::new("bash").arg(&path).current_dir(&dir));
        assert_ne!(code, Some(0), "{script} ran without arguments");
        assert!(
            out.contains("usage"),
            "{script} without arguments said: {out}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let (code, out) = run(Command::new("bash")
        .arg(dir.join("graph-suite.sh"))
        .arg(tmp.path().join("out"))
        .arg("no-such-set")
        .current_dir(tmp.path()));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("unknown set no-such-set"), "{out}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn graph_table_interpolates_qps_at_the_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let gyre = tmp.path().join("g.jsonl");
    let hnsw = tmp.path().join("h.csv");
    let row = |ef: u32, recall: f64, qps: f64| {
        format!(
            "{{\"index\":\"graph\",\"mode\":\"single\",\"threads\":1,\"ef\":{ef},\"recall\":{recall},\
             \"qps\":{qps},\"build_s\":12.5,\"resident_bytes_per_vector\":344.2}}\n"
        )
    };
    // Recall 0.95 lies halfway between 0.94 and 0.96 (the log-midpoint of 8,000 and 2,000 is
    // 4,000); 0.99 lies 6/7 of the way from 0.96 to 0.995 (2,000 · 0.5^(6/7) = 1,104); hnswlib
    // never reaches 0.99, so that ratio is "—". The batch row is ignored.
    let mut g = row(16, 0.94, 8000.0) + &row(64, 0.96, 2000.0) + &row(256, 0.995, 1000.0);
    g += "{\"index\":\"graph\",\"mode\":\"batch\",\"threads\":1,\"ef\":16,\"recall\":0.999,\"qps\":1e9,\
          \"build_s\":1,\"resident_bytes_per_vector\":1}\n";
    write(&gyre, &g);
    write(
        &hnsw,
        "recall,qps,mode,threads,build_s,index_bytes\n\
         0.90,5000,single,1,20.0,168400\n\
         0.95,2000,single,1,20.0,168400\n\
         0.98,500,single,1,20.0,168400\n",
    );
    let (code, out) = run(Command::new("python3")
        .arg(bench_dir().join("graph_table.py"))
        .args(["toy", "100"])
        .arg(&gyre)
        .arg(&hnsw));
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let (code, usage) = run(Command::new("python3")
        .arg(bench_dir().join("graph_table.py"))
        .args(["toy", "100"]));
    assert_ne!(code, Some(0), "{usage}");
    assert!(
        usage.contains("usage: bench/graph_table.py NAME ROWS"),
        "{usage}"
    );
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(
        lines[2],
        "| toy | gyre graph | 12.5 | 344 (graph, records, ids) | 4,000 | 1,104 | 0.9950 | 2.00× | — |"
    );
    assert_eq!(
        lines[3],
        "| toy | hnswlib M=16 efC=100 | 20.0 | 1684 (index) | 2,000 | — | 0.9800 | | |"
    );
}
