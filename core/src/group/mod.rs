//! The group coordinator: consumer groups (the classic protocol and KIP-848's)
//! and their committed offsets.
//!
//! Everything here is in memory and synchronous, driven by requests and by
//! [`Groups::tick`] with time passed in — no runtime, no clock of its own —
//! so unit tests and the simulator drive it exactly as production does.
//!
//! What must survive a restart leaves as [`Write`]s: records for the
//! internal `__consumer_offsets` topic (a committed offset, a group's
//! membership snapshot, or a tombstone). The broker appends them to the
//! group's partition and replays that partition into a fresh `Groups` at
//! start ([`Groups::replay`]). Offset commits are applied to memory only once
//! their record is durable ([`Groups::apply_commit`]), so an OffsetFetch never
//! returns an offset a crash could take back.

mod classic;
mod consumer;
mod offsets;
pub mod record;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chronik_proto::ResponseError;
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::rng::Rng;
pub use classic::{Answer, ClassicGroup, ClassicState};
pub use consumer::{assign_range, assign_uniform, ConsumerGroup, ASSIGNORS};
pub use offsets::CommitPlan;
use record::{GroupSnapshot, Key, OffsetValue};

/// The internal topic holding committed offsets and group snapshots.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Its configs: retention never deletes it (only the coordinator's
/// cleaning does).
pub const OFFSETS_TOPIC_CONFIGS: [(&str, &str); 2] = [("retention.ms", "-1"), ("retention.bytes", "-1")];

/// Group-coordinator settings (Kafka's `group.*` and `offsets.*`).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an
    /// empty group waits for more members before completing.
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size`.
    pub max_size: usize,
    /// `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub consumer_heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`.
    pub consumer_max_size: usize,
    /// `group.consumer.assignors`' first entry: the server assignor used when
    /// a member names none (`uniform` or `range`).
    pub consumer_default_assignor: String,
    /// `offsets.retention.minutes` in ms: committed offsets of a group that
    /// has been empty this long are deleted.
    pub offsets_retention_ms: i64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.replication.factor` (in a cluster): until this many
    /// brokers are live, `__consumer_offsets` is not created and groups
    /// wait, as in Kafka, rather than starting under-replicated.
    pub offsets_topic_replication_factor: i32,
    /// A partition of `__consumer_offsets` larger than this (and more than
    /// twice its live records) is cleaned.
    pub offsets_cleanup_bytes: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_max_size: i32::MAX as usize,
            consumer_default_assignor: "uniform".into(),
            offsets_retention_ms: 7 * 24 * 3_600_000,
            offset_metadata_max_bytes: 4096,
            offsets_topic_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_cleanup_bytes: 16 << 20,
        }
    }
}

/// Who sent a request (DescribeGroups reports it).
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    pub client_id: String,
    pub client_host: String,
}

/// An answer that is decided later (JoinGroup and SyncGroup wait for the
/// rest of the group). The coordinator fills it; the network layer waits on
/// it, looking again whenever the coordinator signals a change.
#[derive(Clone, Default)]
pub struct Reply(Arc<Mutex<Option<ResponseKind>>>);

impl Reply {
    pub fn fill(&self, response: ResponseKind) {
        *self.0.lock().expect("reply lock") = Some(response);
    }

    pub fn take(&self) -> Option<ResponseKind> {
        self.0.lock().expect("reply lock").take()
    }

    pub fn is_filled(&self) -> bool {
        self.0.lock().expect("reply lock").is_some()
    }
}

/// A record for the group's partition of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub group: String,
    pub key: Bytes,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Where its record is in `__consumer_offsets` (a later record wins).
    pub log_offset: i64,
}

/// One group, of either protocol.
pub enum Group {
    Classic(ClassicGroup),
    Consumer(ConsumerGroup),
}

impl Group {
    pub fn is_empty(&self) -> bool {
        match self {
            Group::Classic(g) => g.members.is_empty() && g.pending_members.is_empty(),
            Group::Consumer(g) => g.members.is_empty(),
        }
    }

    pub fn state_name(&self) -> &'static str {
        match self {
            Group::Classic(g) => g.state.name(),
            Group::Consumer(g) => g.state_name(),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Group::Classic(_) => "classic",
            Group::Consumer(_) => "consumer",
        }
    }

    pub fn protocol_type(&self) -> String {
        match self {
            Group::Classic(g) => g.protocol_type.clone().unwrap_or_default(),
            Group::Consumer(_) => "consumer".into(),
        }
    }

    fn snapshot(&self) -> Option<GroupSnapshot> {
        match self {
            Group::Classic(g) => g.snapshot(),
            Group::Consumer(g) => Some(g.snapshot()),
        }
    }
}

/// A topic as the coordinator sees it: its id and partition count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicInfo {
    pub id: Uuid,
    pub partitions: i32,
}

/// The topics that exist (not internal ones), by name.
pub type Topics = BTreeMap<String, TopicInfo>;

/// Every group and every committed offset this coordinator owns.
pub struct Groups {
    config: GroupConfig,
    rng: Arc<Rng>,
    groups: BTreeMap<String, Group>,
    offsets: BTreeMap<String, BTreeMap<(String, i32), Committed>>,
    /// The last snapshot written per group, to write only changes.
    written: BTreeMap<String, Bytes>,
    /// Since when each group (or offsets-only group) has been empty.
    empty_since: BTreeMap<String, i64>,
    writes: Vec<Write>,
    /// Orders commits against deletions of the same offsets: a commit
    /// prepared before a deletion must not apply after it (its record lies
    /// before the tombstone, so a replay would not have it either).
    seq: u64,
    /// Deleted offsets: (group, topic, partition) -> (seq, when), kept for a
    /// while so late commits can be checked against them.
    deleted: BTreeMap<(String, String, i32), (u64, i64)>,
    /// Deleted groups: group -> (seq, when).
    deleted_groups: BTreeMap<String, (u64, i64)>,
    /// Which `__consumer_offsets` partitions this coordinator serves. A
    /// single broker serves every partition it loaded; a cluster member
    /// serves the partitions it leads, once loaded.
    owned: Ownership,
}

/// Where a `__consumer_offsets` partition stands with this coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Loaded: its groups are served here.
    Loaded,
    /// Led here and being loaded: `COORDINATOR_LOAD_IN_PROGRESS`.
    Loading,
    /// Not led here: `NOT_COORDINATOR` (the client looks again).
    NotOwned,
    /// Could not be read: `COORDINATOR_NOT_AVAILABLE` rather than presenting
    /// its groups as empty, which would send consumers to their reset policy.
    Failed,
}

struct Ownership {
    /// For partitions without an entry: `Loaded` on a single broker,
    /// `NotOwned` in a cluster.
    default: Load,
    partitions: BTreeMap<i32, Load>,
}

/// Kafka's authorized-operations bits for a group without an authorizer:
/// READ (3), DELETE (6), DESCRIBE (8).
pub(crate) const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub(crate) fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

impl Groups {
    pub fn new(config: GroupConfig, rng: Arc<Rng>) -> Groups {
        Groups {
            config,
            rng,
            groups: BTreeMap::new(),
            offsets: BTreeMap::new(),
            written: BTreeMap::new(),
            empty_since: BTreeMap::new(),
            writes: Vec::new(),
            owned: Ownership { default: Load::Loaded, partitions: BTreeMap::new() },
            seq: 0,
            deleted: BTreeMap::new(),
            deleted_groups: BTreeMap::new(),
        }
    }

    /// A cluster member's coordinator: it serves no partition until it
    /// leads and has loaded it.
    pub fn serve_only_loaded(&mut self) {
        self.owned.default = Load::NotOwned;
    }

    /// Where partition `p` of `__consumer_offsets` stands.
    pub fn load_state(&self, p: i32) -> Load {
        self.owned.partitions.get(&p).copied().unwrap_or(self.owned.default)
    }

    /// Whether partition `p` is loaded (its records may be written and cleaned).
    pub fn is_partition_available(&self, p: i32) -> bool {
        self.load_state(p) == Load::Loaded
    }

    /// `Ok` if this coordinator serves `group` now, else the error its
    /// requests answer with.
    pub fn serves(&self, group: &str) -> GroupResult<()> {
        match self.load_state(self.partition_for(group)) {
            Load::Loaded => Ok(()),
            Load::Loading => Err(ResponseError::CoordinatorLoadInProgress),
            Load::NotOwned => Err(ResponseError::NotCoordinator),
            Load::Failed => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// A partition that could not be (fully) loaded: forget what was read
    /// of it, and answer its groups `COORDINATOR_NOT_AVAILABLE`.
    pub fn mark_unavailable(&mut self, partition: i32) {
        self.unload(partition, Load::Failed);
    }

    /// This coordinator leads `partition` now and starts loading it: its
    /// groups answer `COORDINATOR_LOAD_IN_PROGRESS` until [`Groups::loaded`].
    pub fn begin_loading(&mut self, partition: i32) {
        self.unload(partition, Load::Loading);
    }

    /// `partition` is loaded (its records replayed): its groups' clocks
    /// start at `now`.
    pub fn loaded(&mut self, partition: i32, now: i64) {
        self.owned.partitions.insert(partition, Load::Loaded);
        self.finish_replay(now);
    }

    /// Drops every group of `partition` from memory and answers their
    /// waiting JoinGroup and SyncGroup requests `NOT_COORDINATOR` (their
    /// members find the new coordinator); the partition is then in `state`.
    pub fn unload(&mut self, partition: i32, state: Load) {
        self.owned.partitions.insert(partition, state);
        let n = self.config.offsets_topic_partitions;
        let mine = |g: &String| partition_for(g, n) == partition;
        let dropped: Vec<String> = self.groups.keys().filter(|g| mine(g)).cloned().collect();
        for id in &dropped {
            if let Some(Group::Classic(g)) = self.groups.get_mut(id) {
                g.fail_waiting(ResponseError::NotCoordinator);
            }
        }
        self.groups.retain(|g, _| !mine(g));
        self.offsets.retain(|g, _| !mine(g));
        self.written.retain(|g, _| !mine(g));
        self.empty_since.retain(|g, _| !mine(g));
        self.deleted.retain(|(g, _, _), _| !mine(g));
        self.deleted_groups.retain(|g, _| !mine(g));
        self.writes.retain(|w| !mine(&w.group));
    }

    /// The partition count of an existing `__consumer_offsets` wins over
    /// the configured one (groups must stay where their records are).
    pub fn set_offsets_partitions(&mut self, partitions: i32) {
        self.config.offsets_topic_partitions = partitions;
    }

    /// The `__consumer_offsets` partition that owns `group`: Kafka's choice,
    /// `abs(javaHashCode(group)) % partitions`, so tools agree on it.
    pub fn partition_for(&self, group: &str) -> i32 {
        partition_for(group, self.config.offsets_topic_partitions)
    }

    /// The records the last operations produced, for the caller to append.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn group_ids(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    fn member_id(&self, client_id: &str) -> String {
        let id = Uuid::from_bytes(self.rng.bytes16());
        if client_id.is_empty() { id.to_string() } else { format!("{client_id}-{id}") }
    }

    /// Writes the group's snapshot if it changed since the last one written.
    fn persist(&mut self, group_id: &str) {
        let Some(group) = self.groups.get(group_id) else { return };
        let Some(snapshot) = group.snapshot() else { return };
        let value = Bytes::from(serde_json::to_vec(&snapshot).expect("snapshots serialize"));
        if self.written.get(group_id) == Some(&value) {
            return;
        }
        self.written.insert(group_id.to_string(), value.clone());
        self.writes.push(Write { group: group_id.to_string(), key: Key::group(group_id), value: Some(value) });
    }

    /// Deletes a group with all its offsets, and writes its tombstone — which
    /// on replay also drops every offset of the group recorded before it, so
    /// a commit still waiting for its fsync cannot bring the group back.
    fn remove_group(&mut self, group_id: &str, now: i64) {
        let seq = self.next_seq();
        self.deleted_groups.insert(group_id.to_string(), (seq, now));
        self.groups.remove(group_id);
        self.offsets.remove(group_id);
        self.written.remove(group_id);
        self.empty_since.remove(group_id);
        self.writes.push(Write { group: group_id.to_string(), key: Key::group(group_id), value: None });
    }

    fn note_emptiness(&mut self, group_id: &str, now: i64) {
        let empty = self.groups.get(group_id).is_none_or(|g| g.is_empty());
        if empty {
            self.empty_since.entry(group_id.to_string()).or_insert(now);
        } else {
            self.empty_since.remove(group_id);
        }
    }

    /// The records that commit `entries` for `group` (validated by the caller).
    pub fn commit_writes(group: &str, entries: &[(String, i32, OffsetValue)]) -> Vec<Write> {
        entries
            .iter()
            .map(|(topic, partition, value)| Write {
                group: group.to_string(),
                key: Key::offset(group, topic, *partition),
                value: Some(Bytes::from(serde_json::to_vec(value).expect("offsets serialize"))),
            })
            .collect()
    }

    /// A sequence number for a commit being prepared now.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Applies commits whose records are durable, the first at `log_offset`;
    /// `seq` is the plan's (an offset deleted since is not brought back).
    pub fn apply_commit(&mut self, group: &str, entries: Vec<(String, i32, OffsetValue)>, log_offset: i64, seq: u64, now: i64) {
        if self.serves(group).is_err() {
            return; // unloaded meanwhile: its next coordinator replays the record
        }
        if self.deleted_groups.get(group).is_some_and(|(at, _)| *at > seq) {
            return; // the group was deleted after this commit was written
        }
        for (i, (topic, partition, v)) in entries.into_iter().enumerate() {
            let key = (group.to_string(), topic, partition);
            if self.deleted.get(&key).is_some_and(|(at, _)| *at > seq) {
                continue;
            }
            self.set_offset(group, key.1, partition, v, log_offset + i as i64);
        }
        self.note_emptiness(group, now);
    }

    fn set_offset(&mut self, group: &str, topic: String, partition: i32, v: OffsetValue, log_offset: i64) {
        let offsets = self.offsets.entry(group.to_string()).or_default();
        let key = (topic, partition);
        if offsets.get(&key).is_some_and(|c| c.log_offset > log_offset) {
            return; // a later commit already landed
        }
        offsets.insert(
            key,
            Committed { offset: v.offset, leader_epoch: v.leader_epoch, metadata: v.metadata, commit_timestamp: v.commit_timestamp, log_offset },
        );
    }

    /// Deletes committed offsets now (tombstones follow in the writes).
    fn delete_offsets(&mut self, group: &str, keys: &[(String, i32)], now: i64) {
        let seq = self.next_seq();
        for k in keys {
            self.deleted.insert((group.to_string(), k.0.clone(), k.1), (seq, now));
        }
        if let Some(offsets) = self.offsets.get_mut(group) {
            for k in keys {
                if offsets.remove(k).is_some() {
                    self.writes.push(Write { group: group.to_string(), key: Key::offset(group, &k.0, k.1), value: None });
                }
            }
            if offsets.is_empty() {
                self.offsets.remove(group);
            }
        }
    }

    /// Applies one record of `__consumer_offsets` at start.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>, log_offset: i64, now: i64) -> Result<(), String> {
        match Key::parse(key)? {
            Key::Offset { group, topic, partition } => match value {
                Some(v) => {
                    let v: OffsetValue = serde_json::from_slice(v).map_err(|e| format!("bad offset record: {e}"))?;
                    self.set_offset(&group, topic, partition, v, log_offset);
                }
                None => {
                    if let Some(o) = self.offsets.get_mut(&group) {
                        o.remove(&(topic, partition));
                        if o.is_empty() {
                            self.offsets.remove(&group);
                        }
                    }
                }
            },
            Key::Group { group } => match value {
                Some(v) => {
                    let snapshot: GroupSnapshot = serde_json::from_slice(v).map_err(|e| format!("bad group record: {e}"))?;
                    let restored = match snapshot {
                        GroupSnapshot::Classic(s) => Group::Classic(ClassicGroup::restore(s, now)),
                        GroupSnapshot::Consumer(s) => Group::Consumer(ConsumerGroup::restore(s, now, self.config.consumer_session_timeout_ms)),
                    };
                    self.written.insert(group.clone(), Bytes::copy_from_slice(v));
                    self.groups.insert(group, restored);
                }
                None => {
                    self.groups.remove(&group);
                    self.written.remove(&group);
                    self.offsets.remove(&group);
                }
            },
        }
        Ok(())
    }

    /// After replay: start every group's clocks at `now`.
    pub fn finish_replay(&mut self, now: i64) {
        // Groups known only by their offsets are empty classic groups, as
        // when their first standalone commit created them.
        let orphans: Vec<String> = self.offsets.keys().filter(|g| !self.groups.contains_key(*g)).cloned().collect();
        for id in orphans {
            self.groups.insert(id, Group::Classic(ClassicGroup::new()));
        }
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            self.note_emptiness(&id, now);
        }
    }

    /// Expires members whose sessions lapsed, completes rebalances whose
    /// time is up, and deletes the offsets of groups empty for longer than
    /// the retention. `now` is monotonic (every deadline here is measured
    /// on it); `wall` is the wall clock, for commit timestamps. Returns
    /// whether anything changed (replies may be ready).
    pub fn tick(&mut self, now: i64, wall: i64, topics: &Topics) -> bool {
        let mut changed = false;
        // Commits wait at most a few tens of seconds for their fsync.
        self.deleted.retain(|_, (_, at)| now - *at < 300_000);
        self.deleted_groups.retain(|_, (_, at)| now - *at < 300_000);
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in &ids {
            let c = match self.groups.get_mut(id) {
                Some(Group::Classic(g)) => g.tick(now, &self.config),
                Some(Group::Consumer(g)) => g.tick(now, &self.config, topics),
                None => false,
            };
            if c {
                changed = true;
                self.persist(id);
                self.note_emptiness(id, now);
            }
        }
        // Offsets retention (Kafka's offsets.retention.minutes): only for
        // groups with no members, counted from when the group became empty.
        if self.config.offsets_retention_ms >= 0 {
            let expired: Vec<String> = self
                .empty_since
                .iter()
                .filter(|(id, since)| now - **since > self.config.offsets_retention_ms && self.groups.get(*id).is_none_or(|g| g.is_empty()))
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                let keys: Vec<(String, i32)> = self
                    .offsets
                    .get(&id)
                    .map(|o| o.iter().filter(|(_, c)| wall - c.commit_timestamp > self.config.offsets_retention_ms).map(|(k, _)| k.clone()).collect())
                    .unwrap_or_default();
                if !keys.is_empty() {
                    tracing::info!(group = %id, partitions = keys.len(), "offsets retention: deleting the committed offsets of an empty group");
                    self.delete_offsets(&id, &keys, now);
                    changed = true;
                }
                if !self.offsets.contains_key(&id) {
                    if self.groups.contains_key(&id) {
                        self.remove_group(&id, now);
                    }
                    self.empty_since.remove(&id);
                }
            }
        }
        changed
    }
}

/// `Utils.abs(groupId.hashCode()) % n` as Kafka computes it: Java's
/// String hash over UTF-16 code units, and abs with MIN_VALUE mapped to 0.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// The error an operation on a group answers with.
pub(crate) type GroupResult<T> = Result<T, ResponseError>;

/// The wire error code of an outcome (0 for success).
pub(crate) fn code(r: GroupResult<()>) -> i16 {
    r.err().map_or(0, |e| e.code())
}

