use std::path::{Path, PathBuf};

use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gyre-datasets-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sample(rows: usize, dim: usize) -> Matrix<f32> {
    let mut rng = gyre::random::SeededRng::for_data(rows as u64 * 31 + dim as u64);
    Matrix::new(
        rows,
        dim,
        (0..rows * dim).map(|_| rng.gaussian() as f32).collect(),
    )
}

fn assert_malformed(result: Result<Matrix<f32>>, path: &Path, needle: &str) {
    match result {
        Err(e @ DatasetError::Malformed { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "error must name the file: {msg}"
            );
            assert!(msg.contains(needle), "expected {needle:?} in {msg}");
        }
        other => panic!(
            "expected a malformed-file error for {}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn every_float_format_round_trips_to_identical_vectors() {
    let dir = TempDir::new("roundtrip");
    let m = sample(57, 13);
    texmex::write_fvecs(&dir.path("a.fvecs"), &m).unwrap();
    bigann::write_fbin(&dir.path("a.fbin"), &m).unwrap();
    npy::write_npy_f32(&dir.path("a.npy"), &m).unwrap();
    for f in ["a.fvecs", "a.fbin", "a.npy"] {
        let back = read_vectors(&dir.path(f)).unwrap();
        assert_eq!(back, m, "{f}");
    }
}

#[test]
fn integer_formats_round_trip() {
    let dir = TempDir::new("ints");
    let ids = Matrix::new(3, 4, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, -1]);
    texmex::write_ivecs(&dir.path("g.ivecs"), &ids).unwrap();
    assert_eq!(texmex::read_ivecs(&dir.path("g.ivecs")).unwrap(), ids);
    bigann::write_ibin(&dir.path("g.ibin"), &ids).unwrap();
    assert_eq!(bigann::read_ibin(&dir.path("g.ibin")).unwrap(), ids);
    let bytes = Matrix::new(2, 3, vec![0u8, 128, 255, 1, 2, 3]);
    texmex::write_bvecs(&dir.path("b.bvecs"), &bytes).unwrap();
    assert_eq!(
        read_vectors(&dir.path("b.bvecs")).unwrap().as_slice(),
        &[0.0, 128.0, 255.0, 1.0, 2.0, 3.0]
    );
    let gt = bigann::GroundTruth {
        ids: Matrix::new(2, 2, vec![5u32, 7, 1, 0]),
        distances: Matrix::new(2, 2, vec![0.1f32, 0.2, 0.3, 0.4]),
    };
    bigann::write_groundtruth(&dir.path("gt.bin"), &gt).unwrap();
    assert_eq!(bigann::read_groundtruth(&dir.path("gt.bin")).unwrap(), gt);
}

#[test]
fn the_shared_query_file_reads_when_present() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets/docs-minilm-384-angular_query.fvecs");
    if !path.exists() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("SKIPPED: {} not present", path.display());
        }
        return;
    }
    let q = texmex::read_fvecs(&path).unwrap();
    assert_eq!((q.rows(), q.dim()), (1000, 384));
    let gt = texmex::read_ivecs(&path.with_file_name("docs-minilm-384-angular_groundtruth.ivecs"))
        .unwrap();
    assert_eq!((gt.rows(), gt.dim()), (1000, 100));
    let norm: f32 = q.row(0).iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

#[test]
fn truncated_and_inconsistent_files_are_refused_with_their_name() {
    let dir = TempDir::new("bad");
    let m = sample(10, 8);

    let p = dir.path("t.fvecs");
    texmex::write_fvecs(&p, &m).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    assert_malformed(texmex::read_fvecs(&p), &p, "truncated");
    // A record with another dimension but the same total size.
    let mut mixed = bytes.clone();
    mixed[36..40].copy_from_slice(&9i32.to_le_bytes());
    std::fs::write(&p, &mixed).unwrap();
    assert_malformed(texmex::read_fvecs(&p), &p, "vector 1");
    std::fs::write(&p, (-4i32).to_le_bytes()).unwrap();
    assert_malformed(texmex::read_fvecs(&p), &p, "dimension -4");
    std::fs::write(&p, b"").unwrap();
    assert_malformed(texmex::read_fvecs(&p), &p, "empty");

    let p = dir.path("t.fbin");
    bigann::write_fbin(&p, &m).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
    assert_malformed(bigann::read_fbin(&p), &p, "header says 10 × 8");
    let mut wrong = bytes.clone();
    wrong[..4].copy_from_slice(&11u32.to_le_bytes());
    std::fs::write(&p, &wrong).unwrap();
    assert_malformed(bigann::read_fbin(&p), &p, "header says 11 × 8");
    std::fs::write(&p, [1u8, 2, 3]).unwrap();
    assert_malformed(bigann::read_fbin(&p), &p, "shorter than the 8-byte header");

    let p = dir.path("t.npy");
    npy::write_npy_f32(&p, &m).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    assert_malformed(npy::read_npy_f32(&p), &p, "needs 320 data bytes");
    std::fs::write(&p, b"NOTNUMPY-----").unwrap();
    assert_malformed(npy::read_npy_f32(&p), &p, "magic");
    let mut f8 = bytes.clone();
    let at = f8.windows(3).position(|w| w == b"<f4").unwrap();
    f8[at..at + 3].copy_from_slice(b"<f8");
    std::fs::write(&p, &f8).unwrap();
    assert!(matches!(
        npy::read_npy_f32(&p),
        Err(DatasetError::Unsupported { .. })
    ));

    // A Fortran-ordered array reads back in row order.
    let mut fortran = bytes.clone();
    let at = fortran.windows(5).position(|w| w == b"False").unwrap();
    fortran[at..at + 5].copy_from_slice(b"True ");
    let values: Vec<f32> = m.as_slice().to_vec();
    let data_start = bytes.len() - 4 * values.len();
    for j in 0..m.dim() {
        for i in 0..m.rows() {
            let v = values[i * m.dim() + j].to_le_bytes();
            let at = data_start + 4 * (j * m.rows() + i);
            fortran[at..at + 4].copy_from_slice(&v);
        }
    }
    std::fs::write(&p, &fortran).unwrap();
    assert_eq!(npy::read_npy_f32(&p).unwrap(), m);

    let missing = dir.path("missing.fvecs");
    let err = texmex::read_fvecs(&missing).unwrap_err();
    assert!(
        matches!(err, DatasetError::Io { .. }) && err.to_string().contains("missing.fvecs"),
        "{err}"
    );
    assert!(matches!(
        read_vectors(&dir.path("x.csv")),
        Err(DatasetError::Unsupported { .. })
    ));
}

fn small_dataset() -> AnnDataset {
    let train = sample(300, 12);
    let test = sample(17, 12);
    let (neighbors, distances) =
        groundtruth::exact_neighbors(&train, &test, Distance::Angular, 10, |_| {}).unwrap();
    AnnDataset {
        train,
        test,
        neighbors,
        distances,
        distance: Distance::Angular,
    }
}

#[test]
fn hdf5_fvecs_ivecs_and_fbin_hold_identical_data() {
    let dir = TempDir::new("same");
    let ds = small_dataset();
    annb::write_hdf5(&dir.path("d.hdf5"), &ds).unwrap();
    texmex::write_fvecs(&dir.path("train.fvecs"), &ds.train).unwrap();
    texmex::write_fvecs(&dir.path("test.fvecs"), &ds.test).unwrap();
    texmex::write_ivecs(&dir.path("gt.ivecs"), &ds.neighbors).unwrap();
    bigann::write_fbin(&dir.path("train.fbin"), &ds.train).unwrap();

    let back = annb::read_hdf5(&dir.path("d.hdf5")).unwrap();
    assert_eq!(back, ds);
    assert_eq!(read_vectors(&dir.path("train.fvecs")).unwrap(), back.train);
    assert_eq!(read_vectors(&dir.path("train.fbin")).unwrap(), back.train);
    assert_eq!(read_vectors(&dir.path("test.fvecs")).unwrap(), back.test);
    assert_eq!(
        texmex::read_ivecs(&dir.path("gt.ivecs")).unwrap(),
        back.neighbors
    );
}

#[test]
fn ground_truth_matches_a_naive_sort() {
    let ds = small_dataset();
    for q in 0..ds.test.rows() {
        let mut all: Vec<(f64, i32)> = (0..ds.train.rows())
            .map(|i| {
                (
                    Distance::Angular.between(ds.test.row(q), ds.train.row(i)),
                    i as i32,
                )
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let want: Vec<i32> = all[..10].iter().map(|a| a.1).collect();
        assert_eq!(ds.neighbors.row(q), &want[..], "query {q}");
        assert!(ds.distances.row(q).windows(2).all(|w| w[0] <= w[1]));
    }
}

#[test]
fn malformed_hdf5_files_are_refused_with_their_name() {
    let dir = TempDir::new("badh5");
    let ds = small_dataset();
    let p = dir.path("d.hdf5");
    annb::write_hdf5(&p, &ds).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    for (what, broken) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("header", {
            let mut b = bytes.clone();
            b[..8].copy_from_slice(b"NOTHDF5!");
            b
        }),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&p, &broken).unwrap();
        let err = annb::read_hdf5(&p).unwrap_err();
        assert!(
            matches!(err, DatasetError::Malformed { .. }) && err.to_string().contains("d.hdf5"),
            "{what}: {err}"
        );
    }
    // Inconsistent parts: ground truth for fewer queries than the file has.
    let mut short = small_dataset();
    short.neighbors = Matrix::new(1, 10, short.neighbors.as_slice()[..10].to_vec());
    let err = annb::write_hdf5(&p, &short).unwrap_err();
    assert!(err.to_string().contains("17 test queries"), "{err}");
    // Ids outside train.
    let mut bad_ids = small_dataset();
    let mut ids = bad_ids.neighbors.clone().into_vec();
    ids[3] = 300;
    bad_ids.neighbors = Matrix::new(17, 10, ids);
    assert!(
        annb::write_hdf5(&p, &bad_ids)
            .unwrap_err()
            .to_string()
            .contains("outside train")
    );
}

#[test]
fn shared_dataset_ground_truth_is_reproduced() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets/docs-minilm-384-angular.hdf5");
    if !path.exists() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("SKIPPED: {} not present", path.display());
        }
        return;
    }
    let ds = annb::read_hdf5(&path).unwrap();
    assert_eq!(
        (ds.train.rows(), ds.train.dim(), ds.test.rows()),
        (50_000, 384, 1000)
    );
    assert_eq!(ds.distance, Distance::Angular);
    // The first 100 queries: our exact top-10 must be within the stored 10th distance + 1e-3
    // (the ann-benchmarks hit rule), i.e. recall 1.
    let test = Matrix::new(100, 384, ds.test.as_slice()[..100 * 384].to_vec());
    let (ids, _) =
        groundtruth::exact_neighbors(&ds.train, &test, Distance::Angular, 10, |_| {}).unwrap();
    for q in 0..100 {
        let limit = f64::from(ds.distances.row(q)[9]) + 1e-3;
        for &id in ids.row(q) {
            let d = Distance::Angular.between(test.row(q), ds.train.row(id as usize));
            assert!(d <= limit, "query {q}: id {id} at {d} beyond {limit}");
        }
    }
}
