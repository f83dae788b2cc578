//! The group coordinator's home in the broker: request dispatch, the
//! `__consumer_offsets` topic (created on first use), appending the
//! coordinator's records, and replaying them at start.
//!
//! In a cluster `__consumer_offsets` is a replicated topic like any other
//! (created through the controller), and the coordinator of a group is the
//! leader of the group's partition: a broker loads a partition's groups
//! when it comes to lead it, once every record it holds is committed, and
//! drops them when it stops leading. Its records are appended at the
//! partition's leader epoch and answered at the replicated high watermark,
//! so a committed offset survives the loss of any minority of replicas.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chronik_proto::batch::{self, Producer};
use chronik_proto::ResponseError::{self, *};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, ConsumerGroupDescribeResponse, DeleteGroupsResponse, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    RequestKind, ResponseKind,
};
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use super::{Broker, Partition, Topic};
use crate::group::record::Key;
use crate::group::{text, Answer, Ctx, Groups, Load, TopicInfo, Topics, Write, OFFSETS_TOPIC};

/// What a group request answers with.
pub enum GroupAnswer {
    Now(ResponseKind),
    /// When the group gets there (JoinGroup, SyncGroup); then, before it is
    /// sent, whatever the coordinator appended for `group` must be durable
    /// (see [`Broker::group_barrier`]).
    Later { reply: crate::group::Reply, group: String },
    /// Once every wait is committed (the coordinator's records are durable);
    /// `complete(true)` then builds the answer, and `complete(false)` if
    /// they never will be.
    Durable { waits: Vec<GroupWait>, complete: Box<dyn FnOnce(bool) -> ResponseKind + Send> },
}

/// Coordinator records that must be committed before an answer is sent:
/// `partition`'s high watermark must reach `offset` while this broker still
/// leads it at `leader_epoch` (see [`Partition::ack_state`]).
pub struct GroupWait {
    pub partition: Arc<Partition>,
    pub leader_epoch: i32,
    pub offset: i64,
}

/// What `__consumer_offsets` holds that is still live: the latest record
/// per key of each partition (what a compaction would keep), and the
/// cleanings under way.
///
/// Cleaning copies forward instead of rewriting old segments: when a
/// partition is much larger than its live records, the coordinator rolls it,
/// appends every live record again, and once those are durable deletes the
/// segments below them. Replaying from the new start yields the same state,
/// and a crash half-way leaves a log that still replays correctly.
#[derive(Default)]
pub(super) struct OffsetsLog {
    latest: BTreeMap<i32, BTreeMap<Bytes, Bytes>>,
    /// partition -> (first rewritten offset, end of the rewrite)
    cleaning: BTreeMap<i32, (i64, i64)>,
    next_check_ms: i64,
    /// In a cluster: the partitions this broker leads, by leader epoch, and
    /// for those still loading, the log end their load waits to see
    /// committed.
    leading: BTreeMap<i32, Lead>,
}

#[derive(Debug, Clone, Copy)]
struct Lead {
    leader_epoch: i32,
    loading_until: Option<i64>,
}

impl OffsetsLog {
    /// The epoch this broker writes `partition` at: the one it loaded it
    /// under, and only while it still leads that epoch.
    fn writable_epoch(&self, p: &Partition, cluster: bool) -> Result<i32, String> {
        let epoch = p.serving_epoch().map_err(|_| format!("this broker no longer leads {OFFSETS_TOPIC}-{}", p.index))?;
        if !cluster {
            return Ok(epoch);
        }
        match self.leading.get(&p.index) {
            Some(l) if l.leader_epoch == epoch && l.loading_until.is_none() => Ok(epoch),
            _ => Err(format!("{OFFSETS_TOPIC}-{} is not loaded at leader epoch {epoch}", p.index)),
        }
    }

    fn forget(&mut self, partition: i32) {
        self.latest.remove(&partition);
        self.cleaning.remove(&partition);
        self.leading.remove(&partition);
    }

    fn note(&mut self, partition: i32, key: &Bytes, value: Option<&Bytes>) {
        let live = self.latest.entry(partition).or_default();
        match value {
            Some(v) => {
                live.insert(key.clone(), v.clone());
            }
            None => {
                live.remove(key);
                // A group's tombstone takes its offsets with it.
                if let Ok(Key::Group { group }) = Key::parse(key) {
                    live.retain(|k, _| !matches!(Key::parse(k), Ok(Key::Offset { group: g, .. }) if g == group));
                }
            }
        }
    }
}

/// How often the cleaner looks at `__consumer_offsets`.
const CLEAN_CHECK_MS: i64 = 1_000;
/// Records per batch when live records are copied forward.
const CLEAN_BATCH: usize = 500;

/// Whether `body` is one of the group coordinator's requests.
pub fn is_group_request(body: &RequestKind) -> bool {
    matches!(
        body,
        RequestKind::FindCoordinator(_)
            | RequestKind::JoinGroup(_)
            | RequestKind::SyncGroup(_)
            | RequestKind::Heartbeat(_)
            | RequestKind::LeaveGroup(_)
            | RequestKind::OffsetCommit(_)
            | RequestKind::OffsetFetch(_)
            | RequestKind::OffsetDelete(_)
            | RequestKind::ListGroups(_)
            | RequestKind::DescribeGroups(_)
            | RequestKind::DeleteGroups(_)
            | RequestKind::ConsumerGroupHeartbeat(_)
            | RequestKind::ConsumerGroupDescribe(_)
    )
}

impl Broker {
    pub(super) fn groups(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.groups.lock().expect("group coordinator poisoned")
    }

    fn offsets_log(&self) -> std::sync::MutexGuard<'_, OffsetsLog> {
        self.offsets_log.lock().expect("offsets log state poisoned")
    }

    /// The user topics as the coordinator sees them.
    fn topic_infos(&self) -> Topics {
        self.read_state()
            .topics
            .values()
            .filter(|t| !is_internal(&t.record.name))
            .map(|t| (t.record.name.clone(), TopicInfo { id: t.record.id, partitions: t.record.partitions }))
            .collect()
    }

    /// `__consumer_offsets`, created on first use like Kafka does (in a
    /// cluster, by the controller: see `chronik_net::cluster_admin`).
    pub(super) fn offsets_topic(&self) -> Result<Arc<Topic>, String> {
        if let Some(t) = self.topic(OFFSETS_TOPIC) {
            return Ok(t);
        }
        if self.config.cluster {
            return Err(format!("the cluster's {OFFSETS_TOPIC} is not created yet"));
        }
        let partitions = self.config.group.offsets_topic_partitions;
        let configs = crate::group::OFFSETS_TOPIC_CONFIGS.map(|(k, v)| (k.to_string(), v.to_string())).into();
        match self.create_topic(OFFSETS_TOPIC, partitions, configs, false) {
            Ok(_) => tracing::info!(partitions, "created the internal topic {OFFSETS_TOPIC}"),
            Err((TopicAlreadyExists, _)) => {}
            Err((e, message)) => return Err(format!("cannot create {OFFSETS_TOPIC}: {e:?}: {message}")),
        }
        self.topic(OFFSETS_TOPIC).ok_or_else(|| format!("{OFFSETS_TOPIC} vanished"))
    }

    /// Appends the coordinator's records, one batch per partition. Returns,
    /// for each partition appended to, where its batch ends (for durability
    /// waits) and its first record's offset; and why some partition could
    /// not be appended to (the others are appended all the same).
    fn append_writes(&self, writes: Vec<Write>) -> (Vec<(GroupWait, i64)>, Option<String>) {
        if writes.is_empty() {
            return (Vec::new(), None);
        }
        let topic = match self.offsets_topic() {
            Ok(t) => t,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let n = topic.partitions.len() as i32;
        let mut by_partition: BTreeMap<i32, Vec<(Option<Bytes>, Option<Bytes>)>> = BTreeMap::new();
        for w in writes {
            by_partition.entry(crate::group::partition_for(&w.group, n)).or_default().push((Some(w.key), w.value));
        }
        let mut live = self.offsets_log();
        let now = self.clock.now_ms();
        let (mut out, mut failed) = (Vec::new(), None);
        for (index, records) in by_partition {
            let partition = topic.partition(index).expect("index below the partition count").clone();
            let encoded = batch::encode(&records, &Producer::plain(Compression::None, now));
            let appended = (|| {
                let mut guard = partition.lock();
                let log = guard.as_mut().map_err(|e| format!("{OFFSETS_TOPIC}-{index} is offline: {e}"))?;
                let epoch = live.writable_epoch(&partition, self.config.cluster)?;
                // As Kafka, the coordinator writes with acks=all: not below
                // min.insync.replicas (the answer is COORDINATOR_NOT_AVAILABLE).
                self.enough_replicas(&partition, &topic.record.configs)
                    .map_err(|(isr, min)| format!("{OFFSETS_TOPIC}-{index}: {isr} replicas in sync, min.insync.replicas is {min}"))?;
                let appended = log.append(encoded.to_vec(), epoch, now).map_err(|e| format!("cannot append to {OFFSETS_TOPIC}-{index}: {e}"))?;
                Ok::<_, String>((appended, epoch))
            })();
            let (appended, leader_epoch) = match appended {
                Ok(a) => a,
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            for (key, value) in &records {
                live.note(index, key.as_ref().expect("coordinator records have keys"), value.as_ref());
            }
            out.push((GroupWait { partition, leader_epoch, offset: appended.last_offset + 1 }, appended.base_offset));
        }
        (out, failed)
    }

    /// Appends what the last operations wrote. A failure is logged (the
    /// state in memory stays, and is written again with the next change)
    /// and returned: an answer that reveals the change must not be sent as
    /// a success (see [`durable_then`]).
    fn flush_group_writes(&self, groups: &mut Groups) -> Flushed {
        let (appended, error) = self.append_writes(groups.take_writes());
        if let Some(e) = &error {
            tracing::error!(error = %e, "could not record group state");
        }
        Flushed { waits: appended.into_iter().map(|(wait, _)| wait).collect(), error }
    }

    /// Replays `__consumer_offsets` into the coordinator (at start, on a
    /// single broker; a cluster member loads partitions as it comes to lead
    /// them, see [`Broker::follow_offsets_leadership`]).
    pub(super) fn load_groups(&self) {
        if self.config.cluster {
            self.groups().serve_only_loaded();
            return;
        }
        let Some(topic) = self.topic(OFFSETS_TOPIC) else { return };
        let now = self.clock.monotonic_ms();
        let mut groups = self.groups();
        let mut live = self.offsets_log();
        groups.set_offsets_partitions(topic.partitions.len() as i32);
        let mut records = 0usize;
        for p in &topic.partitions {
            let guard = p.lock();
            let loaded = match &*guard {
                Ok(log) => replay_partition(log, p.index, &mut groups, &mut live, now),
                Err(e) => Err(format!("offline: {e}")),
            };
            match loaded {
                Ok(n) => records += n,
                Err(e) => {
                    live.latest.remove(&p.index);
                    tracing::error!(
                        partition = p.index,
                        error = %e,
                        "cannot load {OFFSETS_TOPIC}-{}: its groups answer COORDINATOR_NOT_AVAILABLE until it loads at a restart",
                        p.index
                    );
                    groups.mark_unavailable(p.index);
                }
            }
        }
        groups.finish_replay(now);
        tracing::info!(records, groups = groups.group_ids().count(), "loaded consumer groups");
    }

    /// Where a waiting group answer must be durable before it is sent: the
    /// end of the group's `__consumer_offsets` partition, at the epoch this
    /// broker leads it (-1 if it does not: the wait fails). Taking the
    /// coordinator's lock first makes sure the operation that filled the
    /// answer has appended its records.
    pub fn group_barrier(&self, group: &str, response: &ResponseKind) -> Option<GroupWait> {
        // A refusal reveals no change: it is sent as it is (NOT_COORDINATOR
        // from an unload stays NOT_COORDINATOR).
        let error = match response {
            ResponseKind::JoinGroup(r) => r.error_code,
            ResponseKind::SyncGroup(r) => r.error_code,
            _ => 0,
        };
        if error != 0 {
            return None;
        }
        let _ordered = self.groups();
        let topic = self.topic(OFFSETS_TOPIC)?;
        let partition = topic.partition(crate::group::partition_for(group, topic.partitions.len() as i32))?.clone();
        // Not writable (offline, or no longer led at the epoch it was
        // loaded under): the wait fails, and so does the answer.
        let leader_epoch = self.offsets_log().writable_epoch(&partition, self.config.cluster).unwrap_or(-1);
        let offset = partition.log_end_offset().unwrap_or(i64::MAX);
        Some(GroupWait { partition, leader_epoch, offset })
    }

    /// In a cluster: brings the coordinator in step with which
    /// `__consumer_offsets` partitions this broker leads. A partition it
    /// stopped leading (or leads at a new epoch) is unloaded at once; one
    /// it newly leads waits until everything its log held at election is
    /// committed — the new leader's log is the partition's history from
    /// then on — and, with `load`, is replayed once it is.
    fn follow_offsets_leadership(&self, groups: &mut Groups, live: &mut OffsetsLog, load: bool) {
        if !self.config.cluster {
            return;
        }
        let Some(topic) = self.topic(OFFSETS_TOPIC) else { return };
        groups.set_offsets_partitions(topic.partitions.len() as i32);
        for p in &topic.partitions {
            let epoch = p.serving_epoch().ok();
            let lead = live.leading.get(&p.index).copied();
            if lead.map(|l| l.leader_epoch) != epoch {
                if lead.is_some() {
                    tracing::info!(partition = p.index, "no longer the group coordinator for {OFFSETS_TOPIC}-{}: its groups are unloaded", p.index);
                    groups.unload(p.index, Load::NotOwned);
                    live.forget(p.index);
                }
                let Some(leader_epoch) = epoch else { continue };
                let Some(end) = p.log_end_offset() else {
                    // Led here but its log is offline (until a restart):
                    // COORDINATOR_NOT_AVAILABLE, not NOT_COORDINATOR, which
                    // would send clients back here in a loop.
                    tracing::error!(partition = p.index, leader_epoch, "leading {OFFSETS_TOPIC}-{} whose log is offline: its groups answer COORDINATOR_NOT_AVAILABLE", p.index);
                    live.leading.insert(p.index, Lead { leader_epoch, loading_until: None });
                    groups.mark_unavailable(p.index);
                    continue;
                };
                tracing::info!(partition = p.index, leader_epoch, log_end = end, "leading {OFFSETS_TOPIC}-{}: loading its groups once its log is committed", p.index);
                groups.begin_loading(p.index);
                live.leading.insert(p.index, Lead { leader_epoch, loading_until: Some(end) });
            }
            let Some(Lead { leader_epoch, loading_until: Some(end) }) = live.leading.get(&p.index).copied() else { continue };
            if !load || p.high_watermark().is_none_or(|hw| hw < end) {
                continue;
            }
            let now = self.clock.monotonic_ms();
            let loaded = match &*p.lock() {
                Ok(log) => replay_partition(log, p.index, groups, live, now),
                Err(e) => Err(format!("offline: {e}")),
            };
            live.leading.insert(p.index, Lead { leader_epoch, loading_until: None });
            match loaded {
                Ok(records) => {
                    groups.loaded(p.index, now);
                    tracing::info!(partition = p.index, leader_epoch, records, "loaded the groups of {OFFSETS_TOPIC}-{}", p.index);
                }
                Err(e) => {
                    live.latest.remove(&p.index);
                    tracing::error!(partition = p.index, error = %e, "cannot load {OFFSETS_TOPIC}-{}: its groups answer COORDINATOR_NOT_AVAILABLE while this broker leads it", p.index);
                    groups.mark_unavailable(p.index);
                }
            }
        }
    }

    /// Runs the coordinator's timers (and, in a cluster, loads and unloads
    /// partitions as leadership moves). Returns whether anything changed:
    /// replies may be ready, or records were appended.
    pub fn group_tick(&self) -> bool {
        let topics = self.topic_infos();
        let mut groups = self.groups();
        {
            let mut live = self.offsets_log();
            self.follow_offsets_leadership(&mut groups, &mut live, true);
        }
        let changed = groups.tick(self.clock.monotonic_ms(), self.clock.now_ms(), &topics);
        let appended = !self.flush_group_writes(&mut groups).waits.is_empty();
        // Under the coordinator's lock: no record is appended meanwhile, so
        // the copies are the latest values.
        let cleaned = self.clean_offsets_log(&groups);
        drop(groups);
        changed || appended || cleaned
    }

    /// Copy-forward cleaning of `__consumer_offsets` (see [`OffsetsLog`]).
    /// Returns whether it appended records.
    fn clean_offsets_log(&self, groups: &Groups) -> bool {
        let now = self.clock.now_ms();
        let mut live = self.offsets_log();
        let mono = self.clock.monotonic_ms();
        if mono < live.next_check_ms {
            return false;
        }
        live.next_check_ms = mono + CLEAN_CHECK_MS;
        let Some(topic) = self.topic(OFFSETS_TOPIC) else { return false };
        let threshold = self.config.group.offsets_cleanup_bytes;
        let mut appended = false;
        for p in &topic.partitions {
            if !groups.is_partition_available(p.index) {
                continue; // what was not read must not be cleaned away
            }
            let mut guard = p.lock();
            let Ok(log) = &mut *guard else { continue };
            let Ok(epoch) = live.writable_epoch(p, self.config.cluster) else { continue };
            if let Some(&(start, end)) = live.cleaning.get(&p.index) {
                if log.high_watermark() >= end {
                    match log.delete_segments_before(start) {
                        Ok(n) => tracing::info!(partition = p.index, segments = n, log_start = log.log_start_offset(), "{OFFSETS_TOPIC} cleaned"),
                        Err(e) => tracing::error!(partition = p.index, error = %e, "cannot delete cleaned {OFFSETS_TOPIC} segments"),
                    }
                    live.cleaning.remove(&p.index);
                }
                continue;
            }
            let size = log.size_bytes();
            if size < threshold {
                continue;
            }
            let records: Vec<(Option<Bytes>, Option<Bytes>)> =
                live.latest.get(&p.index).map(|m| m.iter().map(|(k, v)| (Some(k.clone()), Some(v.clone()))).collect()).unwrap_or_default();
            let live_bytes: u64 = records.iter().map(|(k, v)| (k.as_ref().map_or(0, |b| b.len()) + v.as_ref().map_or(0, |b| b.len()) + 24) as u64).sum();
            if size < 2 * live_bytes {
                continue; // mostly live: copying would not shrink it much
            }
            let copied = (|| -> Result<(i64, i64), crate::log::LogError> {
                log.roll_now(now)?;
                let start = log.log_end_offset();
                for chunk in records.chunks(CLEAN_BATCH) {
                    let encoded = batch::encode(chunk, &Producer::plain(Compression::None, now));
                    log.append(encoded.to_vec(), epoch, now)?;
                }
                Ok((start, log.log_end_offset()))
            })();
            match copied {
                Ok((start, end)) => {
                    tracing::info!(partition = p.index, size, live = records.len(), start, "{OFFSETS_TOPIC}: copying live records forward");
                    live.cleaning.insert(p.index, (start, end));
                    appended = true;
                }
                Err(e) => tracing::error!(partition = p.index, error = %e, "cannot clean {OFFSETS_TOPIC}"),
            }
        }
        appended
    }

    /// The broker that coordinates group `key`: this one on a single
    /// broker; in a cluster, the leader of the group's `__consumer_offsets`
    /// partition, as the controller's image names it.
    fn coordinator_for(&self, key: &str, groups: &Groups) -> Result<(i32, String, i32), (ResponseError, String)> {
        if !self.config.cluster {
            groups.serves(key).map_err(|e| (e, format!("{OFFSETS_TOPIC} partition of '{key}' is not loaded")))?;
            return Ok((self.config.node_id, self.config.advertised_host.clone(), self.config.advertised_port));
        }
        let view = self.cluster_view().unwrap_or_default();
        let Some(topic) = view.topics.get(OFFSETS_TOPIC) else {
            return Err((CoordinatorNotAvailable, format!("{OFFSETS_TOPIC} is being created")));
        };
        let index = crate::group::partition_for(key, topic.partitions.len() as i32);
        let leader = topic.partitions.get(index as usize).map_or(-1, |p| p.leader);
        match view.brokers.iter().find(|b| b.0 == leader) {
            Some(b) => Ok((b.0, b.1.clone(), b.2)),
            None => Err((CoordinatorNotAvailable, format!("{OFFSETS_TOPIC}-{index}, which holds group '{key}', has no leader now"))),
        }
    }

    fn find_coordinator(&self, r: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
        let keys: Vec<String> = if version >= 4 { r.coordinator_keys.iter().map(|k| k.to_string()).collect() } else { vec![r.key.to_string()] };
        let available = self.offsets_topic();
        let groups = self.groups();
        let answers: Vec<Coordinator> = keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default().with_key(text(key.clone()));
                let found = match (r.key_type, &available) {
                    (0, Ok(_)) => self.coordinator_for(&key, &groups),
                    (0, Err(e)) => Err((CoordinatorNotAvailable, e.clone())),
                    (1, _) => Err((CoordinatorNotAvailable, "transactions are not supported by this broker yet".into())),
                    (t, _) => Err((InvalidRequest, format!("unknown coordinator key type {t}"))),
                };
                match found {
                    Ok((id, host, port)) => {
                        c.node_id = BrokerId(id);
                        c.host = text(host);
                        c.port = port;
                        c.error_message = None;
                    }
                    Err((e, message)) => {
                        tracing::debug!(%key, error = ?e, %message, "FindCoordinator refused");
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                        c.error_code = e.code();
                        c.error_message = Some(text(message));
                    }
                }
                c
            })
            .collect();
        if version >= 4 {
            return FindCoordinatorResponse::default().with_coordinators(answers);
        }
        let c = answers.into_iter().next().expect("one key");
        let mut response = FindCoordinatorResponse::default()
            .with_error_code(c.error_code)
            .with_node_id(c.node_id)
            .with_host(c.host)
            .with_port(c.port);
        response.error_message = if version >= 1 { c.error_message } else { None };
        response
    }

    /// Handles a group coordinator request (see [`is_group_request`]).
    pub fn handle_group(&self, version: i16, body: RequestKind, ctx: &Ctx) -> GroupAnswer {
        // Deadlines on the monotonic clock; commit timestamps on the wall.
        let now = self.clock.monotonic_ms();
        if self.config.cluster {
            // A partition this broker stopped leading since the last tick
            // must not answer from what it had loaded.
            let mut groups = self.groups();
            let mut live = self.offsets_log();
            self.follow_offsets_leadership(&mut groups, &mut live, false);
        }
        match body {
            RequestKind::FindCoordinator(r) => GroupAnswer::Now(ResponseKind::FindCoordinator(self.find_coordinator(r, version))),
            RequestKind::JoinGroup(r) => {
                if let Err(e) = self.offsets_topic() {
                    tracing::error!(error = %e, "JoinGroup: the coordinator is not available");
                    let mut resp = kafka_protocol::messages::JoinGroupResponse::default().with_error_code(CoordinatorNotAvailable.code());
                    if version >= 7 {
                        resp.protocol_name = None;
                    }
                    return GroupAnswer::Now(ResponseKind::JoinGroup(resp));
                }
                let group = r.group_id.0.to_string();
                let mut groups = self.groups();
                let answer = groups.join_group(r, version, ctx, now);
                let waits = self.flush_group_writes(&mut groups);
                match answer {
                    Answer::Now(r) => durable_then(waits, r),
                    Answer::Later(reply) => GroupAnswer::Later { reply, group },
                }
            }
            RequestKind::SyncGroup(r) => {
                let group = r.group_id.0.to_string();
                let mut groups = self.groups();
                let answer = groups.sync_group(r, version, now);
                let waits = self.flush_group_writes(&mut groups);
                match answer {
                    Answer::Now(r) => durable_then(waits, r),
                    Answer::Later(reply) => GroupAnswer::Later { reply, group },
                }
            }
            RequestKind::Heartbeat(r) => GroupAnswer::Now(ResponseKind::Heartbeat(self.groups().heartbeat(r, version, now))),
            RequestKind::LeaveGroup(r) => {
                let mut groups = self.groups();
                let response = groups.leave_group(r, version, now);
                let waits = self.flush_group_writes(&mut groups);
                durable_then(waits, ResponseKind::LeaveGroup(response))
            }
            RequestKind::OffsetCommit(r) => {
                let topics = self.topic_infos();
                let mut groups = self.groups();
                let mut plan = groups.prepare_commit(r, version, &topics, self.clock.now_ms());
                self.flush_group_writes(&mut groups);
                if plan.entries.is_empty() {
                    return GroupAnswer::Now(ResponseKind::OffsetCommit(plan.response));
                }
                let writes = Groups::commit_writes(&plan.group, &plan.entries);
                let appended = match self.append_writes(writes) {
                    (_, Some(e)) => Err(e),
                    (appended, None) => Ok(appended),
                };
                match appended {
                    Err(e) => {
                        tracing::error!(group = %plan.group, error = %e, "offset commit not recorded");
                        plan.fail(CoordinatorNotAvailable);
                        GroupAnswer::Now(ResponseKind::OffsetCommit(plan.response))
                    }
                    Ok(mut appended) => {
                        let (wait, first) = appended.pop().expect("one group, one partition");
                        if crate::planted::active(crate::planted::Bug::AckCommitBeforeFsync) {
                            groups.apply_commit(&plan.group, std::mem::take(&mut plan.entries), first, plan.seq, now);
                            return GroupAnswer::Now(ResponseKind::OffsetCommit(plan.response));
                        }
                        let coordinator = self.groups.clone();
                        GroupAnswer::Durable {
                            waits: vec![wait],
                            complete: Box::new(move |durable| {
                                if durable {
                                    let mut g = coordinator.lock().expect("group coordinator poisoned");
                                    g.apply_commit(&plan.group, std::mem::take(&mut plan.entries), first, plan.seq, now);
                                } else {
                                    plan.fail(CoordinatorNotAvailable);
                                }
                                ResponseKind::OffsetCommit(plan.response)
                            }),
                        }
                    }
                }
            }
            RequestKind::OffsetFetch(r) => GroupAnswer::Now(ResponseKind::OffsetFetch(self.groups().offset_fetch(r, version))),
            RequestKind::OffsetDelete(r) => {
                let topics = self.topic_infos();
                let mut groups = self.groups();
                let response = groups.offset_delete(r, &topics, now);
                let waits = self.flush_group_writes(&mut groups);
                durable_then(waits, ResponseKind::OffsetDelete(response))
            }
            RequestKind::ListGroups(r) => GroupAnswer::Now(ResponseKind::ListGroups(self.groups().list_groups(r, version))),
            RequestKind::DescribeGroups(r) => {
                let described = self.groups().describe_groups(r.groups, r.include_authorized_operations, version);
                GroupAnswer::Now(ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(described)))
            }
            RequestKind::DeleteGroups(r) => {
                let mut groups = self.groups();
                let codes = groups.delete_groups(&r.groups_names, now);
                let waits = self.flush_group_writes(&mut groups);
                let results = r
                    .groups_names
                    .into_iter()
                    .zip(codes)
                    .map(|(id, code)| DeletableGroupResult::default().with_group_id(id).with_error_code(code))
                    .collect();
                durable_then(waits, ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results)))
            }
            RequestKind::ConsumerGroupHeartbeat(r) => {
                if let Err(e) = self.offsets_topic() {
                    tracing::error!(error = %e, "ConsumerGroupHeartbeat: the coordinator is not available");
                    let resp = kafka_protocol::messages::ConsumerGroupHeartbeatResponse::default()
                        .with_error_code(CoordinatorNotAvailable.code())
                        .with_error_message(Some(text(e)));
                    return GroupAnswer::Now(ResponseKind::ConsumerGroupHeartbeat(resp));
                }
                let topics = self.topic_infos();
                let mut groups = self.groups();
                let response = groups.consumer_group_heartbeat(r, version, ctx, now, &topics);
                let waits = self.flush_group_writes(&mut groups);
                durable_then(waits, ResponseKind::ConsumerGroupHeartbeat(response))
            }
            RequestKind::ConsumerGroupDescribe(r) => {
                let topics = self.topic_infos();
                let described = self.groups().consumer_group_describe(r.group_ids, r.include_authorized_operations, version, &topics);
                GroupAnswer::Now(ResponseKind::ConsumerGroupDescribe(ConsumerGroupDescribeResponse::default().with_groups(described)))
            }
            other => unreachable!("not a group request: {:?}", std::mem::discriminant(&other)),
        }
    }
}

/// Replays one partition of `__consumer_offsets`; returns its record count.
fn replay_partition(log: &crate::log::PartitionLog, index: i32, groups: &mut Groups, live: &mut OffsetsLog, now: i64) -> Result<usize, String> {
    let mut records = 0;
    let (mut offset, end) = (log.log_start_offset(), log.high_watermark());
    while offset < end {
        let read = log.read(offset, 1 << 20, true, end).map_err(|e| e.to_string())?;
        if read.bytes.is_empty() {
            break;
        }
        let mut buf = Bytes::from(read.bytes);
        let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|e| e.to_string())?;
        for set in sets {
            for r in set.records {
                offset = r.offset + 1;
                let Some(key) = &r.key else { continue };
                if let Err(e) = groups.replay(key, r.value.as_deref(), r.offset, now) {
                    tracing::warn!(partition = index, offset = r.offset, error = %e, "skipping an unreadable {OFFSETS_TOPIC} record");
                    continue;
                }
                live.note(index, key, r.value.as_ref());
                records += 1;
            }
        }
    }
    Ok(records)
}

/// Answers once `waits` are durable — a member is never told of a state (a
/// new member id, an epoch, a deletion) that a crash could take back — or
/// with `COORDINATOR_NOT_AVAILABLE` if they cannot become durable.
fn durable_then(flushed: Flushed, response: ResponseKind) -> GroupAnswer {
    if flushed.error.is_some() {
        return GroupAnswer::Now(not_durable(response));
    }
    if flushed.waits.is_empty() {
        return GroupAnswer::Now(response);
    }
    GroupAnswer::Durable { waits: flushed.waits, complete: Box::new(move |durable| if durable { response } else { not_durable(response) }) }
}

/// What appending the coordinator's pending records did.
struct Flushed {
    waits: Vec<GroupWait>,
    /// Why some record could not be appended.
    error: Option<String>,
}

/// The answer to send instead of `response` when the coordinator's records
/// could not be made durable: the same API, `COORDINATOR_NOT_AVAILABLE`
/// (clients retry, finding the coordinator again).
pub fn not_durable(response: ResponseKind) -> ResponseKind {
    use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
    let e = CoordinatorNotAvailable.code();
    match response {
        ResponseKind::JoinGroup(_) => ResponseKind::JoinGroup(JoinGroupResponse::default().with_error_code(e)),
        ResponseKind::SyncGroup(_) => ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(e)),
        ResponseKind::LeaveGroup(r) => ResponseKind::LeaveGroup(r.with_error_code(e)),
        ResponseKind::ConsumerGroupHeartbeat(_) => ResponseKind::ConsumerGroupHeartbeat(
            kafka_protocol::messages::ConsumerGroupHeartbeatResponse::default()
                .with_error_code(e)
                .with_error_message(Some(text("the group coordinator could not record the change"))),
        ),
        ResponseKind::DeleteGroups(mut r) => {
            for g in &mut r.results {
                if g.error_code == 0 {
                    g.error_code = e;
                }
            }
            ResponseKind::DeleteGroups(r)
        }
        ResponseKind::OffsetDelete(r) => ResponseKind::OffsetDelete(r.with_error_code(e)),
        other => other,
    }
}

/// Topics clients may not write to or delete.
pub fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC
}

/// Clients may not create an internal topic (the broker creates it with
/// its own settings: `--offsets-topic-num-partitions`, its replication
/// factor and configs) nor add partitions to one (a group's partition is
/// a hash over their count: new partitions would move groups away from
/// their committed offsets).
pub(super) fn refuse_internal_change(name: &str, what: &str) -> Result<(), super::ops::Refusal> {
    if is_internal(name) {
        return Err((ResponseError::InvalidRequest, format!("topic '{name}' is internal: clients cannot {what} it (the broker manages it)")));
    }
    Ok(())
}
