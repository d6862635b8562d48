//! The object-store directory and backups against a real S3 server (moto) on loopback.
#![allow(clippy::print_stderr)]

mod moto;

use gyre::directory::Directory;
use gyre::random::SeededRng;
use gyre::{CollectionConfig, Database, ErrorKind, Metric, SearchOptions};
use gyre_objstore::ObjectDirectory;
use moto::Moto;

fn start(bucket: &str) -> Option<(Moto, ObjectDirectory)> {
    let m = Moto::start()?;
    m.bucket(bucket);
    let d = ObjectDirectory::open(&format!("s3://{bucket}/pre/fix"), &m.options()).unwrap();
    Some((m, d))
}

#[test]
fn directory_contract_on_s3() {
    let Some((_m, d)) = start("contract") else {
        return;
    };
    assert!(d.list().unwrap().is_empty());
    d.write_atomic("a", b"hello").unwrap();
    d.write_atomic("a", b"hello again").unwrap();
    assert_eq!(d.read("a").unwrap(), b"hello again");
    assert_eq!(d.file_len("a").unwrap(), 11);
    assert_eq!(&d.map("a").unwrap()[..], b"hello again");
    // Written once: a second create of the same name is a conflict, the first stays.
    let mut w = d.create("seg").unwrap();
    w.write(b"one").unwrap();
    w.finish().unwrap();
    let mut w = d.create("seg").unwrap();
    w.write(b"two").unwrap();
    let e = w.finish().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains("s3://contract/pre/fix/seg"), "{e}");
    assert_eq!(d.read("seg").unwrap(), b"one");
    // A large file goes up in parts and comes back whole.
    let big: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut w = d.create("big").unwrap();
    for c in big.chunks(3 << 20) {
        w.write(c).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(d.file_len("big").unwrap(), big.len() as u64);
    assert!(d.read("big").unwrap() == big);
    // A large one is refused before its first part goes up.
    let mut w = d.create("big").unwrap();
    let e = match w.write(&big) {
        Err(e) => e,
        Ok(()) => w.finish().unwrap_err(),
    };
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let sub = d.sub("child").unwrap();
    sub.write_atomic("x", b"1").unwrap();
    let mut names = d.list().unwrap();
    names.sort();
    assert_eq!(names, ["a", "big", "seg"]);
    assert_eq!(d.list_dirs().unwrap(), ["child"]);
    let e = d.read("missing").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(
        e.to_string().contains("s3://contract/pre/fix/missing"),
        "{e}"
    );
    assert!(d.append("a").is_err() && d.rename_dir("child", "x").is_err());
    d.delete("a").unwrap();
    d.delete("a").unwrap();
    d.remove_dir("child").unwrap();
    assert!(d.list_dirs().unwrap().is_empty());
    // Conditional puts: one winner.
    let v = d.put_if_absent("m/1", b"first").unwrap();
    assert_eq!(
        d.put_if_absent("m/1", b"second").unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let v2 = d.put_if_match("m/1", b"third", &v).unwrap();
    assert_eq!(
        d.put_if_match("m/1", b"stale", &v).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let (bytes, now) = d.read_versioned("m/1").unwrap().unwrap();
    assert_eq!((bytes.as_slice(), &now), (&b"third"[..], &v2));
    // Eight writers racing for one commit point, at once: exactly one wins, and its bytes
    // are what is stored.
    for round in 0..5 {
        let key = format!("m/race-{round}");
        let results: Vec<_> = std::thread::scope(|t| {
            let hs: Vec<_> = (0..8u8)
                .map(|i| {
                    let (d, key) = (&d, &key);
                    t.spawn(move || d.put_if_absent(key, &[i; 100]).map(|_| i))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<u8> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| e.kind() == ErrorKind::Conflict)
        );
        assert_eq!(d.read(&key).unwrap(), [won[0]; 100]);
    }
}

const D: usize = 16;

fn rows(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::for_data(seed);
    (0..n * D).map(|_| rng.gaussian() as f32).collect()
}

fn config() -> CollectionConfig {
    CollectionConfig {
        metric: Metric::Cosine,
        segment_rows: 1_000,
        ..CollectionConfig::new(D)
    }
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
fn backup_restores_on_a_fresh_data_directory() {
    let Some((_m, store)) = start("backups") else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let db = Database::open(src.path()).unwrap();
    let c = db.create_collection("docs", config()).unwrap();
    let data = rows(3000, 7);
    let ids: Vec<u64> = (0..3000).collect();
    c.upsert(&ids[..2500], &data[..2500 * D]).unwrap();
    c.flush().unwrap();
    // An unsealed tail and deletions: the backup holds them too.
    c.upsert(&ids[2500..], &data[2500 * D..]).unwrap();
    c.delete(&[3, 4, 2999]).unwrap();
    let before = state(&c, 5000);
    let mut seen = 0;
    let info = db
        .backup_to("docs", Some("b1"), &store, &mut |_| seen += 1)
        .unwrap();
    assert_eq!(seen, info.files.len());
    assert!(info.files.iter().all(|f| f.crc32c.is_some()));
    assert_eq!(info.points, 2997);
    // The temporary local snapshot is gone; the backup is listed.
    assert!(db.list_snapshots(Some("docs")).unwrap().is_empty());
    assert_eq!(
        Database::list_backups(&store).unwrap(),
        std::slice::from_ref(&info)
    );
    // The same name again: refused, nothing overwritten.
    let e = db
        .backup_to("docs", Some("b1"), &store, &mut |_| {})
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    // Writes after the backup are not in it.
    c.upsert(&[4000], &data[..D]).unwrap();

    let dst = tempfile::tempdir().unwrap();
    let fresh = Database::open(dst.path()).unwrap();
    let r = fresh
        .restore_backup(&store, "docs", "b1", None, false, &mut |_| {})
        .unwrap();
    assert_eq!(r.len(), 2997);
    assert_eq!(state(&r, 5000), before);
    c.delete(&[4000]).unwrap();
    for q in data.chunks(D).step_by(250) {
        assert_eq!(top(&r, q), top(&c, q));
    }
    // Restored collections take writes and survive a reopen.
    r.upsert(&[7000], &data[..D]).unwrap();
    drop(r);
    drop(fresh);
    let fresh = Database::open(dst.path()).unwrap();
    assert_eq!(fresh.collection("docs").unwrap().len(), 2998);
}

#[test]
fn damaged_backup_objects_are_named() {
    let Some((_m, store)) = start("damaged") else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let db = Database::open(src.path()).unwrap();
    let c = db.create_collection("v", config()).unwrap();
    let ids: Vec<u64> = (0..1500).collect();
    c.upsert(&ids, &rows(1500, 9)).unwrap();
    c.flush().unwrap();
    let info = db.backup_to("v", Some("b"), &store, &mut |_| {}).unwrap();
    let seg = info
        .files
        .iter()
        .find(|f| f.name.ends_with(".gseg"))
        .expect("a segment")
        .name
        .clone();
    let dir = store.sub("v").unwrap().sub("b").unwrap();
    let good = dir.read(&seg).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    for (what, bad) in [
        ("flipped", flipped),
        ("truncated", good[..good.len() - 100].to_vec()),
    ] {
        dir.write_atomic(&seg, &bad).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let fresh = Database::open(dst.path()).unwrap();
        let e = fresh
            .restore_backup(&store, "v", "b", None, false, &mut |_| {})
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{what}: {e}");
        let key = format!("s3://damaged/pre/fix/v/b/{seg}");
        assert!(e.to_string().contains(&key), "{what}: {e}");
        // Nothing half-restored is left behind.
        assert!(fresh.list().unwrap().is_empty(), "{what}");
        assert!(fresh.list_snapshots(None).unwrap().is_empty(), "{what}");
    }
}
