//! kill -9 at random moments: a child process writes (upserts, some with payloads, deletes,
//! flushes that seal segments, compactions), the parent kills it, reopens the data directory
//! and checks that every acknowledged write is there with its exact vector and payload, that
//! the one write in flight is either wholly applied or wholly absent, and that exact searches
//! and filtered counts match an oracle.
//!
//! The child is this same test binary, re-run with `GYRE_CRASH_CHILD` set so that only
//! [`child_process_entry`] does work. `GYRE_CRASH_ROUNDS` sets the number of kills (50 by
//! default; the `--ignored` soak runs 1000).

// The child reports acknowledgements on stdout; the parent prints a summary.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use gyre::payload::{FieldSpec, FieldType};
use gyre::random::SeededRng;
use gyre::{
    CollectionConfig, Condition, Database, Durability, ExactIndex, Filter, Metric, Payload,
    RerankStorage, Schema, SearchOptions,
};

const DIM: usize = 16;
const ID_SPACE: u64 = 600;
const CHILD_ENV: &str = "GYRE_CRASH_CHILD";

#[derive(Debug)]
enum Op {
    Upsert(Vec<u64>, Vec<f32>, Vec<Payload>),
    Delete(Vec<u64>),
    Flush,
    Compact,
}

/// Step `step` of round `round`: the child performs it, the parent replays it on its model.
fn op(round: u64, step: u64) -> Op {
    let mut rng = SeededRng::new(round * 1_000_003 + step, 77);
    match rng.below(100) {
        0..=69 => {
            let n = 1 + rng.below(40) as usize;
            let ids: Vec<u64> = (0..n).map(|_| rng.below(ID_SPACE)).collect();
            let rows = (0..n * DIM).map(|_| rng.gaussian() as f32).collect();
            // Half the upserts carry payloads (an indexed keyword, an integer).
            let payloads = if rng.below(2) == 0 {
                ids.iter()
                    .map(|&id| {
                        Payload::new()
                            .with("tag", ["a", "b", "c"][(id % 3) as usize])
                            .with("step", step as i64)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Op::Upsert(ids, rows, payloads)
        }
        70..=89 => Op::Delete(
            (0..1 + rng.below(20))
                .map(|_| rng.below(ID_SPACE))
                .collect(),
        ),
        90..=94 => Op::Flush,
        _ => Op::Compact,
    }
}

type Model = BTreeMap<u64, (Vec<f32>, Option<Payload>)>;

fn apply(model: &mut Model, op: &Op) {
    match op {
        Op::Upsert(ids, rows, payloads) => {
            for (i, (id, row)) in ids.iter().zip(rows.chunks_exact(DIM)).enumerate() {
                model.insert(*id, (row.to_vec(), payloads.get(i).cloned()));
            }
        }
        Op::Delete(ids) => {
            for id in ids {
                model.remove(id);
            }
        }
        Op::Flush | Op::Compact => {}
    }
}

fn config(durability: Durability) -> CollectionConfig {
    CollectionConfig {
        durability,
        metric: Metric::L2,
        bits: 4,
        rerank: RerankStorage::F32,
        // Small segments and eager compaction, so kills land in sealing and merging too.
        segment_rows: 150,
        compact_segments: 3,
        // Every sealed and merged segment builds a graph, so kills land in graph builds and
        // recovery opens indexed segments.
        index_min_rows: 100,
        ..CollectionConfig::new(DIM)
    }
}

/// Only does work in a child spawned by [`kill_nine_at_random_moments`].
#[test]
fn child_process_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, round) = spec.rsplit_once(':').expect("dir:round");
    let round: u64 = round.parse().expect("round");
    let db = Database::open(dir).expect("child opens");
    let c = db.collection("crash").expect("collection");
    println!("ready");
    for step in 0.. {
        match op(round, step) {
            Op::Upsert(ids, rows, payloads) => c
                .upsert_with_payloads(&ids, &rows, &payloads)
                .expect("upsert"),
            Op::Delete(ids) => {
                c.delete(&ids).expect("delete");
            }
            Op::Flush => c.flush().expect("flush"),
            Op::Compact => {
                c.compact().expect("compact");
            }
        }
        println!("ack {step}");
    }
}

fn state_of(c: &gyre::Collection) -> Model {
    let ids: Vec<u64> = (0..ID_SPACE).collect();
    c.get(&ids)
        .unwrap()
        .into_iter()
        .flatten()
        .map(|p| (p.id, (p.vector.expect("f32 copies"), p.payload)))
        .collect()
}

fn run_rounds(rounds: u64, durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path()).unwrap();
        let mut schema = Schema::default();
        schema.fields.insert(
            "tag".into(),
            FieldSpec {
                kind: FieldType::Keyword,
                indexed: true,
            },
        );
        db.create_collection_with_schema("crash", config(durability), &schema)
            .unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut model: Model = BTreeMap::new();
    let mut timing = SeededRng::new(12345, 1);
    let (mut in_flight_applied, mut in_flight_absent, mut total_acks) = (0, 0, 0);
    // Kills that left a half-written segment, deletion file or manifest behind.
    let (mut torn_files, mut segments_seen) = (0, 0);
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_process_entry",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, format!("{}:{round}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Anywhere from during open/replay to well into a run of writes.
        std::thread::sleep(Duration::from_millis(timing.below(120)));
        child.kill().unwrap();
        child.wait().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let acked = out
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n') && l.starts_with("ack "))
            .count() as u64;
        total_acks += acked;
        for step in 0..acked {
            apply(&mut model, &op(round, step));
        }
        let coll_dir = dir.path().join("collections/crash");
        let names: Vec<String> = std::fs::read_dir(&coll_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if names.iter().any(|n| n.ends_with(".tmp")) {
            torn_files += 1;
        }
        let db = Database::open(dir.path()).unwrap();
        let c = db.collection("crash").unwrap();
        segments_seen = segments_seen.max(c.info().unwrap().segments.len());
        let got = state_of(&c);
        if got != model {
            // The one write in flight may have been applied, but only whole.
            let mut with = model.clone();
            apply(&mut with, &op(round, acked));
            assert_eq!(
                got, with,
                "round {round}: state is neither the acknowledged writes nor those plus the write in flight ({acked} acks)"
            );
            model = with;
            in_flight_applied += 1;
        } else {
            in_flight_absent += 1;
        }
        assert_eq!(c.len(), model.len(), "round {round}");
        // Filtered counts (through segment indexes and the memtable scan) match the model.
        for tag in ["a", "b"] {
            let want = model
                .values()
                .filter(|(_, p)| {
                    p.as_ref()
                        .and_then(|p| p.get("tag"))
                        .is_some_and(|v| *v == gyre::Value::Keyword(tag.into()))
                })
                .count() as u64;
            let f = Filter::new().must(Condition::keyword("tag", tag));
            assert_eq!(c.count(Some(&f)).unwrap(), want, "round {round} tag {tag}");
        }
        // Exact search matches the oracle over the model.
        if !model.is_empty() {
            let ids: Vec<u64> = model.keys().copied().collect();
            let rows: Vec<f32> = model.values().flat_map(|(v, _)| v).copied().collect();
            let oracle = ExactIndex::new(DIM, Metric::L2, &rows).unwrap();
            let q = &rows[..DIM];
            let k = 5.min(ids.len());
            let want: Vec<u64> = oracle
                .search(q, k)
                .unwrap()
                .iter()
                .map(|n| ids[n.id as usize])
                .collect();
            let got: Vec<u64> = c
                .search(
                    q,
                    k,
                    &SearchOptions {
                        exact: true,
                        ..Default::default()
                    },
                )
                .unwrap()
                .iter()
                .map(|n| n.id)
                .collect();
            assert_eq!(got, want, "round {round}");
        }
        if round % 10 == 9 {
            c.verify().unwrap();
        }
    }
    eprintln!(
        "{rounds} kills, {total_acks} acknowledged writes; write in flight applied {in_flight_applied}, absent {in_flight_absent}; {torn_files} kills left a half-written file; up to {segments_seen} segments"
    );
    assert!(
        total_acks > rounds,
        "the children barely wrote: {total_acks} acks"
    );
}

#[test]
fn kill_nine_at_random_moments() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let rounds = std::env::var("GYRE_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    run_rounds(rounds, Durability::Fsync);
}

/// Periodic durability only risks power loss: a killed process loses no acknowledged write,
/// since the WAL record reached the page cache before the acknowledgement.
#[test]
fn kill_nine_with_periodic_sync() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    run_rounds(20, Durability::Periodic(50));
}

#[test]
#[ignore = "soak: cargo test -p gyre --release --test crash -- --ignored"]
fn kill_nine_soak() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    run_rounds(1000, Durability::Fsync);
}
