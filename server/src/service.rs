//! The gRPC services over one [`Database`]: every handler checks the API key, runs the engine
//! on the blocking pool (a long search never stalls the async runtime), honours the client's
//! deadline, and records its metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gyre::{Collection, CollectionConfig, Database};
use gyre_proto::v1::{
    self as pb, admin_server::Admin, collections_server::Collections, points_server::Points,
    search_server::Search,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Access, Keys};
use crate::convert::{info_to, metric_from, rerank_from, scored, search_options, variant_from};
use crate::errors::{invalid, to_status};
use crate::metrics::Metrics;

/// Shared state of the services.
#[derive(Debug, Clone)]
pub struct Service {
    pub db: Arc<Database>,
    pub keys: Keys,
    pub metrics: Metrics,
    /// Largest k a search may ask for.
    pub max_k: usize,
}

/// The client's deadline from `grpc-timeout` (`<digits><H|M|S|m|u|n>`).
fn deadline(meta: &MetadataMap) -> Option<Duration> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Service {
    /// The path every RPC takes: the key check, the client's deadline (answered a little
    /// early, so the status reaches the client before its own timer cancels the call), the
    /// metrics and the log of storage failures.
    async fn guarded<T>(
        &self,
        rpc: &'static str,
        meta: &MetadataMap,
        access: Access,
        work: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let start = Instant::now();
        let result = async {
            self.keys.check(meta, access)?;
            match deadline(meta) {
                Some(d) => tokio::time::timeout(d - (d / 10).max(Duration::from_millis(2)).min(d), work)
                    .await
                    .map_err(|_| {
                        Status::deadline_exceeded(
                            "deadline exceeded: the request was abandoned (its work may finish in the background)",
                        )
                    })?,
                None => work.await,
            }
        }
        .await;
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        self.metrics.record(rpc, code, start.elapsed());
        if let Err(s) = &result
            && matches!(s.code(), tonic::Code::Internal | tonic::Code::DataLoss)
        {
            tracing::error!(rpc, status = %s.message(), "request failed");
        }
        result.map(Response::new)
    }

    /// Runs `work` on the blocking pool (a long search never stalls the async runtime) on the
    /// [`guarded`](Self::guarded) path.
    async fn run<T: Send + 'static>(
        &self,
        rpc: &'static str,
        meta: &MetadataMap,
        access: Access,
        work: impl FnOnce(Arc<Database>) -> Result<T, Status> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let db = self.db.clone();
        self.guarded(rpc, meta, access, async move {
            tokio::task::spawn_blocking(move || work(db))
                .await
                .map_err(|e| Status::internal(format!("request handler failed: {e}")))?
        })
        .await
    }
}

/// Errors about the vectors of a request name the request's field.
fn data_error(field: &'static str) -> impl Fn(gyre::Error) -> Status {
    move |e| match e.kind() {
        gyre::ErrorKind::InvalidInput => invalid(field, e),
        _ => to_status(e),
    }
}

fn check_name(field: &str, name: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(invalid(field, "the collection name is empty"));
    }
    Ok(())
}

/// The one way a handler finds the collection a request names (`field`: the request's field).
fn open_collection(db: &Database, field: &str, name: &str) -> Result<Collection, Status> {
    check_name(field, name)?;
    db.collection(name).map_err(to_status)
}

impl Service {
    fn check_k(&self, k: u32) -> Result<usize, Status> {
        let k = k as usize;
        if k == 0 {
            return Err(invalid("k", "must be at least 1"));
        }
        if k > self.max_k {
            return Err(invalid(
                "k",
                format!(
                    "{k} exceeds this server's maximum of {} (--max-k)",
                    self.max_k
                ),
            ));
        }
        Ok(k)
    }
}

#[tonic::async_trait]
impl Collections for Service {
    async fn create(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run("Collections/Create", &meta, Access::Write, move |db| {
            check_name("name", &r.name)?;
            if r.dim == 0 {
                return Err(invalid("dim", "must be set (at least 3)"));
            }
            // Unset fields take the engine's defaults (one source for both).
            let mut config = CollectionConfig::new(r.dim as usize);
            config.metric = metric_from(r.metric)?;
            config.variant = variant_from(r.variant)?;
            config.rerank = rerank_from(r.rerank, config.rerank)?;
            config.seed = r.seed;
            if r.bits != 0 {
                config.bits = u8::try_from(r.bits).map_err(|_| invalid("bits", "use 1 to 8"))?;
            }
            if r.segment_rows != 0 {
                config.segment_rows = r.segment_rows as usize;
            }
            let c = db.create_collection(&r.name, config).map_err(to_status)?;
            Ok(info_to(&c.info().map_err(to_status)?))
        })
        .await
    }

    async fn get(
        &self,
        req: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run("Collections/Get", &meta, Access::Read, move |db| {
            Ok(info_to(
                &open_collection(&db, "name", &r.name)?
                    .info()
                    .map_err(to_status)?,
            ))
        })
        .await
    }

    async fn list(
        &self,
        req: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let (meta, _, _) = req.into_parts();
        self.run("Collections/List", &meta, Access::Read, move |db| {
            Ok(pb::ListCollectionsResponse {
                names: db.list().map_err(to_status)?,
            })
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run("Collections/Delete", &meta, Access::Write, move |db| {
            db.drop_collection(&r.name).map_err(to_status)?;
            Ok(pb::DeleteCollectionResponse {})
        })
        .await
    }
}

/// The state of one `UpsertStream`: messages received but not yet written, and the write in
/// flight.
#[derive(Default)]
struct StreamWriter {
    name: String,
    dim: usize,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    /// Messages received (for error messages) and those in `ids`.
    received: u64,
    buffered: u64,
    written: u64,
    in_flight: Option<tokio::task::JoinHandle<Result<u64, Status>>>,
}

/// Most values buffered while a write is in flight (64 MiB of f32).
const STREAM_BUFFER: usize = 16 << 20;

impl StreamWriter {
    /// Validates one message and appends it to the buffer.
    fn push(&mut self, db: &Database, r: pb::UpsertRequest) -> Result<(), Status> {
        let batch = self.received;
        self.received += 1;
        let fail = |s: Status| Status::new(s.code(), format!("batch {batch}: {}", s.message()));
        if !r.collection.is_empty() && r.collection != self.name {
            if !self.name.is_empty() {
                return Err(fail(invalid(
                    "collection",
                    "one stream writes one collection",
                )));
            }
            self.name = r.collection.clone();
            self.dim = open_collection(db, "collection", &self.name)
                .map_err(fail)?
                .config()
                .dim;
        }
        check_name("collection", &self.name).map_err(fail)?;
        if r.ids.is_empty() {
            return Err(fail(invalid("ids", "the batch is empty")));
        }
        if r.vectors.len() != r.ids.len() * self.dim {
            return Err(fail(invalid(
                "vectors",
                format!(
                    "{} values for {} ids of dimension {} (expected {})",
                    r.vectors.len(),
                    r.ids.len(),
                    self.dim,
                    r.ids.len() * self.dim
                ),
            )));
        }
        self.ids.extend_from_slice(&r.ids);
        self.vectors.extend_from_slice(&r.vectors);
        self.buffered += 1;
        Ok(())
    }

    /// True when the buffer should be written now: nothing is in flight, or the buffer is full.
    fn ready(&self) -> bool {
        self.in_flight.as_ref().is_none_or(|h| h.is_finished())
            || self.vectors.len() >= STREAM_BUFFER
    }

    /// Waits for the write in flight, then starts writing the buffer.
    async fn submit(&mut self, db: &Arc<Database>) -> Result<(), Status> {
        if let Some(h) = self.in_flight.take() {
            self.written += h
                .await
                .map_err(|e| Status::internal(format!("request handler failed: {e}")))??;
        }
        if self.ids.is_empty() {
            return Ok(());
        }
        let (ids, vectors) = (
            std::mem::take(&mut self.ids),
            std::mem::take(&mut self.vectors),
        );
        let (db, name) = (db.clone(), self.name.clone());
        let (first, last) = (self.received - self.buffered, self.received - 1);
        self.buffered = 0;
        let written = self.written;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let c = open_collection(&db, "collection", &name)?;
            c.upsert(&ids, &vectors).map_err(|e| {
                let s = data_error("vectors")(e);
                Status::new(
                    s.code(),
                    format!(
                        "batches {first}..={last} (after {written} points were written): {}",
                        s.message()
                    ),
                )
            })?;
            Ok(ids.len() as u64)
        }));
        Ok(())
    }

    async fn finish(mut self, db: &Arc<Database>) -> Result<pb::UpsertResponse, Status> {
        self.submit(db).await?;
        self.submit(db).await?;
        Ok(pb::UpsertResponse {
            upserted: self.written,
            batches: self.received,
        })
    }
}

fn upsert_batch(db: &Database, r: &pb::UpsertRequest, name: &str) -> Result<u64, Status> {
    let c = open_collection(db, "collection", name)?;
    if r.ids.is_empty() {
        return Err(invalid("ids", "the batch is empty"));
    }
    let d = c.config().dim;
    if r.vectors.len() != r.ids.len() * d {
        return Err(invalid(
            "vectors",
            format!(
                "{} values for {} ids of dimension {d} (expected {})",
                r.vectors.len(),
                r.ids.len(),
                r.ids.len() * d
            ),
        ));
    }
    c.upsert(&r.ids, &r.vectors)
        .map_err(data_error("vectors"))?;
    Ok(r.ids.len() as u64)
}

#[tonic::async_trait]
impl Points for Service {
    async fn upsert(
        &self,
        req: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run("Points/Upsert", &meta, Access::Write, move |db| {
            let n = upsert_batch(&db, &r, &r.collection)?;
            Ok(pb::UpsertResponse {
                upserted: n,
                batches: 1,
            })
        })
        .await
    }

    async fn upsert_stream(
        &self,
        req: Request<Streaming<pb::UpsertRequest>>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        let (meta, _, mut stream) = req.into_parts();
        let db = self.db.clone();
        self.guarded("Points/UpsertStream", &meta, Access::Write, async move {
            // A one-deep pipeline: while the engine writes what has arrived, the next messages
            // are received and decoded; they are then written together (in order, so a
            // repeated id still keeps its last vector), which also shares their fsync.
            let mut writer = StreamWriter::default();
            while let Some(r) = stream.message().await? {
                writer.push(&db, r)?;
                if writer.ready() {
                    writer.submit(&db).await?;
                }
            }
            writer.finish(&db).await
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeletePointsRequest>,
    ) -> Result<Response<pb::DeletePointsResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run("Points/Delete", &meta, Access::Write, move |db| {
            let c = open_collection(&db, "collection", &r.collection)?;
            if r.ids.is_empty() {
                return Err(invalid("ids", "no ids to delete"));
            }
            let deleted = c.delete(&r.ids).map_err(data_error("ids"))?;
            Ok(pb::DeletePointsResponse {
                deleted: deleted as u64,
            })
        })
        .await
    }

    async fn get(
        &self,
        req: Request<pb::GetPointsRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run("Points/Get", &meta, Access::Read, move |db| {
            let c = open_collection(&db, "collection", &r.collection)?;
            let points = c
                .get(&r.ids)
                .map_err(to_status)?
                .into_iter()
                .flatten()
                .map(|p| pb::Point {
                    id: p.id,
                    vector: if r.with_vectors {
                        p.vector.unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                })
                .collect();
            Ok(pb::GetPointsResponse { points })
        })
        .await
    }

    async fn count(
        &self,
        req: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run("Points/Count", &meta, Access::Read, move |db| {
            let c = open_collection(&db, "collection", &r.collection)?;
            Ok(pb::CountResponse {
                count: c.len() as u64,
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl Search for Service {
    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        let k = self.check_k(r.k);
        self.run("Search/Search", &meta, Access::Read, move |db| {
            let k = k?;
            let c = open_collection(&db, "collection", &r.collection)?;
            let opts = search_options(c.config(), r.params.as_ref(), &r.allow_ids);
            let found = c
                .search(&r.vector, k, &opts)
                .map_err(data_error("vector"))?;
            Ok(pb::SearchResponse {
                results: scored(&c, found, r.with_vectors)?,
            })
        })
        .await
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        let k = self.check_k(r.k);
        self.run("Search/SearchBatch", &meta, Access::Read, move |db| {
            let k = k?;
            let c = open_collection(&db, "collection", &r.collection)?;
            if r.vectors.is_empty() {
                return Err(invalid("vectors", "no queries"));
            }
            let opts = search_options(c.config(), r.params.as_ref(), &r.allow_ids);
            let found = c
                .search_batch(&r.vectors, k, &opts)
                .map_err(data_error("vectors"))?;
            let results = found
                .into_iter()
                .map(|f| {
                    Ok(pb::SearchResponse {
                        results: scored(&c, f, r.with_vectors)?,
                    })
                })
                .collect::<Result<_, Status>>()?;
            Ok(pb::SearchBatchResponse { results })
        })
        .await
    }
}

#[tonic::async_trait]
impl Admin for Service {
    async fn flush(
        &self,
        req: Request<pb::FlushRequest>,
    ) -> Result<Response<pb::FlushResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run("Admin/Flush", &meta, Access::Write, move |db| {
            let c = open_collection(&db, "collection", &r.collection)?;
            c.flush().map_err(to_status)?;
            Ok(pb::FlushResponse {})
        })
        .await
    }

    async fn compact(
        &self,
        req: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run("Admin/Compact", &meta, Access::Write, move |db| {
            let c = open_collection(&db, "collection", &r.collection)?;
            Ok(pb::CompactResponse {
                compacted: c.compact().map_err(to_status)?,
            })
        })
        .await
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let (meta, _, _) = req.into_parts();
        self.run("Admin/Stats", &meta, Access::Read, move |db| {
            let infos = db
                .list()
                .map_err(to_status)?
                .iter()
                .map(|n| db.info(n).map_err(to_status))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(pb::StatsResponse {
                disk_bytes: infos.iter().map(|i| i.disk_bytes).sum(),
                resident_bytes: infos.iter().filter_map(|i| i.resident_bytes).sum(),
                collections: infos.iter().map(info_to).collect(),
            })
        })
        .await
    }
}
