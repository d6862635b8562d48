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

/// A small angular dataset with exact ground truth, written as ann-benchmarks HDF5.
fn small_dataset(tmp: &std::path::Path) -> std::path::PathBuf {
    use gyre_datasets::{AnnDataset, Distance, Matrix};
    let (n, nq, d) = (4000, 40, 32);
    let mut rng = gyre::random::SeededRng::for_data(3);
    let mut rows = |count: usize| {
        let mut v = vec![0.0f32; count * d];
        for r in v.chunks_exact_mut(d) {
            rng.unit_vector(r);
        }
        Matrix::new(count, d, v)
    };
    let (train, test) = (rows(n), rows(nq));
    let (neighbors, distances) =
        gyre_datasets::groundtruth::exact_neighbors(&train, &test, Distance::Angular, 10, |_| {})
            .unwrap();
    let file = tmp.join("small.hdf5");
    gyre_datasets::annb::write_hdf5(
        &file,
        &AnnDataset {
            train,
            test,
            neighbors,
            distances,
            distance: Distance::Angular,
        },
    )
    .unwrap();
    file
}

/// `gyre-bench recall --filter-selectivity` (the README's filtered-search command, on a small
/// dataset): one unfiltered and two filtered rows per selectivity, each carrying
/// `filter_selectivity` and `filter_kind`, with the filtered recall at the unfiltered level.
#[test]
fn filtered_recall_rows_carry_selectivity_and_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_dataset(tmp.path());
    let (ok, out, err) = gyre_bench(&[
        "recall",
        "--dataset",
        file.to_str().unwrap(),
        "--filter-selectivity",
        "0.1,0.01",
        "--bits",
        "4",
        "--oversample",
        "4",
        "--staged",
        "0",
        "--mode",
        "batch,single",
        "--runs",
        "1",
        "--json",
        "--data-dir",
        tmp.path().join("data").to_str().unwrap(),
        "--out",
        tmp.path().join("out").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("with 3-field payloads"), "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    // Per mode: the unfiltered reference, then keyword and range at each selectivity.
    assert_eq!(rows.len(), 2 * (1 + 2 * 2), "{out}");
    let base = rows[0]["recall"].as_f64().unwrap();
    for r in &rows {
        let s = r["filter_selectivity"]
            .as_f64()
            .expect("filter_selectivity");
        let kind = r["filter_kind"].as_str().expect("filter_kind");
        assert!(["none", "keyword", "range"].contains(&kind), "{r}");
        assert!(s > 0.0 && s <= 1.0);
        let recall = r["recall"].as_f64().unwrap();
        assert!(
            recall >= base - 0.1,
            "{kind} {s}: recall {recall} vs {base}"
        );
    }
    assert!(tmp.path().join("out/small-filtered.csv").exists());
}

/// `gyre-bench recall --index flat,graph` (the README's graph command, on a small dataset):
/// rows name their index; graph rows carry the effort, build seconds and resident bytes per
/// vector, and reach the flat scan's recall at a modest effort.
#[test]
fn graph_rows_carry_index_effort_and_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_dataset(tmp.path());
    let (ok, help, _) = gyre_bench(&["recall", "--help"]);
    assert!(ok && help.contains("--index") && help.contains("graph") && help.contains("--ef"));
    let (ok, out, err) = gyre_bench(&[
        "recall",
        "--dataset",
        file.to_str().unwrap(),
        "--algorithm",
        "gyre",
        "--index",
        "flat,graph",
        "--ef",
        "16,128",
        "--bits",
        "4",
        "--rerank",
        "f32",
        "--oversample",
        "2",
        "--mode",
        "single",
        "--runs",
        "1",
        "--json",
        "--out",
        tmp.path().join("out").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("rows linked in"), "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let flat: Vec<_> = rows.iter().filter(|r| r["index"] == "flat").collect();
    let graph: Vec<_> = rows.iter().filter(|r| r["index"] == "graph").collect();
    assert_eq!((flat.len(), graph.len()), (1, 2), "{out}");
    let efs: Vec<u64> = graph.iter().map(|r| r["ef"].as_u64().unwrap()).collect();
    assert_eq!(efs, [16, 128]);
    for r in &graph {
        let bpv = r["resident_bytes_per_vector"].as_f64().unwrap();
        // 24 neighbours × 4 bytes, a 32-byte record, the id: about 136 bytes at d = 32.
        assert!((100.0..200.0).contains(&bpv), "{bpv}");
        assert!(r["build_s"].as_f64().unwrap() > 0.0);
    }
    let flat_recall = flat[0]["recall"].as_f64().unwrap();
    let best = graph[1]["recall"].as_f64().unwrap();
    assert!(
        best >= flat_recall - 0.05,
        "graph {best} against flat {flat_recall}"
    );
    assert!(
        graph[1]["recall"].as_f64() >= graph[0]["recall"].as_f64(),
        "more effort, no less recall: {out}"
    );
}
