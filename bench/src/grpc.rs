//! Measuring Gyre through its gRPC service: the recall runner's remote index, streaming ingest,
//! and `grpc-load` (concurrent single searches).

use std::time::{Duration, Instant};

use gyre::{Neighbor, RerankStorage, SearchParams};
use gyre_proto::v1::{
    self as pb, collections_client::CollectionsClient, points_client::PointsClient,
    search_client::SearchClient,
};
use tonic::transport::Channel;

/// A connection to `gyre serve`, with a runtime to drive it from synchronous code.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    /// Collections this client loaded without stored vectors: the API refuses `rescore = true`
    /// on those (the engine's default float-table rescoring is what an unset field gives).
    codes_only: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn status(e: tonic::Status) -> String {
    format!("{:?}: {}", e.code(), e.message())
}

/// `grpc://host:port` (or `http://`) as a tonic endpoint URI.
pub fn endpoint(target: &str) -> Result<String, String> {
    let rest = target
        .strip_prefix("grpc://")
        .or(target.strip_prefix("http://"))
        .ok_or_else(|| format!("--target {target:?}: expected grpc://HOST:PORT"))?;
    Ok(format!("http://{rest}"))
}

impl Remote {
    pub fn connect(target: &str) -> Result<Remote, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let uri = endpoint(target)?;
        let channel = rt
            .block_on(
                Channel::from_shared(uri.clone())
                    .map_err(|e| e.to_string())?
                    .initial_stream_window_size(Some(8 << 20))
                    .initial_connection_window_size(Some(32 << 20))
                    .http2_adaptive_window(true)
                    .connect(),
            )
            .map_err(|e| format!("cannot connect to {uri}: {e}"))?;
        Ok(Remote {
            rt,
            channel,
            codes_only: Default::default(),
        })
    }

    /// Replaces collection `name` and loads `data` through `UpsertStream` in batches of
    /// `batch`; returns the seconds the stream took (every batch is durable when counted).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        &self,
        name: &str,
        dim: usize,
        metric: gyre::Metric,
        bits: u8,
        rerank: RerankStorage,
        data: &[f32],
        batch: usize,
    ) -> Result<f64, String> {
        if let Ok(mut set) = self.codes_only.lock() {
            if rerank == RerankStorage::None {
                set.insert(name.to_string());
            } else {
                set.remove(name);
            }
        }
        let mut cols = CollectionsClient::new(self.channel.clone());
        let mut points =
            PointsClient::new(self.channel.clone()).max_encoding_message_size(usize::MAX);
        self.rt.block_on(async {
            let _ = cols
                .delete(pb::DeleteCollectionRequest { name: name.into() })
                .await;
            cols.create(pb::CreateCollectionRequest {
                name: name.into(),
                dim: dim as u32,
                metric: match metric {
                    gyre::Metric::Cosine => pb::Metric::Cosine,
                    gyre::Metric::Dot => pb::Metric::Dot,
                    gyre::Metric::L2 => pb::Metric::L2,
                }
                .into(),
                bits: u32::from(bits),
                rerank: match rerank {
                    RerankStorage::None => pb::RerankStorage::None,
                    RerankStorage::F16 => pb::RerankStorage::F16,
                    RerankStorage::F32 => pb::RerankStorage::F32,
                }
                .into(),
                segment_rows: (data.len() / dim) as u64 + 1,
                ..Default::default()
            })
            .await
            .map_err(status)?;
            let requests: Vec<pb::UpsertRequest> = data
                .chunks(batch * dim)
                .enumerate()
                .map(|(i, rows)| pb::UpsertRequest {
                    payloads: Vec::new(),
                    collection: name.into(),
                    ids: ((i * batch) as u64..(i * batch + rows.len() / dim) as u64).collect(),
                    vectors: rows.to_vec(),
                    wait: true,
                })
                .collect();
            let t = Instant::now();
            points
                .upsert_stream(tokio_stream::iter(requests))
                .await
                .map_err(status)?;
            let secs = t.elapsed().as_secs_f64();
            let mut admin = pb::admin_client::AdminClient::new(self.channel.clone());
            admin
                .flush(pb::FlushRequest {
                    collection: name.into(),
                })
                .await
                .map_err(status)?;
            Ok(secs)
        })
    }

    fn params(&self, name: &str, p: &SearchParams) -> pb::SearchParams {
        let codes_only = self.codes_only.lock().is_ok_and(|s| s.contains(name));
        pb::SearchParams {
            oversampling: p.oversample as u32,
            rescore: if codes_only && p.rescore {
                None
            } else {
                Some(p.rescore)
            },
            exact: false,
            target_recall: p.target_recall.unwrap_or(0.0),
            ef: p.ef as u32,
        }
    }

    fn neighbors(r: pb::SearchResponse) -> Vec<Neighbor> {
        r.results
            .into_iter()
            .map(|p| Neighbor {
                id: p.id,
                score: p.score,
            })
            .collect()
    }

    pub fn search_batch(
        &self,
        name: &str,
        queries: &[f32],
        k: usize,
        p: &SearchParams,
    ) -> Result<Vec<Vec<Neighbor>>, String> {
        let mut search = SearchClient::new(self.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let r = self
            .rt
            .block_on(search.search_batch(pb::SearchBatchRequest {
                collection: name.into(),
                vectors: queries.to_vec(),
                k: k as u32,
                params: Some(self.params(name, p)),
                ..Default::default()
            }))
            .map_err(status)?;
        Ok(r.into_inner()
            .results
            .into_iter()
            .map(Remote::neighbors)
            .collect())
    }

    pub fn search(
        &self,
        name: &str,
        query: &[f32],
        k: usize,
        p: &SearchParams,
    ) -> Result<Vec<Neighbor>, String> {
        let mut search = SearchClient::new(self.channel.clone());
        let r = self
            .rt
            .block_on(search.search(pb::SearchRequest {
                collection: name.into(),
                vector: query.to_vec(),
                k: k as u32,
                params: Some(self.params(name, p)),
                ..Default::default()
            }))
            .map_err(status)?;
        Ok(Remote::neighbors(r.into_inner()))
    }
}

#[derive(clap::Args)]
pub struct LoadArgs {
    /// The server, grpc://HOST:PORT.
    #[arg(long, default_value = "grpc://127.0.0.1:50051")]
    target: String,
    /// Collection to search (e.g. one `recall --target` loaded).
    #[arg(long)]
    collection: String,
    /// Concurrent clients, each on its own connection, one search in flight each.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Results per search.
    #[arg(long, default_value_t = 10)]
    k: u32,
    /// Query vectors (ann-benchmarks HDF5: its test set). Default: the shared MiniLM set.
    #[arg(long)]
    dataset: Option<std::path::PathBuf>,
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
}

/// `grpc-load`: `clients` concurrent clients issue single searches for `seconds`.
pub fn load_test(a: &LoadArgs) -> Result<(), String> {
    let path = a
        .dataset
        .clone()
        .unwrap_or_else(crate::common::shared_dataset);
    let ds = gyre_datasets::annb::read_hdf5(&path).map_err(|e| e.to_string())?;
    let (queries, d) = (ds.test.as_slice().to_vec(), ds.test.dim());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let uri = endpoint(&a.target)?;
    let (lat, errors) = rt.block_on(search_clients(
        &uri,
        &a.collection,
        &queries,
        d,
        a.k,
        a.clients,
        a.seconds,
        usize::MAX,
    ))?;
    let pct = |p: f64| crate::common::percentile(&lat, p);
    let qps = lat.len() as f64 / a.seconds as f64;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"clients": a.clients, "seconds": a.seconds, "searches": lat.len(),
                "qps": qps, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "errors": errors.len()})
        );
    } else {
        println!(
            "{} clients × {} s: {} searches, {qps:.0} QPS, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            a.clients,
            a.seconds,
            lat.len(),
            pct(0.5),
            pct(0.99),
            errors.len()
        );
        if let Some(e) = errors.first() {
            println!("first error: {e}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LatencyArgs {
    /// The server, grpc://HOST:PORT.
    #[arg(long, default_value = "grpc://127.0.0.1:50051")]
    target: String,
    /// ann-benchmarks HDF5 file (train vectors are loaded, test vectors are the queries).
    /// Default: the shared MiniLM set.
    #[arg(long)]
    dataset: Option<std::path::PathBuf>,
    /// Collection to create (replaced if it exists).
    #[arg(long, default_value = "grpc-latency")]
    collection: String,
    /// Rows per UpsertStream message for the bulk load.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Rows per small upsert.
    #[arg(long, default_value_t = 50)]
    upsert_rows: usize,
    /// Small upserts to time (one at a time).
    #[arg(long, default_value_t = 400)]
    upserts: usize,
    /// Concurrent clients for the loaded search phase.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of the loaded search phase.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
    /// Run the same phases in this process on a data directory instead of over gRPC (the
    /// embedded figures to set beside the server's): `upsert` batches for the load, the same
    /// small upserts, single searches alone and from `clients` threads.
    #[arg(long, value_name = "DATA_DIR")]
    embedded: Option<std::path::PathBuf>,
}

/// `grpc-latency --embedded`: the phases of [`latency`] against a collection in this process.
fn embedded_latency(
    a: &LatencyArgs,
    dir: &std::path::Path,
    ds: &gyre_datasets::annb::AnnDataset,
) -> Result<Phases, String> {
    let err = |e: gyre::Error| e.to_string();
    let (train, queries, d) = (ds.train.as_slice(), ds.test.as_slice(), ds.train.dim());
    let n = train.len() / d;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let db = gyre::Database::open(dir).map_err(err)?;
    if db.collection(&a.collection).is_ok() {
        db.drop_collection(&a.collection).map_err(err)?;
    }
    let config = gyre::CollectionConfig {
        metric: ds.distance.metric(),
        segment_rows: n + 1,
        ..gyre::CollectionConfig::new(d)
    };
    let c = db.create_collection(&a.collection, config).map_err(err)?;
    let ids: Vec<u64> = (0..n as u64).collect();
    let t = Instant::now();
    for (i, rows) in ids.chunks(a.batch).zip(train.chunks(a.batch * d)) {
        c.upsert(i, rows).map_err(err)?;
    }
    let load_rate = n as f64 / t.elapsed().as_secs_f64();
    c.flush().map_err(err)?;
    let mut upsert = Vec::with_capacity(a.upserts);
    for i in 0..a.upserts {
        let (ids, rows) = small_upsert(train, d, a.upsert_rows, i);
        let t = Instant::now();
        c.upsert(&ids, &rows).map_err(err)?;
        upsert.push(t.elapsed().as_secs_f64() * 1e3);
    }
    upsert.sort_by(f64::total_cmp);
    let opts = gyre::SearchOptions::recommended(c.config());
    let search = |clients: usize, limit: usize| -> Result<Vec<f64>, String> {
        let deadline = Instant::now() + Duration::from_secs(a.seconds);
        let nq = queries.len() / d;
        let mut lat = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|t| {
                    let (c, opts) = (&c, &opts);
                    s.spawn(move || {
                        let mut lat = Vec::new();
                        let mut i = t * 997;
                        while Instant::now() < deadline && lat.len() < limit {
                            let q = &queries[(i % nq) * d..(i % nq + 1) * d];
                            let t0 = Instant::now();
                            c.search(q, 10, opts).map_err(|e| e.to_string())?;
                            lat.push(t0.elapsed().as_secs_f64() * 1e3);
                            i += 1;
                        }
                        Ok::<_, String>(lat)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| "a search thread panicked".to_string())?
                })
                .collect::<Result<Vec<Vec<f64>>, String>>()
        })?
        .concat();
        lat.sort_by(f64::total_cmp);
        Ok(lat)
    };
    let alone = search(1, 2000)?;
    let loaded = search(a.clients, usize::MAX)?;
    Ok(Phases {
        load_rate,
        upsert,
        alone,
        loaded,
        errors: Vec::new(),
    })
}

/// What [`latency`] measures, over gRPC or embedded: the load rate (vectors/s) and sorted
/// latencies in ms.
struct Phases {
    load_rate: f64,
    upsert: Vec<f64>,
    alone: Vec<f64>,
    loaded: Vec<f64>,
    errors: Vec<String>,
}

/// Small upsert `i`: `rows` training rows (cycled) under fresh ids above the loaded ones.
fn small_upsert(train: &[f32], d: usize, rows: usize, i: usize) -> (Vec<u64>, Vec<f32>) {
    let n = train.len() / d;
    let first = (i * rows) % n;
    let vectors: Vec<f32> = (0..rows)
        .flat_map(|r| train[((first + r) % n) * d..((first + r) % n + 1) * d].to_vec())
        .collect();
    let base = (n + i * rows) as u64;
    ((base..base + rows as u64).collect(), vectors)
}

/// Single searches by `clients` concurrent clients, each on its own connection, for
/// `seconds` (or `limit` searches each): latencies in ms and error messages.
#[allow(clippy::too_many_arguments)]
async fn search_clients(
    uri: &str,
    name: &str,
    queries: &[f32],
    d: usize,
    k: u32,
    clients: usize,
    seconds: u64,
    limit: usize,
) -> Result<(Vec<f64>, Vec<String>), String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let ch = Channel::from_shared(uri.to_string())
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {uri}: {e}"))?;
        let (queries, name) = (queries.to_vec(), name.to_string());
        tasks.push(tokio::spawn(async move {
            let mut search = SearchClient::new(ch);
            let (mut lat, mut errors) = (Vec::new(), Vec::new());
            let n = queries.len() / d;
            let mut i = c * 997;
            while Instant::now() < deadline && lat.len() + errors.len() < limit {
                let q = &queries[(i % n) * d..(i % n + 1) * d];
                let t = Instant::now();
                match search
                    .search(pb::SearchRequest {
                        collection: name.clone(),
                        vector: q.to_vec(),
                        k,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(e) => errors.push(status(e)),
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, e) = t.await.map_err(|e| e.to_string())?;
        lat.extend(l);
        errors.extend(e);
    }
    lat.sort_by(f64::total_cmp);
    Ok((lat, errors))
}

/// `grpc-latency`: what a client of `gyre serve` sees. Streams the dataset in through
/// `UpsertStream` (durable batches; vectors/s), times small upserts one at a time (default
/// fsync durability), then single searches alone and under `clients` concurrent clients.
pub fn latency(a: &LatencyArgs) -> Result<(), String> {
    use crate::common::percentile;
    let path = a
        .dataset
        .clone()
        .unwrap_or_else(crate::common::shared_dataset);
    let ds = gyre_datasets::annb::read_hdf5(&path).map_err(|e| e.to_string())?;
    let d = ds.train.dim();
    let n = ds.train.as_slice().len() / d;
    let ph = match &a.embedded {
        Some(dir) => embedded_latency(a, dir, &ds)?,
        None => grpc_phases(a, &ds)?,
    };
    let (target, load) = match &a.embedded {
        Some(dir) => (format!("embedded {}", dir.display()), "upsert"),
        None => (a.target.clone(), "UpsertStream"),
    };
    let p = |v: &[f64], q: f64| percentile(v, q);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "target": target, "dataset": path.display().to_string(), "points": n, "dim": d,
                "stream_vectors_per_s": ph.load_rate, "stream_batch": a.batch,
                "upsert_rows": a.upsert_rows, "upserts": ph.upsert.len(),
                "upsert_p50_ms": p(&ph.upsert, 0.5), "upsert_p99_ms": p(&ph.upsert, 0.99),
                "search_p50_ms": p(&ph.alone, 0.5), "search_p99_ms": p(&ph.alone, 0.99),
                "clients": a.clients, "loaded_searches": ph.loaded.len(),
                "loaded_qps": ph.loaded.len() as f64 / a.seconds.max(1) as f64,
                "loaded_p50_ms": p(&ph.loaded, 0.5), "loaded_p99_ms": p(&ph.loaded, 0.99),
                "errors": ph.errors.len(),
            })
        );
    } else {
        println!(
            "{target}, {}: {n} × {d}; {load} {:.0} vectors/s (durable batches of {})",
            path.display(),
            ph.load_rate,
            a.batch
        );
        println!(
            "  {}-row upserts ({}): p50 {:.2} ms, p99 {:.2} ms",
            a.upsert_rows,
            ph.upsert.len(),
            p(&ph.upsert, 0.5),
            p(&ph.upsert, 0.99)
        );
        println!(
            "  single searches, 1 client ({}): p50 {:.2} ms, p99 {:.2} ms",
            ph.alone.len(),
            p(&ph.alone, 0.5),
            p(&ph.alone, 0.99)
        );
        println!(
            "  single searches, {} clients × {} s ({} searches, {:.0} QPS): p50 {:.2} ms, p99 {:.2} ms; {} errors",
            a.clients,
            a.seconds,
            ph.loaded.len(),
            ph.loaded.len() as f64 / a.seconds.max(1) as f64,
            p(&ph.loaded, 0.5),
            p(&ph.loaded, 0.99),
            ph.errors.len()
        );
        if let Some(e) = ph.errors.first() {
            println!("  first error: {e}");
        }
    }
    Ok(())
}

/// The phases of [`latency`] over gRPC.
fn grpc_phases(a: &LatencyArgs, ds: &gyre_datasets::annb::AnnDataset) -> Result<Phases, String> {
    let (train, queries, d) = (ds.train.as_slice(), ds.test.as_slice(), ds.train.dim());
    let n = train.len() / d;
    let remote = Remote::connect(&a.target)?;
    let secs = remote.load(
        &a.collection,
        d,
        ds.distance.metric(),
        4,
        RerankStorage::F32,
        train,
        a.batch,
    )?;
    let uri = endpoint(&a.target)?;
    let mut points = PointsClient::new(remote.channel.clone());
    let mut upsert = Vec::with_capacity(a.upserts);
    let mut errors = Vec::new();
    remote.rt.block_on(async {
        for i in 0..a.upserts {
            let (ids, vectors) = small_upsert(train, d, a.upsert_rows, i);
            let t = Instant::now();
            match points
                .upsert(pb::UpsertRequest {
                    payloads: Vec::new(),
                    collection: a.collection.clone(),
                    ids,
                    vectors,
                    wait: true,
                })
                .await
            {
                Ok(_) => upsert.push(t.elapsed().as_secs_f64() * 1e3),
                Err(e) => errors.push(status(e)),
            }
        }
    });
    upsert.sort_by(f64::total_cmp);
    let (alone, e1) = remote.rt.block_on(search_clients(
        &uri,
        &a.collection,
        queries,
        d,
        10,
        1,
        a.seconds,
        2000,
    ))?;
    let (loaded, e2) = remote.rt.block_on(search_clients(
        &uri,
        &a.collection,
        queries,
        d,
        10,
        a.clients,
        a.seconds,
        usize::MAX,
    ))?;
    errors.extend(e1);
    errors.extend(e2);
    Ok(Phases {
        load_rate: n as f64 / secs,
        upsert,
        alone,
        loaded,
        errors,
    })
}
