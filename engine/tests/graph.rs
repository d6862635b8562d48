//! Collections whose sealed segments carry a graph index: searched through the graph with the
//! recall of a scan, deletions never returned, filtered counts exact, the graph surviving
//! reopen and compaction, and a damaged graph reported as corruption.

use gyre::random::SeededRng;
use gyre::{
    CollectionConfig, Database, ErrorKind, ExactIndex, Metric, RerankStorage, SearchOptions,
    SearchParams, SegmentIndex,
};

const D: usize = 32;

/// Points around 40 centres (local structure, as embeddings have), and held-out queries of the
/// same clusters.
fn clustered(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::for_data(seed);
    let centres: Vec<f32> = (0..40 * D).map(|_| rng.gaussian() as f32).collect();
    let mut x = Vec::with_capacity(n * D);
    for i in 0..n {
        let c = &centres[(i * 7 % 40) * D..(i * 7 % 40 + 1) * D];
        x.extend(c.iter().map(|&v| v + 0.5 * rng.gaussian() as f32));
    }
    x
}

fn config(index: SegmentIndex) -> CollectionConfig {
    CollectionConfig {
        metric: Metric::Cosine,
        rerank: RerankStorage::F32,
        segment_rows: 2_000,
        compact_segments: 8,
        index,
        index_min_rows: 1_000,
        ..CollectionConfig::new(D)
    }
}

fn recall(got: &[gyre::Neighbor], truth: &[u64]) -> f64 {
    got.iter().filter(|n| truth.contains(&n.id)).count() as f64 / truth.len().max(1) as f64
}

/// Builds a collection of `n` points (ids `10 i`) in segments of 2,000 rows and waits for
/// them to seal.
fn build(dir: &std::path::Path, index: SegmentIndex, n: usize) -> (Database, Vec<f32>) {
    let db = Database::open(dir).unwrap();
    let c = db.create_collection("c", config(index)).unwrap();
    let x = clustered(n + 100, 1);
    let ids: Vec<u64> = (0..n as u64).map(|i| 10 * i).collect();
    for (chunk, rows) in ids.chunks(500).zip(x.chunks(500 * D)) {
        c.upsert(chunk, rows).unwrap();
    }
    c.flush().unwrap();
    (db, x)
}

#[test]
fn graph_segments_search_like_scans_and_never_return_deleted_points() {
    let n = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let (db, x) = build(dir.path(), SegmentIndex::Graph, n);
    let c = db.collection("c").unwrap();
    let info = c.info().unwrap();
    assert_eq!(info.segments.len(), 3, "{:?}", info.segments);
    assert!(
        info.segments.iter().all(|s| s.graph_bytes > 0),
        "every sealed segment of 2,000 rows has a graph: {:?}",
        info.segments
    );
    // Delete every third point.
    let deleted: Vec<u64> = (0..n as u64).step_by(3).map(|i| 10 * i).collect();
    c.delete(&deleted).unwrap();
    let keep: Vec<usize> = (0..n).filter(|i| i % 3 != 0).collect();
    let kept_x: Vec<f32> = keep
        .iter()
        .flat_map(|&i| x[i * D..(i + 1) * D].to_vec())
        .collect();
    let exact = ExactIndex::new(D, Metric::Cosine, &kept_x).unwrap();
    let queries = &x[n * D..];
    let k = 10;
    let opts = SearchOptions {
        params: SearchParams {
            oversample: 2,
            rescore: true,
            ef: 64,
            ..SearchParams::default()
        },
        ..Default::default()
    };
    let mut total = 0.0;
    for q in queries.chunks_exact(D) {
        let truth: Vec<u64> = exact
            .search(q, k)
            .unwrap()
            .iter()
            .map(|h| 10 * keep[h.id as usize] as u64)
            .collect();
        let hits = c.search(q, k, &opts).unwrap();
        assert_eq!(hits.len(), k);
        assert!(
            hits.iter().all(|h| (h.id / 10) % 3 != 0),
            "a deleted point came back"
        );
        total += recall(&hits, &truth);
    }
    let mean = total / 100.0;
    assert!(mean >= 0.9, "graph recall@10 {mean}");
    // The batch path walks the graphs too, with the same answers.
    let batch = c.search_batch(queries, k, &opts).unwrap();
    for (q, b) in queries.chunks_exact(D).zip(&batch) {
        let single: Vec<u64> = c
            .search(q, k, &opts)
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(b.iter().map(|h| h.id).collect::<Vec<_>>(), single);
    }
    // Reopened (a background merge may then drop the deleted rows), every segment still has
    // its graph.
    drop(c);
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    assert!(c.info().unwrap().segments.iter().all(|s| s.graph_bytes > 0));
    // Compaction merges them into one segment with a new graph over the live rows.
    c.compact().unwrap();
    let info = c.info().unwrap();
    assert_eq!(info.segments.len(), 1, "{:?}", info.segments);
    assert_eq!(info.segments[0].rows, keep.len() as u64);
    assert!(info.segments[0].graph_bytes > 0);
    let mut total = 0.0;
    for q in queries.chunks_exact(D) {
        let truth: Vec<u64> = exact
            .search(q, k)
            .unwrap()
            .iter()
            .map(|h| 10 * keep[h.id as usize] as u64)
            .collect();
        total += recall(&c.search(q, k, &opts).unwrap(), &truth);
    }
    assert!(
        total / 100.0 >= 0.9,
        "recall after compaction {}",
        total / 100.0
    );
}

#[test]
fn filtered_searches_over_graphs_return_exact_counts() {
    let n = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let (db, x) = build(dir.path(), SegmentIndex::Graph, n);
    let c = db.collection("c").unwrap();
    let q = &x[n * D..(n + 1) * D];
    let k = 10;
    // From one allowed point to all of them; the allowed ids spread over every cluster, so
    // most lie far from the query and the graph walk must route through refused rows.
    for allowed in [1usize, 5, 9, 10, 11, 50, 300, 1_500, 4_000] {
        let allow: roaring::RoaringTreemap = (0..allowed as u64)
            .map(|i| 10 * (i * 13 % n as u64))
            .collect();
        let opts = SearchOptions {
            params: SearchParams {
                rescore: true,
                ..SearchParams::default()
            },
            allow: Some(allow.clone()),
            ..Default::default()
        };
        let hits = c.search(q, k, &opts).unwrap();
        assert_eq!(hits.len(), k.min(allow.len() as usize), "allowed {allowed}");
        assert!(
            hits.iter().all(|h| allow.contains(h.id)),
            "allowed {allowed}"
        );
        // Exactly the allowed points the exact search ranks first (rerank on f32 copies).
        let exact = c
            .search(
                q,
                k,
                &SearchOptions {
                    exact: true,
                    ..opts.clone()
                },
            )
            .unwrap();
        let found = hits
            .iter()
            .filter(|h| exact.iter().any(|e| e.id == h.id))
            .count();
        assert!(
            found as f64 >= 0.8 * exact.len() as f64,
            "allowed {allowed}: {found} of {}",
            exact.len()
        );
    }
}

#[test]
fn flat_collections_build_no_graph_and_answer_the_same_ids() {
    let n = 3_000;
    let flat_dir = tempfile::tempdir().unwrap();
    let (flat_db, x) = build(flat_dir.path(), SegmentIndex::Flat, n);
    let flat = flat_db.collection("c").unwrap();
    assert!(
        flat.info()
            .unwrap()
            .segments
            .iter()
            .all(|s| s.graph_bytes == 0)
    );
    let graph_dir = tempfile::tempdir().unwrap();
    let (graph_db, _) = build(graph_dir.path(), SegmentIndex::Graph, n);
    let graph = graph_db.collection("c").unwrap();
    // The second segment holds 1,000 rows: exactly the minimum, so it is indexed.
    assert!(
        graph
            .info()
            .unwrap()
            .segments
            .iter()
            .all(|s| s.graph_bytes > 0)
    );
    let opts = SearchOptions {
        params: SearchParams {
            oversample: 4,
            rescore: true,
            ef: 200,
            ..SearchParams::default()
        },
        ..Default::default()
    };
    let mut same = 0;
    for q in x[n * D..].chunks_exact(D) {
        let a: Vec<u64> = flat
            .search(q, 10, &opts)
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        let b: Vec<u64> = graph
            .search(q, 10, &opts)
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        same += a.iter().filter(|id| b.contains(id)).count();
    }
    assert!(same >= 950, "{same} of 1000 ids agree");
}

#[test]
fn a_damaged_graph_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = build(dir.path(), SegmentIndex::Graph, 2_000);
    drop(db);
    let seg = std::fs::read_dir(dir.path().join("collections/c"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "gseg"))
        .unwrap();
    let pristine = std::fs::read(&seg).unwrap();
    // The graph is the last section: find it in the table (kind 16).
    let table_at = u64::from_le_bytes(
        pristine[pristine.len() - 32..pristine.len() - 24]
            .try_into()
            .unwrap(),
    ) as usize;
    let table = &pristine[table_at..pristine.len() - 32];
    let entry = table
        .chunks_exact(32)
        .find(|e| u32::from_le_bytes(e[0..4].try_into().unwrap()) == 16)
        .expect("a graph section");
    assert_eq!(
        u32::from_le_bytes(entry[4..8].try_into().unwrap()),
        1,
        "optional flag"
    );
    let off = u64::from_le_bytes(entry[8..16].try_into().unwrap()) as usize;
    let len = u64::from_le_bytes(entry[16..24].try_into().unwrap()) as usize;
    // A neighbour out of range: caught when the segment opens, even without verification.
    let mut bad = pristine.clone();
    let adjacency = off + 64 + (4 * 16usize).next_multiple_of(64);
    bad[adjacency..adjacency + 4].copy_from_slice(&5_000_000u32.to_le_bytes());
    std::fs::write(&seg, &bad).unwrap();
    let db = Database::open(dir.path()).unwrap();
    let e = db.collection("c").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(e.to_string().contains("graph"), "{e}");
    drop(db);
    // A flipped record byte: structurally fine, so a plain open works, and `verify` names it.
    let mut bad = pristine.clone();
    bad[off + len - 3] ^= 0x55;
    std::fs::write(&seg, &bad).unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    let e = c.verify().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(e.to_string().contains("Graph"), "{e}");
    drop((c, db));
    // A graph of another version (an older build's): derived data this build cannot walk, so
    // the segment opens without it and is scanned, with the same answers.
    let query: Vec<f32> = clustered(2_101, 1)[2_100 * D..].to_vec();
    let opts = SearchOptions::default();
    std::fs::write(&seg, &pristine).unwrap();
    let db = Database::open(dir.path()).unwrap();
    let with_graph = db
        .collection("c")
        .unwrap()
        .search(&query, 10, &opts)
        .unwrap();
    drop(db);
    let mut old = pristine.clone();
    old[off..off + 4].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&seg, &old).unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    c.verify().unwrap();
    let info = c.info().unwrap();
    assert!(info.segments.iter().all(|s| s.graph_bytes == 0), "{info:?}");
    let scanned = c.search(&query, 10, &opts).unwrap();
    let ids = |r: &[gyre::Neighbor]| r.iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(scanned.len(), 10);
    let common = ids(&scanned)
        .iter()
        .filter(|i| ids(&with_graph).contains(i))
        .count();
    assert!(common >= 9, "{:?} vs {:?}", ids(&scanned), ids(&with_graph));
}

#[test]
fn searches_run_while_compaction_builds_a_graph() {
    let n = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let (db, x) = build(dir.path(), SegmentIndex::Graph, n);
    let c = db.collection("c").unwrap();
    let deleted: Vec<u64> = (0..n as u64).step_by(2).map(|i| 10 * i).collect();
    c.delete(&deleted).unwrap();
    let queries = x[n * D..].to_vec();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let opts = SearchOptions::default();
            let mut searches = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || searches < 200 {
                let q = &queries[(searches % 100) * D..(searches % 100 + 1) * D];
                let hits = c.search(q, 10, &opts).unwrap();
                assert_eq!(hits.len(), 10);
                assert!(
                    hits.iter().all(|h| (h.id / 10) % 2 == 1),
                    "a deleted point came back"
                );
                searches += 1;
            }
            searches
        });
        // Merge the two segments (a new graph over the 2,000 live rows) while the reader runs;
        // a background merge the deletions triggered may be doing it already.
        let t = std::time::Instant::now();
        while c.info().unwrap().segments.len() > 1 || c.info().unwrap().deleted > 0 {
            c.compact().unwrap();
            assert!(t.elapsed().as_secs() < 60, "no merge within a minute");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() >= 200);
    });
    let info = c.info().unwrap();
    assert_eq!(info.segments.len(), 1);
    assert_eq!(info.segments[0].rows, (n / 2) as u64);
    assert!(info.segments[0].graph_bytes > 0);
}
