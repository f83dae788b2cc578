//! Consumer-group members for the simulated worlds: each group has one
//! member that commits ever-growing offsets and reads them back, so the
//! `commits` checker can tell whether an acknowledged commit was ever lost —
//! across crashes, restarts, the coordinator's log cleaning and, in a
//! cluster, the coordinator moving to a new leader of `__consumer_offsets`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronik_proto::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use madsim::rand::{thread_rng, Rng as _};

use crate::client::Conn;
use crate::history::{CommitOutcome, Event, History, Partition};

type Shared<T> = Arc<Mutex<T>>;

/// What the members commit offsets of, and where they bootstrap.
#[derive(Clone, Copy)]
pub struct Target {
    pub topic: &'static str,
    pub partitions: i32,
    /// A broker to ask for the coordinator (any, in a cluster).
    pub bootstrap: fn() -> SocketAddr,
}

/// A connection to the coordinator of `group`, found as clients find it:
/// FindCoordinator at a bootstrap broker, then its answer's host and port.
async fn coordinator(target: &Target, group: &str) -> Option<Conn> {
    let at = (target.bootstrap)();
    let mut conn = Conn::connect(at).await.ok()?;
    let find = FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(vec![StrBytes::from_string(group.to_string())]);
    let Ok(ResponseKind::FindCoordinator(r)) = conn.call(ApiKey::FindCoordinator, 4, RequestKind::FindCoordinator(find)).await else { return None };
    let c = &r.coordinators[0];
    if c.error_code != 0 {
        return None;
    }
    let addr = SocketAddr::new(c.host.parse::<IpAddr>().ok()?, u16::try_from(c.port).ok()?);
    if addr == at {
        return Some(conn);
    }
    Conn::connect(addr).await.ok()
}

fn group_id(g: u32) -> GroupId {
    GroupId(StrBytes::from_string(format!("sim-g{g}")))
}

/// The group's committed offsets of the simulated topic, recorded in the
/// history; false if the broker did not answer them.
async fn fetch_offsets(conn: &mut Conn, target: &Target, g: u32, history: &Shared<History>) -> bool {
    let req = OffsetFetchRequest::default().with_groups(vec![offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(group_id(g)).with_topics(None)]);
    let Ok(ResponseKind::OffsetFetch(r)) = conn.call(ApiKey::OffsetFetch, 8, RequestKind::OffsetFetch(req)).await else { return false };
    let group = &r.groups[0];
    if group.error_code != 0 {
        return false;
    }
    let mut offsets: Vec<(Partition, i64)> = (0..target.partitions).map(|p| (p, -1)).collect();
    for t in group.topics.iter().filter(|t| t.name.0.as_str() == target.topic) {
        for part in &t.partitions {
            if part.error_code != 0 {
                return false;
            }
            if let Some(slot) = offsets.iter_mut().find(|(p, _)| *p == part.partition_index) {
                slot.1 = part.committed_offset;
            }
        }
    }
    history.lock().unwrap().push(Event::OffsetsFetched { group: format!("sim-g{g}"), offsets });
    true
}

/// The only member of group `sim-g{g}`: finds its coordinator, joins
/// (two-step, as a v4+ client), assigns every partition to itself, then
/// commits ever-growing offsets one request at a time, heartbeats, reads its
/// offsets back, and now and then leaves and rejoins. Any trouble
/// (including `NOT_COORDINATOR` when the coordinator moved): find the
/// coordinator again and rejoin, with its member id while the coordinator
/// still knows it.
pub async fn group_member(target: Target, g: u32, history: Shared<History>, stop: Arc<AtomicBool>) {
    const GROUP_CALL: Duration = Duration::from_secs(10);
    let group = format!("sim-g{g}");
    let mut member = String::new();
    let mut next_value: i64 = 0;
    'session: while !stop.load(Ordering::SeqCst) {
        let Some(mut conn) = coordinator(&target, &group).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Join: the first JoinGroup of a new member returns its id.
        let mut generation = -1;
        for _ in 0..2 {
            let join = JoinGroupRequest::default()
                .with_group_id(group_id(g))
                .with_session_timeout_ms(6_000)
                .with_rebalance_timeout_ms(2_000)
                .with_member_id(StrBytes::from_string(member.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(bytes::Bytes::from_static(b"sim"))]);
            match conn.call_within(ApiKey::JoinGroup, 9, RequestKind::JoinGroup(join), GROUP_CALL).await {
                Ok(ResponseKind::JoinGroup(r)) if r.error_code == ResponseError::MemberIdRequired.code() => member = r.member_id.to_string(),
                Ok(ResponseKind::JoinGroup(r)) if r.error_code == 0 => {
                    member = r.member_id.to_string();
                    generation = r.generation_id;
                    break;
                }
                Ok(ResponseKind::JoinGroup(r)) => {
                    if r.error_code == ResponseError::UnknownMemberId.code() {
                        member.clear();
                    }
                    break;
                }
                _ => break,
            }
        }
        if generation < 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let sync = SyncGroupRequest::default()
            .with_group_id(group_id(g))
            .with_member_id(StrBytes::from_string(member.clone()))
            .with_generation_id(generation)
            .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(StrBytes::from_string(member.clone()))
                .with_assignment(bytes::Bytes::from_static(b"all"))]);
        match conn.call_within(ApiKey::SyncGroup, 5, RequestKind::SyncGroup(sync), GROUP_CALL).await {
            Ok(ResponseKind::SyncGroup(r)) if r.error_code == 0 => {}
            _ => continue 'session,
        }
        if !fetch_offsets(&mut conn, &target, g, &history).await {
            continue 'session;
        }
        while !stop.load(Ordering::SeqCst) {
            let (pause, choice) = {
                let mut r = thread_rng();
                (Duration::from_millis(r.gen_range(50..300)), r.gen_range(0..100))
            };
            tokio::time::sleep(pause).await;
            match choice {
                0..=59 => {
                    let offsets: Vec<(Partition, i64)> = (0..target.partitions)
                        .map(|p| {
                            next_value += thread_rng().gen_range(1..5);
                            (p, next_value)
                        })
                        .collect();
                    let req = OffsetCommitRequest::default()
                        .with_group_id(group_id(g))
                        .with_generation_id_or_member_epoch(generation)
                        .with_member_id(StrBytes::from_string(member.clone()))
                        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default().with_name(TopicName(StrBytes::from_static_str(target.topic))).with_partitions(
                            offsets
                                .iter()
                                .map(|(p, v)| offset_commit_request::OffsetCommitRequestPartition::default().with_partition_index(*p).with_committed_offset(*v))
                                .collect(),
                        )]);
                    let outcome = match conn.call(ApiKey::OffsetCommit, 8, RequestKind::OffsetCommit(req)).await {
                        Ok(ResponseKind::OffsetCommit(r)) => {
                            let code = r.topics[0].partitions.iter().map(|p| p.error_code).find(|c| *c != 0).unwrap_or(0);
                            let refused = [
                                ResponseError::IllegalGeneration,
                                ResponseError::UnknownMemberId,
                                ResponseError::RebalanceInProgress,
                                ResponseError::FencedInstanceId,
                            ]
                            .iter()
                            .any(|e| e.code() == code);
                            if code == 0 {
                                CommitOutcome::Acked
                            } else if refused {
                                CommitOutcome::Refused
                            } else {
                                CommitOutcome::Unknown
                            }
                        }
                        _ => CommitOutcome::Unknown,
                    };
                    history.lock().unwrap().push(Event::Commit { group: group.clone(), offsets, outcome });
                    if outcome != CommitOutcome::Acked {
                        continue 'session;
                    }
                }
                60..=79 => {
                    let hb = HeartbeatRequest::default()
                        .with_group_id(group_id(g))
                        .with_member_id(StrBytes::from_string(member.clone()))
                        .with_generation_id(generation);
                    match conn.call(ApiKey::Heartbeat, 4, RequestKind::Heartbeat(hb)).await {
                        Ok(ResponseKind::Heartbeat(r)) if r.error_code == 0 => {}
                        Ok(ResponseKind::Heartbeat(r)) => {
                            if r.error_code == ResponseError::UnknownMemberId.code() {
                                member.clear();
                            }
                            continue 'session;
                        }
                        _ => continue 'session,
                    }
                }
                80..=94 => {
                    if !fetch_offsets(&mut conn, &target, g, &history).await {
                        continue 'session;
                    }
                }
                _ => {
                    let leave = LeaveGroupRequest::default()
                        .with_group_id(group_id(g))
                        .with_members(vec![leave_group_request::MemberIdentity::default().with_member_id(StrBytes::from_string(member.clone()))]);
                    let _ = conn.call(ApiKey::LeaveGroup, 5, RequestKind::LeaveGroup(leave)).await;
                    member.clear();
                    continue 'session;
                }
            }
        }
    }
}

/// After healing: the group's committed offsets, read once (retried) from
/// the group's coordinator.
pub async fn final_offsets(target: Target, g: u32, history: Shared<History>) -> bool {
    let group = format!("sim-g{g}");
    for _ in 0..200 {
        if let Some(mut conn) = coordinator(&target, &group).await {
            if fetch_offsets(&mut conn, &target, g, &history).await {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

