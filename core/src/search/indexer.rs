//! Feeds the search indexes from the log: for every partition of every topic
//! with `search.enabled=true`, the committed records (below the high
//! watermark) not yet indexed become documents; the index is committed every
//! `refresh_ms` (which makes them searchable and records where to resume).
//! Retention's deletions and a log truncated below what was indexed are
//! followed; the indexes of deleted topics are removed.
//!
//! [`Indexer::run_once`] is one pass, plain synchronous code: production
//! calls it from a thread of its own (tantivy blocks), the simulator from a task.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use chronik_proto::batch::Batches;
use kafka_protocol::records::RecordBatchDecoder;

use super::live::Live;
use super::{index_name, Doc, SearchIndexes, SEARCH_ENABLED};
use crate::broker::Broker;

/// Bytes read from one partition per pass (then the next partition's turn).
const READ_BYTES_PER_PASS: usize = 4 << 20;
const READ_BYTES_PER_CALL: usize = 1 << 20;

struct PartState {
    next: i64,
    log_start: i64,
    dirty: bool,
    last_commit: i64,
    /// Live subscribers have been given everything below this (a rebuild
    /// indexes old records again; they must not see them twice).
    published: i64,
}

pub struct Indexer {
    broker: Arc<Broker>,
    indexes: Arc<SearchIndexes>,
    live: Arc<Live>,
    refresh_ms: i64,
    parts: BTreeMap<String, PartState>,
    passes: u64,
}

/// Whether a topic's records are indexed.
pub fn search_enabled(configs: &BTreeMap<String, String>) -> bool {
    configs.get(SEARCH_ENABLED).is_some_and(|v| v.trim() == "true")
}

/// The documents of whole batches, from `from` on, and the offset after the last batch.
pub fn decode_docs(bytes: &[u8], partition: i32, from: i64) -> Result<(Vec<Doc>, Option<i64>), String> {
    let mut docs = Vec::new();
    let mut end = None;
    for item in Batches::new(bytes) {
        let (h, start, stop) = item.map_err(|e| format!("bad batch in the log: {e}"))?;
        end = Some(h.last_offset() + 1);
        if h.last_offset() < from || h.is_control() {
            continue;
        }
        let mut b = Bytes::copy_from_slice(&bytes[start..stop]);
        let set = match RecordBatchDecoder::decode(&mut b) {
            Ok(set) => set,
            Err(e) => {
                // Its CRC held, but its records do not decode: skip it, or the
                // partition would never be indexed past it.
                tracing::warn!(partition, base_offset = h.base_offset, last_offset = h.last_offset(), error = %e, "a batch cannot be decoded for search; its records are not indexed");
                continue;
            }
        };
        for r in set.records {
            if r.offset < from || r.control {
                continue;
            }
            docs.push(Doc {
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            });
        }
    }
    Ok((docs, end))
}

impl Indexer {
    pub fn new(broker: Arc<Broker>, indexes: Arc<SearchIndexes>, live: Arc<Live>, refresh_ms: i64) -> Indexer {
        Indexer { broker, indexes, live, refresh_ms: refresh_ms.max(0), parts: BTreeMap::new(), passes: 0 }
    }

    /// One pass over every searchable partition; `now` is a monotonic clock
    /// reading in ms. Returns how many documents were added.
    pub fn run_once(&mut self, now: i64) -> usize {
        let mut added = 0;
        let mut keep = BTreeSet::new();
        let rebuilds = self.indexes.take_rebuilds();
        for topic in self.broker.topics() {
            if !search_enabled(&topic.record.configs) || crate::broker::is_internal(&topic.record.name) {
                continue;
            }
            for p in &topic.partitions {
                // In a cluster, a broker indexes the replicas it holds.
                if matches!(&*p.role(), crate::broker::replication::Role::NotReplica) {
                    continue;
                }
                let name = index_name(&topic.record, p.index);
                keep.insert(name.clone());
                if rebuilds.contains(&topic.record.name) {
                    if let Err(e) = self.start_rebuild(&name) {
                        tracing::warn!(topic = %topic.record.name, partition = p.index, error = %e, "cannot rebuild a search index; asking again");
                        self.indexes.request_rebuild(&topic.record.name);
                    }
                }
                match self.index_partition(&topic.record.name, p, &name, now) {
                    Ok(n) => added += n,
                    Err(e) => tracing::warn!(topic = %topic.record.name, partition = p.index, error = %e, "search indexing failed; will retry"),
                }
            }
        }
        self.parts.retain(|name, _| keep.contains(name));
        // The indexes of deleted topics: checked now and then (it lists a directory).
        if self.passes % 50 == 0 {
            if let Err(e) = self.indexes.retain(&keep) {
                tracing::warn!(error = %e, "cannot remove stale search indexes");
            }
        }
        self.passes += 1;
        added
    }

    /// Drops every document of the index `name`; indexing starts over from
    /// the log's start.
    fn start_rebuild(&mut self, name: &str) -> Result<(), String> {
        let index = self.indexes.get(name)?;
        index.truncate_from(0)?;
        index.commit(0)?;
        let published = self.parts.get(name).map_or(index.next_offset(), |st| st.published);
        self.parts.insert(name.to_string(), PartState { next: 0, log_start: 0, dirty: false, last_commit: i64::MIN / 2, published });
        tracing::info!(index = name, "rebuilding a search index from the log");
        Ok(())
    }

    fn index_partition(&mut self, topic: &str, p: &crate::broker::Partition, name: &str, now: i64) -> Result<usize, String> {
        let index = self.indexes.get(name)?;
        let st = self.parts.entry(name.to_string()).or_insert_with(|| {
            let next = if crate::planted::active(crate::planted::Bug::IndexResumeAtHw) { p.high_watermark().unwrap_or(0) } else { index.next_offset() };
            PartState { next, log_start: 0, dirty: false, last_commit: now, published: next }
        });
        let mut added = 0;
        let mut budget = READ_BYTES_PER_PASS;
        loop {
            let (bytes, start, hw) = p.read_committed(st.next, READ_BYTES_PER_CALL)?;
            if start > st.log_start {
                // Retention deleted records: their documents go too.
                index.delete_below(start)?;
                st.log_start = start;
                st.dirty = true;
            }
            if st.next < start {
                st.next = start;
                continue;
            }
            if hw < st.next {
                // The log lost records that were indexed (a truncated tail).
                tracing::warn!(topic, partition = p.index, from = hw, to = st.next, "log truncated below the indexed offset; dropping those documents");
                index.truncate_from(hw)?;
                st.next = hw;
                st.dirty = true;
            }
            if bytes.is_empty() {
                break;
            }
            let (docs, end) = decode_docs(&bytes, p.index, st.next)?;
            if !docs.is_empty() {
                index.add(&docs)?;
                let fresh: Vec<Doc> = docs.iter().filter(|d| d.offset >= st.published).cloned().collect();
                if !fresh.is_empty() {
                    self.live.publish(topic, &fresh);
                    st.published = fresh.last().map_or(st.published, |d| d.offset + 1);
                }
                added += docs.len();
            }
            match end {
                Some(end) if end > st.next => {
                    st.next = end;
                    st.dirty = true;
                }
                _ => break,
            }
            budget = budget.saturating_sub(bytes.len());
            if budget == 0 {
                break;
            }
        }
        if st.dirty && now - st.last_commit >= self.refresh_ms {
            index.commit(st.next)?;
            st.dirty = false;
            st.last_commit = now;
        }
        Ok(added)
    }

    /// Commits every partition with uncommitted documents (at shutdown).
    pub fn commit_all(&mut self) {
        for (name, st) in self.parts.iter_mut().filter(|(_, st)| st.dirty) {
            if let Some(index) = self.indexes.opened(name) {
                match index.commit(st.next) {
                    Ok(()) => st.dirty = false,
                    Err(e) => tracing::warn!(index = %name, error = %e, "search index commit failed"),
                }
            }
        }
    }
}
