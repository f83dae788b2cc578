//! The broker: Kafka requests in, responses out, over the partition logs.
//!
//! Everything here is synchronous and runtime-free. The network layer
//! (`chronik-net`) decodes frames, calls [`Broker::handle`] (or
//! [`Broker::produce`] / [`Broker::fetch`], which return what the caller must
//! wait for), and drives [`Broker::flush`] and [`Broker::enforce_retention`]
//! from its timers. Time comes from the injected [`Clock`], storage from the
//! injected [`Disk`], randomness from the injected [`Rng`].

mod admin;
mod alter;
pub mod cluster_admin;
pub mod ops;
pub mod catalog;
mod fetch;
mod groups;
mod produce;
pub mod replication;
#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use kafka_protocol::messages::{RequestKind, ResponseKind};
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::disk::Disk;
use crate::log::PartitionLog;
use crate::rng::Rng;
use catalog::{Catalog, TopicRecord};

pub use admin::api_versions_table;
pub use fetch::FetchOutcome;
pub use groups::{is_group_request, is_internal, not_durable, GroupAnswer, GroupWait};
pub use produce::{DurableWait, ProduceOutcome};

/// The leader epoch of every partition on a single node.
pub const LEADER_EPOCH: i32 = 0;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Catalog(String),
    #[error("cannot write the catalog: {0}")]
    Io(#[from] std::io::Error),
}

/// One partition: its log (or why it is offline) and this broker's role
/// for it (lock order: the log, then the role).
pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: Mutex<Result<PartitionLog, String>>,
    role: Mutex<replication::Role>,
}

impl Partition {
    fn lock(&self) -> MutexGuard<'_, Result<PartitionLog, String>> {
        self.log.lock().expect("partition lock poisoned")
    }

    /// The partition's log, or why it is offline.
    pub fn lock_log(&self) -> MutexGuard<'_, Result<PartitionLog, String>> {
        self.lock()
    }

    /// The log end offset, or `None` if the partition is offline.
    pub fn log_end_offset(&self) -> Option<i64> {
        self.lock().as_ref().ok().filter(|l| l.offline().is_none()).map(|l| l.log_end_offset())
    }

    /// The log start offset, or `None` if the partition is offline.
    pub fn log_start_offset(&self) -> Option<i64> {
        self.lock().as_ref().ok().filter(|l| l.offline().is_none()).map(|l| l.log_start_offset())
    }

    /// The high watermark, or `None` if the partition is offline.
    pub fn high_watermark(&self) -> Option<i64> {
        self.lock().as_ref().ok().filter(|l| l.offline().is_none()).map(|l| l.high_watermark())
    }

    /// Committed (below the high watermark) whole batches from the one
    /// holding `offset`, about `max_bytes` of them, with the log start offset
    /// and the high watermark. `Err` if the partition is offline.
    pub fn read_committed(&self, offset: i64, max_bytes: usize) -> Result<(Vec<u8>, i64, i64), String> {
        let guard = self.lock();
        let log = guard.as_ref().map_err(|e| e.clone())?;
        if let Some(why) = log.offline() {
            return Err(why.to_string());
        }
        let (start, hw) = (log.log_start_offset(), log.high_watermark());
        let read = log.read(offset, max_bytes, true, hw).map_err(|e| e.to_string())?;
        Ok((read.bytes, start, hw))
    }
}

/// A topic as served: its record plus its open partitions.
pub struct Topic {
    pub record: TopicRecord,
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index).ok().and_then(|i| self.partitions.get(i))
    }
}

struct State {
    catalog: Catalog,
    topics: BTreeMap<String, Arc<Topic>>,
    next_producer_id: i64,
}

pub struct Broker {
    config: BrokerConfig,
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    rng: Arc<Rng>,
    state: RwLock<State>,
    /// The group coordinator (lock order: this, then a partition).
    groups: Arc<Mutex<crate::group::Groups>>,
    /// Live records of `__consumer_offsets` (lock order: after `groups`).
    offsets_log: Mutex<groups::OffsetsLog>,
    /// Serializes topic config changes (taken before `state`).
    config_changes: Mutex<()>,
    /// In a cluster: the brokers, topics and controller as the quorum's
    /// image has them (set as the image changes).
    cluster_view: RwLock<Option<ClusterView>>,
}

/// The cluster as Kafka clients are told about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterView {
    /// The controller quorum's leader (-1 while there is none).
    pub controller_id: i32,
    /// (id, host, Kafka port, fenced)
    pub brokers: Vec<(i32, String, i32, bool)>,
    /// The controller's topics: replicas, leaders, ISR and epochs.
    pub topics: BTreeMap<String, crate::cluster::image::TopicState>,
    /// The cluster's id, once the quorum has named it.
    pub cluster_id: Option<String>,
}

fn open_partition(
    disk: &Arc<dyn Disk>,
    config: &BrokerConfig,
    record: &TopicRecord,
    index: i32,
    now_ms: i64,
) -> Arc<Partition> {
    let dir = record.partition_dir(index);
    let log = PartitionLog::open(disk.clone(), &dir, config.log_config(&record.configs), now_ms).map(|mut log| {
        if record.created_index.is_some() {
            // A cluster topic: nothing is known committed until its leader
            // says so (a restart forgets the high watermark).
            let start = log.log_start_offset();
            log.set_replicated_hw(Some(start));
        }
        log
    });
    let log = log.map_err(|e| {
        tracing::error!(topic = %record.name, partition = index, error = %e, "partition is offline: its log could not be opened");
        e.to_string()
    });
    let role = if record.created_index.is_some() { replication::Role::Unavailable { leader_epoch: -1 } } else { replication::Role::Solo };
    Arc::new(Partition::new(record.name.clone(), index, log, role))
}

impl Broker {
    /// Opens the broker on `disk`: loads the catalogue (creating it on first
    /// start), recovers every partition log, and removes the directories of
    /// topics that were deleted (or half-created) before a crash.
    pub fn open(config: BrokerConfig, disk: Arc<dyn Disk>, clock: Arc<dyn Clock>, rng: Arc<Rng>) -> Result<Broker, StartError> {
        let now = clock.now_ms();
        let catalog = match Catalog::load(&*disk).map_err(StartError::Catalog)? {
            Some(c) => c,
            None => {
                let id = Uuid::from_bytes(rng.bytes16());
                let c = Catalog { cluster_id: short_id(id), producer_id_reserved: 0, topics: BTreeMap::new() };
                c.save(&*disk)?;
                tracing::info!(cluster_id = %c.cluster_id, "initialized a new data directory");
                c
            }
        };
        // Group offsets of a cluster live in the controller's replicated
        // topic. A local one (a single broker's, or a cluster member's from
        // before offsets were replicated) would be served in its place, so
        // a cluster member drops it, saying so: its groups' offsets were
        // this broker's alone, never the cluster's.
        let catalog = match catalog.topics.get(crate::group::OFFSETS_TOPIC) {
            Some(t) if config.cluster && t.created_index.is_none() => {
                tracing::warn!(
                    dir = %t.dir().display(),
                    "dropping this broker's own {}: a cluster member's group offsets live in the cluster's replicated one \
                     (the offsets committed here alone are not carried over; their groups start from auto.offset.reset)",
                    t.name
                );
                let mut kept = catalog.clone();
                kept.topics.remove(crate::group::OFFSETS_TOPIC);
                kept.save(&*disk)?;
                kept
            }
            _ => catalog,
        };
        // A directory that holds another cluster's topics is refused here;
        // one that holds none takes the named id when the quorum confirms it
        // (`adopt_cluster_id`).
        if let Some(id) = config.cluster_id.as_ref().filter(|id| **id != catalog.cluster_id) {
            if let Some(t) = catalog.topics.values().find(|t| t.created_index.is_some()) {
                return Err(StartError::Catalog(format!(
                    "this data directory belongs to cluster {} (it holds that cluster's topic '{}'), not to cluster {id} (--cluster-id): \
                     start it with its own cluster's --cluster-id and --controllers, or with an empty --data-dir",
                    catalog.cluster_id, t.name
                )));
            }
        }
        // Ids below the reservation may have been handed out before a crash.
        let next_producer_id = catalog.producer_id_reserved;

        let mut topics = BTreeMap::new();
        for record in catalog.topics.values() {
            let partitions = (0..record.partitions)
                .map(|i| {
                    // A cluster topic's partitions are here only where this
                    // broker holds a replica (their directories were made
                    // before the catalogue named the topic).
                    if record.created_index.is_some() && !disk.exists(&record.partition_dir(i)) {
                        Arc::new(Partition::new(record.name.clone(), i, Err("not a replica on this broker".into()), replication::Role::NotReplica))
                    } else {
                        open_partition(&disk, &config, record, i, now)
                    }
                })
                .collect();
            topics.insert(record.name.clone(), Arc::new(Topic { record: record.clone(), partitions }));
        }
        let groups = Arc::new(Mutex::new(crate::group::Groups::new(config.group.clone(), rng.clone())));
        let broker = Broker { config, disk, clock, rng, state: RwLock::new(State { catalog, topics, next_producer_id }), groups, offsets_log: Mutex::default(), config_changes: Mutex::default(), cluster_view: RwLock::default() };
        broker.remove_orphans();
        broker.load_groups();
        Ok(broker)
    }

    fn remove_orphans(&self) {
        let root = Path::new("topics");
        let Ok(names) = self.disk.list(root) else { return };
        let state = self.read_state();
        let live: Vec<String> = state.catalog.topics.values().map(|t| t.dir().file_name().unwrap().to_string_lossy().into_owned()).collect();
        for name in names {
            if !live.contains(&name) {
                tracing::info!(dir = %name, "removing the data of a deleted topic");
                if let Err(e) = self.disk.remove_dir_all(&root.join(&name)) {
                    tracing::warn!(dir = %name, error = %e, "could not remove a deleted topic's data");
                }
            }
        }
        let _ = self.disk.sync_dir(root);
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().expect("broker state poisoned")
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().expect("broker state poisoned")
    }

    /// Sets what Metadata and DescribeCluster say about the cluster.
    pub fn set_cluster_view(&self, view: Option<ClusterView>) {
        *self.cluster_view.write().expect("cluster view poisoned") = view;
    }

    pub(crate) fn cluster_view(&self) -> Option<ClusterView> {
        self.cluster_view.read().expect("cluster view poisoned").clone()
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn cluster_id(&self) -> String {
        self.read_state().catalog.cluster_id.clone()
    }

    /// The cluster id clients are told. A cluster member tells none until
    /// its data directory carries the quorum's (a client must not see the
    /// id change: librdkafka takes that for a move to another cluster).
    pub fn client_cluster_id(&self) -> Option<String> {
        let own = self.cluster_id();
        if !self.config.cluster {
            return Some(own);
        }
        let view = self.cluster_view.read().expect("cluster view poisoned");
        (view.as_ref().and_then(|v| v.cluster_id.as_deref()) == Some(own.as_str())).then_some(own)
    }

    /// The simulator's BUGGIFY (always false in production); see [`Rng::buggify`].
    pub fn buggify(&self, p: f64) -> bool {
        self.rng.buggify(p)
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.read_state().topics.get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.read_state().topics.values().find(|t| t.record.id == id).cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.read_state().topics.values().cloned().collect()
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.read_state().topics.values().flat_map(|t| t.partitions.iter().cloned()).collect()
    }

    /// Handles every request that completes at once. Produce and Fetch go
    /// through [`Broker::produce`] and [`Broker::fetch`] instead, because
    /// their answers may have to wait.
    pub fn handle(&self, api_version: i16, body: RequestKind) -> ResponseKind {
        match body {
            RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(admin::api_versions(r, api_version)),
            RequestKind::Metadata(r) => ResponseKind::Metadata(self.metadata(r, api_version)),
            RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(self.create_topics(r, api_version)),
            RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(self.delete_topics(r, api_version)),
            RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(self.create_partitions(r, api_version)),
            RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(self.describe_configs(r, api_version)),
            RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(self.describe_cluster(r, api_version)),
            RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(self.alter_configs(r, api_version)),
            RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(self.incremental_alter_configs(r, api_version)),
            RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(self.init_producer_id(r, api_version)),
            RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(self.list_offsets(r, api_version)),
            RequestKind::OffsetForLeaderEpoch(r) => ResponseKind::OffsetForLeaderEpoch(self.offset_for_leader_epoch(r, api_version)),
            RequestKind::Produce(_) | RequestKind::Fetch(_) => {
                unreachable!("produce and fetch are dispatched through Broker::produce and Broker::fetch")
            }
            other => unreachable!("the frame decoder admits only supported APIs, got {:?}", std::mem::discriminant(&other)),
        }
    }

    /// Makes appended data durable: syncs every partition with data above
    /// its HW and advances the HW. The sync runs outside the partition lock,
    /// so appends continue meanwhile and are picked up by the next call.
    /// Returns true if any HW moved.
    pub fn flush(&self) -> bool {
        let mut advanced = false;
        for p in self.all_partitions() {
            let target = match &*p.lock() {
                Ok(log) => log.flush_target(),
                Err(_) => None,
            };
            let Some(target) = target else { continue };
            if self.rng.buggify(0.05) {
                continue; // leave it to the next round
            }
            let result = if crate::planted::active(crate::planted::Bug::SkipFsync) { Ok(()) } else { target.file.sync() };
            let mut guard = p.lock();
            if let Ok(log) = &mut *guard {
                match result {
                    Ok(()) => {
                        log.flushed(&target);
                        log.checkpoint_if_due(self.clock.now_ms());
                        self.on_flushed(&p, log);
                        advanced = true;
                    }
                    Err(e) => {
                        log.flush_failed(e);
                    }
                }
            }
        }
        advanced
    }

    /// Whether any partition has data waiting for a flush.
    pub fn needs_flush(&self) -> bool {
        self.all_partitions().iter().any(|p| matches!(&*p.lock(), Ok(log) if log.flush_target().is_some()))
    }

    /// Applies retention to every partition and expires idle producers.
    pub fn enforce_retention(&self) {
        let now = self.clock.now_ms();
        for p in self.all_partitions() {
            let mut guard = p.lock();
            let Ok(log) = &mut *guard else { continue };
            // The coordinator's records are deleted only by its own cleaning
            // (which copies the live ones forward first), never by age.
            if groups::is_internal(&p.topic) {
                continue;
            }
            if let Err(e) = log.enforce_retention(now) {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed");
            }
            log.producers.expire(now - self.config.producer_id_expiration_ms);
        }
    }

    /// Graceful shutdown: flush everything.
    pub fn shutdown(&self) {
        for p in self.all_partitions() {
            let mut guard = p.lock();
            if let Ok(log) = &mut *guard {
                if let Err(e) = log.flush(self.clock.now_ms()) {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush at shutdown failed");
                }
            }
        }
    }
}

fn short_id(id: Uuid) -> String {
    // Kafka cluster ids are 22-character URL-safe base64 of a UUID.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let n = u128::from_be_bytes(*id.as_bytes());
    (0..22)
        .map(|i| {
            let six = if i < 21 { (n >> (122 - 6 * i)) & 63 } else { (n & 3) << 4 };
            ALPHABET[six as usize] as char
        })
        .collect()
}


/// Kafka's legal topic names: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name '{name}' is not allowed"));
    }
    if name.len() > 249 {
        return Err(format!("topic name is {} characters long; the limit is 249", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name '{name}' contains '{c}'; only ASCII letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}
