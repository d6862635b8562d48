//! Payloads and filtered search through the collection API: every operator and nesting against
//! an oracle, filtered searches returning min(k, matching) results, replaced and deleted rows,
//! persistence across restart, seal and compaction, count, delete and scroll by filter, field
//! indexes declared before and after data, per-query filters in a batch, bad filters.

use std::collections::BTreeMap;

use gyre::collection::ScrollRequest;
use gyre::payload::{FieldSpec, FieldType};
use gyre::random::SeededRng;
use gyre::{
    Collection, CollectionConfig, Condition, Database, Filter, Payload, Range, Schema,
    SearchOptions, Value,
};

const D: usize = 32;

fn rows(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::for_data(seed);
    (0..n * D).map(|_| rng.gaussian() as f32).collect()
}

fn payload(id: u64) -> Payload {
    let langs = ["en", "de", "fr", "ja"];
    let mut p = Payload::new()
        .with("year", 1990 + (id % 35) as i64)
        .with("score", (id % 100) as f64 / 10.0)
        .with("public", id.is_multiple_of(2));
    if !id.is_multiple_of(11) {
        p = p.with("lang", langs[(id % 4) as usize]);
    }
    let tags: Vec<String> = (0..id % 3).map(|t| format!("t{}", (id + t) % 6)).collect();
    p.with("tags", tags)
}

/// The filters every test runs, with an oracle on the decoded payload.
type Oracle = fn(u64, &Payload) -> bool;

fn kw(p: &Payload, f: &str) -> Option<String> {
    match p.get(f) {
        Some(Value::Keyword(s)) => Some(s.clone()),
        _ => None,
    }
}
fn int(p: &Payload, f: &str) -> i64 {
    match p.get(f) {
        Some(Value::Integer(x)) => *x,
        _ => i64::MIN,
    }
}
fn tags(p: &Payload) -> Vec<String> {
    match p.get("tags") {
        Some(Value::Keywords(t)) => t.clone(),
        _ => Vec::new(),
    }
}

fn cases() -> Vec<(Filter, Oracle)> {
    vec![
        (
            Filter::new().must(Condition::keyword("lang", "de")),
            |_, p| kw(p, "lang").as_deref() == Some("de"),
        ),
        (
            Filter::new().must(Condition::integer("year", 2000)),
            |_, p| int(p, "year") == 2000,
        ),
        (
            Filter::new().must(Condition::boolean("public", false)),
            |_, p| p.get("public") == Some(&Value::Bool(false)),
        ),
        (
            Filter::new().must(Condition::any_keyword("tags", ["t1", "t4"])),
            |_, p| tags(p).iter().any(|t| t == "t1" || t == "t4"),
        ),
        (
            Filter::new().must(Condition::any_integer("year", [1991, 2011, 3000])),
            |_, p| [1991, 2011].contains(&int(p, "year")),
        ),
        (
            Filter::new().must(Condition::range("score", Range::new().gte(2.0).lt(2.5))),
            |_, p| matches!(p.get("score"), Some(Value::Float(x)) if (2.0..2.5).contains(x)),
        ),
        (
            Filter::new().must(Condition::has_id([3, 5, 7, 100_000])),
            |id, _| [3, 5, 7].contains(&id),
        ),
        (Filter::new().must(Condition::is_empty("lang")), |_, p| {
            p.get("lang").is_none()
        }),
        (
            Filter::new()
                .should(Condition::keyword("lang", "fr"))
                .should(Condition::range("year", Range::new().gt(2022.0))),
            |_, p| kw(p, "lang").as_deref() == Some("fr") || int(p, "year") > 2022,
        ),
        (
            Filter::new()
                .must(Condition::boolean("public", true))
                .must_not(Condition::keyword("lang", "en"))
                .must_not(Condition::is_empty("tags")),
            |_, p| {
                p.get("public") == Some(&Value::Bool(true))
                    && kw(p, "lang").as_deref() != Some("en")
                    && !tags(p).is_empty()
            },
        ),
        (
            Filter::new().must(Condition::Filter(
                Filter::new()
                    .should(Condition::Filter(
                        Filter::new()
                            .must(Condition::keyword("lang", "ja"))
                            .must(Condition::range("year", Range::new().lte(1995.0))),
                    ))
                    .should(Condition::has_id([42])),
            )),
            |id, p| id == 42 || (kw(p, "lang").as_deref() == Some("ja") && int(p, "year") <= 1995),
        ),
        (
            Filter::new().must(Condition::keyword("lang", "nowhere")),
            |_, _| false,
        ),
        // Every point passes.
        (
            Filter::new().must_not(Condition::keyword("lang", "nowhere")),
            |_, _| true,
        ),
    ]
}

fn config() -> CollectionConfig {
    let mut c = CollectionConfig::new(D);
    c.segment_rows = 700;
    c
}

/// The ids a filter should pass, from the model.
fn expected(model: &BTreeMap<u64, Payload>, oracle: Oracle) -> Vec<u64> {
    model
        .iter()
        .filter(|(id, p)| oracle(**id, p))
        .map(|(id, _)| *id)
        .collect()
}

/// Every case: count and scroll give exactly the oracle's ids; exact search ranks exactly
/// those; the approximate search returns min(k, matching) results, all matching, and finds
/// most of the exact filtered top-k.
fn check_all(c: &Collection, model: &BTreeMap<u64, Payload>, all_rows: &BTreeMap<u64, Vec<f32>>) {
    let queries = rows(8, 99);
    for (i, (f, oracle)) in cases().into_iter().enumerate() {
        let want = expected(model, oracle);
        assert_eq!(
            c.count(Some(&f)).unwrap(),
            want.len() as u64,
            "case {i} count"
        );
        // Scroll pages of 37 cover exactly the matching ids, in order.
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = c
                .scroll(&ScrollRequest {
                    after,
                    limit: 37,
                    filter: Some(f.clone()),
                    with_payload: true,
                    ..Default::default()
                })
                .unwrap();
            for p in &page.points {
                // No payload reads back as none; the model keeps it as an empty one.
                assert_eq!(
                    p.payload.clone().unwrap_or_default(),
                    model[&p.id],
                    "case {i}"
                );
            }
            got.extend(page.points.iter().map(|p| p.id));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(got, want, "case {i} scroll");
        let mut exact = SearchOptions::recommended(c.config());
        exact.exact = true;
        exact.filter = Some(f.clone());
        let mut approx = SearchOptions::recommended(c.config());
        approx.filter = Some(f.clone());
        let (mut found, mut total) = (0, 0);
        for q in queries.chunks_exact(D) {
            let k = 10;
            let truth = c.search(q, k, &exact).unwrap();
            assert_eq!(truth.len(), k.min(want.len()), "case {i}");
            assert!(truth.iter().all(|n| want.binary_search(&n.id).is_ok()));
            // The oracle's exact ranking by L2-normalised dot (cosine).
            let mut scored: Vec<(f32, u64)> = want
                .iter()
                .map(|id| {
                    let v = &all_rows[id];
                    let dot: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
                    let n: f32 = v.iter().map(|a| a * a).sum::<f32>().sqrt();
                    (-(dot / n), *id)
                })
                .collect();
            scored.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let top: Vec<u64> = scored.iter().take(k).map(|s| s.1).collect();
            let t: Vec<u64> = truth.iter().map(|n| n.id).collect();
            assert_eq!(t, top, "case {i}: exact filtered search");
            let hits = c.search(q, k, &approx).unwrap();
            assert_eq!(hits.len(), k.min(want.len()), "case {i}");
            assert!(hits.iter().all(|n| want.binary_search(&n.id).is_ok()));
            found += hits.iter().filter(|h| top.contains(&h.id)).count();
            total += top.len();
        }
        if total > 0 {
            assert!(
                found * 100 >= total * 85,
                "case {i}: filtered recall {found}/{total}"
            );
        }
    }
}

#[test]
fn filters_agree_with_an_oracle_across_memtable_segments_restart_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    let mut vectors = BTreeMap::new();
    let mut schema = Schema::default();
    // Two fields indexed from the start; the others scanned until indexed below.
    for (f, kind) in [("lang", FieldType::Keyword), ("year", FieldType::Integer)] {
        schema.fields.insert(
            f.into(),
            FieldSpec {
                kind,
                indexed: true,
            },
        );
    }
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db
            .create_collection_with_schema("p", config(), &schema)
            .unwrap();
        let n = 2_000u64;
        let ids: Vec<u64> = (0..n).collect();
        let data = rows(n as usize, 1);
        let payloads: Vec<Payload> = ids.iter().map(|&id| payload(id)).collect();
        for ((id, p), v) in ids.iter().zip(&payloads).zip(data.chunks_exact(D)) {
            model.insert(*id, p.clone());
            vectors.insert(*id, v.to_vec());
        }
        c.upsert_with_payloads(&ids, &data, &payloads).unwrap();
        // Memtable and segments (700-row seals) together.
        check_all(&c, &model, &vectors);
        // Replace some payloads, clear others (upsert without payload), delete some.
        let re: Vec<u64> = (0..n).step_by(7).collect();
        let re_rows = rows(re.len(), 2);
        let re_payloads: Vec<Payload> = re
            .iter()
            .map(|&id| {
                if id % 2 == 0 {
                    payload(id + 1)
                } else {
                    Payload::new()
                }
            })
            .collect();
        c.upsert_with_payloads(&re, &re_rows, &re_payloads).unwrap();
        for ((id, p), v) in re.iter().zip(&re_payloads).zip(re_rows.chunks_exact(D)) {
            model.insert(*id, p.clone());
            vectors.insert(*id, v.to_vec());
        }
        let gone: Vec<u64> = (5..n).step_by(13).collect();
        c.delete(&gone).unwrap();
        for id in &gone {
            model.remove(id);
            vectors.remove(id);
        }
        // A payload-less point passes only `is_empty` and `must_not` conditions.
        assert_eq!(c.get(&[7]).unwrap()[0].as_ref().unwrap().payload, None);
        check_all(&c, &model, &vectors);
        c.flush().unwrap();
        check_all(&c, &model, &vectors);
    }
    // Restart: segments reopened (indexes rebuilt), WAL replayed.
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("p").unwrap();
    check_all(&c, &model, &vectors);
    // Unindexed until declared: the stats say so; after declaring, they do not.
    let f = Filter::new().must(Condition::any_keyword("tags", ["t2"]));
    let mut o = SearchOptions::recommended(c.config());
    o.filter = Some(f);
    let q = rows(1, 5);
    let before = c.search_with_stats(&q, 10, &o).unwrap();
    assert!(before.filter.unindexed_fields.contains("tags"));
    c.create_field_index("tags", FieldType::Keyword).unwrap();
    c.create_field_index("score", FieldType::Float).unwrap();
    c.create_field_index("public", FieldType::Bool).unwrap();
    let after = c.search_with_stats(&q, 10, &o).unwrap();
    assert_eq!(after.hits, before.hits);
    // Only the memtable (no index there) may still scan.
    let info = c.info().unwrap();
    if info.memtable_rows == 0 {
        assert!(
            after.filter.unindexed_fields.is_empty(),
            "{:?}",
            after.filter
        );
    }
    assert!(
        c.create_field_index("year", FieldType::Keyword).is_err(),
        "a field keeps its type"
    );
    c.compact().unwrap();
    check_all(&c, &model, &vectors);
    drop((c, db));
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("p").unwrap();
    assert!(c.schema().unwrap().get("tags").unwrap().indexed);
    check_all(&c, &model, &vectors);
    // Delete by filter: exactly the matching points go.
    let f = Filter::new().must(Condition::keyword("lang", "de"));
    let want = expected(&model, |_, p| kw(p, "lang").as_deref() == Some("de"));
    assert_eq!(c.delete_by_filter(&f).unwrap(), want.len());
    for id in want {
        model.remove(&id);
        vectors.remove(&id);
    }
    assert_eq!(c.count(Some(&f)).unwrap(), 0);
    assert_eq!(c.len(), model.len());
    check_all(&c, &model, &vectors);
    assert!(c.delete_by_filter(&Filter::new()).is_err(), "empty filter");
}

#[test]
fn per_query_filters_in_a_batch_equal_single_searches() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("p", config()).unwrap();
    let ids: Vec<u64> = (0..1500).collect();
    let payloads: Vec<Payload> = ids.iter().map(|&id| payload(id)).collect();
    c.upsert_with_payloads(&ids, &rows(1500, 3), &payloads)
        .unwrap();
    let queries = rows(6, 4);
    let filters: Vec<Option<Filter>> = (0..6)
        .map(|i| match i % 3 {
            0 => None,
            1 => Some(Filter::new().must(Condition::keyword("lang", "en"))),
            _ => Some(Filter::new().must(Condition::range("year", Range::new().lt(1993.0)))),
        })
        .collect();
    let opts = SearchOptions::recommended(c.config());
    let batch = c
        .search_batch_filtered(&queries, 10, &opts, &filters)
        .unwrap();
    for (i, q) in queries.chunks_exact(D).enumerate() {
        let mut o = opts.clone();
        o.filter = filters[i].clone();
        assert_eq!(batch[i].hits, c.search(q, 10, &o).unwrap(), "query {i}");
    }
    assert!(
        c.search_batch_filtered(&queries, 10, &opts, &filters[..2])
            .is_err()
    );
}

#[test]
fn bad_payloads_and_filters_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("p", config()).unwrap();
    let v = rows(2, 1);
    c.upsert_with_payloads(&[1, 2], &v, &[payload(1), payload(2)])
        .unwrap();
    // A field keeps its first type; nothing of a refused batch is written.
    let e = c
        .upsert_with_payloads(&[3], &v[..D], &[Payload::new().with("year", "x")])
        .unwrap_err();
    assert!(e.to_string().contains("\"year\""), "{e}");
    assert_eq!(c.len(), 2);
    let e = c
        .upsert_with_payloads(&[3, 4], &v, &[payload(3)])
        .unwrap_err();
    assert!(e.to_string().contains("payloads"), "{e}");
    let e = c
        .upsert_with_payloads(&[3], &v[..D], &[Payload::new().with("f", f64::INFINITY)])
        .unwrap_err();
    assert!(e.to_string().contains("\"f\""), "{e}");
    let mut o = SearchOptions::recommended(c.config());
    for (f, want) in [
        (
            Filter::new().must(Condition::keyword("nope", "x")),
            "\"nope\"",
        ),
        (
            Filter::new().must(Condition::keyword("year", "x")),
            "\"year\"",
        ),
        (
            Filter::new().must(Condition::range("lang", Range::new().gt(0.0))),
            "\"lang\"",
        ),
    ] {
        o.filter = Some(f.clone());
        let e = c.search(&v[..D], 3, &o).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
        assert_eq!(e.kind(), gyre::ErrorKind::InvalidInput);
        assert!(c.count(Some(&f)).is_err());
    }
    // A schema learned from data survives a restart (the file is written before the WAL).
    drop((c, db));
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("p").unwrap();
    assert_eq!(
        c.schema().unwrap().get("year").unwrap().kind,
        FieldType::Integer
    );
    assert!(
        c.upsert_with_payloads(&[3], &v[..D], &[Payload::new().with("year", "x")])
            .is_err()
    );
}

/// A memtable of several full 4096-row chunks (indexed through their own field indexes, built
/// on first use) and a filling one (filtered row by row) answers as the oracle says; and the
/// same after sealing.
#[test]
fn filters_over_full_memtable_chunks_use_their_indexes_and_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::default();
    for (f, kind) in [
        ("lang", FieldType::Keyword),
        ("year", FieldType::Integer),
        ("public", FieldType::Bool),
        ("score", FieldType::Float),
        ("tags", FieldType::Keyword),
    ] {
        schema.fields.insert(
            f.into(),
            FieldSpec {
                kind,
                indexed: true,
            },
        );
    }
    let db = Database::open(dir.path()).unwrap();
    let mut cfg = config();
    cfg.segment_rows = 50_000;
    let c = db.create_collection_with_schema("p", cfg, &schema).unwrap();
    let n = 9_000u64;
    let ids: Vec<u64> = (0..n).collect();
    let data = rows(n as usize, 8);
    let payloads: Vec<Payload> = ids.iter().map(|&id| payload(id)).collect();
    for ((i, v), p) in ids
        .chunks(1000)
        .zip(data.chunks(1000 * D))
        .zip(payloads.chunks(1000))
    {
        c.upsert_with_payloads(i, v, p).unwrap();
    }
    // Replace a few points of a full chunk (their old rows die there; the new ones land in
    // the filling chunk) and delete some.
    let re: Vec<u64> = (0..50).map(|i| i * 61).collect();
    let re_rows = rows(re.len(), 9);
    let re_payloads: Vec<Payload> = re.iter().map(|&id| payload(id + 3)).collect();
    c.upsert_with_payloads(&re, &re_rows, &re_payloads).unwrap();
    c.delete(&[1, 2, 3, 4100]).unwrap();
    let mut model = BTreeMap::new();
    let mut vectors = BTreeMap::new();
    for ((id, p), v) in ids.iter().zip(&payloads).zip(data.chunks_exact(D)) {
        model.insert(*id, p.clone());
        vectors.insert(*id, v.to_vec());
    }
    for ((id, p), v) in re.iter().zip(&re_payloads).zip(re_rows.chunks_exact(D)) {
        model.insert(*id, p.clone());
        vectors.insert(*id, v.to_vec());
    }
    for id in [1, 2, 3, 4100] {
        model.remove(&id);
        vectors.remove(&id);
    }
    assert_eq!(c.info().unwrap().segments.len(), 0, "all in the memtable");
    check_all(&c, &model, &vectors);
    // The full chunks answered through their indexes: only the filling chunk's live rows
    // (9,050 rows written, 2 × 4,096 in full chunks) had their payloads read.
    let mut o = SearchOptions::recommended(c.config());
    o.filter = Some(Filter::new().must(Condition::keyword("lang", "de")));
    let out = c.search_with_stats(&rows(1, 10), 10, &o).unwrap();
    assert!(
        out.filter.payloads_scanned <= 9_050 - 2 * 4_096,
        "{:?}",
        out.filter
    );
    assert_eq!(
        out.filter.matched_rows,
        expected(&model, |_, p| kw(p, "lang").as_deref() == Some("de")).len() as u64
    );
    c.flush().unwrap();
    check_all(&c, &model, &vectors);
}
