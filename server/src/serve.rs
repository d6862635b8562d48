//! `gyre serve`: configuration, the tonic server (health, reflection, TLS, size limits, API
//! keys), the metrics endpoint and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use gyre::Database;
use gyre_proto::v1::{
    admin_server::AdminServer, collections_server::CollectionsServer, points_server::PointsServer,
    search_server::SearchServer,
};
use serde::Deserialize;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::{Access, Keys};
use crate::metrics::Metrics;
use crate::service::Service;

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
    /// Largest k a search may ask for [default: 10000].
    #[arg(long)]
    max_k: Option<usize>,
    /// API key with full access (then every RPC but health needs a key).
    #[arg(long)]
    api_key: Option<String>,
    /// API key that may search and read but not write.
    #[arg(long)]
    read_only_api_key: Option<String>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    metrics_listen: Option<String>,
    max_request_bytes: Option<usize>,
    max_k: Option<usize>,
    api_key: Option<String>,
    read_only_api_key: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// The resolved settings.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: String,
    pub metrics_listen: Option<String>,
    pub max_request_bytes: usize,
    pub max_k: usize,
    pub keys: Keys,
    pub tls: Option<(PathBuf, PathBuf)>,
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
        let max_k = self
            .max_k
            .or(parse_env("GYRE_MAX_K")?)
            .or(file.max_k)
            .unwrap_or(10_000);
        let keys = Keys {
            write: self.api_key.or(env("GYRE_API_KEY")).or(file.api_key),
            read_only: self
                .read_only_api_key
                .or(env("GYRE_READ_ONLY_API_KEY"))
                .or(file.read_only_api_key),
        };
        if keys.read_only.is_some() && keys.write.is_none() {
            return Err("--read-only-api-key needs --api-key too (or nobody could write)".into());
        }
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
        if max_k == 0 || max_request_bytes < 1024 {
            return Err("--max-k must be at least 1 and --max-request-bytes at least 1024".into());
        }
        Ok(Settings {
            data_dir,
            listen,
            metrics_listen: (metrics_listen != "off").then_some(metrics_listen),
            max_request_bytes,
            max_k,
            keys,
            tls,
        })
    }
}

/// tonic refuses a request above the size limit before any handler runs, with OUT_OF_RANGE in
/// the response headers; the API promises RESOURCE_EXHAUSTED and advice on what to do instead.
fn advise_on_size<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let exhausted = resp
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"8" || v.as_bytes() == b"11");
    if exhausted
        && let Some(msg) = resp
            .headers()
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
        && (msg.contains("too large") || msg.contains("too%20large"))
    {
        let advice = format!(
            "{msg} (the server's --max-request-bytes): send bulk loads through Points.UpsertStream or in smaller batches"
        );
        if let Ok(v) = http::HeaderValue::from_str(&advice) {
            resp.headers_mut().insert("grpc-message", v);
            resp.headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static("8"));
        }
    }
    resp
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
    let service = Service {
        db: db.clone(),
        keys: settings.keys.clone(),
        metrics: metrics.clone(),
        max_k: settings.max_k,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CollectionsServer<Service>>()
        .await;
    health_reporter.set_serving::<PointsServer<Service>>().await;
    health_reporter.set_serving::<SearchServer<Service>>().await;
    health_reporter.set_serving::<AdminServer<Service>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(gyre_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| e.to_string())?;
    let keys = settings.keys.clone();
    let reflection = tonic::service::interceptor::InterceptedService::new(
        reflection,
        move |req: tonic::Request<()>| {
            keys.check(req.metadata(), Access::Read)?;
            Ok(req)
        },
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
            stop_rx.clone(),
        ));
    }
    let limit = settings.max_request_bytes;
    // Batches of embeddings are megabytes: HTTP/2's default 64 KiB windows would cost a round
    // trip every 64 KiB.
    let mut builder = Server::builder()
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .http2_adaptive_window(Some(true));
    if let Some((cert, key)) = &settings.tls {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| format!("TLS: {e}"))?;
    }
    let router = builder
        .layer(tower::util::MapResponseLayer::new(advise_on_size))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            CollectionsServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            PointsServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            SearchServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            AdminServer::new(service)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
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
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    router
        .serve_with_incoming_shutdown(incoming, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    let _ = stop_tx.send(true);
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
