//! Broker tests: requests in, responses out, on a `SimDisk` and a manual clock.

use std::sync::Arc;

use bytes::Bytes;
use chronik_proto::api::SUPPORTED;
use chronik_proto::ResponseError::*;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

use super::*;
use crate::clock::ManualClock;
use crate::disk::{FaultConfig, SimDisk};
use crate::testing::batch;

fn broker_on(disk: &SimDisk) -> Broker {
    Broker::open(BrokerConfig::default(), Arc::new(disk.clone()), Arc::new(ManualClock::new(1_000_000)), Arc::new(Rng::seeded(1))).unwrap()
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

fn create(b: &Broker, topic: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
    let configs = configs
        .iter()
        .map(|(k, v)| CreatableTopicConfig::default().with_name(StrBytes::from_string(k.to_string())).with_value(Some(StrBytes::from_string(v.to_string()))))
        .collect();
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)
        .with_configs(configs)]);
    let ResponseKind::CreateTopics(r) = b.handle(7, RequestKind::CreateTopics(req)) else { panic!() };
    r.topics[0].error_code
}

fn produce(b: &Broker, topic: &str, partition: i32, records: Vec<u8>, acks: i16) -> (i16, i64, usize) {
    let req = ProduceRequest::default().with_acks(acks).with_timeout_ms(1000).with_topic_data(vec![TopicProduceData::default()
        .with_name(name(topic))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(Bytes::from(records)))])]);
    let out = b.produce(req, 9);
    let r = &out.response.responses[0].partition_responses[0];
    (r.error_code, r.base_offset, out.waits.len())
}

fn fetch(b: &Broker, topic: &str, partition: i32, offset: i64) -> (i16, i64, Bytes) {
    let req = FetchRequest::default().with_max_bytes(1 << 20).with_session_epoch(-1).with_topics(vec![FetchTopic::default()
        .with_topic(name(topic))
        .with_partitions(vec![FetchPartition::default().with_partition(partition).with_fetch_offset(offset).with_partition_max_bytes(1 << 20)])]);
    let out = b.fetch(&req, 11);
    let p = &out.response.responses[0].partitions[0];
    (p.error_code, p.high_watermark, p.records.clone().unwrap_or_default())
}

fn list_offset(b: &Broker, topic: &str, timestamp: i64) -> (i16, i64, i64) {
    let req = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(name(topic))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp)])]);
    let ResponseKind::ListOffsets(r) = b.handle(9, RequestKind::ListOffsets(req)) else { panic!() };
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp)
}

#[test]
fn produce_is_visible_after_flush_and_survives_restart() {
    let disk = SimDisk::new(1);
    let b = broker_on(&disk);
    assert_eq!(create(&b, "events", 2, &[("retention.ms", "3600000")]), 0);
    for (i, c) in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd].into_iter().enumerate() {
        let (err, base, waits) = produce(&b, "events", 1, batch(10, 5000 + i as i64 * 100, None, c), -1);
        assert_eq!((err, base, waits), (0, i as i64 * 10, 1));
    }
    // Not durable yet: consumers see nothing.
    assert_eq!(fetch(&b, "events", 1, 0).1, 0);
    assert!(b.needs_flush());
    assert!(b.flush());
    let (err, hw, records) = fetch(&b, "events", 1, 0);
    assert_eq!((err, hw), (0, 50));
    let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records.clone()).unwrap();
    let values: Vec<_> = sets.iter().flat_map(|s| s.records.iter().map(|r| (r.offset, r.value.clone().unwrap()))).collect();
    assert_eq!(values.len(), 50);
    assert_eq!(values[25].0, 25);
    assert_eq!(values[25].1, Bytes::from("value-5200-5"));

    assert_eq!(list_offset(&b, "events", -2).1, 0);
    assert_eq!(list_offset(&b, "events", -1).1, 0, "partition 0 is empty");
    drop(b);
    let b = broker_on(&disk);
    let (_, hw, again) = fetch(&b, "events", 1, 0);
    assert_eq!(hw, 50);
    assert_eq!(again, records);
    assert_eq!(fetch(&b, "events", 1, 51).0, OffsetOutOfRange.code());
    assert_eq!(fetch(&b, "events", 1, 50).0, 0);
}

#[test]
fn crash_keeps_every_flushed_record() {
    for seed in 0..20 {
        let disk = SimDisk::with_faults(seed, FaultConfig { torn_writes: true, ..Default::default() });
        let b = broker_on(&disk);
        create(&b, "t", 1, &[]);
        produce(&b, "t", 0, batch(5, 1, None, Compression::None), -1);
        b.flush();
        produce(&b, "t", 0, batch(5, 2, None, Compression::Lz4), -1);
        drop(b);
        disk.crash();
        let b = broker_on(&disk);
        let (err, hw, _) = fetch(&b, "t", 0, 0);
        assert_eq!(err, 0);
        assert!(hw == 5 || hw == 10, "seed {seed}: hw {hw}");
    }
}

#[test]
fn idempotent_retries_are_not_written_twice() {
    let disk = SimDisk::new(2);
    let b = broker_on(&disk);
    create(&b, "t", 1, &[]);
    let ResponseKind::InitProducerId(pid) = b.handle(4, RequestKind::InitProducerId(InitProducerIdRequest::default().with_transactional_id(None))) else { panic!() };
    let pid = pid.producer_id.0;
    let first = batch(3, 10, Some((pid, 0, 0)), Compression::Zstd);
    assert_eq!(produce(&b, "t", 0, first.clone(), -1).1, 0);
    assert_eq!(produce(&b, "t", 0, batch(2, 11, Some((pid, 0, 3)), Compression::None), -1).1, 3);
    // The retry is answered with the original offset; the log does not grow.
    assert_eq!(produce(&b, "t", 0, first, -1), (0, 0, 1));
    // A gap is refused.
    assert_eq!(produce(&b, "t", 0, batch(1, 12, Some((pid, 0, 9)), Compression::None), -1).0, OutOfOrderSequenceNumber.code());
    b.flush();
    assert_eq!(fetch(&b, "t", 0, 0).1, 5);
    // Producer ids are never reused across restarts.
    drop(b);
    let b = broker_on(&disk);
    let ResponseKind::InitProducerId(next) = b.handle(4, RequestKind::InitProducerId(InitProducerIdRequest::default().with_transactional_id(None))) else { panic!() };
    assert!(next.producer_id.0 > pid);
    // And the dedup state survived.
    assert_eq!(produce(&b, "t", 0, batch(2, 11, Some((pid, 0, 3)), Compression::None), -1).1, 3);
}

#[test]
fn bad_input_gets_kafka_errors() {
    let disk = SimDisk::new(3);
    let b = broker_on(&disk);
    assert_eq!(create(&b, "bad/name", 1, &[]), InvalidTopicException.code());
    assert_eq!(create(&b, "", 1, &[]), InvalidTopicException.code());
    assert_eq!(create(&b, &"x".repeat(250), 1, &[]), InvalidTopicException.code());
    assert_eq!(create(&b, "ok", 0, &[]), InvalidPartitions.code());
    assert_eq!(create(&b, "ok", 1, &[("no.such.config", "1")]), InvalidConfig.code());
    assert_eq!(create(&b, "ok", 1, &[("retention.ms", "forever")]), InvalidConfig.code());
    assert_eq!(create(&b, "ok", 1, &[]), 0);
    assert_eq!(create(&b, "ok", 1, &[]), TopicAlreadyExists.code());

    let mut corrupt = batch(3, 1, None, Compression::None);
    let n = corrupt.len();
    corrupt[n - 2] ^= 1;
    assert_eq!(produce(&b, "ok", 0, corrupt, -1).0, CorruptMessage.code());
    let mut truncated = batch(3, 1, None, Compression::None);
    truncated.truncate(40);
    assert_eq!(produce(&b, "ok", 0, truncated, -1).0, CorruptMessage.code());
    assert_eq!(produce(&b, "ok", 0, vec![], -1).0, InvalidRecord.code());
    assert_eq!(produce(&b, "ok", 5, batch(1, 1, None, Compression::None), -1).0, UnknownTopicOrPartition.code());
    assert_eq!(produce(&b, "nope", 0, batch(1, 1, None, Compression::None), -1).0, UnknownTopicOrPartition.code());
    assert_eq!(produce(&b, "ok", 0, batch(1, 1, None, Compression::None), 2).0, InvalidRequiredAcks.code());
    assert_eq!(create(&b, "small", 1, &[("max.message.bytes", "100")]), 0);
    assert_eq!(produce(&b, "small", 0, batch(20, 1, None, Compression::None), 1).0, MessageTooLarge.code());
    // Nothing was written by any of that.
    b.flush();
    assert_eq!(fetch(&b, "ok", 0, 0).1, 0);
    assert_eq!(list_offset(&b, "nope", -1).0, UnknownTopicOrPartition.code());
}

#[test]
fn metadata_auto_creates_and_delete_really_deletes() {
    let disk = SimDisk::new(4);
    let b = broker_on(&disk);
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name("auto")))]));
    let ResponseKind::Metadata(m) = b.handle(12, RequestKind::Metadata(req)) else { panic!() };
    assert_eq!(m.topics[0].error_code, 0);
    assert_eq!(m.topics[0].partitions.len(), 1);
    let id = m.topics[0].topic_id;
    assert!(!id.is_nil());
    produce(&b, "auto", 0, batch(4, 1, None, Compression::None), 1);
    b.flush();

    let req = DeleteTopicsRequest::default().with_topic_names(vec![name("auto")]);
    let ResponseKind::DeleteTopics(d) = b.handle(5, RequestKind::DeleteTopics(req)) else { panic!() };
    assert_eq!(d.responses[0].error_code, 0);
    assert_eq!(fetch(&b, "auto", 0, 0).0, UnknownTopicOrPartition.code());
    // Re-created, it is empty and has a new id.
    assert_eq!(create(&b, "auto", 1, &[]), 0);
    b.flush();
    assert_eq!(fetch(&b, "auto", 0, 0).1, 0);
    assert_ne!(b.topic("auto").unwrap().record.id, id);
    drop(b);
    let b = broker_on(&disk);
    assert_eq!(fetch(&b, "auto", 0, 0).1, 0);
    assert_eq!(disk.list(std::path::Path::new("topics")).unwrap().len(), 1);
}

#[test]
fn create_partitions_grows_topics() {
    let disk = SimDisk::new(5);
    let b = broker_on(&disk);
    create(&b, "t", 1, &[]);
    let grow = |count| {
        let req = CreatePartitionsRequest::default().with_topics(vec![kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default().with_name(name("t")).with_count(count)]);
        let ResponseKind::CreatePartitions(r) = b.handle(3, RequestKind::CreatePartitions(req)) else { panic!() };
        r.results[0].error_code
    };
    assert_eq!(grow(3), 0);
    assert_eq!(grow(2), InvalidPartitions.code());
    assert_eq!(produce(&b, "t", 2, batch(1, 1, None, Compression::None), 1).0, 0);
    drop(b);
    assert_eq!(broker_on(&disk).topic("t").unwrap().partitions.len(), 3);
}

#[test]
fn list_offsets_by_timestamp() {
    let disk = SimDisk::new(6);
    let b = broker_on(&disk);
    create(&b, "t", 1, &[]);
    for i in 0..10 {
        produce(&b, "t", 0, batch(3, 1000 + i * 10, None, Compression::Snappy), -1);
    }
    b.flush();
    assert_eq!(list_offset(&b, "t", 1031), (0, 10, 1031));
    assert_eq!(list_offset(&b, "t", 1035), (0, 12, 1040));
    assert_eq!(list_offset(&b, "t", 5000), (0, -1, -1));
    assert_eq!(list_offset(&b, "t", -3), (0, 29, 1092));
    assert_eq!(list_offset(&b, "t", -1).1, 30);
}

/// Every response the broker builds must encode at every version it
/// advertises (the codec refuses fields a version does not have).
#[test]
fn responses_encode_at_every_supported_version() {
    let disk = SimDisk::new(7);
    let b = broker_on(&disk);
    create(&b, "t", 2, &[("retention.ms", "1000")]);
    produce(&b, "t", 0, batch(3, 1, None, Compression::None), -1);
    b.flush();
    let id = b.topic("t").unwrap().record.id;
    for s in SUPPORTED {
        for v in s.version_min..=s.version_max {
            let response = match s.key {
                ApiKey::Produce => {
                    let req = ProduceRequest::default().with_acks(-1).with_topic_data(vec![TopicProduceData::default()
                        .with_name(name("t"))
                        .with_topic_id(id)
                        .with_partition_data(vec![
                            PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch(1, 2, None, Compression::None)))),
                            PartitionProduceData::default().with_index(9).with_records(Some(Bytes::from(batch(1, 2, None, Compression::None)))),
                        ])]);
                    ResponseKind::Produce(b.produce(req, v).response)
                }
                ApiKey::Fetch => {
                    let req = FetchRequest::default().with_topics(vec![FetchTopic::default().with_topic(name("t")).with_topic_id(id).with_partitions(vec![
                        FetchPartition::default().with_partition(0).with_partition_max_bytes(1000),
                        FetchPartition::default().with_partition(1).with_fetch_offset(99),
                    ])]);
                    ResponseKind::Fetch(b.fetch(&req, v).response)
                }
                ApiKey::Metadata => {
                    let topics = if v >= 10 {
                        vec![MetadataRequestTopic::default().with_name(Some(name("t"))), MetadataRequestTopic::default().with_topic_id(id).with_name(None), MetadataRequestTopic::default().with_name(Some(name("a/b")))]
                    } else {
                        vec![MetadataRequestTopic::default().with_name(Some(name("t"))), MetadataRequestTopic::default().with_name(Some(name("a/b")))]
                    };
                    b.handle(v, RequestKind::Metadata(MetadataRequest::default().with_topics(Some(topics))))
                }
                ApiKey::CreateTopics => {
                    let req = CreateTopicsRequest::default().with_topics(vec![
                        CreatableTopic::default().with_name(name(&format!("new{v}"))).with_num_partitions(1).with_replication_factor(1),
                        CreatableTopic::default().with_name(name("t")).with_num_partitions(1).with_replication_factor(1),
                    ]);
                    b.handle(v, RequestKind::CreateTopics(req))
                }
                ApiKey::DeleteTopics => {
                    let req = if v >= 6 {
                        DeleteTopicsRequest::default().with_topics(vec![kafka_protocol::messages::delete_topics_request::DeleteTopicState::default().with_name(Some(name(&format!("new{v}"))))])
                    } else {
                        DeleteTopicsRequest::default().with_topic_names(vec![name(&format!("new{v}")), name("missing")])
                    };
                    b.handle(v, RequestKind::DeleteTopics(req))
                }
                ApiKey::ListOffsets => b.handle(v, RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default().with_name(name("t")).with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])]))),
                ApiKey::DescribeConfigs => {
                    let res = vec![
                        kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default().with_resource_type(2).with_resource_name(StrBytes::from_static_str("t")),
                        kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default().with_resource_type(4).with_resource_name(StrBytes::from_static_str("1")),
                    ];
                    b.handle(v, RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(res).with_include_synonyms(true).with_include_documentation(true)))
                }
                ApiKey::DescribeCluster => b.handle(v, RequestKind::DescribeCluster(DescribeClusterRequest::default().with_endpoint_type(1).with_include_cluster_authorized_operations(true))),
                ApiKey::OffsetForLeaderEpoch => {
                    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
                    let req = OffsetForLeaderEpochRequest::default().with_replica_id((-1).into()).with_topics(vec![OffsetForLeaderTopic::default()
                        .with_topic(name("t"))
                        .with_partitions(vec![
                            OffsetForLeaderPartition::default().with_partition(0).with_leader_epoch(0).with_current_leader_epoch(-1),
                            OffsetForLeaderPartition::default().with_partition(9).with_leader_epoch(0),
                        ])]);
                    b.handle(v, RequestKind::OffsetForLeaderEpoch(req))
                }
                ApiKey::AlterConfigs => {
                    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
                    let res = vec![
                        AlterConfigsResource::default().with_resource_type(2).with_resource_name(StrBytes::from_static_str("t")).with_configs(vec![
                            AlterableConfig::default().with_name(StrBytes::from_static_str("retention.ms")).with_value(Some(StrBytes::from_static_str("1000"))),
                        ]),
                        AlterConfigsResource::default().with_resource_type(2).with_resource_name(StrBytes::from_static_str("missing")),
                    ];
                    b.handle(v, RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(res)))
                }
                ApiKey::IncrementalAlterConfigs => {
                    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
                    let res = vec![
                        AlterConfigsResource::default().with_resource_type(2).with_resource_name(StrBytes::from_static_str("t")).with_configs(vec![
                            AlterableConfig::default().with_name(StrBytes::from_static_str("segment.ms")).with_config_operation(0).with_value(Some(StrBytes::from_static_str("60000"))),
                        ]),
                        AlterConfigsResource::default().with_resource_type(4).with_resource_name(StrBytes::from_static_str("1")).with_configs(vec![
                            AlterableConfig::default().with_name(StrBytes::from_static_str("node.id")).with_config_operation(0).with_value(Some(StrBytes::from_static_str("2"))),
                        ]),
                    ];
                    b.handle(v, RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default().with_resources(res)))
                }
                ApiKey::CreatePartitions => b.handle(v, RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default().with_name(name("t")).with_count(1)]))),
                ApiKey::InitProducerId => b.handle(v, RequestKind::InitProducerId(InitProducerIdRequest::default().with_transactional_id(None))),
                ApiKey::ApiVersions => b.handle(v, RequestKind::ApiVersions(ApiVersionsRequest::default())),
                ApiKey::FindCoordinator
                | ApiKey::JoinGroup
                | ApiKey::SyncGroup
                | ApiKey::Heartbeat
                | ApiKey::LeaveGroup
                | ApiKey::OffsetCommit
                | ApiKey::OffsetFetch
                | ApiKey::OffsetDelete
                | ApiKey::ListGroups
                | ApiKey::DescribeGroups
                | ApiKey::DeleteGroups
                | ApiKey::ConsumerGroupHeartbeat
                | ApiKey::ConsumerGroupDescribe => continue, // group_tests.rs
                other => panic!("no encode test for {other:?}"),
            };
            let mut buf = bytes::BytesMut::new();
            response.encode(&mut buf, v).unwrap_or_else(|e| panic!("{:?} v{v} does not encode: {e:#}", s.key));
        }
    }
}


#[test]
fn the_longest_legal_topic_name_works_on_a_real_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let disk: Arc<dyn crate::disk::Disk> = Arc::new(crate::disk::FsDisk::new(dir.path()).unwrap());
    let b = Broker::open(BrokerConfig::default(), disk.clone(), Arc::new(ManualClock::new(1)), Arc::new(Rng::seeded(1))).unwrap();
    let long = "t".repeat(249);
    assert_eq!(create(&b, &long, 2, &[]), 0);
    assert_eq!(produce(&b, &long, 1, batch(3, 1, None, Compression::None), -1).0, 0);
    b.flush();
    assert_eq!(fetch(&b, &long, 1, 0).1, 3);
    drop(b);
    let b = Broker::open(BrokerConfig::default(), disk, Arc::new(ManualClock::new(1)), Arc::new(Rng::seeded(1))).unwrap();
    assert_eq!(fetch(&b, &long, 1, 0).1, 3);
}

#[test]
fn record_timestamps_must_be_near_the_broker_clock() {
    let disk = SimDisk::new(4);
    let b = broker_on(&disk); // its clock reads 1_000_000
    assert_eq!(create(&b, "ts", 1, &[("message.timestamp.before.max.ms", "1000"), ("message.timestamp.after.max.ms", "1000")]), 0);
    assert_eq!(produce(&b, "ts", 0, batch(3, 999_000, None, Compression::None), 1).0, 0);
    assert_eq!(produce(&b, "ts", 0, batch(1, 998_999, None, Compression::None), 1).0, InvalidTimestamp.code());
    // Records get timestamp, timestamp + 1, ...: only the last of these is ahead by more than 1000 ms.
    let req = ProduceRequest::default().with_acks(1).with_timeout_ms(1000).with_topic_data(vec![TopicProduceData::default()
        .with_name(name("ts"))
        .with_partition_data(vec![PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(Bytes::from(batch(3, 1_000_999, None, Compression::Zstd))))])]);
    let out = b.produce(req, 9);
    let r = &out.response.responses[0].partition_responses[0];
    assert_eq!(r.error_code, InvalidTimestamp.code());
    assert_eq!(r.record_errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(), vec![2]);
    assert_eq!(r.log_start_offset, 0);
    // The default window (Kafka 4's): unbounded behind, one hour ahead.
    assert_eq!(create(&b, "default", 1, &[]), 0);
    assert_eq!(produce(&b, "default", 0, batch(1, 1, None, Compression::None), 1).0, 0);
    assert_eq!(produce(&b, "default", 0, batch(1, 1_000_000 + 3_600_001, None, Compression::None), 1).0, InvalidTimestamp.code());
    b.flush();
    assert_eq!(fetch(&b, "ts", 0, 0).1, 3, "refused batches wrote nothing");
}

fn incremental(b: &Broker, topic: &str, ops: &[(&str, i8, Option<&str>)], validate_only: bool) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = ops
        .iter()
        .map(|(n, op, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(n.to_string()))
                .with_config_operation(*op)
                .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default().with_resource_type(2).with_resource_name(StrBytes::from_string(topic.into())).with_configs(configs)]);
    let ResponseKind::IncrementalAlterConfigs(r) = b.handle(1, RequestKind::IncrementalAlterConfigs(req)) else { panic!() };
    r.responses[0].error_code
}

#[test]
fn topic_configs_change_at_run_time_and_survive_a_crash() {
    let disk = SimDisk::new(5);
    let b = broker_on(&disk);
    assert_eq!(create(&b, "c", 1, &[("max.message.bytes", "100000")]), 0);
    // Refused as a whole: nothing changes.
    assert_eq!(incremental(&b, "c", &[("max.message.bytes", 0, Some("10")), ("retention.ms", 0, Some("soon"))], false), InvalidConfig.code());
    assert_eq!(incremental(&b, "c", &[("no.such", 0, Some("1"))], false), InvalidConfig.code());
    assert_eq!(incremental(&b, "c", &[("retention.ms", 2, Some("1"))], false), InvalidConfig.code(), "append to a scalar");
    assert_eq!(incremental(&b, "nope", &[("retention.ms", 0, Some("1"))], false), UnknownTopicOrPartition.code());
    assert_eq!(incremental(&b, "c", &[("max.message.bytes", 0, Some("10"))], true), 0, "validate only");
    assert_eq!(b.topic("c").unwrap().record.configs.get("max.message.bytes").map(String::as_str), Some("100000"));
    assert_eq!(produce(&b, "c", 0, batch(1, 1, None, Compression::None), -1).0, 0);

    // A smaller max.message.bytes and search.enabled take effect at once.
    assert_eq!(incremental(&b, "c", &[("max.message.bytes", 0, Some("10")), ("search.enabled", 0, Some("true"))], false), 0);
    assert_eq!(produce(&b, "c", 0, batch(1, 1, None, Compression::None), -1).0, MessageTooLarge.code());
    // Retention: the log rolls at segment.ms and drops the old segment.
    assert_eq!(incremental(&b, "c", &[("max.message.bytes", 1, None), ("segment.bytes", 0, Some("1024"))], false), 0);
    for _ in 0..20 {
        assert_eq!(produce(&b, "c", 0, batch(5, 1, None, Compression::None), -1).0, 0);
    }
    b.flush();
    assert_eq!(incremental(&b, "c", &[("retention.bytes", 0, Some("1024"))], false), 0);
    b.enforce_retention();
    let start = b.topic("c").unwrap().partition(0).unwrap().log_start_offset().unwrap();
    assert!(start > 0, "retention.bytes applied to the running log");

    // Persisted before the answer: a crash right after keeps the change.
    let want = b.topic("c").unwrap().record.configs.clone();
    drop(b);
    disk.crash();
    let b = broker_on(&disk);
    assert_eq!(b.topic("c").unwrap().record.configs, want);
    assert_eq!(want.get("search.enabled").map(String::as_str), Some("true"));
    assert!(!want.contains_key("max.message.bytes"));
}

#[test]
fn search_hides_records_retention_deleted_before_the_indexer_noticed() {
    use crate::search::indexer::Indexer;
    use crate::search::live::Live;
    use crate::search::mem::MemBackend;
    use crate::search::service::{SearchRequest, SearchService};
    use crate::search::{Query, SearchIndexes, SortField, SortOrder};

    let disk = SimDisk::new(6);
    let b = Arc::new(broker_on(&disk));
    assert_eq!(create(&b, "s", 1, &[("search.enabled", "true"), ("segment.bytes", "1024")]), 0);
    for _ in 0..20 {
        assert_eq!(produce(&b, "s", 0, batch(5, 1, None, Compression::None), -1).0, 0);
    }
    b.flush();
    let indexes = Arc::new(SearchIndexes::new(Arc::new(MemBackend::default())));
    let mut indexer = Indexer::new(b.clone(), indexes.clone(), Arc::new(Live::default()), 0);
    indexer.run_once(0);
    let service = SearchService::new(b.clone(), indexes);
    let req = SearchRequest { query: Query::All, from: 0, size: 5, sort: vec![SortField::Offset(SortOrder::Asc)], search_after: None, partitions: None };
    assert_eq!(service.search("s", &req).unwrap().total, 100);

    // Retention deletes the oldest segments; the indexer has not run since.
    b.set_topic_configs("s", [("search.enabled", "true"), ("segment.bytes", "1024"), ("retention.bytes", "1024")].map(|(k, v)| (k.to_string(), v.to_string())).into()).unwrap();
    b.enforce_retention();
    let start = b.topic("s").unwrap().partition(0).unwrap().log_start_offset().unwrap();
    assert!(start > 0);
    let r = service.search("s", &req).unwrap();
    assert_eq!(r.total, (100 - start) as u64, "the total counts only records the log still has");
    assert_eq!(r.hits.iter().map(|h| h.doc.offset).collect::<Vec<_>>(), (start..start + 5).collect::<Vec<_>>(), "a full page");
}

#[test]
fn offset_for_leader_epoch_answers_from_the_epoch_cache() {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    let disk = SimDisk::new(8);
    let b = broker_on(&disk);
    assert_eq!(create(&b, "e", 1, &[]), 0);
    assert_eq!(produce(&b, "e", 0, batch(4, 1, None, Compression::None), -1).0, 0);
    b.flush();
    let ask = |topic: &str, partition: i32, epoch: i32, current: i32| {
        let req = OffsetForLeaderEpochRequest::default().with_replica_id((-1).into()).with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![OffsetForLeaderPartition::default().with_partition(partition).with_leader_epoch(epoch).with_current_leader_epoch(current)])]);
        let ResponseKind::OffsetForLeaderEpoch(r) = b.handle(4, RequestKind::OffsetForLeaderEpoch(req)) else { panic!() };
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    assert_eq!(ask("e", 0, 0, 0), (0, 0, 4));
    assert_eq!(ask("e", 0, 3, -1), (0, 0, 4), "a later epoch: the latest one here");
    assert_eq!(ask("e", 0, -1, -1), (0, -1, -1), "before any epoch");
    assert_eq!(ask("e", 0, 0, 1), (UnknownLeaderEpoch.code(), -1, -1));
    assert_eq!(ask("e", 1, 0, -1), (UnknownTopicOrPartition.code(), -1, -1));
    assert_eq!(ask("nope", 0, 0, -1), (UnknownTopicOrPartition.code(), -1, -1));
}

#[test]
fn a_search_index_rebuild_indexes_the_log_again_without_repeating_live_hits() {
    use crate::search::indexer::Indexer;
    use crate::search::live::Live;
    use crate::search::mem::MemBackend;
    use crate::search::service::{SearchRequest, SearchService};
    use crate::search::{Query, SearchIndexes, SortField, SortOrder};

    let disk = SimDisk::new(10);
    let b = Arc::new(broker_on(&disk));
    assert_eq!(create(&b, "r", 2, &[("search.enabled", "true")]), 0);
    for p in 0..2 {
        assert_eq!(produce(&b, "r", p, batch(5, 1, None, Compression::None), -1).0, 0);
    }
    b.flush();
    let indexes = Arc::new(SearchIndexes::new(Arc::new(MemBackend::default())));
    let live = Arc::new(Live::default());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    live.subscribe("r", Query::All, Box::new(move |d| {
        sink_seen.lock().unwrap().push((d.partition, d.offset));
        true
    }));
    let mut indexer = Indexer::new(b.clone(), indexes.clone(), live, 0);
    indexer.run_once(0);
    let service = SearchService::new(b.clone(), indexes);
    let all = SearchRequest { query: Query::All, from: 0, size: 100, sort: vec![SortField::Offset(SortOrder::Asc)], search_after: None, partitions: None };
    assert_eq!(service.search("r", &all).unwrap().total, 10);
    assert_eq!(seen.lock().unwrap().len(), 10);

    service.rebuild("r").unwrap();
    assert!(service.rebuild("nope").is_err());
    indexer.run_once(1);
    assert_eq!(service.search("r", &all).unwrap().total, 10, "every record indexed again, once");
    assert_eq!(seen.lock().unwrap().len(), 10, "live subscribers do not see old records again");
    assert_eq!(produce(&b, "r", 0, batch(1, 1, None, Compression::None), -1).0, 0);
    b.flush();
    indexer.run_once(2);
    assert_eq!(seen.lock().unwrap().len(), 11, "new records still reach them");
}

#[test]
fn metadata_and_describe_cluster_follow_the_cluster_view() {
    let disk = SimDisk::new(11);
    let b = broker_on(&disk);
    b.set_cluster_view(Some(ClusterView {
        controller_id: 3,
        brokers: vec![(1, "h1".into(), 9092, false), (2, "h2".into(), 9092, true), (3, "h3".into(), 9092, false)],
        topics: Default::default(),
        cluster_id: None,
    }));
    let ResponseKind::Metadata(m) = b.handle(12, RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![])))) else { panic!() };
    assert_eq!(m.brokers.iter().map(|x| x.node_id.0).collect::<Vec<_>>(), vec![1, 3], "fenced brokers are not offered to clients");
    assert_eq!(m.controller_id.0, 3);
    let ask = |fenced: bool| {
        let req = DescribeClusterRequest::default().with_endpoint_type(1).with_include_fenced_brokers(fenced);
        let ResponseKind::DescribeCluster(r) = b.handle(2, RequestKind::DescribeCluster(req)) else { panic!() };
        r.brokers.iter().map(|x| (x.broker_id.0, x.is_fenced)).collect::<Vec<_>>()
    };
    assert_eq!(ask(false), vec![(1, false), (3, false)]);
    assert_eq!(ask(true), vec![(1, false), (2, true), (3, false)]);
    b.set_cluster_view(None);
    assert_eq!(ask(false), vec![(1, false)]);
}
