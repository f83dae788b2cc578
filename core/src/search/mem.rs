//! An index in memory: the simulator's, and the reference model the tantivy
//! index is tested against. Matching is [`Query::matches`]; scores are 1.0
//! per matching document (the model does not rank).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Doc, IndexAnswer, IndexHit, PartitionIndex, Query, SearchBackend, SortField, SortKey};

#[derive(Default)]
struct State {
    /// Committed and visible, by offset.
    visible: BTreeMap<i64, Doc>,
    /// Added since the last commit.
    pending: Vec<Doc>,
    next_offset: i64,
}

#[derive(Default)]
pub struct MemIndex {
    state: Mutex<State>,
}

impl MemIndex {
    /// What a process crash does to an index: documents added since the last
    /// commit are gone.
    pub fn crash(&self) {
        self.state.lock().expect("mem index poisoned").pending.clear();
    }

    /// The committed documents, by offset.
    pub fn committed(&self) -> Vec<Doc> {
        self.state.lock().expect("mem index poisoned").visible.values().cloned().collect()
    }
}

impl PartitionIndex for MemIndex {
    fn next_offset(&self) -> i64 {
        self.state.lock().expect("mem index poisoned").next_offset
    }

    fn add(&self, docs: &[Doc]) -> Result<(), String> {
        self.state.lock().expect("mem index poisoned").pending.extend_from_slice(docs);
        Ok(())
    }

    fn commit(&self, next_offset: i64) -> Result<(), String> {
        let mut s = self.state.lock().expect("mem index poisoned");
        for d in std::mem::take(&mut s.pending) {
            s.visible.insert(d.offset, d);
        }
        s.next_offset = next_offset;
        Ok(())
    }

    fn delete_below(&self, offset: i64) -> Result<(), String> {
        let mut s = self.state.lock().expect("mem index poisoned");
        s.visible = s.visible.split_off(&offset);
        s.pending.retain(|d| d.offset >= offset);
        Ok(())
    }

    fn truncate_from(&self, offset: i64) -> Result<(), String> {
        let mut s = self.state.lock().expect("mem index poisoned");
        s.visible.split_off(&offset);
        s.pending.retain(|d| d.offset < offset);
        // What was added below `offset` is committed with it (as tantivy does).
        for d in std::mem::take(&mut s.pending) {
            s.visible.insert(d.offset, d);
        }
        s.next_offset = offset;
        Ok(())
    }

    fn search(&self, query: &Query, limit: usize, sort: &[SortField], after: Option<&SortKey>) -> Result<IndexAnswer, String> {
        let s = self.state.lock().expect("mem index poisoned");
        let matching: Vec<&Doc> = s.visible.values().filter(|d| query.matches(d)).collect();
        let total = matching.len() as u64;
        let mut keyed: Vec<(SortKey, &Doc)> = matching.into_iter().map(|d| (SortKey::of(sort, d.partition, d.offset, d.timestamp, 1.0), d)).collect();
        if let Some(after) = after {
            keyed.retain(|(k, _)| SortKey::cmp(sort, k, after) == std::cmp::Ordering::Greater);
        }
        keyed.sort_by(|a, b| SortKey::cmp(sort, &a.0, &b.0));
        let hits = keyed.into_iter().take(limit).map(|(_, d)| IndexHit { offset: d.offset, score: 1.0, timestamp: d.timestamp, doc: Some(d.clone()) }).collect();
        Ok(IndexAnswer { total, hits })
    }
}

/// Indexes in memory, kept across "restarts" of the broker that uses them
/// when the backend itself is kept (as the simulator keeps its disk).
#[derive(Default)]
pub struct MemBackend {
    indexes: Mutex<BTreeMap<String, Arc<MemIndex>>>,
}

impl MemBackend {
    /// A crash of the process that uses these indexes.
    pub fn crash(&self) {
        for index in self.indexes.lock().expect("mem backend poisoned").values() {
            index.crash();
        }
    }

    /// Every index by name.
    pub fn indexes(&self) -> Vec<(String, Arc<MemIndex>)> {
        self.indexes.lock().expect("mem backend poisoned").iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl SearchBackend for MemBackend {
    fn open(&self, name: &str) -> Result<Arc<dyn PartitionIndex>, String> {
        let mut m = self.indexes.lock().expect("mem backend poisoned");
        Ok(m.entry(name.to_string()).or_default().clone())
    }

    fn remove(&self, name: &str) -> Result<(), String> {
        self.indexes.lock().expect("mem backend poisoned").remove(name);
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, String> {
        Ok(self.indexes.lock().expect("mem backend poisoned").keys().cloned().collect())
    }
}
