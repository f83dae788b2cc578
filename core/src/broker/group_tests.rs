//! The group coordinator inside the broker: its records in
//! `__consumer_offsets`, recovery after a crash, and every group response
//! encoding at every advertised version.

use std::sync::Arc;

use bytes::Bytes;
use chronik_proto::api::SUPPORTED;
use chronik_proto::ResponseError::*;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::*;
use crate::clock::ManualClock;
use crate::disk::SimDisk;
use crate::group::{Ctx, OFFSETS_TOPIC};

pub(super) fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.into())
}

fn open(disk: &SimDisk, clock: &Arc<ManualClock>) -> Broker {
    let mut config = BrokerConfig::default();
    config.group.initial_rebalance_delay_ms = 0;
    config.group.offsets_topic_partitions = 3;
    Broker::open(config, Arc::new(disk.clone()), clock.clone(), Arc::new(Rng::seeded(3))).unwrap()
}

pub(super) fn ctx() -> Ctx {
    Ctx { client_id: "test".into(), client_host: "/127.0.0.1".into() }
}

/// Resolves an answer the way the network layer would, flushing for
/// durable ones. `None` if it is still waiting for the group.
fn resolve(b: &Broker, answer: GroupAnswer) -> Option<ResponseKind> {
    match answer {
        GroupAnswer::Now(r) => Some(r),
        GroupAnswer::Later { reply, .. } => reply.take(),
        GroupAnswer::Durable { waits, complete } => {
            b.flush();
            let durable = waits.iter().all(|w| w.partition.ack_state(w.leader_epoch, w.offset) == super::replication::AckState::Committed);
            Some(complete(durable))
        }
    }
}

fn call(b: &Broker, v: i16, req: RequestKind) -> Option<ResponseKind> {
    resolve(b, b.handle_group(v, req, &ctx()))
}

pub(super) fn join(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(b"\0\x01meta"))])
}

/// A one-member stable group; returns (member id, generation).
fn stable_group(b: &Broker, group: &str) -> (String, i32) {
    let Some(ResponseKind::JoinGroup(first)) = call(b, 9, RequestKind::JoinGroup(join(group, ""))) else { panic!() };
    assert_eq!(first.error_code, MemberIdRequired.code());
    let member = first.member_id.to_string();
    let Some(ResponseKind::JoinGroup(j)) = call(b, 9, RequestKind::JoinGroup(join(group, &member))) else { panic!("join waits") };
    assert_eq!(j.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(&member))
        .with_generation_id(j.generation_id)
        .with_assignments(vec![SyncGroupRequestAssignment::default().with_member_id(s(&member)).with_assignment(Bytes::from_static(b"A"))]);
    let Some(ResponseKind::SyncGroup(r)) = call(b, 5, RequestKind::SyncGroup(sync)) else { panic!("sync waits") };
    assert_eq!(r.error_code, 0);
    (member, j.generation_id)
}

pub(super) fn commit(group: &str, member: &str, generation: i32, topic: &str, partition: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(s(topic))).with_partitions(vec![
            OffsetCommitRequestPartition::default().with_partition_index(partition).with_committed_offset(offset).with_committed_metadata(Some(s("m"))),
        ])])
}

fn fetched(b: &Broker, group: &str, topic: &str, partition: i32) -> i64 {
    let req = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(GroupId(s(group))).with_topics(Some(
        vec![OffsetFetchRequestTopics::default().with_name(TopicName(s(topic))).with_partition_indexes(vec![partition])],
    ))]);
    let Some(ResponseKind::OffsetFetch(r)) = call(b, 9, RequestKind::OffsetFetch(req)) else { panic!() };
    r.groups[0].topics[0].partitions[0].committed_offset
}

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    b.create_topic(name, partitions, Default::default(), false).map_err(|e| e.1).unwrap();
}

#[test]
fn commits_and_groups_survive_a_crash() {
    let disk = SimDisk::new(11);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let b = open(&disk, &clock);
    create_topic(&b, "t", 2);
    let (member, generation) = stable_group(&b, "g");
    let Some(ResponseKind::OffsetCommit(r)) = call(&b, 9, RequestKind::OffsetCommit(commit("g", &member, generation, "t", 1, 17))) else { panic!() };
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetched(&b, "g", "t", 1), 17);
    assert!(b.topic(OFFSETS_TOPIC).is_some(), "created on first use");
    b.flush();
    drop(b);
    disk.crash();
    let b = open(&disk, &clock);
    assert_eq!(fetched(&b, "g", "t", 1), 17, "the commit was acknowledged after its fsync");
    let hb = HeartbeatRequest::default().with_group_id(GroupId(s("g"))).with_member_id(s(&member)).with_generation_id(generation);
    let Some(ResponseKind::Heartbeat(h)) = call(&b, 4, RequestKind::Heartbeat(hb)) else { panic!() };
    assert_eq!(h.error_code, 0, "the member is still known after the restart");
}

#[test]
fn a_commit_is_not_visible_before_it_is_durable() {
    let disk = SimDisk::new(12);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let b = open(&disk, &clock);
    create_topic(&b, "t", 1);
    let answer = b.handle_group(9, RequestKind::OffsetCommit(commit("solo", "", -1, "t", 0, 5)), &ctx());
    let GroupAnswer::Durable { .. } = answer else { panic!("a commit waits for its fsync") };
    assert_eq!(fetched(&b, "solo", "t", 0), -1, "not applied before it is durable");
    drop(answer);
    drop(b);
    disk.crash();
    let b = open(&disk, &clock);
    // The crash may or may not have kept the unsynced record; either way
    // the client was never told it was committed.
    assert!(matches!(fetched(&b, "solo", "t", 0), -1 | 5));
}

#[test]
fn the_internal_topic_is_protected() {
    let disk = SimDisk::new(13);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let b = open(&disk, &clock);
    let Some(ResponseKind::FindCoordinator(r)) =
        call(&b, 4, RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g")])))
    else {
        panic!()
    };
    assert_eq!(r.coordinators[0].error_code, 0);
    assert_eq!(r.coordinators[0].node_id.0, 1);
    let req = ProduceRequest::default().with_acks(1).with_topic_data(vec![produce_request::TopicProduceData::default()
        .with_name(TopicName(s(OFFSETS_TOPIC)))
        .with_partition_data(vec![produce_request::PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(Bytes::from(crate::testing::simple(1, 1))))])]);
    assert_eq!(b.produce(req, 9).response.responses[0].partition_responses[0].error_code, InvalidTopicException.code());
    let req = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s(OFFSETS_TOPIC))]);
    let ResponseKind::DeleteTopics(r) = b.handle(5, RequestKind::DeleteTopics(req)) else { panic!() };
    assert_eq!(r.responses[0].error_code, InvalidTopicException.code());
    assert!(b.topic(OFFSETS_TOPIC).is_some());
    // Nor may they add partitions (a group's partition is a hash over their
    // count: groups would move away from their offsets).
    let req = CreatePartitionsRequest::default().with_topics(vec![create_partitions_request::CreatePartitionsTopic::default()
        .with_name(TopicName(s(OFFSETS_TOPIC)))
        .with_count(60)]);
    let ResponseKind::CreatePartitions(r) = b.handle(3, RequestKind::CreatePartitions(req)) else { panic!() };
    assert_eq!(r.results[0].error_code, InvalidRequest.code());
    assert_eq!(b.topic(OFFSETS_TOPIC).unwrap().partitions.len(), 3);

    // On a broker without it: clients cannot create it with their settings,
    // and a Metadata request creates it as the coordinator would.
    let b = open(&SimDisk::new(14), &clock);
    let req = CreateTopicsRequest::default().with_topics(vec![create_topics_request::CreatableTopic::default()
        .with_name(TopicName(s(OFFSETS_TOPIC)))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let ResponseKind::CreateTopics(r) = b.handle(7, RequestKind::CreateTopics(req)) else { panic!() };
    assert_eq!(r.topics[0].error_code, InvalidRequest.code());
    assert!(b.topic(OFFSETS_TOPIC).is_none());
    let req = MetadataRequest::default().with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s(OFFSETS_TOPIC))))]));
    let ResponseKind::Metadata(r) = b.handle(12, RequestKind::Metadata(req)) else { panic!() };
    assert_eq!((r.topics[0].error_code, r.topics[0].partitions.len(), r.topics[0].is_internal), (0, 3, true));
    assert_eq!(b.topic(OFFSETS_TOPIC).unwrap().record.configs.get("retention.ms").map(String::as_str), Some("-1"));
}

#[test]
fn group_responses_encode_at_every_supported_version() {
    let disk = SimDisk::new(14);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let b = open(&disk, &clock);
    create_topic(&b, "t", 2);
    let topic_id = b.topic("t").unwrap().record.id;
    let mut covered = 0;
    for sup in SUPPORTED {
        for v in sup.version_min..=sup.version_max {
            let g = format!("g-{:?}-{v}", sup.key);
            let (member, generation) = stable_group(&b, &g);
            let req = match sup.key {
                ApiKey::FindCoordinator => RequestKind::FindCoordinator(
                    FindCoordinatorRequest::default().with_key(s(&g)).with_key_type(if v >= 1 { 1 } else { 0 }).with_coordinator_keys(if v >= 4 {
                        vec![s(&g), s("")]
                    } else {
                        vec![]
                    }),
                ),
                ApiKey::JoinGroup => RequestKind::JoinGroup(join(&g, &member).with_group_instance_id(if v >= 5 { Some(s("inst")) } else { None })),
                ApiKey::SyncGroup => RequestKind::SyncGroup(SyncGroupRequest::default().with_group_id(GroupId(s(&g))).with_member_id(s(&member)).with_generation_id(generation)),
                ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(GroupId(s(&g))).with_member_id(s("who")).with_generation_id(generation)),
                ApiKey::LeaveGroup => RequestKind::LeaveGroup(if v >= 3 {
                    LeaveGroupRequest::default().with_group_id(GroupId(s(&g))).with_members(vec![
                        MemberIdentity::default().with_member_id(s(&member)),
                        MemberIdentity::default().with_member_id(s("x")).with_group_instance_id(Some(s("i"))),
                    ])
                } else {
                    LeaveGroupRequest::default().with_group_id(GroupId(s(&g))).with_member_id(s(&member))
                }),
                ApiKey::OffsetCommit => RequestKind::OffsetCommit(commit(&g, &member, generation, "t", 0, 3)),
                ApiKey::OffsetFetch => RequestKind::OffsetFetch(if v >= 8 {
                    OffsetFetchRequest::default().with_groups(vec![
                        OffsetFetchRequestGroup::default().with_group_id(GroupId(s(&g))).with_topics(None),
                        OffsetFetchRequestGroup::default().with_group_id(GroupId(s("nobody"))).with_topics(Some(vec![
                            OffsetFetchRequestTopics::default().with_name(TopicName(s("t"))).with_partition_indexes(vec![0, 1]),
                        ])),
                    ])
                } else {
                    OffsetFetchRequest::default().with_group_id(GroupId(s(&g))).with_topics(Some(vec![
                        OffsetFetchRequestTopic::default().with_name(TopicName(s("t"))).with_partition_indexes(vec![0, 1]),
                    ]))
                }),
                ApiKey::OffsetDelete => RequestKind::OffsetDelete(OffsetDeleteRequest::default().with_group_id(GroupId(s(&g))).with_topics(vec![
                    OffsetDeleteRequestTopic::default().with_name(TopicName(s("t"))).with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)]),
                ])),
                ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
                ApiKey::DescribeGroups => RequestKind::DescribeGroups(
                    DescribeGroupsRequest::default().with_groups(vec![GroupId(s(&g)), GroupId(s("nobody"))]).with_include_authorized_operations(v >= 3),
                ),
                ApiKey::DeleteGroups => RequestKind::DeleteGroups(DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&g)), GroupId(s("nobody"))])),
                ApiKey::ConsumerGroupHeartbeat => {
                    let owned: Vec<consumer_group_heartbeat_request::TopicPartitions> = vec![];
                    let cg = format!("cg-{v}");
                    let join = ConsumerGroupHeartbeatRequest::default()
                        .with_group_id(GroupId(s(&cg)))
                        .with_member_id(s("m1"))
                        .with_member_epoch(0)
                        .with_rebalance_timeout_ms(1000)
                        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
                        .with_topic_partitions(Some(owned));
                    let Some(ResponseKind::ConsumerGroupHeartbeat(r)) = call(&b, v, RequestKind::ConsumerGroupHeartbeat(join.clone())) else { panic!() };
                    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
                    assert_eq!(r.assignment.as_ref().unwrap().topic_partitions[0].topic_id, topic_id);
                    RequestKind::ConsumerGroupHeartbeat(join.with_member_epoch(42))
                }
                ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(
                    ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("cg-1")), GroupId(s(&g)), GroupId(s("nobody"))]),
                ),
                _ => break,
            };
            let response = call(&b, v, req).unwrap_or_else(|| panic!("{:?} v{v} is still waiting", sup.key));
            let mut buf = bytes::BytesMut::new();
            response.encode(&mut buf, v).unwrap_or_else(|e| panic!("{:?} v{v} does not encode: {e:#}", sup.key));
            covered += 1;
        }
    }
    assert!(covered >= 60, "covered {covered} group API versions");
}

#[test]
fn cleaning_keeps_the_latest_records_and_drops_the_rest() {
    let disk = SimDisk::new(15);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut config = BrokerConfig::default();
    config.group.offsets_topic_partitions = 1;
    config.group.offsets_cleanup_bytes = 8 << 10;
    let open = || Broker::open(config.clone(), Arc::new(disk.clone()), clock.clone(), Arc::new(Rng::seeded(3))).unwrap();
    let b = open();
    create_topic(&b, "t", 4);
    for i in 0..400 {
        let r = call(&b, 9, RequestKind::OffsetCommit(commit("solo", "", -1, "t", i % 4, i as i64)));
        let Some(ResponseKind::OffsetCommit(r)) = r else { panic!() };
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
    }
    let size = |b: &Broker| {
        let t = b.topic(OFFSETS_TOPIC).unwrap();
        let g = t.partitions[0].lock();
        let log = g.as_ref().unwrap();
        (log.log_start_offset(), log.size_bytes())
    };
    let (start0, big) = size(&b);
    assert_eq!(start0, 0);
    clock.advance(2_000);
    b.group_tick(); // copies the 4 live records forward
    b.flush();
    clock.advance(2_000);
    b.group_tick(); // deletes what lies below them
    let (start, small) = size(&b);
    assert_eq!(start, 400, "the log now starts at the copies");
    assert!(small < big / 10, "{small} bytes left of {big}");
    drop(b);
    disk.crash();
    let b = open();
    for p in 0..4 {
        assert_eq!(fetched(&b, "solo", "t", p), 396 + p as i64);
    }
}

#[test]
fn a_rotten_offsets_partition_makes_its_groups_unavailable_not_empty() {
    let disk = SimDisk::new(16);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut config = BrokerConfig::default();
    config.group.offsets_topic_partitions = 2;
    let open = || Broker::open(config.clone(), Arc::new(disk.clone()), clock.clone(), Arc::new(Rng::seeded(3))).unwrap();
    let b = open();
    create_topic(&b, "t", 1);
    // "g" lives in partition 1 of 2 and "b" in partition 0 (Java hash parity).
    assert_eq!(crate::group::partition_for("g", 2), 1);
    assert_eq!(crate::group::partition_for("b", 2), 0);
    for g in ["g", "b"] {
        let Some(ResponseKind::OffsetCommit(r)) = call(&b, 9, RequestKind::OffsetCommit(commit(g, "", -1, "t", 0, 7))) else { panic!() };
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
    }
    b.shutdown();
    drop(b);
    let topics = disk.list(std::path::Path::new("topics")).unwrap();
    let dir = topics.iter().find(|d| d.starts_with(OFFSETS_TOPIC)).unwrap();
    let segment = std::path::PathBuf::from(format!("topics/{dir}/1/00000000000000000000.log"));
    disk.flip_bit(&segment, 70, 3).unwrap();
    let b = open();
    let req = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default().with_group_id(GroupId(s("g"))).with_topics(None),
        OffsetFetchRequestGroup::default().with_group_id(GroupId(s("b"))).with_topics(None),
    ]);
    let Some(ResponseKind::OffsetFetch(r)) = call(&b, 9, RequestKind::OffsetFetch(req)) else { panic!() };
    assert_eq!(r.groups[0].error_code, CoordinatorNotAvailable.code(), "not 'no offsets': consumers must not reset");
    assert_eq!(r.groups[1].error_code, 0);
    assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, 7);
    let Some(ResponseKind::FindCoordinator(f)) =
        call(&b, 4, RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("b")])))
    else {
        panic!()
    };
    assert_eq!(f.coordinators[0].error_code, CoordinatorNotAvailable.code());
    assert_eq!(f.coordinators[1].error_code, 0);
    let Some(ResponseKind::JoinGroup(j)) = call(&b, 9, RequestKind::JoinGroup(join("g", ""))) else { panic!() };
    assert_eq!(j.error_code, CoordinatorNotAvailable.code());
}

/// A clock whose wall time can be stepped independently of its monotonic time.
struct SteppedClock {
    wall: std::sync::atomic::AtomicI64,
    mono: std::sync::atomic::AtomicI64,
}

impl crate::clock::Clock for SteppedClock {
    fn now_ms(&self) -> i64 {
        self.wall.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn monotonic_ms(&self) -> i64 {
        self.mono.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn wall_clock_steps_neither_expire_nor_freeze_sessions() {
    use std::sync::atomic::Ordering::SeqCst;
    let disk = SimDisk::new(17);
    let clock = Arc::new(SteppedClock { wall: 1_000_000.into(), mono: 0.into() });
    let mut config = BrokerConfig::default();
    config.group.initial_rebalance_delay_ms = 0;
    let b = Broker::open(config, Arc::new(disk.clone()), clock.clone(), Arc::new(Rng::seeded(3))).unwrap();
    let (member, generation) = stable_group(&b, "g");
    let heartbeat = |b: &Broker| {
        let hb = HeartbeatRequest::default().with_group_id(GroupId(s("g"))).with_member_id(s(&member)).with_generation_id(generation);
        let Some(ResponseKind::Heartbeat(h)) = call(b, 4, RequestKind::Heartbeat(hb)) else { panic!() };
        h.error_code
    };
    // NTP steps the wall clock forward two hours: nobody's session is over.
    clock.wall.fetch_add(7_200_000, SeqCst);
    b.group_tick();
    assert_eq!(heartbeat(&b), 0);
    // Then back three hours, and the member goes silent: its 10 s session
    // still ends 10 s later on the monotonic clock.
    clock.wall.fetch_sub(10_800_000, SeqCst);
    clock.mono.fetch_add(10_001, SeqCst);
    b.group_tick();
    assert_eq!(heartbeat(&b), UnknownMemberId.code());
}
