//! Two brokers in one process, replicating one partition by hand: the
//! leader's and follower's sides of a replica fetch, acks=all at the
//! replicated high watermark, and truncation by leader epoch after a
//! leadership change.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chronik_proto::ResponseError::*;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::replication::{AckState, ReplicaFetch, Role};
use super::*;
use crate::clock::ManualClock;
use crate::cluster::image::{BrokerInfo, Command, Image, PartitionState};
use crate::disk::SimDisk;
use crate::testing::simple;

const TOPIC_ID: Uuid = Uuid::from_u128(7);

struct Node {
    broker: Broker,
    incarnation: Uuid,
}

fn node(id: i32) -> Node {
    node_with(BrokerConfig { node_id: id, ..BrokerConfig::default() })
}

fn node_with(config: BrokerConfig) -> Node {
    let id = config.node_id;
    let disk = SimDisk::new(id as u64);
    let broker = Broker::open(config, Arc::new(disk), Arc::new(ManualClock::new(1_000_000)), Arc::new(Rng::seeded(id as u64))).unwrap();
    broker.adopt_cluster_id("cluster").unwrap();
    Node { broker, incarnation: Uuid::from_u128(100 + id as u128) }
}

/// An image with brokers 1 and 2 live and topic `t` (one partition on both).
fn image(nodes: &[&Node], leader: i32, leader_epoch: i32, isr: Vec<i32>) -> Image {
    let mut img = Image { cluster_id: Some("cluster".into()), ..Image::default() };
    for (i, n) in nodes.iter().enumerate() {
        let id = i as i32 + 1;
        let info = BrokerInfo { id, host: "h".into(), kafka_port: 9092, rpc: "r".into(), incarnation: n.incarnation, fenced: false, left: false };
        img.apply(&Command::RegisterBroker { info });
        img.apply(&Command::UnfenceBroker { id, incarnation: n.incarnation });
    }
    img.applied_index = 10;
    let state = PartitionState { replicas: vec![1, 2], isr, leader, leader_epoch, partition_epoch: leader_epoch };
    img.topics.insert("t".into(), crate::cluster::image::TopicState { id: TOPIC_ID, created_index: 5, configs: BTreeMap::new(), partitions: vec![state] });
    img
}

fn produce(b: &Broker, records: Vec<u8>) -> (i16, ProduceOutcome) {
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(records)))])]);
    let out = b.produce(req, 9);
    (out.response.responses[0].partition_responses[0].error_code, out)
}

/// One follower fetch: ask the leader, apply its answer, fsync.
fn replicate(leader: &Broker, follower: &Broker, replica: i32, epoch: i32) {
    replicate_topic(leader, follower, "t", replica, epoch)
}

fn replicate_topic(leader: &Broker, follower: &Broker, topic: &str, replica: i32, epoch: i32) {
    let t = follower.topic(topic).unwrap();
    let p = t.partition(0).unwrap().clone();
    let (fetch_offset, last_fetched_epoch, durable_end) = follower.replica_position(&p, epoch).expect("follows");
    let f = ReplicaFetch { topic_id: t.record.id, partition: 0, replica, leader_epoch: epoch, fetch_offset, last_fetched_epoch, durable_end, max_bytes: 1 << 20 };
    let (answer, _) = leader.replica_fetch(&f);
    if let Some(step) = follower.follower_step(&p, answer).unwrap() {
        assert!(follower.follower_apply(&p, epoch, step).unwrap());
    }
    follower.flush();
}

fn log_bytes(b: &Broker) -> Vec<u8> {
    let p = b.topic("t").unwrap().partition(0).unwrap().clone();
    let guard = p.lock_log();
    let log = guard.as_ref().unwrap();
    log.read(0, usize::MAX, true, log.log_end_offset()).unwrap().bytes
}

#[test]
fn acks_all_waits_for_the_follower_and_a_new_leader_truncates_the_old_tail() {
    let (n1, n2) = (node(1), node(2));
    let img = image(&[&n1, &n2], 1, 0, vec![1, 2]);
    n1.broker.apply_image(&img, 1, n1.incarnation);
    n2.broker.apply_image(&img, 1, n2.incarnation);
    let p1 = n1.broker.topic("t").unwrap().partition(0).unwrap().clone();
    assert!(matches!(&*p1.role(), Role::Leader { .. }));

    // Only the leader takes writes.
    assert_eq!(produce(&n2.broker, simple(2, 1)).0, NotLeaderOrFollower.code());
    let (code, out) = produce(&n1.broker, simple(2, 1));
    assert_eq!(code, 0);
    let wait = &out.waits[0];
    n1.broker.flush();
    assert_eq!(p1.ack_state(wait.leader_epoch, wait.offset), AckState::Waiting, "the follower has not got it");
    replicate(&n1.broker, &n2.broker, 2, 0); // fetches the batch, fsyncs it
    replicate(&n1.broker, &n2.broker, 2, 0); // reports it fsynced
    assert_eq!(p1.ack_state(wait.leader_epoch, wait.offset), AckState::Committed);

    // Leader 1 appends a batch nobody else gets, then broker 2 takes over
    // at epoch 1 (1 fenced, say) and writes its own.
    assert_eq!(produce(&n1.broker, simple(3, 2)).0, 0);
    n1.broker.flush();
    let img = image(&[&n1, &n2], 2, 1, vec![2]);
    n2.broker.apply_image(&img, 1, n2.incarnation);
    assert_eq!(produce(&n2.broker, simple(1, 3)).0, 0);
    n2.broker.flush();
    // Broker 1 learns it follows now: its unacknowledged tail goes, by epoch.
    n1.broker.apply_image(&img, 1, n1.incarnation);
    assert_eq!(p1.ack_state(0, 5), AckState::Lost(NotLeaderOrFollower), "an old-epoch wait is answered, never acknowledged");
    replicate(&n2.broker, &n1.broker, 1, 1); // diverging: truncate to 2
    replicate(&n2.broker, &n1.broker, 1, 1); // the new leader's batch
    assert_eq!(log_bytes(&n1.broker), log_bytes(&n2.broker), "replicas identical after truncation");
    assert_eq!(p1.log_end_offset(), Some(3));

    // A fetch at a stale epoch is fenced; one from a non-replica refused.
    let f = ReplicaFetch { topic_id: TOPIC_ID, partition: 0, replica: 1, leader_epoch: 0, fetch_offset: 3, last_fetched_epoch: 1, durable_end: 3, max_bytes: 1 << 10 };
    assert!(matches!(n2.broker.replica_fetch(&f).0, super::replication::ReplicaAnswer::Refused(FencedLeaderEpoch, _)));
    let f = ReplicaFetch { replica: 9, leader_epoch: 1, ..f };
    assert!(matches!(n2.broker.replica_fetch(&f).0, super::replication::ReplicaAnswer::Refused(NotLeaderOrFollower, _)));
}

#[test]
fn a_broker_not_registered_in_the_image_neither_leads_nor_follows() {
    let (n1, n2) = (node(1), node(2));
    let img = image(&[&n1, &n2], 1, 0, vec![1, 2]);
    // A restarted process (new incarnation) before it registered.
    n1.broker.apply_image(&img, 1, Uuid::from_u128(999));
    let p1 = n1.broker.topic("t").unwrap().partition(0).unwrap().clone();
    assert!(matches!(&*p1.role(), Role::Unavailable { .. }));
    assert_eq!(produce(&n1.broker, simple(1, 1)).0, NotLeaderOrFollower.code());
    // A data directory of another cluster takes no topics at all.
    let other = Image { cluster_id: Some("elsewhere".into()), ..img.clone() };
    let n3 = node(3);
    n3.broker.apply_image(&other, 1, n3.incarnation);
    assert!(n3.broker.topic("t").is_none());
    assert!(n1.broker.adopt_cluster_id("elsewhere").is_err(), "it holds the cluster's topic");
}

/// In a cluster the group coordinator is the leader of the group's
/// `__consumer_offsets` partition: commits there wait for the follower,
/// other brokers answer `NOT_COORDINATOR`, and when the leadership moves the
/// old coordinator drops its groups (failing waiting joins) while the new
/// one loads them from its replica, once that is committed.
#[test]
fn the_group_coordinator_follows_the_offsets_partition_leader() {
    use super::group_tests::{commit, ctx, join, s};
    use crate::group::OFFSETS_TOPIC;
    let cluster_node = |id| {
        let mut config = BrokerConfig { node_id: id, cluster: true, ..BrokerConfig::default() };
        config.group.offsets_topic_partitions = 1;
        config.group.initial_rebalance_delay_ms = 60_000;
        node_with(config)
    };
    let (n1, n2) = (cluster_node(1), cluster_node(2));
    let offsets_image = |leader, epoch, isr: Vec<i32>| {
        let mut img = image(&[&n1, &n2], 1, 0, vec![1, 2]);
        let state = PartitionState { replicas: vec![1, 2], isr, leader, leader_epoch: epoch, partition_epoch: epoch };
        let t = crate::cluster::image::TopicState { id: Uuid::from_u128(8), created_index: 6, configs: BTreeMap::new(), partitions: vec![state] };
        img.topics.insert(OFFSETS_TOPIC.into(), t);
        img
    };
    let answer = |b: &Broker, req: RequestKind| match b.handle_group(7, req, &ctx()) {
        GroupAnswer::Now(r) => r,
        GroupAnswer::Durable { waits, complete } => {
            let committed = waits.iter().all(|w| w.partition.ack_state(w.leader_epoch, w.offset) == AckState::Committed);
            complete(committed)
        }
        GroupAnswer::Later { .. } => panic!("no answer now"),
    };
    let fetch = |b: &Broker| {
        let req = OffsetFetchRequest::default().with_group_id(GroupId(s("g"))).with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default().with_name(TopicName(s("t"))).with_partition_indexes(vec![0]),
        ]));
        let ResponseKind::OffsetFetch(r) = answer(b, RequestKind::OffsetFetch(req)) else { panic!() };
        (r.error_code, r.topics.first().map_or(-1, |t| t.partitions[0].committed_offset))
    };
    let commit_code = |b: &Broker, offset| {
        let ResponseKind::OffsetCommit(r) = answer(b, RequestKind::OffsetCommit(commit("g", "", -1, "t", 0, offset))) else { panic!() };
        r.topics[0].partitions[0].error_code
    };

    let img = offsets_image(1, 0, vec![1, 2]);
    n1.broker.apply_image(&img, 1, n1.incarnation);
    n2.broker.apply_image(&img, 1, n2.incarnation);
    n1.broker.group_tick(); // loads: nothing to wait for in an empty log
    n2.broker.group_tick();
    let find = FindCoordinatorRequest::default().with_key(s("g"));
    let GroupAnswer::Now(ResponseKind::FindCoordinator(f)) = n2.broker.handle_group(3, RequestKind::FindCoordinator(find), &ctx()) else { panic!() };
    assert_eq!((f.error_code, f.node_id.0), (0, 1), "every broker names the leader");
    assert_eq!(fetch(&n2.broker).0, NotCoordinator.code());
    assert_eq!(commit_code(&n2.broker, 5), NotCoordinator.code());

    // A commit at the coordinator waits for the follower's copy.
    let GroupAnswer::Durable { waits, complete } = n1.broker.handle_group(7, RequestKind::OffsetCommit(commit("g", "", -1, "t", 0, 42)), &ctx()) else {
        panic!("a commit waits until it is committed")
    };
    n1.broker.flush();
    assert_eq!(waits[0].partition.ack_state(waits[0].leader_epoch, waits[0].offset), AckState::Waiting, "only the leader has it");
    replicate_topic(&n1.broker, &n2.broker, OFFSETS_TOPIC, 2, 0);
    replicate_topic(&n1.broker, &n2.broker, OFFSETS_TOPIC, 2, 0);
    assert_eq!(waits[0].partition.ack_state(waits[0].leader_epoch, waits[0].offset), AckState::Committed);
    let ResponseKind::OffsetCommit(r) = complete(true) else { panic!() };
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetch(&n1.broker), (0, 42));

    // A classic member waits in its first rebalance (the initial delay).
    let GroupAnswer::Later { reply, .. } = n1.broker.handle_group(3, RequestKind::JoinGroup(join("g", "")), &ctx()) else { panic!("the join waits") };

    // Broker 2 takes over at epoch 1.
    let img = offsets_image(2, 1, vec![2]);
    n1.broker.apply_image(&img, 1, n1.incarnation);
    n2.broker.apply_image(&img, 1, n2.incarnation);
    assert_eq!(fetch(&n1.broker).0, NotCoordinator.code(), "the old coordinator stops answering at once");
    let Some(ResponseKind::JoinGroup(j)) = reply.take() else { panic!("the waiting join is answered") };
    assert_eq!(j.error_code, NotCoordinator.code());
    assert_eq!(fetch(&n2.broker).0, CoordinatorLoadInProgress.code(), "loaded by the coordinator's timer");
    n2.broker.group_tick();
    assert_eq!(fetch(&n2.broker), (0, 42), "the commit survived the leadership change");
    assert_eq!(commit_code(&n1.broker, 7), NotCoordinator.code());

    // A commit in flight when the leadership moves is never acknowledged:
    // the next leader may not have its record.
    let GroupAnswer::Durable { waits, complete } = n2.broker.handle_group(7, RequestKind::OffsetCommit(commit("g", "", -1, "t", 0, 43)), &ctx()) else {
        panic!("a commit waits until it is committed")
    };
    let img = offsets_image(1, 2, vec![1, 2]);
    n1.broker.apply_image(&img, 1, n1.incarnation);
    n2.broker.apply_image(&img, 1, n2.incarnation);
    assert!(matches!(waits[0].partition.ack_state(waits[0].leader_epoch, waits[0].offset), AckState::Lost(_)));
    let ResponseKind::OffsetCommit(r) = complete(false) else { panic!() };
    assert_eq!(r.topics[0].partitions[0].error_code, CoordinatorNotAvailable.code());

    // Below min.insync.replicas the coordinator writes nothing, as Kafka
    // (which writes offsets with acks=all).
    let mut img = offsets_image(1, 3, vec![1]);
    img.topics.get_mut(OFFSETS_TOPIC).unwrap().configs.insert("min.insync.replicas".into(), "2".into());
    n1.broker.apply_image(&img, 1, n1.incarnation);
    n1.broker.flush();
    n1.broker.group_tick();
    assert_eq!(fetch(&n1.broker), (0, 42), "loaded at epoch 3");
    assert_eq!(commit_code(&n1.broker, 44), CoordinatorNotAvailable.code());
    assert_eq!(fetch(&n1.broker), (0, 42));
}

/// `--cluster-id`: a data directory holding another cluster's topics is
/// refused at start, and a quorum that named itself otherwise is refused
/// when the broker checks its id.
#[test]
fn a_named_cluster_refuses_another_clusters_directory_and_quorum() {
    let n1 = node(1);
    n1.broker.apply_image(&image(&[&n1], 1, 0, vec![1]), 1, n1.incarnation);
    assert!(n1.broker.topic("t").is_some());
    let disk = n1.broker.disk.clone();
    drop(n1);
    let pinned = |id: &str| BrokerConfig { node_id: 1, cluster: true, cluster_id: Some(id.into()), ..BrokerConfig::default() };
    let open = |config| Broker::open(config, disk.clone(), Arc::new(ManualClock::new(1_000_000)), Arc::new(Rng::seeded(1)));
    let refused = open(pinned("other")).err().expect("another cluster's directory").to_string();
    assert!(refused.contains("belongs to cluster cluster") && refused.contains("not to cluster other"), "{refused}");
    let b = open(pinned("cluster")).expect("its own cluster's name");
    assert!(b.adopt_cluster_id("cluster").is_ok());
    let wrong = b.adopt_cluster_id("elsewhere").unwrap_err();
    assert!(wrong.contains("--cluster-id cluster") && wrong.contains("quorum of --controllers is cluster elsewhere"), "{wrong}");
}

/// A broker's own `__consumer_offsets` (from before it was a cluster
/// member) is dropped when it starts as one: groups must be served from
/// the cluster's replicated topic, never from a local copy.
#[test]
fn a_cluster_member_drops_its_own_offsets_topic() {
    use super::group_tests::{ctx, s};
    let n = node(1);
    let find = FindCoordinatorRequest::default().with_key(s("g"));
    assert!(matches!(n.broker.handle_group(3, RequestKind::FindCoordinator(find), &ctx()), GroupAnswer::Now(_)));
    assert!(n.broker.topic(crate::group::OFFSETS_TOPIC).is_some(), "created on first use");
    let disk = n.broker.disk.clone();
    drop(n);
    let config = BrokerConfig { node_id: 1, cluster: true, ..BrokerConfig::default() };
    let b = Broker::open(config, disk, Arc::new(ManualClock::new(1_000_000)), Arc::new(Rng::seeded(1))).unwrap();
    assert!(b.topic(crate::group::OFFSETS_TOPIC).is_none());
}

/// Clients never see a member's cluster id change: it tells none until its
/// data directory carries the quorum's id (librdkafka warns of a move to
/// another cluster otherwise).
#[test]
fn a_member_tells_clients_the_quorums_cluster_id_only() {
    let n = node_with(BrokerConfig { node_id: 1, cluster: true, ..BrokerConfig::default() });
    n.broker.set_cluster_view(Some(ClusterView { controller_id: -1, ..ClusterView::default() }));
    let metadata_id = |b: &Broker| {
        let ResponseKind::Metadata(m) = b.handle(12, RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![])))) else { panic!() };
        m.cluster_id.map(|c| c.to_string())
    };
    assert_eq!(metadata_id(&n.broker), None, "no image yet");
    n.broker.apply_image(&image(&[&n], 1, 0, vec![1]), 1, n.incarnation);
    assert_eq!(metadata_id(&n.broker).as_deref(), Some("cluster"));
    let single = node(2);
    assert_eq!(metadata_id(&single.broker), Some(single.broker.cluster_id()), "a single broker tells its own");
}

/// The admin service describes a cluster topic its image does not show
/// (just after a restart) with no leader, not as led here.
#[test]
fn a_cluster_topic_missing_from_the_view_is_described_without_a_leader() {
    let n = node(1);
    n.broker.apply_image(&image(&[&n], 1, 0, vec![1]), 1, n.incarnation);
    let t = n.broker.topic("t").unwrap();
    assert_eq!(n.broker.describe_topic(&t).partitions[0].leader, 1);
    n.broker.set_cluster_view(Some(ClusterView { controller_id: -1, ..ClusterView::default() }));
    let p = &n.broker.describe_topic(&t).partitions[0];
    assert_eq!((p.leader, p.replicas.len(), p.isr.len()), (-1, 0, 0));
}
