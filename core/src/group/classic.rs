//! The classic group protocol: JoinGroup / SyncGroup / Heartbeat /
//! LeaveGroup, with Kafka's state machine
//! Empty → PreparingRebalance → CompletingRebalance → Stable (→ Dead),
//! static membership (`group.instance.id`), and the timers that keep a
//! group from getting stuck: session timeouts, the rebalance timeout for
//! members that do not rejoin, and a deadline for SyncGroup.

use std::collections::BTreeMap;

use bytes::Bytes;
use chronik_proto::ResponseError::{self, *};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ResponseKind,
    SyncGroupRequest, SyncGroupResponse,
};

use super::record::{ClassicMemberSnapshot, ClassicSnapshot, GroupSnapshot};
use super::{text, Ctx, Group, GroupConfig, GroupResult, Groups, Reply};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl ClassicState {
    pub fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
        }
    }
}

pub struct ClassicMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// A JoinGroup waiting for the rebalance to complete (with its version).
    join: Option<(Reply, i16)>,
    /// A SyncGroup waiting for the leader's assignment.
    sync: Option<(Reply, i16)>,
    heartbeat_deadline: i64,
    synced: bool,
}

impl ClassicMember {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

pub struct ClassicGroup {
    pub state: ClassicState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, ClassicMember>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or
    /// their session timeout passes.
    pub pending_members: BTreeMap<String, i64>,
    rebalance_deadline: i64,
    /// The first rebalance of an empty group waits this long for others.
    delay_until: i64,
    delay_cap: i64,
    sync_deadline: i64,
}

fn join_error(version: i16, error: ResponseError, member_id: &str) -> ResponseKind {
    let mut r = JoinGroupResponse::default().with_error_code(error.code()).with_member_id(text(member_id));
    if version >= 7 {
        r.protocol_name = None;
    }
    ResponseKind::JoinGroup(r)
}

fn sync_response(version: i16, error: Option<ResponseError>, group: Option<&ClassicGroup>, assignment: Bytes) -> ResponseKind {
    let mut r = SyncGroupResponse::default().with_error_code(error.map_or(0, |e| e.code())).with_assignment(assignment);
    if version >= 5 && error.is_none() {
        if let Some(g) = group {
            r.protocol_type = g.protocol_type.clone().map(text);
            r.protocol_name = g.protocol.clone().map(text);
        }
    }
    ResponseKind::SyncGroup(r)
}

impl ClassicGroup {
    /// An empty group: before its first member, or made by a standalone
    /// offset commit.
    pub(super) fn new() -> ClassicGroup {
        ClassicGroup {
            state: ClassicState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            rebalance_deadline: 0,
            delay_until: 0,
            delay_cap: 0,
            sync_deadline: 0,
        }
    }

    pub(super) fn snapshot(&self) -> Option<GroupSnapshot> {
        // Like Kafka, a group is recorded when it settles: Stable, or Empty.
        if !matches!(self.state, ClassicState::Stable | ClassicState::Empty) {
            return None;
        }
        Some(GroupSnapshot::Classic(ClassicSnapshot {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| ClassicMemberSnapshot {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: m.protocols.iter().map(|(n, b)| (n.clone(), b.to_vec())).collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        }))
    }

    pub(super) fn restore(s: ClassicSnapshot, now: i64) -> ClassicGroup {
        let mut g = ClassicGroup::new();
        g.generation = s.generation;
        g.protocol_type = s.protocol_type;
        g.protocol = s.protocol;
        g.leader = s.leader;
        for m in s.members {
            let member = ClassicMember {
                id: m.id.clone(),
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocols: m.protocols.into_iter().map(|(n, b)| (n, Bytes::from(b))).collect(),
                assignment: Bytes::from(m.assignment),
                join: None,
                sync: None,
                // Members get a whole session from the restart to heartbeat.
                heartbeat_deadline: now + m.session_timeout_ms as i64,
                synced: true,
            };
            g.members.insert(m.id, member);
        }
        g.state = if g.members.is_empty() { ClassicState::Empty } else { ClassicState::Stable };
        g
    }

    fn static_member(&self, instance_id: &str) -> Option<&str> {
        self.members.values().find(|m| m.instance_id.as_deref() == Some(instance_id)).map(|m| m.id.as_str())
    }

    /// Protocols every member supports, in the order the first member prefers.
    fn candidates(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else { return Vec::new() };
        let mut names: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in members {
            names.retain(|n| m.protocols.iter().any(|(p, _)| p == n));
        }
        names
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type) && self.candidates().iter().any(|c| protocols.iter().any(|(p, _)| p == c))
    }

    /// Each member votes for its most preferred common protocol.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        candidates.into_iter().find(|c| votes.get(c.as_str()) == Some(&best))
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members.values().map(|m| m.rebalance_timeout_ms as i64).max().unwrap_or(0)
    }

    fn prepare_rebalance(&mut self, now: i64, cfg: &GroupConfig, reason: &str) {
        if self.state == ClassicState::CompletingRebalance {
            // The assignment being synced is void: tell those waiting.
            for m in self.members.values_mut() {
                if let Some((reply, v)) = m.sync.take() {
                    reply.fill(sync_response(v, Some(RebalanceInProgress), None, Bytes::new()));
                }
            }
        }
        tracing::debug!(generation = self.generation, reason, "group rebalancing");
        let was_empty = self.state == ClassicState::Empty;
        self.state = ClassicState::PreparingRebalance;
        self.rebalance_deadline = now + self.max_rebalance_timeout();
        if was_empty {
            self.delay_cap = now + self.max_rebalance_timeout();
            self.delay_until = (now + cfg.initial_rebalance_delay_ms).min(self.delay_cap);
        } else {
            self.delay_until = 0;
        }
    }

    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join.is_some())
    }

    /// Completes the join phase if every member rejoined (after the initial
    /// delay) or the rebalance timeout passed; members that did not rejoin
    /// are dropped. Returns whether it completed.
    fn maybe_complete_join(&mut self, now: i64) -> bool {
        if self.state != ClassicState::PreparingRebalance {
            return false;
        }
        let timed_out = now >= self.rebalance_deadline;
        if !timed_out && !(self.all_joined() && now >= self.delay_until) {
            return false;
        }
        let gone: Vec<String> = self.members.values().filter(|m| m.join.is_none()).map(|m| m.id.clone()).collect();
        for id in gone {
            tracing::info!(member = %id, "member did not rejoin within the rebalance timeout; removed");
            self.members.remove(&id);
        }
        self.pending_members.clear();
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.state = ClassicState::Empty;
            self.protocol = None;
            self.leader = None;
            // Kafka keeps the protocol type of an emptied group (ListGroups and
            // DescribeGroups show it); a join may still bring another.
            return true;
        }
        self.protocol = self.select_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = ClassicState::CompletingRebalance;
        self.sync_deadline = now + self.max_rebalance_timeout();
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> =
            self.members.values().map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol))).collect();
        for m in self.members.values_mut() {
            m.heartbeat_deadline = now + m.session_timeout_ms as i64;
            m.synced = false;
            m.assignment = Bytes::new();
            let Some((reply, version)) = m.join.take() else { continue };
            let members = if m.id == leader { join_members(&all, version) } else { Vec::new() };
            reply.fill(self_join_response(version, self.generation, &protocol, self.protocol_type.as_deref(), &leader, &m.id, members, false));
        }
        tracing::info!(generation = self.generation, members = self.members.len(), %protocol, %leader, "group rebalance: join phase completed");
        true
    }

    /// Answers every waiting JoinGroup and SyncGroup with `error`.
    pub(super) fn fail_waiting(&mut self, error: ResponseError) {
        for m in self.members.values_mut() {
            if let Some((reply, v)) = m.join.take() {
                reply.fill(join_error(v, error, &m.id));
            }
            if let Some((reply, v)) = m.sync.take() {
                reply.fill(sync_response(v, Some(error), None, Bytes::new()));
            }
        }
    }

    /// Removes a member; its waiting requests get `error`.
    fn remove_member(&mut self, id: &str, error: ResponseError) -> bool {
        let Some(m) = self.members.remove(id) else { return false };
        if let Some((reply, v)) = m.join {
            reply.fill(join_error(v, error, id));
        }
        if let Some((reply, v)) = m.sync {
            reply.fill(sync_response(v, Some(error), None, Bytes::new()));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        true
    }

    /// After a member went away: rebalance, or complete the pending one.
    fn member_left(&mut self, now: i64, cfg: &GroupConfig, reason: &str) {
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance => {
                self.prepare_rebalance(now, cfg, reason);
                self.maybe_complete_join(now);
            }
            ClassicState::PreparingRebalance => {
                self.maybe_complete_join(now);
            }
            ClassicState::Empty => {}
        }
    }

    pub(super) fn tick(&mut self, now: i64, cfg: &GroupConfig) -> bool {
        let mut changed = false;
        let before = self.pending_members.len();
        self.pending_members.retain(|_, deadline| *deadline > now);
        if self.pending_members.len() != before {
            changed = true;
            self.maybe_complete_join(now);
        }
        let expired: Vec<String> =
            self.members.values().filter(|m| m.join.is_none() && m.heartbeat_deadline <= now).map(|m| m.id.clone()).collect();
        for id in &expired {
            tracing::info!(member = %id, state = self.state.name(), "member session expired; removed");
            self.remove_member(id, UnknownMemberId);
        }
        if !expired.is_empty() {
            changed = true;
            self.member_left(now, cfg, "session expired");
        }
        match self.state {
            ClassicState::PreparingRebalance => changed |= self.maybe_complete_join(now),
            ClassicState::CompletingRebalance if now >= self.sync_deadline => {
                let unsynced: Vec<String> = self.members.values().filter(|m| !m.synced).map(|m| m.id.clone()).collect();
                for id in &unsynced {
                    tracing::info!(member = %id, "member sent no SyncGroup within the rebalance timeout; removed");
                    self.remove_member(id, UnknownMemberId);
                }
                changed = true;
                self.prepare_rebalance(now, cfg, "SyncGroup timed out");
                self.maybe_complete_join(now);
            }
            _ => {}
        }
        changed
    }

    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> GroupResult<()> {
        if let Some(instance) = instance_id {
            match self.static_member(instance) {
                Some(id) if id == member_id => return Ok(()),
                Some(_) => return Err(FencedInstanceId),
                None => return Err(UnknownMemberId),
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(UnknownMemberId)
        }
    }

    /// OffsetCommit's check (Kafka's ClassicGroup.validateOffsetCommit).
    pub(super) fn validate_commit(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> GroupResult<()> {
        if generation < 0 && self.state == ClassicState::Empty {
            return Ok(()); // a standalone commit (admin or assign() consumer)
        }
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(IllegalGeneration);
        }
        if self.state == ClassicState::CompletingRebalance {
            return Err(RebalanceInProgress);
        }
        Ok(())
    }

    /// The topics the members are subscribed to, read from their consumer
    /// protocol metadata (for OffsetDelete).
    pub(super) fn subscribed_topics(&self) -> Option<std::collections::BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.clone()?;
        let mut topics = std::collections::BTreeSet::new();
        for m in self.members.values() {
            topics.extend(subscription_topics(&m.metadata(&protocol)).unwrap_or_default());
        }
        Some(topics)
    }

    /// The JoinGroup answer of the current generation for `member_id` (the
    /// leader also gets every member's metadata).
    fn current_join_response(&self, version: i16, member_id: &str, skip_assignment: bool) -> ResponseKind {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let is_leader = leader == member_id;
        let members = if is_leader {
            let all: Vec<_> = self.members.values().map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol))).collect();
            join_members(&all, version)
        } else {
            Vec::new()
        };
        let skip = skip_assignment && is_leader;
        self_join_response(version, self.generation, &protocol, self.protocol_type.as_deref(), &leader, member_id, members, skip)
    }

    pub fn members_summary(&self) -> Vec<(&ClassicMember, Bytes)> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members.values().map(|m| (m, m.metadata(&protocol))).collect()
    }
}

fn join_members(all: &[(String, Option<String>, Bytes)], version: i16) -> Vec<JoinGroupResponseMember> {
    all.iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(text(id.clone()))
                .with_group_instance_id(if version >= 5 { instance.clone().map(text) } else { None })
                .with_metadata(metadata.clone())
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn self_join_response(
    version: i16,
    generation: i32,
    protocol: &str,
    protocol_type: Option<&str>,
    leader: &str,
    member_id: &str,
    members: Vec<JoinGroupResponseMember>,
    skip_assignment: bool,
) -> ResponseKind {
    let mut r = JoinGroupResponse::default()
        .with_generation_id(generation)
        .with_protocol_name(Some(text(protocol)))
        .with_leader(text(leader))
        .with_member_id(text(member_id))
        .with_members(members);
    if version >= 7 {
        r.protocol_type = protocol_type.map(text);
    }
    if version >= 9 {
        r.skip_assignment = skip_assignment;
    }
    ResponseKind::JoinGroup(r)
}

/// What a group operation answers: now, or when the group gets there.
pub enum Answer {
    Now(ResponseKind),
    Later(Reply),
}

impl Groups {
    fn classic_mut(&mut self, group_id: &str) -> Result<&mut ClassicGroup, ResponseError> {
        match self.groups.get_mut(group_id) {
            Some(Group::Classic(g)) => Ok(g),
            // A KIP-848 group does not speak the classic protocol (Kafka
            // would answer a classic member only after an online migration).
            Some(Group::Consumer(_)) => Err(UnknownMemberId),
            None => Err(UnknownMemberId),
        }
    }

    pub fn join_group(&mut self, r: JoinGroupRequest, version: i16, ctx: &Ctx, now: i64) -> Answer {
        let group_id = r.group_id.0.to_string();
        let member_id = r.member_id.to_string();
        let answer = self.join_inner(&group_id, r, version, ctx, now);
        if let Answer::Now(ResponseKind::JoinGroup(resp)) = &answer {
            if resp.error_code != 0 {
                tracing::debug!(group = %group_id, member = %member_id, error = resp.error_code, "JoinGroup refused");
            }
        }
        self.persist(&group_id);
        self.note_emptiness(&group_id, now);
        answer
    }

    fn join_inner(&mut self, group_id: &str, r: JoinGroupRequest, version: i16, ctx: &Ctx, now: i64) -> Answer {
        let member_id = r.member_id.to_string();
        let err = |e| Answer::Now(join_error(version, e, &member_id));
        if group_id.is_empty() {
            return err(InvalidGroupId);
        }
        if let Err(e) = self.serves(group_id) {
            return err(e);
        }
        let session = r.session_timeout_ms;
        if session < self.config.min_session_timeout_ms || session > self.config.max_session_timeout_ms {
            return err(InvalidSessionTimeout);
        }
        let rebalance_timeout = if version >= 1 { r.rebalance_timeout_ms } else { session };
        let protocol_type = r.protocol_type.to_string();
        let protocols: Vec<(String, Bytes)> = r.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect();
        if protocol_type.is_empty() || protocols.is_empty() {
            return err(InconsistentGroupProtocol);
        }
        let instance_id = r.group_instance_id.as_ref().map(|s| s.to_string());
        match self.groups.get(group_id) {
            Some(Group::Consumer(g)) if !g.members.is_empty() => return err(InconsistentGroupProtocol),
            Some(Group::Consumer(_)) | None => {
                if !member_id.is_empty() {
                    return err(UnknownMemberId);
                }
                self.groups.insert(group_id.to_string(), Group::Classic(ClassicGroup::new()));
            }
            Some(Group::Classic(_)) => {}
        }
        let fresh_id = self.member_id(&ctx.client_id);
        let max_size = self.config.max_size;
        let cfg = self.config.clone();
        let Ok(g) = self.classic_mut(group_id) else { unreachable!("inserted above") };
        if !g.supports(&protocol_type, &protocols) {
            return err(InconsistentGroupProtocol);
        }
        let reply = Reply::default();
        let new_member = |id: String| ClassicMember {
            id,
            instance_id: instance_id.clone(),
            client_id: ctx.client_id.clone(),
            client_host: ctx.client_host.clone(),
            session_timeout_ms: session,
            rebalance_timeout_ms: rebalance_timeout,
            protocols: protocols.clone(),
            assignment: Bytes::new(),
            join: Some((reply.clone(), version)),
            sync: None,
            heartbeat_deadline: now + session as i64,
            synced: false,
        };

        if member_id.is_empty() {
            // A new member, or a static member coming back under a new id.
            if let Some(instance) = &instance_id {
                if let Some(old_id) = g.static_member(instance).map(str::to_string) {
                    let new_id = format!("{instance}-{}", &fresh_id[fresh_id.len().saturating_sub(36)..]);
                    let old = g.members.get(&old_id).expect("static member exists");
                    let unchanged = old.protocols == protocols;
                    let assignment = old.assignment.clone();
                    g.remove_member(&old_id, FencedInstanceId);
                    let mut m = new_member(new_id.clone());
                    if g.leader.as_deref() == Some(old_id.as_str()) || g.leader.is_none() {
                        g.leader = Some(new_id.clone());
                    }
                    if g.state == ClassicState::Stable && unchanged {
                        // KIP-345: a known static member rejoining without
                        // changes keeps its assignment; no rebalance.
                        m.join = None;
                        m.assignment = assignment;
                        m.synced = true;
                        g.members.insert(new_id.clone(), m);
                        tracing::info!(member = %new_id, instance = %instance, "static member rejoined; keeps its assignment");
                        // A leader keeps the current assignment (v9 says so).
                        return Answer::Now(g.current_join_response(version, &new_id, true));
                    }
                    g.members.insert(new_id, m);
                    return rebalance_after_join(g, now, &cfg, reply, "static member rejoined with changes");
                }
            }
            if g.members.len() + g.pending_members.len() >= max_size {
                return err(GroupMaxSizeReached);
            }
            if instance_id.is_none() && version >= 4 {
                // KIP-394: the member must come back with this id.
                g.pending_members.insert(fresh_id.clone(), now + session as i64);
                return Answer::Now(join_error(version, MemberIdRequired, &fresh_id));
            }
            if g.state == ClassicState::Empty {
                g.protocol_type = Some(protocol_type.clone());
            }
            g.members.insert(fresh_id.clone(), new_member(fresh_id));
            return rebalance_after_join(g, now, &cfg, reply, "new member joined");
        }

        // A member id the group handed out.
        if g.pending_members.remove(&member_id).is_some() {
            if g.state == ClassicState::Empty {
                g.protocol_type = Some(protocol_type.clone());
            }
            g.members.insert(member_id.clone(), new_member(member_id));
            return rebalance_after_join(g, now, &cfg, reply, "new member joined");
        }
        if let Err(e) = g.check_member(&member_id, instance_id.as_deref()) {
            return err(e);
        }
        let m = g.members.get_mut(&member_id).expect("checked");
        let changed = m.protocols != protocols;
        tracing::debug!(group = %group_id, member = %member_id, state = g.state.name(), changed, "JoinGroup from a member");
        m.protocols = protocols;
        m.session_timeout_ms = session;
        m.rebalance_timeout_ms = rebalance_timeout;
        match g.state {
            ClassicState::PreparingRebalance => {
                if let Some((old, v)) = m.join.replace((reply.clone(), version)) {
                    old.fill(join_error(v, RebalanceInProgress, &member_id));
                }
                g.maybe_complete_join(now);
                Answer::Later(reply)
            }
            // A retried JoinGroup: the same answer again.
            ClassicState::CompletingRebalance if !changed => Answer::Now(g.current_join_response(version, &member_id, false)),
            // A follower rejoining without changes: nothing to rebalance.
            ClassicState::Stable if !changed && g.leader.as_deref() != Some(member_id.as_str()) => {
                Answer::Now(g.current_join_response(version, &member_id, false))
            }
            _ => {
                m.join = Some((reply.clone(), version));
                rebalance_after_join(g, now, &cfg, reply, "member rejoined")
            }
        }
    }

    pub fn sync_group(&mut self, r: SyncGroupRequest, version: i16, now: i64) -> Answer {
        let group_id = r.group_id.0.to_string();
        let answer = self.sync_inner(&group_id, r, version, now);
        self.persist(&group_id);
        answer
    }

    fn sync_inner(&mut self, group_id: &str, r: SyncGroupRequest, version: i16, now: i64) -> Answer {
        let err = |e| Answer::Now(sync_response(version, Some(e), None, Bytes::new()));
        if group_id.is_empty() {
            return err(InvalidGroupId);
        }
        if let Err(e) = self.serves(group_id) {
            return err(e);
        }
        let g = match self.classic_mut(group_id) {
            Ok(g) => g,
            Err(e) => return err(e),
        };
        let member_id = r.member_id.to_string();
        if let Err(e) = g.check_member(&member_id, r.group_instance_id.as_deref()) {
            return err(e);
        }
        if r.generation_id != g.generation {
            return err(IllegalGeneration);
        }
        if version >= 5 {
            let mismatch = |asked: &Option<kafka_protocol::protocol::StrBytes>, have: &Option<String>| {
                asked.as_ref().is_some_and(|a| have.as_deref() != Some(&**a))
            };
            if mismatch(&r.protocol_type, &g.protocol_type) || mismatch(&r.protocol_name, &g.protocol) {
                return err(InconsistentGroupProtocol);
            }
        }
        match g.state {
            ClassicState::Empty => err(UnknownMemberId),
            ClassicState::PreparingRebalance => err(RebalanceInProgress),
            ClassicState::Stable => {
                let m = &g.members[&member_id];
                Answer::Now(sync_response(version, None, Some(g), m.assignment.clone()))
            }
            ClassicState::CompletingRebalance => {
                let reply = Reply::default();
                let m = g.members.get_mut(&member_id).expect("checked");
                m.synced = true;
                m.heartbeat_deadline = now + m.session_timeout_ms as i64;
                if let Some((old, v)) = m.sync.replace((reply.clone(), version)) {
                    old.fill(sync_response(v, Some(RebalanceInProgress), None, Bytes::new()));
                }
                if g.leader.as_deref() == Some(member_id.as_str()) {
                    let given: BTreeMap<String, Bytes> =
                        r.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect();
                    for m in g.members.values_mut() {
                        m.assignment = given.get(&m.id).cloned().unwrap_or_default();
                    }
                    g.state = ClassicState::Stable;
                    tracing::info!(generation = g.generation, members = g.members.len(), "group stable");
                    let answers: Vec<(Reply, i16, Bytes)> = g
                        .members
                        .values_mut()
                        .filter_map(|m| m.sync.take().map(|(reply, v)| (reply, v, m.assignment.clone())))
                        .collect();
                    for (reply, v, assignment) in answers {
                        reply.fill(sync_response(v, None, Some(g), assignment));
                    }
                }
                Answer::Later(reply)
            }
        }
    }

    pub fn heartbeat(&mut self, r: HeartbeatRequest, _version: i16, now: i64) -> HeartbeatResponse {
        let group_id = r.group_id.0.to_string();
        let result = (|| {
            if group_id.is_empty() {
                return Err(InvalidGroupId);
            }
            self.serves(&group_id)?;
            let g = self.classic_mut(&group_id)?;
            let member_id = r.member_id.to_string();
            g.check_member(&member_id, r.group_instance_id.as_deref())?;
            if g.state == ClassicState::Empty {
                return Err(UnknownMemberId);
            }
            if r.generation_id != g.generation {
                return Err(IllegalGeneration);
            }
            let m = g.members.get_mut(&member_id).expect("checked");
            m.heartbeat_deadline = now + m.session_timeout_ms as i64;
            match g.state {
                ClassicState::PreparingRebalance => Err(RebalanceInProgress),
                _ => Ok(()),
            }
        })();
        HeartbeatResponse::default().with_error_code(super::code(result))
    }

    pub fn leave_group(&mut self, r: LeaveGroupRequest, version: i16, now: i64) -> LeaveGroupResponse {
        let group_id = r.group_id.0.to_string();
        let cfg = self.config.clone();
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            r.members.iter().map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string()))).collect()
        } else {
            vec![(r.member_id.to_string(), None)]
        };
        if let Err(e) = self.serves(&group_id) {
            return LeaveGroupResponse::default().with_error_code(e.code());
        }
        let g = match self.classic_mut(&group_id) {
            Ok(g) => g,
            Err(e) => return LeaveGroupResponse::default().with_error_code(e.code()),
        };
        let mut results = Vec::new();
        let mut removed = 0;
        for (member_id, instance) in &leaving {
            let outcome = match instance {
                Some(instance) => match g.static_member(instance).map(str::to_string) {
                    None => Err(UnknownMemberId),
                    Some(id) if !member_id.is_empty() && *member_id != id => Err(FencedInstanceId),
                    Some(id) => Ok(id),
                },
                None if g.pending_members.remove(member_id).is_some() => Ok(String::new()), // not a member yet
                None if g.members.contains_key(member_id) => Ok(member_id.clone()),
                None => Err(UnknownMemberId),
            };
            if let Ok(id) = &outcome {
                if !id.is_empty() {
                    g.remove_member(id, UnknownMemberId);
                    removed += 1;
                    tracing::info!(group = %group_id, member = %id, "member left the group");
                }
            }
            results.push(
                MemberResponse::default()
                    .with_member_id(text(member_id.clone()))
                    .with_group_instance_id(instance.clone().map(text))
                    .with_error_code(super::code(outcome.map(|_| ()))),
            );
        }
        if removed > 0 {
            g.member_left(now, &cfg, "member left");
        }
        let mut response = LeaveGroupResponse::default();
        if version >= 3 {
            response.members = results;
        } else {
            response.error_code = results[0].error_code;
        }
        self.persist(&group_id);
        self.note_emptiness(&group_id, now);
        response
    }
}

/// After a member (re)joined: start a rebalance unless one is under way,
/// and complete it if everyone is in.
fn rebalance_after_join(g: &mut ClassicGroup, now: i64, cfg: &GroupConfig, reply: Reply, reason: &str) -> Answer {
    match g.state {
        ClassicState::PreparingRebalance => {
            if g.delay_until > now {
                // More members are arriving for the first generation: wait
                // a little longer for the next, up to the rebalance timeout.
                g.delay_until = (now + cfg.initial_rebalance_delay_ms).min(g.delay_cap);
            }
        }
        _ => g.prepare_rebalance(now, cfg, reason),
    }
    g.maybe_complete_join(now);
    Answer::Later(reply)
}

/// The topic list at the head of a ConsumerProtocolSubscription (every
/// version starts `version: i16, topics: [string]`). Parsed by hand with
/// bounds checks: this is client-supplied data, and the codec's decoder
/// would pre-allocate from its counts.
fn subscription_topics(buf: &[u8]) -> Option<Vec<String>> {
    let mut pos = 2; // the version
    let take = |pos: &mut usize, n: usize| -> Option<&[u8]> {
        let s = buf.get(*pos..*pos + n)?;
        *pos += n;
        Some(s)
    };
    let count = i32::from_be_bytes(take(&mut pos, 4)?.try_into().ok()?);
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let len = i16::from_be_bytes(take(&mut pos, 2)?.try_into().ok()?);
        let name = take(&mut pos, usize::try_from(len).ok()?)?;
        topics.push(String::from_utf8_lossy(name).into_owned());
    }
    Some(topics)
}

#[cfg(test)]
mod subscription_tests {
    #[test]
    fn subscription_topics_are_read_safely() {
        let mut b = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c', 0xff];
        assert_eq!(super::subscription_topics(&b), Some(vec!["a".into(), "bc".into()]));
        b[5] = 200; // more topics than bytes
        assert_eq!(super::subscription_topics(&b), None);
        assert_eq!(super::subscription_topics(&[0, 1, 0x7f, 0xff, 0xff, 0xff]), None);
    }
}
