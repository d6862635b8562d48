//! A writer publishing to a real S3 server (moto) and query nodes following it: docs-minilm
//! served with the writer's recall, writes visible after a seal, racing writers, a writer
//! killed before its commit, garbage collection, checksums.
#![allow(clippy::print_stderr)]

mod moto;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gyre::directory::Directory;
use gyre::random::SeededRng;
use gyre::{CollectionConfig, Database, ErrorKind, Metric, SearchOptions};
use gyre_objstore::ObjectDirectory;
use gyre_objstore::replica::{Follower, Publisher, published};
use moto::Moto;

fn store(m: &Moto, bucket: &str) -> ObjectDirectory {
    m.bucket(bucket);
    ObjectDirectory::open(&format!("s3://{bucket}/gyre"), &m.options()).unwrap()
}

fn ids(v: &[gyre::Neighbor]) -> Vec<u64> {
    v.iter().map(|n| n.id).collect()
}

#[test]
fn writer_and_two_query_nodes_serve_docs() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets/docs-minilm-384-angular.hdf5");
    if !path.exists() {
        eprintln!("SKIPPED: {} not found", path.display());
        return;
    }
    let Some(m) = Moto::start() else { return };
    let s = store(&m, "replica");
    let ds = gyre_datasets::annb::read_hdf5(&path).unwrap();
    let (n, d) = (ds.train.rows(), ds.train.dim());
    let w = tempfile::tempdir().unwrap();
    let db = Database::open(w.path()).unwrap();
    let c = db
        .create_collection("docs", CollectionConfig::new(d))
        .unwrap();
    let all: Vec<u64> = (0..n as u64).collect();
    for (i, chunk) in ds.train.as_slice().chunks(10_000 * d).enumerate() {
        c.upsert(&all[i * 10_000..i * 10_000 + chunk.len() / d], chunk)
            .unwrap();
    }
    c.flush().unwrap();
    let publisher = Publisher::new(s.clone(), "writer-1", Duration::from_secs(60));
    let t = Instant::now();
    assert_eq!(publisher.publish(&db, "docs").unwrap(), Some(1));
    eprintln!(
        "published {n} vectors in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        publisher.publish(&db, "docs").unwrap(),
        None,
        "nothing moved"
    );
    assert_eq!(published(&s).unwrap(), [("docs".to_string(), 1)]);

    let nodes: Vec<_> = (0..2)
        .map(|i| {
            let dir = tempfile::tempdir().unwrap();
            let ndb = Database::open(dir.path().join("data")).unwrap();
            // Node 1's cache holds only what it serves.
            let bound = if i == 0 { 1 << 40 } else { 1 };
            let f = Follower::new(s.clone(), &dir.path().join("cache"), bound).unwrap();
            let t = Instant::now();
            let r = f.sync(&ndb).unwrap();
            eprintln!(
                "query node {i}: {} bytes downloaded and opened in {:.2} s",
                r.downloaded,
                t.elapsed().as_secs_f64()
            );
            assert_eq!(r.updated, [("docs".to_string(), 1)]);
            (dir, ndb, f)
        })
        .collect();
    let opts = SearchOptions::default();
    let recall = |c: &gyre::Collection| {
        let mut hit = 0;
        for qi in 0..ds.test.rows() {
            let got = ids(&c.search(ds.test.row(qi), 10, &opts).unwrap());
            let want = &ds.neighbors.row(qi)[..10];
            hit += got.iter().filter(|&&g| want.contains(&(g as i32))).count();
        }
        hit as f64 / (10 * ds.test.rows()) as f64
    };
    // Latency on a query node just opened (first pass: its maps not yet touched) and warm.
    {
        let qc = nodes[0].1.collection("docs").unwrap();
        for pass in ["cold", "warm"] {
            let mut lat: Vec<f64> = (0..ds.test.rows())
                .map(|qi| {
                    let t = Instant::now();
                    qc.search(ds.test.row(qi), 10, &opts).unwrap();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            lat.sort_by(f64::total_cmp);
            let p = |x: f64| lat[((lat.len() - 1) as f64 * x) as usize];
            eprintln!(
                "query node {pass} latency over {} queries: p50 {:.3} ms, p99 {:.3} ms",
                lat.len(),
                p(0.5),
                p(0.99)
            );
        }
    }
    let local = recall(&c);
    for (i, (_, ndb, _)) in nodes.iter().enumerate() {
        let qc = ndb.collection("docs").unwrap();
        assert_eq!(qc.len(), n);
        let r = recall(&qc);
        eprintln!("recall@10: writer {local:.4}, query node {i} {r:.4}");
        assert_eq!(r, local, "query node {i}");
        for qi in (0..ds.test.rows()).step_by(37) {
            let q = ds.test.row(qi);
            assert_eq!(
                ids(&qc.search(q, 10, &opts).unwrap()),
                ids(&c.search(q, 10, &opts).unwrap())
            );
        }
    }

    // Writes after the seal: invisible on the query nodes until sealed and published.
    let fresh = 1_000_000u64;
    c.upsert(&[fresh], ds.test.row(0)).unwrap();
    c.delete(&[ds.neighbors.row(1)[0] as u64]).unwrap();
    for (_, ndb, f) in &nodes {
        assert!(f.sync(ndb).unwrap().updated.is_empty());
        let top = ids(&ndb
            .collection("docs")
            .unwrap()
            .search(ds.test.row(0), 1, &opts)
            .unwrap());
        assert_ne!(top, [fresh]);
    }
    let t = Instant::now();
    c.flush().unwrap();
    assert_eq!(publisher.publish(&db, "docs").unwrap(), Some(2));
    for (i, (dir, ndb, f)) in nodes.iter().enumerate() {
        let r = f.sync(ndb).unwrap();
        eprintln!(
            "seal to visible on query node {i}: {:.3} s ({} bytes downloaded, {} evicted, cache {} bytes)",
            t.elapsed().as_secs_f64(),
            r.downloaded,
            r.evicted,
            f.cache_bytes().unwrap()
        );
        assert_eq!(r.updated, [("docs".to_string(), 2)]);
        let qc = ndb.collection("docs").unwrap();
        assert_eq!(ids(&qc.search(ds.test.row(0), 1, &opts).unwrap()), [fresh]);
        let gone = ds.neighbors.row(1)[0] as u64;
        assert!(qc.get(&[gone]).unwrap()[0].is_none());
        assert!(!ids(&qc.search(ds.test.row(1), 10, &opts).unwrap()).contains(&gone));
        assert_eq!(qc.len(), n);
        // A restarted query node serves from its cache before (and without) the store.
        drop(qc);
        let again = Database::open(dir.path().join("data"));
        assert!(again.is_err(), "the data directory is held while open");
    }
    // Node 0 keeps everything; node 1's cache holds only files being served.
    let cached: Vec<u64> = nodes
        .iter()
        .map(|(_, _, f)| f.cache_bytes().unwrap())
        .collect();
    assert!(cached[1] <= cached[0], "{cached:?}");
}

fn small(db: &Database, seed: u64, n: usize) -> gyre::Collection {
    let c = db
        .create_collection(
            "v",
            CollectionConfig {
                metric: Metric::Cosine,
                ..CollectionConfig::new(16)
            },
        )
        .or_else(|_| db.collection("v"))
        .unwrap();
    let mut rng = SeededRng::for_data(seed);
    let rows: Vec<f32> = (0..n * 16).map(|_| rng.gaussian() as f32).collect();
    let base = c.len() as u64;
    let ids: Vec<u64> = (base..base + n as u64).collect();
    c.upsert(&ids, &rows).unwrap();
    c.flush().unwrap();
    c
}

#[test]
fn two_writers_never_both_commit() {
    let Some(m) = Moto::start() else { return };
    let s = store(&m, "race");
    // A held lease refuses a second writer, naming the holder.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (da, dbb) = (
        Database::open(a.path()).unwrap(),
        Database::open(b.path()).unwrap(),
    );
    small(&da, 1, 500);
    small(&dbb, 2, 700);
    let pa = Publisher::new(s.clone(), "a", Duration::from_secs(60));
    let pb = Publisher::new(s.clone(), "b", Duration::from_secs(60));
    assert_eq!(pa.publish(&da, "v").unwrap(), Some(1));
    let e = pb.publish(&dbb, "v").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains("held by writer \"a\""), "{e}");

    // Leases that expire at once: both race for every step; exactly one commits each round.
    let s = store(&m, "race2");
    for round in 0..5 {
        let (x, y) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (dx, dy) = (
            Database::open(x.path()).unwrap(),
            Database::open(y.path()).unwrap(),
        );
        small(&dx, 10 + round, 300);
        small(&dy, 20 + round, 300);
        let before = published(&s).unwrap().first().map_or(0, |p| p.1);
        let px = Publisher::new(s.clone(), &format!("x{round}"), Duration::ZERO);
        let py = Publisher::new(s.clone(), &format!("y{round}"), Duration::ZERO);
        let (rx, ry) = std::thread::scope(|t| {
            let hx = t.spawn(|| px.publish(&dx, "v"));
            let hy = t.spawn(|| py.publish(&dy, "v"));
            (hx.join().unwrap(), hy.join().unwrap())
        });
        let won = usize::from(rx.is_ok()) + usize::from(ry.is_ok());
        assert_eq!(won, 1, "round {round}: {rx:?} {ry:?}");
        let lost = if rx.is_ok() { &ry } else { &rx };
        let e = lost.as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "round {round}: {e}");
        assert_eq!(published(&s).unwrap()[0].1, before + 1);
    }
    // Every version's files are whole: a follower opens the newest and verifies it.
    let q = tempfile::tempdir().unwrap();
    let qdb = Database::open(q.path().join("data")).unwrap();
    let f = Follower::new(s.clone(), &q.path().join("cache"), u64::MAX).unwrap();
    f.sync(&qdb).unwrap();
    assert_eq!(qdb.collection("v").unwrap().len(), 300);
    qdb.collection("v").unwrap().verify().unwrap();
}

#[test]
fn a_writer_killed_before_its_commit_loses_nothing_and_orphans_are_collected() {
    let Some(m) = Moto::start() else { return };
    let s = store(&m, "crash");
    let w = tempfile::tempdir().unwrap();
    let db = Database::open(w.path()).unwrap();
    small(&db, 1, 400);
    let p = Publisher::new(s.clone(), "w", Duration::from_secs(60));
    assert_eq!(p.publish(&db, "v").unwrap(), Some(1));
    // A second seal; the "crashed" publisher had put its segment but not the version.
    let c = small(&db, 2, 400);
    let files = s.sub_dir("v").sub_dir(".files");
    let seg = c.info().unwrap().segments.last().unwrap().id;
    let name = gyre::segment::file_name(seg);
    let local = gyre::LocalDirectory::open(w.path().join("collections/v")).unwrap();
    let seg_bytes = local.read(&name).unwrap();
    let key = format!("{name}.{:08x}", crc32c::crc32c(&seg_bytes));
    files.write_atomic(&key, &seg_bytes).unwrap();
    // An orphan no version will ever name (a compaction's output that never committed).
    files
        .write_atomic("seg-00000000000000ff.gseg", b"orphan")
        .unwrap();
    drop(c);
    drop(db);
    // Restart: the acknowledged rows are in the writer's WAL and segments; publishing again
    // reuses the identical object and commits.
    let db = Database::open(w.path()).unwrap();
    assert_eq!(db.collection("v").unwrap().len(), 800);
    let p = Publisher::new(s.clone(), "w", Duration::from_secs(60));
    assert_eq!(p.publish(&db, "v").unwrap(), Some(2));
    // Within the grace period nothing goes; after it, the orphan and v1's own files do
    // (v2 is kept, and every file it names).
    assert_eq!(
        p.collect_garbage("v", 1, Duration::from_secs(3600))
            .unwrap(),
        0
    );
    std::thread::sleep(Duration::from_millis(1100));
    let removed = p.collect_garbage("v", 1, Duration::ZERO).unwrap();
    assert!(removed >= 2, "{removed}");
    assert!(files.file_len("seg-00000000000000ff.gseg").is_err());
    let q = tempfile::tempdir().unwrap();
    let qdb = Database::open(q.path().join("data")).unwrap();
    let f = Follower::new(s.clone(), &q.path().join("cache"), u64::MAX).unwrap();
    assert_eq!(f.sync(&qdb).unwrap().updated, [("v".to_string(), 2)]);
    assert_eq!(qdb.collection("v").unwrap().len(), 800);
    // A damaged object is named by its key when a node fetches it.
    let bytes = files.read(&key).unwrap();
    let mut bad = bytes.clone();
    bad[bytes.len() / 3] ^= 1;
    files.write_atomic(&key, &bad).unwrap();
    // A healthy collection beside it still reaches a new node.
    let other = db
        .create_collection("healthy", CollectionConfig::new(16))
        .unwrap();
    other.upsert(&[1], &[0.5; 16]).unwrap();
    other.flush().unwrap();
    assert_eq!(p.publish(&db, "healthy").unwrap(), Some(1));
    let q2 = tempfile::tempdir().unwrap();
    let qdb2 = Database::open(q2.path().join("data")).unwrap();
    let f2 = Follower::new(s.clone(), &q2.path().join("cache"), u64::MAX).unwrap();
    let r = f2.sync(&qdb2).unwrap();
    let [(c, kind, e)] = &r.failed[..] else {
        panic!("{r:?}")
    };
    assert_eq!((c.as_str(), *kind), ("v", ErrorKind::Corruption), "{e}");
    assert!(
        e.contains(&format!("s3://crash/gyre/v/.files/{key}")),
        "{e}"
    );
    assert!(qdb2.collection("v").is_err());
    assert_eq!(r.updated, [("healthy".to_string(), 1)]);
    assert_eq!(qdb2.collection("healthy").unwrap().len(), 1);
}

#[test]
fn a_dropped_collection_is_withdrawn_and_a_recreated_one_published_as_new() {
    let Some(m) = Moto::start() else { return };
    let s = store(&m, "recreate");
    let w = tempfile::tempdir().unwrap();
    let db = Database::open(w.path()).unwrap();
    let opts = SearchOptions::default();
    small(&db, 1, 300);
    let p = Publisher::new(s.clone(), "w", Duration::from_secs(60));
    assert_eq!(p.publish(&db, "v").unwrap(), Some(1));
    let q = tempfile::tempdir().unwrap();
    let qdb = Database::open(q.path().join("data")).unwrap();
    let f = Follower::new(s.clone(), &q.path().join("cache"), u64::MAX).unwrap();
    f.sync(&qdb).unwrap();
    // Dropped on the writer: withdrawn from the query nodes by a drop version.
    db.drop_collection("v").unwrap();
    assert_eq!(p.known(), ["v"]);
    assert_eq!(p.publish_drop(&db, "v").unwrap(), Some(2));
    assert_eq!(p.publish_drop(&db, "v").unwrap(), None, "once");
    assert!(p.known().is_empty());
    assert_eq!(f.sync(&qdb).unwrap().updated, [("v".to_string(), 2)]);
    assert!(qdb.collection("v").is_err());
    // A writer that never saw the collection withdraws nothing.
    let other = Publisher::new(s.clone(), "w", Duration::from_secs(60));
    assert_eq!(other.publish_drop(&db, "v").unwrap(), None);
    // Same name again, same row count, other vectors: its segment file has the old one's name.
    let c = small(&db, 2, 300);
    let mut rng = SeededRng::for_data(2);
    let first: Vec<f32> = (0..16).map(|_| rng.gaussian() as f32).collect();
    assert_eq!(p.publish(&db, "v").unwrap(), Some(3));
    assert_eq!(f.sync(&qdb).unwrap().updated, [("v".to_string(), 3)]);
    let qc = qdb.collection("v").unwrap();
    assert_eq!(
        ids(&qc.search(&first, 5, &opts).unwrap()),
        ids(&c.search(&first, 5, &opts).unwrap())
    );
    let got = qc.get(&[0]).unwrap()[0].as_ref().unwrap().vector.clone();
    assert_eq!(got.as_deref(), Some(&first[..]));
}
