//! The server under hostile input, slow clients and long requests: one test per defect of the
//! hardening issue, each against the real binary on a free loopback port.

#![allow(clippy::print_stderr)] // tests that skip say so

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use gyre_proto::v1::{
    self as pb, collections_client::CollectionsClient, points_client::PointsClient,
    search_client::SearchClient,
};
use tonic::Code;

use common::{
    Clients, Server, create, fails_to_start, fetch, raw_call, raw_stream, rows, with_key,
};

fn up(name: &str, ids: std::ops::Range<u64>, d: usize, seed: u32) -> pb::UpsertRequest {
    let n = (ids.end - ids.start) as usize;
    pb::UpsertRequest {
        payloads: Vec::new(),
        collection: name.into(),
        ids: ids.collect(),
        vectors: rows(n, d, seed),
        wait: true,
    }
}

async fn count(points: &mut PointsClient<tonic::transport::Channel>, name: &str) -> u64 {
    points
        .count(pb::CountRequest {
            filter: None,
            collection: name.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .count
}

/// Defect 1: a refused message in an `UpsertStream` leaves every message before it written
/// (and durable), none after it, and the error says how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_message_keeps_every_message_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let Clients {
        mut cols,
        mut points,
        ..
    } = server.clients().await;
    let d = 16;
    for trial in 0..8u64 {
        let name = format!("s{trial}");
        cols.create(create(&name, d as u32)).await.unwrap();
        // Eight valid messages of 50 rows, then a bad one (wrong dimension, or a NaN), then
        // one more valid message that must not be written.
        let bad_at = if trial % 2 == 0 { 8 } else { 3 + trial };
        let mut msgs: Vec<pb::UpsertRequest> = (0..bad_at)
            .map(|b| up(&name, b * 50..(b + 1) * 50, d, b as u32 + 1))
            .collect();
        let mut bad = up(&name, 9000..9050, d, 99);
        if trial % 4 < 2 {
            bad.vectors.pop();
        } else {
            bad.vectors[7] = f32::NAN;
        }
        msgs.push(bad);
        msgs.push(up(&name, 10_000..10_050, d, 100));
        let e = points
            .upsert_stream(tokio_stream::iter(msgs))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let m = e.message();
        assert!(m.contains(&format!("message {bad_at}")), "{m}");
        assert!(
            m.contains(&format!(
                "{bad_at} earlier messages, {} points",
                bad_at * 50
            )),
            "{m}"
        );
        assert_eq!(
            e.metadata().get("gyre-upserted-batches").unwrap(),
            &bad_at.to_string()
        );
        assert_eq!(
            count(&mut points, &name).await,
            bad_at * 50,
            "trial {trial}"
        );
    }
    // Durable: a restart keeps them.
    assert!(server.stop().success());
    let server = Server::start(dir.path(), &[]);
    let mut points = PointsClient::new(server.channel().await);
    assert_eq!(count(&mut points, "s0").await, 400);
    // A message that is no protobuf at all: INVALID_ARGUMENT naming it, the messages before
    // it written; also when it is the very first.
    {
        use prost::Message;
        let ch = server.channel().await;
        let garbage = vec![0x0f, 0xff, 0xff, 0xff, 0xff];
        let valid: Vec<Vec<u8>> = (0..3)
            .map(|b| up("s0", 20_000 + b * 10..20_000 + (b + 1) * 10, d, 7).encode_to_vec())
            .collect();
        let mut msgs = valid.clone();
        msgs.push(garbage.clone());
        let e = raw_stream(ch.clone(), "/gyre.v1.Points/UpsertStream", msgs)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("message 3") && e.message().contains("malformed"),
            "{}",
            e.message()
        );
        assert!(
            e.message().contains("3 earlier messages, 30 points"),
            "{}",
            e.message()
        );
        let e = raw_stream(ch, "/gyre.v1.Points/UpsertStream", vec![garbage])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("message 0"), "{}", e.message());
        assert_eq!(count(&mut points, "s0").await, 430);
    }
    // A stream without a collection in its first message is refused as such.
    let mut nameless = up("", 0..5, d, 1);
    nameless.collection.clear();
    let e = points
        .upsert_stream(tokio_stream::iter(vec![nameless]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("first message"), "{}", e.message());
}

/// Defect 2: small requests are not held back by Nagle's algorithm (TCP_NODELAY on accepted
/// connections). Without it a 50-row upsert took ~45 ms (Nagle's wait for the delayed ACK);
/// with it a few ms. The bound is far above either so that a noisy machine cannot fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_upserts_are_not_delayed_by_nagle() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let Clients {
        mut cols,
        mut points,
        ..
    } = server.clients().await;
    let d = 384;
    cols.create(create("n", d as u32)).await.unwrap();
    let mut took = Vec::new();
    for i in 0..31u64 {
        let t = Instant::now();
        points
            .upsert(up("n", i * 50..(i + 1) * 50, d, i as u32))
            .await
            .unwrap();
        took.push(t.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(25),
        "median 50-row upsert {median:?} (all: {took:?})"
    );
}

/// Defect 3: a deadline stops the engine's work, so abandoned searches do not starve the next
/// request; and searches beyond the slots and the queue are refused, not piled up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_searches_stop_and_do_not_starve_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let Clients {
        ch,
        mut cols,
        mut points,
        ..
    } = server.clients().await;
    let d = 128usize;
    // One memtable, so no background seal spends CPU while it is measured.
    cols.create(pb::CreateCollectionRequest {
        segment_rows: 1_000_000,
        ..create("big", d as u32)
    })
    .await
    .unwrap();
    for part in 0..4u64 {
        points
            .upsert(up(
                "big",
                part * 25_000..(part + 1) * 25_000,
                d,
                8 + part as u32,
            ))
            .await
            .unwrap();
    }
    // Four exact batches of 4,000 queries over 100,000 rows (several seconds of work each
    // on two cores), each with a 100 ms deadline.
    let mut calls = Vec::new();
    for i in 0..4u32 {
        let mut search = SearchClient::new(ch.clone());
        calls.push(tokio::spawn(async move {
            let mut req = tonic::Request::new(pb::SearchBatchRequest {
                collection: "big".into(),
                vectors: rows(4000, d, 9 + i),
                k: 100,
                params: Some(pb::SearchParams {
                    exact: true,
                    ..Default::default()
                }),
                ..Default::default()
            });
            req.set_timeout(Duration::from_millis(100));
            search.search_batch(req).await
        }));
    }
    for c in calls {
        // The server answers DEADLINE_EXCEEDED shortly before the deadline; with a megabyte
        // to upload first, the client's own timer may fire first (CANCELLED "Timeout
        // expired"). Either way the server's work is cancelled.
        let e = c.await.unwrap().unwrap_err();
        assert!(
            matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{e:?}"
        );
    }
    // The abandoned work stops: the server's CPU time stays flat once the calls are answered
    // (before, four batches kept both cores busy for about 40 s).
    if let Some(before) = cpu_seconds(server.child.id()) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let start = cpu_seconds(server.child.id()).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = cpu_seconds(server.child.id()).unwrap() - start;
        assert!(
            used < 0.3,
            "the server used {used:.2} s of CPU in the second after the deadlines ({before:.2} s before)"
        );
    } else {
        eprintln!("SKIPPED the CPU check: no /proc/PID/stat on this system");
    }
    // An exact batch, which needs the same threads, runs at once too.
    let t = Instant::now();
    SearchClient::new(ch.clone())
        .search_batch(pb::SearchBatchRequest {
            collection: "big".into(),
            vectors: rows(20, d, 77),
            k: 10,
            params: Some(pb::SearchParams {
                exact: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the exact batch took {:?}",
        t.elapsed()
    );
    // The next small search is served at once, not after the abandoned work.
    let mut search = SearchClient::new(ch.clone());
    let t = Instant::now();
    let r = search
        .search(pb::SearchRequest {
            collection: "big".into(),
            vector: rows(1, d, 3),
            k: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let waited = t.elapsed();
    assert_eq!(r.results.len(), 10);
    assert!(
        waited < Duration::from_secs(3),
        "the small search waited {waited:?}"
    );
    drop(server);

    // One slot and a queue of one: of three long searches at once, one runs, one waits and
    // one is refused with RESOURCE_EXHAUSTED naming the limit.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--max-concurrent-searches",
            "1",
            "--max-queued-searches",
            "1",
        ],
    );
    let ch = server.channel().await;
    CollectionsClient::new(ch.clone())
        .create(create("q", d as u32))
        .await
        .unwrap();
    PointsClient::new(ch.clone())
        .upsert(up("q", 0..20_000, d, 8))
        .await
        .unwrap();
    let mut calls = Vec::new();
    for i in 0..3u32 {
        let mut search = SearchClient::new(ch.clone());
        calls.push(tokio::spawn(async move {
            let mut req = tonic::Request::new(pb::SearchBatchRequest {
                collection: "q".into(),
                vectors: rows(2000, d, i),
                k: 10,
                params: Some(pb::SearchParams {
                    exact: true,
                    ..Default::default()
                }),
                ..Default::default()
            });
            req.set_timeout(Duration::from_millis(1500));
            search.search_batch(req).await.map(|_| ())
        }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut refused = 0;
    for c in calls {
        if let Err(e) = c.await.unwrap()
            && e.code() == Code::ResourceExhausted
        {
            assert!(
                e.message().contains("--max-queued-searches"),
                "{}",
                e.message()
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 1);
}

/// User plus system CPU seconds of process `pid` (Linux `/proc`), or `None` elsewhere.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, so split after its ')').
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// Defect 4: queries × k and the response's bytes are bounded per request, and refused before
/// any work with RESOURCE_EXHAUSTED naming the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let Clients {
        mut cols,
        mut points,
        mut search,
        ..
    } = server.clients().await;
    let d = 16usize;
    cols.create(create("r", d as u32)).await.unwrap();
    points.upsert(up("r", 0..2000, d, 1)).await.unwrap();
    let batch = |n: usize, k: u32, with_vectors: bool| pb::SearchBatchRequest {
        collection: "r".into(),
        vectors: rows(n, d, 2),
        k,
        with_vectors,
        ..Default::default()
    };
    // 2,000 queries × k = 10,000: 20 million results (213 MB before), refused by default.
    let e = search
        .search_batch(batch(2000, 10_000, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("--max-results"), "{}", e.message());
    drop(server);
    let server = Server::start(
        dir.path(),
        &["--max-results", "5000", "--max-response-bytes", "100000"],
    );
    let Clients {
        mut search,
        mut points,
        ..
    } = server.clients().await;
    let ok = search.search_batch(batch(100, 40, false)).await.unwrap();
    assert_eq!(ok.into_inner().results.len(), 100);
    let e = search
        .search_batch(batch(100, 51, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("--max-results"), "{}", e.message());
    // 100 × 40 results with 16-float vectors: over 100,000 bytes.
    let e = search.search_batch(batch(100, 40, true)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("--max-response-bytes"),
        "{}",
        e.message()
    );
    // Get: one id repeated 100,000 times is one point; 6,000 distinct ids are refused.
    let g = points
        .get(pb::GetPointsRequest {
            with_payload: false,
            collection: "r".into(),
            ids: vec![7; 100_000],
            with_vectors: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.points.len(), 1);
    assert_eq!(g.points[0].id, 7);
    let e = points
        .get(pb::GetPointsRequest {
            with_payload: false,
            collection: "r".into(),
            ids: (0..6000).collect(),
            with_vectors: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("--max-results"), "{}", e.message());
}

/// Defect 5: empty or short keys are refused at start-up, from the flag, the environment or
/// the config file; keys can come from a file; an empty presented key never gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_or_short_api_keys_are_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let e = fails_to_start(&data, &["--api-key", ""], &[]);
    assert!(e.contains("--api-key is empty"), "{e}");
    let e = fails_to_start(&data, &["--api-key", "short"], &[]);
    assert!(e.contains("at least 16"), "{e}");
    let e = fails_to_start(&data, &[], &[("GYRE_API_KEY", "")]);
    assert!(e.contains("GYRE_API_KEY is empty"), "{e}");
    let config = dir.path().join("gyre.toml");
    std::fs::write(&config, "api_key = \"\"\n").unwrap();
    let e = fails_to_start(&data, &["--config", config.to_str().unwrap()], &[]);
    assert!(e.contains("api_key in the config file is empty"), "{e}");
    let e = fails_to_start(
        &data,
        &[
            "--api-key",
            "0123456789abcdef0123",
            "--read-only-api-key",
            "",
        ],
        &[],
    );
    assert!(e.contains("--read-only-api-key is empty"), "{e}");
    // From a file (with its trailing newline), not on the command line.
    let key_file = dir.path().join("key");
    let mut f = std::fs::File::create(&key_file).unwrap();
    writeln!(f, "file-key-0123456789abcdef").unwrap();
    drop(f);
    let server = Server::start(&data, &["--api-key-file", key_file.to_str().unwrap()]);
    let mut cols = CollectionsClient::new(server.channel().await);
    cols.list(with_key(
        pb::ListCollectionsRequest {},
        Some("file-key-0123456789abcdef"),
    ))
    .await
    .unwrap();
    for bad in ["", " "] {
        let mut r = tonic::Request::new(pb::ListCollectionsRequest {});
        r.metadata_mut().insert("x-api-key", bad.parse().unwrap());
        assert_eq!(
            cols.list(r).await.unwrap_err().code(),
            Code::Unauthenticated
        );
        let mut r = tonic::Request::new(pb::ListCollectionsRequest {});
        r.metadata_mut()
            .insert("authorization", format!("Bearer {bad}").parse().unwrap());
        assert_eq!(
            cols.list(r).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    drop(server);
    // From the environment.
    let server = Server::start_env(&data, &[], &[("GYRE_API_KEY", "env-key-0123456789abcdef")]);
    let mut cols = CollectionsClient::new(server.channel().await);
    assert_eq!(
        cols.list(pb::ListCollectionsRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    cols.list(with_key(
        pb::ListCollectionsRequest {},
        Some("env-key-0123456789abcdef"),
    ))
    .await
    .unwrap();
}

/// Defect 6: with keys set, `/metrics` needs one (the full-access, read-only or metrics key);
/// every other path is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_key_when_keys_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let (w, r, m) = (
        "metrics-test-write-0001",
        "metrics-test-read-00001",
        "metrics-test-scrape-001",
    );
    let server = Server::start(
        dir.path(),
        &[
            "--api-key",
            w,
            "--read-only-api-key",
            r,
            "--metrics-api-key",
            m,
        ],
    );
    CollectionsClient::new(server.channel().await)
        .create(with_key(create("secret-name", 8), Some(w)))
        .await
        .unwrap();
    let addr = server.metrics.clone().unwrap();
    let get = |auth: Option<&str>, path: &str| {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let auth = auth.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let anon = get(None, "/metrics");
    assert!(anon.starts_with("HTTP/1.1 401"), "{anon}");
    assert!(!anon.contains("secret-name"));
    assert!(get(Some("wrong-key-000000000000"), "/metrics").starts_with("HTTP/1.1 401"));
    for key in [w, r, m] {
        let ok = get(Some(key), "/metrics");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains("gyre_collection_points{collection=\"secret-name\"}"),
            "{ok}"
        );
    }
    assert!(get(Some(w), "/").starts_with("HTTP/1.1 404"));
    assert!(get(Some(w), "/debug").starts_with("HTTP/1.1 404"));
    // The metrics key opens nothing else.
    let e = CollectionsClient::new(server.channel().await)
        .list(with_key(pb::ListCollectionsRequest {}, Some(m)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Without keys the endpoint stays open (loopback by default).
    drop(server);
    let server = Server::start(dir.path(), &[]);
    let open = fetch(server.metrics.as_deref().unwrap(), "/metrics");
    assert!(open.starts_with("HTTP/1.1 200"), "{open}");
}

/// Defect 7: errors never echo unbounded input (a 1 MiB name came back in a 1 MiB message,
/// which clients then reported as "metadata size exceeds hard limit").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_do_not_echo_unbounded_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let Clients {
        mut cols,
        mut points,
        ..
    } = server.clients().await;
    let huge = "n".repeat(1 << 20);
    let e = points
        .count(pb::CountRequest {
            filter: None,
            collection: huge.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().len() <= 1024, "{} bytes", e.message().len());
    let e = cols.create(create(&huge, 8)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", &e.message()[..100]);
    assert!(e.message().len() <= 1024, "{} bytes", e.message().len());
    assert!(e.message().contains("1048576 bytes"), "{}", e.message());
    let e = cols
        .get(pb::GetCollectionRequest {
            name: "ü".repeat(100_000),
        })
        .await
        .unwrap_err();
    assert!(e.message().len() <= 1024, "{} bytes", e.message().len());
}

/// Defect 8: vectors of tiny (or huge) magnitude are scored exactly or refused with
/// INVALID_ARGUMENT, never answered wrongly with OK; the same rule for points and queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_magnitudes_are_refused_or_exact() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let Clients {
        mut cols,
        mut points,
        mut search,
        ..
    } = server.clients().await;
    let d = 384usize;
    cols.create(pb::CreateCollectionRequest {
        metric: pb::Metric::Cosine.into(),
        ..create("tiny", d as u32)
    })
    .await
    .unwrap();
    let data = rows(500, d, 5);
    points
        .upsert(pb::UpsertRequest {
            payloads: Vec::new(),
            collection: "tiny".into(),
            ids: (0..500).collect(),
            vectors: data.clone(),
            wait: true,
        })
        .await
        .unwrap();
    let q = |v: Vec<f32>, exact: bool| pb::SearchRequest {
        collection: "tiny".into(),
        vector: v,
        k: 1,
        params: Some(pb::SearchParams {
            exact,
            ..Default::default()
        }),
        ..Default::default()
    };
    let target = &data[241 * d..242 * d];
    for exact in [false, true] {
        // A real vector scaled within the range finds itself.
        for scale in [1e-9f32, 1e9] {
            let v: Vec<f32> = target.iter().map(|x| x * scale).collect();
            let r = search.search(q(v, exact)).await.unwrap().into_inner();
            assert_eq!(r.results[0].id, 241, "scale {scale} exact {exact}");
        }
        for v in [
            vec![1e-25f32; d],
            target.iter().map(|x| x * 1e-38).collect::<Vec<f32>>(),
        ] {
            let e = search.search(q(v, exact)).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(
                e.message().contains("`vector`") && e.message().contains("1e-10"),
                "{}",
                e.message()
            );
        }
    }
    let e = points
        .upsert(pb::UpsertRequest {
            payloads: Vec::new(),
            collection: "tiny".into(),
            ids: vec![9999],
            vectors: vec![1e-45; d],
            wait: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("`vectors`") && e.message().contains("row 0"),
        "{}",
        e.message()
    );
}

/// Defect 9: malformed messages are INVALID_ARGUMENT; unknown methods say which; errors name
/// the right field; rescore without stored vectors is refused like exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ch = server.channel().await;
    // Bytes that are no protobuf message (a field with a reserved wire type).
    let garbage = vec![0x0f, 0xff, 0xff, 0xff, 0xff];
    let e = raw_call(ch.clone(), "/gyre.v1.Points/Upsert", garbage.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("malformed"), "{}", e.message());
    let e = raw_call(ch.clone(), "/gyre.v1.Search/Search", garbage)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    for path in ["/gyre.v1.Points/Nope", "/nobody.Service/Call"] {
        let path: &'static str = path;
        let e = raw_call(ch.clone(), path, Vec::new()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);
        assert!(e.message().contains(path), "{}", e.message());
    }
    let (mut cols, mut points, mut search) = (
        CollectionsClient::new(ch.clone()),
        PointsClient::new(ch.clone()),
        SearchClient::new(ch),
    );
    cols.create(pb::CreateCollectionRequest {
        rerank: pb::RerankStorage::None.into(),
        ..create("codes", 8)
    })
    .await
    .unwrap();
    points.upsert(up("codes", 0..100, 8, 1)).await.unwrap();
    let with = |p: pb::SearchParams| pb::SearchRequest {
        collection: "codes".into(),
        vector: rows(1, 8, 2),
        k: 3,
        params: Some(p),
        ..Default::default()
    };
    let e = search
        .search(with(pb::SearchParams {
            exact: true,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("invalid argument `params.exact`"),
        "{}",
        e.message()
    );
    assert!(!e.message().contains("`vector`"), "{}", e.message());
    let e = search
        .search(with(pb::SearchParams {
            rescore: Some(true),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("`params.rescore`"), "{}", e.message());
    // Unset or false rescore is fine.
    for rescore in [None, Some(false)] {
        let r = search
            .search(with(pb::SearchParams {
                rescore,
                ..Default::default()
            }))
            .await
            .unwrap();
        assert_eq!(r.into_inner().results.len(), 3);
    }
}

/// Defect 10 lives in `readme_grpcurl.rs`; defect 11: `Stats` and the metrics show deleted
/// rows and the bytes they hold per collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_deleted_rows_and_dead_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let Clients {
        mut cols,
        mut points,
        mut admin,
        ..
    } = server.clients().await;
    cols.create(create("dead", 32)).await.unwrap();
    points.upsert(up("dead", 0..1000, 32, 1)).await.unwrap();
    admin
        .flush(pb::FlushRequest {
            collection: "dead".into(),
        })
        .await
        .unwrap();
    points
        .delete(pb::DeletePointsRequest {
            collection: "dead".into(),
            ids: (0..300).collect(),
            wait: true,
        })
        .await
        .unwrap();
    let s = admin.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(s.deleted, 300);
    let c = &s.collections[0];
    assert_eq!((c.deleted, c.points), (300, 700));
    let seg: u64 = c.segments.iter().map(|s| s.bytes).sum();
    assert!(c.dead_bytes > seg / 4 && c.dead_bytes < seg / 2, "{c:?}");
    assert_eq!(s.dead_bytes, c.dead_bytes);
    let m = fetch(server.metrics.as_deref().unwrap(), "/metrics");
    assert!(
        m.contains(&format!(
            "gyre_collection_dead_bytes{{collection=\"dead\"}} {}",
            c.dead_bytes
        )),
        "{m}"
    );
    assert!(
        m.contains("gyre_collection_deleted_rows{collection=\"dead\"} 300"),
        "{m}"
    );
}

/// A client that asks for a large answer and then stops reading (its TCP window fills) holds
/// only its own stream: the server keeps serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_stall_others() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let Clients {
        mut cols,
        mut points,
        ..
    } = server.clients().await;
    let d = 16usize;
    cols.create(create("slow", d as u32)).await.unwrap();
    points.upsert(up("slow", 0..5000, d, 1)).await.unwrap();
    // By hand over TCP: the HTTP/2 preface, SETTINGS, one request, and then never a read.
    let request = pb::SearchBatchRequest {
        collection: "slow".into(),
        vectors: rows(100, d, 2),
        k: 1000,
        with_vectors: true,
        ..Default::default()
    }
    .encode_to_vec();
    let frame = |kind: u8, flags: u8, payload: &[u8]| {
        let n = payload.len();
        let mut f = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    };
    let mut headers = Vec::new();
    for (k, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/gyre.v1.Search/SearchBatch"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        headers.push(0); // literal, not indexed, new name
        headers.push(k.len() as u8);
        headers.extend_from_slice(k.as_bytes());
        headers.push(v.len() as u8);
        headers.extend_from_slice(v.as_bytes());
    }
    let mut body = vec![0];
    body.extend_from_slice(&(request.len() as u32).to_be_bytes());
    body.extend_from_slice(&request);
    assert!(body.len() < 16_384);
    let mut slow = std::net::TcpStream::connect(&server.addr).unwrap();
    slow.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let mut settings = frame(4, 0, &[]);
    settings[5..9].copy_from_slice(&[0, 0, 0, 0]);
    slow.write_all(&settings).unwrap();
    slow.write_all(&frame(1, 0x4, &headers)).unwrap();
    slow.write_all(&frame(0, 0x1, &body)).unwrap();
    // Its answer is about 8 MB; it reads none of it. Everyone else is served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut search = SearchClient::new(server.channel().await);
    let t = Instant::now();
    for i in 0..50u32 {
        let r = search
            .search(pb::SearchRequest {
                collection: "slow".into(),
                vector: rows(1, d, i),
                k: 5,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(r.into_inner().results.len(), 5);
    }
    points.upsert(up("slow", 5000..5050, d, 3)).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(count(&mut points, "slow").await, 5050);
    drop(slow);
}
