//! Idempotent producer state of one partition.
//!
//! For each producer id the partition remembers the current epoch and the
//! last [`BATCHES_CACHED`] batches (their sequence ranges and offsets), as
//! Kafka does. A retried batch that matches a cached one is answered with
//! the original offsets instead of being written twice; a gap in sequence
//! numbers is `OUT_OF_ORDER_SEQUENCE_NUMBER`; an older epoch is fenced.
//! The state is rebuilt on start from a snapshot plus the log after it.

use std::collections::{BTreeMap, VecDeque};

use chronik_proto::batch::BatchHeader;
use serde::{Deserialize, Serialize};

/// How many recent batches per producer are kept for duplicate detection
/// (the Java client keeps at most 5 in flight).
pub const BATCHES_CACHED: usize = 5;

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    pub last_timestamp: i64,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Next in sequence (or a new producer/epoch): write it.
    Append,
    /// A retry of a batch already written: answer with its offsets.
    Duplicate(BatchMeta),
}

/// Why an idempotent batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id}: epoch {got} is older than current epoch {current}")]
    InvalidEpoch { producer_id: i64, current: i16, got: i16 },
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder { producer_id: i64, expected: i32, got: i32 },
    #[error("producer {producer_id}: sequence {got} was already written but is no longer cached")]
    DuplicateOld { producer_id: i64, got: i32 },
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Producer id → state, for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    pub producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStates {
    /// Decides whether batch `h` (not yet written) may be appended.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        debug_assert!(h.has_producer_id());
        let producer_id = h.producer_id;
        let Some(entry) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or its state expired): any sequence.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch { producer_id, current: entry.epoch, got: h.producer_epoch });
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder { producer_id, expected: 0, got: h.base_sequence })
            };
        }
        if let Some(b) = entry.batches.iter().find(|b| b.first_seq == h.base_sequence && b.last_seq == h.last_sequence()) {
            return Ok(SequenceCheck::Duplicate(*b));
        }
        let Some(last) = entry.batches.back() else {
            return Ok(SequenceCheck::Append);
        };
        let expected = next_seq(last.last_seq);
        if h.base_sequence == expected {
            return Ok(SequenceCheck::Append);
        }
        // Wholly behind the last written sequence (modulo wrap-around) means a
        // retry older than the cache: every record of it was written. A batch
        // that only overlaps the written range also carries unwritten records,
        // so it is out of order (as in Kafka), never a duplicate: a client
        // treats a duplicate as written. Ahead means records were lost between.
        let behind = |seq: i32| (last.last_seq as i64 - seq as i64).rem_euclid(1 << 31) < (1 << 30);
        if behind(h.base_sequence) && behind(h.last_sequence()) {
            Err(SequenceError::DuplicateOld { producer_id, got: h.base_sequence })
        } else {
            Err(SequenceError::OutOfOrder { producer_id, expected, got: h.base_sequence })
        }
    }

    /// Records batch `h`, whose base offset is assigned and which is in the
    /// log. Called on append and when replaying the log at start.
    pub fn record(&mut self, h: &BatchHeader) {
        if !h.has_producer_id() {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_insert_with(|| ProducerEntry {
            epoch: h.producer_epoch,
            batches: VecDeque::new(),
            last_timestamp: h.max_timestamp,
        });
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while entry.batches.len() > BATCHES_CACHED {
            entry.batches.pop_front();
        }
        entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
    }

    /// Forgets producers idle since before `cutoff_ms` (producer.id.expiration.ms).
    pub fn expire(&mut self, cutoff_ms: i64) {
        self.producers.retain(|_, e| e.last_timestamp >= cutoff_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn in_order_duplicates_and_gaps() {
        let mut s = ProducerStates::default();
        let b0 = header(1, 0, 0, 3, 0);
        assert_eq!(s.check(&b0), Ok(SequenceCheck::Append));
        s.record(&b0);
        let b1 = header(1, 0, 3, 2, 3);
        assert_eq!(s.check(&b1), Ok(SequenceCheck::Append));
        s.record(&b1);
        // A retry of b0 is answered with b0's offsets.
        assert!(matches!(s.check(&header(1, 0, 0, 3, -1)), Ok(SequenceCheck::Duplicate(m)) if m.base_offset == 0 && m.last_offset == 2));
        // A gap is refused.
        assert!(matches!(s.check(&header(1, 0, 7, 1, -1)), Err(SequenceError::OutOfOrder { expected: 5, got: 7, .. })));
        // An older epoch is fenced; a newer one must start at 0.
        let mut fenced = s.clone();
        fenced.record(&header(1, 2, 0, 1, 5));
        assert!(matches!(fenced.check(&header(1, 0, 5, 1, -1)), Err(SequenceError::InvalidEpoch { .. })));
        assert!(matches!(s.check(&header(1, 1, 5, 1, -1)), Err(SequenceError::OutOfOrder { .. })));
        assert_eq!(s.check(&header(1, 1, 0, 1, -1)), Ok(SequenceCheck::Append));
        // Unknown producers may start anywhere.
        assert_eq!(s.check(&header(2, 0, 100, 1, -1)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn only_the_last_five_batches_are_cached() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&header(1, 0, i, 1, i as i64));
        }
        assert_eq!(s.producers[&1].batches.len(), BATCHES_CACHED);
        assert!(matches!(s.check(&header(1, 0, 6, 1, -1)), Ok(SequenceCheck::Duplicate(_))));
        assert!(matches!(s.check(&header(1, 0, 0, 1, -1)), Err(SequenceError::DuplicateOld { .. })));
    }

    #[test]
    fn a_batch_overlapping_the_written_range_is_out_of_order() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, 10, 5, 0)); // sequences 10..=14
        // 12..=16 carries 15 and 16, never written: not a duplicate.
        assert!(matches!(s.check(&header(1, 0, 12, 5, -1)), Err(SequenceError::OutOfOrder { expected: 15, .. })));
        assert!(matches!(s.check(&header(1, 0, 11, 3, -1)), Err(SequenceError::DuplicateOld { .. })));
    }

    #[test]
    fn sequences_wrap() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(s.check(&header(1, 0, 0, 1, -1)), Ok(SequenceCheck::Append));
    }
}
