//! The tantivy index against the in-memory model: the same documents, the
//! same queries (both syntaxes), the same matching records, totals and
//! `search_after` pages; and a reopened index resumes at its last commit.
#![cfg(not(madsim))]

use std::sync::Arc;

use bytes::Bytes;
use chronik_core::search::mem::MemIndex;
use chronik_core::search::query::{parse_es_query, parse_query_string};
use chronik_core::search::{Doc, FieldRef, PartitionIndex, Query, SortField, SortKey, SortOrder};
use chronik_server::search::TantivyBackend;
use chronik_core::search::SearchBackend;

const LEVELS: &[&str] = &["info", "warn", "error", "debug"];
const WORDS: &[&str] = &["disk", "full", "network", "timeout", "user", "login", "failed", "ok", "retry", "Chronik"];

/// A small deterministic generator (no OS randomness in tests).
struct Gen(u64);
impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }
}

fn docs(n: i64, partition: i32) -> Vec<Doc> {
    let mut g = Gen(7 + partition as u64);
    (0..n)
        .map(|offset| {
            let msg: Vec<&str> = (0..(1 + g.next() % 5)).map(|_| g.pick(WORDS)).collect();
            let value = match offset % 7 {
                // not JSON
                // not JSON; with a token too long to index between two words
                0 => format!("plain text {} record {offset} alpha {} beta", msg.join(" "), "z".repeat(40 + (offset % 3) as usize)),
                // a JSON array: no JSON fields
                1 => format!("[{{\"level\": \"error\", \"msg\": \"{}\"}}, {offset}]", msg.join(" ")),
                _ => serde_json::json!({
                    "level": g.pick(LEVELS),
                    "msg": msg.join(" "),
                    "user": { "id": g.next() % 20, "name": g.pick(WORDS) },
                    "latency": (g.next() % 1000) as f64 / 10.0,
                    "ok": g.next() % 2 == 0,
                    "tags": [g.pick(WORDS), g.pick(WORDS)],
                })
                .to_string(),
            };
            Doc {
                partition,
                offset,
                timestamp: 1_700_000_000_000 + (offset / 3) * 1000, // ties on purpose
                key: if offset % 5 == 0 { None } else { Some(Bytes::from(format!("key-{} {}", offset % 13, g.pick(WORDS)))) },
                value: if offset % 11 == 10 { None } else { Some(Bytes::from(value)) },
                headers: match offset % 9 {
                    0 => vec![("trace".into(), Some(Bytes::from(format!("t-{}", offset % 4)))), ("trace".into(), Some(Bytes::from_static(b"second u-1")))],
                    3 | 6 => vec![("trace".into(), Some(Bytes::from(format!("t-{}", offset % 4))))],
                    _ => vec![],
                },
            }
        })
        .collect()
}

fn queries() -> Vec<Query> {
    let strings = [
        "*", "error", "level:error", "level:error AND user.id:3", "\"disk full\"", "msg:\"disk full\"", "Chronik", "chronik",
        "user.id:[5 TO 10]", "latency:{50 TO *]", "offset:[100 TO 150}", "timestamp:[1700000010000 TO 1700000020000]",
        "-level:info +msg:disk", "tags:retry", "ok:true", "headers.trace:t", "headers.trace:\"t 2\"", "user.name:*", "key:*",
        "key-7", "key:\"key 7\"", "plain AND record", "level:IN [warn debug]", "(network OR timeout) AND NOT level:error", "user:*",
        "12", "offset:42", "user.id:7", "partition:0", "nothing-matches-this", "headers.trace:second", "headers.trace:u AND headers.trace:t",
        "offset:nan", "ΣΊΣΥΦΟΣ", "\"alpha beta\"", "\"alpha zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz beta\"", "alpha-beta",
    ];
    let mut out: Vec<Query> = strings.iter().map(|s| parse_query_string(s, &FieldRef::Any, false).unwrap_or_else(|e| panic!("{s}: {e:?}"))).collect();
    out.push(parse_query_string("error disk", &FieldRef::Any, true).unwrap());
    let dsl = [
        r#"{"match":{"msg":"disk network"}}"#,
        r#"{"match":{"msg":{"query":"disk network","operator":"and"}}}"#,
        r#"{"match_phrase":{"msg":"user login"}}"#,
        r#"{"term":{"level":"warn"}}"#,
        r#"{"term":{"level":"Warn"}}"#,
        r#"{"terms":{"user.name":["disk","ok"]}}"#,
        r#"{"range":{"latency":{"gte":10.5,"lt":40}}}"#,
        r#"{"range":{"timestamp":{"gt":1700000050000}}}"#,
        r#"{"exists":{"field":"headers.trace"}}"#,
        r#"{"exists":{"field":"value"}}"#,
        r#"{"bool":{"must":[{"match":{"msg":"disk"}}],"should":[{"term":{"level":"error"}}],"must_not":[{"term":{"ok":"true"}}]}}"#,
        r#"{"bool":{"should":[{"term":{"level":"error"}},{"range":{"user.id":{"lte":2}}}],"minimum_should_match":2}}"#,
        r#"{"bool":{"must_not":[{"exists":{"field":"key"}}]}}"#,
        r#"{"bool":{"filter":{"range":{"offset":{"gte":10,"lte":90}}},"should":[{"match":{"value":"retry"}}],"minimum_should_match":1}}"#,
        r#"{"query_string":{"query":"timeout retry","default_operator":"AND"}}"#,
        r#"{"match_none":{}}"#,
    ];
    out.extend(dsl.iter().map(|d| parse_es_query(&serde_json::from_str(d).unwrap()).unwrap()));
    out
}

fn offsets(index: &dyn PartitionIndex, q: &Query) -> (u64, Vec<i64>) {
    let a = index.search(q, 100_000, &[SortField::Offset(SortOrder::Asc)], None).unwrap();
    (a.total, a.hits.iter().map(|h| h.offset).collect())
}

#[test]
fn tantivy_matches_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let backend = TantivyBackend::new(dir.path().to_path_buf());
    let tantivy = backend.open("t-0").unwrap();
    let model = MemIndex::default();
    let all = docs(600, 0);
    for chunk in all.chunks(150) {
        tantivy.add(chunk).unwrap();
        model.add(chunk).unwrap();
    }
    tantivy.commit(600).unwrap();
    model.commit(600).unwrap();
    let mut sizes = Vec::new();
    for q in queries() {
        let (mt, mo) = offsets(&model, &q);
        let (tt, to) = offsets(&*tantivy, &q);
        assert_eq!((tt, &to), (mt, &mo), "query {q:?}: tantivy found {} records, the model {}", to.len(), mo.len());
        sizes.push(mo.len());
    }
    // A dropped long token leaves a gap that a phrase cannot span, in both.
    let total = |text: &str| offsets(&*tantivy, &parse_query_string(text, &FieldRef::Any, false).unwrap()).1.len();
    let plain = all.iter().filter(|d| d.offset % 7 == 0 && d.value.is_some()).count();
    assert!(plain > 0);
    assert_eq!(total("\"alpha beta\""), 0);
    assert_eq!(total(&format!("\"alpha {} beta\"", "q".repeat(50))), plain);
    assert_eq!(total("\"record alpha\""), 0, "the offset lies between them");
    // The queries discriminate: most match some records, few match all.
    let some = sizes.iter().filter(|&&n| n > 0 && n < 600).count();
    assert!(some * 10 >= sizes.len() * 7, "too many queries match nothing or everything: {sizes:?}");
    // Hits carry the records exactly as they were produced.
    let every = tantivy.search(&Query::All, 1000, &[SortField::Offset(SortOrder::Asc)], None).unwrap();
    assert_eq!(every.hits.len(), 600);
    for h in &every.hits {
        assert_eq!(h.doc.as_ref(), Some(&all[h.offset as usize]), "the stored copy of offset {}", h.offset);
    }
    // Retention and truncation.
    tantivy.delete_below(100).unwrap();
    model.delete_below(100).unwrap();
    tantivy.truncate_from(550).unwrap();
    model.truncate_from(550).unwrap();
    tantivy.commit(550).unwrap();
    model.commit(550).unwrap();
    for q in queries() {
        assert_eq!(offsets(&*tantivy, &q), offsets(&model, &q), "after deletions, query {q:?}");
    }
}

#[test]
fn pages_with_search_after_cover_every_hit_once() {
    let dir = tempfile::tempdir().unwrap();
    let backend = TantivyBackend::new(dir.path().to_path_buf());
    let index = backend.open("t-1").unwrap();
    let all = docs(400, 1);
    index.add(&all).unwrap();
    index.commit(400).unwrap();
    let q = parse_query_string("level:error OR msg:disk", &FieldRef::Any, false).unwrap();
    let expected = offsets(&*index, &q).1;
    for sort in [vec![SortField::Timestamp(SortOrder::Desc)], vec![SortField::Offset(SortOrder::Desc)], vec![SortField::Score(SortOrder::Desc)], vec![SortField::Timestamp(SortOrder::Asc), SortField::Offset(SortOrder::Desc)]] {
        let mut seen = Vec::new();
        let mut after: Option<SortKey> = None;
        for _ in 0..100 {
            let page = index.search(&q, 7, &sort, after.as_ref()).unwrap();
            if page.hits.is_empty() {
                break;
            }
            for h in &page.hits {
                seen.push(h.offset);
            }
            let last = page.hits.last().unwrap();
            after = Some(SortKey::of(&sort, 1, last.offset, last.timestamp, last.score));
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, expected, "sort {sort:?}: pages must cover every hit exactly once");
    }
}

#[test]
fn a_reopened_index_resumes_at_its_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let all = docs(100, 2);
    {
        let backend = TantivyBackend::new(dir.path().to_path_buf());
        let index = backend.open("t-2").unwrap();
        index.add(&all[..60]).unwrap();
        index.commit(60).unwrap();
        index.add(&all[60..]).unwrap(); // never committed: as if the process died
    }
    let backend = Arc::new(TantivyBackend::new(dir.path().to_path_buf()));
    assert_eq!(backend.list().unwrap(), vec!["t-2".to_string()]);
    let index = backend.open("t-2").unwrap();
    assert_eq!(index.next_offset(), 60);
    assert_eq!(offsets(&*index, &Query::All), (60, (0..60).collect::<Vec<_>>()));
    index.add(&all[60..]).unwrap();
    index.commit(100).unwrap();
    assert_eq!(offsets(&*index, &Query::All).1, (0..100).collect::<Vec<_>>(), "no document missing or twice");
    backend.remove("t-2").unwrap();
    assert!(backend.list().unwrap().is_empty());
}
