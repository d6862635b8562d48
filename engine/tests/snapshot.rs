//! Snapshots: taken online, holding exactly the acknowledged state at that moment (segments,
//! deletions, the unsealed WAL tail), restored as a new collection, over the old one, or after
//! a drop; their segments shared by hard links; damage named on restore; faults and power cuts
//! at every point of a snapshot and of a restore.

#![allow(clippy::print_stdout)] // the fault tests report their counts

use std::os::unix::fs::MetadataExt;

use gyre::random::SeededRng;
use gyre::{CollectionConfig, Database, ErrorKind, Metric, RerankStorage, SearchOptions};

const D: usize = 16;

fn config() -> CollectionConfig {
    CollectionConfig {
        metric: Metric::Cosine,
        rerank: RerankStorage::F32,
        segment_rows: 1_000,
        ..CollectionConfig::new(D)
    }
}

fn rows(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::for_data(seed);
    (0..n * D).map(|_| rng.gaussian() as f32).collect()
}

/// Everything a reader can see: each id's vector, in id order.
fn state(c: &gyre::Collection, max_id: u64) -> Vec<(u64, Vec<f32>)> {
    let ids: Vec<u64> = (0..max_id).collect();
    c.get(&ids)
        .unwrap()
        .into_iter()
        .flatten()
        .map(|p| (p.id, p.vector.unwrap()))
        .collect()
}

fn top(c: &gyre::Collection, q: &[f32]) -> Vec<u64> {
    c.search(q, 10, &SearchOptions::default())
        .unwrap()
        .iter()
        .map(|n| n.id)
        .collect()
}

#[test]
fn snapshot_holds_the_state_it_was_taken_at_and_restores_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", config()).unwrap();
    let x = rows(3_000, 1);
    let ids: Vec<u64> = (0..2_500).collect();
    c.upsert(&ids, &x[..2_500 * D]).unwrap();
    c.flush().unwrap();
    // After the seal: an unsealed tail, deletions of sealed rows, an overwrite.
    let tail: Vec<u64> = (2_500..2_700).collect();
    c.upsert(&tail, &x[2_500 * D..2_700 * D]).unwrap();
    assert_eq!(c.delete(&[3, 5, 7, 2_600]).unwrap(), 4);
    c.upsert(&[10], &x[2_900 * D..2_901 * D]).unwrap();
    let want = state(&c, 3_000);
    let q = &x[2_950 * D..2_951 * D];
    let want_top = top(&c, q);
    assert_eq!(want.len(), 2_700 - 4);

    let info = db.create_snapshot("c", Some("s1")).unwrap();
    assert_eq!(info.name, "s1");
    assert_eq!(info.points, want.len() as u64);
    assert!(info.files.iter().any(|f| f.name.ends_with(".gseg")));
    assert!(info.files.iter().any(|f| f.name.starts_with("wal-")));
    // Segments are shared, not copied: the copies are the WAL, manifest and config.
    let seg_bytes: u64 = info
        .files
        .iter()
        .filter(|f| f.name.ends_with(".gseg"))
        .map(|f| f.bytes)
        .sum();
    assert!(info.copied_bytes < info.bytes() - seg_bytes + 1, "{info:?}");
    let snap_dir = dir.path().join("snapshots/c/s1");
    for f in info.files.iter().filter(|f| f.name.ends_with(".gseg")) {
        assert!(snap_dir.join(&f.name).metadata().unwrap().nlink() >= 2);
    }
    assert_eq!(
        db.create_snapshot("c", Some("s1")).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );

    // Keep writing: none of it may reach the snapshot.
    let more: Vec<u64> = (2_700..3_000).collect();
    c.upsert(&more, &x[2_700 * D..]).unwrap();
    c.delete(&[0, 1, 2, 2_501]).unwrap();
    c.flush().unwrap();
    c.compact().unwrap();

    let r = db.restore_snapshot("c", "s1", Some("r"), false).unwrap();
    assert_eq!(state(&r, 3_000), want);
    assert_eq!(top(&r, q), want_top);
    assert_eq!(r.len(), want.len());
    // Over an existing collection: refused without replace, exact with it.
    assert_eq!(
        db.restore_snapshot("c", "s1", None, false)
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
    let c2 = db.restore_snapshot("c", "s1", None, true).unwrap();
    assert_eq!(state(&c2, 3_000), want);
    // The restored collection takes writes and keeps them over a reopen, with the snapshot.
    c2.upsert(&[5], &x[..D]).unwrap();
    drop((c, c2, r));
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    assert_eq!(c.len(), want.len() + 1);
    assert_eq!(db.collection("r").unwrap().len(), want.len());
    let listed = db.list_snapshots(None).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], info);
}

#[test]
fn a_dropped_collection_comes_back_from_its_snapshot_and_damage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", config()).unwrap();
    let x = rows(1_500, 2);
    let ids: Vec<u64> = (0..1_500).collect();
    c.upsert(&ids, &x).unwrap();
    c.flush().unwrap();
    let want = state(&c, 1_500);
    db.create_snapshot("c", Some("keep")).unwrap();
    let auto = db.create_snapshot("c", None).unwrap();
    assert!(auto.name.starts_with("snap-"), "{}", auto.name);
    drop(c);
    db.drop_collection("c").unwrap();
    assert_eq!(db.collection("c").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(db.list_snapshots(Some("c")).unwrap().len(), 2);
    let c = db.restore_snapshot("c", "keep", None, false).unwrap();
    assert_eq!(state(&c, 1_500), want);

    // Unknown snapshot, bad names.
    let e = db
        .restore_snapshot("c", "nope", Some("z"), false)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("nope"), "{e}");
    assert_eq!(
        db.create_snapshot("c", Some("../x")).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        db.create_snapshot("missing", None).unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // A truncated segment in the snapshot: restore names it and changes nothing.
    let snap = dir.path().join("snapshots/c").join(&auto.name);
    let seg = auto
        .files
        .iter()
        .find(|f| f.name.ends_with(".gseg"))
        .unwrap();
    // Break the link first so the collection's own file stays whole.
    let p = snap.join(&seg.name);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = db
        .restore_snapshot("c", &auto.name, None, true)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(e.to_string().contains(&seg.name), "{e}");
    assert_eq!(state(&db.collection("c").unwrap(), 1_500), want);
    // A flipped byte with the length intact: the segment's checksums catch it on restore.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    std::fs::write(&p, &flipped).unwrap();
    let e = db
        .restore_snapshot("c", &auto.name, Some("y"), false)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(db.collection("y").is_err());

    db.delete_snapshot("c", &auto.name).unwrap();
    assert_eq!(db.list_snapshots(Some("c")).unwrap().len(), 1);
    assert_eq!(
        db.delete_snapshot("c", &auto.name).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// A snapshot taken while another thread writes holds every write acknowledged before it
/// started, and exactly the points it reports.
#[test]
fn snapshot_under_concurrent_writes_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", config()).unwrap();
    let x = rows(200, 3);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acked = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut id = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && id < 20_000 {
                let ids: Vec<u64> = (id..id + 50).collect();
                c.upsert(&ids, &x[..50 * D]).unwrap();
                id += 50;
                acked.store(id, std::sync::atomic::Ordering::SeqCst);
            }
        });
        while acked.load(std::sync::atomic::Ordering::SeqCst) < 3_000 {
            std::thread::yield_now();
        }
        let before = acked.load(std::sync::atomic::Ordering::SeqCst);
        let info = db.create_snapshot("c", Some("live")).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let r = db.restore_snapshot("c", "live", Some("r"), false).unwrap();
        assert_eq!(r.len() as u64, info.points);
        assert!(info.points >= before, "{} < {before}", info.points);
        // Writes go in batches of 50 ids from 0: the restored ids are a prefix.
        assert_eq!(info.points % 50, 0);
        let got = r.get(&[0, info.points - 1, info.points]).unwrap();
        assert!(got[0].is_some() && got[1].is_some() && got[2].is_none());
    });
}

/// A snapshot interrupted at any fault point (EIO, or a power cut there) leaves no partial
/// snapshot in the list and the collection untouched; after the fault, the same name works.
#[test]
fn a_snapshot_failing_anywhere_leaves_nothing_half_made() {
    use gyre::directory::{Fault, FaultDirectory};
    use std::sync::Arc;

    let fs = FaultDirectory::new();
    let open = |d: &FaultDirectory| Database::open_in(Arc::new(d.clone()), "fault".into()).unwrap();
    let db = open(&fs);
    let c = db.create_collection("c", config()).unwrap();
    let x = rows(1_300, 4);
    let ids: Vec<u64> = (0..1_200).collect();
    c.upsert(&ids, &x[..1_200 * D]).unwrap();
    c.flush().unwrap();
    c.upsert(&[5_000, 5_001], &x[1_200 * D..1_202 * D]).unwrap();
    c.delete(&[1, 2]).unwrap();
    let want = state(&c, 6_000);
    let before = fs.stats().points;
    db.create_snapshot("c", Some("probe")).unwrap();
    let points = fs.stats().points - before;
    db.delete_snapshot("c", "probe").unwrap();
    assert!(points > 5, "{points} fault points");
    let (mut failed, mut cuts) = (0, 0);
    for at in 0..points {
        fs.inject(Fault {
            at,
            errno: 5,
            ops: Vec::new(),
            sticky: false,
        });
        let before = fs.stats().points;
        fs.cut_at(before + at);
        let r = db.create_snapshot("c", Some("s"));
        fs.heal();
        if let Some(image) = fs.take_cut() {
            cuts += 1;
            let db2 = open(&image);
            let c2 = db2.collection("c").unwrap();
            assert_eq!(state(&c2, 6_000), want, "power cut at {at}");
            for s in db2.list_snapshots(Some("c")).unwrap() {
                let r2 = db2.restore_snapshot("c", &s.name, Some("r"), true).unwrap();
                assert_eq!(state(&r2, 6_000), want, "cut at {at}: snapshot {}", s.name);
            }
        }
        match r {
            Ok(_) => {}
            Err(e) => {
                failed += 1;
                assert_eq!(e.kind(), ErrorKind::Io, "fault at {at}: {e}");
                assert!(
                    db.list_snapshots(Some("c")).unwrap().is_empty(),
                    "fault at {at}"
                );
            }
        }
        assert_eq!(state(&c, 6_000), want, "fault at {at}");
        if db.list_snapshots(Some("c")).unwrap().is_empty() {
            db.create_snapshot("c", Some("s")).unwrap();
        }
        let r = db.restore_snapshot("c", "s", Some("r"), true).unwrap();
        assert_eq!(state(&r, 6_000), want, "fault at {at}");
        db.delete_snapshot("c", "s").unwrap();
    }
    assert!(failed > 0 && cuts > 0, "{failed} failures, {cuts} cuts");
    println!("snapshot faults: {points} points, {failed} failed as I/O errors, {cuts} power cuts");
}

/// A restore over a collection cut by a power failure at any point leaves, after reopening,
/// the collection either as it was or as the snapshot holds it: never missing, never mixed.
#[test]
fn a_restore_cut_anywhere_leaves_the_old_or_the_new_collection() {
    use gyre::directory::FaultDirectory;
    use std::sync::Arc;

    let fs = FaultDirectory::new();
    let open = |d: &FaultDirectory| Database::open_in(Arc::new(d.clone()), "fault".into()).unwrap();
    let db = open(&fs);
    let c = db.create_collection("c", config()).unwrap();
    let x = rows(1_300, 5);
    let ids: Vec<u64> = (0..1_100).collect();
    c.upsert(&ids, &x[..1_100 * D]).unwrap();
    c.flush().unwrap();
    let snap = state(&c, 2_000);
    db.create_snapshot("c", Some("s")).unwrap();
    let more: Vec<u64> = (1_100..1_300).collect();
    c.upsert(&more, &x[1_100 * D..]).unwrap();
    c.delete(&[0, 1]).unwrap();
    let now = state(&c, 2_000);
    drop(c);
    // Probe the restore's fault points on a copy, then cut the original at each.
    let probe = fs.snapshot();
    let pdb = open(&probe);
    let before = probe.stats().points;
    pdb.restore_snapshot("c", "s", None, true).unwrap();
    let points = probe.stats().points - before;
    drop(pdb);
    let (mut old, mut new) = (0, 0);
    for at in 0..points {
        let run = fs.snapshot();
        let rdb = open(&run);
        run.cut_at(run.stats().points + at);
        rdb.restore_snapshot("c", "s", None, true).unwrap();
        let image = run.take_cut().expect("the cut point is inside the restore");
        drop(rdb);
        let db2 = open(&image);
        let got = state(&db2.collection("c").unwrap(), 2_000);
        if got == now {
            old += 1;
        } else {
            assert_eq!(got, snap, "cut at {at} of {points}");
            new += 1;
        }
        assert_eq!(db2.list().unwrap(), vec!["c".to_string()], "cut at {at}");
    }
    assert!(old > 0 && new > 0, "{old} old, {new} new");
    println!("restore power cuts: {points} points, {old} left the old collection, {new} the new");
}
