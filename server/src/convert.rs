//! The one place API messages and engine types are converted into each other.

use gyre::{
    CollectionConfig, CollectionInfo as EngineInfo, Metric as EngineMetric, Neighbor,
    RerankStorage as EngineRerank, SearchOptions, Variant as EngineVariant,
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
            })
            .collect(),
        disk_bytes: i.disk_bytes,
        dead_bytes: i.dead_bytes(),
        resident_bytes: i.resident_bytes.unwrap_or(0),
        segment_rows: c.segment_rows as u64,
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
/// framing, and the vector when asked for).
pub fn result_bytes(dim: usize, with_vectors: bool) -> usize {
    24 + if with_vectors { 4 * dim + 8 } else { 0 }
}

pub fn scored(
    c: &gyre::Collection,
    results: Vec<Neighbor>,
    with_vectors: bool,
) -> Result<Vec<pb::ScoredPoint>, Status> {
    let vectors = if with_vectors {
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
                .unwrap_or_default(),
        })
        .collect())
}
