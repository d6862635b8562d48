//! The data-directory commands: import, info, search, verify (including on a damaged file),
//! compact, snapshot; and a locked directory while another process holds it.

use std::path::Path;
use std::process::Command;

fn gyre(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gyre"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A TEXMEX .fvecs file: per row, the dimension as i32 then the floats.
fn write_fvecs(path: &Path, rows: &[Vec<f32>]) {
    let mut b = Vec::new();
    for r in rows {
        b.extend_from_slice(&(r.len() as i32).to_le_bytes());
        for x in r {
            b.extend_from_slice(&x.to_le_bytes());
        }
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn import_info_search_verify_compact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = tmp.path().join("v.fvecs");
    let rows: Vec<Vec<f32>> = (0..500)
        .map(|i| {
            (0..16)
                .map(|j| ((i * 31 + j * 7) % 97) as f32 - 48.0)
                .collect()
        })
        .collect();
    write_fvecs(&file, &rows);
    let (ok, out) = gyre(
        &[
            "import",
            "--collection",
            "v",
            "--dataset",
            file.to_str().unwrap(),
            "--metric",
            "l2",
            "--batch",
            "128",
        ],
        &dir,
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("imported 500 vectors of dimension 16"),
        "{out}"
    );
    let (ok, out) = gyre(&["info", "--json"], &dir);
    assert!(ok, "{out}");
    let info: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(info["points"], 500);
    assert_eq!(info["metric"], "l2");
    assert_eq!(info["segments"].as_array().unwrap().len(), 1);
    // Row 42 finds itself first, at distance 0.
    let q: Vec<String> = rows[42].iter().map(|x| x.to_string()).collect();
    let (ok, out) = gyre(
        &[
            "search",
            "--collection",
            "v",
            "--k",
            "3",
            "--vector",
            &q.join(","),
        ],
        &dir,
    );
    assert!(ok, "{out}");
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("42\t"), "{out}");
    // Import again into the same collection: ids 0..500 are replaced, not duplicated.
    let (ok, out) = gyre(
        &[
            "import",
            "--collection",
            "v",
            "--dataset",
            file.to_str().unwrap(),
        ],
        &dir,
    );
    assert!(ok, "{out}");
    assert!(out.contains("(500 live points)"), "{out}");
    let (ok, out) = gyre(&["compact"], &dir);
    assert!(ok, "{out}");
    assert!(
        out.contains("compacted") && out.contains("500 points"),
        "{out}"
    );
    let (ok, out) = gyre(&["verify"], &dir);
    assert!(ok && out.contains("v: ok"), "{out}");
    // Damage a section byte: verify fails and names the file.
    let seg = std::fs::read_dir(dir.join("collections/v"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "gseg"))
        .unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    let n = b.len();
    b[n / 2] ^= 0xff;
    std::fs::write(&seg, b).unwrap();
    let (ok, out) = gyre(&["verify"], &dir);
    assert!(!ok, "{out}");
    assert!(
        out.contains(seg.file_name().unwrap().to_str().unwrap()),
        "{out}"
    );
    // Bad input is refused with a message.
    let (ok, out) = gyre(&["search", "--collection", "v", "--vector", "1,2"], &dir);
    assert!(!ok && out.contains("dimension"), "{out}");
    let (ok, out) = gyre(&["info"], &tmp.path().join("nowhere"));
    assert!(!ok && out.contains("not a Gyre data directory"), "{out}");
}

/// `gyre snapshot create|list|restore|delete`: a snapshot taken, the collection changed, the
/// snapshot restored over it (and beside it), listed as JSON, and removed.
#[test]
fn snapshot_create_list_restore_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = tmp.path().join("v.fvecs");
    let rows: Vec<Vec<f32>> = (0..300)
        .map(|i| {
            (0..8)
                .map(|j| ((i * 13 + j * 5) % 41) as f32 - 20.0)
                .collect()
        })
        .collect();
    write_fvecs(&file, &rows[..200]);
    let f = file.to_str().unwrap();
    let (ok, out) = gyre(&["import", "--collection", "v", "--dataset", f], &dir);
    assert!(ok, "{out}");
    let (ok, out) = gyre(
        &[
            "snapshot",
            "create",
            "--collection",
            "v",
            "--name",
            "before",
        ],
        &dir,
    );
    assert!(ok, "{out}");
    assert!(out.contains("created v/before: 200 points"), "{out}");
    // More points after the snapshot.
    write_fvecs(&file, &rows[200..]);
    let (ok, out) = gyre(
        &[
            "import",
            "--collection",
            "v",
            "--dataset",
            f,
            "--first-id",
            "200",
        ],
        &dir,
    );
    assert!(ok && out.contains("(300 live points)"), "{out}");
    let (ok, out) = gyre(&["snapshot", "list", "--json"], &dir);
    assert!(ok, "{out}");
    let l: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (l["name"].as_str(), l["points"].as_u64()),
        (Some("before"), Some(200))
    );
    // Restoring over the collection needs --replace.
    let args = [
        "snapshot",
        "restore",
        "--collection",
        "v",
        "--name",
        "before",
    ];
    let (ok, out) = gyre(&args, &dir);
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = gyre(&[&args[..], &["--replace"]].concat(), &dir);
    assert!(
        ok && out.contains("restored v/before as v (200 points)"),
        "{out}"
    );
    let (ok, out) = gyre(&[&args[..], &["--target", "w"]].concat(), &dir);
    assert!(ok && out.contains("as w (200 points)"), "{out}");
    let (ok, out) = gyre(&["info", "--json", "--collection", "v"], &dir);
    assert!(ok, "{out}");
    let info: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(info["points"], 200);
    let (ok, out) = gyre(
        &[
            "snapshot",
            "delete",
            "--collection",
            "v",
            "--name",
            "before",
        ],
        &dir,
    );
    assert!(ok, "{out}");
    let (ok, out) = gyre(&args, &dir);
    assert!(
        !ok && out.contains("snapshot \"before\" of collection \"v\" not found"),
        "{out}"
    );
    let (ok, out) = gyre(&["snapshot", "list"], &dir);
    assert!(ok && out.trim().is_empty(), "{out}");
}

/// Every `gyre` command the README shows parses: each `cargo run --release --bin gyre -- …`
/// line (continuations joined) is run with `--help` appended, which clap answers only once
/// every flag before it is known (a renamed or removed flag fails here, so the README cannot
/// drift from the CLI). Environment references such as `"$WRITE_KEY"` are replaced by a value.
#[test]
fn readme_gyre_commands_parse() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let mut lines = Vec::new();
    let mut cur = String::new();
    for l in readme.lines() {
        let l = l.trim();
        if cur.is_empty() && !l.starts_with("cargo run --release --bin gyre -- ") {
            continue;
        }
        cur.push_str(l.trim_end_matches('\\'));
        cur.push(' ');
        if !l.ends_with('\\') {
            lines.push(std::mem::take(&mut cur));
        }
    }
    assert!(
        lines.len() >= 10,
        "found only {} gyre commands in the README",
        lines.len()
    );
    for line in &lines {
        let rest = line.trim_start_matches("cargo run --release --bin gyre -- ");
        let args: Vec<String> = rest
            .split_whitespace()
            .map(|a| {
                let a = a.trim_matches('"');
                if a.starts_with('$') {
                    "0123456789abcdef0123".to_string()
                } else {
                    a.to_string()
                }
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_gyre"))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README command does not parse: gyre {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
