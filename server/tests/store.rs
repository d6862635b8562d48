//! `gyre serve --store` against a real S3 server (moto) on loopback: a writer and two query
//! nodes as separate processes, writes visible on the query nodes after a seal, writes refused
//! there, a second writer refused, restarts; `gyre backup` to the store and restore into a
//! fresh data directory.
#![allow(clippy::print_stderr)]

mod common;
#[path = "../../objstore/tests/moto/mod.rs"]
mod moto;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, create, rows};
use gyre::directory::Directory;
use gyre_proto::v1 as pb;

const D: usize = 32;

async fn top(s: &Server, q: &[f32]) -> Vec<u64> {
    let mut c = s.clients().await;
    match c
        .search
        .search(pb::SearchRequest {
            collection: "docs".into(),
            vector: q.to_vec(),
            k: 5,
            ..Default::default()
        })
        .await
    {
        Ok(r) => r.into_inner().results.iter().map(|p| p.id).collect(),
        Err(_) => Vec::new(),
    }
}

/// Polls `s` until `q`'s best match is `id` (or the time is up); returns the wait.
async fn until_top(s: &Server, q: &[f32], id: u64) -> Duration {
    let t = Instant::now();
    while top(s, q).await.first() != Some(&id) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "id {id} never became visible"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_query_nodes_through_s3() {
    let Some(m) = moto::Moto::start() else { return };
    m.bucket("srv");
    let env: Vec<(&str, String)> = m.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let tmp = tempfile::tempdir().unwrap();
    let store = ["--store", "s3://srv/gyre", "--sync-interval-ms", "100"];
    let writer_args = [&store[..], &["--flush-interval-ms", "200"]].concat();
    let writer = Server::start_env(&tmp.path().join("w"), &writer_args, &env);
    let mut w = writer.clients().await;
    w.cols.create(create("docs", D as u32)).await.unwrap();
    let data = rows(2000, D, 5);
    let ids: Vec<u64> = (0..2000).collect();
    w.points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            ids,
            vectors: data.clone(),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let query_args = [&store[..], &["--role", "query"]].concat();
    let q1 = Server::start_env(&tmp.path().join("q1"), &query_args, &env);
    let q2 = Server::start_env(&tmp.path().join("q2"), &query_args, &env);
    for q in [&q1, &q2] {
        until_top(q, &data[7 * D..8 * D], 7).await;
        for i in (0..2000).step_by(199) {
            let v = &data[i * D..(i + 1) * D];
            assert_eq!(top(q, v).await, top(&writer, v).await, "row {i}");
        }
    }
    // The replication gauges: the served version and the cache's bytes.
    let m1 = common::fetch_metrics(q1.metrics.as_deref().unwrap());
    let line = |m: &str, name: &str| {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
    };
    assert!(
        line(&m1, "gyre_store_version{collection=\"docs\"}") >= 1.0,
        "{m1}"
    );
    assert!(line(&m1, "gyre_store_cache_bytes") > 100_000.0, "{m1}");
    let mw = common::fetch_metrics(writer.metrics.as_deref().unwrap());
    assert!(
        line(&mw, "gyre_store_version{collection=\"docs\"}") >= 1.0,
        "{mw}"
    );
    // A write is visible on both query nodes after the writer's flush interval and a sync.
    let fresh: Vec<f32> = data[3 * D..4 * D].iter().map(|x| x + 0.001).collect();
    let t = Instant::now();
    w.points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            ids: vec![9000],
            vectors: fresh.clone(),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap();
    for (i, q) in [&q1, &q2].into_iter().enumerate() {
        until_top(q, &fresh, 9000).await;
        eprintln!(
            "upsert to visible on query node {i}: {:.3} s (flush 200 ms, sync 100 ms)",
            t.elapsed().as_secs_f64()
        );
    }
    // Query nodes refuse writes, naming the store.
    let mut c1 = q1.clients().await;
    let e = c1
        .points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            ids: vec![1],
            vectors: data[..D].to_vec(),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("s3://srv/gyre"), "{e:?}");
    // A collection dropped on the writer is withdrawn from the query nodes.
    w.cols.create(create("scratch", D as u32)).await.unwrap();
    let names = |s: &Server| {
        let s = s.addr.clone();
        async move {
            let ch = tonic::transport::Channel::from_shared(format!("http://{s}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            gyre_proto::v1::collections_client::CollectionsClient::new(ch)
                .list(pb::ListCollectionsRequest {})
                .await
                .unwrap()
                .into_inner()
                .names
        }
    };
    let t = Instant::now();
    while !names(&q2).await.contains(&"scratch".to_string()) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "scratch never reached the query node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.cols
        .delete(pb::DeleteCollectionRequest {
            name: "scratch".into(),
        })
        .await
        .unwrap();
    while names(&q2).await.contains(&"scratch".to_string()) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the drop never reached the query node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(names(&q2).await, ["docs"]);
    // A second writer (here on the query node's copy of the collection) is refused while
    // the first holds the lease.
    let q1_dir = tmp.path().join("q1");
    assert!(q1.stop().success());
    let out = common::fails_to_start(&q1_dir, &writer_args, &env);
    assert!(out.contains("held by writer"), "{out}");
    // A restarted query node serves again (from its cache and the store).
    let q1 = Server::start_env(&q1_dir, &query_args, &env);
    assert_eq!(top(&q1, &fresh).await.first(), Some(&9000));
    drop(w);
    assert!(writer.stop().success());
    drop(q1);
    drop(q2);

    // Backup of the writer's data directory to the store, restored into a fresh one.
    let gyre = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gyre"))
            .envs(env.iter().copied())
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let wdir = tmp.path().join("w");
    let wd = wdir.to_str().unwrap();
    let (ok, out) = gyre(&[
        "backup",
        "create",
        "--collection",
        "docs",
        "--to",
        "s3://srv/backups",
        "--snapshot",
        "nightly",
        "--data-dir",
        wd,
    ]);
    assert!(
        ok && out.contains("backed up docs/nightly: 2001 points"),
        "{out}"
    );
    let (ok, out) = gyre(&["backup", "list", "--from", "s3://srv/backups", "--json"]);
    assert!(ok, "{out}");
    let l: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (l["name"].as_str(), l["points"].as_u64()),
        (Some("nightly"), Some(2001))
    );
    let fresh_dir = tmp.path().join("fresh");
    let fd = fresh_dir.to_str().unwrap();
    let (ok, out) = gyre(&[
        "backup",
        "restore",
        "--from",
        "s3://srv/backups",
        "--collection",
        "docs",
        "--name",
        "nightly",
        "--data-dir",
        fd,
    ]);
    assert!(ok && out.contains("(2001 points)"), "{out}");
    let (ok, out) = gyre(&["verify", "--data-dir", fd]);
    assert!(ok, "{out}");
    let restored = Server::start(&fresh_dir, &[]);
    let original = Server::start(&wdir, &[]);
    for i in (0..2000).step_by(97) {
        let v = &data[i * D..(i + 1) * D];
        assert_eq!(top(&restored, v).await, top(&original, v).await, "row {i}");
    }
    assert_eq!(top(&restored, &fresh).await.first(), Some(&9000));
    // With the store gone, a restarted query node still serves the last version it followed.
    drop(m);
    let t = Instant::now();
    let q2 = Server::start_env(&tmp.path().join("q2"), &query_args, &env);
    eprintln!(
        "query node restart with the store down: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(top(&q2, &fresh).await.first(), Some(&9000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_between_its_uploads_and_its_commit() {
    let Some(m) = moto::Moto::start() else { return };
    m.bucket("crash");
    let env_owned = m.env();
    let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let tmp = tempfile::tempdir().unwrap();
    let wdir = tmp.path().join("w");
    let args = ["--store", "s3://crash/gyre", "--sync-interval-ms", "100"];
    let writer = Server::start_env(&wdir, &args, &env);
    let mut w = writer.clients().await;
    w.cols.create(create("docs", D as u32)).await.unwrap();
    let data = rows(500, D, 9);
    w.points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            ids: (0..500).collect(),
            vectors: data.clone(),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap();
    drop(w);
    drop(writer); // SIGKILL: the 500 rows are acknowledged, in the WAL only

    // Restarted with a crash point: the Flush seals, the next round uploads the segment and
    // the process aborts before the version is committed.
    let crash_env = [&env[..], &[("GYRE_TEST_CRASH_BEFORE_COMMIT", "1")]].concat();
    let mut writer = Server::start_env(&wdir, &args, &crash_env);
    let mut w = writer.clients().await;
    w.admin
        .flush(pb::FlushRequest {
            collection: "docs".into(),
        })
        .await
        .unwrap();
    drop(w);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = writer.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the writer did not crash"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let store = gyre_objstore::ObjectDirectory::open("s3://crash/gyre", &m.options()).unwrap();
    let files = store.sub_dir("docs").sub_dir(".files");
    let uploaded: Vec<String> = files.list_all().unwrap().into_iter().map(|f| f.0).collect();
    assert!(
        uploaded.iter().any(|f| f.contains(".gseg.")),
        "{uploaded:?}"
    );
    // An orphan no version will name (as a compaction that never committed leaves).
    files
        .write_atomic("seg-00000000000000ff.gseg", b"orphan")
        .unwrap();

    // Restarted on the same directory: its own lease back at once, the uploaded segment
    // reused, the version committed, the orphan collected.
    let writer = Server::start_env(&wdir, &[&args[..], &["--gc-grace-ms", "0"]].concat(), &env);
    let q = Server::start_env(
        &tmp.path().join("q"),
        &[&args[..], &["--role", "query"]].concat(),
        &env,
    );
    for i in (0..500).step_by(61) {
        let v = &data[i * D..(i + 1) * D];
        until_top(&q, v, i as u64).await;
        assert_eq!(top(&q, v).await, top(&writer, v).await, "row {i}");
    }
    let t = Instant::now();
    while files.file_len("seg-00000000000000ff.gseg").is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the orphan was never collected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything a version names is still there.
    let mut cq = q.clients().await;
    let st = cq
        .admin
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.collections[0].points, 500);
}
