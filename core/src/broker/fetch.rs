//! Fetch and ListOffsets: reads up to the high watermark.

use bytes::Bytes;
use chronik_proto::ResponseError::{self, *};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};

use super::{Broker, Partition};

/// A fetch answer and how much it carries, for the long-poll decision.
pub struct FetchOutcome {
    pub response: FetchResponse,
    pub bytes: usize,
    /// Any partition-level or top-level error: answer at once.
    pub has_error: bool,
}

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;
const EARLIEST_PENDING_UPLOAD: i64 = -6;

/// Checks that this broker leads the partition and the client's idea of
/// the leader epoch against ours; returns ours.
fn check_leader_epoch(partition: &Partition, current_leader_epoch: i32) -> Result<i32, ResponseError> {
    let ours = partition.serving_epoch()?;
    match current_leader_epoch {
        e if e < 0 || e == ours => Ok(ours),
        e if e > ours => Err(UnknownLeaderEpoch),
        _ => Err(FencedLeaderEpoch),
    }
}

impl Broker {
    pub fn fetch(&self, request: &FetchRequest, version: i16) -> FetchOutcome {
        let mut response = FetchResponse::default();
        if request.session_epoch > 0 {
            // We never create sessions (we answer session id 0), so an
            // incremental fetch names a session we do not have.
            response.error_code = FetchSessionIdNotFound.code();
            return FetchOutcome { response, bytes: 0, has_error: true };
        }
        let broker_max = self.config.fetch_max_bytes.max(1) as usize;
        let response_max = if request.max_bytes <= 0 { broker_max } else { (request.max_bytes as usize).min(broker_max) };
        let mut total = 0usize;
        let mut has_error = false;
        for ft in &request.topics {
            let topic = if version >= 13 { self.topic_by_id(ft.topic_id) } else { self.topic(&ft.topic) };
            let mut partitions = Vec::with_capacity(ft.partitions.len());
            for fp in &ft.partitions {
                let mut pd = PartitionData::default().with_partition_index(fp.partition);
                pd.high_watermark = -1;
                pd.last_stable_offset = -1;
                pd.log_start_offset = -1;
                pd.records = Some(Bytes::new());
                // Kafka sends a null list unless the fetch is read_committed.
                pd.aborted_transactions = None;
                let partition = topic.as_ref().and_then(|t| t.partition(fp.partition));
                let result = match (&topic, partition) {
                    (None, _) if version >= 13 => Err(UnknownTopicId),
                    (None, _) | (Some(_), None) => Err(UnknownTopicOrPartition),
                    (Some(_), Some(p)) => check_leader_epoch(p, fp.current_leader_epoch).and_then(|_| {
                        let budget = response_max.saturating_sub(total).min(fp.partition_max_bytes.max(0) as usize);
                        self.fetch_partition(p, fp.fetch_offset, budget, total == 0, &mut pd)
                    }),
                };
                match result {
                    Ok(n) => total += n,
                    Err(e) => {
                        // As Kafka: a partition in error carries no offsets.
                        pd.error_code = e.code();
                        pd.high_watermark = -1;
                        pd.last_stable_offset = -1;
                        pd.log_start_offset = -1;
                        if matches!(e, UnknownTopicOrPartition | UnknownTopicId) {
                            // Kafka's quirk: null for an existing partition, empty when unknown.
                            pd.aborted_transactions = Some(Vec::new());
                        }
                        has_error = true;
                    }
                }
                partitions.push(pd);
            }
            let mut t = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= 13 {
                t.topic_id = ft.topic_id;
            } else {
                t.topic = ft.topic.clone();
            }
            response.responses.push(t);
        }
        FetchOutcome { response, bytes: total, has_error }
    }

    fn fetch_partition(
        &self,
        partition: &Partition,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
        pd: &mut PartitionData,
    ) -> Result<usize, ResponseError> {
        let guard = partition.lock();
        let log = guard.as_ref().map_err(|_| KafkaStorageError)?;
        if log.offline().is_some() {
            return Err(KafkaStorageError);
        }
        let hw = if crate::planted::active(crate::planted::Bug::StaleHwRead) { log.log_end_offset() } else { log.high_watermark() };
        pd.high_watermark = hw;
        pd.last_stable_offset = hw;
        pd.log_start_offset = log.log_start_offset();
        if offset < log.log_start_offset() || offset > log.log_end_offset() {
            return Err(OffsetOutOfRange);
        }
        let read = log.read(offset, max_bytes, at_least_one, hw).map_err(|e| {
            tracing::error!(topic = %partition.topic, partition = partition.index, offset, error = %e, "fetch read failed");
            KafkaStorageError
        })?;
        let n = read.bytes.len();
        pd.records = Some(Bytes::from(read.bytes));
        Ok(n)
    }

    pub fn list_offsets(&self, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
        let mut topics = Vec::with_capacity(request.topics.len());
        for lt in request.topics {
            let topic = self.topic(&lt.name);
            let mut partitions = Vec::with_capacity(lt.partitions.len());
            for lp in lt.partitions {
                let mut r = ListOffsetsPartitionResponse::default().with_partition_index(lp.partition_index);
                r.timestamp = -1;
                r.offset = -1;
                let partition = topic.as_ref().and_then(|t| t.partition(lp.partition_index));
                let result = match partition {
                    None => Err(UnknownTopicOrPartition),
                    Some(p) => check_leader_epoch(p, lp.current_leader_epoch).and_then(|epoch| Ok((self.offset_for(p, lp.timestamp)?, epoch))),
                };
                match result {
                    Ok((Some((offset, timestamp)), epoch)) => {
                        r.offset = offset;
                        r.timestamp = timestamp;
                        if version >= 4 {
                            r.leader_epoch = epoch;
                        }
                    }
                    Ok((None, _)) => {}
                    Err(e) => r.error_code = e.code(),
                }
                partitions.push(r);
            }
            topics.push(ListOffsetsTopicResponse::default().with_name(lt.name).with_partitions(partitions));
        }
        ListOffsetsResponse::default().with_topics(topics)
    }

    /// OffsetForLeaderEpoch (KIP-101/279, and KIP-320 for consumers): where
    /// each asked epoch ended in this leader's log, from its epoch cache.
    pub fn offset_for_leader_epoch(&self, request: OffsetForLeaderEpochRequest, _version: i16) -> OffsetForLeaderEpochResponse {
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let topic = self.topic(&t.topic);
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let mut r = EpochEndOffset::default().with_partition(p.partition).with_leader_epoch(-1).with_end_offset(-1);
                        let answer = match topic.as_ref().and_then(|tp| tp.partition(p.partition)) {
                            None => Err(UnknownTopicOrPartition),
                            Some(part) => check_leader_epoch(part, p.current_leader_epoch).and_then(|ours| {
                                let guard = part.lock();
                                match guard.as_ref() {
                                    // A leader's epoch begins at its log end when it takes over, even
                                    // before its first batch: so an empty log answers the current epoch.
                                    Ok(log) if log.offline().is_none() && log.epoch_starts().is_empty() && p.leader_epoch >= ours => {
                                        Ok((ours, log.log_end_offset()))
                                    }
                                    Ok(log) if log.offline().is_none() => Ok(log.end_offset_for_epoch(p.leader_epoch)),
                                    _ => Err(KafkaStorageError),
                                }
                            }),
                        };
                        match answer {
                            Ok((epoch, end)) => {
                                r.leader_epoch = epoch;
                                r.end_offset = end;
                            }
                            Err(e) => r.error_code = e.code(),
                        }
                        r
                    })
                    .collect();
                OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(partitions)
            })
            .collect();
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }

    /// (offset, timestamp) for a ListOffsets query; `None` answers -1/-1.
    fn offset_for(&self, partition: &Partition, timestamp: i64) -> Result<Option<(i64, i64)>, ResponseError> {
        let guard = partition.lock();
        let log = guard.as_ref().map_err(|_| KafkaStorageError)?;
        if log.offline().is_some() {
            return Err(KafkaStorageError);
        }
        let hw = log.high_watermark();
        let storage = |e| {
            tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "offset lookup failed");
            KafkaStorageError
        };
        Ok(match timestamp {
            LATEST => Some((hw, -1)),
            EARLIEST | EARLIEST_LOCAL => Some((log.log_start_offset(), -1)),
            MAX_TIMESTAMP => log.max_timestamp_record(hw).map_err(storage)?,
            // No tiered storage: nothing is tiered or pending upload.
            LATEST_TIERED | EARLIEST_PENDING_UPLOAD => None,
            t if t < 0 => return Err(InvalidRequest),
            t => log.offset_for_timestamp(t, hw).map_err(storage)?,
        })
    }
}
