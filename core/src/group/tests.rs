//! The coordinator's state machines driven with time passed in.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chronik_proto::ResponseError::*;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use uuid::Uuid;

use super::consumer::{member_state, MemberState};
use super::record::Assignment;
use super::*;
use crate::rng::Rng;

const G: &str = "g";

fn groups() -> Groups {
    let config = GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() };
    Groups::new(config, Arc::new(Rng::seeded(7)))
}

fn ctx() -> Ctx {
    Ctx { client_id: "client".into(), client_host: "/127.0.0.1".into() }
}

fn join_req(member: &str, instance: Option<&str>, protocols: &[&str]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(text(G)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(text(member))
        .with_group_instance_id(instance.map(text))
        .with_protocol_type(text("consumer"))
        .with_protocols(
            protocols.iter().map(|p| JoinGroupRequestProtocol::default().with_name(text(*p)).with_metadata(Bytes::from(p.to_string()))).collect(),
        )
}

fn now_join(a: Answer) -> JoinGroupResponse {
    match a {
        Answer::Now(ResponseKind::JoinGroup(r)) => r,
        _ => panic!("expected an immediate JoinGroup answer"),
    }
}

fn later(a: Answer) -> Reply {
    match a {
        Answer::Later(r) => r,
        Answer::Now(_) => panic!("expected a waiting answer"),
    }
}

fn joined(reply: &Reply) -> JoinGroupResponse {
    match reply.take() {
        Some(ResponseKind::JoinGroup(r)) => r,
        other => panic!("join not answered: {}", other.is_some()),
    }
}

fn synced(reply: &Reply) -> SyncGroupResponse {
    match reply.take() {
        Some(ResponseKind::SyncGroup(r)) => r,
        other => panic!("sync not answered: {}", other.is_some()),
    }
}

/// A dynamic member's two-step join (KIP-394); returns its id and reply.
fn join_new(g: &mut Groups, now: i64) -> (String, Reply) {
    let first = now_join(g.join_group(join_req("", None, &["range"]), 9, &ctx(), now));
    assert_eq!(first.error_code, MemberIdRequired.code());
    let id = first.member_id.to_string();
    (id.clone(), later(g.join_group(join_req(&id, None, &["range"]), 9, &ctx(), now)))
}

fn sync_req(member: &str, generation: i32, assignments: &[(&str, &str)]) -> SyncGroupRequest {
    SyncGroupRequest::default().with_group_id(GroupId(text(G))).with_member_id(text(member)).with_generation_id(generation).with_assignments(
        assignments
            .iter()
            .map(|(m, a)| SyncGroupRequestAssignment::default().with_member_id(text(*m)).with_assignment(Bytes::from(a.to_string())))
            .collect(),
    )
}

fn heartbeat(g: &mut Groups, member: &str, generation: i32, now: i64) -> i16 {
    let r = HeartbeatRequest::default().with_group_id(GroupId(text(G))).with_member_id(text(member)).with_generation_id(generation);
    g.heartbeat(r, 4, now).error_code
}

fn state(g: &Groups) -> &'static str {
    g.group(G).unwrap().state_name()
}

/// Two members joined and synced: (groups, leader, follower, generation).
fn stable_pair() -> (Groups, String, String, i32) {
    let mut g = groups();
    let (a, ra) = join_new(&mut g, 0);
    // A alone completes at once (no initial delay configured).
    let ja = joined(&ra);
    assert_eq!(ja.generation_id, 1);
    assert_eq!(ja.leader.as_str(), a);
    let _ = later(g.sync_group(sync_req(&a, 1, &[(&a, "A")]), 5, 0));
    assert_eq!(state(&g), "Stable");
    // B joins: a rebalance; A must rejoin before it completes.
    let (b, rb) = join_new(&mut g, 10);
    assert_eq!(state(&g), "PreparingRebalance");
    assert!(!rb.is_filled());
    assert_eq!(heartbeat(&mut g, &a, 1, 20), RebalanceInProgress.code());
    let ra = later(g.join_group(join_req(&a, None, &["range"]), 9, &ctx(), 30));
    let (ja, jb) = (joined(&ra), joined(&rb));
    assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
    assert_eq!(ja.members.len(), 2, "the leader learns every member");
    assert!(jb.members.is_empty());
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    assert_eq!(state(&g), "CompletingRebalance");
    let rb = later(g.sync_group(sync_req(&b, 2, &[]), 5, 40));
    assert!(!rb.is_filled(), "a follower waits for the leader's assignment");
    let ra = later(g.sync_group(sync_req(&a, 2, &[(&a, "A"), (&b, "B")]), 5, 50));
    assert_eq!(synced(&ra).assignment.as_ref(), b"A");
    assert_eq!(synced(&rb).assignment.as_ref(), b"B");
    assert_eq!(state(&g), "Stable");
    (g, a, b, 2)
}

#[test]
fn classic_join_sync_heartbeat() {
    let (mut g, a, b, generation) = stable_pair();
    assert_eq!(heartbeat(&mut g, &a, generation, 100), 0);
    assert_eq!(heartbeat(&mut g, &b, generation - 1, 100), IllegalGeneration.code());
    assert_eq!(heartbeat(&mut g, "nobody", generation, 100), UnknownMemberId.code());
    // A Stable group answers SyncGroup at once with the stored assignment.
    match g.sync_group(sync_req(&b, generation, &[]), 5, 110) {
        Answer::Now(ResponseKind::SyncGroup(r)) => assert_eq!(r.assignment.as_ref(), b"B"),
        _ => panic!("expected an immediate answer"),
    }
}

#[test]
fn a_silent_member_expires_and_the_rest_rebalance() {
    let (mut g, a, b, generation) = stable_pair();
    let topics = Topics::new();
    // Only A heartbeats; B's 10 s session runs out.
    for t in (1_000..=10_000).step_by(1_000) {
        assert_eq!(heartbeat(&mut g, &a, generation, t), 0);
        g.tick(t, t, &topics);
    }
    g.tick(10_100, 10_100, &topics);
    assert_eq!(state(&g), "PreparingRebalance");
    assert_eq!(heartbeat(&mut g, &b, generation, 10_200), UnknownMemberId.code());
    let ra = later(g.join_group(join_req(&a, None, &["range"]), 9, &ctx(), 10_300));
    let ja = joined(&ra);
    assert_eq!(ja.generation_id, generation + 1);
    assert_eq!(ja.members.len(), 1);
}

#[test]
fn leaving_rebalances_and_the_last_leaver_empties_the_group() {
    let (mut g, a, b, generation) = stable_pair();
    let leave = |m: &str| {
        LeaveGroupRequest::default()
            .with_group_id(GroupId(text(G)))
            .with_members(vec![MemberIdentity::default().with_member_id(text(m))])
    };
    let r = g.leave_group(leave(&b), 5, 100);
    assert_eq!(r.members[0].error_code, 0);
    assert_eq!(state(&g), "PreparingRebalance");
    let r = g.leave_group(leave(&b), 5, 110);
    assert_eq!(r.members[0].error_code, UnknownMemberId.code());
    let r = g.leave_group(leave(&a), 5, 120);
    assert_eq!(r.members[0].error_code, 0);
    assert_eq!(state(&g), "Empty");
    assert_eq!(heartbeat(&mut g, &a, generation, 130), UnknownMemberId.code());
    // v0-2 name the member at the top level.
    let r = g.leave_group(LeaveGroupRequest::default().with_group_id(GroupId(text(G))).with_member_id(text("x")), 1, 140);
    assert_eq!(r.error_code, UnknownMemberId.code());
}

#[test]
fn a_member_that_never_syncs_is_removed_and_the_group_moves_on() {
    let mut g = groups();
    let (a, ra) = join_new(&mut g, 0);
    joined(&ra);
    // The leader heartbeats but never sends SyncGroup: after the rebalance
    // timeout (30 s) it is dropped and the group is empty again, not stuck.
    for t in (5_000..30_000).step_by(5_000) {
        assert_eq!(heartbeat(&mut g, &a, 1, t), 0);
        g.tick(t, t, &Topics::new());
    }
    g.tick(29_000, 29_000, &Topics::new());
    assert_eq!(state(&g), "CompletingRebalance");
    g.tick(30_000, 30_000, &Topics::new());
    assert_eq!(state(&g), "Empty");
    assert_eq!(heartbeat(&mut g, &a, 1, 30_100), UnknownMemberId.code());
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let (mut g, _a, b, generation) = stable_pair();
    // B leaves... no: a new member C joins; A never rejoins.
    let (_c, rc) = join_new(&mut g, 100);
    let rb = later(g.join_group(join_req(&b, None, &["range"]), 9, &ctx(), 200));
    assert!(!rc.is_filled());
    g.tick(100 + 30_000, 100 + 30_000, &Topics::new());
    let (jb, jc) = (joined(&rb), joined(&rc));
    assert_eq!(jb.generation_id, generation + 1);
    assert_eq!(jc.generation_id, generation + 1);
    assert_eq!(g.group(G).map(|g| match g {
        Group::Classic(c) => c.members.len(),
        _ => 0,
    }), Some(2));
}

#[test]
fn bad_joins_get_errors() {
    let mut g = groups();
    let no_protocols = join_req("", None, &[]);
    assert_eq!(now_join(g.join_group(no_protocols, 9, &ctx(), 0)).error_code, InconsistentGroupProtocol.code());
    let short = join_req("", None, &["range"]).with_session_timeout_ms(10);
    assert_eq!(now_join(g.join_group(short, 9, &ctx(), 0)).error_code, InvalidSessionTimeout.code());
    let unknown = join_req("who", None, &["range"]);
    assert_eq!(now_join(g.join_group(unknown, 9, &ctx(), 0)).error_code, UnknownMemberId.code());
    let empty_group = join_req("", None, &["range"]).with_group_id(GroupId(text("")));
    assert_eq!(now_join(g.join_group(empty_group, 9, &ctx(), 0)).error_code, InvalidGroupId.code());
    // A member with no protocol in common with the group.
    let (_a, ra) = join_new(&mut g, 0);
    joined(&ra);
    let other = join_req("", None, &["roundrobin"]);
    assert_eq!(now_join(g.join_group(other, 9, &ctx(), 10)).error_code, InconsistentGroupProtocol.code());
}

#[test]
fn static_member_rejoins_without_a_rebalance_and_fences_its_old_id() {
    let mut g = groups();
    let ra = later(g.join_group(join_req("", Some("i1"), &["range"]), 9, &ctx(), 0));
    let ja = joined(&ra);
    let old = ja.member_id.to_string();
    let _ = later(g.sync_group(sync_req(&old, 1, &[(&old, "A")]), 5, 10));
    assert_eq!(state(&g), "Stable");
    // The process restarts: same instance id, no member id.
    let j = now_join(g.join_group(join_req("", Some("i1"), &["range"]), 9, &ctx(), 100));
    assert_eq!(j.error_code, 0);
    assert_eq!(j.generation_id, 1, "no new generation");
    let new = j.member_id.to_string();
    assert_ne!(new, old);
    assert_eq!(state(&g), "Stable");
    match g.sync_group(sync_req(&new, 1, &[]).with_group_instance_id(Some(text("i1"))), 5, 110) {
        Answer::Now(ResponseKind::SyncGroup(r)) => assert_eq!(r.assignment.as_ref(), b"A"),
        _ => panic!("expected the kept assignment"),
    }
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(text(G)))
        .with_member_id(text(old))
        .with_generation_id(1)
        .with_group_instance_id(Some(text("i1")));
    assert_eq!(g.heartbeat(hb, 4, 120).error_code, FencedInstanceId.code());
}

fn topics() -> Topics {
    let mut t = Topics::new();
    t.insert("t".into(), TopicInfo { id: Uuid::from_u128(1), partitions: 4 });
    t
}

fn commit_req(member: &str, generation: i32, topic: &str, partition: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(text(G)))
        .with_member_id(text(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(text(topic))).with_partitions(vec![
            OffsetCommitRequestPartition::default().with_partition_index(partition).with_committed_offset(offset),
        ])])
}

/// Commits through the plan and applies it as if its records were durable at `log_offset`.
fn commit(g: &mut Groups, r: OffsetCommitRequest, log_offset: i64, now: i64) -> i16 {
    let plan = g.prepare_commit(r, 9, &topics(), now);
    let code = plan.response.topics[0].partitions[0].error_code;
    if !plan.entries.is_empty() {
        g.apply_commit(&plan.group, plan.entries, log_offset, plan.seq, now);
    }
    code
}

fn fetch(g: &Groups, partition: i32) -> i64 {
    let r = OffsetFetchRequest::default().with_group_id(GroupId(text(G))).with_topics(Some(vec![
        offset_fetch_request::OffsetFetchRequestTopic::default().with_name(TopicName(text("t"))).with_partition_indexes(vec![partition]),
    ]));
    g.offset_fetch(r, 7).topics[0].partitions[0].committed_offset
}

#[test]
fn offset_commits_are_checked_applied_and_replayed() {
    let (mut g, a, _b, generation) = stable_pair();
    assert_eq!(commit(&mut g, commit_req(&a, generation, "t", 0, 42), 0, 100), 0);
    assert_eq!(commit(&mut g, commit_req(&a, generation - 1, "t", 1, 1), 1, 100), IllegalGeneration.code());
    assert_eq!(commit(&mut g, commit_req("", -1, "t", 1, 1), 1, 100), UnknownMemberId.code(), "only members commit to a live group");
    assert_eq!(commit(&mut g, commit_req(&a, generation, "nope", 0, 1), 1, 100), UnknownTopicOrPartition.code());
    assert_eq!(commit(&mut g, commit_req(&a, generation, "t", 9, 1), 1, 100), UnknownTopicOrPartition.code());
    assert_eq!(fetch(&g, 0), 42);
    assert_eq!(fetch(&g, 1), -1);
    // An older record applied late does not win over a newer one.
    let plan = g.prepare_commit(commit_req(&a, generation, "t", 0, 7), 9, &topics(), 100);
    g.apply_commit(G, plan.entries, -5, plan.seq, 100);
    assert_eq!(fetch(&g, 0), 42);

    // Everything written replays into a fresh coordinator.
    let mut writes = g.take_writes();
    writes.extend(Groups::commit_writes(G, &[("t".into(), 0, record::OffsetValue { offset: 42, leader_epoch: -1, metadata: String::new(), commit_timestamp: 100 })]));
    let mut fresh = groups();
    for (i, w) in writes.iter().enumerate() {
        fresh.replay(&w.key, w.value.as_deref(), i as i64, 1_000).unwrap();
    }
    fresh.finish_replay(1_000);
    assert_eq!(fetch(&fresh, 0), 42);
    assert_eq!(fresh.group(G).unwrap().state_name(), "Stable", "membership survives");
    assert_eq!(heartbeat(&mut fresh, &a, generation, 1_100), 0);
}

#[test]
fn standalone_commits_and_group_deletion() {
    let mut g = groups();
    assert_eq!(commit(&mut g, commit_req("", -1, "t", 2, 5), 0, 0), 0);
    assert_eq!(fetch(&g, 2), 5);
    assert_eq!(g.group(G).unwrap().state_name(), "Empty");
    // A commit prepared before the deletion and durable after it stays deleted.
    let late = g.prepare_commit(commit_req("", -1, "t", 3, 9), 9, &topics(), 0);
    assert_eq!(g.delete_groups(&[GroupId(text(G)), GroupId(text("none"))], 0), vec![0, GroupIdNotFound.code()]);
    g.apply_commit(G, late.entries, 10, late.seq, 0);
    assert_eq!(fetch(&g, 3), -1);
    assert_eq!(fetch(&g, 2), -1);
    let tombstones = g.take_writes();
    assert!(tombstones.iter().all(|w| w.value.is_none()) && !tombstones.is_empty());
    let (mut g, _, _, _) = stable_pair();
    assert_eq!(g.delete_groups(&[GroupId(text(G))], 0), vec![NonEmptyGroup.code()]);
}

#[test]
fn offsets_of_an_empty_group_expire_after_the_retention() {
    let mut g = Groups::new(GroupConfig { offsets_retention_ms: 1_000, ..GroupConfig::default() }, Arc::new(Rng::seeded(1)));
    assert_eq!(commit(&mut g, commit_req("", -1, "t", 0, 5), 0, 0), 0);
    g.tick(500, 500, &topics());
    assert_eq!(fetch(&g, 0), 5);
    g.tick(1_500, 1_500, &topics());
    assert_eq!(fetch(&g, 0), -1);
    assert!(g.group(G).is_none());
}

// ---- KIP-848 ----

fn hb(member: &str, epoch: i32, subscribe: Option<&[&str]>, owned: Option<&Assignment>) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(text(G)))
        .with_member_id(text(member))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(if epoch == 0 { 30_000 } else { -1 })
        .with_subscribed_topic_names(subscribe.map(|s| s.iter().map(|t| TopicName(text(*t))).collect()))
        .with_topic_partitions(owned.map(|o| o.iter().map(|(t, ps)| TopicPartitions::default().with_topic_id(*t).with_partitions(ps.iter().copied().collect())).collect()))
}

fn assignment_of(r: &ConsumerGroupHeartbeatResponse) -> Option<Assignment> {
    r.assignment.as_ref().map(|a| a.topic_partitions.iter().map(|tp| (tp.topic_id, tp.partitions.iter().copied().collect())).collect())
}

fn parts(a: &Assignment) -> Vec<i32> {
    a.values().flatten().copied().collect()
}

fn consumer(g: &Groups) -> &ConsumerGroup {
    match g.group(G) {
        Some(Group::Consumer(c)) => c,
        _ => panic!("not a consumer group"),
    }
}

#[test]
fn kip848_revocation_comes_before_reassignment() {
    let mut g = groups();
    let t = topics();
    let empty = Assignment::new();
    let r = g.consumer_group_heartbeat(hb("A", 0, Some(&["t"]), Some(&empty)), 1, &ctx(), 0, &t);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.member_epoch, 1);
    let a_owned = assignment_of(&r).unwrap();
    assert_eq!(parts(&a_owned), vec![0, 1, 2, 3]);

    // B joins: epoch 2; A keeps two partitions and must revoke two.
    let r = g.consumer_group_heartbeat(hb("B", 0, Some(&["t"]), Some(&empty)), 1, &ctx(), 10, &t);
    assert_eq!(r.member_epoch, 2);
    assert!(parts(&assignment_of(&r).unwrap()).is_empty(), "B waits: A still owns its partitions");
    assert_eq!(member_state(consumer(&g), "B").1, MemberState::UnreleasedPartitions);

    let r = g.consumer_group_heartbeat(hb("A", 1, None, None), 1, &ctx(), 20, &t);
    assert_eq!(r.member_epoch, 1, "A stays at its epoch until it revokes");
    let kept = assignment_of(&r).unwrap();
    assert_eq!(kept.values().map(|s| s.len()).sum::<usize>(), 2);
    let (_, state, _, pending) = member_state(consumer(&g), "A");
    assert_eq!(state, MemberState::UnrevokedPartitions);
    assert_eq!(pending.values().map(|s| s.len()).sum::<usize>(), 2);
    assert_eq!(consumer(&g).state_name(), "Reconciling");

    // B learns nothing new until A has let go.
    let r = g.consumer_group_heartbeat(hb("B", 2, None, None), 1, &ctx(), 30, &t);
    assert!(r.assignment.is_none());

    // A reports it owns only what it kept: it reaches epoch 2.
    let r = g.consumer_group_heartbeat(hb("A", 1, None, Some(&kept)), 1, &ctx(), 40, &t);
    assert_eq!(r.member_epoch, 2);
    // Now B receives the released partitions.
    let r = g.consumer_group_heartbeat(hb("B", 2, None, None), 1, &ctx(), 50, &t);
    let b_parts = assignment_of(&r).unwrap();
    assert_eq!(b_parts.values().map(|s| s.len()).sum::<usize>(), 2);
    let mut all = parts(&kept);
    all.extend(parts(&b_parts));
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3], "every partition owned exactly once");
    assert_eq!(consumer(&g).state_name(), "Stable");
}

#[test]
fn kip848_fencing_expiry_and_bad_requests() {
    let mut g = groups();
    let t = topics();
    let empty = Assignment::new();
    let r = g.consumer_group_heartbeat(hb("A", 0, Some(&["t"]), Some(&empty)), 1, &ctx(), 0, &t);
    assert_eq!(r.member_epoch, 1);
    let r = g.consumer_group_heartbeat(hb("A", 7, None, None), 1, &ctx(), 10, &t);
    assert_eq!(r.error_code, FencedMemberEpoch.code());
    let r = g.consumer_group_heartbeat(hb("Z", 3, None, None), 1, &ctx(), 10, &t);
    assert_eq!(r.error_code, UnknownMemberId.code());
    let r = g.consumer_group_heartbeat(hb("", 0, Some(&["t"]), Some(&empty)), 1, &ctx(), 10, &t);
    assert_eq!(r.error_code, InvalidRequest.code());
    let r = g.consumer_group_heartbeat(hb("C", 0, Some(&["t"]), Some(&empty)).with_server_assignor(Some(text("magic"))), 1, &ctx(), 10, &t);
    assert_eq!(r.error_code, UnsupportedAssignor.code());
    let r = g.consumer_group_heartbeat(hb("C", 0, None, Some(&empty)).with_subscribed_topic_regex(Some(text("(("))), 1, &ctx(), 10, &t);
    assert_eq!(r.error_code, InvalidRegularExpression.code());

    // Offsets: the member's epoch is checked.
    let plan = g.prepare_commit(commit_req("A", 1, "t", 0, 3), 9, &t, 20);
    assert_eq!(plan.response.topics[0].partitions[0].error_code, 0);
    let plan = g.prepare_commit(commit_req("A", 0, "t", 0, 3), 9, &t, 20);
    assert_eq!(plan.response.topics[0].partitions[0].error_code, StaleMemberEpoch.code());

    // A classic member cannot join the consumer group.
    assert_eq!(now_join(g.join_group(join_req("", None, &["range"]), 9, &ctx(), 30)).error_code, InconsistentGroupProtocol.code());

    // A's session (45 s) lapses: it is removed and the epoch moves on.
    g.tick(45_001, 45_001, &t);
    assert!(consumer(&g).members.is_empty());
    assert_eq!(consumer(&g).state_name(), "Empty");
    let r = g.consumer_group_heartbeat(hb("A", 1, None, None), 1, &ctx(), 45_100, &t);
    assert_eq!(r.error_code, UnknownMemberId.code());
}

#[test]
fn kip848_leave_and_regex_subscription() {
    let mut g = groups();
    let mut t = topics();
    t.insert("other".into(), TopicInfo { id: Uuid::from_u128(2), partitions: 2 });
    let empty = Assignment::new();
    let r = g.consumer_group_heartbeat(hb("A", 0, None, Some(&empty)).with_subscribed_topic_regex(Some(text("t|oth.*"))), 1, &ctx(), 0, &t);
    assert_eq!(parts(&assignment_of(&r).unwrap()).len(), 6);
    // A topic created later that matches joins the assignment.
    t.insert("other2".into(), TopicInfo { id: Uuid::from_u128(3), partitions: 1 });
    let owned = assignment_of(&r).unwrap();
    let r = g.consumer_group_heartbeat(hb("A", 1, None, Some(&owned)), 1, &ctx(), 10, &t);
    assert_eq!(r.member_epoch, 2);
    assert_eq!(parts(&assignment_of(&r).unwrap()).len(), 7);
    let r = g.consumer_group_heartbeat(hb("A", -1, None, None), 1, &ctx(), 20, &t);
    assert_eq!((r.error_code, r.member_epoch), (0, -1));
    assert_eq!(consumer(&g).state_name(), "Empty");
}

#[test]
fn assignors_balance_and_stick() {
    let t1 = Uuid::from_u128(1);
    let subs: BTreeMap<String, Vec<(Uuid, i32)>> = ["a", "b", "c"].iter().map(|m| (m.to_string(), vec![(t1, 7)])).collect();
    let first = assign_uniform(&subs, &BTreeMap::new());
    let counts: Vec<usize> = first.values().map(|a| a.values().map(|s| s.len()).sum()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 7);
    assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
    // A fourth member: everyone keeps most of what they had.
    let mut subs4 = subs.clone();
    subs4.insert("d".into(), vec![(t1, 7)]);
    let second = assign_uniform(&subs4, &first);
    let counts: Vec<usize> = second.values().map(|a| a.values().map(|s| s.len()).sum()).collect();
    assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
    let moved: usize = ["a", "b", "c"].iter().map(|m| minus_count(&first[*m], &second[*m])).sum();
    assert!(moved <= 2, "only what d needs moves, moved {moved}");

    let range = assign_range(&subs);
    assert_eq!(parts(&range["a"]), vec![0, 1, 2]);
    assert_eq!(parts(&range["b"]), vec![3, 4]);
    assert_eq!(parts(&range["c"]), vec![5, 6]);
}

fn minus_count(a: &Assignment, b: &Assignment) -> usize {
    a.iter().map(|(t, ps)| ps.iter().filter(|p| !b.get(t).is_some_and(|s| s.contains(p))).count()).sum()
}

#[test]
fn partition_for_matches_kafka() {
    // Java: "my-group".hashCode() == -1906497762, Math.abs(..) % 50 == 12.
    assert_eq!(partition_for("", 50), 0);
    assert_eq!(partition_for("my-group", 50), 12);
    assert_eq!(partition_for("console-consumer-12345", 50), 6);
}

#[test]
fn kip848_partitions_the_client_already_dropped_are_not_waited_for() {
    let mut g = groups();
    let t = topics();
    let empty = Assignment::new();
    let r = g.consumer_group_heartbeat(hb("A", 0, Some(&["t"]), Some(&empty)), 1, &ctx(), 0, &t);
    let all = assignment_of(&r).unwrap();
    g.consumer_group_heartbeat(hb("B", 0, Some(&["t"]), Some(&empty)), 1, &ctx(), 10, &t);
    // A's next heartbeat already owns only what it will keep (say, after a
    // lost response): it moves to the new epoch at once.
    let target = consumer(&g).target["A"].clone();
    assert!(parts(&target).len() < parts(&all).len());
    let r = g.consumer_group_heartbeat(hb("A", 1, None, Some(&target)), 1, &ctx(), 20, &t);
    assert_eq!(r.member_epoch, 2);
    assert_eq!(member_state(consumer(&g), "A").1, MemberState::Stable);
}

#[test]
fn kip848_a_static_member_that_left_comes_back_only_by_rejoining() {
    let mut g = groups();
    let t = topics();
    let empty = Assignment::new();
    let join = |id: &str| hb(id, 0, Some(&["t"]), Some(&empty)).with_instance_id(Some(text("i1")));
    let r = g.consumer_group_heartbeat(join("A"), 1, &ctx(), 0, &t);
    let owned = assignment_of(&r).unwrap();
    let r = g.consumer_group_heartbeat(hb("A", -2, None, None), 1, &ctx(), 10, &t);
    assert_eq!((r.error_code, r.member_epoch), (0, -2));
    let r = g.consumer_group_heartbeat(hb("A", 1, None, Some(&owned)), 1, &ctx(), 20, &t);
    assert_eq!(r.error_code, FencedMemberEpoch.code());
    // The same instance under a new id takes over its partitions and epoch.
    let r = g.consumer_group_heartbeat(join("A2"), 1, &ctx(), 30, &t);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.member_epoch, 1);
    assert_eq!(assignment_of(&r).unwrap(), owned);
    // While it is active, another process with the same instance id is refused.
    let r = g.consumer_group_heartbeat(join("A3"), 1, &ctx(), 40, &t);
    assert_eq!(r.error_code, UnreleasedInstanceId.code());
}
