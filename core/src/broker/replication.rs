//! The broker's side of the cluster: reconciling its topics and partition
//! roles with the controller's image, the leader's answers to its
//! followers' fetches, and a follower's appends and truncations.
//!
//! Everything is synchronous; `chronik-net` moves the bytes (gRPC) and
//! proposes the ISR changes this module asks for.
//!
//! Lock order: the broker state, then a partition's log, then its role.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chronik_proto::ResponseError::{self, *};
use uuid::Uuid;

use super::catalog::TopicRecord;
use super::{open_partition, Broker, ClusterView, Partition, Topic, LEADER_EPOCH};
use crate::cluster::image::{Command, Image, PartitionState, NO_LEADER};
use crate::cluster::replica::{IsrChange, LeaderState};
use crate::log::PartitionLog;
use crate::transport::NodeId;

/// What this broker is for one partition.
#[derive(Debug, Clone)]
pub enum Role {
    /// Not in a cluster (or a broker-local topic): the only replica, at
    /// leader epoch 0; the HW is the durable end.
    Solo,
    /// Leads the partition at `leader.leader_epoch`.
    Leader { leader: Box<LeaderState>, partition_epoch: i32 },
    /// Follows `leader` at `leader_epoch`.
    Follower { leader: NodeId, leader_epoch: i32 },
    /// In a cluster, with no leader now, or before the image reached it.
    Unavailable { leader_epoch: i32 },
    /// In a cluster, and not a replica here.
    NotReplica,
}

/// Whether an `acks=all` append is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckState {
    Committed,
    Waiting,
    /// It never will be here: the partition went offline, or this broker
    /// stopped leading the epoch it was appended in.
    Lost(ResponseError),
}

impl Partition {
    pub(super) fn new(topic: String, index: i32, log: Result<PartitionLog, String>, role: Role) -> Partition {
        Partition { topic, index, log: Mutex::new(log), role: Mutex::new(role) }
    }

    pub fn role(&self) -> std::sync::MutexGuard<'_, Role> {
        self.role.lock().expect("partition role poisoned")
    }

    /// The leader epoch clients are served at, or `NOT_LEADER_OR_FOLLOWER`
    /// if this broker does not lead the partition now (Kafka's answer to
    /// produce and fetch, whether another broker leads or none does).
    pub fn serving_epoch(&self) -> Result<i32, ResponseError> {
        match &*self.role() {
            Role::Solo => Ok(LEADER_EPOCH),
            Role::Leader { leader, .. } => Ok(leader.leader_epoch),
            Role::Follower { .. } | Role::NotReplica | Role::Unavailable { .. } => Err(NotLeaderOrFollower),
        }
    }

    /// Whether an `acks=all` append that ends at `offset`, made at
    /// `leader_epoch`, is committed.
    pub fn ack_state(&self, leader_epoch: i32, offset: i64) -> AckState {
        let guard = self.lock();
        let Ok(log) = guard.as_ref() else { return AckState::Lost(KafkaStorageError) };
        if log.offline().is_some() {
            return AckState::Lost(KafkaStorageError);
        }
        match self.serving_epoch() {
            Ok(e) if e == leader_epoch => {}
            // A new leader may have cut this append off; the producer retries.
            _ => return AckState::Lost(NotLeaderOrFollower),
        }
        if log.high_watermark() >= offset {
            AckState::Committed
        } else {
            AckState::Waiting
        }
    }
}

/// A follower's fetch, as the leader receives it.
#[derive(Debug, Clone)]
pub struct ReplicaFetch {
    pub topic_id: Uuid,
    pub partition: i32,
    pub replica: NodeId,
    /// The leader epoch the follower follows.
    pub leader_epoch: i32,
    pub fetch_offset: i64,
    /// The epoch of the last batch in the follower's log (-1: none).
    pub last_fetched_epoch: i32,
    /// The end of the follower's log it has fsynced.
    pub durable_end: i64,
    pub max_bytes: usize,
}

/// The leader's answer to a follower's fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaAnswer {
    /// Batches from the fetch offset (maybe none), as stored.
    Records { records: Vec<u8>, high_watermark: i64, log_start_offset: i64, log_end_offset: i64 },
    /// The follower's log diverged: the leader's log has `epoch` (the
    /// largest at or below the follower's last one) ending at `end_offset`.
    /// The follower truncates to at most that and fetches again.
    Diverging { epoch: i32, end_offset: i64 },
    /// The leader no longer has the fetch offset: the follower starts over
    /// at the leader's log start.
    StartAt { log_start_offset: i64 },
    Refused(ResponseError, String),
}

/// What a follower does with its leader's answer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerStep {
    /// Append the batches; then the leader's log start, where it moved
    /// past ours within what is committed, becomes ours (whole segments
    /// below it go), as Kafka's followers do.
    Append { records: Vec<u8>, high_watermark: i64, log_start_offset: i64 },
    TruncateTo(i64),
    ResetTo(i64),
}

/// A partition this broker follows, for the fetcher that replicates it.
#[derive(Clone)]
pub struct Followed {
    pub partition: Arc<Partition>,
    pub topic_id: Uuid,
    pub leader: NodeId,
    pub leader_epoch: i32,
}

fn refused(e: ResponseError, m: impl Into<String>) -> ReplicaAnswer {
    ReplicaAnswer::Refused(e, m.into())
}

impl Broker {
    /// Brings the broker in step with the controller's image: creates the
    /// topics and partitions it holds replicas of, deletes the ones the
    /// controller deleted, applies config changes, and gives every
    /// partition its role. `controller_id` is the quorum's leader (-1: none);
    /// `incarnation` is this process's registration.
    pub fn apply_image(&self, image: &Image, controller_id: i32, incarnation: Uuid) {
        let me = self.config.node_id;
        let now = self.clock.now_ms();
        let view = ClusterView {
            controller_id,
            brokers: image.brokers.values().map(|b| (b.id, b.host.clone(), b.kafka_port, b.fenced)).collect(),
            topics: image.topics.clone(),
            cluster_id: image.cluster_id.clone(),
        };
        // Topics are this cluster's only once this data directory carries
        // the cluster's id (see `adopt_cluster_id`): a directory of another
        // cluster must not take this one's topics.
        if image.cluster_id.as_deref() != Some(self.cluster_id().as_str()) {
            self.set_cluster_view(Some(view));
            return;
        }
        let _changes = self.config_changes.lock().expect("config change lock poisoned");
        // 1. Deletions: our cluster topics the image has applied past the
        // creation of, and no longer has (or has under another id).
        let gone: Vec<String> = {
            let state = self.read_state();
            state
                .catalog
                .topics
                .values()
                .filter(|r| r.created_index.is_some_and(|c| image.applied_index >= c))
                .filter(|r| image.topics.get(&r.name).is_none_or(|t| t.id != r.id))
                .map(|r| r.name.clone())
                .collect()
        };
        for name in gone {
            tracing::info!(topic = %name, "the controller deleted the topic; deleting its replicas here");
            if let Err(e) = self.delete_topic(&name) {
                tracing::error!(topic = %name, error = %e, "could not delete a topic the controller deleted");
            }
        }
        // 2. Creations, new partitions and config changes.
        for (name, t) in &image.topics {
            let local = self.topic(name);
            match &local {
                Some(l) if l.record.id == t.id && l.record.partitions as usize == t.partitions.len() && l.record.configs == t.configs => continue,
                Some(l) if l.record.created_index.is_none() => {
                    tracing::error!(topic = %name, "the controller has a topic this broker holds as its own; the local topic is kept and the controller's ignored here");
                    continue;
                }
                Some(l) if l.record.id != t.id => continue, // the older one is deleted once the image is past it
                _ => {}
            }
            let record = TopicRecord { name: name.clone(), id: t.id, partitions: t.partitions.len() as i32, configs: t.configs.clone(), created_index: Some(t.created_index) };
            if let Err(e) = self.install_topic(local, record, &t.partitions, now) {
                tracing::error!(topic = %name, error = %e, "could not create the topic's replicas here");
            }
        }
        // 3. Roles. Only a registered, unfenced incarnation acts on them: an
        // image from before this process registered may name it leader at an
        // epoch whose log a crash cut short, and leading that epoch again
        // would write different batches under the same epoch. Registering
        // fences the old incarnation, so the partitions it led get new
        // epochs first.
        let registered = image.brokers.get(&me).is_some_and(|b| b.incarnation == incarnation && !b.fenced);
        for topic in self.topics() {
            let Some(state) = image.topics.get(&topic.record.name).filter(|t| t.id == topic.record.id) else { continue };
            for (p, ps) in topic.partitions.iter().zip(&state.partitions) {
                if registered {
                    self.set_role(p, ps, me);
                } else {
                    self.stand_by(p, ps, me);
                }
            }
        }
        self.set_cluster_view(Some(view));
    }

    /// Creates (or grows, or reconfigures) a controller topic here: logs for
    /// the partitions this broker holds replicas of, the catalogue first.
    fn install_topic(&self, local: Option<Arc<Topic>>, record: TopicRecord, partitions: &[PartitionState], now: i64) -> Result<(), String> {
        let me = self.config.node_id;
        let existing = local.as_ref().map_or(0, |t| t.partitions.len());
        let mut parts: Vec<Arc<Partition>> = local.as_ref().map(|t| t.partitions.clone()).unwrap_or_default();
        for (i, ps) in partitions.iter().enumerate().skip(existing) {
            let p = if ps.replicas.contains(&me) {
                let p = open_partition(&self.disk, &self.config, &record, i as i32, now);
                *p.role() = Role::Unavailable { leader_epoch: -1 };
                p
            } else {
                Arc::new(Partition::new(record.name.clone(), i as i32, Err("not a replica on this broker".into()), Role::NotReplica))
            };
            parts.push(p);
        }
        if let Some(l) = &local {
            if l.record.configs != record.configs {
                let log_config = self.config.log_config(&record.configs);
                for p in &l.partitions {
                    if let Ok(log) = &mut *p.lock() {
                        log.set_config(log_config.clone());
                    }
                }
            }
        }
        let mut state = self.write_state();
        let mut catalog = state.catalog.clone();
        catalog.topics.insert(record.name.clone(), record.clone());
        catalog.save(&*self.disk).map_err(|e| format!("cannot persist the catalogue: {e}"))?;
        state.catalog = catalog;
        let name = record.name.clone();
        let count = record.partitions;
        state.topics.insert(name.clone(), Arc::new(Topic { record, partitions: parts }));
        if existing == 0 {
            tracing::info!(topic = %name, partitions = count, "created the topic's replicas from the controller");
        } else if existing < count as usize {
            tracing::info!(topic = %name, from = existing, to = count, "added partitions from the controller");
        }
        Ok(())
    }

    /// While this broker is fenced or not yet registered: it neither leads
    /// nor follows (a replica keeps its log, and nothing more is committed).
    fn stand_by(&self, p: &Partition, ps: &PartitionState, me: NodeId) {
        if !ps.replicas.contains(&me) {
            *p.role() = Role::NotReplica;
            return;
        }
        let mut guard = p.lock();
        let mut role = p.role();
        if matches!(&*role, Role::Unavailable { .. }) {
            return;
        }
        if let Role::Leader { .. } = &*role {
            tracing::info!(topic = %p.topic, partition = p.index, "this broker is fenced: it stops leading the partition");
        }
        *role = Role::Unavailable { leader_epoch: -1 };
        if let Ok(log) = guard.as_mut() {
            let hw = log.high_watermark();
            log.set_replicated_hw(Some(hw));
        }
    }

    /// Gives a partition the role its state in the image says.
    fn set_role(&self, p: &Partition, ps: &PartitionState, me: NodeId) {
        if !ps.replicas.contains(&me) {
            *p.role() = Role::NotReplica;
            return;
        }
        let mut guard = p.lock();
        let Ok(log) = guard.as_mut() else { return };
        let mut role = p.role();
        match &mut *role {
            Role::Leader { leader, partition_epoch } if ps.leader == me && leader.leader_epoch == ps.leader_epoch => {
                // The same leadership: the controller applied an ISR change
                // (ours or one forced by fencing) or added replicas.
                if *partition_epoch != ps.partition_epoch {
                    *partition_epoch = ps.partition_epoch;
                    leader.isr = ps.isr.clone();
                    leader.pending = None;
                    // A smaller ISR may let the high watermark move now.
                    leader.on_local_flush(log.durable_end());
                    log.set_replicated_hw(Some(leader.high_watermark));
                }
                return;
            }
            _ => {}
        }
        if ps.leader == me {
            if let Err(e) = log.begin_epoch(ps.leader_epoch) {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "cannot begin a leader epoch");
                *role = Role::Unavailable { leader_epoch: ps.leader_epoch };
                return;
            }
            let hw = log.high_watermark();
            let state = LeaderState::new(
                me,
                ps.leader_epoch,
                ps.replicas.clone(),
                ps.isr.clone(),
                log.log_end_offset(),
                hw,
                self.clock.monotonic_ms(),
                self.config.replica_lag_time_max_ms,
            );
            tracing::info!(topic = %p.topic, partition = p.index, leader_epoch = ps.leader_epoch, isr = ?ps.isr, log_end = log.log_end_offset(), high_watermark = hw, "leading the partition");
            log.set_replicated_hw(Some(hw));
            *role = Role::Leader { leader: Box::new(state), partition_epoch: ps.partition_epoch };
        } else if ps.leader == NO_LEADER {
            if !matches!(&*role, Role::Unavailable { leader_epoch } if *leader_epoch == ps.leader_epoch) {
                tracing::warn!(topic = %p.topic, partition = p.index, leader_epoch = ps.leader_epoch, "the partition has no leader");
            }
            *role = Role::Unavailable { leader_epoch: ps.leader_epoch };
            let hw = log.high_watermark();
            log.set_replicated_hw(Some(hw));
        } else {
            if !matches!(&*role, Role::Follower { leader_epoch, .. } if *leader_epoch == ps.leader_epoch) {
                tracing::info!(topic = %p.topic, partition = p.index, leader = ps.leader, leader_epoch = ps.leader_epoch, "following the partition's leader");
                // Until the leader says otherwise, nothing more is committed.
                let hw = log.high_watermark();
                log.set_replicated_hw(Some(hw));
            }
            *role = Role::Follower { leader: ps.leader, leader_epoch: ps.leader_epoch };
        }
    }

    /// A fetcher starts following `f`. Nothing to do: a follower's log is
    /// cut only where the leader says it diverged (by leader epoch), never
    /// to its own high watermark, which may lag what the ISR committed
    /// (KIP-101; planted bug `truncate-to-hw` does the old thing).
    pub fn begin_following(&self, f: &Followed) {
        if crate::planted::active(crate::planted::Bug::TruncateToHw) {
            let hw = f.partition.high_watermark().unwrap_or(0);
            let _ = self.follower_apply(&f.partition, f.leader_epoch, FollowerStep::TruncateTo(hw));
        }
    }

    /// The partitions this broker follows, with their leaders.
    pub fn followed(&self) -> Vec<Followed> {
        let mut out = Vec::new();
        for t in self.topics() {
            for p in &t.partitions {
                if let Role::Follower { leader, leader_epoch } = &*p.role() {
                    out.push(Followed { partition: p.clone(), topic_id: t.record.id, leader: *leader, leader_epoch: *leader_epoch });
                }
            }
        }
        out
    }

    /// The leader's side of a follower's fetch. Returns the answer and
    /// whether the high watermark moved (waiters should look again).
    pub fn replica_fetch(&self, f: &ReplicaFetch) -> (ReplicaAnswer, bool) {
        let Some(topic) = self.topic_by_id(f.topic_id) else {
            return (refused(UnknownTopicId, format!("no topic with id {}", f.topic_id)), false);
        };
        let Some(p) = topic.partition(f.partition) else {
            return (refused(UnknownTopicOrPartition, format!("{}-{} does not exist", topic.record.name, f.partition)), false);
        };
        let mut guard = p.lock();
        let log = match guard.as_mut() {
            Ok(log) if log.offline().is_none() => log,
            _ => return (refused(KafkaStorageError, "the leader's log is offline"), false),
        };
        let mut role = p.role();
        let Role::Leader { leader, .. } = &mut *role else {
            return (refused(NotLeaderOrFollower, format!("broker {} does not lead {}-{}", self.config.node_id, p.topic, p.index)), false);
        };
        if f.leader_epoch != leader.leader_epoch {
            let e = if f.leader_epoch < leader.leader_epoch { FencedLeaderEpoch } else { UnknownLeaderEpoch };
            return (refused(e, format!("fetch at leader epoch {}, the leader is at {}", f.leader_epoch, leader.leader_epoch)), false);
        }
        if !leader.replicas.contains(&f.replica) || f.replica == self.config.node_id {
            return (refused(NotLeaderOrFollower, format!("broker {} is not a follower of {}-{}", f.replica, p.topic, p.index)), false);
        }
        // Does the follower's log agree with ours up to its fetch offset?
        if f.last_fetched_epoch >= 0 {
            let (epoch, end) = log.end_offset_for_epoch(f.last_fetched_epoch);
            if epoch < 0 {
                // We know no epochs (an empty log): ours is the log to keep.
                return (ReplicaAnswer::Diverging { epoch: -1, end_offset: log.log_end_offset() }, false);
            }
            if epoch != f.last_fetched_epoch || end < f.fetch_offset {
                return (ReplicaAnswer::Diverging { epoch, end_offset: end }, false);
            }
        }
        let (start, leo) = (log.log_start_offset(), log.log_end_offset());
        if f.fetch_offset > leo {
            // Only possible with a last fetched epoch of -1 (an empty epoch cache).
            return (ReplicaAnswer::Diverging { epoch: -1, end_offset: leo }, false);
        }
        if f.fetch_offset < start {
            return (ReplicaAnswer::StartAt { log_start_offset: start }, false);
        }
        let moved = leader.on_fetch(f.replica, f.fetch_offset, f.durable_end, leo, log.durable_end(), self.clock.monotonic_ms());
        let hw = leader.high_watermark;
        log.set_replicated_hw(Some(hw));
        let records = match log.read(f.fetch_offset, f.max_bytes, true, leo) {
            Ok(r) => r.bytes,
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "replica read failed");
                return (refused(KafkaStorageError, e.to_string()), moved);
            }
        };
        (ReplicaAnswer::Records { records, high_watermark: log.high_watermark(), log_start_offset: start, log_end_offset: leo }, moved)
    }

    /// The follower's next fetch of `partition`: (fetch offset, last
    /// fetched epoch, durable end), or `None` if it no longer follows
    /// `leader_epoch` or its log is offline.
    pub fn replica_position(&self, partition: &Partition, leader_epoch: i32) -> Option<(i64, i32, i64)> {
        let guard = partition.lock();
        let log = guard.as_ref().ok().filter(|l| l.offline().is_none())?;
        match &*partition.role() {
            Role::Follower { leader_epoch: e, .. } if *e == leader_epoch => Some((log.log_end_offset(), log.latest_epoch(), log.durable_end())),
            _ => None,
        }
    }

    /// Turns the leader's answer into what the follower must do, given its
    /// own log: for a divergence, where to truncate.
    pub fn follower_step(&self, partition: &Partition, answer: ReplicaAnswer) -> Result<Option<FollowerStep>, String> {
        Ok(match answer {
            ReplicaAnswer::Records { records, high_watermark, log_start_offset, .. } => Some(FollowerStep::Append { records, high_watermark, log_start_offset }),
            ReplicaAnswer::StartAt { log_start_offset } => Some(FollowerStep::ResetTo(log_start_offset)),
            ReplicaAnswer::Diverging { epoch, end_offset } => {
                let guard = partition.lock();
                let log = guard.as_ref().map_err(|e| e.clone())?;
                // Our own end of that epoch; never below what is committed
                // is possible here, since the leader's log holds every
                // committed record (Kafka's truncation by leader epoch).
                let ours = if epoch < 0 { end_offset } else { log.end_offset_for_epoch(epoch).1 };
                let to = end_offset.min(ours).min(log.log_end_offset());
                Some(FollowerStep::TruncateTo(to))
            }
            ReplicaAnswer::Refused(e, m) => return Err(format!("{e:?}: {m}")),
        })
    }

    /// Applies one step to a partition this broker follows at
    /// `leader_epoch`. Returns false if it no longer follows that epoch
    /// (nothing was done).
    pub fn follower_apply(&self, partition: &Partition, leader_epoch: i32, step: FollowerStep) -> Result<bool, String> {
        let now = self.clock.now_ms();
        let mut guard = partition.lock();
        if !matches!(&*partition.role(), Role::Follower { leader_epoch: e, .. } if *e == leader_epoch) {
            return Ok(false);
        }
        let log = guard.as_mut().map_err(|e| e.clone())?;
        match step {
            FollowerStep::Append { records, high_watermark, log_start_offset } => {
                if !records.is_empty() {
                    log.append_replicated(&records, now).map_err(|e| e.to_string())?;
                }
                let hw = high_watermark.max(log.high_watermark()).min(log.log_end_offset());
                log.set_replicated_hw(Some(hw));
                if log_start_offset > log.log_start_offset() {
                    match log.delete_segments_before(log_start_offset) {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(topic = %partition.topic, partition = partition.index, segments = n, log_start = log.log_start_offset(), "followed the leader's log start"),
                        Err(e) => tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "cannot delete segments below the leader's log start"),
                    }
                }
            }
            FollowerStep::TruncateTo(offset) | FollowerStep::ResetTo(offset) => {
                let reset = matches!(step, FollowerStep::ResetTo(_));
                let hw = log.high_watermark();
                tracing::info!(topic = %partition.topic, partition = partition.index, offset, log_end = log.log_end_offset(), high_watermark = hw, reset, "truncating the follower's log to its leader's");
                let taken = std::mem::replace(&mut *guard, Err("being truncated".into()));
                let Ok(log) = taken else { unreachable!("checked above") };
                let result = if reset { log.reset_to(offset, now) } else { log.truncate_to(offset, now) };
                match result {
                    Ok(mut log) => {
                        let hw = hw.min(log.log_end_offset()).max(log.log_start_offset());
                        log.set_replicated_hw(Some(hw));
                        *guard = Ok(log);
                    }
                    Err(e) => {
                        tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "truncation failed; the partition is offline until restart");
                        *guard = Err(e.to_string());
                        return Err(e.to_string());
                    }
                }
            }
        }
        Ok(true)
    }

    /// After a flush: a leader's own durable end may move its HW.
    pub(super) fn on_flushed(&self, p: &Partition, log: &mut PartitionLog) {
        if let Role::Leader { leader, .. } = &mut *p.role() {
            leader.on_local_flush(log.durable_end());
            log.set_replicated_hw(Some(leader.high_watermark));
        }
    }

    /// The ISR changes the partitions this broker leads need now, as
    /// commands for the controller; each is marked pending until the image
    /// answers it (or [`Broker::isr_change_failed`]).
    pub fn isr_changes(&self) -> Vec<Command> {
        let now = self.clock.monotonic_ms();
        let mut out = Vec::new();
        for t in self.topics() {
            for p in &t.partitions {
                let mut role = p.role();
                let Role::Leader { leader, partition_epoch } = &mut *role else { continue };
                let Some(change) = leader.isr_change(now) else { continue };
                let isr = match change {
                    IsrChange::Shrink(isr) => {
                        tracing::warn!(topic = %p.topic, partition = p.index, from = ?leader.isr, to = ?isr, "shrinking the ISR: followers fell behind");
                        isr
                    }
                    IsrChange::Expand(isr) => {
                        tracing::info!(topic = %p.topic, partition = p.index, from = ?leader.isr, to = ?isr, "expanding the ISR: followers caught up");
                        isr
                    }
                };
                leader.pending = Some(isr.clone());
                out.push(Command::AlterPartition {
                    topic: p.topic.clone(),
                    partition: p.index,
                    leader: leader.me,
                    leader_epoch: leader.leader_epoch,
                    partition_epoch: *partition_epoch,
                    isr,
                });
            }
        }
        out
    }

    /// An ISR change could not be made: it may be proposed again.
    pub fn isr_change_failed(&self, topic: &str, partition: i32, leader_epoch: i32) {
        let Some(p) = self.topic(topic).and_then(|t| t.partition(partition).cloned()) else { return };
        let mut role = p.role();
        if let Role::Leader { leader, .. } = &mut *role {
            if leader.leader_epoch == leader_epoch {
                leader.pending = None;
            }
        }
    }

    /// Whether an `acks=all` produce to a partition led here has enough
    /// replicas in sync (`min.insync.replicas`).
    pub(super) fn enough_replicas(&self, p: &Partition, configs: &BTreeMap<String, String>) -> Result<(), (usize, usize)> {
        match &*p.role() {
            Role::Leader { leader, .. } => {
                let min = self.config.min_insync_replicas(configs);
                if leader.enough_replicas(min) {
                    Ok(())
                } else {
                    Err((leader.isr.len(), min))
                }
            }
            _ => Ok(()),
        }
    }

    /// Takes the cluster's id (from the controller) as this data
    /// directory's. A directory that holds another cluster's topics is
    /// refused: its data belongs elsewhere.
    pub fn adopt_cluster_id(&self, id: &str) -> Result<(), String> {
        if let Some(pinned) = self.config.cluster_id.as_deref().filter(|p| *p != id) {
            return Err(format!(
                "this broker was started with --cluster-id {pinned}, but the controller quorum of --controllers is cluster {id}: \
                 is --controllers (or --cluster-id) right?"
            ));
        }
        let mut state = self.write_state();
        if state.catalog.cluster_id == id {
            return Ok(());
        }
        if let Some(t) = state.catalog.topics.values().find(|t| t.created_index.is_some()) {
            return Err(format!(
                "this data directory belongs to cluster {} (it holds that cluster's topic '{}'), but the controller quorum is cluster {id}: start it with its own cluster's --controllers, or with an empty --data-dir",
                state.catalog.cluster_id, t.name
            ));
        }
        let mut catalog = state.catalog.clone();
        tracing::info!(from = %catalog.cluster_id, to = %id, "taking the cluster's id");
        catalog.cluster_id = id.to_string();
        catalog.save(&*self.disk).map_err(|e| format!("cannot persist the catalogue: {e}"))?;
        state.catalog = catalog;
        Ok(())
    }

    /// Whether a topic belongs to the cluster (the controller's) rather
    /// than to this broker alone.
    pub fn is_cluster_topic(&self, topic: &Topic) -> bool {
        topic.record.created_index.is_some()
    }
}
