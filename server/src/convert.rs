//! The one place API messages and engine types are converted into each other.

use std::collections::HashMap;

use gyre::payload::{FieldSpec, FieldType};
use gyre::{
    CollectionConfig, CollectionInfo as EngineInfo, Condition, Filter, FilterStats,
    Metric as EngineMetric, Neighbor, Payload, Range, RerankStorage as EngineRerank, Schema,
    SearchOptions, Value, Variant as EngineVariant,
};
use gyre_proto::v1 as pb;
use tonic::Status;

use crate::errors::{invalid, to_status};

pub fn metric_from(m: i32) -> Result<EngineMetric, Status> {
    match pb::Metric::try_from(m) {
        Ok(pb::Metric::Unspecified | pb::Metric::Cosine) => Ok(EngineMetric::Cosine),
        Ok(pb::Metric::Dot) => Ok(EngineMetric::Dot),
        Ok(pb::Metric::L2) => Ok(EngineMetric::L2),
        Err(_) => Err(invalid("metric", format!("unknown value {m}"))),
    }
}

pub fn metric_to(m: EngineMetric) -> i32 {
    match m {
        EngineMetric::Cosine => pb::Metric::Cosine,
        EngineMetric::Dot => pb::Metric::Dot,
        EngineMetric::L2 => pb::Metric::L2,
    }
    .into()
}

pub fn variant_from(v: i32) -> Result<EngineVariant, Status> {
    match pb::Variant::try_from(v) {
        Ok(pb::Variant::Unspecified | pb::Variant::Mse) => Ok(EngineVariant::Mse),
        Ok(pb::Variant::Prod) => Ok(EngineVariant::Prod),
        Err(_) => Err(invalid("variant", format!("unknown value {v}"))),
    }
}

pub fn rerank_from(r: i32, default: EngineRerank) -> Result<EngineRerank, Status> {
    match pb::RerankStorage::try_from(r) {
        Ok(pb::RerankStorage::Unspecified) => Ok(default),
        Ok(pb::RerankStorage::F32) => Ok(EngineRerank::F32),
        Ok(pb::RerankStorage::F16) => Ok(EngineRerank::F16),
        Ok(pb::RerankStorage::None) => Ok(EngineRerank::None),
        Err(_) => Err(invalid("rerank", format!("unknown value {r}"))),
    }
}

pub fn rerank_to(r: EngineRerank) -> i32 {
    match r {
        EngineRerank::None => pb::RerankStorage::None,
        EngineRerank::F16 => pb::RerankStorage::F16,
        EngineRerank::F32 => pb::RerankStorage::F32,
    }
    .into()
}

/// The engine's collection info as the API's message.
pub fn info_to(i: &EngineInfo) -> pb::CollectionInfo {
    let c = &i.config;
    pb::CollectionInfo {
        name: i.name.clone(),
        dim: c.dim as u32,
        metric: metric_to(c.metric),
        bits: u32::from(c.bits),
        variant: match c.variant {
            EngineVariant::Mse => pb::Variant::Mse,
            EngineVariant::Prod => pb::Variant::Prod,
        }
        .into(),
        rerank: rerank_to(c.rerank),
        seed: c.seed,
        points: i.live,
        deleted: i.deleted,
        memtable_rows: i.memtable_rows,
        segments: i
            .segments
            .iter()
            .map(|s| pb::SegmentInfo {
                id: s.id,
                rows: s.rows,
                live: s.live,
                bytes: s.bytes,
                graph_bytes: s.graph_bytes,
            })
            .collect(),
        disk_bytes: i.disk_bytes,
        dead_bytes: i.dead_bytes(),
        resident_bytes: i.resident_bytes.unwrap_or(0),
        segment_rows: c.segment_rows as u64,
        payload_schema: schema_to(&i.schema),
        index: match c.index {
            gyre::SegmentIndex::Flat => pb::SegmentIndex::Flat,
            gyre::SegmentIndex::Graph => pb::SegmentIndex::Graph,
        }
        .into(),
        index_min_rows: c.index_min_rows as u64,
    }
}

/// The engine's segment index for a request's `index` (unset: the default, graph).
pub fn index_from(i: i32) -> Result<gyre::SegmentIndex, Status> {
    match pb::SegmentIndex::try_from(i) {
        Ok(pb::SegmentIndex::Unspecified) => Ok(gyre::SegmentIndex::default()),
        Ok(pb::SegmentIndex::Flat) => Ok(gyre::SegmentIndex::Flat),
        Ok(pb::SegmentIndex::Graph) => Ok(gyre::SegmentIndex::Graph),
        Err(_) => Err(invalid("index", format!("unknown segment index {i}"))),
    }
}

pub fn field_type_from(t: i32, field: &str) -> Result<FieldType, Status> {
    match pb::FieldType::try_from(t) {
        Ok(pb::FieldType::Keyword) => Ok(FieldType::Keyword),
        Ok(pb::FieldType::Integer) => Ok(FieldType::Integer),
        Ok(pb::FieldType::Float) => Ok(FieldType::Float),
        Ok(pb::FieldType::Bool) => Ok(FieldType::Bool),
        Ok(pb::FieldType::Unspecified) => Err(invalid(
            field,
            "the field type must be set (keyword, integer, float or bool)",
        )),
        Err(_) => Err(invalid(field, format!("unknown field type {t}"))),
    }
}

fn field_type_to(t: FieldType) -> i32 {
    match t {
        FieldType::Keyword => pb::FieldType::Keyword,
        FieldType::Integer => pb::FieldType::Integer,
        FieldType::Float => pb::FieldType::Float,
        FieldType::Bool => pb::FieldType::Bool,
    }
    .into()
}

/// Declared payload fields as the engine's schema.
pub fn schema_from(fields: &[pb::FieldSchema]) -> Result<Schema, Status> {
    let mut schema = Schema::default();
    for f in fields {
        let kind = field_type_from(f.r#type, "payload_schema.type")?;
        if schema
            .fields
            .insert(
                f.field.clone(),
                FieldSpec {
                    kind,
                    indexed: f.indexed,
                },
            )
            .is_some()
        {
            return Err(invalid(
                "payload_schema",
                format!("field {:?} is declared twice", f.field),
            ));
        }
    }
    Ok(schema)
}

pub fn schema_to(s: &Schema) -> Vec<pb::FieldSchema> {
    s.fields
        .iter()
        .map(|(name, spec)| pb::FieldSchema {
            field: name.clone(),
            r#type: field_type_to(spec.kind),
            indexed: spec.indexed,
        })
        .collect()
}

/// A request's payload as the engine's.
pub fn payload_from(p: &pb::Payload) -> Result<Payload, Status> {
    let mut out = Payload::new();
    for (name, v) in &p.fields {
        use pb::value::Kind;
        let value = match &v.kind {
            Some(Kind::Keyword(s)) => Value::Keyword(s.clone()),
            Some(Kind::Integer(x)) => Value::Integer(*x),
            Some(Kind::Float(x)) => Value::Float(*x),
            Some(Kind::Boolean(b)) => Value::Bool(*b),
            Some(Kind::Keywords(l)) => Value::Keywords(l.values.clone()),
            Some(Kind::Integers(l)) => Value::Integers(l.values.clone()),
            None => {
                return Err(invalid(
                    "payloads",
                    format!("field {name:?} has no value (set one of the Value kinds)"),
                ));
            }
        };
        out.0.insert(name.clone(), value);
    }
    Ok(out)
}

/// An engine payload as the API's map.
pub fn payload_to(p: Option<&Payload>) -> HashMap<String, pb::Value> {
    use pb::value::Kind;
    let Some(p) = p else {
        return HashMap::new();
    };
    p.0.iter()
        .map(|(name, v)| {
            let kind = match v {
                Value::Keyword(s) => Kind::Keyword(s.clone()),
                Value::Integer(x) => Kind::Integer(*x),
                Value::Float(x) => Kind::Float(*x),
                Value::Bool(b) => Kind::Boolean(*b),
                Value::Keywords(l) => Kind::Keywords(pb::KeywordList { values: l.clone() }),
                Value::Integers(l) => Kind::Integers(pb::IntegerList { values: l.clone() }),
            };
            (name.clone(), pb::Value { kind: Some(kind) })
        })
        .collect()
}

/// A request's filter as the engine's (`field`: the request field, for messages). Types are
/// checked by the engine against the collection's schema.
pub fn filter_from(f: &pb::Filter, field: &str) -> Result<Filter, Status> {
    let list = |cs: &[pb::Condition], part: &str| -> Result<Vec<Condition>, Status> {
        cs.iter()
            .map(|c| condition_from(c, &format!("{field}.{part}")))
            .collect()
    };
    Ok(Filter {
        must: list(&f.must, "must")?,
        should: list(&f.should, "should")?,
        must_not: list(&f.must_not, "must_not")?,
    })
}

fn condition_from(c: &pb::Condition, at: &str) -> Result<Condition, Status> {
    use pb::condition::Condition as C;
    let name = c.field.clone();
    Ok(match &c.condition {
        Some(C::Match(m)) => match &m.value {
            Some(pb::r#match::Value::Keyword(s)) => Condition::keyword(name, s.clone()),
            Some(pb::r#match::Value::Integer(x)) => Condition::integer(name, *x),
            Some(pb::r#match::Value::Boolean(b)) => Condition::boolean(name, *b),
            None => return Err(invalid(at, format!("match on {name:?} has no value"))),
        },
        Some(C::MatchAny(m)) => match &m.values {
            Some(pb::match_any::Values::Keywords(l)) => {
                Condition::any_keyword(name, l.values.iter().cloned())
            }
            Some(pb::match_any::Values::Integers(l)) => {
                Condition::any_integer(name, l.values.iter().copied())
            }
            None => return Err(invalid(at, format!("match_any on {name:?} has no values"))),
        },
        Some(C::Range(r)) => Condition::range(
            name,
            Range {
                gt: r.gt,
                gte: r.gte,
                lt: r.lt,
                lte: r.lte,
            },
        ),
        Some(C::HasId(h)) => Condition::has_id(h.ids.iter().copied()),
        Some(C::IsEmpty(true)) => Condition::is_empty(name),
        Some(C::IsEmpty(false)) => {
            return Err(invalid(
                at,
                "is_empty must be true (use must_not for \"not empty\")",
            ));
        }
        Some(C::Filter(f)) => Condition::Filter(filter_from(f, &format!("{at}.filter"))?),
        None => return Err(invalid(at, "a condition must set one of its kinds")),
    })
}

/// A filter's cost as the API's message.
pub fn stats_to(s: &FilterStats) -> pb::FilterStats {
    pb::FilterStats {
        unindexed_fields: s.unindexed_fields.iter().cloned().collect(),
        payloads_scanned: s.payloads_scanned,
        matched_points: s.matched_rows,
    }
}

/// The engine's search options for a request. `rescore = true` and `exact = true` both need
/// stored vectors and are refused alike without them.
pub fn search_options(
    config: &CollectionConfig,
    p: Option<&pb::SearchParams>,
    allow: &[u64],
) -> Result<SearchOptions, Status> {
    let mut opts = SearchOptions::recommended(config);
    if let Some(p) = p {
        if p.oversampling > 0 {
            opts.params.oversample = p.oversampling as usize;
        }
        if let Some(r) = p.rescore {
            if r && config.rerank == EngineRerank::None {
                return Err(invalid(
                    "params.rescore",
                    "rescoring on stored vectors needs them: this collection keeps none (rerank none); leave rescore unset, or create the collection with rerank f16 or f32",
                ));
            }
            opts.params.rescore = r;
        }
        opts.exact = p.exact;
        if p.ef > 10_000 {
            return Err(invalid(
                "params.ef",
                format!("must be at most 10000, got {}", p.ef),
            ));
        }
        opts.params.ef = p.ef as usize;
        if p.target_recall != 0.0 {
            if !(p.target_recall > 0.0 && p.target_recall <= 1.0) {
                return Err(invalid(
                    "params.target_recall",
                    format!("must be in (0, 1], got {}", p.target_recall),
                ));
            }
            opts.params.target_recall = Some(p.target_recall);
        }
    }
    if !allow.is_empty() {
        opts.allow = Some(allow.iter().copied().collect());
    }
    Ok(opts)
}

/// An upper bound on the encoded bytes of one result (a `ScoredPoint` or `Point`: id, score,
/// framing, and the vector when asked for). Payloads are not bounded ahead: their size is
/// known only once read, and the response limit applies to the encoded reply.
pub fn result_bytes(dim: usize, with_vectors: bool) -> usize {
    24 + if with_vectors { 4 * dim + 8 } else { 0 }
}

pub fn scored(
    c: &gyre::Collection,
    results: Vec<Neighbor>,
    with_vectors: bool,
    with_payload: bool,
) -> Result<Vec<pb::ScoredPoint>, Status> {
    let vectors = if with_vectors || with_payload {
        let ids: Vec<u64> = results.iter().map(|n| n.id).collect();
        c.get(&ids).map_err(to_status)?
    } else {
        Vec::new()
    };
    Ok(results
        .into_iter()
        .enumerate()
        .map(|(i, n)| pb::ScoredPoint {
            id: n.id,
            score: n.score,
            vector: vectors
                .get(i)
                .and_then(|p| p.as_ref())
                .and_then(|p| p.vector.clone())
                .filter(|_| with_vectors)
                .unwrap_or_default(),
            payload: if with_payload {
                payload_to(
                    vectors
                        .get(i)
                        .and_then(|p| p.as_ref())
                        .and_then(|p| p.payload.as_ref()),
                )
            } else {
                HashMap::new()
            },
        })
        .collect())
}

/// A snapshot's description on the wire.
pub fn snapshot_to(i: &gyre::SnapshotInfo) -> pb::SnapshotInfo {
    pb::SnapshotInfo {
        collection: i.collection.clone(),
        name: i.name.clone(),
        created_unix_ms: i.created_unix_ms,
        generation: i.generation,
        points: i.points,
        bytes: i.bytes(),
        copied_bytes: i.copied_bytes,
        files: i.files.len() as u32,
    }
}
