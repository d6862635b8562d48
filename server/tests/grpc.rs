//! End-to-end tests of `gyre serve`: each test starts the real binary on a free loopback port
//! (`--listen 127.0.0.1:0`; the chosen port is read from its first line of output), drives it
//! with tonic clients, and stops it with SIGTERM.

#![allow(clippy::print_stderr)] // tests that skip say so

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use gyre_proto::v1::{
    self as pb, admin_client::AdminClient, collections_client::CollectionsClient,
    points_client::PointsClient, search_client::SearchClient,
};
use tonic::Code;
use tonic::transport::Channel;

use common::{Server, create, fetch, fetch_metrics, rows, with_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_load_search_delete_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ch = server.channel().await;
    let (mut cols, mut points, mut search, mut admin) = (
        CollectionsClient::new(ch.clone()),
        PointsClient::new(ch.clone()),
        SearchClient::new(ch.clone()),
        AdminClient::new(ch),
    );
    let d = 32usize;
    let info = cols
        .create(create("docs", d as u32))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.dim, info.bits, info.points), (32, 4, 0));
    // Bulk load through the stream: three batches.
    let data = rows(300, d, 1);
    let batches: Vec<pb::UpsertRequest> = (0..3)
        .map(|b| pb::UpsertRequest {
            payloads: Vec::new(),
            collection: if b == 0 { "docs".into() } else { String::new() },
            ids: (b * 100..(b + 1) * 100).collect(),
            vectors: data[b as usize * 100 * d..(b as usize + 1) * 100 * d].to_vec(),
            wait: true,
        })
        .collect();
    let sent = points
        .upsert_stream(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((sent.upserted, sent.batches), (300, 3));
    let count = |n| pb::CountRequest {
        filter: None,
        collection: n,
    };
    assert_eq!(
        points
            .count(count("docs".into()))
            .await
            .unwrap()
            .into_inner()
            .count,
        300
    );
    // Search: a stored vector finds itself at distance 0, with its vector when asked.
    let r = search
        .search(pb::SearchRequest {
            collection: "docs".into(),
            vector: data[7 * d..8 * d].to_vec(),
            k: 5,
            with_vectors: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 5);
    assert_eq!(r.results[0].id, 7);
    assert!(r.results[0].score.abs() < 1e-4);
    assert_eq!(r.results[0].vector, data[7 * d..8 * d].to_vec());
    // Batch search with an allow-list.
    let b = search
        .search_batch(pb::SearchBatchRequest {
            collection: "docs".into(),
            vectors: data[..3 * d].to_vec(),
            k: 3,
            allow_ids: vec![0, 1, 2, 250],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.results.len(), 3);
    for (q, res) in b.results.iter().enumerate() {
        assert_eq!(res.results[0].id, q as u64);
        assert!(res.results.iter().all(|p| [0, 1, 2, 250].contains(&p.id)));
    }
    // Exact search agrees on the nearest point.
    let e = search
        .search(pb::SearchRequest {
            collection: "docs".into(),
            vector: data[9 * d..10 * d].to_vec(),
            k: 1,
            params: Some(pb::SearchParams {
                exact: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.results[0].id, 9);
    // Get and delete.
    let g = points
        .get(pb::GetPointsRequest {
            with_payload: false,
            collection: "docs".into(),
            ids: vec![5, 999],
            with_vectors: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.points.len(), 1);
    assert_eq!(g.points[0].vector, data[5 * d..6 * d].to_vec());
    let del = points
        .delete(pb::DeletePointsRequest {
            collection: "docs".into(),
            ids: vec![5, 6, 999],
            wait: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(del.deleted, 2);
    admin
        .flush(pb::FlushRequest {
            collection: "docs".into(),
        })
        .await
        .unwrap();
    let stats = admin.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.collections[0].points, 298);
    assert_eq!(stats.collections[0].segments.len(), 1);
    let names = cols
        .list(pb::ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .names;
    assert_eq!(names, vec!["docs".to_string()]);
    // Metrics.
    let metrics = fetch_metrics(server.metrics.as_deref().unwrap());
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let other = fetch(server.metrics.as_deref().unwrap(), "/");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    assert!(
        metrics.contains("gyre_requests_total{method=\"Search/Search\",code=\"OK\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gyre_collection_points{collection=\"docs\"} 298"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gyre_request_duration_seconds_count{method=\"Points/UpsertStream\"} 1")
    );
    // A clean stop, then a restart finds everything.
    assert!(server.stop().success(), "graceful shutdown exits 0");
    let server = Server::start(dir.path(), &[]);
    let ch = server.channel().await;
    let mut points = PointsClient::new(ch.clone());
    assert_eq!(
        points
            .count(count("docs".into()))
            .await
            .unwrap()
            .into_inner()
            .count,
        298
    );
    let g = points
        .get(pb::GetPointsRequest {
            with_payload: false,
            collection: "docs".into(),
            ids: vec![5, 7],
            with_vectors: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.points.len(), 1);
    assert_eq!(g.points[0].vector, data[7 * d..8 * d].to_vec());
    let mut cols = CollectionsClient::new(ch);
    cols.delete(pb::DeleteCollectionRequest {
        name: "docs".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        cols.get(pb::GetCollectionRequest {
            name: "docs".into()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_status_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--max-request-bytes", "200000", "--max-k", "100"],
    );
    let ch = server.channel().await;
    let (mut cols, mut points, mut search) = (
        CollectionsClient::new(ch.clone()),
        PointsClient::new(ch.clone()),
        SearchClient::new(ch.clone()),
    );
    let d = 16usize;
    cols.create(create("c", d as u32)).await.unwrap();
    let code = |r: Result<tonic::Response<_>, tonic::Status>| {
        let s = r.map(|_: tonic::Response<()>| ()).unwrap_err();
        (s.code(), s.message().to_string())
    };
    let up = |ids: Vec<u64>, vectors: Vec<f32>| pb::UpsertRequest {
        payloads: Vec::new(),
        collection: "c".into(),
        ids,
        vectors,
        wait: true,
    };
    // Duplicate create, bad configs, unknown collection.
    let e = cols.create(create("c", d as u32)).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = cols.create(create("bad/name", 8)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = cols
        .create(pb::CreateCollectionRequest {
            bits: 9,
            ..create("b", 8)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = points
        .count(pb::CountRequest {
            filter: None,
            collection: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = points
        .upsert(pb::UpsertRequest {
            collection: "nope".into(),
            ..up(vec![1], rows(1, d, 1))
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Wrong dimension, NaN, empty batch.
    let (c, m) = code(
        points
            .upsert(up(vec![1], rows(1, d + 1, 1)))
            .await
            .map(|_| tonic::Response::new(())),
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("vectors"), "{m}");
    let mut nan = rows(1, d, 2);
    nan[3] = f32::NAN;
    let (c, m) = code(
        points
            .upsert(up(vec![1], nan))
            .await
            .map(|_| tonic::Response::new(())),
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("vectors") && m.contains("NaN"), "{m}");
    let (c, m) = code(
        points
            .upsert(up(vec![], vec![]))
            .await
            .map(|_| tonic::Response::new(())),
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("ids"), "{m}");
    points
        .upsert(up((0..500).collect(), rows(500, d, 3)))
        .await
        .unwrap();
    // k = 0, k above the maximum, a query of the wrong length.
    let q = |k: u32, v: Vec<f32>| pb::SearchRequest {
        collection: "c".into(),
        vector: v,
        k,
        ..Default::default()
    };
    let e = search.search(q(0, rows(1, d, 4))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("`k`"));
    let e = search.search(q(101, rows(1, d, 4))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("--max-k"));
    let e = search.search(q(5, rows(1, d - 1, 4))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("vector"));
    // Too large a request: RESOURCE_EXHAUSTED, pointing at UpsertStream.
    let big = up((0..5000).collect(), rows(5000, d, 5));
    let e = points.upsert(big).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("UpsertStream"), "{}", e.message());
    // The server is still up and answers.
    let r = search
        .search(q(3, rows(1, d, 7)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 3);
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_every_rpc_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--api-key",
            "s3cret-write-key-0001",
            "--read-only-api-key",
            "s3cret-read-key-00001",
        ],
    );
    let ch = server.channel().await;
    let (mut cols, mut points, mut search) = (
        CollectionsClient::new(ch.clone()),
        PointsClient::new(ch.clone()),
        SearchClient::new(ch.clone()),
    );
    let e = cols
        .create(with_key(create("k", 8), None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = cols
        .create(with_key(create("k", 8), Some("wrong")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = cols
        .create(with_key(create("k", 8), Some("s3cret-read-key-00001")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    cols.create(with_key(create("k", 8), Some("s3cret-write-key-0001")))
        .await
        .unwrap();
    let up = pb::UpsertRequest {
        payloads: Vec::new(),
        collection: "k".into(),
        ids: vec![1, 2],
        vectors: rows(2, 8, 1),
        wait: true,
    };
    let e = points
        .upsert(with_key(up.clone(), Some("s3cret-read-key-00001")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    points
        .upsert(with_key(up, Some("s3cret-write-key-0001")))
        .await
        .unwrap();
    // x-api-key works too; the read-only key may search and read.
    let mut r = tonic::Request::new(pb::SearchRequest {
        collection: "k".into(),
        vector: rows(1, 8, 2),
        k: 1,
        ..Default::default()
    });
    r.metadata_mut()
        .insert("x-api-key", "s3cret-read-key-00001".parse().unwrap());
    assert_eq!(
        search.search(r).await.unwrap().into_inner().results.len(),
        1
    );
    let e = search
        .search(with_key(
            pb::SearchRequest {
                collection: "k".into(),
                vector: rows(1, 8, 2),
                k: 1,
                ..Default::default()
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = points
        .count(with_key(
            pb::CountRequest {
                filter: None,
                collection: "k".into(),
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Health needs no key.
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
}

/// A search that cannot finish within the client's deadline is answered DEADLINE_EXCEEDED
/// (by the server, shortly before the client's own timer would cancel the call), and the
/// server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ch = server.channel().await;
    let (mut cols, mut points, mut search) = (
        CollectionsClient::new(ch.clone()),
        PointsClient::new(ch.clone()),
        SearchClient::new(ch),
    );
    let d = 64usize;
    cols.create(create("slow", d as u32)).await.unwrap();
    points
        .upsert(pb::UpsertRequest {
            payloads: Vec::new(),
            collection: "slow".into(),
            ids: (0..40_000).collect(),
            vectors: rows(40_000, d, 8),
            wait: true,
        })
        .await
        .unwrap();
    // Exact search of 4,000 queries: about 10 billion multiply-adds, far beyond 1 s.
    let mut req = tonic::Request::new(pb::SearchBatchRequest {
        collection: "slow".into(),
        vectors: rows(4000, d, 9),
        k: 10,
        params: Some(pb::SearchParams {
            exact: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(1000));
    let t = std::time::Instant::now();
    let e = search.search_batch(req).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
    let n = points
        .count(pb::CountRequest {
            filter: None,
            collection: "slow".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(n, 40_000);
}

/// TLS with a certificate and key file: a client trusting the certificate gets through, a
/// plaintext client does not. Needs the `openssl` command to make a certificate (skips
/// visibly without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_trusting_clients_only() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new("openssl")
            .current_dir(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // A throwaway CA and a localhost certificate it signs.
    let made = run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=gyre-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "cert.pem",
        "-extfile",
        "ext.cnf",
    ]);
    if !made {
        eprintln!("SKIPPED tls test: the openssl command could not make certificates");
        return;
    }
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()))
        .domain_name("localhost");
    let ch = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS connect");
    let mut cols = CollectionsClient::new(ch);
    cols.create(create("secure", 8)).await.unwrap();
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        let e = CollectionsClient::new(plain)
            .list(pb::ListCollectionsRequest {})
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok);
    }
}

/// Reflection lists the services with no .proto files at hand (what `grpcurl list` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut client = ServerReflectionClient::new(server.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer {msg:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "gyre.v1.Collections",
        "gyre.v1.Points",
        "gyre.v1.Search",
        "gyre.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

/// Snapshots over the Admin service: taken while serving, restored beside and over the
/// collection with exactly the snapshot's points, listed, removed; unknown names NOT_FOUND,
/// a taken name ALREADY_EXISTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_taken_listed_restored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ch = server.channel().await;
    let (mut cols, mut points, mut admin) = (
        CollectionsClient::new(ch.clone()),
        PointsClient::new(ch.clone()),
        AdminClient::new(ch),
    );
    let d = 16usize;
    cols.create(create("docs", d as u32)).await.unwrap();
    let data = rows(400, d, 3);
    let up = |lo: u64, hi: u64| pb::UpsertRequest {
        payloads: Vec::new(),
        collection: "docs".into(),
        ids: (lo..hi).collect(),
        vectors: data[lo as usize * d..hi as usize * d].to_vec(),
        wait: true,
    };
    points.upsert(up(0, 250)).await.unwrap();
    admin
        .flush(pb::FlushRequest {
            collection: "docs".into(),
        })
        .await
        .unwrap();
    points.upsert(up(250, 300)).await.unwrap();
    let snap = admin
        .create_snapshot(pb::CreateSnapshotRequest {
            collection: "docs".into(),
            name: "s".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((snap.name.as_str(), snap.points), ("s", 300));
    assert!(
        snap.files >= 4 && snap.bytes > snap.copied_bytes,
        "{snap:?}"
    );
    let again = admin
        .create_snapshot(pb::CreateSnapshotRequest {
            collection: "docs".into(),
            name: "s".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    points.upsert(up(300, 400)).await.unwrap();
    let count = |n: &str| pb::CountRequest {
        filter: None,
        collection: n.into(),
    };
    assert_eq!(
        points
            .count(count("docs"))
            .await
            .unwrap()
            .into_inner()
            .count,
        400
    );
    let restore = |target: &str, replace| pb::RestoreSnapshotRequest {
        collection: "docs".into(),
        snapshot: "s".into(),
        target: target.into(),
        replace,
    };
    let side = admin
        .restore_snapshot(restore("docs2", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((side.name.as_str(), side.points), ("docs2", 300));
    let refused = admin
        .restore_snapshot(restore("", false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    admin.restore_snapshot(restore("", true)).await.unwrap();
    assert_eq!(
        points
            .count(count("docs"))
            .await
            .unwrap()
            .into_inner()
            .count,
        300
    );
    let listed = admin
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.snapshots, vec![snap]);
    let missing = admin
        .restore_snapshot(pb::RestoreSnapshotRequest {
            snapshot: "nope".into(),
            ..restore("x", false)
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    admin
        .delete_snapshot(pb::DeleteSnapshotRequest {
            collection: "docs".into(),
            snapshot: "s".into(),
        })
        .await
        .unwrap();
    assert!(
        admin
            .list_snapshots(pb::ListSnapshotsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .snapshots
            .is_empty()
    );
}
