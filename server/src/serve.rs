//! `gyre serve`: configuration, the tonic server (health, reflection, TLS, size limits, API
//! keys), the metrics endpoint and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gyre::Database;
use gyre_proto::v1::{
    admin_server::AdminServer, collections_server::CollectionsServer, points_server::PointsServer,
    search_server::SearchServer,
};
use serde::Deserialize;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::{Access, Keys};
use crate::metrics::Metrics;
use crate::service::{Limits, Service};

/// Flags of `gyre serve`; each may also come from the TOML file (`--config`) or the
/// environment (`GYRE_DATA_DIR`, `GYRE_LISTEN`, ...). Precedence: flag, environment, file,
/// default.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys as the flags, with `_` for `-`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory, created on first start [default: ./gyre-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC address [default: 127.0.0.1:50051]. Port 0 picks a free one (printed at start).
    #[arg(long)]
    listen: Option<String>,
    /// Prometheus metrics address, or `off` [default: 127.0.0.1:9091].
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Largest request accepted, in bytes [default: 67108864 = 64 MiB].
    #[arg(long)]
    max_request_bytes: Option<usize>,
    /// Largest response sent, in bytes; requests whose answer could exceed it are refused
    /// before any work [default: 67108864 = 64 MiB].
    #[arg(long)]
    max_response_bytes: Option<usize>,
    /// Largest k a search may ask for [default: 10000].
    #[arg(long)]
    max_k: Option<usize>,
    /// Most results one request may ask for: queries × k for searches, distinct ids for Get
    /// [default: 1000000].
    #[arg(long)]
    max_results: Option<usize>,
    /// Searches run at once; more wait in a queue [default: 4 × the number of CPUs].
    #[arg(long)]
    max_concurrent_searches: Option<usize>,
    /// Searches that may wait; beyond it a search is refused with RESOURCE_EXHAUSTED
    /// [default: 256].
    #[arg(long)]
    max_queued_searches: Option<usize>,
    /// API key with full access (then every RPC but health needs a key). At least 16
    /// characters; prefer --api-key-file or GYRE_API_KEY, which the process list does not show.
    #[arg(long)]
    api_key: Option<String>,
    /// File holding the full-access key (one line).
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// API key that may search and read but not write.
    #[arg(long)]
    read_only_api_key: Option<String>,
    /// File holding the read-only key.
    #[arg(long)]
    read_only_api_key_file: Option<PathBuf>,
    /// API key for the metrics endpoint only (the other keys work there too).
    #[arg(long)]
    metrics_api_key: Option<String>,
    /// File holding the metrics key.
    #[arg(long)]
    metrics_api_key_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Object store to replicate through, `s3://bucket/prefix` (endpoint, region and
    /// credentials from --store-endpoint, --store-region and the `AWS_*` variables).
    #[arg(long)]
    store: Option<String>,
    /// With --store: `writer` (serves writes, publishes each collection's sealed state) or
    /// `query` (read-only, follows the published versions) [default: writer].
    #[arg(long)]
    role: Option<String>,
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 [default: AWS_ENDPOINT_URL, else AWS].
    #[arg(long)]
    store_endpoint: Option<String>,
    /// Region [default: AWS_REGION, else us-east-1].
    #[arg(long)]
    store_region: Option<String>,
    /// How often a writer publishes and a query node polls, in milliseconds [default: 1000].
    #[arg(long)]
    sync_interval_ms: Option<u64>,
    /// Writer: seal every collection's unsealed writes this often, in milliseconds, so query
    /// nodes see them within about this plus --sync-interval-ms [default: off: writes become
    /// visible when a memtable fills or on Flush].
    #[arg(long)]
    flush_interval_ms: Option<u64>,
    /// Writer: store objects no kept version names are deleted once this old, in
    /// milliseconds, so that a query node reading an older version can still fetch it
    /// [default: 600000 = 10 min].
    #[arg(long)]
    gc_grace_ms: Option<u64>,
    /// Query node: the segment cache's folder [default: <data-dir>/store-cache].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Query node: the segment cache's bound in bytes (files being served stay past it)
    /// [default: 10737418240 = 10 GiB].
    #[arg(long)]
    cache_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    metrics_listen: Option<String>,
    max_request_bytes: Option<usize>,
    max_response_bytes: Option<usize>,
    max_k: Option<usize>,
    max_results: Option<usize>,
    max_concurrent_searches: Option<usize>,
    max_queued_searches: Option<usize>,
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    read_only_api_key: Option<String>,
    read_only_api_key_file: Option<PathBuf>,
    metrics_api_key: Option<String>,
    metrics_api_key_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    store: Option<String>,
    role: Option<String>,
    store_endpoint: Option<String>,
    store_region: Option<String>,
    sync_interval_ms: Option<u64>,
    flush_interval_ms: Option<u64>,
    gc_grace_ms: Option<u64>,
    cache_dir: Option<PathBuf>,
    cache_bytes: Option<u64>,
}

/// Replication through an object store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub url: String,
    pub query_node: bool,
    pub options: gyre_objstore::StoreOptions,
    pub sync_interval: Duration,
    pub flush_interval: Option<Duration>,
    pub gc_grace: Duration,
    pub cache_dir: PathBuf,
    pub cache_bytes: u64,
}

/// The resolved settings.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: String,
    pub metrics_listen: Option<String>,
    pub max_request_bytes: usize,
    pub limits: Limits,
    pub keys: Keys,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub store: Option<StoreSettings>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_env<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
    env(name)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("{name}={v:?} is not a valid value"))
        })
        .transpose()
}

/// One key from the first place that gives it: the flag, the flag's file, the environment
/// variable, the variable's `_FILE` twin, the TOML file's value, its `_file` twin. Unlike the
/// other settings, a key set but empty is an error (never "no key"). Returns the key and
/// where it came from.
fn resolve_key(
    flag: (&str, Option<String>, Option<PathBuf>),
    env_name: &str,
    file: (Option<String>, Option<PathBuf>),
) -> Result<Option<(String, String)>, String> {
    let read = |p: &PathBuf, what: String| -> Result<Option<(String, String)>, String> {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
        Ok(Some((
            text.trim_end_matches(['\n', '\r']).to_string(),
            format!("{what} {}", p.display()),
        )))
    };
    let (name, value, path) = flag;
    if let Some(v) = value {
        return Ok(Some((v, format!("--{name}"))));
    }
    if let Some(p) = &path {
        return read(p, format!("--{name}-file"));
    }
    if let Ok(v) = std::env::var(env_name) {
        return Ok(Some((v, env_name.to_string())));
    }
    if let Ok(p) = std::env::var(format!("{env_name}_FILE")) {
        return read(&PathBuf::from(p), format!("{env_name}_FILE"));
    }
    let key = name.replace('-', "_");
    if let Some(v) = file.0 {
        return Ok(Some((v, format!("{key} in the config file"))));
    }
    if let Some(p) = &file.1 {
        return read(p, format!("{key}_file in the config file:"));
    }
    Ok(None)
}

impl ServeArgs {
    /// Flag, then environment, then file, then default.
    pub fn resolve(self) -> Result<Settings, String> {
        let file: FileConfig = match &self.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .or(env("GYRE_DATA_DIR").map(PathBuf::from))
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("gyre-data"));
        let listen = self
            .listen
            .or(env("GYRE_LISTEN"))
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:50051".into());
        let metrics_listen = self
            .metrics_listen
            .or(env("GYRE_METRICS_LISTEN"))
            .or(file.metrics_listen)
            .unwrap_or_else(|| "127.0.0.1:9091".into());
        let max_request_bytes = self
            .max_request_bytes
            .or(parse_env("GYRE_MAX_REQUEST_BYTES")?)
            .or(file.max_request_bytes)
            .unwrap_or(64 << 20);
        let max_response_bytes = self
            .max_response_bytes
            .or(parse_env("GYRE_MAX_RESPONSE_BYTES")?)
            .or(file.max_response_bytes)
            .unwrap_or(64 << 20);
        let max_k = self
            .max_k
            .or(parse_env("GYRE_MAX_K")?)
            .or(file.max_k)
            .unwrap_or(10_000);
        let max_results = self
            .max_results
            .or(parse_env("GYRE_MAX_RESULTS")?)
            .or(file.max_results)
            .unwrap_or(1_000_000);
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_concurrent_searches = self
            .max_concurrent_searches
            .or(parse_env("GYRE_MAX_CONCURRENT_SEARCHES")?)
            .or(file.max_concurrent_searches)
            // More slots than cores: while the pool scans, other requests are decoded,
            // answered and sent; the pool's threads (one per core) still bound the CPU searches
            // use. Measured on 2 cores, 8 clients (gyre-bench grpc-load): 2 slots 3,180 QPS,
            // p99 3.7 ms; 8 slots 3,610 QPS, p99 4.3 ms.
            .unwrap_or(4 * cpus);
        let max_queued_searches = self
            .max_queued_searches
            .or(parse_env("GYRE_MAX_QUEUED_SEARCHES")?)
            .or(file.max_queued_searches)
            .unwrap_or(256);
        let keys = Keys::new(
            resolve_key(
                ("api-key", self.api_key, self.api_key_file),
                "GYRE_API_KEY",
                (file.api_key, file.api_key_file),
            )?,
            resolve_key(
                (
                    "read-only-api-key",
                    self.read_only_api_key,
                    self.read_only_api_key_file,
                ),
                "GYRE_READ_ONLY_API_KEY",
                (file.read_only_api_key, file.read_only_api_key_file),
            )?,
            resolve_key(
                (
                    "metrics-api-key",
                    self.metrics_api_key,
                    self.metrics_api_key_file,
                ),
                "GYRE_METRICS_API_KEY",
                (file.metrics_api_key, file.metrics_api_key_file),
            )?,
        )?;
        let cert = self
            .tls_cert
            .or(env("GYRE_TLS_CERT").map(PathBuf::from))
            .or(file.tls_cert);
        let key = self
            .tls_key
            .or(env("GYRE_TLS_KEY").map(PathBuf::from))
            .or(file.tls_key);
        let tls = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("TLS needs both --tls-cert and --tls-key".into()),
        };
        if max_k == 0 || max_results == 0 || max_concurrent_searches == 0 {
            return Err(
                "--max-k, --max-results and --max-concurrent-searches must be at least 1".into(),
            );
        }
        if max_request_bytes < 1024 || max_response_bytes < 1024 {
            return Err(
                "--max-request-bytes and --max-response-bytes must be at least 1024".into(),
            );
        }
        let store = match self.store.or(env("GYRE_STORE")).or(file.store) {
            None => None,
            Some(url) => {
                gyre_objstore::parse_url(&url).map_err(|e| e.to_string())?;
                let role = self
                    .role
                    .or(env("GYRE_ROLE"))
                    .or(file.role)
                    .unwrap_or_else(|| "writer".into());
                let query_node = match role.as_str() {
                    "writer" => false,
                    "query" => true,
                    r => return Err(format!("--role {r:?}: expected writer or query")),
                };
                let ms = |v: Option<u64>| v.map(Duration::from_millis);
                Some(StoreSettings {
                    url,
                    query_node,
                    options: gyre_objstore::StoreOptions {
                        endpoint: self
                            .store_endpoint
                            .or(env("GYRE_STORE_ENDPOINT"))
                            .or(file.store_endpoint),
                        region: self
                            .store_region
                            .or(env("GYRE_STORE_REGION"))
                            .or(file.store_region),
                        allow_http: false,
                        credentials: None,
                    },
                    sync_interval: ms(self
                        .sync_interval_ms
                        .or(parse_env("GYRE_SYNC_INTERVAL_MS")?)
                        .or(file.sync_interval_ms))
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_millis(10)),
                    flush_interval: ms(self
                        .flush_interval_ms
                        .or(parse_env("GYRE_FLUSH_INTERVAL_MS")?)
                        .or(file.flush_interval_ms)),
                    gc_grace: ms(self
                        .gc_grace_ms
                        .or(parse_env("GYRE_GC_GRACE_MS")?)
                        .or(file.gc_grace_ms))
                    .unwrap_or(Duration::from_secs(600)),
                    cache_dir: self
                        .cache_dir
                        .or(env("GYRE_CACHE_DIR").map(PathBuf::from))
                        .or(file.cache_dir)
                        .unwrap_or_else(|| data_dir.join("store-cache")),
                    cache_bytes: self
                        .cache_bytes
                        .or(parse_env("GYRE_CACHE_BYTES")?)
                        .or(file.cache_bytes)
                        .unwrap_or(10 << 30),
                })
            }
        };
        Ok(Settings {
            store,
            data_dir,
            listen,
            metrics_listen: (metrics_listen != "off").then_some(metrics_listen),
            max_request_bytes,
            limits: Limits {
                max_k,
                max_results,
                max_response_bytes,
                max_concurrent_searches,
                max_queued_searches,
            },
            keys,
            tls,
        })
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = ctrl_c => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs the server until SIGINT or SIGTERM; then stops accepting, lets in-flight requests
/// finish, flushes every collection and returns.
pub async fn run(settings: Settings) -> Result<(), String> {
    let data_dir = settings.data_dir.clone();
    let db = tokio::task::spawn_blocking(move || Database::open(&data_dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    for (name, e) in db.unavailable() {
        // The other collections serve; calls naming this one get its error (DATA_LOSS or
        // INTERNAL) until it is repaired or dropped.
        tracing::error!(collection = %name, error = %e, "collection unavailable");
    }
    let db = Arc::new(db);
    let metrics = Metrics::default();
    let mut service = Service::new(
        db.clone(),
        settings.keys.clone(),
        metrics.clone(),
        settings.limits,
    );
    let (repl_stop_tx, repl_stop) = std::sync::mpsc::channel::<()>();
    let replicator = match settings.store.clone() {
        None => None,
        Some(st) => {
            if st.query_node {
                service = service.query_node(&st.url);
            }
            let db = db.clone();
            let dir = settings.data_dir.clone();
            let gauges = metrics.replica.clone();
            let handle =
                tokio::task::spawn_blocking(move || crate::replicate::start(db, &dir, &st, gauges))
                    .await
                    .map_err(|e| e.to_string())??;
            Some(std::thread::spawn(move || handle.run(&repl_stop)))
        }
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CollectionsServer<Service>>()
        .await;
    health_reporter.set_serving::<PointsServer<Service>>().await;
    health_reporter.set_serving::<SearchServer<Service>>().await;
    health_reporter.set_serving::<AdminServer<Service>>().await;
    // Reflection in both versions: v1, and v1alpha, which grpcurl 1.8, grpcui, Postman and
    // most clients still ask for.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(gyre_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let keys = settings.keys.clone();
    let guard = move |req: tonic::Request<()>| {
        keys.check(req.metadata(), Access::Read)?;
        Ok(req)
    };
    let reflection_v1 = tonic::service::interceptor::InterceptedService::new(
        reflection().build_v1().map_err(|e| e.to_string())?,
        guard.clone(),
    );
    let reflection_v1alpha = tonic::service::interceptor::InterceptedService::new(
        reflection().build_v1alpha().map_err(|e| e.to_string())?,
        guard,
    );

    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(m) = &settings.metrics_listen {
        let ml = tokio::net::TcpListener::bind(m)
            .await
            .map_err(|e| format!("cannot listen on {m} for metrics: {e}"))?;
        let maddr = ml.local_addr().map_err(|e| e.to_string())?;
        println!("gyre: metrics on http://{maddr}/metrics");
        tokio::spawn(crate::metrics::serve(
            ml,
            metrics.clone(),
            db.clone(),
            settings.keys.clone(),
            stop_rx.clone(),
        ));
    }
    let limit = settings.max_request_bytes;
    let out_limit = settings.limits.max_response_bytes;
    // Batches of embeddings are megabytes: HTTP/2's default 64 KiB windows would cost a round
    // trip every 64 KiB. Keepalive pings find clients that vanished (or stopped reading) and
    // free what their streams hold.
    let mut builder = Server::builder()
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .http2_adaptive_window(Some(true))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(256));
    if let Some((cert, key)) = &settings.tls {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| format!("TLS: {e}"))?;
    }
    let router = builder
        .layer(crate::edge::EdgeLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            CollectionsServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(out_limit),
        )
        .add_service(
            PointsServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(out_limit),
        )
        .add_service(
            SearchServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(out_limit),
        )
        .add_service(
            AdminServer::new(service)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(out_limit),
        );
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!(
        "gyre: listening on {scheme}://{addr} (data directory {}, {} collections)",
        settings.data_dir.display(),
        db.list().map(|l| l.len()).unwrap_or(0)
    );
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), "serving");
    // Small requests must not wait for Nagle's algorithm (a 50-row upsert took 48 ms without
    // TCP_NODELAY, 3 ms with it); TCP keepalive reaps connections to hosts that are gone.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    router
        .serve_with_incoming_shutdown(incoming, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    let _ = stop_tx.send(true);
    let _ = repl_stop_tx.send(());
    if let Some(r) = replicator {
        let _ = tokio::task::spawn_blocking(move || r.join()).await;
    }
    tracing::info!("shutting down: flushing collections");
    let db2 = db.clone();
    tokio::task::spawn_blocking(move || {
        for name in db2.list().unwrap_or_default() {
            if let Ok(c) = db2.collection(&name)
                && let Err(e) = c.flush()
            {
                tracing::error!(collection = %name, error = %e, "flush at shutdown failed");
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    println!("gyre: stopped");
    Ok(())
}
