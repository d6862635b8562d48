//! Damaged files: every file kind gets flipped bytes and truncations. Opening (or `verify`)
//! must fail with a corruption error naming the file, or, for the WAL's last record, cut the
//! torn tail and come back with exactly the earlier writes; never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gyre::random::SeededRng;
use gyre::{CollectionConfig, Database, ErrorKind, Metric, RerankStorage, SearchOptions};

const D: usize = 256;

fn rows(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::for_data(seed);
    (0..n * D).map(|_| rng.gaussian() as f32).collect()
}

fn state(db: &Database) -> BTreeMap<u64, Vec<f32>> {
    let c = db.collection("c").unwrap();
    let ids: Vec<u64> = (0..1000).collect();
    c.get(&ids)
        .unwrap()
        .into_iter()
        .flatten()
        .map(|p| (p.id, p.vector.unwrap()))
        .collect()
}

/// Two segments (the first with deletions), then WAL records: upserts and, last, a delete.
fn build(dir: &Path) -> (BTreeMap<u64, Vec<f32>>, BTreeMap<u64, Vec<f32>>) {
    let db = Database::open(dir).unwrap();
    let c = db
        .create_collection(
            "c",
            CollectionConfig {
                metric: Metric::Cosine,
                rerank: RerankStorage::F32,
                verify_on_open: true,
                // Both segments get a graph section, so its damage is tried too.
                index_min_rows: 100,
                ..CollectionConfig::new(D)
            },
        )
        .unwrap();
    let r = rows(600, 1);
    let ids: Vec<u64> = (0..600).collect();
    c.upsert(&ids[..300], &r[..300 * D]).unwrap();
    c.flush().unwrap();
    c.upsert(&ids[300..500], &r[300 * D..500 * D]).unwrap();
    c.delete(&(0..10).collect::<Vec<_>>()).unwrap();
    c.flush().unwrap();
    for b in 0..5 {
        let lo = 500 + 20 * b;
        c.upsert(&ids[lo..lo + 20], &r[lo * D..(lo + 20) * D])
            .unwrap();
    }
    let before_last = state(&db);
    c.delete(&[20, 510, 599]).unwrap();
    // A second collection, which damage to "c" must not take down.
    let other = db
        .create_collection("other", CollectionConfig::new(D))
        .unwrap();
    other.upsert(&[1, 2, 3], &rows(3, 7)).unwrap();
    (state(&db), before_last)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn find(dir: &Path, pred: impl Fn(&str) -> bool) -> PathBuf {
    let coll = dir.join("collections/c");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&coll)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| pred(p.file_name().unwrap().to_str().unwrap()))
        .collect();
    names.sort();
    names.into_iter().next().expect("file present")
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

fn truncate(path: &Path, len: usize) {
    let b = std::fs::read(path).unwrap();
    std::fs::write(path, &b[..len]).unwrap();
}

fn len(path: &Path) -> usize {
    std::fs::metadata(path).unwrap().len() as usize
}

/// Where a segment's section table starts (format 2: the footer's first field).
fn table_offset(b: &[u8]) -> usize {
    u64::from_le_bytes(b[b.len() - 32..b.len() - 24].try_into().unwrap()) as usize
}

/// Opens a damaged copy and expects a corruption (or I/O) error that names the file, from the
/// damaged collection (the database itself opens: other collections stay available).
fn expect_error(case: &str, dir: &Path, file: &Path) {
    let db = Database::open(dir).unwrap_or_else(|e| panic!("{case}: the database failed: {e}"));
    assert_eq!(
        db.collection("other").map(|o| o.len()).ok(),
        Some(3),
        "{case}"
    );
    match db.collection("c") {
        Ok(_) => panic!("{case}: opened despite damage to {}", file.display()),
        Err(e) => {
            assert!(
                matches!(e.kind(), ErrorKind::Corruption | ErrorKind::Io),
                "{case}: {e}"
            );
            let name = file.file_name().unwrap().to_str().unwrap();
            assert!(
                e.to_string().contains(name),
                "{case}: error does not name {name}: {e}"
            );
            assert_eq!(db.unavailable().len(), 1, "{case}");
        }
    }
}

#[test]
fn every_file_kind_is_checked() {
    let pristine = tempfile::tempdir().unwrap();
    let (full, before_last) = build(pristine.path());
    let mut cases = 0;
    let mut run = |case: &str,
                   damage: &dyn Fn(&Path) -> PathBuf,
                   outcome: Option<&BTreeMap<u64, Vec<f32>>>| {
        let work = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), work.path());
        let file = damage(work.path());
        match outcome {
            None => expect_error(case, work.path(), &file),
            Some(expected) => {
                let db = Database::open(work.path()).unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(&state(&db), expected, "{case}");
                let c = db.collection("c").unwrap();
                assert!(c.recovery().truncated_bytes > 0, "{case}");
                // The cut file takes new writes after its last good record.
                c.upsert(&[999], &rows(1, 9)).unwrap();
                drop(c);
                drop(db);
                let db = Database::open(work.path()).unwrap();
                assert_eq!(
                    state(&db).len(),
                    expected.len() + 1,
                    "{case}: write after recovery"
                );
            }
        }
        cases += 1;
    };
    let wal = |d: &Path| find(d, |n| n.starts_with("wal-"));
    let seg = |d: &Path| find(d, |n| n.ends_with(".gseg"));
    // WAL: header, a record before the tail (valid ones follow), the torn tail.
    run(
        "wal magic",
        &|d| {
            let p = wal(d);
            flip(&p, 2);
            p
        },
        None,
    );
    run(
        "wal header seed",
        &|d| {
            let p = wal(d);
            flip(&p, 13);
            p
        },
        None,
    );
    run(
        "wal first record body",
        &|d| {
            let p = wal(d);
            flip(&p, 32 + 16 + 100);
            p
        },
        None,
    );
    run(
        "wal first record length",
        &|d| {
            let p = wal(d);
            flip(&p, 32 + 1);
            p
        },
        None,
    );
    run(
        "wal tail cut by 1",
        &|d| {
            let p = wal(d);
            truncate(&p, len(&p) - 1);
            p
        },
        Some(&before_last),
    );
    run(
        "wal tail cut mid-record",
        &|d| {
            let p = wal(d);
            truncate(&p, len(&p) - 20);
            p
        },
        Some(&before_last),
    );
    run(
        "wal tail flipped",
        &|d| {
            let p = wal(d);
            flip(&p, len(&p) - 9);
            p
        },
        Some(&before_last),
    );
    run(
        "wal head truncated",
        &|d| {
            let p = wal(d);
            truncate(&p, 20);
            p
        },
        None,
    );
    // Segment: header fields, table, every section, footer, truncations.
    let table_at = table_offset(&std::fs::read(seg(pristine.path())).unwrap());
    for at in [
        0,
        8,
        16,
        20,
        32,
        40,
        124,
        table_at + 8,
        table_at + 32 * 5 + 16,
        table_at + 32 * 3 + 24,
    ] {
        run(
            &format!("segment byte {at}"),
            &|d| {
                let p = seg(d);
                flip(&p, at);
                p
            },
            None,
        );
    }
    let sections = {
        let b = std::fs::read(seg(pristine.path())).unwrap();
        (0..14)
            .map(|i| {
                let e = &b[table_at + 32 * i..];
                let off = u64::from_le_bytes(e[8..16].try_into().unwrap()) as usize;
                let n = u64::from_le_bytes(e[16..24].try_into().unwrap()) as usize;
                (off, n)
            })
            .filter(|&(_, n)| n > 0)
            .collect::<Vec<_>>()
    };
    assert!(sections.len() >= 10, "{sections:?}");
    for (i, &(off, n)) in sections.iter().enumerate() {
        run(
            &format!("segment section {i} first byte"),
            &|d| {
                let p = seg(d);
                flip(&p, off);
                p
            },
            None,
        );
        run(
            &format!("segment section {i} last byte"),
            &|d| {
                let p = seg(d);
                flip(&p, off + n - 1);
                p
            },
            None,
        );
    }
    for back in [1, 9, 20, 40] {
        run(
            &format!("segment footer -{back}"),
            &|d| {
                let p = seg(d);
                flip(&p, len(&p) - back);
                p
            },
            None,
        );
    }
    for cut in [0, 100, 1000] {
        run(
            &format!("segment truncated +{cut}"),
            &|d| {
                let p = seg(d);
                truncate(&p, cut);
                p
            },
            None,
        );
    }
    run(
        "segment truncated by 1",
        &|d| {
            let p = seg(d);
            truncate(&p, len(&p) - 1);
            p
        },
        None,
    );
    run(
        "segment missing",
        &|d| {
            let p = seg(d);
            std::fs::remove_file(&p).unwrap();
            p
        },
        None,
    );
    // Manifest, deletion bitmap, config.
    let manifest = |d: &Path| find(d, |n| n == "MANIFEST");
    for at in [0, 9, 17, 25, 48, 60] {
        run(
            &format!("manifest byte {at}"),
            &|d| {
                let p = manifest(d);
                flip(&p, at);
                p
            },
            None,
        );
    }
    run(
        "manifest truncated",
        &|d| {
            let p = manifest(d);
            truncate(&p, len(&p) - 3);
            p
        },
        None,
    );
    let del = |d: &Path| find(d, |n| n.contains(".del-"));
    for at in [0, 12, 16, 24, 40, 44] {
        run(
            &format!("deletion bitmap byte {at}"),
            &|d| {
                let p = del(d);
                flip(&p, at);
                p
            },
            None,
        );
    }
    run(
        "deletion bitmap truncated",
        &|d| {
            let p = del(d);
            truncate(&p, len(&p) - 2);
            p
        },
        None,
    );
    run(
        "config garbage",
        &|d| {
            let p = find(d, |n| n == "config.json");
            flip(&p, 3);
            p
        },
        None,
    );
    assert!(cases > 50);
    // And the undamaged copy opens with everything.
    let db = Database::open(pristine.path()).unwrap();
    assert_eq!(state(&db), full);
}

/// Without `verify_on_open`, damage inside a section is found by `verify` (what `gyre verify`
/// runs), and searching the damaged segment does not panic.
#[test]
fn verify_finds_section_damage_that_a_cheap_open_skips() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db
            .create_collection(
                "c",
                CollectionConfig {
                    rerank: RerankStorage::F16,
                    ..CollectionConfig::new(D)
                },
            )
            .unwrap();
        c.upsert(&(0..100).collect::<Vec<_>>(), &rows(100, 3))
            .unwrap();
        c.flush().unwrap();
        c.verify().unwrap();
    }
    let p = find(dir.path(), |n| n.ends_with(".gseg"));
    let b = std::fs::read(&p).unwrap();
    // Damage every section's middle byte.
    let mut damaged = b.clone();
    for i in 0..14 {
        let e = &b[table_offset(&b) + 32 * i..];
        let off = u64::from_le_bytes(e[8..16].try_into().unwrap()) as usize;
        let n = u64::from_le_bytes(e[16..24].try_into().unwrap()) as usize;
        if n > 0 {
            damaged[off + n / 2] ^= 0xff;
        }
    }
    std::fs::write(&p, damaged).unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    let e = c.verify().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption);
    assert!(
        e.to_string()
            .contains(p.file_name().unwrap().to_str().unwrap())
    );
    let q = rows(1, 4);
    let _ = c.search(&q, 10, &SearchOptions::default());
    let _ = c.get(&(0..200).collect::<Vec<_>>());
}
