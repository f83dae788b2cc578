//! The cluster world's data workload: a replicated topic written and read
//! through the Kafka protocol by clients that find partition leaders the
//! way real clients do (Metadata), while the world crashes and isolates
//! brokers. Its history goes through the same checkers as the single
//! broker's (acknowledged records survive, no duplicates, dense offsets,
//! reads match the final log), and every replica's log must end up
//! byte-identical to its leader's.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronik_core::broker::Broker;
use chronik_proto::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use madsim::rand::{thread_rng, Rng as _};

use crate::client::{self, Conn};
use crate::history::{Event, History, Partition};

pub const TOPIC: &str = "replicated";
pub const PARTITIONS: i32 = 2;
const KAFKA_PORT: u16 = 9092;

type Shared<T> = Arc<Mutex<T>>;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn kafka_addr(node: i32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(super::cluster::node_ip(node as u64)), KAFKA_PORT)
}

/// Partition leaders as some broker's Metadata says.
async fn leaders(n: u64) -> BTreeMap<Partition, i32> {
    let node = thread_rng().gen_range(1..=n) as i32;
    let Ok(mut conn) = Conn::connect(kafka_addr(node)).await else { return BTreeMap::new() };
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name(TOPIC)))]))
        .with_allow_auto_topic_creation(false);
    let Ok(ResponseKind::Metadata(r)) = conn.call(ApiKey::Metadata, 12, RequestKind::Metadata(req)).await else { return BTreeMap::new() };
    r.topics
        .iter()
        .filter(|t| t.error_code == 0)
        .flat_map(|t| t.partitions.iter().filter(|p| p.leader_id.0 >= 0).map(|p| (p.partition_index, p.leader_id.0)))
        .collect()
}

/// Creates the topic through Kafka CreateTopics (replication factor 3,
/// `min.insync.replicas` 2), retrying until some broker says it exists
/// (after healing too: the topic must exist for the final read).
pub async fn create_topic(n: u64, history: Shared<History>) {
    loop {
        let node = thread_rng().gen_range(1..=n) as i32;
        if let Ok(mut conn) = Conn::connect(kafka_addr(node)).await {
            let topic = CreatableTopic::default()
                .with_name(name(TOPIC))
                .with_num_partitions(PARTITIONS)
                .with_replication_factor(3)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("min.insync.replicas"))
                    .with_value(Some(StrBytes::from_static_str("2")))]);
            let req = CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(5000);
            if let Ok(ResponseKind::CreateTopics(r)) = conn.call_within(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(req), Duration::from_secs(20)).await {
                let code = r.topics[0].error_code;
                if code == 0 || code == ResponseError::TopicAlreadyExists.code() {
                    history.lock().unwrap().push(Event::Note(format!("topic {TOPIC} created (answer {code}) through node {node}")));
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An idempotent acks=all producer: finds each partition's leader with
/// Metadata, retries a batch with the same sequence (to whichever broker
/// leads then) until it is answered, and records what was acknowledged.
pub async fn producer(id: u32, n: u64, history: Shared<History>, stop: Arc<AtomicBool>) {
    let mut k: u64 = 0;
    let mut leader_of = BTreeMap::new();
    let mut conns: BTreeMap<i32, Conn> = BTreeMap::new();
    'session: loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let node = thread_rng().gen_range(1..=n) as i32;
        let Ok(mut conn) = Conn::connect(kafka_addr(node)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let req = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
        let pid = match conn.call_within(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(req), Duration::from_secs(12)).await {
            Ok(ResponseKind::InitProducerId(r)) if r.error_code == 0 => r.producer_id.0,
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut seq = [0i32; PARTITIONS as usize];
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let (partition, count) = {
                let mut r = thread_rng();
                (r.gen_range(0..PARTITIONS), r.gen_range(1..4usize))
            };
            let values: Vec<String> = (0..count).map(|i| format!("r{id}-{}", k + i as u64)).collect();
            k += count as u64;
            let now = chronik_core::clock::Clock::now_ms(&chronik_core::clock::SystemClock);
            let records = client::batch(&values, pid, 0, seq[partition as usize], Compression::None, now);
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                if stop.load(Ordering::SeqCst) && attempts > 300 {
                    history.lock().unwrap().push(Event::Note(format!("producer {id}: gave up on {values:?} after healing")));
                    return;
                }
                let Some(&leader) = leader_of.get(&partition) else {
                    leader_of = leaders(n).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if let std::collections::btree_map::Entry::Vacant(e) = conns.entry(leader) {
                    match Conn::connect(kafka_addr(leader)).await {
                        Ok(c) => {
                            e.insert(c);
                        }
                        Err(_) => {
                            leader_of.clear();
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let conn = conns.get_mut(&leader).expect("connected above");
                let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(2000).with_topic_data(vec![TopicProduceData::default()
                    .with_name(name(TOPIC))
                    .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(records.clone()))])]);
                let code = match conn.call(ApiKey::Produce, 9, RequestKind::Produce(req)).await {
                    Ok(ResponseKind::Produce(r)) => {
                        let p = &r.responses[0].partition_responses[0];
                        if p.error_code == 0 {
                            history.lock().unwrap().push(Event::Acked { partition, base_offset: p.base_offset, values: values.clone() });
                            seq[partition as usize] += count as i32;
                            break;
                        }
                        p.error_code
                    }
                    Ok(_) => unreachable!("produce answered with another API"),
                    Err(_) => {
                        conns.remove(&leader);
                        leader_of.clear();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if code == ResponseError::DuplicateSequenceNumber.code() {
                    history.lock().unwrap().push(Event::AckedOffsetUnknown { partition, values: values.clone() });
                    seq[partition as usize] += count as i32;
                    break;
                }
                let retriable = [
                    ResponseError::NotLeaderOrFollower,
                    ResponseError::NotEnoughReplicas,
                    ResponseError::RequestTimedOut,
                    ResponseError::KafkaStorageError,
                    ResponseError::UnknownTopicOrPartition,
                    ResponseError::LeaderNotAvailable,
                ]
                .iter()
                .any(|e| e.code() == code);
                if !retriable {
                    history.lock().unwrap().push(Event::Note(format!("producer {id}: batch {values:?} refused with error {code}; new producer session")));
                    continue 'session;
                }
                leader_of.clear();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Tails every partition from its leader, recording what it reads.
pub async fn consumer(n: u64, history: Shared<History>, stop: Arc<AtomicBool>) {
    let mut next = [0i64; PARTITIONS as usize];
    while !stop.load(Ordering::SeqCst) {
        let leader_of = leaders(n).await;
        for (&p, &leader) in &leader_of {
            let Ok(mut conn) = Conn::connect(kafka_addr(leader)).await else { continue };
            let req = FetchRequest::default().with_max_wait_ms(100).with_min_bytes(1).with_max_bytes(1 << 20).with_session_epoch(-1).with_topics(vec![FetchTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(vec![FetchPartition::default().with_partition(p).with_fetch_offset(next[p as usize]).with_partition_max_bytes(64 << 10)])]);
            let Ok(ResponseKind::Fetch(r)) = conn.call(ApiKey::Fetch, 11, RequestKind::Fetch(req)).await else { continue };
            let pd = &r.responses[0].partitions[0];
            if pd.error_code != 0 {
                continue;
            }
            let Ok(records) = client::records(pd.records.clone().unwrap_or_default(), next[p as usize]) else { continue };
            if let Some((last, _)) = records.last() {
                next[p as usize] = last + 1;
            }
            history.lock().unwrap().push(Event::Read { partition: p, records, high_watermark: pd.high_watermark });
        }
        tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(20..200))).await;
    }
}

/// Reads every partition from offset 0 to its high watermark, from its leader.
pub async fn final_read(n: u64) -> anyhow::Result<BTreeMap<Partition, Vec<(i64, String)>>> {
    let mut logs = BTreeMap::new();
    for p in 0..PARTITIONS {
        let mut log: Vec<(i64, String)> = Vec::new();
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > 300 {
                anyhow::bail!("partition {p}: could not read past offset {}", log.last().map(|l| l.0 + 1).unwrap_or(0));
            }
            let Some(&leader) = leaders(n).await.get(&p) else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(mut conn) = Conn::connect(kafka_addr(leader)).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let from = log.last().map(|l| l.0 + 1).unwrap_or(0);
            let Some((records, high_watermark)) = client::read_once(&mut conn, TOPIC, p, from).await? else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            log.extend(records);
            let end = log.last().map(|l| l.0 + 1).unwrap_or(0);
            if end >= high_watermark {
                logs.insert(p, log);
                break;
            }
        }
    }
    Ok(logs)
}

/// Each replica's log of each partition, as stored: (node, partition) ->
/// (log end, durable end, high watermark, bytes).
pub fn replica_logs(brokers: &[(u64, Arc<Broker>)]) -> BTreeMap<(u64, Partition), (i64, i64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for (node, broker) in brokers {
        let Some(topic) = broker.topic(TOPIC) else { continue };
        for p in &topic.partitions {
            let guard = p.lock_log();
            let Ok(log) = guard.as_ref() else { continue };
            let end = log.log_end_offset();
            let bytes = log.read(log.log_start_offset(), usize::MAX, true, end).map(|r| r.bytes).unwrap_or_default();
            out.insert((*node, p.index), (end, log.durable_end(), log.high_watermark(), bytes));
        }
    }
    out
}

/// Whether every replica of every partition holds the same log, fsynced
/// and committed to its end; `Err` says how they differ.
pub fn replicas_identical(logs: &BTreeMap<(u64, Partition), (i64, i64, i64, Vec<u8>)>) -> Result<(), String> {
    for p in 0..PARTITIONS {
        let replicas: Vec<_> = logs.iter().filter(|((_, q), _)| *q == p).collect();
        if replicas.len() < 3 {
            return Err(format!("partition {p}: {} replicas hold a log, 3 should", replicas.len()));
        }
        let ((first, _), (end, _, _, bytes)) = replicas[0];
        for ((node, _), (e, durable, hw, b)) in &replicas {
            if e != end || b != bytes {
                return Err(format!("partition {p}: node {node} ends at {e} with {} bytes, node {first} at {end} with {} bytes", b.len(), bytes.len()));
            }
            if durable != e || hw != e {
                return Err(format!("partition {p}: node {node} ends at {e} but has fsynced to {durable} and committed to {hw}"));
            }
        }
    }
    Ok(())
}
