//! What the simulated clients saw, in order: the input of every checker.

use std::collections::BTreeMap;

/// A partition of the simulated topic.
pub type Partition = i32;

/// FNV-1a: a hash that is the same in every run and process.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds `bytes` into the FNV-1a hash `h`.
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A produce answered `NONE` (acks=all): `values[i]` is at `base_offset + i`.
    Acked { partition: Partition, base_offset: i64, values: Vec<String> },
    /// Answered `DUPLICATE_SEQUENCE_NUMBER`: written before, offset unknown.
    AckedOffsetUnknown { partition: Partition, values: Vec<String> },
    /// A consumer fetch: records in the order returned, and the HW it reported.
    Read { partition: Partition, records: Vec<(i64, String)>, high_watermark: i64 },
    /// An OffsetCommit of a group's only member (one commit in flight at a
    /// time), with what came of it.
    Commit { group: String, offsets: Vec<(Partition, i64)>, outcome: CommitOutcome },
    /// An OffsetFetch answered: the group's committed offset per partition
    /// (-1 for none).
    OffsetsFetched { group: String, offsets: Vec<(Partition, i64)> },
    /// A fault the world injected (crash, partition, disk error, ...).
    Fault(String),
    /// Something a checker should know about, e.g. a client-visible error.
    Note(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Answered `NONE`: it must be what OffsetFetch returns until the next.
    Acked,
    /// Refused before anything was written (wrong generation, unknown member,
    /// rebalance in progress): it must never appear.
    Refused,
    /// No answer, or an error after the record may have been written: it
    /// may appear (once durable), or never.
    Unknown,
}

/// The events of one run plus the final read of every partition.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub events: Vec<Event>,
    /// After healing: the whole log of each partition, (offset, value).
    pub final_logs: BTreeMap<Partition, Vec<(i64, String)>>,
    /// Partitions whose stored bytes were corrupted on purpose (bit rot):
    /// with a single replica, their records may be unreadable.
    pub rotted: Vec<Partition>,
    /// After healing: each partition's search index, (next offset to index,
    /// committed documents as (offset, value)).
    pub search_index: BTreeMap<Partition, (i64, Vec<(i64, String)>)>,
}

impl History {
    pub fn push(&mut self, e: Event) {
        self.events.push(e);
    }

    /// FNV-1a over every event and the final logs: equal for equal runs.
    pub fn trace_hash(&self) -> u64 {
        let mut h = FNV_OFFSET;
        let mut eat = |s: &str| {
            h = fnv1a(h, s.as_bytes());
            h = fnv1a(h, b"\n");
        };
        for e in &self.events {
            eat(&format!("{e:?}"));
        }
        for (p, log) in &self.final_logs {
            eat(&format!("final {p} {log:?}"));
        }
        for (p, index) in &self.search_index {
            eat(&format!("index {p} {index:?}"));
        }
        h
    }

    /// Acknowledged values with their offsets, when known.
    pub fn acked(&self) -> Vec<(Partition, Option<i64>, &str)> {
        let mut out = Vec::new();
        for e in &self.events {
            match e {
                Event::Acked { partition, base_offset, values } => {
                    for (i, v) in values.iter().enumerate() {
                        out.push((*partition, Some(base_offset + i as i64), v.as_str()));
                    }
                }
                Event::AckedOffsetUnknown { partition, values } => {
                    out.extend(values.iter().map(|v| (*partition, None, v.as_str())));
                }
                _ => {}
            }
        }
        out
    }
}
