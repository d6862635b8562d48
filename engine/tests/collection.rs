//! The embedded API over collections on disk: round trips through flush, reopen and
//! compaction, replacement and deletion across segments, filters, bad input.

use gyre::random::SeededRng;
use gyre::{
    CollectionConfig, Database, ErrorKind, ExactIndex, FlatIndex, Metric, RerankStorage,
    SearchOptions, SearchParams, Variant,
};

fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::for_data(seed);
    (0..n * d).map(|_| rng.gaussian() as f32).collect()
}

fn config(dim: usize, metric: Metric, bits: u8) -> CollectionConfig {
    CollectionConfig {
        metric,
        bits,
        segment_rows: 1_000_000,
        ..CollectionConfig::new(dim)
    }
}

fn ids_of(r: &[gyre::Neighbor]) -> Vec<u64> {
    r.iter().map(|n| n.id).collect()
}

/// A collection answers exactly as a `FlatIndex` holding the same rows, whether the rows sit
/// in the memtable, in one segment, in several, after reopening, or after compaction.
#[test]
fn searches_match_the_in_memory_index_through_flush_reopen_and_compaction() {
    for (d, bits, metric, variant) in [
        (48, 4, Metric::Cosine, Variant::Mse),
        (256, 4, Metric::Dot, Variant::Mse),
        (40, 2, Metric::L2, Variant::Mse),
        (24, 3, Metric::Cosine, Variant::Mse),
        (32, 3, Metric::Dot, Variant::Prod),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let n = 900;
        let rows = data(n, d, 1);
        let ids: Vec<u64> = (0..n as u64).map(|i| i * 7 + 3).collect();
        let queries = data(8, d, 2);
        let cfg = CollectionConfig {
            variant,
            ..config(d, metric, bits)
        };
        let mut flat = FlatIndex::new(cfg.quantizer(), metric, RerankStorage::F32).unwrap();
        flat.add(&ids, &rows).unwrap();
        // Every row reaches stage 2, so the answer cannot depend on how rows are split
        // between the memtable and segments (each source keeps its own candidates).
        let params = SearchParams {
            oversample: n,
            rescore: bits != 3,
            ..SearchParams::default()
        };
        let opts = SearchOptions {
            params,
            ..Default::default()
        };
        let want = flat.search_batch(&queries, 10, &params).unwrap();
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("c", cfg).unwrap();
        // Three batches, two flushes: memtable + two segments.
        c.upsert(&ids[..300], &rows[..300 * d]).unwrap();
        c.flush().unwrap();
        c.upsert(&ids[300..700], &rows[300 * d..700 * d]).unwrap();
        c.flush().unwrap();
        c.upsert(&ids[700..], &rows[700 * d..]).unwrap();
        let check = |label: &str, c: &gyre::Collection| {
            let got = c.search_batch(&queries, 10, &opts).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(ids_of(g), ids_of(w), "{label} d={d} bits={bits} {metric:?}");
                for (a, b) in g.iter().zip(w) {
                    assert!((a.score - b.score).abs() <= 1e-5 * b.score.abs().max(1.0));
                }
            }
            let single = c.search(&queries[..d], 10, &opts).unwrap();
            assert_eq!(ids_of(&single), ids_of(&want[0]), "{label} single");
        };
        check("memtable+segments", &c);
        let info = c.info().unwrap();
        assert_eq!(
            (info.live, info.segments.len(), info.memtable_rows),
            (n as u64, 2, 200)
        );
        drop(c);
        drop(db);
        let db = Database::open(dir.path()).unwrap();
        let c = db.collection("c").unwrap();
        check("reopened", &c);
        c.flush().unwrap();
        check("flushed", &c);
        assert!(c.compact().unwrap());
        check("compacted", &c);
        let info = c.info().unwrap();
        assert_eq!(
            (info.live, info.segments.len(), info.memtable_rows),
            (n as u64, 1, 0)
        );
        c.verify().unwrap();
        // Exact mode is brute force on the stored vectors.
        let exact = ExactIndex::new(d, metric, &rows).unwrap();
        let e = c
            .search(
                &queries[..d],
                10,
                &SearchOptions {
                    exact: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let oracle = exact.search(&queries[..d], 10).unwrap();
        assert_eq!(
            ids_of(&e),
            oracle
                .iter()
                .map(|o| ids[o.id as usize])
                .collect::<Vec<_>>()
        );
    }
}

/// Replacing and deleting ids that live in segments, in the memtable, or both.
#[test]
fn upserts_replace_and_deletes_remove_across_segments() {
    let d = 32;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db
        .create_collection("pts", config(d, Metric::L2, 4))
        .unwrap();
    let rows = data(200, d, 5);
    let ids: Vec<u64> = (0..200).collect();
    c.upsert(&ids, &rows).unwrap();
    c.flush().unwrap();
    // Replace id 5 with a copy of row 150 and id 150 with row 5 (now in the memtable).
    let mut swapped = rows[150 * d..151 * d].to_vec();
    swapped.extend_from_slice(&rows[5 * d..6 * d]);
    c.upsert(&[5, 150], &swapped).unwrap();
    let got = c.get(&[5, 150, 999]).unwrap();
    assert_eq!(
        got[0].as_ref().unwrap().vector.as_deref(),
        Some(&rows[150 * d..151 * d])
    );
    assert_eq!(
        got[1].as_ref().unwrap().vector.as_deref(),
        Some(&rows[5 * d..6 * d])
    );
    assert!(got[2].is_none());
    assert_eq!(c.len(), 200);
    // Searching with row 150 finds id 5 exactly (distance 0), never a stale copy.
    let opts = SearchOptions::default();
    let r = c.search(&rows[150 * d..151 * d], 3, &opts).unwrap();
    assert_eq!(r[0].id, 5);
    assert!(r[0].score.abs() < 1e-4);
    let mut unique = ids_of(&r);
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), r.len(), "a replaced id must not appear twice");
    // Deletes: in a segment, in the memtable, unknown, repeated.
    assert_eq!(c.delete(&[1, 5, 12345, 1]).unwrap(), 2);
    assert_eq!(c.len(), 198);
    let all = c.search(&rows[d..2 * d], 500, &opts).unwrap();
    assert_eq!(all.len(), 198);
    assert!(!all.iter().any(|n| n.id == 1 || n.id == 5));
    // Allowlist: only these ids, and min(k, allowed live) results.
    let allow: roaring::RoaringTreemap = [2u64, 3, 5, 150, 777].into_iter().collect();
    let r = c
        .search(
            &rows[..d],
            10,
            &SearchOptions {
                allow: Some(allow),
                ..Default::default()
            },
        )
        .unwrap();
    let mut got = ids_of(&r);
    got.sort_unstable();
    assert_eq!(got, vec![2, 3, 150]);
    // Everything survives a reopen, including the deletions in segments (WAL replay) and
    // after a flush (deletion files).
    drop(c);
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("pts").unwrap();
    assert_eq!(c.len(), 198);
    assert!(c.get(&[1]).unwrap()[0].is_none());
    c.flush().unwrap();
    drop(c);
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("pts").unwrap();
    assert_eq!(c.len(), 198);
    let info = c.info().unwrap();
    assert_eq!(info.deleted, 3, "{info:?}"); // ids 1, 5 and the replaced 150
    let seg_bytes: u64 = info.segments.iter().map(|s| s.bytes).sum();
    assert!(
        info.dead_bytes() > 0 && info.dead_bytes() < seg_bytes / 10,
        "{info:?}"
    );
    assert!(c.compact().unwrap());
    assert_eq!(c.info().unwrap().deleted, 0);
    assert_eq!(c.info().unwrap().dead_bytes(), 0);
    assert_eq!(
        c.get(&[150]).unwrap()[0]
            .as_ref()
            .unwrap()
            .vector
            .as_deref(),
        Some(&rows[5 * d..6 * d])
    );
    assert_eq!(c.search(&rows[..d], 500, &opts).unwrap().len(), 198);
}

#[test]
fn bad_input_gets_clear_errors() {
    let d = 16;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let cfg = CollectionConfig {
        rerank: RerankStorage::None,
        ..config(d, Metric::Cosine, 4)
    };
    let c = db.create_collection("a", cfg).unwrap();
    let row = data(1, d, 1);
    let kind = |r: gyre::Result<()>| r.unwrap_err().kind();
    assert_eq!(kind(c.upsert(&[1], &row[..d - 1])), ErrorKind::InvalidInput);
    assert_eq!(kind(c.upsert(&[1, 2], &row)), ErrorKind::InvalidInput);
    assert_eq!(kind(c.upsert(&[], &[])), ErrorKind::InvalidInput);
    let mut nan = row.clone();
    nan[3] = f32::NAN;
    assert_eq!(kind(c.upsert(&[1], &nan)), ErrorKind::InvalidInput);
    nan[3] = f32::INFINITY;
    assert_eq!(kind(c.upsert(&[1], &nan)), ErrorKind::InvalidInput);
    assert_eq!(kind(c.upsert(&[1], &vec![0.0; d])), ErrorKind::InvalidInput);
    assert_eq!(c.delete(&[]).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(c.len(), 0, "failed writes change nothing");
    // Duplicate ids in one batch: the last row wins.
    let two = data(2, d, 9);
    c.upsert(&[7, 7], &two).unwrap();
    assert_eq!(c.len(), 1);
    let r = c.search(&two[d..], 1, &SearchOptions::default()).unwrap();
    assert_eq!(r[0].id, 7);
    // Searches.
    let opts = SearchOptions::default();
    assert_eq!(
        c.search(&row, 0, &opts).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        c.search(&row[1..], 3, &opts).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let exact = SearchOptions {
        exact: true,
        ..Default::default()
    };
    assert!(
        c.search(&row, 3, &exact)
            .unwrap_err()
            .to_string()
            .contains("rerank")
    );
    // Collections.
    assert_eq!(
        db.collection("nope").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        db.drop_collection("nope").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let e = db.create_collection("a", cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let e = db
        .create_collection("a", config(d + 1, Metric::Dot, 2))
        .unwrap_err();
    assert!(e.to_string().contains("different configuration"), "{e}");
    for bad in ["", "a/b", "..", "-x", &"x".repeat(65)] {
        assert_eq!(
            db.create_collection(bad, cfg).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
    assert_eq!(
        db.create_collection("b", config(2, Metric::Dot, 4))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        db.create_collection("b", config(8, Metric::Dot, 9))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    // A second open of the same directory is refused and says who holds it.
    let e = Database::open(dir.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(
        e.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{e}"
    );
    // Drop and recreate.
    db.drop_collection("a").unwrap();
    // (A handle keeps the directory locked while it lives, even after its Database is gone.)
    drop(c);
    assert_eq!(db.list().unwrap(), Vec::<String>::new());
    let c = db
        .create_collection("a", config(d, Metric::Dot, 2))
        .unwrap();
    assert!(c.is_empty());
    drop(c);
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.list().unwrap(), vec!["a".to_string()]);
    assert_eq!(db.collection("a").unwrap().config().bits, 2);
}

/// Searches from several threads while one thread upserts, deletes, flushes and compacts:
/// no errors, and every result is consistent with some snapshot (ids unique, and every
/// returned id was written and not deleted before the search began ... or after).
/// Vectors of extreme magnitude: inside [MIN_NORM, MAX_NORM] a scaled copy of a stored vector
/// finds it first (code scan, rescoring and exact search alike) under every metric that
/// ranks by direction; outside it, stored vectors and queries alike get INVALID_INPUT naming
/// the range, never a wrong answer with success.
#[test]
fn extreme_magnitudes_are_exact_or_refused() {
    let d = 384;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let rows = data(300, d, 11);
    for metric in [Metric::Cosine, Metric::Dot] {
        let name = format!("m{metric:?}");
        let c = db.create_collection(&name, config(d, metric, 4)).unwrap();
        c.upsert(&(0..300).collect::<Vec<u64>>(), &rows).unwrap();
        let target = &rows[241 * d..242 * d];
        for exact in [false, true] {
            let mut opts = SearchOptions::recommended(c.config());
            opts.exact = exact;
            for scale in [1e-9f32, 1e-4, 1e4, 1e12] {
                let q: Vec<f32> = target.iter().map(|x| x * scale).collect();
                let r = c.search(&q, 1, &opts).unwrap();
                if metric == Metric::Cosine {
                    assert_eq!(r[0].id, 241, "{metric:?} exact={exact} scale {scale}");
                }
            }
            for q in [
                vec![1e-25f32; d],
                target.iter().map(|x| x * 1e-38).collect(),
            ] {
                let e = c.search(&q, 1, &opts).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
                assert!(e.to_string().contains("1e-10"), "{e}");
            }
        }
        for bad in [vec![1e-45f32; d], vec![1e-20f32; d], vec![1e14f32; d]] {
            let e = c.upsert(&[999], &bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(
                e.to_string().contains("row 0") && e.to_string().contains("1e15"),
                "{e}"
            );
        }
        assert_eq!(c.len(), 300);
    }
    // L2: a zero query is the distance to the origin, allowed; a tiny one too (distances
    // are dominated by the stored vectors).
    let c = db
        .create_collection("l2", config(d, Metric::L2, 4))
        .unwrap();
    c.upsert(&(0..300).collect::<Vec<u64>>(), &rows).unwrap();
    let opts = SearchOptions::recommended(c.config());
    assert_eq!(c.search(&vec![0.0; d], 3, &opts).unwrap().len(), 3);
    let e = c.upsert(&[999], &vec![1e-45f32; d]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

/// A memtable of many chunks is searched as one source: with the default (staged) parameters
/// a single search over it answers exactly as a `FlatIndex` holding the same rows, rescored or
/// not.
#[test]
fn a_memtable_of_many_chunks_searches_as_one_source() {
    let (n, d) = (20_000, 256);
    let dir = tempfile::tempdir().unwrap();
    let rows = data(n, d, 21);
    let ids: Vec<u64> = (0..n as u64).map(|i| i * 3 + 1).collect();
    let queries = data(20, d, 22);
    for rerank in [RerankStorage::F32, RerankStorage::None] {
        let cfg = CollectionConfig {
            rerank,
            ..config(d, Metric::Cosine, 4)
        };
        let mut flat = FlatIndex::new(cfg.quantizer(), Metric::Cosine, rerank).unwrap();
        flat.add(&ids, &rows).unwrap();
        let db = Database::open(dir.path()).unwrap();
        let name = format!("m{}", rerank.name());
        let c = db.create_collection(&name, cfg).unwrap();
        for (i, r) in ids.chunks(1000).zip(rows.chunks(1000 * d)) {
            c.upsert(i, r).unwrap();
        }
        assert_eq!(c.info().unwrap().memtable_rows, n as u64);
        let opts = SearchOptions::recommended(c.config());
        for q in queries.chunks_exact(d) {
            let want = flat.search(q, 10, &opts.params).unwrap();
            let got = c.search(q, 10, &opts).unwrap();
            assert_eq!(ids_of(&got), ids_of(&want), "{rerank:?}");
        }
    }
}

#[test]
fn concurrent_readers_and_a_writer() {
    let d = 32;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db
        .create_collection(
            "busy",
            CollectionConfig {
                segment_rows: 256,
                compact_segments: 3,
                ..config(d, Metric::Cosine, 4)
            },
        )
        .unwrap();
    let rows = data(3000, d, 3);
    // Ids below 1000 are written once and never deleted: every search must keep finding them.
    let stable: Vec<u64> = (0..1000).collect();
    c.upsert(&stable, &rows[..1000 * d]).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..3 {
            let c = c.clone();
            let rows = &rows;
            let done = &done;
            s.spawn(move || {
                let mut i = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let q = &rows[(i * 7 + t) % 1000 * d..][..d];
                    let r = c
                        .search(
                            q,
                            20,
                            &SearchOptions {
                                exact: true,
                                ..Default::default()
                            },
                        )
                        .unwrap();
                    assert_eq!(r.len(), 20);
                    let mut ids = ids_of(&r);
                    // The query is a stable row: it is its own nearest neighbour.
                    assert_eq!(ids[0], ((i * 7 + t) % 1000) as u64);
                    ids.sort_unstable();
                    ids.dedup();
                    assert_eq!(ids.len(), 20, "duplicate ids in one result");
                    i += 1;
                }
            });
        }
        for round in 0..20u64 {
            let lo = 1000 + (round as usize % 10) * 200;
            let ids: Vec<u64> = (lo as u64..lo as u64 + 200).collect();
            c.upsert(&ids, &rows[lo * d..(lo + 200) * d]).unwrap();
            c.delete(&ids[..50]).unwrap();
            if round % 5 == 4 {
                c.compact().unwrap();
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    c.flush().unwrap();
    c.compact().unwrap();
    assert!(c.len() >= 1000);
}
