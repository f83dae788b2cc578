//! The request sequences sent to both brokers. Each scenario uses its own
//! topic and group names, so scenarios are independent of each other; within
//! one, steps run in order and each response is recorded under a step name.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut, BufMut};
use kafka_protocol::messages::*;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use crate::{Obs, Target};

type Scenario = fn(&mut Target, &mut Obs) -> anyhow::Result<()>;

pub const ALL: &[(&str, Scenario)] = &[
    ("api_versions", api_versions),
    ("bad_frames", bad_frames),
    ("metadata", metadata),
    ("create_topics", create_topics),
    ("produce", produce),
    ("produce_idempotent", produce_idempotent),
    ("fetch", fetch),
    ("list_offsets", list_offsets),
    ("delete_topics", delete_topics),
    ("create_partitions", create_partitions),
    ("describe_configs", describe_configs),
    ("alter_configs", alter_configs),
    ("offset_for_leader_epoch", offset_for_leader_epoch),
    ("describe_cluster", describe_cluster),
    ("find_coordinator", find_coordinator),
    ("classic_group", classic_group),
    ("offsets", offsets),
    ("consumer_group", consumer_group),
];

/// Record timestamps far in the past, so both brokers keep them as written.
const TS: i64 = 1_600_000_000_000;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn tn(text: &str) -> TopicName {
    TopicName(s(text))
}

fn gid(text: &str) -> GroupId {
    GroupId(s(text))
}

macro_rules! answer {
    ($response:expr, $variant:ident) => {
        match $response {
            ResponseKind::$variant(r) => r,
            other => bail!("expected a {} response, got {other:?}", stringify!($variant)),
        }
    };
}

fn call<T>(t: &mut Target, key: ApiKey, version: i16, body: RequestKind, f: impl FnOnce(ResponseKind) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let response = t.conn.call(key, version, body).with_context(|| format!("{key:?} v{version}"))?;
    f(response)
}

// ---- helpers shared by scenarios -------------------------------------------------

fn metadata_of(t: &mut Target, version: i16, topics: Option<Vec<&str>>, auto_create: bool) -> anyhow::Result<MetadataResponse> {
    let topics = topics.map(|names| names.into_iter().map(|n| MetadataRequestTopic::default().with_name(Some(tn(n)))).collect());
    // Before v4 a Metadata request always allows auto-creation.
    let req = MetadataRequest::default().with_topics(topics).with_allow_auto_topic_creation(auto_create || version < 4);
    call(t, ApiKey::Metadata, version, RequestKind::Metadata(req), |r| Ok(answer!(r, Metadata)))
}

/// Waits (bounded) until every partition of `topic` has a leader.
fn wait_ready(t: &mut Target, topic: &str) -> anyhow::Result<uuid::Uuid> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metadata_of(t, 12, Some(vec![topic]), false)?;
        if let Some(md) = m.topics.first() {
            if md.error_code == 0 && !md.partitions.is_empty() && md.partitions.iter().all(|p| p.error_code == 0 && p.leader_id.0 >= 0) {
                return Ok(md.topic_id);
            }
        }
        if Instant::now() > deadline {
            bail!("topic {topic} has no leader after 20 s: {m:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn creatable(name: &str, partitions: i32, rf: i16, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(tn(name))
        .with_num_partitions(partitions)
        .with_replication_factor(rf)
        .with_configs(configs.iter().map(|(k, v)| CreatableTopicConfig::default().with_name(s(k)).with_value(Some(s(v)))).collect())
}

fn create(t: &mut Target, version: i16, topics: Vec<CreatableTopic>, validate_only: bool) -> anyhow::Result<CreateTopicsResponse> {
    let req = CreateTopicsRequest::default().with_topics(topics).with_timeout_ms(10_000).with_validate_only(validate_only);
    call(t, ApiKey::CreateTopics, version, RequestKind::CreateTopics(req), |r| Ok(answer!(r, CreateTopics)))
}

/// Creates `name` and waits for its leaders; returns its topic id.
fn setup_topic(t: &mut Target, name: &str, partitions: i32, configs: &[(&str, &str)]) -> anyhow::Result<uuid::Uuid> {
    let r = create(t, 5, vec![creatable(name, partitions, -1, configs)], false)?;
    let code = r.topics.first().map(|x| x.error_code).unwrap_or(-1);
    if code != 0 {
        bail!("creating {name}: error {code}");
    }
    wait_ready(t, name)
}

/// A batch of `n` records `k{i}`/`v{i}` (plain, or idempotent when `pid >= 0`).
fn batch(n: usize, pid: i64, epoch: i16, seq: i32, compression: Compression, ts: i64) -> Bytes {
    let records: Vec<_> = (0..n)
        .map(|i| (Some(Bytes::from(format!("k{i}"))), Some(Bytes::from(format!("v{i}-{}", "x".repeat(i % 7))))))
        .collect();
    chronik_proto::batch::encode(&records, &chronik_proto::batch::Producer {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
        compression,
        timestamp: ts,
    })
}

fn produce_req(topic: &str, topic_id: uuid::Uuid, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default().with_acks(acks).with_timeout_ms(10_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(tn(topic))
        .with_topic_id(topic_id)
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(records))])])
}

fn produce_to(t: &mut Target, version: i16, req: ProduceRequest) -> anyhow::Result<ProduceResponse> {
    call(t, ApiKey::Produce, version, RequestKind::Produce(req), |r| Ok(answer!(r, Produce)))
}

/// Produces during setup, retrying while a fresh partition's leader settles.
fn produce_ok(t: &mut Target, req: ProduceRequest) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = produce_to(t, 9, req.clone())?;
        let code = r.responses[0].partition_responses[0].error_code;
        if code == 0 {
            return Ok(());
        }
        if Instant::now() > deadline || !matches!(code, 3 | 5 | 6) {
            bail!("setup produce failed: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until the group's coordinator is ready: Kafka creates
/// `__consumer_offsets` on the first FindCoordinator, then loads it.
fn wait_coordinator(t: &mut Target, group: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = FindCoordinatorRequest::default().with_coordinator_keys(vec![s(group)]);
        let r = call(t, ApiKey::FindCoordinator, 4, RequestKind::FindCoordinator(req), |r| Ok(answer!(r, FindCoordinator)))?;
        if r.coordinators.iter().all(|c| c.error_code == 0) {
            // Kafka answers before the partition is loaded; an OffsetFetch probes that.
            let probe = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(gid(group)).with_topics(None)]);
            let f = call(t, ApiKey::OffsetFetch, 8, RequestKind::OffsetFetch(probe), |r| Ok(answer!(r, OffsetFetch)))?;
            if f.groups.iter().all(|g| g.error_code == 0) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("no coordinator for {group} after 30 s: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fetch_req(topic: &str, topic_id: uuid::Uuid, partition: i32, offset: i64, partition_max: i32, max: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(max)
        .with_topics(vec![FetchTopic::default().with_topic(tn(topic)).with_topic_id(topic_id).with_partitions(vec![
            FetchPartition::default().with_partition(partition).with_fetch_offset(offset).with_partition_max_bytes(partition_max),
        ])])
}

/// A fetch response with each partition's records replaced by their decoded
/// form (offsets, timestamps, keys, values, producer fields) and their raw
/// bytes' length, so both brokers' batches are compared record by record.
fn record_fetch(obs: &mut Obs, step: &str, mut r: FetchResponse) -> anyhow::Result<()> {
    let mut decoded = BTreeMap::new();
    for topic in &mut r.responses {
        for p in &mut topic.partitions {
            if let Some(bytes) = p.records.take() {
                // Kafka may end a fetch with a partial batch (a file slice cut at
                // the byte limit); clients drop it. Only whole batches are decoded.
                let mut whole = 0;
                for item in chronik_proto::batch::Batches::new(&bytes) {
                    match item {
                        Ok((_, _, end)) => whole = end,
                        Err(_) => break,
                    }
                }
                decoded.insert(format!("p{}.partial_tail_bytes", p.partition_index), (bytes.len() - whole).to_string());
                let mut bytes = bytes.slice(..whole);
                let sets = RecordBatchDecoder::decode_all(&mut bytes).context("decoding fetched records")?;
                for (b, set) in sets.iter().enumerate() {
                    for r in &set.records {
                        let at = format!("p{}.batch{b}.offset{}", p.partition_index, r.offset);
                        decoded.insert(
                            at,
                            format!(
                                "ts={} type={:?} key={:?} value={:?} headers={:?} pid={} epoch={} seq={} txn={} control={}",
                                r.timestamp, r.timestamp_type, r.key, r.value, r.headers, r.producer_id, r.producer_epoch, r.sequence,
                                r.transactional, r.control
                            ),
                        );
                    }
                }
            }
        }
    }
    obs.record(step, &r);
    obs.record_map(format!("{step}.records"), decoded);
    Ok(())
}

// ---- scenarios --------------------------------------------------------------------

/// A frame written by hand (for what the codec refuses to encode): the length
/// prefix, a v1 request header with a null client id, then `rest`.
fn raw_frame(key: i16, version: i16, correlation: i32, rest: &[u8]) -> BytesMut {
    let mut frame = BytesMut::new();
    frame.put_i32((2 + 2 + 4 + 2 + rest.len()) as i32);
    frame.put_i16(key);
    frame.put_i16(version);
    frame.put_i32(correlation);
    frame.put_i16(-1);
    frame.put_slice(rest);
    frame
}

/// ApiVersions at every version: the error code and, per API both brokers
/// know, the version range. APIs only Kafka advertises are reported under
/// `unimplemented.*`.
fn api_versions(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    for version in 0..=4 {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(s("chronik-oracle"))
            .with_client_software_version(s("1.0"));
        let r = call(t, ApiKey::ApiVersions, version, RequestKind::ApiVersions(req), |r| Ok(answer!(r, ApiVersions)))?;
        obs.record_map(format!("v{version}"), api_table(&r));
    }
    // A version newer than any broker knows: the answer is ApiVersions v0 with
    // UNSUPPORTED_VERSION and the table (KIP-511), whatever the request body.
    // Header v2: null client id, no tagged fields; then an empty v3+ body.
    let frame = raw_frame(ApiKey::ApiVersions as i16, i16::MAX, 77, &[0, 0, 0]);
    let answer = t.conn.raw(&frame)?;
    let (correlation, r) = chronik_proto::frame::decode_response(ApiKey::ApiVersions, 0, answer)
        .map_err(|e| anyhow::anyhow!("decoding the answer to ApiVersions v{}: {e}", i16::MAX))?;
    let r = answer!(r, ApiVersions);
    let mut table = api_table(&r);
    table.insert("correlation_id".into(), correlation.to_string());
    obs.record_map("unsupported_version", table);
    Ok(())
}

fn api_table(r: &ApiVersionsResponse) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("error_code".into(), r.error_code.to_string());
    for k in &r.api_keys {
        let name = ApiKey::try_from(k.api_key).map(|k| format!("{k:?}")).unwrap_or_else(|_| k.api_key.to_string());
        if ApiKey::try_from(k.api_key).ok().and_then(chronik_proto::api::supported).is_some() {
            out.insert(format!("key.{name}"), format!("{}..={}", k.min_version, k.max_version));
        } else {
            out.insert(format!("unimplemented.{name}"), format!("{}..={}", k.min_version, k.max_version));
        }
    }
    out.insert("supported_features".into(), format!("{:?}", r.supported_features.iter().map(|f| f.name.to_string()).collect::<Vec<_>>()));
    out.insert("finalized_features".into(), format!("{:?}", r.finalized_features.iter().map(|f| f.name.to_string()).collect::<Vec<_>>()));
    out.insert("zk_migration_ready".into(), r.zk_migration_ready.to_string());
    out
}

/// Frames a broker must refuse: an unknown API key closes the connection.
fn bad_frames(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    let frame = raw_frame(9999, 0, 1, &[]);
    obs.note("unknown_api_key_closes", t.connect()?.closes_after(&frame));
    // Metadata v99: an unsupported version of a known API closes too.
    let frame = raw_frame(ApiKey::Metadata as i16, 99, 1, &[]);
    obs.note("unsupported_metadata_version_closes", t.connect()?.closes_after(&frame));
    // A frame cut short in its body: a topic array of 5 entries, then nothing.
    let frame = raw_frame(ApiKey::Metadata as i16, 1, 1, &5i16.to_be_bytes());
    obs.note("truncated_body_closes", t.connect()?.closes_after(&frame));
    Ok(())
}

fn metadata(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    setup_topic(t, "oracle-meta", 3, &[])?;
    // Before v4 every Metadata request may auto-create, so missing topics are asked later.
    for version in [1, 4, 9, 12, 13] {
        let r = metadata_of(t, version, Some(vec!["oracle-meta", "bad name!"]), false)?;
        obs.record(format!("v{version}"), &r);
    }
    for version in [4, 9, 12, 13] {
        let r = metadata_of(t, version, Some(vec!["oracle-missing"]), false)?;
        obs.record(format!("missing_no_auto_create.v{version}"), &r);
    }
    // Auto-creation through Metadata (both brokers allow it by default).
    let r = metadata_of(t, 12, Some(vec!["oracle-auto"]), true)?;
    obs.note("auto_create.first", r.topics.first().map(|x| x.error_code).unwrap_or(-99));
    wait_ready(t, "oracle-auto")?;
    let r = metadata_of(t, 12, Some(vec!["oracle-auto"]), true)?;
    obs.record("auto_create.then", &r);
    // By topic id (v12+): a random id is unknown.
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(None)
        .with_topic_id(uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0))]));
    let r = call(t, ApiKey::Metadata, 12, RequestKind::Metadata(req), |r| Ok(answer!(r, Metadata)))?;
    obs.record("unknown_topic_id", &r);
    Ok(())
}

fn create_topics(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    let long = "l".repeat(250);
    let cases: Vec<(&str, Vec<CreatableTopic>, bool)> = vec![
        ("ok", vec![], false),
        ("duplicate", vec![creatable("oracle-ct", 2, -1, &[])], false),
        ("validate_only", vec![creatable("oracle-ct-v", 4, 1, &[])], false),
        ("name_dot", vec![creatable(".", 1, -1, &[])], false),
        ("name_dotdot", vec![creatable("..", 1, -1, &[])], false),
        ("name_too_long", vec![creatable(&long, 1, -1, &[])], false),
        ("name_bad_chars", vec![creatable("bad/name", 1, -1, &[])], false),
        ("name_empty", vec![creatable("", 1, -1, &[])], false),
        ("zero_partitions", vec![creatable("oracle-ct-p0", 0, -1, &[])], false),
        ("negative_partitions", vec![creatable("oracle-ct-pn", -5, -1, &[])], false),
        ("replication_factor_3", vec![creatable("oracle-ct-rf3", 1, 3, &[])], false),
        ("replication_factor_0", vec![creatable("oracle-ct-rf0", 1, 0, &[])], false),
        ("unknown_config", vec![creatable("oracle-ct-uc", 1, -1, &[("no.such.config", "1")])], false),
        ("bad_config_value", vec![creatable("oracle-ct-bv", 1, -1, &[("retention.ms", "abc")])], false),
        ("bad_cleanup_policy", vec![creatable("oracle-ct-cp", 1, -1, &[("cleanup.policy", "sometimes")])], false),
        ("two_in_one", vec![creatable("oracle-ct-a", 1, -1, &[]), creatable("oracle-ct-b", 2, -1, &[])], false),
        ("same_name_twice", vec![creatable("oracle-ct-twice", 1, -1, &[]), creatable("oracle-ct-twice", 1, -1, &[])], false),
    ];
    for (step, topics, _) in cases {
        let validate = step == "validate_only";
        for version in [2, 5, 7] {
            if version != 7 && !matches!(step, "ok" | "name_dot" | "zero_partitions") {
                continue;
            }
            // Each version of "ok" creates its own topic; "duplicate" repeats the first.
            let topics = if step == "ok" {
                let name = if version == 2 { "oracle-ct".to_string() } else { format!("oracle-ct-v{version}") };
                vec![creatable(&name, 2, -1, &[("retention.ms", "60000"), ("cleanup.policy", "delete")])]
            } else {
                topics.clone()
            };
            let r = create(t, version, topics, validate)?;
            let mut flat = crate::flatten::flatten_debug(&r);
            // The full list of effective configs (v5+) is compared separately.
            flat.retain(|k, _| !k.contains(".configs["));
            crate::normalize(&mut flat);
            obs.record_map(format!("{step}.v{version}"), flat);
            if step == "ok" && version == 7 {
                let configs: BTreeMap<String, String> = r
                    .topics
                    .iter()
                    .flat_map(|t| t.configs.iter().flatten())
                    .filter(|c| ["retention.ms", "cleanup.policy", "segment.bytes", "max.message.bytes", "min.insync.replicas"].contains(&c.name.as_str()))
                    .map(|c| (c.name.to_string(), format!("{:?} read_only={} source={} sensitive={}", c.value, c.read_only, c.config_source, c.is_sensitive)))
                    .collect();
                obs.record_map("ok.configs", configs);
            }
        }
    }
    Ok(())
}

fn produce(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    let id = setup_topic(t, "oracle-produce", 2, &[])?;
    let b = batch(5, -1, -1, -1, Compression::None, TS);
    produce_ok(t, produce_req("oracle-produce", id, 0, b.clone(), -1))?;
    produce_ok(t, produce_req("oracle-produce", id, 1, b.clone(), -1))?;
    for version in [3, 7, 9, 11, 12] {
        let r = produce_to(t, version, produce_req("oracle-produce", id, 0, b.clone(), -1))?;
        obs.record(format!("ok.v{version}"), &r);
    }
    let r = produce_to(t, 13, produce_req("", id, 1, b.clone(), -1))?;
    obs.record("ok_by_topic_id.v13", &r);
    let r = produce_to(t, 13, produce_req("", uuid::Uuid::from_u128(42), 0, b.clone(), -1))?;
    obs.record("unknown_topic_id.v13", &r);
    let r = produce_to(t, 9, produce_req("oracle-produce", id, 1, batch(3, -1, -1, -1, Compression::Zstd, TS), 1))?;
    obs.record("zstd_acks1", &r);
    let r = produce_to(t, 9, produce_req("oracle-nope", id, 0, b.clone(), -1))?;
    obs.record("unknown_topic", &r);
    let r = produce_to(t, 9, produce_req("oracle-produce", id, 7, b.clone(), -1))?;
    obs.record("unknown_partition", &r);
    let r = produce_to(t, 9, produce_req("oracle-produce", id, 0, b.clone(), 2))?;
    obs.record("acks_2", &r);
    let mut corrupt = b.to_vec();
    let last = corrupt.len() - 2;
    corrupt[last] ^= 0x55;
    let r = produce_to(t, 9, produce_req("oracle-produce", id, 0, Bytes::from(corrupt), -1))?;
    obs.record("corrupt_crc", &r);
    // One record of 1.1 MB: above both brokers' default max.message.bytes (1048588).
    let big = chronik_proto::batch::encode(
        &[(None, Some(Bytes::from(vec![b'z'; 1_100_000])))],
        &chronik_proto::batch::Producer::plain(Compression::None, TS),
    );
    let r = produce_to(t, 9, produce_req("oracle-produce", id, 0, big, -1))?;
    obs.record("oversized", &r);
    let r = produce_to(t, 9, produce_req("oracle-produce", id, 0, Bytes::new(), -1))?;
    obs.record("empty_records", &r);
    // Two hours ahead: past Kafka 4's log.message.timestamp.after.max.ms (1 hour).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let r = produce_to(t, 9, produce_req("oracle-produce", id, 0, batch(2, -1, -1, -1, Compression::None, now + 2 * 3_600_000), -1))?;
    obs.record("timestamp_2h_ahead", &r);
    let r = produce_to(t, 9, produce_req("oracle-produce", id, 0, Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 1]), -1))?;
    obs.record("truncated_batch", &r);
    let r = produce_to(t, 9, produce_req("__consumer_offsets", id, 0, b.clone(), -1));
    // Kafka creates __consumer_offsets lazily too; only the error code matters.
    obs.note("internal_topic", r.map(|r| format!("{:?}", r.responses.iter().flat_map(|t| t.partition_responses.iter().map(|p| p.error_code)).collect::<Vec<_>>()))?);
    Ok(())
}

fn produce_idempotent(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    let id = setup_topic(t, "oracle-idem", 1, &[])?;
    produce_ok(t, produce_req("oracle-idem", id, 0, batch(1, -1, -1, -1, Compression::None, TS), -1))?;
    for (step, txn) in [("init_empty_transactional_id", "")] {
        let req = InitProducerIdRequest::default().with_transactional_id(Some(TransactionalId(s(txn)))).with_transaction_timeout_ms(60_000);
        let r = call(t, ApiKey::InitProducerId, 4, RequestKind::InitProducerId(req), |r| Ok(answer!(r, InitProducerId)))?;
        obs.record(step, &r);
    }
    // Kafka answers COORDINATOR_LOAD_IN_PROGRESS until its producer id block is allocated.
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let req = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(i32::MAX);
        let r = call(t, ApiKey::InitProducerId, 4, RequestKind::InitProducerId(req), |r| Ok(answer!(r, InitProducerId)))?;
        if r.error_code != 14 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    obs.record("init_producer_id", &r);
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    let topic = "oracle-idem";
    let mut step = |obs: &mut Obs, name: &str, records: Bytes| -> anyhow::Result<()> {
        let r = produce_to(t, 9, produce_req(topic, id, 0, records, -1))?;
        obs.record(name, &r);
        Ok(())
    };
    step(obs, "seq0", batch(5, pid, epoch, 0, Compression::None, TS))?;
    step(obs, "seq0_again_duplicate", batch(5, pid, epoch, 0, Compression::None, TS))?;
    step(obs, "seq5", batch(5, pid, epoch, 5, Compression::Lz4, TS))?;
    step(obs, "seq5_again_duplicate", batch(5, pid, epoch, 5, Compression::Lz4, TS))?;
    step(obs, "seq0_old_duplicate", batch(5, pid, epoch, 0, Compression::None, TS))?;
    step(obs, "gap_seq20", batch(5, pid, epoch, 20, Compression::None, TS))?;
    step(obs, "next_seq10", batch(5, pid, epoch, 10, Compression::None, TS))?;
    step(obs, "overlap_seq12", batch(5, pid, epoch, 12, Compression::None, TS))?;
    step(obs, "older_epoch", batch(5, pid, epoch - 1, 15, Compression::None, TS))?;
    step(obs, "newer_epoch_seq0", batch(5, pid, epoch + 1, 0, Compression::None, TS))?;
    step(obs, "newer_epoch_seq7", batch(5, pid, epoch + 2, 7, Compression::None, TS))?;
    // Six more batches push seq0 of this epoch out of the five cached ones.
    for i in 0..6 {
        step(obs, &format!("fill_cache_{i}"), batch(1, pid, epoch + 1, 5 + i, Compression::None, TS))?;
    }
    step(obs, "behind_cache_retry", batch(5, pid, epoch + 1, 0, Compression::None, TS))?;
    step(obs, "unknown_pid_seq0", batch(2, pid + 1000, 0, 0, Compression::None, TS))?;
    step(obs, "unknown_pid_seq3", batch(2, pid + 2000, 0, 3, Compression::None, TS))?;
    Ok(())
}

fn fetch(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    let topic = "oracle-fetch";
    let id = setup_topic(t, topic, 1, &[])?;
    for (i, codec) in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd].into_iter().enumerate() {
        produce_ok(t, produce_req(topic, id, 0, batch(4 + i, -1, -1, -1, codec, TS + 1000 * i as i64), -1))?;
    }
    for version in [4, 7, 11, 12] {
        let r = call(t, ApiKey::Fetch, version, RequestKind::Fetch(fetch_req(topic, id, 0, 0, 1 << 20, 50 << 20)), |r| Ok(answer!(r, Fetch)))?;
        record_fetch(obs, &format!("all.v{version}"), r)?;
    }
    for version in [13, 16, 17] {
        let r = call(t, ApiKey::Fetch, version, RequestKind::Fetch(fetch_req("", id, 0, 0, 1 << 20, 50 << 20)), |r| Ok(answer!(r, Fetch)))?;
        record_fetch(obs, &format!("all_by_id.v{version}"), r)?;
    }
    let cases: Vec<(&str, i64, i32, i32)> = vec![
        ("middle_of_batch", 6, 1 << 20, 50 << 20),
        ("at_end", 30, 1 << 20, 50 << 20),
        ("beyond_end", 31, 1 << 20, 50 << 20),
        ("far_beyond_end", 5000, 1 << 20, 50 << 20),
        ("negative_offset", -1, 1 << 20, 50 << 20),
        ("partition_max_10_bytes", 0, 10, 50 << 20),
        ("max_10_bytes", 0, 1 << 20, 10),
        ("partition_max_one_batch", 0, 120, 50 << 20),
    ];
    for (step, offset, pmax, max) in cases {
        let r = call(t, ApiKey::Fetch, 12, RequestKind::Fetch(fetch_req(topic, id, 0, offset, pmax, max)), |r| Ok(answer!(r, Fetch)))?;
        record_fetch(obs, step, r)?;
    }
    let r = call(t, ApiKey::Fetch, 12, RequestKind::Fetch(fetch_req("oracle-nope", id, 0, 0, 1 << 20, 1 << 20)), |r| Ok(answer!(r, Fetch)))?;
    record_fetch(obs, "unknown_topic.v12", r)?;
    let r = call(t, ApiKey::Fetch, 12, RequestKind::Fetch(fetch_req(topic, id, 5, 0, 1 << 20, 1 << 20)), |r| Ok(answer!(r, Fetch)))?;
    record_fetch(obs, "unknown_partition.v12", r)?;
    let r = call(t, ApiKey::Fetch, 13, RequestKind::Fetch(fetch_req("", uuid::Uuid::from_u128(42), 0, 0, 1 << 20, 1 << 20)), |r| Ok(answer!(r, Fetch)))?;
    record_fetch(obs, "unknown_topic_id.v13", r)?;
    // Leader epoch checks (KIP-320): epoch 0 is current, 5 is from the future.
    let mut req = fetch_req(topic, id, 0, 0, 1 << 20, 1 << 20);
    req.topics[0].partitions[0].current_leader_epoch = 5;
    let r = call(t, ApiKey::Fetch, 12, RequestKind::Fetch(req), |r| Ok(answer!(r, Fetch)))?;
    record_fetch(obs, "future_leader_epoch", r)?;
    Ok(())
}

fn list_offsets(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    let topic = "oracle-lo";
    let id = setup_topic(t, topic, 2, &[])?;
    // Partition 0: three batches of 3 records at TS, TS+1000, TS+2000 (+0..2 within a batch).
    for i in 0..3 {
        produce_ok(t, produce_req(topic, id, 0, batch(3, -1, -1, -1, Compression::None, TS + 1000 * i), -1))?;
    }
    let queries: Vec<(&str, i64)> = vec![
        ("earliest", -2),
        ("latest", -1),
        ("max_timestamp", -3),
        ("earliest_local", -4),
        ("before_all", TS - 10),
        ("exact_first", TS),
        ("inside_batch", TS + 1),
        ("between_batches", TS + 1500),
        ("exact_last", TS + 2002),
        ("after_all", TS + 5000),
    ];
    for version in [1, 4, 7, 8, 9, 10] {
        for (name, ts) in &queries {
            if (*ts == -3 && version < 7) || (*ts == -4 && version < 8) {
                continue;
            }
            let req = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default().with_name(tn(topic)).with_partitions(vec![
                ListOffsetsPartition::default().with_partition_index(0).with_timestamp(*ts),
                ListOffsetsPartition::default().with_partition_index(1).with_timestamp(*ts),
            ])]);
            let r = call(t, ApiKey::ListOffsets, version, RequestKind::ListOffsets(req), |r| Ok(answer!(r, ListOffsets)))?;
            obs.record(format!("{name}.v{version}"), &r);
        }
    }
    let req = ListOffsetsRequest::default().with_topics(vec![
        ListOffsetsTopic::default().with_name(tn("oracle-nope")).with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)]),
        ListOffsetsTopic::default().with_name(tn(topic)).with_partitions(vec![ListOffsetsPartition::default().with_partition_index(9).with_timestamp(-1)]),
    ]);
    let r = call(t, ApiKey::ListOffsets, 7, RequestKind::ListOffsets(req), |r| Ok(answer!(r, ListOffsets)))?;
    obs.record("unknown_topic_and_partition", &r);
    let req = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(tn(topic))
        .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1).with_current_leader_epoch(7)])]);
    let r = call(t, ApiKey::ListOffsets, 7, RequestKind::ListOffsets(req), |r| Ok(answer!(r, ListOffsets)))?;
    obs.record("future_leader_epoch", &r);
    Ok(())
}

fn find_coordinator(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    wait_coordinator(t, "oracle-g1")?;
    for version in 0..=6 {
        let req = if version >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("oracle-g1"), s("")])
        } else {
            FindCoordinatorRequest::default().with_key(s("oracle-g1"))
        };
        let r = call(t, ApiKey::FindCoordinator, version, RequestKind::FindCoordinator(req), |r| Ok(answer!(r, FindCoordinator)))?;
        obs.record(format!("group.v{version}"), &r);
    }
    Ok(())
}

fn join(group: &str, member: &str, session_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]))])
}

fn classic_group(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    let g = "oracle-classic";
    wait_coordinator(t, g)?;
    let j = |t: &mut Target, v: i16, req: JoinGroupRequest| call(t, ApiKey::JoinGroup, v, RequestKind::JoinGroup(req), |r| Ok(answer!(r, JoinGroup)));
    obs.record("join_empty_group_id", &j(t, 9, join("", "", 10_000))?);
    obs.record("join_session_too_short", &j(t, 9, join(g, "", 1))?);
    obs.record("join_session_too_long", &j(t, 9, join(g, "", 3_600_000))?);
    obs.record("join_unknown_member", &j(t, 9, join(g, "nobody", 10_000))?);
    let first = j(t, 9, join(g, "", 10_000))?;
    obs.record("join_needs_member_id", &first);
    let member = first.member_id.to_string();
    let joined = j(t, 9, join(g, &member, 10_000))?;
    if joined.leader.to_string() != member {
        bail!("the only member is not the leader: {joined:?}");
    }
    let mut flat = crate::flatten::flatten_debug(&joined);
    flat.retain(|k, _| !k.starts_with("leader") && !k.starts_with("members"));
    crate::normalize(&mut flat);
    flat.insert("members".into(), joined.members.len().to_string());
    obs.record_map("join", flat);
    let generation = joined.generation_id;
    let mut other = join(g, "", 10_000);
    other.protocol_type = s("connect");
    obs.record("join_other_protocol_type", &j(t, 9, other)?);

    let sync = |t: &mut Target, generation: i32, member: &str| {
        let req = SyncGroupRequest::default()
            .with_group_id(gid(g))
            .with_generation_id(generation)
            .with_member_id(s(member))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(vec![SyncGroupRequestAssignment::default().with_member_id(s(member)).with_assignment(Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0]))]);
        call(t, ApiKey::SyncGroup, 5, RequestKind::SyncGroup(req), |r| Ok(answer!(r, SyncGroup)))
    };
    obs.record("sync_wrong_generation", &sync(t, generation + 1, &member)?);
    obs.record("sync_unknown_member", &sync(t, generation, "nobody")?);
    obs.record("sync", &sync(t, generation, &member)?);

    let hb = |t: &mut Target, group: &str, generation: i32, member: &str| {
        let req = HeartbeatRequest::default().with_group_id(gid(group)).with_generation_id(generation).with_member_id(s(member));
        call(t, ApiKey::Heartbeat, 4, RequestKind::Heartbeat(req), |r| Ok(answer!(r, Heartbeat)))
    };
    obs.record("heartbeat", &hb(t, g, generation, &member)?);
    obs.record("heartbeat_wrong_generation", &hb(t, g, generation + 1, &member)?);
    obs.record("heartbeat_unknown_member", &hb(t, g, generation, "nobody")?);
    obs.record("heartbeat_unknown_group", &hb(t, "oracle-nogroup", 1, "nobody")?);
    obs.record("heartbeat_empty_group_id", &hb(t, "", 1, "nobody")?);

    let describe = |t: &mut Target, v: i16, groups: &[&str]| {
        let req = DescribeGroupsRequest::default().with_groups(groups.iter().map(|x| gid(x)).collect());
        call(t, ApiKey::DescribeGroups, v, RequestKind::DescribeGroups(req), |r| Ok(answer!(r, DescribeGroups)))
    };
    obs.record("describe.v5", &describe(t, 5, &[g, "oracle-nogroup"])?);
    obs.record("describe.v6", &describe(t, 6, &[g, "oracle-nogroup"])?);

    let leave = |t: &mut Target, v: i16, member: &str| {
        let req = if v >= 3 {
            LeaveGroupRequest::default().with_group_id(gid(g)).with_members(vec![MemberIdentity::default().with_member_id(s(member))])
        } else {
            LeaveGroupRequest::default().with_group_id(gid(g)).with_member_id(s(member))
        };
        call(t, ApiKey::LeaveGroup, v, RequestKind::LeaveGroup(req), |r| Ok(answer!(r, LeaveGroup)))
    };
    obs.record("leave_unknown_member.v1", &leave(t, 1, "nobody")?);
    obs.record("leave_unknown_member.v5", &leave(t, 5, "nobody")?);
    obs.record("leave.v5", &leave(t, 5, &member)?);
    obs.record("describe_after_leave", &describe(t, 5, &[g])?);

    let list = |t: &mut Target, v: i16| call(t, ApiKey::ListGroups, v, RequestKind::ListGroups(ListGroupsRequest::default()), |r| Ok(answer!(r, ListGroups)));
    let mut listed = list(t, 5)?;
    listed.groups.retain(|x| x.group_id.starts_with("oracle-"));
    obs.record("list.v5", &listed);

    let delete = |t: &mut Target, groups: &[&str]| {
        let req = DeleteGroupsRequest::default().with_groups_names(groups.iter().map(|x| gid(x)).collect());
        call(t, ApiKey::DeleteGroups, 2, RequestKind::DeleteGroups(req), |r| Ok(answer!(r, DeleteGroups)))
    };
    obs.record("delete", &delete(t, &[g, "oracle-nogroup", ""])?);
    obs.record("delete_again", &delete(t, &[g])?);
    Ok(())
}

fn commit_req(group: &str, generation: i32, member: &str, topic: &str, partition: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(tn(topic)).with_partitions(vec![
            OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(0)
                .with_committed_metadata(Some(s("meta"))),
        ])])
}

fn offsets(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    let topic = "oracle-off";
    setup_topic(t, topic, 2, &[])?;
    let g = "oracle-offsets";
    wait_coordinator(t, g)?;
    let commit = |t: &mut Target, v: i16, req: OffsetCommitRequest| call(t, ApiKey::OffsetCommit, v, RequestKind::OffsetCommit(req), |r| Ok(answer!(r, OffsetCommit)));
    obs.record("commit_simple.v2", &commit(t, 2, commit_req(g, -1, "", topic, 0, 5))?);
    obs.record("commit_simple.v8", &commit(t, 8, commit_req(g, -1, "", topic, 1, 7))?);
    obs.record("commit_unknown_topic", &commit(t, 8, commit_req(g, -1, "", "oracle-nope", 0, 1))?);
    obs.record("commit_unknown_partition", &commit(t, 8, commit_req(g, -1, "", topic, 9, 1))?);
    obs.record("commit_generation_on_empty", &commit(t, 8, commit_req(g, 3, "nobody", topic, 0, 9))?);
    obs.record("commit_empty_group_id", &commit(t, 8, commit_req("", -1, "", topic, 0, 9))?);
    let mut big = commit_req(g, -1, "", topic, 0, 9);
    big.topics[0].partitions[0].committed_metadata = Some(s(&"m".repeat(5000)));
    obs.record("commit_metadata_too_large", &commit(t, 8, big)?);

    let fetch_v7 = |t: &mut Target, group: &str| {
        let req = OffsetFetchRequest::default()
            .with_group_id(gid(group))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default().with_name(tn(topic)).with_partition_indexes(vec![0, 1, 5])]));
        call(t, ApiKey::OffsetFetch, 7, RequestKind::OffsetFetch(req), |r| Ok(answer!(r, OffsetFetch)))
    };
    obs.record("fetch.v7", &fetch_v7(t, g)?);
    obs.record("fetch_unknown_group.v7", &fetch_v7(t, "oracle-nogroup")?);
    let req = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default().with_group_id(gid(g)).with_topics(None),
        OffsetFetchRequestGroup::default().with_group_id(gid("oracle-nogroup")).with_topics(None),
    ]);
    let r = call(t, ApiKey::OffsetFetch, 8, RequestKind::OffsetFetch(req), |r| Ok(answer!(r, OffsetFetch)))?;
    obs.record("fetch_all.v8", &r);

    let delete = |t: &mut Target, group: &str, topic: &str| {
        let req = OffsetDeleteRequest::default().with_group_id(gid(group)).with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(tn(topic))
            .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)])]);
        call(t, ApiKey::OffsetDelete, 0, RequestKind::OffsetDelete(req), |r| Ok(answer!(r, OffsetDelete)))
    };
    obs.record("delete_offsets", &delete(t, g, topic)?);
    obs.record("delete_offsets_unknown_group", &delete(t, "oracle-nogroup", topic)?);
    obs.record("delete_offsets_unknown_topic", &delete(t, g, "oracle-nope")?);
    obs.record("fetch_after_delete.v7", &fetch_v7(t, g)?);
    Ok(())
}

fn consumer_group(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    let topic = "oracle-cg";
    setup_topic(t, topic, 2, &[])?;
    let g = "oracle-848";
    wait_coordinator(t, g)?;
    let hb = |t: &mut Target, req: ConsumerGroupHeartbeatRequest| {
        call(t, ApiKey::ConsumerGroupHeartbeat, 0, RequestKind::ConsumerGroupHeartbeat(req), |r| Ok(answer!(r, ConsumerGroupHeartbeat)))
    };
    let base = || {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(gid(g))
            .with_member_id(s(&uuid::Uuid::from_u128(7).simple().to_string()[..22]))
            .with_rebalance_timeout_ms(10_000)
            .with_subscribed_topic_names(Some(vec![tn(topic)]))
            .with_topic_partitions(Some(vec![]))
    };
    obs.record("unknown_member_epoch_5", &hb(t, base().with_member_epoch(5))?);
    obs.record("join_without_topics", &hb(t, base().with_member_epoch(0).with_subscribed_topic_names(None))?);
    obs.record("join_bad_assignor", &hb(t, base().with_member_epoch(0).with_server_assignor(Some(s("nope"))))?);
    obs.record("join_empty_group_id", &hb(t, base().with_group_id(gid("")).with_member_epoch(0))?);
    obs.record("join_empty_member_id", &hb(t, base().with_member_id(s("")).with_member_epoch(0))?);
    let joined = hb(t, base().with_member_epoch(0))?;
    obs.record("join", &joined);
    obs.record("stale_epoch", &hb(t, base().with_member_epoch(joined.member_epoch + 3))?);
    obs.record("leave", &hb(t, base().with_member_epoch(-1))?);
    // A classic request for a consumer group, and the other way round.
    let r = call(t, ApiKey::JoinGroup, 9, RequestKind::JoinGroup(join(g, "", 10_000)), |r| Ok(answer!(r, JoinGroup)))?;
    obs.record("classic_join_on_consumer_group", &r);
    Ok(())
}

fn delete_topics(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    for name in ["oracle-del-a", "oracle-del-b", "oracle-del-c"] {
        setup_topic(t, name, 1, &[])?;
    }
    let c_id = wait_ready(t, "oracle-del-c")?;
    let by_name = |t: &mut Target, v: i16, names: &[&str]| {
        let req = if v >= 6 {
            DeleteTopicsRequest::default().with_topics(names.iter().map(|n| DeleteTopicState::default().with_name(Some(tn(n)))).collect())
        } else {
            DeleteTopicsRequest::default().with_topic_names(names.iter().map(|n| tn(n)).collect())
        };
        call(t, ApiKey::DeleteTopics, v, RequestKind::DeleteTopics(req.with_timeout_ms(10_000)), |r| Ok(answer!(r, DeleteTopics)))
    };
    obs.record("v1", &by_name(t, 1, &["oracle-del-a", "oracle-nope"])?);
    obs.record("v4_again", &by_name(t, 4, &["oracle-del-a"])?);
    obs.record("v6", &by_name(t, 6, &["oracle-del-b", "bad name!"])?);
    obs.record("internal", &by_name(t, 6, &["__consumer_offsets"])?);
    let req = DeleteTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        DeleteTopicState::default().with_name(None).with_topic_id(c_id),
        DeleteTopicState::default().with_name(None).with_topic_id(uuid::Uuid::from_u128(99)),
    ]);
    let r = call(t, ApiKey::DeleteTopics, 6, RequestKind::DeleteTopics(req), |r| Ok(answer!(r, DeleteTopics)))?;
    obs.record("v6_by_id", &r);
    // Gone from Metadata (Kafka deletes asynchronously: wait, bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metadata_of(t, 12, Some(vec!["oracle-del-a", "oracle-del-b", "oracle-del-c"]), false)?;
        if m.topics.iter().all(|x| x.error_code == 3) || Instant::now() > deadline {
            obs.record("metadata_after", &m);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn create_partitions(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    setup_topic(t, "oracle-cp", 1, &[])?;
    let grow = |t: &mut Target, name: &str, count: i32, validate_only: bool| {
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(10_000)
            .with_validate_only(validate_only)
            .with_topics(vec![CreatePartitionsTopic::default().with_name(tn(name)).with_count(count).with_assignments(None)]);
        call(t, ApiKey::CreatePartitions, 3, RequestKind::CreatePartitions(req), |r| Ok(answer!(r, CreatePartitions)))
    };
    obs.record("validate_only_to_3", &grow(t, "oracle-cp", 3, true)?);
    obs.record("to_3", &grow(t, "oracle-cp", 3, false)?);
    obs.record("same_count", &grow(t, "oracle-cp", 3, false)?);
    obs.record("fewer", &grow(t, "oracle-cp", 2, false)?);
    obs.record("unknown_topic", &grow(t, "oracle-nope", 2, false)?);
    // The internal offsets topic (groups are placed by its partition count).
    wait_coordinator(t, "oracle-cp-group")?;
    obs.record("internal", &grow(t, "__consumer_offsets", 60, true)?);
    wait_ready(t, "oracle-cp")?;
    let m = metadata_of(t, 12, Some(vec!["oracle-cp"]), false)?;
    obs.note("partitions_after", m.topics[0].partitions.len());
    Ok(())
}

/// Topic and broker configs: for every config both brokers describe, its value,
/// source, read-only and sensitive flags. Configs only Kafka has are listed
/// under `unsupported.*`.
fn describe_configs(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    setup_topic(t, "oracle-dc", 1, &[("retention.ms", "123456"), ("cleanup.policy", "delete")])?;
    let describe = |t: &mut Target, v: i16, rtype: i8, name: &str, keys: Option<Vec<&str>>| {
        let req = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(rtype)
            .with_resource_name(s(name))
            .with_configuration_keys(keys.map(|k| k.into_iter().map(s).collect()))]);
        call(t, ApiKey::DescribeConfigs, v, RequestKind::DescribeConfigs(req), |r| Ok(answer!(r, DescribeConfigs)))
    };
    for (step, v, rtype, name) in [("topic.v1", 1, 2, "oracle-dc"), ("topic.v4", 4, 2, "oracle-dc")] {
        let r = describe(t, v, rtype, name, None)?;
        obs.record_map(step, config_table(&r));
    }
    let r = describe(t, 4, 2, "oracle-dc", Some(vec!["retention.ms", "no.such.config"]))?;
    obs.record("topic_keys", &r);
    let r = describe(t, 4, 2, "oracle-nope", None)?;
    obs.record("unknown_topic", &r);
    let r = describe(t, 4, 2, "bad name!", None)?;
    obs.record("invalid_topic", &r);
    let r = describe(t, 4, 4, "1", None)?;
    let mut table = config_table(&r);
    // Where each broker listens differs by design.
    table.retain(|k, _| !k.starts_with("config.advertised.listeners.value"));
    obs.record_map("broker", table);
    let r = describe(t, 4, 4, "7", None)?;
    let codes: Vec<i16> = r.results.iter().map(|x| x.error_code).collect();
    obs.note("other_broker", format!("{codes:?}"));
    Ok(())
}

fn config_table(r: &DescribeConfigsResponse) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for res in &r.results {
        out.insert("error_code".into(), res.error_code.to_string());
        for c in &res.configs {
            let n = c.name.as_str();
            out.insert(format!("config.{n}.value"), format!("{:?}", c.value));
            out.insert(format!("config.{n}.read_only"), c.read_only.to_string());
            out.insert(format!("config.{n}.source"), c.config_source.to_string());
            out.insert(format!("config.{n}.sensitive"), c.is_sensitive.to_string());
            out.insert(format!("config.{n}.type"), c.config_type.to_string());
        }
    }
    out
}

/// Changing topic configs with IncrementalAlterConfigs and the legacy
/// AlterConfigs: every operation, each refusal, and the configs afterwards.
fn alter_configs(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource as LegacyResource, AlterableConfig as LegacyConfig};
    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    setup_topic(t, "oracle-ac", 1, &[("retention.ms", "1000000")])?;
    let incremental = |t: &mut Target, rtype: i8, name: &str, ops: &[(&str, i8, Option<&str>)], validate_only: bool| {
        let configs = ops.iter().map(|(n, op, v)| AlterableConfig::default().with_name(s(n)).with_config_operation(*op).with_value(v.map(s))).collect();
        let req = IncrementalAlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![AlterConfigsResource::default().with_resource_type(rtype).with_resource_name(s(name)).with_configs(configs)]);
        call(t, ApiKey::IncrementalAlterConfigs, 1, RequestKind::IncrementalAlterConfigs(req), |r| Ok(answer!(r, IncrementalAlterConfigs)))
    };
    let legacy = |t: &mut Target, v: i16, name: &str, sets: &[(&str, Option<&str>)]| {
        let configs = sets.iter().map(|(n, v)| LegacyConfig::default().with_name(s(n)).with_value(v.map(s))).collect();
        let req = AlterConfigsRequest::default()
            .with_resources(vec![LegacyResource::default().with_resource_type(2).with_resource_name(s(name)).with_configs(configs)]);
        call(t, ApiKey::AlterConfigs, v, RequestKind::AlterConfigs(req), |r| Ok(answer!(r, AlterConfigs)))
    };
    let overrides = |t: &mut Target| -> anyhow::Result<BTreeMap<String, String>> {
        // Kafka answers a config change before its brokers have applied the
        // metadata record: give it a moment, so both describe settled state.
        std::thread::sleep(Duration::from_millis(300));
        let keys = ["retention.ms", "segment.bytes", "max.message.bytes", "cleanup.policy", "segment.ms"];
        let req = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("oracle-ac"))
            .with_configuration_keys(Some(keys.iter().map(|k| s(k)).collect()))]);
        let r = call(t, ApiKey::DescribeConfigs, 4, RequestKind::DescribeConfigs(req), |r| Ok(answer!(r, DescribeConfigs)))?;
        Ok(config_table(&r).into_iter().filter(|(k, _)| k.ends_with(".value") || k.ends_with(".source")).collect())
    };
    obs.record("set", &incremental(t, 2, "oracle-ac", &[("retention.ms", 0, Some("5000")), ("segment.bytes", 0, Some("1048576"))], false)?);
    obs.record_map("after_set", overrides(t)?);
    obs.record("delete", &incremental(t, 2, "oracle-ac", &[("segment.bytes", 1, None)], false)?);
    obs.record("delete_unset", &incremental(t, 2, "oracle-ac", &[("segment.ms", 1, None)], false)?);
    obs.record_map("after_delete", overrides(t)?);
    obs.record("append_list", &incremental(t, 2, "oracle-ac", &[("cleanup.policy", 2, Some("delete"))], false)?);
    obs.record("append_scalar", &incremental(t, 2, "oracle-ac", &[("retention.ms", 2, Some("7"))], false)?);
    obs.record("subtract_scalar", &incremental(t, 2, "oracle-ac", &[("retention.ms", 3, Some("7"))], false)?);
    obs.record("unknown_op", &incremental(t, 2, "oracle-ac", &[("retention.ms", 9, Some("7"))], false)?);
    obs.record("unknown_config", &incremental(t, 2, "oracle-ac", &[("no.such.config", 0, Some("1"))], false)?);
    obs.record("bad_value", &incremental(t, 2, "oracle-ac", &[("retention.ms", 0, Some("soon"))], false)?);
    obs.record("below_minimum", &incremental(t, 2, "oracle-ac", &[("retention.ms", 0, Some("-5"))], false)?);
    obs.record("set_null", &incremental(t, 2, "oracle-ac", &[("retention.ms", 0, None)], false)?);
    obs.record("duplicate", &incremental(t, 2, "oracle-ac", &[("retention.ms", 0, Some("1")), ("retention.ms", 0, Some("2"))], false)?);
    obs.record("one_bad_of_two", &incremental(t, 2, "oracle-ac", &[("segment.bytes", 0, Some("2097152")), ("retention.ms", 0, Some("x"))], false)?);
    obs.record("validate_only", &incremental(t, 2, "oracle-ac", &[("segment.bytes", 0, Some("2097152"))], true)?);
    obs.record_map("after_refusals", overrides(t)?);
    obs.record("unknown_topic", &incremental(t, 2, "oracle-nope", &[("retention.ms", 0, Some("1"))], false)?);
    obs.record("invalid_topic", &incremental(t, 2, "bad name!", &[("retention.ms", 0, Some("1"))], false)?);
    obs.record("empty_topic", &incremental(t, 2, "", &[("retention.ms", 0, Some("1"))], false)?);
    obs.record("unknown_type", &incremental(t, 77, "x", &[("retention.ms", 0, Some("1"))], false)?);
    obs.record("broker_static", &incremental(t, 4, "1", &[("node.id", 0, Some("5"))], false)?);
    obs.record("broker_other", &incremental(t, 4, "7", &[("node.id", 0, Some("5"))], false)?);
    for v in 0..=2 {
        obs.record(format!("legacy.v{v}"), &legacy(t, v, "oracle-ac", &[("max.message.bytes", Some("20000"))])?);
    }
    obs.record_map("after_legacy", overrides(t)?);
    obs.record("legacy_null", &legacy(t, 2, "oracle-ac", &[("max.message.bytes", None)])?);
    obs.record("legacy_unknown_config", &legacy(t, 2, "oracle-ac", &[("no.such.config", Some("1"))])?);
    obs.record("legacy_unknown_topic", &legacy(t, 2, "oracle-nope", &[("retention.ms", Some("1"))])?);
    obs.record("legacy_empty", &legacy(t, 2, "oracle-ac", &[])?);
    obs.record_map("after_legacy_empty", overrides(t)?);
    Ok(())
}

/// OffsetForLeaderEpoch as consumers (KIP-320) and followers use it: known,
/// later and earlier epochs, current-epoch checks, empty and unknown partitions.
fn offset_for_leader_epoch(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    let id = setup_topic(t, "oracle-ofle", 2, &[])?;
    produce_ok(t, produce_req("oracle-ofle", id, 0, batch(3, -1, -1, -1, Compression::None, TS), -1))?;
    let ask = |t: &mut Target, v: i16, topic: &str, parts: &[(i32, i32, i32)]| {
        let partitions = parts
            .iter()
            .map(|(p, epoch, current)| OffsetForLeaderPartition::default().with_partition(*p).with_leader_epoch(*epoch).with_current_leader_epoch(*current))
            .collect();
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default().with_topic(tn(topic)).with_partitions(partitions)]);
        call(t, ApiKey::OffsetForLeaderEpoch, v, RequestKind::OffsetForLeaderEpoch(req), |r| Ok(answer!(r, OffsetForLeaderEpoch)))
    };
    let cases = [(0, 0, -1), (0, 0, 0), (0, 7, -1), (0, -1, -1), (0, 0, 5), (1, 0, -1), (9, 0, -1)];
    for v in 2..=4 {
        obs.record(format!("v{v}"), &ask(t, v, "oracle-ofle", &cases)?);
    }
    obs.record("unknown_topic", &ask(t, 4, "oracle-nope", &[(0, 0, -1)])?);
    Ok(())
}

/// DescribeCluster (KIP-700): the broker endpoint at every version, with and
/// without authorized operations and fenced brokers, and a request for the
/// controller endpoint sent to a broker.
fn describe_cluster(t: &mut Target, obs: &mut Obs) -> anyhow::Result<()> {
    let ask = |t: &mut Target, v: i16, endpoint: i8, ops: bool, fenced: bool| {
        let req = DescribeClusterRequest::default()
            .with_endpoint_type(endpoint)
            .with_include_cluster_authorized_operations(ops)
            .with_include_fenced_brokers(fenced);
        call(t, ApiKey::DescribeCluster, v, RequestKind::DescribeCluster(req), |r| Ok(answer!(r, DescribeCluster)))
    };
    for v in 0..=2 {
        obs.record(format!("v{v}"), &ask(t, v, 1, false, false)?);
        obs.record(format!("v{v}.ops"), &ask(t, v, 1, true, v >= 2)?);
    }
    obs.record("controllers_from_a_broker", &ask(t, 1, 2, false, false)?);
    Ok(())
}
