//! Search on the log: every record of a topic with `search.enabled=true` is
//! indexed from the committed log (up to the high watermark), and hits always
//! point at real records (partition, offset), read back from the log.
//!
//! This module is the deterministic half: the document model (what a record
//! becomes), the query language (one AST for the `q=` syntax and the
//! Elasticsearch subset), the [`PartitionIndex`] seam with an in-memory
//! implementation that is also the reference model for the tantivy one
//! (`server/src/search.rs`), the indexer pass that feeds indexes from the log,
//! live subscriptions, and the search service that merges partitions.

pub mod indexer;
pub mod live;
pub mod mem;
pub mod query;
pub mod service;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

pub use query::{FieldRef, Query, SortField, SortKey, SortOrder};

/// The topic config that turns indexing on.
pub const SEARCH_ENABLED: &str = "search.enabled";

/// Tokens at least this many bytes long are dropped (tantivy's default analyzer does the same).
pub const MAX_TOKEN_BYTES: usize = 40;

/// One record as the index sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A leaf of a record's JSON value (or of a header), as indexed.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    Text(String),
    Number(f64),
}

impl Doc {
    /// The value parsed as JSON, when it is a JSON object (only objects
    /// have fields; an array or a scalar is searched as text).
    pub fn json(&self) -> Option<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(self.value.as_deref()?).ok()?;
        v.is_object().then_some(v)
    }

    /// Every leaf of the JSON value, by dotted path (array elements share
    /// their array's path; booleans are the texts "true"/"false"; nulls are absent).
    pub fn json_leaves(&self) -> Vec<(String, Leaf)> {
        self.json().map(|v| json_leaves_of(&v)).unwrap_or_default()
    }

    /// Every field path present in the document, with every prefix of a JSON
    /// path (`user.id` makes `user` exist too), for `exists` queries.
    pub fn present_fields(&self) -> Vec<String> {
        self.present_fields_with(&self.json_leaves())
    }

    /// [`Doc::present_fields`] from leaves already flattened.
    pub fn present_fields_with(&self, leaves: &[(String, Leaf)]) -> Vec<String> {
        let mut out = vec!["offset".to_string(), "timestamp".to_string(), "partition".to_string()];
        if self.key.is_some() {
            out.push("key".into());
        }
        if self.value.is_some() {
            out.push("value".into());
        }
        for (name, value) in &self.headers {
            if value.is_some() {
                out.push(format!("headers.{name}"));
                out.push("headers".into());
            }
        }
        for (path, _) in leaves {
            let mut prefix = String::new();
            for part in path.split('.') {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(part);
                out.push(prefix.clone());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Headers as texts (lossy UTF-8), by name.
    pub fn header_texts(&self) -> Vec<(String, String)> {
        self.headers.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), String::from_utf8_lossy(v).into_owned()))).collect()
    }

    /// The document as a search hit shows it: value as JSON when it parses, else text.
    pub fn to_json(&self, topic: &str) -> serde_json::Value {
        let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        let value = match self.value.as_ref() {
            None => serde_json::Value::Null,
            Some(b) => serde_json::from_slice(b).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(b).into_owned())),
        };
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_ref().map(|v| serde_json::Value::String(String::from_utf8_lossy(v).into_owned())).unwrap_or(serde_json::Value::Null)))
            .collect();
        serde_json::json!({
            "topic": topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "key": text(&self.key),
            "headers": headers,
            "value": value,
        })
    }
}

/// The leaves of a parsed JSON value (see [`Doc::json_leaves`]).
pub fn json_leaves_of(v: &serde_json::Value) -> Vec<(String, Leaf)> {
    let mut out = Vec::new();
    flatten_json(v, String::new(), &mut out);
    out
}

fn flatten_json(v: &serde_json::Value, path: String, out: &mut Vec<(String, Leaf)>) {
    match v {
        serde_json::Value::Null => {}
        serde_json::Value::Bool(b) => out.push((path, Leaf::Text(b.to_string()))),
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.push((path, Leaf::Number(f)));
            }
        }
        serde_json::Value::String(s) => out.push((path, Leaf::Text(s.clone()))),
        serde_json::Value::Array(items) => {
            for item in items {
                flatten_json(item, path.clone(), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                flatten_json(item, p, out);
            }
        }
    }
}

/// Splits text into lowercase tokens on every character that is not
/// alphanumeric, dropping tokens of [`MAX_TOKEN_BYTES`] or more: tantivy's
/// "default" analyzer (SimpleTokenizer, RemoveLongFilter(40), LowerCaser).
pub fn tokenize(text: &str) -> Vec<String> {
    tokenize_with_positions(text).into_iter().map(|(_, t)| t).collect()
}

/// [`tokenize`] with each token's position. A dropped long token still
/// takes a position, as in tantivy (its filter removes the token, not the
/// position), so a phrase never spans the gap it leaves.
pub fn tokenize_with_positions(text: &str) -> Vec<(usize, String)> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .enumerate()
        .filter(|(_, t)| t.len() < MAX_TOKEN_BYTES)
        // Character by character, as tantivy's LowerCaser (no final-sigma rule).
        .map(|(i, t)| (i, t.chars().flat_map(char::to_lowercase).collect()))
        .collect()
}

/// What one partition's index found: where, how well, and the sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexHit {
    pub offset: i64,
    pub score: f32,
    pub timestamp: i64,
    /// The record, when the index keeps a copy (it is derived from the
    /// committed log only); otherwise it is read back from the log.
    pub doc: Option<Doc>,
}

/// A partition's index answer: how many documents match, and the best ones.
#[derive(Debug, Clone, Default)]
pub struct IndexAnswer {
    pub total: u64,
    pub hits: Vec<IndexHit>,
}

/// The search index of one partition. Added documents become visible (and
/// durable, for a persistent index) at the next [`PartitionIndex::commit`],
/// which records the offset indexing resumes from after a crash.
pub trait PartitionIndex: Send + Sync {
    /// The first offset not in the last commit: where indexing resumes.
    fn next_offset(&self) -> i64;
    fn add(&self, docs: &[Doc]) -> Result<(), String>;
    /// Makes everything added visible and durable; `next_offset` follows it.
    fn commit(&self, next_offset: i64) -> Result<(), String>;
    /// Removes the documents below `offset` (retention deleted their records).
    fn delete_below(&self, offset: i64) -> Result<(), String>;
    /// Removes the documents at or above `offset` (the log was truncated
    /// below what was indexed) and makes `offset` the next to index.
    fn truncate_from(&self, offset: i64) -> Result<(), String>;
    /// The `limit` best matches in `sort` order, strictly after `after`.
    fn search(&self, query: &Query, limit: usize, sort: &[SortField], after: Option<&SortKey>) -> Result<IndexAnswer, String>;
}

/// Makes the indexes of partitions: tantivy on disk in production, in
/// memory in the simulator and the model tests.
pub trait SearchBackend: Send + Sync {
    /// Opens (or creates) the index named `name` (unique per topic
    /// incarnation and partition).
    fn open(&self, name: &str) -> Result<Arc<dyn PartitionIndex>, String>;
    /// Deletes the index named `name`, if it exists.
    fn remove(&self, name: &str) -> Result<(), String>;
    /// Names of every index that exists (to remove those of deleted topics).
    fn list(&self) -> Result<Vec<String>, String>;
}

/// The open indexes, shared by the indexer and the search service.
pub struct SearchIndexes {
    backend: Arc<dyn SearchBackend>,
    open: Mutex<BTreeMap<String, Arc<dyn PartitionIndex>>>,
    /// Topics whose indexes the indexer is to rebuild from the log.
    rebuilds: Mutex<std::collections::BTreeSet<String>>,
}

/// The index name of a partition of a topic incarnation.
pub fn index_name(topic: &crate::broker::catalog::TopicRecord, partition: i32) -> String {
    let dir = topic.dir();
    let base = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| topic.name.clone());
    format!("{base}-{partition}")
}

impl SearchIndexes {
    pub fn new(backend: Arc<dyn SearchBackend>) -> SearchIndexes {
        SearchIndexes { backend, open: Mutex::new(BTreeMap::new()), rebuilds: Mutex::default() }
    }

    /// Asks the indexer to rebuild `topic`'s indexes from its log: every
    /// document goes, and the log is indexed again from its start. Searches
    /// see fewer hits until it has caught up.
    pub fn request_rebuild(&self, topic: &str) {
        self.rebuilds.lock().expect("rebuild requests poisoned").insert(topic.to_string());
    }

    /// The pending rebuild requests, taken.
    pub fn take_rebuilds(&self) -> std::collections::BTreeSet<String> {
        std::mem::take(&mut *self.rebuilds.lock().expect("rebuild requests poisoned"))
    }

    /// The index named `name`, opened on first use.
    pub fn get(&self, name: &str) -> Result<Arc<dyn PartitionIndex>, String> {
        let mut open = self.open.lock().expect("search index map poisoned");
        if let Some(i) = open.get(name) {
            return Ok(i.clone());
        }
        let index = self.backend.open(name)?;
        open.insert(name.to_string(), index.clone());
        Ok(index)
    }

    /// The index named `name` if it is open.
    pub fn opened(&self, name: &str) -> Option<Arc<dyn PartitionIndex>> {
        self.open.lock().expect("search index map poisoned").get(name).cloned()
    }

    /// Closes and deletes every index whose name is not in `keep`.
    pub fn retain(&self, keep: &std::collections::BTreeSet<String>) -> Result<(), String> {
        let stale: Vec<String> = self.backend.list()?.into_iter().filter(|n| !keep.contains(n)).collect();
        for name in stale {
            self.open.lock().expect("search index map poisoned").remove(&name);
            self.backend.remove(&name)?;
            tracing::info!(index = %name, "removed the search index of a deleted topic");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_matches_tantivys_default_analyzer() {
        assert_eq!(tokenize("Disk FULL on node-7, user_id=42"), vec!["disk", "full", "on", "node", "7", "user", "id", "42"]);
        assert_eq!(tokenize(&format!("a {} b", "x".repeat(40))), vec!["a", "b"]);
        assert_eq!(tokenize_with_positions(&format!("a {} b", "x".repeat(40))), vec![(0, "a".to_string()), (2, "b".to_string())]);
        assert_eq!(tokenize(&format!("{}", "y".repeat(39))), vec!["y".repeat(39)]);
        assert_eq!(tokenize("Ünïcode ÉTÉ"), vec!["ünïcode", "été"]);
    }

    #[test]
    fn json_leaves_and_present_fields() {
        let d = Doc {
            partition: 0,
            offset: 1,
            timestamp: 2,
            key: None,
            value: Some(Bytes::from_static(br#"{"level":"error","user":{"id":42,"tags":["a","b"]},"ok":true,"gone":null}"#)),
            headers: vec![("trace".into(), Some(Bytes::from_static(b"x1")))],
        };
        let leaves = d.json_leaves();
        assert!(leaves.contains(&("user.id".into(), Leaf::Number(42.0))));
        assert!(leaves.contains(&("user.tags".into(), Leaf::Text("b".into()))));
        assert!(leaves.contains(&("ok".into(), Leaf::Text("true".into()))));
        assert!(!leaves.iter().any(|(p, _)| p == "gone"));
        let present = d.present_fields();
        for f in ["user", "user.id", "level", "headers.trace", "value"] {
            assert!(present.contains(&f.to_string()), "{f} should be present");
        }
        assert!(!present.contains(&"key".to_string()));
    }
}
