//! Prometheus metrics: request counts and latency histograms per RPC, and per-collection
//! gauges (points, deleted rows, memtable rows, segments, bytes) read from the engine at scrape
//! time. Encoded by `prometheus-client`, served by axum (already in tonic's stack) on `/metrics`
//! only; any other path is 404.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::auth::{Access, Keys};

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectionLabels {
    pub collection: String,
}

type Latency = Family<MethodLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Per-collection gauges, refreshed at every scrape.
#[derive(Debug, Default, Clone)]
struct Collections {
    points: Family<CollectionLabels, Gauge>,
    deleted: Family<CollectionLabels, Gauge>,
    memtable: Family<CollectionLabels, Gauge>,
    segments: Family<CollectionLabels, Gauge>,
    disk: Family<CollectionLabels, Gauge>,
    dead: Family<CollectionLabels, Gauge>,
}

/// Replication through an object store (`serve --store`), set by the replicator's rounds.
#[derive(Debug, Default, Clone)]
pub struct Replica {
    /// The version each collection was last published (writer) or is served at (query node).
    pub version: Family<CollectionLabels, Gauge>,
    /// Bytes in a query node's segment cache.
    pub cache_bytes: Gauge,
    /// Rounds (publish, sync or GC) that failed.
    pub failures: Counter,
}

/// Request statistics shared by every handler, and the registry they are exposed from.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    collections: Collections,
    /// Replication gauges (zero without `--store`).
    pub replica: Replica,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "gyre_requests",
            "gRPC requests by method and status code",
            requests.clone(),
        );
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        registry.register(
            "gyre_request_duration_seconds",
            "gRPC request latency by method",
            latency.clone(),
        );
        let collections = Collections::default();
        for (name, help, family) in [
            (
                "gyre_collection_points",
                "Live points per collection",
                &collections.points,
            ),
            (
                "gyre_collection_deleted_rows",
                "Deleted rows not yet compacted away",
                &collections.deleted,
            ),
            (
                "gyre_collection_memtable_rows",
                "Rows in memory, not yet sealed",
                &collections.memtable,
            ),
            (
                "gyre_collection_segments",
                "Sealed segments per collection",
                &collections.segments,
            ),
            (
                "gyre_collection_disk_bytes",
                "Bytes of the collection's files",
                &collections.disk,
            ),
            (
                "gyre_collection_dead_bytes",
                "Bytes of segment files held by deleted or replaced rows",
                &collections.dead,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        let replica = Replica::default();
        registry.register(
            "gyre_store_version",
            "Object-store version per collection: last published (writer) or served (query node)",
            replica.version.clone(),
        );
        registry.register(
            "gyre_store_cache_bytes",
            "Bytes in a query node's segment cache",
            replica.cache_bytes.clone(),
        );
        registry.register(
            "gyre_store_failures",
            "Replication rounds (publish, sync, GC) that failed",
            replica.failures.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            requests,
            latency,
            collections,
            replica,
        }
    }
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
        self.requests
            .get_or_create(&RequestLabels {
                method: rpc,
                code: code_name(code),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels { method: rpc })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition of the RPC metrics and the database's gauges as of now.
    pub fn render(&self, db: &gyre::Database) -> String {
        let c = &self.collections;
        for family in [
            &c.points,
            &c.deleted,
            &c.memtable,
            &c.segments,
            &c.disk,
            &c.dead,
        ] {
            // Dropped collections disappear.
            family.clear();
        }
        for name in db.list().unwrap_or_default() {
            let Ok(info) = db.info(&name) else { continue };
            let labels = CollectionLabels { collection: name };
            let set = |f: &Family<CollectionLabels, Gauge>, v: u64| {
                f.get_or_create(&labels)
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            set(&c.points, info.live);
            set(&c.deleted, info.deleted);
            set(&c.memtable, info.memtable_rows);
            set(&c.segments, info.segments.len() as u64);
            set(&c.disk, info.disk_bytes);
            set(&c.dead, info.dead_bytes());
        }
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` (404 for every other path). When the
/// server has API keys, a scrape needs one (`authorization: Bearer <key>`, as Prometheus'
/// `authorization` setting sends it): the full-access, read-only or metrics key. Collection
/// names and counts are not for anyone who can reach the port.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    db: Arc<gyre::Database>,
    keys: Keys,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: http::HeaderMap| {
            let (metrics, db, keys) = (metrics.clone(), db.clone(), keys.clone());
            async move {
                let presented = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
                if let Err(s) = keys.check_presented(presented, Access::Metrics) {
                    let code = if s.code() == tonic::Code::PermissionDenied {
                        http::StatusCode::FORBIDDEN
                    } else {
                        http::StatusCode::UNAUTHORIZED
                    };
                    return (
                        code,
                        [
                            (http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                            (http::header::WWW_AUTHENTICATE, "Bearer"),
                        ],
                        format!("{}\n", s.message()),
                    );
                }
                let body = tokio::task::spawn_blocking(move || metrics.render(&db))
                    .await
                    .unwrap_or_default();
                (
                    http::StatusCode::OK,
                    [
                        (
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                        (http::header::CACHE_CONTROL, "no-store"),
                    ],
                    body,
                )
            }
        }),
    );
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "metrics endpoint failed");
    }
}
