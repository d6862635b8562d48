//! `gyre-bench recall --filter-selectivity S,...`: filtered search on an on-disk collection.
//!
//! Every train vector gets a synthetic payload from fixed seeds: `bucket`, a keyword `b0` …
//! `b999` drawn uniformly, and `rank`, the vector's place in a seeded permutation (an integer
//! in `0..n`), and `public`, a bool (not filtered on). `bucket` and `rank` are declared
//! indexed. For each selectivity `s` two filters select
//! about `s · n` points: `keyword` matches the buckets `b0 … b(⌈1000 s⌉ - 1)` (one `match`, or
//! a `match_any`), `range` is `rank < round(s · n)` (exactly `s · n` points). The ground truth
//! is exact brute force over the points each filter passes; recall follows the
//! ann-benchmarks rule, as the unfiltered runner's does. An unfiltered run with the same
//! settings comes first (`filter_kind` = none, selectivity 1), so the rows give the speed-up a
//! filter brings.

use std::time::Instant;

use gyre::payload::{FieldSpec, FieldType};
use gyre::random::SeededRng;
use gyre::{
    Condition, ExactIndex, Filter, Neighbor, Payload, Range, RerankStorage, Schema, SearchParams,
};
use gyre_datasets::{AnnDataset, Distance};
use indicatif::{ProgressBar, ProgressStyle};

use crate::recall::{Args, IndexKind, cpu_name, time_queries};
use crate::report::Row;

const BUCKETS: u64 = 1000;

/// The synthetic payloads of `n` points and, per point, its bucket and rank.
fn payloads(n: usize) -> (Vec<Payload>, Vec<u64>, Vec<u64>) {
    let mut rng = SeededRng::for_data(0xF117E5);
    let buckets: Vec<u64> = (0..n).map(|_| rng.below(BUCKETS)).collect();
    // A seeded Fisher–Yates permutation: rank[i] is point i's place.
    let mut order: Vec<u64> = (0..n as u64).collect();
    let mut rng = SeededRng::for_data(0x5EED_0F4A);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let mut rank = vec![0u64; n];
    for (place, &i) in order.iter().enumerate() {
        rank[i as usize] = place as u64;
    }
    let payloads = (0..n)
        .map(|i| {
            Payload::new()
                .with("bucket", format!("b{}", buckets[i]))
                .with("rank", rank[i] as i64)
                .with("public", i % 2 == 0)
        })
        .collect();
    (payloads, buckets, rank)
}

/// The filter of `kind` at selectivity `s`, and which points pass it.
fn filter_for(
    kind: &str,
    s: f64,
    buckets: &[u64],
    rank: &[u64],
) -> Result<(Filter, Vec<u64>), String> {
    let n = buckets.len();
    Ok(match kind {
        "keyword" => {
            let m = ((s * BUCKETS as f64).ceil() as u64).clamp(1, BUCKETS);
            let names: Vec<String> = (0..m).map(|b| format!("b{b}")).collect();
            let c = if m == 1 {
                Condition::keyword("bucket", names[0].clone())
            } else {
                Condition::any_keyword("bucket", names)
            };
            let ids = (0..n as u64).filter(|&i| buckets[i as usize] < m).collect();
            (Filter::new().must(c), ids)
        }
        "range" => {
            let cut = (s * n as f64).round().max(1.0);
            let c = Condition::range("rank", Range::new().lt(cut));
            let ids = (0..n as u64)
                .filter(|&i| (rank[i as usize] as f64) < cut)
                .collect();
            (Filter::new().must(c), ids)
        }
        other => return Err(format!("unknown filter kind {other}")),
    })
}

/// Recall@k and recall@1@k of `results` against the exact neighbours among `allowed` (ids
/// into the train set): the ann-benchmarks rule, with the distances of the filtered truth.
fn filtered_recall(
    ds: &AnnDataset,
    distance: Distance,
    k: usize,
    allowed: &[u64],
    truth: &[Vec<Neighbor>],
    results: &[Vec<Neighbor>],
) -> (f64, f64) {
    let (mut hits, mut total, mut top1, mut asked) = (0usize, 0usize, 0usize, 0usize);
    for (q, found) in results.iter().enumerate() {
        let query = ds.test.row(q);
        let want = truth[q].len().min(k);
        if want == 0 {
            continue;
        }
        let at = |i: usize| distance.between(query, ds.train.row(allowed[i] as usize));
        let threshold = at(truth[q][want - 1].id as usize) + 1e-3;
        let best = at(truth[q][0].id as usize) + 1e-6;
        let dists: Vec<f64> = found
            .iter()
            .take(want)
            .map(|n| distance.between(query, ds.train.row(n.id as usize)))
            .collect();
        hits += dists.iter().filter(|&&x| x <= threshold).count();
        top1 += usize::from(dists.iter().any(|&x| x <= best));
        total += want;
        asked += 1;
    }
    if total == 0 {
        (1.0, 1.0)
    } else {
        (hits as f64 / total as f64, top1 as f64 / asked as f64)
    }
}

/// Ingest with and without the payloads (durable 1,000-point upserts into a fresh
/// collection, 3 alternating rounds, medians): what carrying payloads costs a writer.
fn ingest_overhead(
    args: &Args,
    ds: &AnnDataset,
    metric: gyre::Metric,
    bits: u8,
    payloads: &[Payload],
) -> Result<(), String> {
    let (n, d) = (ds.train.rows(), ds.train.dim());
    let ids: Vec<u64> = (0..n as u64).collect();
    let db = gyre::Database::open(&args.data_dir).map_err(|e| e.to_string())?;
    let cfg = gyre::CollectionConfig {
        metric,
        bits,
        segment_rows: n.max(1),
        rerank: RerankStorage::None,
        // Ingest alone is measured: no graph built when the segment seals.
        index: gyre::SegmentIndex::Flat,
        ..gyre::CollectionConfig::new(d)
    };
    let mut secs = [Vec::new(), Vec::new()];
    for _ in 0..3 {
        for (with, out) in secs.iter_mut().enumerate() {
            let name = "filtered-ingest";
            if db.collection(name).is_ok() {
                db.drop_collection(name).map_err(|e| e.to_string())?;
            }
            let c = db.create_collection(name, cfg).map_err(|e| e.to_string())?;
            let t = Instant::now();
            for ((chunk, rows), p) in ids
                .chunks(1000)
                .zip(ds.train.as_slice().chunks(1000 * d))
                .zip(payloads.chunks(1000))
            {
                let p: &[Payload] = if with == 1 { p } else { &[] };
                c.upsert_with_payloads(chunk, rows, p)
                    .map_err(|e| e.to_string())?;
            }
            out.push(t.elapsed().as_secs_f64());
            drop(c);
            db.drop_collection(name).map_err(|e| e.to_string())?;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (plain, with) = (median(&mut secs[0]), median(&mut secs[1]));
    eprintln!(
        "ingest (durable 1,000-point upserts, median of 3): without payloads {:.0} points/s, with 3-field payloads {:.0} points/s ({:.1}% slower)",
        n as f64 / plain,
        n as f64 / with,
        100.0 * (with / plain - 1.0)
    );
    Ok(())
}

/// One timed run: selectivity, kind, and (for a filtered run) the filter, the points it
/// passes and their exact neighbours.
type Case<'a> = (
    f64,
    &'a str,
    Option<&'a Filter>,
    Option<&'a [u64]>,
    Option<&'a [Vec<Neighbor>]>,
);

/// Runs the filtered measurements; returns the rows (every one with `filter_selectivity` and
/// `filter_kind`).
pub fn run(
    args: &Args,
    ds: &AnnDataset,
    distance: Distance,
    dataset_name: &str,
) -> Result<Vec<Row>, String> {
    let (n, d, nq) = (ds.train.rows(), ds.train.dim(), ds.test.rows());
    let k = args.k;
    let metric = distance.metric();
    let cpu = cpu_name();
    if let Some(&s) = args
        .filter_selectivity
        .iter()
        .find(|&&s| !(s > 0.0 && s <= 1.0))
    {
        return Err(format!("--filter-selectivity {s} is not in (0, 1]"));
    }
    eprintln!(
        "payloads: bucket (keyword, {BUCKETS} values), rank (integer permutation), both indexed"
    );
    let (payloads, buckets, rank) = payloads(n);
    let kinds = ["keyword", "range"];
    // The filters, their passing points and the exact filtered truth, computed once.
    let mut cases = Vec::new();
    for &s in &args.filter_selectivity {
        for kind in kinds {
            let (filter, allowed) = filter_for(kind, s, &buckets, &rank)?;
            let sub: Vec<f32> = allowed
                .iter()
                .flat_map(|&i| ds.train.row(i as usize).iter().copied())
                .collect();
            let truth = if allowed.is_empty() {
                vec![Vec::new(); nq]
            } else {
                ExactIndex::new(d, metric, &sub)
                    .and_then(|ix| ix.search_batch(ds.test.as_slice(), k))
                    .map_err(|e| e.to_string())?
            };
            eprintln!(
                "filter {kind} at {s}: {} points pass ({:.4} of {n})",
                allowed.len(),
                allowed.len() as f64 / n as f64
            );
            cases.push((s, kind, filter, allowed, truth));
        }
    }
    let ids: Vec<u64> = (0..n as u64).collect();
    let mut schema = Schema::default();
    for (f, kind) in [("bucket", FieldType::Keyword), ("rank", FieldType::Integer)] {
        schema.fields.insert(
            f.into(),
            FieldSpec {
                kind,
                indexed: true,
            },
        );
    }
    if let Some(&bits) = args.bits.first() {
        ingest_overhead(args, ds, metric, bits, &payloads)?;
    }
    // One index kind (the first of --index) and, for a graph, one effort (the first --ef).
    let index_kind = args.index.first().copied().unwrap_or(IndexKind::Flat);
    let index = match index_kind {
        IndexKind::Flat => gyre::SegmentIndex::Flat,
        IndexKind::Graph => gyre::SegmentIndex::Graph,
    };
    let ef = match index_kind {
        IndexKind::Flat => 0,
        IndexKind::Graph => args.ef.first().copied().unwrap_or(0),
    };
    let mut rows = Vec::new();
    for &bits in &args.bits {
        for &rerank in &args.rerank {
            let name = format!("filtered-{bits}-{}", rerank.name());
            let cfg = gyre::CollectionConfig {
                metric,
                bits,
                variant: args.variant,
                rotation: args.rotation,
                seed: args.seed,
                rerank,
                segment_rows: n.max(1),
                index,
                ..gyre::CollectionConfig::new(d)
            };
            let t = Instant::now();
            let ingest_s = {
                let db = gyre::Database::open(&args.data_dir).map_err(|e| e.to_string())?;
                if db.collection(&name).is_ok() {
                    db.drop_collection(&name).map_err(|e| e.to_string())?;
                }
                let c = db
                    .create_collection_with_schema(&name, cfg, &schema)
                    .map_err(|e| e.to_string())?;
                let ti = Instant::now();
                for ((chunk, rows_), p) in ids
                    .chunks(1000)
                    .zip(ds.train.as_slice().chunks(1000 * d))
                    .zip(payloads.chunks(1000))
                {
                    c.upsert_with_payloads(chunk, rows_, p)
                        .map_err(|e| e.to_string())?;
                }
                let ingest = ti.elapsed().as_secs_f64();
                c.flush().map_err(|e| e.to_string())?;
                ingest
            };
            eprintln!(
                "{name}: ingested {n} points with payloads in {ingest_s:.2} s ({:.0} points/s)",
                n as f64 / ingest_s
            );
            let db = gyre::Database::open(&args.data_dir).map_err(|e| e.to_string())?;
            let c = db.collection(&name).map_err(|e| e.to_string())?;
            let build_s = t.elapsed().as_secs_f64();
            let info = c.info().map_err(|e| e.to_string())?;
            let staged = args.staged.first().copied().unwrap_or(0);
            for &oversample in &args.oversample {
                let params = SearchParams {
                    oversample,
                    rescore: rerank != RerankStorage::None,
                    staged: staged > 0 && bits == 4,
                    shortlist: staged.max(1),
                    target_recall: None,
                    ef,
                };
                for &threads in &args.threads {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .map_err(|e| e.to_string())?;
                    for &mode in &args.mode {
                        let runs: Vec<Case<'_>> = std::iter::once((1.0, "none", None, None, None))
                            .chain(cases.iter().map(|(s, kind, f, a, t)| {
                                (*s, *kind, Some(f), Some(a.as_slice()), Some(t.as_slice()))
                            }))
                            .collect();
                        for (s, kind, filter, allowed, truth) in runs {
                            let bar = ProgressBar::new((args.runs * nq) as u64);
                            bar.set_style(
                                ProgressStyle::with_template(
                                    "{msg:>30} [{bar:30}] {pos}/{len} queries",
                                )
                                .expect("valid template"),
                            );
                            bar.set_message(format!("{kind} {s} {mode:?}"));
                            let opts = gyre::SearchOptions {
                                params,
                                filter: filter.cloned(),
                                ..Default::default()
                            };
                            let queries = ds.test.as_slice();
                            let timing = time_queries(
                                &pool,
                                mode,
                                args.runs,
                                nq,
                                &bar,
                                &|| c.search_batch(queries, k, &opts),
                                &|q| c.search(ds.test.row(q), k, &opts),
                            )
                            .map_err(|e| e.to_string())?;
                            bar.finish_and_clear();
                            let (rec, rec1) = match (allowed, truth) {
                                (Some(a), Some(t)) => {
                                    filtered_recall(ds, distance, k, a, t, &timing.results)
                                }
                                _ => crate::recall::recall(ds, distance, k, &timing.results),
                            };
                            let lat = timing.latencies_ms.as_deref();
                            let row = Row {
                                dataset: dataset_name.into(),
                                algorithm: "gyre".into(),
                                params: format!(
                                    "bits={bits} rerank={} oversample={oversample}{}{} storage=disk",
                                    rerank.name(),
                                    if index_kind == IndexKind::Graph {
                                        format!(" index=graph ef={ef}")
                                    } else {
                                        String::new()
                                    },
                                    if params.staged {
                                        format!(" staged shortlist={staged}")
                                    } else {
                                        String::new()
                                    }
                                ),
                                k,
                                recall: rec,
                                recall_1_at_k: rec1,
                                qps: timing.qps,
                                p50_ms: lat.map(|l| crate::common::percentile(l, 0.50)),
                                p95_ms: lat.map(|l| crate::common::percentile(l, 0.95)),
                                p99_ms: lat.map(|l| crate::common::percentile(l, 0.99)),
                                build_s,
                                index_bytes: info.disk_bytes,
                                rss_delta_bytes: None,
                                threads,
                                mode: format!("{mode:?}").to_lowercase(),
                                cpu: cpu.clone(),
                                isa: gyre::kernels::fastscan::Kernel::detect().name().into(),
                                queries: nq,
                                runs: args.runs,
                                filter_selectivity: Some(s),
                                filter_kind: Some(kind.into()),
                                index: Some(index_kind.name().into()),
                                ef: (index_kind == IndexKind::Graph).then_some(ef),
                                resident_bytes_per_vector: None,
                            };
                            if args.json {
                                println!(
                                    "{}",
                                    serde_json::to_string(&row).expect("rows serialise")
                                );
                            } else {
                                println!(
                                    "{:<58} {}t {:<6} filter {:<7} {:<6} recall {:.4} {:>9.1} QPS",
                                    row.params, threads, row.mode, kind, s, row.recall, row.qps
                                );
                            }
                            rows.push(row);
                        }
                    }
                }
            }
        }
    }
    Ok(rows)
}
