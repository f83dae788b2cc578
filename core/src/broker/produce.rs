//! Produce: validate each partition's batches, check idempotent sequences,
//! append, and tell the caller what it must wait for before answering.

use std::sync::Arc;

use chronik_proto::batch::{self, BatchError, Batches};
use chronik_proto::ResponseError::{self, *};
use kafka_protocol::messages::produce_response::{BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::replication::AckState;
use super::{Broker, Partition};
use crate::producer::{SequenceCheck, SequenceError};

/// An `acks=all` partition whose answer waits until its HW reaches `offset`.
pub struct DurableWait {
    pub partition: Arc<Partition>,
    pub offset: i64,
    /// The leader epoch it was appended at: if this broker stops leading
    /// it, the append may be cut off and is never acknowledged.
    pub leader_epoch: i32,
    /// Where its answer is in the response: (topic index, partition index).
    pub slot: (usize, usize),
}

pub struct ProduceOutcome {
    pub response: ProduceResponse,
    /// Non-empty only for `acks=-1`.
    pub waits: Vec<DurableWait>,
    /// Whether anything was appended (so a flush is due).
    pub appended: bool,
}

impl ProduceOutcome {
    /// Marks the partitions still waiting as timed out (`REQUEST_TIMED_OUT`).
    pub fn time_out(&mut self, pending: &[(usize, usize)]) {
        for &(t, p) in pending {
            let r = &mut self.response.responses[t].partition_responses[p];
            r.error_code = RequestTimedOut.code();
        }
    }

    /// Marks a partition whose wait can never complete (it went offline,
    /// or this broker stopped leading it).
    pub fn fail(&mut self, slot: (usize, usize), error: ResponseError) {
        let r = &mut self.response.responses[slot.0].partition_responses[slot.1];
        r.error_code = error.code();
    }

    /// Answers the waits that are settled; returns whether any is left.
    pub fn settle(&mut self, waits: &mut Vec<DurableWait>) -> bool {
        waits.retain(|w| match w.partition.ack_state(w.leader_epoch, w.offset) {
            AckState::Committed => false,
            AckState::Waiting => true,
            AckState::Lost(e) => {
                self.fail(w.slot, e);
                false
            }
        });
        !waits.is_empty()
    }
}

struct Rejection {
    error: ResponseError,
    message: String,
    /// Kafka reports the log start offset with sequence and epoch errors
    /// (not with unknown partitions, corrupt or oversized batches): -1 unless set.
    log_start_offset: i64,
    /// The records refused one by one (`INVALID_TIMESTAMP`): index in the
    /// partition's records, and why.
    record_errors: Vec<(i32, String)>,
}

/// What a partition's records must respect.
struct Limits<'a> {
    max_message_bytes: i32,
    /// How far (before, after) the broker's clock record timestamps may lie.
    window: (i64, i64),
    acks: i16,
    configs: &'a std::collections::BTreeMap<String, String>,
}

/// Where a partition's records went.
struct PartitionAppend {
    base_offset: i64,
    last_offset: i64,
    log_start_offset: i64,
    /// New data (not a duplicate answered with its first offsets).
    fresh: bool,
    leader_epoch: i32,
}

fn reject(error: ResponseError, message: impl Into<String>) -> Rejection {
    Rejection { error, message: message.into(), log_start_offset: -1, record_errors: Vec::new() }
}

impl Broker {
    pub fn produce(&self, request: ProduceRequest, version: i16) -> ProduceOutcome {
        let acks = request.acks;
        let now = self.clock.now_ms();
        let mut waits = Vec::new();
        let mut appended = false;
        let mut responses = Vec::with_capacity(request.topic_data.len());
        for (ti, topic_data) in request.topic_data.into_iter().enumerate() {
            let topic = if version >= 13 { self.topic_by_id(topic_data.topic_id) } else { self.topic(&topic_data.name) };
            let unknown = if version >= 13 { UnknownTopicId } else { UnknownTopicOrPartition };
            let mut partition_responses = Vec::with_capacity(topic_data.partition_data.len());
            for (pi, data) in topic_data.partition_data.into_iter().enumerate() {
                let mut r = PartitionProduceResponse::default().with_index(data.index);
                let result = if !matches!(acks, -1..=1) {
                    Err(reject(InvalidRequiredAcks, format!("acks must be -1, 0 or 1, not {acks}")))
                } else if request.transactional_id.is_some() {
                    Err(reject(TransactionalIdAuthorizationFailed, "transactions are not supported by this broker yet"))
                } else {
                    match topic.as_ref().and_then(|t| t.partition(data.index).map(|p| (t, p))) {
                        None => Err(reject(unknown, "unknown topic or partition")),
                        Some((t, _)) if super::is_internal(&t.record.name) => {
                            Err(reject(InvalidTopicException, format!("cannot produce to the internal topic {}", t.record.name)))
                        }
                        Some((t, p)) => {
                            let max = self.config.max_message_bytes(&t.record.configs);
                            let window = self.config.timestamp_window(&t.record.configs);
                            let limits = Limits { max_message_bytes: max, window, acks, configs: &t.record.configs };
                            self.append_partition(p, data.records, limits, now).map(|appended| (p.clone(), appended))
                        }
                    }
                };
                match result {
                    Ok((partition, a)) => {
                        appended |= a.fresh;
                        r.base_offset = a.base_offset;
                        r.log_append_time_ms = -1;
                        r.log_start_offset = a.log_start_offset;
                        if acks == -1 {
                            waits.push(DurableWait { partition, offset: a.last_offset + 1, leader_epoch: a.leader_epoch, slot: (ti, pi) });
                        }
                    }
                    Err(rej) => {
                        tracing::debug!(topic = %topic_data.name.0, partition = data.index, error = ?rej.error, message = %rej.message, "produce refused");
                        r.error_code = rej.error.code();
                        r.base_offset = -1;
                        r.log_append_time_ms = -1;
                        r.log_start_offset = rej.log_start_offset;
                        if version >= 8 {
                            r.record_errors = rej
                                .record_errors
                                .into_iter()
                                .map(|(i, why)| BatchIndexAndErrorMessage::default().with_batch_index(i).with_batch_index_error_message(Some(StrBytes::from_string(why))))
                                .collect();
                            r.error_message = Some(StrBytes::from_string(rej.message));
                        }
                    }
                }
                partition_responses.push(r);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(topic_data.name)
                    .with_topic_id(if version >= 13 { topic_data.topic_id } else { Default::default() })
                    .with_partition_responses(partition_responses),
            );
        }
        ProduceOutcome { response: ProduceResponse::default().with_responses(responses), waits, appended }
    }

    /// Validates and appends one partition's records.
    fn append_partition(&self, partition: &Partition, records: Option<bytes::Bytes>, limits: Limits<'_>, now: i64) -> Result<PartitionAppend, Rejection> {
        let Limits { max_message_bytes, window: (before_max, after_max), acks, configs } = limits;
        let records = records.filter(|r| !r.is_empty()).ok_or_else(|| reject(InvalidRecord, "produce request has no records"))?;
        // Validate every batch before appending any, so a request is all or nothing.
        let mut batches = Vec::new();
        for item in Batches::new(&records) {
            let (h, start, end) = item.map_err(|e| match e {
                BatchError::BadMagic(m) => reject(UnsupportedForMessageFormat, format!("record batch magic {m}; only v2 is accepted")),
                e => reject(CorruptMessage, format!("malformed record batch: {e}")),
            })?;
            let bytes = &records[start..end];
            if bytes.len() > max_message_bytes as usize {
                return Err(reject(MessageTooLarge, format!("batch of {} bytes exceeds max.message.bytes {max_message_bytes}", bytes.len())));
            }
            batch::validate(bytes).map_err(|e| reject(CorruptMessage, format!("{e}")))?;
            if h.records_count <= 0 || h.last_offset_delta != h.records_count - 1 {
                return Err(reject(InvalidRecord, format!("batch claims {} records but last offset delta {}", h.records_count, h.last_offset_delta)));
            }
            let n = chronik_proto::records::count_records(bytes).map_err(|e| reject(CorruptMessage, format!("{e}")))?;
            if n != h.records_count {
                return Err(reject(InvalidRecord, format!("batch header says {} records, body has {n}", h.records_count)));
            }
            if h.is_transactional() || h.is_control() {
                return Err(reject(InvalidRecord, "transactional and control batches are not supported by this broker yet"));
            }
            if h.has_producer_id() && h.base_sequence < 0 {
                return Err(reject(InvalidRecord, "idempotent batch without a base sequence"));
            }
            batches.push((h, start, end));
        }
        if batches.len() > 1 && batches.iter().any(|(h, _, _)| h.has_producer_id()) {
            return Err(reject(InvalidRecord, "an idempotent produce must carry exactly one batch per partition"));
        }

        let mut guard = partition.lock();
        let log = guard.as_mut().map_err(|why| reject(KafkaStorageError, why.clone()))?;
        if let Some(why) = log.offline() {
            return Err(reject(KafkaStorageError, why.to_string()));
        }
        let leader_epoch = partition.serving_epoch().map_err(|e| reject(e, format!("this broker does not lead {}-{}", partition.topic, partition.index)))?;
        if acks == -1 {
            if let Err((isr, min)) = self.enough_replicas(partition, configs) {
                return Err(reject(NotEnoughReplicas, format!("{isr} replicas in sync, min.insync.replicas is {min}")));
            }
        }
        // Record timestamps must lie in [now - before, now + after], as Kafka
        // checks them; the header's bounds decide quickly, the records themselves
        // only when a bound is crossed.
        let (low, high) = (now.saturating_sub(before_max), now.saturating_add(after_max));
        let mut record_errors = Vec::new();
        let mut index = 0i32;
        for (h, start, end) in &batches {
            if h.is_log_append_time() {
                index += h.records_count;
                continue;
            }
            if h.max_timestamp > high || h.base_timestamp < low || h.max_timestamp < low {
                let stamps = chronik_proto::records::record_timestamps(&records[*start..*end]).map_err(|e| reject(CorruptMessage, format!("{e}")))?;
                for ts in stamps {
                    if ts < low || ts > high {
                        record_errors.push((index, format!("timestamp {ts} of record {index} is outside [{low}, {high}] (message.timestamp.before/after.max.ms)")));
                    }
                    index += 1;
                }
            } else {
                index += h.records_count;
            }
        }
        if !record_errors.is_empty() {
            let message = format!("{} records have timestamps too far from the broker's clock ({now})", record_errors.len());
            return Err(Rejection { error: InvalidTimestamp, message, log_start_offset: log.log_start_offset(), record_errors });
        }
        if let Some((h, _, _)) = batches.first().filter(|(h, _, _)| h.has_producer_id()) {
            match log.producers.check(h) {
                Ok(SequenceCheck::Append) => {}
                Ok(SequenceCheck::Duplicate(meta)) => {
                    tracing::debug!(producer_id = h.producer_id, seq = h.base_sequence, "duplicate batch answered with its original offsets");
                    let (base_offset, last_offset, log_start_offset) = (meta.base_offset, meta.last_offset, log.log_start_offset());
                    return Ok(PartitionAppend { base_offset, last_offset, log_start_offset, fresh: false, leader_epoch });
                }
                Err(e) => {
                    let error = match e {
                        SequenceError::InvalidEpoch { .. } => InvalidProducerEpoch,
                        SequenceError::OutOfOrder { .. } => OutOfOrderSequenceNumber,
                        SequenceError::DuplicateOld { .. } => DuplicateSequenceNumber,
                    };
                    return Err(Rejection { error, message: e.to_string(), log_start_offset: log.log_start_offset(), record_errors: Vec::new() });
                }
            }
        }
        if self.rng.buggify(0.02) {
            log.roll_now(now).map_err(|e| reject(KafkaStorageError, e.to_string()))?;
        }
        let batches = batches.iter().map(|(_, start, end)| records[*start..*end].to_vec()).collect();
        let appended = log.append_batches(batches, leader_epoch, now).map_err(|e| {
            tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "append failed");
            reject(KafkaStorageError, e.to_string())
        })?;
        let log_start_offset = log.log_start_offset();
        Ok(PartitionAppend { base_offset: appended.base_offset, last_offset: appended.last_offset, log_start_offset, fresh: true, leader_epoch })
    }
}
