//! Property-based fuzzing of the request path: arbitrary bytes, and valid
//! requests with random mutations, go through the frame decoder and — when
//! they decode — through the broker. Nothing may panic, and the broker's
//! invariants must hold afterwards. (Run longer with PROPTEST_CASES=100000.)

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chronik_core::broker::{is_group_request, Broker, GroupAnswer};
use chronik_core::group::Ctx;
use chronik_core::clock::ManualClock;
use chronik_core::config::BrokerConfig;
use chronik_core::disk::SimDisk;
use chronik_core::rng::Rng;
use chronik_proto::frame::{decode_request, encode_request};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use chronik_proto::batch::Producer;
use kafka_protocol::records::Compression;
use proptest::prelude::*;

// As in the binary: the codec pre-sizes arrays from untrusted counts.
#[global_allocator]
static ALLOCATOR: chronik_server::alloc::LazyLargeAlloc = chronik_server::alloc::LazyLargeAlloc;

fn broker() -> Broker {
    let b = Broker::open(BrokerConfig::default(), Arc::new(SimDisk::new(0)), Arc::new(ManualClock::new(1)), Arc::new(Rng::seeded(0))).unwrap();
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_num_partitions(2)
        .with_replication_factor(1)]);
    b.handle(7, RequestKind::CreateTopics(req));
    b
}

fn records(compression: Compression) -> Bytes {
    let rs: Vec<_> = (0..4).map(|_| (Some(Bytes::from_static(b"k")), Some(Bytes::from(vec![b'v'; 20])))).collect();
    let producer = Producer { producer_id: 5, producer_epoch: 0, base_sequence: 0, compression, timestamp: 10 };
    chronik_proto::batch::encode(&rs, &producer)
}

/// Valid frames of several APIs, without their length prefix.
fn seeds() -> Vec<Vec<u8>> {
    let mk = |key: ApiKey, version: i16, body: RequestKind| {
        let header = RequestHeader::default().with_request_api_key(key as i16).with_request_api_version(version).with_correlation_id(1);
        encode_request(&header, &body).unwrap()[4..].to_vec()
    };
    let t = TopicName(StrBytes::from_static_str("t"));
    vec![
        mk(ApiKey::Produce, 9, RequestKind::Produce(ProduceRequest::default().with_acks(-1).with_topic_data(vec![TopicProduceData::default()
            .with_name(t.clone())
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records(Compression::None)))])]))),
        mk(ApiKey::Produce, 3, RequestKind::Produce(ProduceRequest::default().with_acks(1).with_topic_data(vec![TopicProduceData::default()
            .with_name(t.clone())
            .with_partition_data(vec![PartitionProduceData::default().with_index(1).with_records(Some(records(Compression::Gzip)))])]))),
        mk(ApiKey::Fetch, 12, RequestKind::Fetch(FetchRequest::default().with_max_bytes(1000).with_topics(vec![FetchTopic::default()
            .with_topic(t.clone())
            .with_partitions(vec![FetchPartition::default().with_partition_max_bytes(100)])]))),
        mk(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default().with_topics(None))),
        mk(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default())),
        mk(ApiKey::CreateTopics, 5, RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default().with_name(TopicName(StrBytes::from_static_str("u"))).with_num_partitions(1)]))),
        mk(ApiKey::ListOffsets, 7, RequestKind::ListOffsets(ListOffsetsRequest::default())),
        mk(ApiKey::DescribeConfigs, 4, RequestKind::DescribeConfigs(DescribeConfigsRequest::default())),
        mk(ApiKey::JoinGroup, 9, RequestKind::JoinGroup(JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_session_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"\0\x03\0\0\0\x01\0\x01t\xff\xff\xff\xff"))]))),
        mk(ApiKey::OffsetCommit, 9, RequestKind::OffsetCommit(OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default().with_name(t.clone()).with_partitions(vec![
                offset_commit_request::OffsetCommitRequestPartition::default().with_committed_offset(3),
            ])]))),
        mk(ApiKey::ConsumerGroupHeartbeat, 1, RequestKind::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("c")))
            .with_member_id(StrBytes::from_static_str("m"))
            .with_rebalance_timeout_ms(1000)
            .with_subscribed_topic_names(Some(vec![t.clone()]))
            .with_subscribed_topic_regex(Some(StrBytes::from_static_str("t.*")))
            .with_topic_partitions(Some(vec![])))),
        mk(ApiKey::OffsetFetch, 9, RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(GroupId(StrBytes::from_static_str("g"))).with_topics(None),
        ]))),
    ]
}

fn run(broker: &Broker, frame: Vec<u8>) {
    let Ok(request) = decode_request(Bytes::from(frame)) else { return };
    let v = request.api_version;
    match request.body {
        RequestKind::Produce(p) => {
            let out = broker.produce(p, v);
            let _ = out.response;
        }
        RequestKind::Fetch(f) => {
            let _ = broker.fetch(&f, v);
        }
        body if is_group_request(&body) => {
            let response = match broker.handle_group(v, body, &Ctx::default()) {
                GroupAnswer::Now(r) => Some(r),
                GroupAnswer::Later { reply, .. } => reply.take(),
                GroupAnswer::Durable { complete, .. } => {
                    broker.flush();
                    Some(complete(true))
                }
            };
            broker.group_tick();
            if let Some(response) = response {
                let mut buf = BytesMut::new();
                response.encode(&mut buf, v).unwrap();
            }
        }
        body => {
            let response = broker.handle(v, body);
            let mut buf = BytesMut::new();
            // Whatever we answer must encode.
            response.encode(&mut buf, v).unwrap();
        }
    }
    broker.flush();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..256)) {
        run(&broker(), frame);
    }

    #[test]
    fn mutated_requests_never_panic(
        which in 0usize..12,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let b = broker();
        let mut frame = seeds()[which].clone();
        for (at, x) in flips {
            let i = at % frame.len();
            frame[i] ^= x;
        }
        if let Some(c) = cut {
            frame.truncate(c % (frame.len() + 1));
        }
        run(&b, frame);
    }
}
