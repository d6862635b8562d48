//! The gRPC services over one [`Database`]: every handler checks the API key, runs the engine
//! on the blocking pool (a long search never stalls the async runtime), honours the client's
//! deadline (the engine's work is cancelled when it passes or the client goes away), bounds
//! what a request may ask for, and records its metrics. Searches take a slot of a bounded
//! pool; beyond it they wait in a bounded queue, beyond that they are refused.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gyre::{Cancel, Collection, CollectionConfig, Database, Filter, Payload, ScrollRequest};
use gyre_proto::v1::{
    self as pb, admin_server::Admin, collections_server::Collections, points_server::Points,
    search_server::Search,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Access, Keys};
use crate::convert::{
    field_type_from, filter_from, info_to, metric_from, payload_from, payload_to, rerank_from,
    result_bytes, schema_from, scored, search_options, snapshot_to, stats_to, variant_from,
};
use crate::errors::{invalid, to_status};
use crate::metrics::Metrics;

/// What one request may ask for, and how many searches run at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest k.
    pub max_k: usize,
    /// Most results per request: queries × k, or distinct ids of a Get.
    pub max_results: usize,
    /// Largest response, in bytes (checked on an upper estimate before any work).
    pub max_response_bytes: usize,
    /// Searches running at once.
    pub max_concurrent_searches: usize,
    /// Searches waiting for a slot; beyond it RESOURCE_EXHAUSTED.
    pub max_queued_searches: usize,
}

/// The slots searches run in, and the queue before them.
#[derive(Debug)]
struct Slots {
    permits: tokio::sync::Semaphore,
    total: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Shared state of the services.
#[derive(Debug, Clone)]
pub struct Service {
    db: Arc<Database>,
    keys: Keys,
    metrics: Metrics,
    limits: Limits,
    slots: Arc<Slots>,
    /// Set on a query node: the store it follows (writes are refused).
    follows: Option<Arc<str>>,
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

/// Trips the engine's cancellation when the request's future is dropped: its deadline passed
/// (the timeout drops it) or the client went away (tonic drops it).
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// What a handler's engine call gets besides the database.
struct Ctx {
    /// Tripped when the request's deadline passes or its client leaves.
    cancel: Cancel,
    /// Other searches hold slots now: scan on one thread rather than split (a split only adds
    /// hand-offs when every core is busy anyway).
    crowded: bool,
}

impl Ctx {
    /// The engine's options for a search request, with this request's cancellation and
    /// threading.
    fn options(
        self,
        config: &CollectionConfig,
        params: Option<&pb::SearchParams>,
        allow: &[u64],
    ) -> Result<gyre::SearchOptions, Status> {
        let mut opts = search_options(config, params, allow)?;
        opts.cancel = self.cancel;
        opts.sequential = self.crowded;
        Ok(opts)
    }
}

/// Whether an RPC takes a search slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Search,
}

impl Service {
    pub fn new(db: Arc<Database>, keys: Keys, metrics: Metrics, limits: Limits) -> Service {
        Service {
            db,
            keys,
            metrics,
            limits,
            slots: Arc::new(Slots {
                permits: tokio::sync::Semaphore::new(limits.max_concurrent_searches),
                total: limits.max_concurrent_searches,
                waiting: AtomicUsize::new(0),
                max_waiting: limits.max_queued_searches,
            }),
            follows: None,
        }
    }

    /// Makes this a query node's service: reads only, writes refused with
    /// FAILED_PRECONDITION naming the store it follows.
    pub fn query_node(mut self, store: &str) -> Service {
        self.follows = Some(store.into());
        self
    }

    /// The path every RPC takes: the key check, the client's deadline (answered a little
    /// early, so the status reaches the client before its own timer cancels the call; the
    /// engine's work is cancelled with it), the metrics and the log of storage failures.
    async fn guarded<T>(
        &self,
        rpc: &'static str,
        meta: &MetadataMap,
        access: Access,
        work: impl AsyncFnOnce(Cancel) -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let start = Instant::now();
        let result = async {
            self.keys.check(meta, access)?;
            if let (Some(store), Access::Write) = (&self.follows, access) {
                return Err(Status::failed_precondition(format!(
                    "this is a read-only query node following {store}: send writes to the \
                     collection's writer"
                )));
            }
            let cancel = Cancel::new();
            let _trip = CancelOnDrop(cancel.clone());
            match deadline(meta) {
                Some(d) => {
                    let d = d - (d / 10).max(Duration::from_millis(2)).min(d);
                    let cancel = cancel.with_deadline(start + d);
                    tokio::time::timeout(d, work(cancel)).await.map_err(|_| {
                        Status::deadline_exceeded(
                            "deadline exceeded: the request was abandoned and its work cancelled",
                        )
                    })?
                }
                None => work(cancel).await,
            }
        }
        .await
        .map_err(|s| {
            if s.message().len() > crate::edge::MAX_MESSAGE {
                let msg = crate::edge::clip_message(s.message());
                Status::with_metadata(s.code(), msg, s.metadata().clone())
            } else {
                s
            }
        });
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
    /// [`guarded`](Self::guarded) path; a search first waits for a slot.
    async fn run<T: Send + 'static>(
        &self,
        rpc: &'static str,
        meta: &MetadataMap,
        access: Access,
        kind: Kind,
        work: impl FnOnce(Arc<Database>, Ctx) -> Result<T, Status> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let db = self.db.clone();
        let slots = self.slots.clone();
        self.guarded(rpc, meta, access, async move |cancel: Cancel| {
            let _permit = match kind {
                Kind::Plain => None,
                Kind::Search => Some(slots.acquire().await?),
            };
            let crowded = kind == Kind::Search && slots.others_running();
            let ctx = Ctx { cancel, crowded };
            match kind {
                Kind::Plain => tokio::task::spawn_blocking(move || work(db, ctx))
                    .await
                    .map_err(|e| Status::internal(format!("request handler failed: {e}")))?,
                // A search runs on the engine's thread pool itself (taken in arrival order),
                // not on a blocking thread that would only hand it to the pool and wait: two
                // thread wake-ups per search instead of four.
                Kind::Search => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    rayon::spawn(move || {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            work(db, ctx)
                        }));
                        let _ = tx.send(r);
                    });
                    rx.await
                        .map_err(|_| Status::internal("the search task ended without an answer"))?
                        .map_err(|_| {
                            Status::internal("the search panicked (a bug: please report it)")
                        })?
                }
            }
        })
        .await
    }
}

impl Slots {
    /// True when searches other than the caller's (which holds a slot) are running.
    fn others_running(&self) -> bool {
        self.permits.available_permits() + 1 < self.total
    }

    /// A search slot, after waiting in the queue if all are taken; RESOURCE_EXHAUSTED when
    /// the queue is full. Waiting ends with the request (its deadline, or the client leaving).
    async fn acquire(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Status> {
        if let Ok(p) = self.permits.try_acquire() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "the server is busy: {} searches are already waiting (--max-queued-searches); retry later",
                self.max_waiting
            )));
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _w = Waiting(&self.waiting);
        self.permits
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))
    }
}

/// An engine error as a status naming the request's fields: a parameter the engine names is
/// given its API name, and an error about the vectors themselves names `field`.
fn field_error(field: &'static str) -> impl Fn(gyre::Error) -> Status {
    move |e| match e {
        // The message names the payload field.
        e @ gyre::Error::PayloadField { .. } => Status::invalid_argument(e.to_string()),
        gyre::Error::InvalidArgument { name, reason } => {
            let api = match name {
                "rows" | "queries" | "data" | "query" => field,
                "exact" => "params.exact",
                "oversample" => "params.oversampling",
                "rescore" => "params.rescore",
                other => other,
            };
            invalid(api, reason)
        }
        e if e.kind() == gyre::ErrorKind::InvalidInput => invalid(field, e),
        e => to_status(e),
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
        if k > self.limits.max_k {
            return Err(invalid(
                "k",
                format!(
                    "{k} exceeds this server's maximum of {} (--max-k)",
                    self.limits.max_k
                ),
            ));
        }
        Ok(k)
    }
}

impl Limits {
    /// Refuses a request for `results` results of `per_result` bytes each (an upper estimate)
    /// before any work: RESOURCE_EXHAUSTED naming the limit.
    fn check_results(&self, what: &str, results: usize, per_result: usize) -> Result<(), Status> {
        if results > self.max_results {
            return Err(Status::resource_exhausted(format!(
                "{what} asks for {results} results, more than this server's maximum of {} per request (--max-results): split it into smaller requests",
                self.max_results
            )));
        }
        let bytes = results.saturating_mul(per_result);
        if bytes > self.max_response_bytes {
            return Err(Status::resource_exhausted(format!(
                "the answer to {what} could take {bytes} bytes, more than this server's maximum response of {} bytes (--max-response-bytes): ask for fewer results or leave out the vectors",
                self.max_response_bytes
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Collections for Service {
    async fn create(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Collections/Create",
            &meta,
            Access::Write,
            Kind::Plain,
            move |db, _ctx| {
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
                    config.bits =
                        u8::try_from(r.bits).map_err(|_| invalid("bits", "use 1 to 8"))?;
                }
                if r.segment_rows != 0 {
                    config.segment_rows = r.segment_rows as usize;
                }
                config.index = crate::convert::index_from(r.index)?;
                if r.index_min_rows != 0 {
                    config.index_min_rows = usize::try_from(r.index_min_rows)
                        .map_err(|_| invalid("index_min_rows", "too large"))?;
                }
                let schema = schema_from(&r.payload_schema)?;
                let c = db
                    .create_collection_with_schema(&r.name, config, &schema)
                    .map_err(to_status)?;
                Ok(info_to(&c.info().map_err(to_status)?))
            },
        )
        .await
    }

    async fn get(
        &self,
        req: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Collections/Get",
            &meta,
            Access::Read,
            Kind::Plain,
            move |db, _ctx| {
                Ok(info_to(
                    &open_collection(&db, "name", &r.name)?
                        .info()
                        .map_err(to_status)?,
                ))
            },
        )
        .await
    }

    async fn list(
        &self,
        req: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let (meta, _, _) = req.into_parts();
        self.run(
            "Collections/List",
            &meta,
            Access::Read,
            Kind::Plain,
            move |db, _ctx| {
                Ok(pb::ListCollectionsResponse {
                    names: db.list().map_err(to_status)?,
                })
            },
        )
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Collections/Delete",
            &meta,
            Access::Write,
            Kind::Plain,
            move |db, _ctx| {
                db.drop_collection(&r.name).map_err(to_status)?;
                Ok(pb::DeleteCollectionResponse {})
            },
        )
        .await
    }
}

/// The state of one `UpsertStream`: messages received and checked but not yet written, and
/// the write in flight.
///
/// Semantics (also in the proto): messages are written in order; when one is refused (or the
/// stream breaks), every message before it has been written and is durable, and nothing
/// after it is; the error says how many messages and points were written.
#[derive(Default)]
struct StreamWriter {
    name: String,
    collection: Option<Collection>,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    /// One per buffered id once a buffered message carried payloads (empty before).
    payloads: Vec<Payload>,
    /// Messages received, and how many of them are in the buffer.
    received: u64,
    buffered: u64,
    /// Messages and points written and durable.
    written_batches: u64,
    written_points: u64,
    in_flight: Option<InFlight>,
}

/// A write on the blocking pool: the messages and points it carries.
struct InFlight {
    handle: tokio::task::JoinHandle<Result<(), Status>>,
    batches: u64,
    points: u64,
}

/// Most values buffered while a write is in flight (64 MiB of f32).
const STREAM_BUFFER: usize = 16 << 20;

impl StreamWriter {
    /// Checks one message as the engine would and appends it to the buffer.
    fn push(&mut self, db: &Database, r: pb::UpsertRequest) -> Result<(), Status> {
        self.received += 1;
        if !r.collection.is_empty() && r.collection != self.name {
            if self.collection.is_some() {
                return Err(invalid("collection", "one stream writes one collection"));
            }
            self.collection = Some(open_collection(db, "collection", &r.collection)?);
            self.name = r.collection.clone();
        }
        let Some(c) = &self.collection else {
            return Err(invalid(
                "collection",
                "the first message of a stream must name the collection",
            ));
        };
        if r.ids.is_empty() {
            return Err(invalid("ids", "the batch is empty"));
        }
        check_lengths(c, &r)?;
        let payloads = payloads_of(&r)?;
        c.check_upsert_with_payloads(&r.ids, &r.vectors, &payloads)
            .map_err(field_error("vectors"))?;
        if !payloads.is_empty() && self.payloads.len() < self.ids.len() {
            // Earlier buffered points have none.
            self.payloads.resize(self.ids.len(), Payload::new());
        }
        if !payloads.is_empty() || !self.payloads.is_empty() {
            if payloads.is_empty() {
                self.payloads
                    .extend(std::iter::repeat_n(Payload::new(), r.ids.len()));
            } else {
                self.payloads.extend(payloads);
            }
        }
        self.ids.extend_from_slice(&r.ids);
        self.vectors.extend_from_slice(&r.vectors);
        self.buffered += 1;
        Ok(())
    }

    /// True when the buffer should be written now: nothing is in flight, or the buffer is full.
    fn ready(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_none_or(|f| f.handle.is_finished())
            || self.vectors.len() >= STREAM_BUFFER
    }

    /// Waits for the write in flight and counts it.
    async fn settle(&mut self) -> Result<(), Status> {
        if let Some(f) = self.in_flight.take() {
            f.handle
                .await
                .map_err(|e| Status::internal(format!("request handler failed: {e}")))??;
            self.written_batches += f.batches;
            self.written_points += f.points;
        }
        Ok(())
    }

    /// Waits for the write in flight, then starts writing the buffer.
    async fn submit(&mut self) -> Result<(), Status> {
        self.settle().await?;
        let Some(c) = self.collection.clone() else {
            return Ok(());
        };
        if self.ids.is_empty() {
            return Ok(());
        }
        let (ids, vectors, payloads) = (
            std::mem::take(&mut self.ids),
            std::mem::take(&mut self.vectors),
            std::mem::take(&mut self.payloads),
        );
        let (batches, points) = (std::mem::take(&mut self.buffered), ids.len() as u64);
        let handle = tokio::task::spawn_blocking(move || {
            c.upsert_with_payloads(&ids, &vectors, &payloads)
                .map_err(field_error("vectors"))
        });
        self.in_flight = Some(InFlight {
            handle,
            batches,
            points,
        });
        Ok(())
    }

    /// Writes everything buffered and waits for it.
    async fn drain(&mut self) -> Result<(), Status> {
        self.submit().await?;
        self.settle().await
    }

    /// The status of a stream that failed with `e` at message `at_message` (or whose write
    /// failed: `None`): first everything before the failure is written, then the status says
    /// how much that was, in its message and in trailing metadata (`gyre-upserted-points`,
    /// `gyre-upserted-batches`).
    async fn fail(&mut self, e: Status, at_message: Option<u64>) -> Status {
        let e = match self.drain().await {
            Ok(()) => e,
            // A write failure (I/O) is the first failure: report it.
            Err(w) => w,
        };
        let prefix = match at_message {
            Some(m) => format!("message {m} (counting from 0): "),
            None => String::new(),
        };
        let mut s = Status::new(
            e.code(),
            format!(
                "{prefix}{} ({} earlier messages, {} points, were written and are durable; nothing after them)",
                e.message(),
                self.written_batches,
                self.written_points
            ),
        );
        let meta = s.metadata_mut();
        meta.insert("gyre-upserted-batches", self.written_batches.into());
        meta.insert("gyre-upserted-points", self.written_points.into());
        s
    }
}

/// Checks that a message's vectors are whole rows of the collection's dimension.
fn check_lengths(c: &Collection, r: &pb::UpsertRequest) -> Result<(), Status> {
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
    Ok(())
}

/// A message's payloads: none, or one per id.
fn payloads_of(r: &pb::UpsertRequest) -> Result<Vec<Payload>, Status> {
    if !r.payloads.is_empty() && r.payloads.len() != r.ids.len() {
        return Err(invalid(
            "payloads",
            format!(
                "{} payloads for {} ids: send none or one per id",
                r.payloads.len(),
                r.ids.len()
            ),
        ));
    }
    r.payloads.iter().map(payload_from).collect()
}

fn upsert_batch(db: &Database, r: &pb::UpsertRequest, name: &str) -> Result<u64, Status> {
    let c = open_collection(db, "collection", name)?;
    if r.ids.is_empty() {
        return Err(invalid("ids", "the batch is empty"));
    }
    check_lengths(&c, r)?;
    let payloads = payloads_of(r)?;
    c.upsert_with_payloads(&r.ids, &r.vectors, &payloads)
        .map_err(field_error("vectors"))?;
    Ok(r.ids.len() as u64)
}

/// A request's optional filter as the engine's (`None` when unset or empty).
fn filter_of(f: Option<&pb::Filter>, field: &str) -> Result<Option<Filter>, Status> {
    match f {
        Some(f) => {
            let f = filter_from(f, field)?;
            Ok((!f.is_empty()).then_some(f))
        }
        None => Ok(None),
    }
}

#[tonic::async_trait]
impl Points for Service {
    async fn upsert(
        &self,
        req: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Points/Upsert",
            &meta,
            Access::Write,
            Kind::Plain,
            move |db, _ctx| {
                let n = upsert_batch(&db, &r, &r.collection)?;
                Ok(pb::UpsertResponse {
                    upserted: n,
                    batches: 1,
                })
            },
        )
        .await
    }

    async fn upsert_stream(
        &self,
        req: Request<Streaming<pb::UpsertRequest>>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        let (meta, _, mut stream) = req.into_parts();
        let db = self.db.clone();
        self.guarded(
            "Points/UpsertStream",
            &meta,
            Access::Write,
            async move |_cancel: Cancel| {
                // A one-deep pipeline: while the engine writes what has arrived, the next
                // messages are received and checked; they are then written together (in
                // order, so a repeated id still keeps its last vector), which also shares
                // their fsync.
                let mut writer = StreamWriter::default();
                loop {
                    let r = match stream.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) => break,
                        Err(e) => {
                            let e = if e.message().starts_with("failed to decode Protobuf") {
                                Status::invalid_argument(format!(
                                    "malformed request message: {}",
                                    e.message()
                                ))
                            } else {
                                e
                            };
                            // The message that could not be read is the next one.
                            let at = writer.received;
                            return Err(writer.fail(e, Some(at)).await);
                        }
                    };
                    if let Err(e) = writer.push(&db, r) {
                        let at = writer.received - 1;
                        return Err(writer.fail(e, Some(at)).await);
                    }
                    if writer.ready()
                        && let Err(e) = writer.submit().await
                    {
                        return Err(writer.fail(e, None).await);
                    }
                }
                if let Err(e) = writer.drain().await {
                    return Err(writer.fail(e, None).await);
                }
                Ok(pb::UpsertResponse {
                    upserted: writer.written_points,
                    batches: writer.written_batches,
                })
            },
        )
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeletePointsRequest>,
    ) -> Result<Response<pb::DeletePointsResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Points/Delete",
            &meta,
            Access::Write,
            Kind::Plain,
            move |db, _ctx| {
                let c = open_collection(&db, "collection", &r.collection)?;
                if r.ids.is_empty() {
                    return Err(invalid("ids", "no ids to delete"));
                }
                let deleted = c.delete(&r.ids).map_err(field_error("ids"))?;
                Ok(pb::DeletePointsResponse {
                    deleted: deleted as u64,
                })
            },
        )
        .await
    }

    async fn get(
        &self,
        req: Request<pb::GetPointsRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        let limits = self.limits;
        self.run(
            "Points/Get",
            &meta,
            Access::Read,
            Kind::Plain,
            move |db, _ctx| {
                let c = open_collection(&db, "collection", &r.collection)?;
                // One answer per distinct id, in the order of first mention.
                let mut seen = HashSet::with_capacity(r.ids.len().min(limits.max_results + 1));
                let mut ids = Vec::new();
                for &id in &r.ids {
                    if seen.insert(id) {
                        ids.push(id);
                        if ids.len() > limits.max_results {
                            break;
                        }
                    }
                }
                limits.check_results(
                    "this Get",
                    ids.len(),
                    result_bytes(c.config().dim, r.with_vectors),
                )?;
                let points = c
                    .get(&ids)
                    .map_err(to_status)?
                    .into_iter()
                    .flatten()
                    .map(|p| point_to(p, r.with_vectors, r.with_payload))
                    .collect();
                Ok(pb::GetPointsResponse { points })
            },
        )
        .await
    }

    async fn count(
        &self,
        req: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Points/Count",
            &meta,
            Access::Read,
            Kind::Plain,
            move |db, _ctx| {
                let c = open_collection(&db, "collection", &r.collection)?;
                let filter = filter_of(r.filter.as_ref(), "filter")?;
                Ok(pb::CountResponse {
                    count: c.count(filter.as_ref()).map_err(field_error("filter"))?,
                })
            },
        )
        .await
    }

    async fn delete_by_filter(
        &self,
        req: Request<pb::DeleteByFilterRequest>,
    ) -> Result<Response<pb::DeletePointsResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Points/DeleteByFilter",
            &meta,
            Access::Write,
            Kind::Plain,
            move |db, _ctx| {
                let c = open_collection(&db, "collection", &r.collection)?;
                let Some(filter) = filter_of(r.filter.as_ref(), "filter")? else {
                    return Err(invalid(
                        "filter",
                        "an empty filter matches every point: pass at least one condition",
                    ));
                };
                let deleted = c.delete_by_filter(&filter).map_err(field_error("filter"))?;
                Ok(pb::DeletePointsResponse {
                    deleted: deleted as u64,
                })
            },
        )
        .await
    }

    async fn scroll(
        &self,
        req: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        let limits = self.limits;
        self.run(
            "Points/Scroll",
            &meta,
            Access::Read,
            Kind::Plain,
            move |db, _ctx| {
                let c = open_collection(&db, "collection", &r.collection)?;
                let limit = if r.limit == 0 { 100 } else { r.limit as usize };
                limits.check_results(
                    "this Scroll page",
                    limit,
                    result_bytes(c.config().dim, r.with_vectors),
                )?;
                let page = c
                    .scroll(&ScrollRequest {
                        after: r.after,
                        limit,
                        filter: filter_of(r.filter.as_ref(), "filter")?,
                        with_vectors: r.with_vectors,
                        with_payload: r.with_payload,
                    })
                    .map_err(field_error("filter"))?;
                Ok(pb::ScrollResponse {
                    points: page
                        .points
                        .into_iter()
                        .map(|p| point_to(p, r.with_vectors, r.with_payload))
                        .collect(),
                    next_after: page.next,
                })
            },
        )
        .await
    }
}

/// An engine point as the API's.
fn point_to(p: gyre::Point, with_vectors: bool, with_payload: bool) -> pb::Point {
    pb::Point {
        id: p.id,
        vector: if with_vectors {
            p.vector.unwrap_or_default()
        } else {
            Vec::new()
        },
        payload: if with_payload {
            payload_to(p.payload.as_ref())
        } else {
            Default::default()
        },
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
        let limits = self.limits;
        self.run(
            "Search/Search",
            &meta,
            Access::Read,
            Kind::Search,
            move |db, ctx| {
                let k = k?;
                let c = open_collection(&db, "collection", &r.collection)?;
                limits.check_results(
                    "this search",
                    k,
                    result_bytes(c.config().dim, r.with_vectors),
                )?;
                let mut opts = ctx.options(c.config(), r.params.as_ref(), &r.allow_ids)?;
                opts.filter = filter_of(r.filter.as_ref(), "filter")?;
                let filtered = opts.filter.is_some();
                let found = c
                    .search_with_stats(&r.vector, k, &opts)
                    .map_err(field_error("vector"))?;
                Ok(pb::SearchResponse {
                    results: scored(&c, found.hits, r.with_vectors, r.with_payload)?,
                    filter_stats: filtered.then(|| stats_to(&found.filter)),
                })
            },
        )
        .await
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        let k = self.check_k(r.k);
        let limits = self.limits;
        self.run(
            "Search/SearchBatch",
            &meta,
            Access::Read,
            Kind::Search,
            move |db, ctx| {
                let k = k?;
                let c = open_collection(&db, "collection", &r.collection)?;
                let d = c.config().dim;
                if r.vectors.is_empty() {
                    return Err(invalid("vectors", "no queries"));
                }
                if !r.vectors.len().is_multiple_of(d) {
                    return Err(invalid(
                        "vectors",
                        format!(
                            "{} values is not a whole number of {d}-dimensional queries",
                            r.vectors.len()
                        ),
                    ));
                }
                let queries = r.vectors.len() / d;
                limits.check_results(
                    &format!("this batch ({queries} queries × k = {k})"),
                    queries.saturating_mul(k),
                    result_bytes(d, r.with_vectors),
                )?;
                let mut opts = ctx.options(c.config(), r.params.as_ref(), &r.allow_ids)?;
                opts.filter = filter_of(r.filter.as_ref(), "filter")?;
                if !r.filters.is_empty() && r.filters.len() != queries {
                    return Err(invalid(
                        "filters",
                        format!(
                            "{} filters for {queries} queries: send none or one per query",
                            r.filters.len()
                        ),
                    ));
                }
                if !r.filters.is_empty() && r.filter.is_some() {
                    return Err(invalid("filters", "set filter or filters, not both"));
                }
                let filters = r
                    .filters
                    .iter()
                    .enumerate()
                    .map(|(i, f)| filter_of(Some(f), &format!("filters[{i}]")))
                    .collect::<Result<Vec<_>, Status>>()?;
                let filtered = opts.filter.is_some() || filters.iter().any(Option::is_some);
                let found = c
                    .search_batch_filtered(&r.vectors, k, &opts, &filters)
                    .map_err(field_error("vectors"))?;
                let results = found
                    .into_iter()
                    .map(|f| {
                        Ok(pb::SearchResponse {
                            results: scored(&c, f.hits, r.with_vectors, r.with_payload)?,
                            filter_stats: filtered.then(|| stats_to(&f.filter)),
                        })
                    })
                    .collect::<Result<_, Status>>()?;
                Ok(pb::SearchBatchResponse { results })
            },
        )
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
        self.run(
            "Admin/Flush",
            &meta,
            Access::Write,
            Kind::Plain,
            move |db, _ctx| {
                let c = open_collection(&db, "collection", &r.collection)?;
                c.flush().map_err(to_status)?;
                Ok(pb::FlushResponse {})
            },
        )
        .await
    }

    async fn compact(
        &self,
        req: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Admin/Compact",
            &meta,
            Access::Write,
            Kind::Plain,
            move |db, _ctx| {
                let c = open_collection(&db, "collection", &r.collection)?;
                Ok(pb::CompactResponse {
                    compacted: c.compact().map_err(to_status)?,
                })
            },
        )
        .await
    }

    async fn create_field_index(
        &self,
        req: Request<pb::CreateFieldIndexRequest>,
    ) -> Result<Response<pb::CreateFieldIndexResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Admin/CreateFieldIndex",
            &meta,
            Access::Write,
            Kind::Plain,
            move |db, _ctx| {
                let c = open_collection(&db, "collection", &r.collection)?;
                let kind = field_type_from(r.r#type, "type")?;
                c.create_field_index(&r.field, kind)
                    .map_err(field_error("field"))?;
                Ok(pb::CreateFieldIndexResponse {})
            },
        )
        .await
    }

    async fn create_snapshot(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Admin/CreateSnapshot",
            &meta,
            Access::Write,
            Kind::Plain,
            move |db, _ctx| {
                check_name("collection", &r.collection)?;
                let name = (!r.name.is_empty()).then_some(r.name.as_str());
                let info = db.create_snapshot(&r.collection, name).map_err(to_status)?;
                Ok(snapshot_to(&info))
            },
        )
        .await
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Admin/ListSnapshots",
            &meta,
            Access::Read,
            Kind::Plain,
            move |db, _ctx| {
                let one = (!r.collection.is_empty()).then_some(r.collection.as_str());
                let all = db.list_snapshots(one).map_err(to_status)?;
                Ok(pb::ListSnapshotsResponse {
                    snapshots: all.iter().map(snapshot_to).collect(),
                })
            },
        )
        .await
    }

    async fn restore_snapshot(
        &self,
        req: Request<pb::RestoreSnapshotRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Admin/RestoreSnapshot",
            &meta,
            Access::Write,
            Kind::Plain,
            move |db, _ctx| {
                check_name("collection", &r.collection)?;
                let target = (!r.target.is_empty()).then_some(r.target.as_str());
                let c = db
                    .restore_snapshot(&r.collection, &r.snapshot, target, r.replace)
                    .map_err(to_status)?;
                Ok(info_to(&c.info().map_err(to_status)?))
            },
        )
        .await
    }

    async fn delete_snapshot(
        &self,
        req: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        self.run(
            "Admin/DeleteSnapshot",
            &meta,
            Access::Write,
            Kind::Plain,
            move |db, _ctx| {
                check_name("collection", &r.collection)?;
                db.delete_snapshot(&r.collection, &r.snapshot)
                    .map_err(to_status)?;
                Ok(pb::DeleteSnapshotResponse {})
            },
        )
        .await
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let (meta, _, _) = req.into_parts();
        self.run(
            "Admin/Stats",
            &meta,
            Access::Read,
            Kind::Plain,
            move |db, _ctx| {
                let infos = db
                    .list()
                    .map_err(to_status)?
                    .iter()
                    .map(|n| db.info(n).map_err(to_status))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(pb::StatsResponse {
                    disk_bytes: infos.iter().map(|i| i.disk_bytes).sum(),
                    deleted: infos.iter().map(|i| i.deleted).sum(),
                    dead_bytes: infos.iter().map(|i| i.dead_bytes()).sum(),
                    resident_bytes: infos.iter().filter_map(|i| i.resident_bytes).sum(),
                    collections: infos.iter().map(info_to).collect(),
                })
            },
        )
        .await
    }
}
