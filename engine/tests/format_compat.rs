//! Files of the previous format still open: `tests/data/format-v1` is a data directory written
//! by format 1 of the segment file (two collections: 4-bit MSE codes with a sign plane and f16
//! copies, with deletions; 3-bit prod codes with the QJL sections and f32 copies). Opened by
//! this build, every point reads back, and searches rank exactly as a collection rebuilt from
//! the same vectors in the current format does.

use gyre::random::SeededRng;
use gyre::{CollectionConfig, Database, Metric, RerankStorage, SearchOptions, Variant};

fn rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::for_data(seed);
    (0..n * d).map(|_| rng.gaussian() as f32).collect()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn format_1_segments_open_and_search_as_the_current_format() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-v1");
    let old = tempfile::tempdir().unwrap();
    copy_dir(&fixture, old.path());
    let db = Database::open(old.path()).unwrap();
    assert!(db.unavailable().is_empty(), "{:?}", db.unavailable());
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Database::open(fresh_dir.path()).unwrap();
    let ids: Vec<u64> = (0..40).collect();
    let cases = [
        (
            "mse",
            CollectionConfig {
                rerank: RerankStorage::F16,
                ..CollectionConfig::new(256)
            },
            rows(40, 256, 1),
            vec![3u64, 17, 39],
        ),
        (
            "prod",
            CollectionConfig {
                bits: 3,
                variant: Variant::Prod,
                metric: Metric::L2,
                ..CollectionConfig::new(16)
            },
            rows(40, 16, 2),
            vec![],
        ),
    ];
    for (name, config, data, deleted) in cases {
        let c = db.collection(name).unwrap();
        // Config files from before graphs keep scanning their segments.
        let config = CollectionConfig {
            index: gyre::SegmentIndex::Flat,
            ..config
        };
        assert_eq!(c.config(), &config, "{name}");
        let info = c.info().unwrap();
        assert_eq!(info.segments.len(), 1, "{name}");
        assert_eq!(c.len(), 40 - deleted.len(), "{name}");
        let d = config.dim;
        let got = c.get(&ids).unwrap();
        for (i, p) in got.iter().enumerate() {
            match p {
                None => assert!(deleted.contains(&(i as u64)), "{name}: {i} missing"),
                Some(p) => {
                    let v = p.vector.as_ref().unwrap();
                    for (a, b) in v.iter().zip(&data[i * d..(i + 1) * d]) {
                        let tol = if config.rerank == RerankStorage::F16 {
                            1e-2 * b.abs().max(1.0)
                        } else {
                            0.0
                        };
                        assert!((a - b).abs() <= tol, "{name}: row {i}: {a} vs {b}");
                    }
                }
            }
        }
        // The same rows in a segment of the current format: identical rankings and scores.
        let f = fresh.create_collection(name, config).unwrap();
        f.upsert(&ids, &data).unwrap();
        if !deleted.is_empty() {
            f.delete(&deleted).unwrap();
        }
        f.flush().unwrap();
        let queries = rows(5, d, 9);
        for code_only in [false, true] {
            let mut opts = SearchOptions::recommended(&config);
            opts.params.rescore = !code_only;
            let a = c.search_batch(&queries, 10, &opts).unwrap();
            let b = f.search_batch(&queries, 10, &opts).unwrap();
            assert_eq!(a, b, "{name}, code only: {code_only}");
        }
        // Old segments take part in writes and compaction like new ones.
        c.upsert(&[1000], &data[..d]).unwrap();
        c.flush().unwrap();
        assert!(c.compact().unwrap());
        c.verify().unwrap();
        assert_eq!(c.len(), 41 - deleted.len(), "{name}");
    }
}
