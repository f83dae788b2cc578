//! The tantivy implementation of the search seam: one on-disk index per
//! partition under `<data-dir>/search/`, derived from the log (it can always
//! be rebuilt from it: delete the directory). Outside the simulation only:
//! tantivy's writer runs threads of its own.
//!
//! Schema: `offset`, `timestamp`, `partition` (i64, indexed and fast), `key`
//! and `value` (text, default analyzer, positions), `json` (the value's JSON
//! object: strings analyzed, numbers as f64, booleans as text; fast, for
//! ranges), `headers` (JSON, analyzed), `fields` (raw names of the fields
//! present, for `exists`). Records themselves are not stored: hits are read
//! back from the log.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chronik_core::search::{Doc, FieldRef, IndexAnswer, IndexHit, PartitionIndex, Query, SearchBackend, SortField, SortKey, SortOrder};
use serde_json::Value;
use tantivy::collector::sort_key::SortByErasedType;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, ConstScoreQuery, EmptyQuery, Occur, PhraseQuery, Query as TQuery, RangeQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, JsonObjectOptions, NumericOptions, OwnedValue, Schema, TextFieldIndexing, TextOptions, STORED, STRING,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Searcher, TantivyDocument, Term};

/// Heap of each partition's index writer (tantivy's minimum is 15 MB).
const WRITER_HEAP_BYTES: usize = 20_000_000;

#[derive(Clone, Copy)]
struct Fields {
    offset: Field,
    timestamp: Field,
    partition: Field,
    key: Field,
    value: Field,
    json: Field,
    headers: Field,
    fields: Field,
    /// The record as it was produced (stored, not indexed): hits are served
    /// from here instead of decompressing the record's batch from the log.
    raw_key: Field,
    raw_value: Field,
    raw_headers: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let num = NumericOptions::default().set_indexed().set_fast();
    let text_indexing = TextFieldIndexing::default().set_tokenizer("default").set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let text = TextOptions::default().set_indexing_options(text_indexing.clone());
    let json = JsonObjectOptions::default().set_indexing_options(text_indexing.clone()).set_expand_dots_enabled().set_fast("raw");
    let headers = JsonObjectOptions::default().set_indexing_options(text_indexing).set_expand_dots_enabled();
    let f = Fields {
        offset: b.add_i64_field("offset", num.clone()),
        timestamp: b.add_i64_field("timestamp", num.clone()),
        partition: b.add_i64_field("partition", num),
        key: b.add_text_field("key", text.clone()),
        value: b.add_text_field("value", text),
        json: b.add_json_field("json", json),
        headers: b.add_json_field("headers", headers),
        fields: b.add_text_field("fields", STRING),
        raw_key: b.add_bytes_field("raw_key", STORED),
        raw_value: b.add_bytes_field("raw_value", STORED),
        raw_headers: b.add_text_field("raw_headers", STORED),
    };
    (b.build(), f)
}

/// The JSON object as indexed: numbers as f64, booleans as text, nulls dropped.
fn indexable(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(Value::String(b.to_string())),
        Value::Number(n) => n.as_f64().and_then(serde_json::Number::from_f64).map(Value::Number),
        Value::String(_) => Some(v.clone()),
        Value::Array(items) => Some(Value::Array(items.iter().filter_map(indexable).collect())),
        Value::Object(m) => Some(Value::Object(m.iter().filter_map(|(k, v)| indexable(v).map(|v| (k.clone(), v))).collect())),
    }
}

pub struct TantivyIndex {
    f: Fields,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    next_offset: Mutex<i64>,
}

impl TantivyIndex {
    fn open(dir: &Path) -> Result<TantivyIndex, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (schema, f) = schema();
        let mmap = tantivy::directory::MmapDirectory::open(dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
        let index = Index::open_or_create(mmap, schema).map_err(|e| format!("cannot open the index in {}: {e}", dir.display()))?;
        let next = match index.load_metas().map_err(|e| e.to_string())?.payload {
            Some(p) => serde_json::from_str::<Value>(&p).ok().and_then(|v| v.get("next_offset").and_then(Value::as_i64)).unwrap_or(0),
            None => 0,
        };
        // One indexing and one merging thread per partition.
        let options = tantivy::indexer::IndexWriterOptions::builder().memory_budget_per_thread(WRITER_HEAP_BYTES).num_worker_threads(1).num_merge_threads(1).build();
        let writer = index.writer_with_options(options).map_err(|e| format!("cannot open the index writer: {e}"))?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(|e| e.to_string())?;
        Ok(TantivyIndex { f, writer: Mutex::new(writer), reader, next_offset: Mutex::new(next) })
    }

    fn to_document(&self, d: &Doc) -> TantivyDocument {
        let f = &self.f;
        let mut doc = TantivyDocument::new();
        doc.add_i64(f.offset, d.offset);
        doc.add_i64(f.timestamp, d.timestamp);
        doc.add_i64(f.partition, d.partition as i64);
        if let Some(k) = &d.key {
            doc.add_text(f.key, String::from_utf8_lossy(k));
        }
        if let Some(v) = &d.value {
            doc.add_text(f.value, String::from_utf8_lossy(v));
        }
        // The value is parsed once, for the JSON field and the present fields.
        let json = d.json();
        let leaves = json.as_ref().map(chronik_core::search::json_leaves_of).unwrap_or_default();
        if let Some(Value::Object(m)) = json.as_ref().and_then(indexable) {
            doc.add_field_value(f.json, &OwnedValue::from(m));
        }
        // A header name may repeat: every value is indexed.
        let mut headers: serde_json::Map<String, Value> = serde_json::Map::new();
        for (k, v) in d.header_texts() {
            match headers.get_mut(&k) {
                Some(Value::Array(items)) => items.push(Value::String(v)),
                Some(first) => *first = Value::Array(vec![first.take(), Value::String(v)]),
                None => {
                    headers.insert(k, Value::String(v));
                }
            }
        }
        if !headers.is_empty() {
            doc.add_field_value(f.headers, &OwnedValue::from(headers));
        }
        for name in d.present_fields_with(&leaves) {
            doc.add_text(f.fields, name);
        }
        // The copy: a null key or value is absent; headers keep their order and nulls.
        if let Some(k) = &d.key {
            doc.add_bytes(f.raw_key, k.as_ref());
        }
        if let Some(v) = &d.value {
            doc.add_bytes(f.raw_value, v.as_ref());
        }
        if !d.headers.is_empty() {
            let hs: Vec<(String, Option<Vec<u8>>)> = d.headers.iter().map(|(k, v)| (k.clone(), v.as_ref().map(|v| v.to_vec()))).collect();
            doc.add_text(f.raw_headers, serde_json::to_string(&hs).unwrap_or_default());
        }
        doc
    }

    /// The stored copy of the record at `addr`.
    fn stored(&self, searcher: &Searcher, addr: DocAddress, partition: i32, offset: i64, timestamp: i64) -> Option<Doc> {
        use tantivy::schema::document::Value as _;
        let d: TantivyDocument = searcher.doc(addr).ok()?;
        let bytes = |field: Field| d.get_first(field).and_then(|v| v.as_bytes()).map(bytes::Bytes::copy_from_slice);
        let headers = match d.get_first(self.f.raw_headers).and_then(|v| v.as_str()) {
            Some(text) => serde_json::from_str::<Vec<(String, Option<Vec<u8>>)>>(text).ok()?.into_iter().map(|(k, v)| (k, v.map(bytes::Bytes::from))).collect(),
            None => Vec::new(),
        };
        Some(Doc { partition, offset, timestamp, key: bytes(self.f.raw_key), value: bytes(self.f.raw_value), headers })
    }

    fn json_term(&self, field: Field, path: &str) -> Term {
        Term::from_field_json_path(field, path, true)
    }

    fn text_term(&self, field: &FieldRef, token: &str) -> Vec<Term> {
        let f = &self.f;
        match field {
            FieldRef::Any => vec![Term::from_field_text(f.key, token), Term::from_field_text(f.value, token)],
            FieldRef::Key => vec![Term::from_field_text(f.key, token)],
            FieldRef::Value => vec![Term::from_field_text(f.value, token)],
            FieldRef::Header(h) => {
                let mut t = self.json_term(f.headers, h);
                t.append_type_and_str(token);
                vec![t]
            }
            FieldRef::Json(p) => {
                let mut t = self.json_term(f.json, p);
                t.append_type_and_str(token);
                vec![t]
            }
            FieldRef::Offset | FieldRef::Timestamp | FieldRef::Partition => Vec::new(),
        }
    }

    /// Documents whose `field` holds the number `n`.
    fn number_query(&self, field: &FieldRef, n: f64) -> Box<dyn TQuery> {
        self.range_query(field, Bound::Included(n), Bound::Included(n))
    }

    fn range_query(&self, field: &FieldRef, lower: Bound<f64>, upper: Bound<f64>) -> Box<dyn TQuery> {
        let int_field = match field {
            FieldRef::Offset => Some(self.f.offset),
            FieldRef::Timestamp => Some(self.f.timestamp),
            FieldRef::Partition => Some(self.f.partition),
            _ => None,
        };
        if let Some(field) = int_field {
            // Integer bounds equivalent to the real ones.
            let lo = match lower {
                Bound::Included(x) => Some(x.ceil()),
                Bound::Excluded(x) => Some(x.floor() + 1.0),
                Bound::Unbounded => None,
            };
            let hi = match upper {
                Bound::Included(x) => Some(x.floor()),
                Bound::Excluded(x) => Some(x.ceil() - 1.0),
                Bound::Unbounded => None,
            };
            if lo.zip(hi).is_some_and(|(l, h)| l > h) {
                return Box::new(EmptyQuery);
            }
            let b = |x: Option<f64>| match x {
                None => Bound::Unbounded,
                Some(v) => Bound::Included(Term::from_field_i64(field, v.clamp(i64::MIN as f64, i64::MAX as f64) as i64)),
            };
            if lo.is_none() && hi.is_none() {
                return Box::new(TermQuery::new(Term::from_field_text(self.f.fields, &field_name(field, &self.f)), IndexRecordOption::Basic));
            }
            return Box::new(RangeQuery::new(b(lo), b(hi)));
        }
        if let FieldRef::Json(p) = field {
            let t = |x: f64| {
                let mut t = self.json_term(self.f.json, p);
                t.append_type_and_fast_value(x);
                t
            };
            let conv = |b: Bound<f64>| match b {
                Bound::Included(x) => Bound::Included(t(x)),
                Bound::Excluded(x) => Bound::Excluded(t(x)),
                Bound::Unbounded => Bound::Unbounded,
            };
            if matches!((lower, upper), (Bound::Unbounded, Bound::Unbounded)) {
                return Box::new(RangeQuery::new(Bound::Included(t(f64::MIN)), Bound::Included(t(f64::MAX))));
            }
            return Box::new(RangeQuery::new(conv(lower), conv(upper)));
        }
        Box::new(EmptyQuery)
    }

    fn translate(&self, q: &Query) -> Box<dyn TQuery> {
        match q {
            Query::All => Box::new(AllQuery),
            Query::Nothing => Box::new(EmptyQuery),
            Query::Text { field, tokens, positions, all, phrase, raw } => {
                let mut alternatives: Vec<(Occur, Box<dyn TQuery>)> = Vec::new();
                if let Some(n) = raw.trim().parse::<f64>().ok().filter(|n| n.is_finite()) {
                    if matches!(field, FieldRef::Offset | FieldRef::Timestamp | FieldRef::Partition | FieldRef::Json(_)) {
                        alternatives.push((Occur::Should, self.number_query(field, n)));
                    }
                }
                if !tokens.is_empty() && !matches!(field, FieldRef::Offset | FieldRef::Timestamp | FieldRef::Partition) {
                    let text: Box<dyn TQuery> = if *phrase && tokens.len() > 1 {
                        // The phrase in any one of the field's targets.
                        let n_targets = self.text_term(field, &tokens[0]).len();
                        let per_target: Vec<(Occur, Box<dyn TQuery>)> = (0..n_targets)
                            .map(|i| {
                                // At the query's own positions: a dropped long token leaves a gap.
                                let terms: Vec<(usize, Term)> =
                                    tokens.iter().zip(positions).map(|(t, p)| (p - positions[0], self.text_term(field, t)[i].clone())).collect();
                                (Occur::Should, Box::new(PhraseQuery::new_with_offset(terms)) as Box<dyn TQuery>)
                            })
                            .collect();
                        Box::new(BooleanQuery::new(per_target))
                    } else {
                        let per_token: Vec<(Occur, Box<dyn TQuery>)> = tokens
                            .iter()
                            .map(|tok| {
                                let any_target: Vec<(Occur, Box<dyn TQuery>)> = self
                                    .text_term(field, tok)
                                    .into_iter()
                                    .map(|t| (Occur::Should, Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs)) as Box<dyn TQuery>))
                                    .collect();
                                (if *all { Occur::Must } else { Occur::Should }, Box::new(BooleanQuery::new(any_target)) as Box<dyn TQuery>)
                            })
                            .collect();
                        Box::new(BooleanQuery::new(per_token))
                    };
                    alternatives.push((Occur::Should, text));
                }
                if alternatives.is_empty() {
                    Box::new(EmptyQuery)
                } else {
                    Box::new(BooleanQuery::new(alternatives))
                }
            }
            Query::Term { field, value } => {
                let mut alternatives: Vec<(Occur, Box<dyn TQuery>)> = self
                    .text_term(field, value)
                    .into_iter()
                    .map(|t| (Occur::Should, Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs)) as Box<dyn TQuery>))
                    .collect();
                if let Some(n) = value.trim().parse::<f64>().ok().filter(|n| n.is_finite()) {
                    if matches!(field, FieldRef::Offset | FieldRef::Timestamp | FieldRef::Partition | FieldRef::Json(_)) {
                        alternatives.push((Occur::Should, self.number_query(field, n)));
                    }
                }
                if alternatives.is_empty() {
                    Box::new(EmptyQuery)
                } else {
                    Box::new(BooleanQuery::new(alternatives))
                }
            }
            Query::Range { field, lower, upper } => self.range_query(field, *lower, *upper),
            Query::Exists { field } => {
                let names = match field {
                    FieldRef::Any => vec!["key".to_string(), "value".to_string()],
                    f => vec![f.presence_name()],
                };
                let should = names
                    .into_iter()
                    .map(|n| (Occur::Should, Box::new(TermQuery::new(Term::from_field_text(self.f.fields, &n), IndexRecordOption::Basic)) as Box<dyn TQuery>))
                    .collect();
                Box::new(BooleanQuery::new(should))
            }
            Query::Bool { must, should, must_not, filter, min_should } => {
                let mut clauses: Vec<(Occur, Box<dyn TQuery>)> = Vec::new();
                for q in must {
                    clauses.push((Occur::Must, self.translate(q)));
                }
                // Filters must match but do not score (as in Elasticsearch).
                for q in filter {
                    clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(self.translate(q), 0.0))));
                }
                if !should.is_empty() {
                    let shoulds: Vec<(Occur, Box<dyn TQuery>)> = should.iter().map(|q| (Occur::Should, self.translate(q))).collect();
                    if *min_should == 0 {
                        clauses.extend(shoulds); // optional: they only score
                    } else {
                        clauses.push((Occur::Must, Box::new(BooleanQuery::with_minimum_required_clauses(shoulds, *min_should))));
                    }
                }
                if clauses.iter().all(|(o, _)| *o == Occur::Should) && *min_should == 0 {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                for q in must_not {
                    clauses.push((Occur::MustNot, self.translate(q)));
                }
                Box::new(BooleanQuery::new(clauses))
            }
        }
    }

    fn fast_i64(searcher: &Searcher, addr: DocAddress, name: &str) -> i64 {
        searcher
            .segment_reader(addr.segment_ord)
            .fast_fields()
            .i64(name)
            .ok()
            .and_then(|col| col.first(addr.doc_id))
            .unwrap_or(0)
    }

    /// The best `n` matches in the exact order of `sort` followed by offset
    /// (this index holds one partition): tantivy sorts by up to three keys.
    fn top(&self, searcher: &Searcher, q: &dyn TQuery, n: usize, sort: &[SortField]) -> Result<Vec<IndexHit>, String> {
        Ok(self.top_counted(searcher, q, n, sort, false)?.1)
    }

    /// [`TantivyIndex::top`], and how many documents match (one pass when `count`).
    fn top_counted(&self, searcher: &Searcher, q: &dyn TQuery, n: usize, sort: &[SortField], count: bool) -> Result<(u64, Vec<IndexHit>), String> {
        let key = |s: SortField| -> (SortByErasedType, Order) {
            let order = |o: SortOrder| if o == SortOrder::Asc { Order::Asc } else { Order::Desc };
            match s {
                SortField::Score(o) => (SortByErasedType::for_score(), order(o)),
                SortField::Timestamp(o) => (SortByErasedType::for_field("timestamp"), order(o)),
                SortField::Offset(o) => (SortByErasedType::for_field("offset"), order(o)),
            }
        };
        let tie = SortField::Offset(SortOrder::Asc);
        let k1 = key(sort.first().copied().unwrap_or(SortField::Score(SortOrder::Desc)));
        let k2 = key(sort.get(1).copied().unwrap_or(tie));
        let k3 = key(tie);
        let score_pos = sort.iter().take(2).position(|s| matches!(s, SortField::Score(_)));
        let collector = TopDocs::with_limit(n.max(1)).order_by((k1, k2, k3));
        let (total, found) = if count {
            let (c, f) = searcher.search(q, &(Count, collector)).map_err(|e| e.to_string())?;
            (c as u64, f)
        } else {
            (0, searcher.search(q, &collector).map_err(|e| e.to_string())?)
        };
        let hits = found
            .into_iter()
            .map(|((a, b, _), addr)| {
                let score = match score_pos {
                    Some(0) => owned_f64(&a),
                    Some(1) => owned_f64(&b),
                    _ => 0.0,
                } as f32;
                let (offset, timestamp) = (Self::fast_i64(searcher, addr, "offset"), Self::fast_i64(searcher, addr, "timestamp"));
                let partition = Self::fast_i64(searcher, addr, "partition") as i32;
                IndexHit { offset, timestamp, score, doc: self.stored(searcher, addr, partition, offset, timestamp) }
            })
            .collect();
        Ok((total, hits))
    }
}

fn owned_f64(v: &OwnedValue) -> f64 {
    match v {
        OwnedValue::F64(x) => *x,
        OwnedValue::I64(x) => *x as f64,
        OwnedValue::U64(x) => *x as f64,
        _ => 0.0,
    }
}

fn field_name(field: Field, f: &Fields) -> String {
    if field == f.offset {
        "offset".into()
    } else if field == f.timestamp {
        "timestamp".into()
    } else {
        "partition".into()
    }
}

impl PartitionIndex for TantivyIndex {
    fn next_offset(&self) -> i64 {
        *self.next_offset.lock().expect("next offset poisoned")
    }

    fn add(&self, docs: &[Doc]) -> Result<(), String> {
        let w = self.writer.lock().expect("index writer poisoned");
        for d in docs {
            w.add_document(self.to_document(d)).map_err(|e| format!("cannot index offset {}: {e}", d.offset))?;
        }
        Ok(())
    }

    fn commit(&self, next_offset: i64) -> Result<(), String> {
        let mut w = self.writer.lock().expect("index writer poisoned");
        let mut prepared = w.prepare_commit().map_err(|e| format!("index commit failed: {e}"))?;
        prepared.set_payload(&serde_json::json!({ "next_offset": next_offset }).to_string());
        prepared.commit().map_err(|e| format!("index commit failed: {e}"))?;
        drop(w);
        *self.next_offset.lock().expect("next offset poisoned") = next_offset;
        self.reader.reload().map_err(|e| format!("index reload failed: {e}"))
    }

    fn delete_below(&self, offset: i64) -> Result<(), String> {
        let q = RangeQuery::new(Bound::Unbounded, Bound::Excluded(Term::from_field_i64(self.f.offset, offset)));
        self.writer.lock().expect("index writer poisoned").delete_query(Box::new(q)).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn truncate_from(&self, offset: i64) -> Result<(), String> {
        let q = RangeQuery::new(Bound::Included(Term::from_field_i64(self.f.offset, offset)), Bound::Unbounded);
        self.writer.lock().expect("index writer poisoned").delete_query(Box::new(q)).map_err(|e| e.to_string())?;
        // What was added below `offset` is committed with it: resume at `offset`.
        self.commit(offset)
    }

    fn search(&self, query: &Query, limit: usize, sort: &[SortField], after: Option<&SortKey>) -> Result<IndexAnswer, String> {
        let searcher = self.reader.searcher();
        let q = self.translate(query);
        let sort: Vec<SortField> = if sort.is_empty() { vec![SortField::Score(SortOrder::Desc)] } else { sort.to_vec() };
        if limit == 0 {
            let total = searcher.search(&*q, &Count).map_err(|e| e.to_string())? as u64;
            return Ok(IndexAnswer { total, hits: Vec::new() });
        }
        let Some(after) = after else {
            let (total, hits) = self.top_counted(&searcher, &*q, limit, &sort, true)?;
            return Ok(IndexAnswer { total, hits });
        };
        let total = searcher.search(&*q, &Count).map_err(|e| e.to_string())? as u64;
        // After a given hit: skip what sorts before it by a range on the first
        // field (when it is a field), then the rest of the tie in memory.
        let partition = Self::partition_of(&searcher);
        let bounded: Box<dyn TQuery> = match (sort[0], after.values.first()) {
            (SortField::Timestamp(o) | SortField::Offset(o), Some(&v)) => {
                let field = if matches!(sort[0], SortField::Timestamp(_)) { FieldRef::Timestamp } else { FieldRef::Offset };
                let range = if o == SortOrder::Desc { self.range_query(&field, Bound::Unbounded, Bound::Included(v)) } else { self.range_query(&field, Bound::Included(v), Bound::Unbounded) };
                Box::new(BooleanQuery::new(vec![(Occur::Must, q.box_clone()), (Occur::Must, range)]))
            }
            _ => q.box_clone(),
        };
        let mut n = limit.max(16);
        loop {
            let fetched = self.top(&searcher, &*bounded, n, &sort)?;
            let complete = fetched.len() < n;
            let hits: Vec<IndexHit> = fetched
                .into_iter()
                .filter(|h| SortKey::cmp(&sort, &SortKey::of(&sort, partition, h.offset, h.timestamp, h.score), after) == std::cmp::Ordering::Greater)
                .take(limit)
                .collect();
            if hits.len() == limit || complete {
                return Ok(IndexAnswer { total, hits });
            }
            n = n.saturating_mul(4);
        }
    }
}

impl TantivyIndex {
    fn partition_of(searcher: &Searcher) -> i32 {
        for (ord, seg) in searcher.segment_readers().iter().enumerate() {
            if seg.num_docs() > 0 {
                if let Some(doc) = seg.doc_ids_alive().next() {
                    return Self::fast_i64(searcher, DocAddress::new(ord as u32, doc), "partition") as i32;
                }
            }
        }
        0
    }
}

/// Indexes under one directory, one subdirectory each.
pub struct TantivyBackend {
    root: PathBuf,
}

impl TantivyBackend {
    pub fn new(root: PathBuf) -> TantivyBackend {
        TantivyBackend { root }
    }
}

impl SearchBackend for TantivyBackend {
    fn open(&self, name: &str) -> Result<Arc<dyn PartitionIndex>, String> {
        Ok(Arc::new(TantivyIndex::open(&self.root.join(name))?))
    }

    fn remove(&self, name: &str) -> Result<(), String> {
        match std::fs::remove_dir_all(self.root.join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove search index {name}: {e}")),
        }
    }

    fn list(&self) -> Result<Vec<String>, String> {
        match std::fs::read_dir(&self.root) {
            Ok(entries) => Ok(entries.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("cannot list {}: {e}", self.root.display())),
        }
    }
}

// ---- running search next to the broker ----------------------------------------------------

/// The search side of a running broker: the indexer thread and the HTTP API.
pub struct Running {
    /// Answers searches (the HTTP API and the gRPC admin service).
    pub service: Arc<chronik_core::search::service::SearchService>,
    /// Live subscriptions, fed by the indexer.
    pub live: Arc<chronik_core::search::live::Live>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    wake: std::sync::mpsc::SyncSender<()>,
    indexer: Option<std::thread::JoinHandle<()>>,
    forwarder: tokio::task::JoinHandle<()>,
}

/// Starts indexing every `search.enabled` topic on a thread of its own
/// (tantivy blocks), with the indexes under `<data-dir>/search`.
pub fn start(config: &crate::Config, shared: Arc<chronik_net::Shared>) -> anyhow::Result<Running> {
    use anyhow::Context;
    use chronik_core::search::indexer::Indexer;
    use chronik_core::search::live::Live;
    use chronik_core::search::service::SearchService;
    use chronik_core::search::SearchIndexes;

    let backend = Arc::new(TantivyBackend::new(config.data_dir.join("search")));
    let indexes = Arc::new(SearchIndexes::new(backend));
    let live = Arc::new(Live::default());
    let service = Arc::new(SearchService::new(shared.broker.clone(), indexes.clone()));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    let refresh = std::time::Duration::from_millis(config.search_refresh_ms.max(1));
    let mut indexer = Indexer::new(shared.broker.clone(), indexes, live.clone(), config.search_refresh_ms as i64);
    let thread_stop = stop.clone();
    let started = std::time::Instant::now();
    let indexer = std::thread::Builder::new()
        .name("chronik-indexer".into())
        .spawn(move || {
            while !thread_stop.load(std::sync::atomic::Ordering::SeqCst) {
                indexer.run_once(started.elapsed().as_millis() as i64);
                // New data wakes us at once; otherwise look again after a
                // refresh interval (pending documents get committed then).
                let _ = woken.recv_timeout(refresh);
            }
            indexer.commit_all();
        })
        .context("cannot start the search indexer thread")?;

    // The high watermark moved: wake the indexer.
    let fwd_shared = shared.clone();
    let fwd_wake = wake.clone();
    let forwarder = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = fwd_shared.stopped() => return,
                _ = fwd_shared.hw_advanced.notified() => { let _ = fwd_wake.try_send(()); }
            }
        }
    });
    Ok(Running { service, live, stop, wake, indexer: Some(indexer), forwarder })
}

/// Serves the search HTTP API on `addr` until the broker stops. Returns the
/// bound address and the server's task.
pub async fn serve_http(
    shared: Arc<chronik_net::Shared>,
    search: &Running,
    searcher: Arc<chronik_net::search::Searcher>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the search HTTP API (set --http-listen to another address, or \"off\")"))?;
    let bound = listener.local_addr()?;
    let state = chronik_net::http::HttpState { search: searcher, live: search.live.clone(), broker: shared.broker.clone() };
    let http = tokio::spawn(chronik_net::http::serve_http(listener, state, async move { shared.stopped().await }));
    Ok((bound, http))
}

impl Running {
    /// Stops the indexer, committing what was indexed (after the broker
    /// was asked to stop).
    pub async fn stop(mut self) {
        let _ = self.forwarder.await;
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.wake.try_send(());
        if let Some(t) = self.indexer.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
