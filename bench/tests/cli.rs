//! The measuring tool end to end, as a user runs it.

use std::process::Command;

fn gyre_bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gyre-bench"))
        .args(args)
        .output()
        .expect("gyre-bench runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn same_seed_gives_identical_codes_in_two_processes() {
    for variant in ["mse", "prod"] {
        let args = [
            "fingerprint",
            "--dim",
            "384",
            "--bits",
            "3",
            "--variant",
            variant,
            "--seed",
            "11",
            "--vectors",
            "300",
        ];
        let (ok1, first, _) = gyre_bench(&args);
        let (ok2, second, _) = gyre_bench(&args);
        assert!(ok1 && ok2);
        assert!(first.contains("crc32c="), "{first}");
        assert_eq!(first, second, "two processes disagree");
        let mut other = args;
        other[8] = "12";
        assert_ne!(
            gyre_bench(&other).1.split("crc32c=").nth(1),
            first.split("crc32c=").nth(1)
        );
    }
}

#[test]
fn distortion_json_rows_have_the_documented_fields() {
    let (ok, out, err) = gyre_bench(&[
        "distortion",
        "--dim",
        "256",
        "--bits",
        "1,2",
        "--vectors",
        "2000",
        "--json",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(rows.len(), 2);
    for (row, bits) in rows.iter().zip([1, 2]) {
        for field in [
            "dim",
            "bits",
            "variant",
            "rotation",
            "vectors",
            "d_mse",
            "ip_bias",
            "ip_bias_stderr",
            "ip_var",
        ] {
            assert!(row.get(field).is_some(), "missing {field}: {row}");
        }
        assert_eq!(row["bits"], bits);
        let d_mse = row["d_mse"].as_f64().unwrap();
        let expected = row["d_mse_codebook"].as_f64().unwrap();
        assert!(
            (d_mse - expected).abs() < 0.05 * expected,
            "{d_mse} vs {expected}"
        );
    }
}

#[test]
fn bad_arguments_are_reported_not_panicked() {
    let (ok, _, err) = gyre_bench(&["distortion", "--dim", "2", "--bits", "4", "--vectors", "10"]);
    assert!(!ok);
    assert!(err.contains("unsupported dimension 2"), "{err}");
    let (ok, _, err) = gyre_bench(&[
        "distortion",
        "--dim",
        "64",
        "--bits",
        "9",
        "--vectors",
        "10",
    ]);
    assert!(!ok && err.contains("bit width 9"), "{err}");
    let (ok, _, err) = gyre_bench(&["distortion", "--variant", "fancy"]);
    assert!(!ok && err.contains("fancy"), "{err}");
    assert!(!err.contains("panicked"));
}

/// `gyre-bench churn` (steady upserts and deletes): the merge policy keeps deleted rows a
/// bounded share instead of letting them pile up with every sealed segment.
#[test]
fn churn_keeps_deleted_rows_bounded() {
    let dir = std::env::temp_dir().join(format!("gyre-churn-{}", std::process::id()));
    let (ok, out, err) = gyre_bench(&[
        "churn",
        "--live",
        "600",
        "--batch",
        "100",
        "--seconds",
        "3",
        "--dim",
        "16",
        "--segment-rows",
        "300",
        "--json",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(v["live"], 600, "{out}");
    let upserted = v["rows_upserted"].as_u64().unwrap();
    let deleted = v["deleted_end"].as_u64().unwrap();
    assert!(upserted >= 1800, "too few steps to say anything: {out}");
    // Without the deleted-rows trigger every sealed row but the live ones stays: ~upserted.
    assert!(deleted <= 3 * 600, "{deleted} deleted rows kept: {out}");
}
