//! KIP-848 consumer groups: the broker computes the assignment.
//!
//! Members heartbeat (ConsumerGroupHeartbeat) with their epoch, their
//! subscription and the partitions they own. A change of membership,
//! subscriptions or subscribed topics' partitions bumps the *group epoch*
//! and the server assignor computes a new *target assignment*. Each member
//! then converges on its target one heartbeat at a time: first it is told to
//! revoke what it must give up (its epoch stays), and once it reports those
//! gone it moves to the target epoch and receives the partitions no other
//! member still owns; partitions still held by someone else follow on later
//! heartbeats. So no partition is ever owned by two members at once.

use std::collections::{BTreeMap, BTreeSet};

use chronik_proto::ResponseError::{self, *};
use kafka_protocol::messages::consumer_group_describe_response::{self as cgd, DescribedGroup as CgDescribed};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment as HbAssignment, TopicPartitions as HbTopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, TopicName};
use uuid::Uuid;

use super::record::{Assignment, ConsumerMemberSnapshot, ConsumerSnapshot, GroupSnapshot};
use super::{text, Ctx, Group, GroupConfig, GroupResult, Groups, TopicInfo, Topics, GROUP_OPERATIONS};

pub const ASSIGNORS: &[&str] = &["uniform", "range"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    /// Told to revoke partitions; waiting for it to report them gone.
    UnrevokedPartitions,
    /// At the target epoch, waiting for partitions others still own.
    UnreleasedPartitions,
}

pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    regex: Option<regex::Regex>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    session_deadline: i64,
    revocation_deadline: Option<i64>,
}

pub struct ConsumerGroup {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
    /// The subscribed topics as of the last target assignment.
    subscribed: BTreeMap<String, TopicInfo>,
}

fn compile(regex: &str) -> Result<regex::Regex, String> {
    // Kafka matches the whole topic name (Java's Matcher.matches()).
    regex::Regex::new(&format!("^(?:{regex})$")).map_err(|e| e.to_string())
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        let rest: BTreeSet<i32> = ps.iter().filter(|p| !b.get(t).is_some_and(|s| s.contains(p))).copied().collect();
        if !rest.is_empty() {
            out.insert(*t, rest);
        }
    }
    out
}

fn union_into(a: &mut Assignment, b: &Assignment) {
    for (t, ps) in b {
        a.entry(*t).or_default().extend(ps.iter().copied());
    }
}

fn count(a: &Assignment) -> usize {
    a.values().map(|s| s.len()).sum()
}

fn to_wire(a: &Assignment) -> Vec<HbTopicPartitions> {
    a.iter().map(|(t, ps)| HbTopicPartitions::default().with_topic_id(*t).with_partitions(ps.iter().copied().collect())).collect()
}

impl ConsumerMember {
    /// The topics this member subscribes to that exist.
    fn subscribed<'a>(&self, topics: &'a Topics) -> Vec<(&'a String, &'a TopicInfo)> {
        topics
            .iter()
            .filter(|(name, _)| self.subscribed_topic_names.iter().any(|n| n == *name) || self.regex.as_ref().is_some_and(|r| r.is_match(name)))
            .collect()
    }
}

impl ConsumerGroup {
    fn new() -> ConsumerGroup {
        ConsumerGroup {
            group_epoch: 0,
            assignment_epoch: 0,
            assignor: String::new(),
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed: BTreeMap::new(),
        }
    }

    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self.members.values().any(|m| m.epoch != self.assignment_epoch || m.state != MemberState::Stable) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    pub(super) fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot::Consumer(ConsumerSnapshot {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor.clone(),
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberSnapshot {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    server_assignor: m.server_assignor.clone(),
                    subscribed_topic_names: m.subscribed_topic_names.clone(),
                    subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    assigned: m.assigned.clone(),
                    pending_revocation: m.pending_revocation.clone(),
                    target: self.target.get(&m.id).cloned().unwrap_or_default(),
                })
                .collect(),
        })
    }

    pub(super) fn restore(s: ConsumerSnapshot, now: i64, session_timeout_ms: i32) -> ConsumerGroup {
        let mut g = ConsumerGroup::new();
        g.group_epoch = s.group_epoch;
        g.assignment_epoch = s.assignment_epoch;
        g.assignor = s.assignor;
        for m in s.members {
            g.target.insert(m.id.clone(), m.target);
            let state = if !m.pending_revocation.is_empty() { MemberState::UnrevokedPartitions } else { MemberState::Stable };
            let regex = m.subscribed_topic_regex.as_deref().and_then(|r| compile(r).ok());
            g.members.insert(
                m.id.clone(),
                ConsumerMember {
                    id: m.id,
                    instance_id: m.instance_id,
                    rack_id: m.rack_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    server_assignor: m.server_assignor,
                    subscribed_topic_names: m.subscribed_topic_names,
                    subscribed_topic_regex: m.subscribed_topic_regex,
                    regex,
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    state,
                    assigned: m.assigned,
                    pending_revocation: m.pending_revocation,
                    session_deadline: now + session_timeout_ms as i64,
                    revocation_deadline: None,
                },
            );
        }
        g
    }

    /// Every topic some member subscribes to, as it is now.
    fn subscription(&self, topics: &Topics) -> BTreeMap<String, TopicInfo> {
        let mut out = BTreeMap::new();
        for m in self.members.values() {
            for (name, info) in m.subscribed(topics) {
                out.insert(name.clone(), *info);
            }
        }
        out
    }

    /// Partitions owned by members other than `except` (assigned or not yet revoked).
    fn owned_by_others(&self, except: &str) -> Assignment {
        let mut out = Assignment::new();
        for m in self.members.values().filter(|m| m.id != except) {
            union_into(&mut out, &m.assigned);
            union_into(&mut out, &m.pending_revocation);
        }
        out
    }

    /// Recomputes the target assignment if the group epoch moved on.
    fn update_target(&mut self, topics: &Topics, cfg: &GroupConfig) {
        if self.group_epoch <= self.assignment_epoch {
            return;
        }
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.server_assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        let assignor = votes
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(a, _)| a.to_string())
            .unwrap_or_else(|| cfg.consumer_default_assignor.clone());
        let subscriptions: BTreeMap<String, Vec<(Uuid, i32)>> = self
            .members
            .values()
            .map(|m| (m.id.clone(), m.subscribed(topics).into_iter().map(|(_, i)| (i.id, i.partitions)).collect()))
            .collect();
        self.target = if assignor == "range" { assign_range(&subscriptions) } else { assign_uniform(&subscriptions, &self.target) };
        self.assignor = assignor;
        self.subscribed = self.subscription(topics);
        self.assignment_epoch = self.group_epoch;
        tracing::info!(epoch = self.group_epoch, members = self.members.len(), assignor = %self.assignor, "consumer group: new target assignment");
    }

    /// Moves `member` one step towards its target (see the module docs).
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now: i64) {
        let others = self.owned_by_others(member_id);
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let epoch = self.assignment_epoch;
        let m = self.members.get_mut(member_id).expect("reconciling a member");
        if !m.pending_revocation.is_empty() {
            let revoked = owned.is_some_and(|o| minus(&m.pending_revocation, o) == m.pending_revocation);
            if !revoked {
                return;
            }
            m.pending_revocation.clear();
            m.revocation_deadline = None;
        }
        let mut revoke = minus(&m.assigned, &target);
        if !revoke.is_empty() && owned.is_some_and(|o| minus(&revoke, o) == revoke) {
            // The client already reports none of them: nothing to wait for.
            m.assigned = minus(&m.assigned, &revoke);
            revoke.clear();
        }
        if !revoke.is_empty() {
            m.assigned = minus(&m.assigned, &revoke);
            m.pending_revocation = revoke;
            m.state = MemberState::UnrevokedPartitions;
            m.revocation_deadline = Some(now + m.rebalance_timeout_ms as i64);
            return;
        }
        if m.epoch != epoch {
            m.previous_epoch = m.epoch;
            m.epoch = epoch;
        }
        let wanted = minus(&target, &m.assigned);
        let free = minus(&wanted, &others);
        union_into(&mut m.assigned, &free);
        m.state = if count(&free) == count(&wanted) { MemberState::Stable } else { MemberState::UnreleasedPartitions };
    }

    pub(super) fn tick(&mut self, now: i64, cfg: &GroupConfig, topics: &Topics) -> bool {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_deadline <= now || m.revocation_deadline.is_some_and(|d| d <= now))
            .map(|m| m.id.clone())
            .collect();
        if expired.is_empty() {
            return false;
        }
        for id in &expired {
            tracing::info!(member = %id, "consumer group member expired (session or revocation timeout); removed");
            self.members.remove(id);
            self.target.remove(id);
        }
        self.group_epoch = self.group_epoch.wrapping_add(1).max(1);
        self.update_target(topics, cfg);
        self.check_invariants();
        true
    }

    /// No partition is owned (assigned or awaiting revocation) by two
    /// members. Checked after every change in debug builds — the unit tests
    /// and the simulator — since it costs a pass over every assignment.
    pub(super) fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let mut owner: BTreeMap<(Uuid, i32), &str> = BTreeMap::new();
        for m in self.members.values() {
            for (t, ps) in m.assigned.iter().chain(m.pending_revocation.iter()) {
                for p in ps {
                    if let Some(other) = owner.insert((*t, *p), &m.id) {
                        panic!("partition {t}-{p} is owned by both {other} and {} (group epoch {})", m.id, self.group_epoch);
                    }
                }
            }
        }
    }

    /// OffsetCommit's check for KIP-848 members.
    pub(super) fn validate_commit(&self, member_id: &str, epoch: i32) -> GroupResult<()> {
        if epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let m = self.members.get(member_id).ok_or(UnknownMemberId)?;
        match epoch.cmp(&m.epoch) {
            std::cmp::Ordering::Greater => Err(FencedMemberEpoch),
            std::cmp::Ordering::Less => Err(StaleMemberEpoch),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    pub(super) fn subscribed_topics(&self, topics: &Topics) -> BTreeSet<String> {
        self.subscription(topics).into_keys().collect()
    }
}

/// `uniform`: every partition of the subscribed topics, spread so member
/// counts differ by at most one where subscriptions allow, keeping each
/// partition with its previous owner when that keeps the balance.
pub fn assign_uniform(subs: &BTreeMap<String, Vec<(Uuid, i32)>>, previous: &BTreeMap<String, Assignment>) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subs.keys().map(|m| (m.clone(), Assignment::new())).collect();
    let mut partitions: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    for topics in subs.values() {
        for (t, n) in topics {
            partitions.extend((0..*n).map(|p| (*t, p)));
        }
    }
    if subs.is_empty() || partitions.is_empty() {
        return out;
    }
    let eligible = |m: &str, t: &Uuid| subs[m].iter().any(|(x, _)| x == t);
    // Quotas as if every member could take every partition; heterogeneous
    // subscriptions are then balanced greedily below.
    let members = subs.len();
    let floor = partitions.len() / members;
    let mut at_ceil = partitions.len() % members;
    let mut counts: BTreeMap<&str, usize> = subs.keys().map(|m| (m.as_str(), 0)).collect();
    let mut taken: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    // Sticky pass: biggest previous owners first, so they keep the most.
    let mut owners: Vec<(&String, &Assignment)> = previous.iter().filter(|(m, _)| subs.contains_key(*m)).collect();
    owners.sort_by_key(|(m, a)| (std::cmp::Reverse(count(a)), (*m).clone()));
    for (m, a) in owners {
        let limit = if at_ceil > 0 { floor + 1 } else { floor };
        let mut kept = 0;
        for (t, ps) in a {
            for p in ps {
                if kept < limit && partitions.contains(&(*t, *p)) && eligible(m, t) && taken.insert((*t, *p)) {
                    out.get_mut(m).expect("member").entry(*t).or_default().insert(*p);
                    kept += 1;
                }
            }
        }
        if kept == floor + 1 {
            at_ceil -= 1;
        }
        counts.insert(m.as_str(), kept);
    }
    for (t, p) in partitions {
        if taken.contains(&(t, p)) {
            continue;
        }
        let best = counts.iter().filter(|(m, _)| eligible(m, &t)).min_by_key(|(m, n)| (**n, **m)).map(|(m, _)| m.to_string());
        if let Some(m) = best {
            out.get_mut(&m).expect("member").entry(t).or_default().insert(p);
            *counts.get_mut(m.as_str()).expect("member") += 1;
        }
    }
    out
}

/// `range`: per topic, members subscribed to it in id order take contiguous
/// ranges, the first `partitions % members` one more.
pub fn assign_range(subs: &BTreeMap<String, Vec<(Uuid, i32)>>) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subs.keys().map(|m| (m.clone(), Assignment::new())).collect();
    let mut topics: BTreeMap<Uuid, (i32, Vec<&String>)> = BTreeMap::new();
    for (m, ts) in subs {
        for (t, n) in ts {
            let e = topics.entry(*t).or_insert((*n, Vec::new()));
            e.1.push(m);
        }
    }
    for (t, (n, members)) in topics {
        let k = members.len() as i32;
        let (each, extra) = (n / k, n % k);
        let mut next = 0;
        for (i, m) in members.iter().enumerate() {
            let take = each + if (i as i32) < extra { 1 } else { 0 };
            if take > 0 {
                out.get_mut(*m).expect("member").entry(t).or_default().extend(next..next + take);
            }
            next += take;
        }
    }
    out
}

fn heartbeat_error(e: ResponseError, message: impl Into<String>) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default().with_error_code(e.code()).with_error_message(Some(text(message)))
}

impl Groups {
    pub fn consumer_group_heartbeat(
        &mut self,
        r: ConsumerGroupHeartbeatRequest,
        version: i16,
        ctx: &Ctx,
        now: i64,
        topics: &Topics,
    ) -> ConsumerGroupHeartbeatResponse {
        let group_id = r.group_id.0.to_string();
        let response = match self.heartbeat_inner(&group_id, r, version, ctx, now, topics) {
            Ok(r) => r,
            Err((e, message)) => {
                tracing::debug!(group = %group_id, error = ?e, %message, "ConsumerGroupHeartbeat refused");
                heartbeat_error(e, message)
            }
        };
        if let Some(Group::Consumer(g)) = self.groups.get(&group_id) {
            g.check_invariants();
        }
        self.persist(&group_id);
        self.note_emptiness(&group_id, now);
        response
    }

    fn heartbeat_inner(
        &mut self,
        group_id: &str,
        r: ConsumerGroupHeartbeatRequest,
        version: i16,
        ctx: &Ctx,
        now: i64,
        topics: &Topics,
    ) -> Result<ConsumerGroupHeartbeatResponse, (ResponseError, String)> {
        let bad = |m: &str| Err((InvalidRequest, m.to_string()));
        if group_id.is_empty() {
            return bad("group id is empty");
        }
        if let Err(e) = self.serves(group_id) {
            return Err((e, format!("the __consumer_offsets partition of '{group_id}' is not loaded")));
        }
        let epoch = r.member_epoch;
        let mut member_id = r.member_id.to_string();
        if version >= 1 && member_id.is_empty() {
            return bad("member id must be set (ConsumerGroupHeartbeat v1 members choose their own)");
        }
        if epoch == 0 {
            if r.rebalance_timeout_ms <= 0 {
                return bad("rebalance timeout must be positive when joining");
            }
            if r.subscribed_topic_names.is_none() && r.subscribed_topic_regex.is_none() {
                return bad("a joining member must give its subscription");
            }
            if r.topic_partitions.as_ref().is_none_or(|t| !t.is_empty()) {
                return bad("a joining member must own no partitions");
            }
        } else if epoch < -2 {
            return bad("member epoch must be -2, -1, 0 or positive");
        } else if member_id.is_empty() {
            return bad("member id is empty");
        }
        if let Some(a) = &r.server_assignor {
            if !ASSIGNORS.contains(&&**a) {
                return Err((UnsupportedAssignor, format!("unknown server assignor '{a}'; this broker has {}", ASSIGNORS.join(", "))));
            }
        }
        let regex = match r.subscribed_topic_regex.as_deref() {
            Some(s) if !s.is_empty() => {
                Some(compile(s).map_err(|e| (InvalidRegularExpression, format!("subscribed topic regex '{s}': {e}")))?)
            }
            _ => None,
        };
        let cfg = self.config.clone();
        let session = cfg.consumer_session_timeout_ms as i64;

        // The group: created by a joining member; an empty classic group
        // (standalone commits) becomes a consumer group keeping its offsets.
        match self.groups.get(group_id) {
            Some(Group::Classic(g)) if !(g.members.is_empty() && g.pending_members.is_empty()) => {
                return Err((GroupIdNotFound, format!("group '{group_id}' is a classic group with members")));
            }
            Some(Group::Consumer(_)) => {}
            // Only a join (epoch 0) creates the group; anything else names a
            // group that is not there, as Kafka answers.
            _ if epoch != 0 => return Err((GroupIdNotFound, format!("group '{group_id}' does not exist"))),
            _ => {
                self.groups.insert(group_id.to_string(), Group::Consumer(ConsumerGroup::new()));
            }
        }
        if epoch == 0 && member_id.is_empty() {
            member_id = Uuid::from_bytes(self.rng.bytes16()).to_string();
        }
        let Some(Group::Consumer(g)) = self.groups.get_mut(group_id) else { unreachable!("ensured above") };

        if epoch < 0 {
            // Leaving: -1 for good, -2 a static member's temporary leave.
            let Some(m) = g.members.get_mut(&member_id) else {
                return Err((UnknownMemberId, format!("group '{group_id}' has no member '{member_id}'")));
            };
            if epoch == -2 && m.instance_id.is_some() {
                m.previous_epoch = m.epoch;
                m.epoch = -2;
                tracing::info!(group = %group_id, member = %member_id, "static member left temporarily; its partitions wait for it");
            } else {
                g.members.remove(&member_id);
                g.target.remove(&member_id);
                g.group_epoch = g.group_epoch.wrapping_add(1).max(1);
                g.update_target(topics, &cfg);
                tracing::info!(group = %group_id, member = %member_id, "member left the consumer group");
            }
            return Ok(ConsumerGroupHeartbeatResponse::default().with_member_id(Some(text(member_id))).with_member_epoch(epoch));
        }

        let owned: Option<Assignment> =
            r.topic_partitions.as_ref().map(|tps| tps.iter().map(|tp| (tp.topic_id, tp.partitions.iter().copied().collect())).collect());
        let mut bump = false;
        if epoch == 0 {
            if let Some(instance) = r.instance_id.as_deref() {
                let holder = g.members.values().find(|m| m.instance_id.as_deref() == Some(instance)).map(|m| (m.id.clone(), m.epoch));
                match holder {
                    Some((id, -2)) if id != member_id => {
                        // The static member is back under a new id: it takes
                        // over the old one's partitions and epoch.
                        let mut old = g.members.remove(&id).expect("holder");
                        let target = g.target.remove(&id).unwrap_or_default();
                        old.id = member_id.clone();
                        g.target.insert(member_id.clone(), target);
                        g.members.insert(member_id.clone(), old);
                    }
                    Some((id, _)) if id != member_id => {
                        return Err((UnreleasedInstanceId, format!("instance id '{instance}' is in use by member '{id}'")));
                    }
                    _ => {}
                }
            }
            if let Some(m) = g.members.get(&member_id) {
                if m.epoch != -2 {
                    // Rejoining from scratch (the client lost its state):
                    // its partitions are released first.
                    g.members.remove(&member_id);
                    g.target.remove(&member_id);
                    bump = true;
                }
            }
            if !g.members.contains_key(&member_id) {
                if g.members.len() >= cfg.consumer_max_size {
                    return Err((GroupMaxSizeReached, format!("group '{group_id}' has {} members, the limit", g.members.len())));
                }
                g.members.insert(
                    member_id.clone(),
                    ConsumerMember {
                        id: member_id.clone(),
                        instance_id: r.instance_id.as_ref().map(|s| s.to_string()),
                        rack_id: None,
                        client_id: ctx.client_id.clone(),
                        client_host: ctx.client_host.clone(),
                        rebalance_timeout_ms: r.rebalance_timeout_ms,
                        server_assignor: None,
                        subscribed_topic_names: Vec::new(),
                        subscribed_topic_regex: None,
                        regex: None,
                        epoch: 0,
                        previous_epoch: 0,
                        state: MemberState::Stable,
                        assigned: Assignment::new(),
                        pending_revocation: Assignment::new(),
                        session_deadline: now + session,
                        revocation_deadline: None,
                    },
                );
                bump = true;
                tracing::info!(group = %group_id, member = %member_id, "member joined the consumer group");
            } else if let Some(m) = g.members.get_mut(&member_id) {
                if m.epoch == -2 {
                    m.epoch = m.previous_epoch.max(0);
                }
            }
        } else {
            let Some(m) = g.members.get(&member_id) else {
                return Err((UnknownMemberId, format!("group '{group_id}' has no member '{member_id}'")));
            };
            if m.epoch == -2 {
                return Err((FencedMemberEpoch, format!("member '{member_id}' left the group; it must rejoin with epoch 0")));
            }
            let previous_ok = epoch == m.previous_epoch && owned.as_ref().is_some_and(|o| minus(o, &m.assigned).is_empty());
            if epoch != m.epoch && !previous_ok {
                return Err((FencedMemberEpoch, format!("member epoch {epoch} is not the current {}", m.epoch)));
            }
        }

        let m = g.members.get_mut(&member_id).expect("member exists now");
        m.session_deadline = now + session;
        m.client_id = ctx.client_id.clone();
        m.client_host = ctx.client_host.clone();
        if r.rebalance_timeout_ms > 0 {
            m.rebalance_timeout_ms = r.rebalance_timeout_ms;
        }
        if let Some(rack) = &r.rack_id {
            m.rack_id = Some(rack.to_string());
        }
        if let Some(a) = &r.server_assignor {
            if m.server_assignor.as_deref() != Some(&**a) {
                m.server_assignor = Some(a.to_string());
                bump = true;
            }
        }
        if let Some(names) = &r.subscribed_topic_names {
            let names: Vec<String> = names.iter().map(|n| n.0.to_string()).collect();
            if names != m.subscribed_topic_names {
                m.subscribed_topic_names = names;
                bump = true;
            }
        }
        if let Some(s) = &r.subscribed_topic_regex {
            let s = (!s.is_empty()).then(|| s.to_string());
            if s != m.subscribed_topic_regex {
                m.subscribed_topic_regex = s;
                m.regex = regex;
                bump = true;
            }
        }
        // Topics created, deleted or grown since the last assignment count
        // as a change of the group too.
        if g.subscription(topics) != g.subscribed {
            bump = true;
        }
        if bump {
            g.group_epoch = g.group_epoch.wrapping_add(1).max(1);
        }
        g.update_target(topics, &cfg);
        let before = g.members[&member_id].assigned.clone();
        g.reconcile(&member_id, owned.as_ref(), now);
        let m = &g.members[&member_id];
        let full = epoch == 0 || (r.rebalance_timeout_ms != -1 && r.subscribed_topic_names.is_some() && r.topic_partitions.is_some());
        let mut response = ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(text(member_id.clone())))
            .with_member_epoch(m.epoch)
            .with_heartbeat_interval_ms(cfg.consumer_heartbeat_interval_ms);
        response.error_message = None;
        if full || m.assigned != before || owned.as_ref().is_some_and(|o| *o != m.assigned) {
            response.assignment = Some(HbAssignment::default().with_topic_partitions(to_wire(&m.assigned)));
        }
        Ok(response)
    }

    pub fn consumer_group_describe(&self, ids: Vec<GroupId>, include_operations: bool, version: i16, topics: &Topics) -> Vec<CgDescribed> {
        let names: BTreeMap<Uuid, &String> = topics.iter().map(|(n, i)| (i.id, n)).collect();
        let wire = |a: &Assignment| {
            cgd::Assignment::default().with_topic_partitions(
                a.iter()
                    .map(|(t, ps)| {
                        cgd::TopicPartitions::default()
                            .with_topic_id(*t)
                            .with_topic_name(TopicName(text(names.get(t).map(|s| s.as_str()).unwrap_or(""))))
                            .with_partitions(ps.iter().copied().collect())
                    })
                    .collect(),
            )
        };
        ids.into_iter()
            .map(|id| {
                let name = id.0.to_string();
                let mut d = CgDescribed::default().with_group_id(id);
                match self.groups.get(&name) {
                    _ if self.serves(&name).is_err() => {
                        d.error_code = super::code(self.serves(&name));
                        d.group_state = text("Dead");
                    }
                    Some(Group::Consumer(g)) => {
                        d.error_message = None;
                        d.group_state = text(g.state_name());
                        d.group_epoch = g.group_epoch;
                        d.assignment_epoch = g.assignment_epoch;
                        d.assignor_name = text(g.assignor.clone());
                        d.authorized_operations = if include_operations { GROUP_OPERATIONS } else { i32::MIN };
                        d.members = g
                            .members
                            .values()
                            .map(|m| {
                                let mut member = cgd::Member::default()
                                    .with_member_id(text(m.id.clone()))
                                    .with_instance_id(m.instance_id.clone().map(text))
                                    .with_rack_id(m.rack_id.clone().map(text))
                                    .with_member_epoch(m.epoch)
                                    .with_client_id(text(m.client_id.clone()))
                                    .with_client_host(text(m.client_host.clone()))
                                    .with_subscribed_topic_names(m.subscribed_topic_names.iter().map(|n| TopicName(text(n.clone()))).collect())
                                    .with_subscribed_topic_regex(m.subscribed_topic_regex.clone().map(text))
                                    .with_assignment(wire(&m.assigned))
                                    .with_target_assignment(wire(g.target.get(&m.id).unwrap_or(&Assignment::new())));
                                if version >= 1 {
                                    member.member_type = 1; // a consumer-protocol member
                                }
                                member
                            })
                            .collect();
                    }
                    Some(Group::Classic(_)) => {
                        d.error_code = GroupIdNotFound.code();
                        d.error_message = Some(text(format!("group '{name}' is not a consumer group")));
                        d.group_state = text("Dead");
                    }
                    None => {
                        d.error_code = GroupIdNotFound.code();
                        d.error_message = Some(text(format!("group '{name}' does not exist")));
                        d.group_state = text("Dead");
                    }
                }
                d
            })
            .collect()
    }
}

#[cfg(test)]
pub(super) fn member_state(g: &ConsumerGroup, id: &str) -> (i32, MemberState, Assignment, Assignment) {
    let m = &g.members[id];
    (m.epoch, m.state, m.assigned.clone(), m.pending_revocation.clone())
}
