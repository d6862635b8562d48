//! Payloads and filters over gRPC against the real `gyre serve`: upsert with payloads,
//! filtered Search and SearchBatch (one filter, or one per query) with payloads and stats,
//! Count, Scroll and DeleteByFilter with filters, Get with payloads, declared and added field
//! indexes, persistence across a restart, and bad filters with their exact status codes.

mod common;

use std::collections::HashMap;

use gyre_proto::v1 as pb;
use pb::condition::Condition as C;
use tonic::Code;

use common::{Server, create, rows};

fn kw(s: &str) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::Keyword(s.into())),
    }
}
fn int(x: i64) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::Integer(x)),
    }
}

fn payload(id: u64) -> pb::Payload {
    let langs = ["en", "de", "fr", "ja"];
    let mut fields = HashMap::new();
    fields.insert("lang".to_string(), kw(langs[(id % 4) as usize]));
    fields.insert("year".to_string(), int(2000 + (id % 20) as i64));
    fields.insert(
        "tags".to_string(),
        pb::Value {
            kind: Some(pb::value::Kind::Keywords(pb::KeywordList {
                values: vec![format!("t{}", id % 5)],
            })),
        },
    );
    pb::Payload { fields }
}

fn match_kw(field: &str, v: &str) -> pb::Condition {
    pb::Condition {
        field: field.into(),
        condition: Some(C::Match(pb::Match {
            value: Some(pb::r#match::Value::Keyword(v.into())),
        })),
    }
}

fn range(field: &str, gte: f64, lt: f64) -> pb::Condition {
    pb::Condition {
        field: field.into(),
        condition: Some(C::Range(pb::Range {
            gte: Some(gte),
            lt: Some(lt),
            ..Default::default()
        })),
    }
}

fn must(c: Vec<pb::Condition>) -> pb::Filter {
    pb::Filter {
        must: c,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_and_filters_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.clients().await;
    let d = 16usize;
    let mut req = create("docs", d as u32);
    req.segment_rows = 400;
    req.payload_schema = vec![pb::FieldSchema {
        field: "lang".into(),
        r#type: pb::FieldType::Keyword.into(),
        indexed: true,
    }];
    let info = c.cols.create(req).await.unwrap().into_inner();
    assert_eq!(info.payload_schema.len(), 1);
    let n = 1000u64;
    let ids: Vec<u64> = (0..n).collect();
    let data = rows(n as usize, d, 7);
    c.points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            ids: ids.clone(),
            vectors: data.clone(),
            payloads: ids.iter().map(|&i| payload(i)).collect(),
            wait: true,
        })
        .await
        .unwrap();
    c.admin
        .flush(pb::FlushRequest {
            collection: "docs".into(),
        })
        .await
        .unwrap();
    let de = must(vec![match_kw("lang", "de")]);
    let count = c
        .points
        .count(pb::CountRequest {
            collection: "docs".into(),
            filter: Some(de.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 250);
    // A filtered search: k results, all matching, payloads returned; the index answered.
    let q = data[..d].to_vec();
    let r = c
        .search
        .search(pb::SearchRequest {
            collection: "docs".into(),
            vector: q.clone(),
            k: 10,
            filter: Some(de.clone()),
            with_payload: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 10);
    for p in &r.results {
        assert_eq!(p.id % 4, 1);
        assert_eq!(p.payload["lang"], kw("de"));
    }
    let stats = r.filter_stats.unwrap();
    assert!(stats.unindexed_fields.is_empty(), "{stats:?}");
    assert_eq!(stats.matched_points, 250);
    // An unindexed field works and says so; after CreateFieldIndex it does not.
    let years = must(vec![range("year", 2003.0, 2005.0)]);
    let search_years = pb::SearchRequest {
        collection: "docs".into(),
        vector: q.clone(),
        k: 1000,
        filter: Some(years.clone()),
        ..Default::default()
    };
    let r = c
        .search
        .search(search_years.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 100, "min(k, matching)");
    assert_eq!(r.filter_stats.unwrap().unindexed_fields, ["year"]);
    c.admin
        .create_field_index(pb::CreateFieldIndexRequest {
            collection: "docs".into(),
            field: "year".into(),
            r#type: pb::FieldType::Integer.into(),
        })
        .await
        .unwrap();
    let r2 = c.search.search(search_years).await.unwrap().into_inner();
    assert!(r2.filter_stats.unwrap().unindexed_fields.is_empty());
    assert_eq!(
        r.results.iter().map(|p| p.id).collect::<Vec<_>>(),
        r2.results.iter().map(|p| p.id).collect::<Vec<_>>()
    );
    // A batch with a filter per query (an empty filter passes everything).
    let b = c
        .search
        .search_batch(pb::SearchBatchRequest {
            collection: "docs".into(),
            vectors: data[..3 * d].to_vec(),
            k: 5,
            filters: vec![de.clone(), pb::Filter::default(), years.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(b.results[0].results.iter().all(|p| p.id % 4 == 1));
    assert_eq!(
        b.results[1].results[0].id, 1,
        "query 1 is point 1's own vector"
    );
    assert!(
        b.results[2]
            .results
            .iter()
            .all(|p| (3..5).contains(&(p.id % 20)))
    );
    // Scroll the German points in pages of 64: every one, once, in id order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = c
            .points
            .scroll(pb::ScrollRequest {
                collection: "docs".into(),
                after,
                limit: 64,
                filter: Some(de.clone()),
                with_payload: true,
                with_vectors: true,
            })
            .await
            .unwrap()
            .into_inner();
        for p in &page.points {
            assert_eq!(p.vector.len(), d);
            assert_eq!(p.payload["lang"], kw("de"));
        }
        seen.extend(page.points.iter().map(|p| p.id));
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(seen, (0..n).filter(|i| i % 4 == 1).collect::<Vec<_>>());
    // Replace a payload; Get returns the new one.
    c.points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            ids: vec![1],
            vectors: data[d..2 * d].to_vec(),
            payloads: vec![payload(2)],
            wait: true,
        })
        .await
        .unwrap();
    let got = c
        .points
        .get(pb::GetPointsRequest {
            collection: "docs".into(),
            ids: vec![1],
            with_payload: true,
            with_vectors: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.points[0].payload["lang"], kw("fr"));
    // Delete by filter.
    let deleted = c
        .points
        .delete_by_filter(pb::DeleteByFilterRequest {
            collection: "docs".into(),
            filter: Some(de.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, 249);
    // Bad filters and payloads: INVALID_ARGUMENT naming the field.
    let bad: Vec<(pb::Filter, &str)> = vec![
        (must(vec![match_kw("nope", "x")]), "nope"),
        (must(vec![match_kw("year", "x")]), "year"),
        (must(vec![range("lang", 0.0, 1.0)]), "lang"),
        (
            must(vec![pb::Condition {
                field: "lang".into(),
                condition: None,
            }]),
            "filter.must",
        ),
        (
            must(vec![pb::Condition {
                field: "year".into(),
                condition: Some(C::Range(pb::Range {
                    gt: Some(f64::NAN),
                    ..Default::default()
                })),
            }]),
            "NaN",
        ),
    ];
    for (f, want) in bad {
        let e = c
            .points
            .count(pb::CountRequest {
                collection: "docs".into(),
                filter: Some(f.clone()),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(want), "{}", e.message());
        let e = c
            .search
            .search(pb::SearchRequest {
                collection: "docs".into(),
                vector: q.clone(),
                k: 3,
                filter: Some(f),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    let mut wrong = payload(5);
    wrong.fields.insert("year".into(), kw("soon"));
    let e = c
        .points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            ids: vec![5],
            vectors: data[..d].to_vec(),
            payloads: vec![wrong],
            wait: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("year"), "{}", e.message());
    let e = c
        .points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            ids: vec![5, 6],
            vectors: data[..2 * d].to_vec(),
            payloads: vec![payload(5)],
            wait: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .points
        .delete_by_filter(pb::DeleteByFilterRequest {
            collection: "docs".into(),
            filter: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .admin
        .create_field_index(pb::CreateFieldIndexRequest {
            collection: "docs".into(),
            field: "year".into(),
            r#type: pb::FieldType::Keyword.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // A stream mixing messages without and with payloads keeps each point's own.
    let msgs = vec![
        pb::UpsertRequest {
            collection: "docs".into(),
            ids: vec![5000, 5001],
            vectors: data[..2 * d].to_vec(),
            ..Default::default()
        },
        pb::UpsertRequest {
            ids: vec![5002, 5003],
            vectors: data[..2 * d].to_vec(),
            payloads: vec![payload(1), payload(1)],
            ..Default::default()
        },
    ];
    c.points
        .upsert_stream(tokio_stream::iter(msgs))
        .await
        .unwrap();
    let got = c
        .points
        .get(pb::GetPointsRequest {
            collection: "docs".into(),
            ids: vec![5000, 5001, 5002, 5003],
            with_payload: true,
            with_vectors: false,
        })
        .await
        .unwrap()
        .into_inner();
    let langs: Vec<Option<&pb::Value>> = got.points.iter().map(|p| p.payload.get("lang")).collect();
    let de = kw("de");
    assert_eq!(langs, [None, None, Some(&de), Some(&de)]);
    // Restart: payloads, the schema and its indexes come back.
    assert!(server.stop().success());
    let server = Server::start(dir.path(), &[]);
    let mut c = server.clients().await;
    let info = c
        .cols
        .get(pb::GetCollectionRequest {
            name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let indexed: Vec<&str> = info
        .payload_schema
        .iter()
        .filter(|f| f.indexed)
        .map(|f| f.field.as_str())
        .collect();
    assert_eq!(indexed, ["lang", "year"]);
    let fr = c
        .points
        .count(pb::CountRequest {
            collection: "docs".into(),
            filter: Some(must(vec![match_kw("lang", "fr")])),
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(fr, 251, "250 French points and point 1, now French");
    let de = c
        .points
        .count(pb::CountRequest {
            collection: "docs".into(),
            filter: Some(must(vec![match_kw("lang", "de")])),
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(de, 2, "the streamed points 5002 and 5003");
}
