//! Prometheus text metrics: request counts and latency histograms per RPC, and per-collection
//! gauges (points, segments, bytes) read from the engine at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Debug, Default, Clone)]
struct Rpc {
    /// Requests by status code name.
    codes: BTreeMap<&'static str, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Request statistics shared by every handler.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    rpcs: Arc<Mutex<BTreeMap<&'static str, Rpc>>>,
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Metrics {
    /// Records one finished RPC.
    pub fn record(&self, rpc: &'static str, code: tonic::Code, elapsed: Duration) {
        let Ok(mut map) = self.rpcs.lock() else {
            return;
        };
        let r = map.entry(rpc).or_default();
        *r.codes.entry(code_name(code)).or_default() += 1;
        let s = elapsed.as_secs_f64();
        for (b, &bound) in r.buckets.iter_mut().zip(&BUCKETS) {
            if s <= bound {
                *b += 1;
            }
        }
        r.count += 1;
        r.sum += s;
    }

    /// The Prometheus text exposition of the RPC metrics and the database's gauges.
    pub fn render(&self, db: &gyre::Database) -> String {
        let mut out = String::new();
        let map = self.rpcs.lock().map(|m| m.clone()).unwrap_or_default();
        out.push_str("# HELP gyre_requests_total gRPC requests by method and status code.\n");
        out.push_str("# TYPE gyre_requests_total counter\n");
        for (rpc, r) in &map {
            for (code, n) in &r.codes {
                let _ = writeln!(
                    out,
                    "gyre_requests_total{{method=\"{rpc}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP gyre_request_duration_seconds gRPC request latency by method.\n");
        out.push_str("# TYPE gyre_request_duration_seconds histogram\n");
        for (rpc, r) in &map {
            for (bound, n) in BUCKETS.iter().zip(&r.buckets) {
                let _ = writeln!(
                    out,
                    "gyre_request_duration_seconds_bucket{{method=\"{rpc}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "gyre_request_duration_seconds_bucket{{method=\"{rpc}\",le=\"+Inf\"}} {}",
                r.count
            );
            let _ = writeln!(
                out,
                "gyre_request_duration_seconds_sum{{method=\"{rpc}\"}} {}",
                r.sum
            );
            let _ = writeln!(
                out,
                "gyre_request_duration_seconds_count{{method=\"{rpc}\"}} {}",
                r.count
            );
        }
        let gauges: [(&str, &str); 5] = [
            ("gyre_collection_points", "Live points per collection."),
            (
                "gyre_collection_deleted_rows",
                "Deleted rows not yet compacted away.",
            ),
            (
                "gyre_collection_memtable_rows",
                "Rows in memory, not yet sealed.",
            ),
            (
                "gyre_collection_segments",
                "Sealed segments per collection.",
            ),
            (
                "gyre_collection_disk_bytes",
                "Bytes of the collection's files.",
            ),
        ];
        let infos: Vec<gyre::CollectionInfo> = db
            .list()
            .unwrap_or_default()
            .iter()
            .filter_map(|n| db.info(n).ok())
            .collect();
        for (i, (name, help)) in gauges.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for info in &infos {
                let v = match i {
                    0 => info.live,
                    1 => info.deleted,
                    2 => info.memtable_rows,
                    3 => info.segments.len() as u64,
                    _ => info.disk_bytes,
                };
                let _ = writeln!(out, "{name}{{collection=\"{}\"}} {v}", info.name);
            }
        }
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) as Prometheus text on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    db: Arc<gyre::Database>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let (metrics, db) = (metrics.clone(), db.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
                    let body = tokio::task::spawn_blocking(move || metrics.render(&db))
                        .await
                        .unwrap_or_default();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}
