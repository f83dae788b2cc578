//! The cluster's metadata as a deterministic state machine: registered
//! brokers and whether they are fenced, topics with their configs, and every
//! partition's replicas, ISR, leader and epochs. The controller quorum
//! replicates [`Command`]s through Raft and every node applies them in log
//! order with [`Image::apply`], so every node computes the same image.
//!
//! A command that is not valid against the image it meets (a stale ISR
//! change, a topic that already exists) is refused by `apply` on every node
//! alike and changes nothing: the log may hold refused commands.
//!
//! The safety rules live here, where they can be tested without a network:
//! - a partition's leader is always a member of its ISR;
//! - a leader is elected only from the ISR, among unfenced brokers (unless
//!   the topic allows unclean election), so a new leader has every record
//!   that was acknowledged with `acks=all`;
//! - the ISR never becomes empty: when its last live member is fenced, that
//!   member stays in the ISR (the partition is offline) and becomes leader
//!   again when it comes back, because only it may have the latest records;
//! - an ISR change proposed by a leader is applied only if it carries the
//!   current leader epoch and partition epoch, so a deposed leader cannot
//!   shrink the ISR to itself;
//! - every leadership change bumps the leader epoch; every ISR or leader
//!   change bumps the partition epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::transport::NodeId;

/// No leader (the partition is offline).
pub const NO_LEADER: NodeId = -1;
/// The most producer ids one command may allocate.
pub const MAX_PRODUCER_ID_BLOCK: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: NodeId,
    /// Where Kafka clients connect.
    pub host: String,
    pub kafka_port: i32,
    /// Where other brokers reach its gRPC services (`host:port`).
    pub rpc: String,
    /// Chosen at each process start: a registration with a new incarnation
    /// is a restart.
    pub incarnation: Uuid,
    /// A fenced broker leads nothing and is left out of elections: its
    /// session expired, or it has not caught up since it registered.
    pub fenced: bool,
    /// This incarnation shut down cleanly: it stays fenced for good (a
    /// heartbeat still in flight cannot unfence it).
    #[serde(default)]
    pub left: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    pub id: Uuid,
    /// The controller log index that created it: a broker whose image has
    /// applied past this and no longer has the topic knows it was deleted
    /// (an image older than the creation says nothing).
    #[serde(default)]
    pub created_index: u64,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub brokers: BTreeMap<NodeId, BrokerInfo>,
    pub topics: BTreeMap<String, TopicState>,
    /// Producer ids below this have been handed out.
    pub next_producer_id: i64,
    /// The controller log index of the last command applied.
    #[serde(default)]
    pub applied_index: u64,
    /// The cluster's id: the first broker to ask names it; every broker's
    /// data directory must then carry it (Kafka's cluster id check).
    #[serde(default)]
    pub cluster_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Names the cluster, unless it is named already (then nothing changes).
    InitCluster { cluster_id: String },
    /// A broker (re)starts. It is fenced until it asks to be unfenced. A
    /// registration with another incarnation while the registered one is
    /// unfenced (alive) is refused: two processes with one node id.
    RegisterBroker { info: BrokerInfo },
    /// A broker's session expired, or it is shutting down.
    FenceBroker { id: NodeId },
    /// A registered broker caught up with the metadata and may lead again.
    UnfenceBroker { id: NodeId, incarnation: Uuid },
    /// A broker is shutting down cleanly: fenced at once, for good.
    ControlledShutdown { id: NodeId, incarnation: Uuid },
    CreateTopic { name: String, id: Uuid, configs: BTreeMap<String, String>, assignment: Vec<Vec<NodeId>> },
    DeleteTopic { name: String },
    /// Adds partitions with these replicas.
    CreatePartitions { name: String, assignment: Vec<Vec<NodeId>> },
    /// Replaces a topic's config overrides; refused if `expected` is given
    /// and the current ones differ (a concurrent change won).
    AlterConfigs {
        name: String,
        configs: BTreeMap<String, String>,
        #[serde(default)]
        expected: Option<BTreeMap<String, String>>,
    },
    /// A partition leader changes its ISR.
    AlterPartition { topic: String, partition: i32, leader: NodeId, leader_epoch: i32, partition_epoch: i32, isr: Vec<NodeId> },
    /// Hands out a block of producer ids.
    AllocateProducerIds { count: i64 },
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    /// The first of the allocated producer ids.
    ProducerIds { first: i64 },
    /// Refused; nothing changed.
    Refused { reason: Refusal, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    UnknownBroker,
    /// Another live process holds this node id.
    DuplicateRegistration,
    StaleIncarnation,
    TopicExists,
    UnknownTopic,
    UnknownPartition,
    InvalidAssignment,
    /// The leader or partition epoch is not the current one.
    FencedEpoch,
    InvalidIsr,
    /// A command with values no node may apply.
    InvalidRequest,
}

fn refused(reason: Refusal, message: impl Into<String>) -> Applied {
    Applied::Refused { reason, message: message.into() }
}

impl PartitionState {
    /// A new, empty partition: its live replicas are in sync and the first
    /// leads (as KRaft creates them). With none live, all are in sync (none
    /// has data) and it is offline until one of them is unfenced.
    pub fn new(replicas: Vec<NodeId>, live: impl Fn(NodeId) -> bool) -> PartitionState {
        let isr: Vec<NodeId> = replicas.iter().copied().filter(|b| live(*b)).collect();
        match isr.first() {
            Some(&leader) => PartitionState { isr, replicas, leader, leader_epoch: 0, partition_epoch: 0 },
            None => PartitionState { isr: replicas.clone(), replicas, leader: NO_LEADER, leader_epoch: 0, partition_epoch: 0 },
        }
    }

    fn set_leader(&mut self, leader: NodeId) {
        self.leader = leader;
        self.leader_epoch += 1;
        self.partition_epoch += 1;
    }
}

/// Whether unclean leader election is allowed for a topic.
pub fn unclean_allowed(configs: &BTreeMap<String, String>) -> bool {
    configs.get("unclean.leader.election.enable").is_some_and(|v| v.trim() == "true")
}

impl Image {
    fn live(&self, id: NodeId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// Applies the command at controller log `index`.
    pub fn apply_at(&mut self, index: u64, command: &Command) -> Applied {
        self.applied_index = index;
        self.apply(command)
    }

    /// Applies one command. Deterministic: the same image and command give
    /// the same result on every node.
    pub fn apply(&mut self, command: &Command) -> Applied {
        match command {
            Command::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
                Applied::Done
            }
            Command::RegisterBroker { info } => {
                match self.brokers.get(&info.id) {
                    // A retry of the same registration.
                    Some(b) if b.incarnation == info.incarnation => return Applied::Done,
                    Some(b) if !b.fenced => {
                        return refused(
                            Refusal::DuplicateRegistration,
                            format!(
                                "node id {} is registered by a live broker (incarnation {}, {}:{}): another process may be using this node id, or the previous one's session has not expired yet",
                                info.id, b.incarnation, b.host, b.kafka_port
                            ),
                        );
                    }
                    _ => {}
                }
                let mut info = info.clone();
                info.fenced = true;
                info.left = false;
                self.brokers.insert(info.id, info.clone());
                self.fence(info.id);
                Applied::Done
            }
            Command::FenceBroker { id } => match self.brokers.get_mut(id) {
                None => refused(Refusal::UnknownBroker, format!("broker {id} is not registered")),
                Some(b) => {
                    b.fenced = true;
                    self.fence(*id);
                    Applied::Done
                }
            },
            Command::UnfenceBroker { id, incarnation } => match self.brokers.get_mut(id) {
                None => refused(Refusal::UnknownBroker, format!("broker {id} is not registered")),
                Some(b) if b.incarnation != *incarnation => {
                    refused(Refusal::StaleIncarnation, format!("broker {id} has registered again since"))
                }
                Some(b) if b.left => refused(Refusal::StaleIncarnation, format!("broker {id} has shut down")),
                Some(b) => {
                    b.fenced = false;
                    self.unfence(*id);
                    Applied::Done
                }
            },
            Command::ControlledShutdown { id, incarnation } => match self.brokers.get_mut(id) {
                Some(b) if b.incarnation == *incarnation => {
                    b.fenced = true;
                    b.left = true;
                    self.fence(*id);
                    Applied::Done
                }
                _ => refused(Refusal::StaleIncarnation, format!("broker {id} is not registered with incarnation {incarnation}")),
            },
            Command::CreateTopic { name, id, configs, assignment } => {
                if self.topics.contains_key(name) {
                    return refused(Refusal::TopicExists, format!("topic '{name}' already exists"));
                }
                if let Err(m) = self.check_assignment(assignment) {
                    return refused(Refusal::InvalidAssignment, m);
                }
                let live = |b: NodeId| self.live(b);
                let partitions = assignment.iter().map(|r| PartitionState::new(r.clone(), live)).collect();
                self.topics.insert(name.clone(), TopicState { id: *id, created_index: self.applied_index, configs: configs.clone(), partitions });
                Applied::Done
            }
            Command::DeleteTopic { name } => match self.topics.remove(name) {
                None => refused(Refusal::UnknownTopic, format!("topic '{name}' does not exist")),
                Some(_) => Applied::Done,
            },
            Command::CreatePartitions { name, assignment } => {
                if let Err(m) = self.check_assignment(assignment) {
                    return refused(Refusal::InvalidAssignment, m);
                }
                let brokers = self.brokers.clone();
                let live = |b: NodeId| brokers.get(&b).is_some_and(|x| !x.fenced);
                match self.topics.get_mut(name) {
                    None => refused(Refusal::UnknownTopic, format!("topic '{name}' does not exist")),
                    Some(t) => {
                        t.partitions.extend(assignment.iter().map(|r| PartitionState::new(r.clone(), live)));
                        Applied::Done
                    }
                }
            }
            Command::AlterConfigs { name, configs, expected } => match self.topics.get_mut(name) {
                None => refused(Refusal::UnknownTopic, format!("topic '{name}' does not exist")),
                Some(t) if expected.as_ref().is_some_and(|e| *e != t.configs) => {
                    refused(Refusal::InvalidRequest, format!("topic '{name}' configs changed concurrently; retry"))
                }
                Some(t) => {
                    t.configs = configs.clone();
                    Applied::Done
                }
            },
            Command::AlterPartition { topic, partition, leader, leader_epoch, partition_epoch, isr } => {
                self.alter_partition(topic, *partition, *leader, *leader_epoch, *partition_epoch, isr)
            }
            Command::AllocateProducerIds { count } => {
                // Checked: a command must never make apply panic, or every
                // node would stop on it, and again when replaying it.
                let next = (1..=MAX_PRODUCER_ID_BLOCK).contains(count).then(|| self.next_producer_id.checked_add(*count)).flatten();
                match next {
                    Some(next) => {
                        let first = self.next_producer_id;
                        self.next_producer_id = next;
                        Applied::ProducerIds { first }
                    }
                    None => refused(Refusal::InvalidRequest, format!("cannot allocate {count} producer ids (1 to {MAX_PRODUCER_ID_BLOCK}, below 2^63)")),
                }
            }
        }
    }

    fn check_assignment(&self, assignment: &[Vec<NodeId>]) -> Result<(), String> {
        for (i, replicas) in assignment.iter().enumerate() {
            if replicas.is_empty() {
                return Err(format!("partition {i} has no replicas"));
            }
            let mut seen = replicas.clone();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() != replicas.len() {
                return Err(format!("partition {i} names a broker twice: {replicas:?}"));
            }
            if let Some(b) = replicas.iter().find(|b| !self.brokers.contains_key(b)) {
                return Err(format!("partition {i} is assigned to broker {b}, which is not registered"));
            }
        }
        Ok(())
    }

    /// A broker stops leading and leaves the ISRs, except where it is the
    /// last member (then the partition goes offline, keeping it eligible).
    fn fence(&mut self, id: NodeId) {
        let brokers = self.brokers.clone();
        let live = |b: &NodeId| brokers.get(b).is_some_and(|x| !x.fenced);
        for t in self.topics.values_mut() {
            let unclean = unclean_allowed(&t.configs);
            for p in &mut t.partitions {
                if !p.isr.contains(&id) {
                    continue;
                }
                if p.isr.len() > 1 {
                    p.isr.retain(|b| *b != id);
                    p.partition_epoch += 1;
                }
                if p.leader == id || p.leader == NO_LEADER {
                    let next = p.isr.iter().copied().find(|b| live(b));
                    let next = next.or_else(|| if unclean { p.replicas.iter().copied().find(|b| live(b)) } else { None });
                    match next {
                        Some(b) => {
                            if !p.isr.contains(&b) {
                                p.isr = vec![b]; // unclean: the new leader's log is the truth
                            }
                            p.set_leader(b);
                        }
                        None if p.leader != NO_LEADER => p.set_leader(NO_LEADER),
                        None => {}
                    }
                }
            }
        }
    }

    /// A broker may lead again: offline partitions it can take are given to it.
    fn unfence(&mut self, id: NodeId) {
        for t in self.topics.values_mut() {
            let unclean = unclean_allowed(&t.configs);
            for p in &mut t.partitions {
                if p.leader != NO_LEADER || !p.replicas.contains(&id) {
                    continue;
                }
                if p.isr.contains(&id) {
                    p.set_leader(id);
                } else if unclean {
                    p.isr = vec![id];
                    p.set_leader(id);
                }
            }
        }
    }

    fn alter_partition(&mut self, topic: &str, partition: i32, leader: NodeId, leader_epoch: i32, partition_epoch: i32, isr: &[NodeId]) -> Applied {
        let live: Vec<NodeId> = self.brokers.values().filter(|b| !b.fenced).map(|b| b.id).collect();
        let Some(t) = self.topics.get_mut(topic) else {
            return refused(Refusal::UnknownTopic, format!("topic '{topic}' does not exist"));
        };
        let Some(p) = usize::try_from(partition).ok().and_then(|i| t.partitions.get_mut(i)) else {
            return refused(Refusal::UnknownPartition, format!("{topic}-{partition} does not exist"));
        };
        if p.leader != leader || p.leader_epoch != leader_epoch || p.partition_epoch != partition_epoch {
            return refused(
                Refusal::FencedEpoch,
                format!(
                    "{topic}-{partition}: the change is from leader {leader} at epochs {leader_epoch}/{partition_epoch}, but the partition is at leader {} epochs {}/{}",
                    p.leader, p.leader_epoch, p.partition_epoch
                ),
            );
        }
        if !isr.contains(&leader) {
            return refused(Refusal::InvalidIsr, format!("{topic}-{partition}: the ISR {isr:?} must contain the leader {leader}"));
        }
        if let Some(b) = isr.iter().find(|b| !p.replicas.contains(b)) {
            return refused(Refusal::InvalidIsr, format!("{topic}-{partition}: broker {b} is not a replica"));
        }
        // A broker joins the ISR only while it is live (it must be able to lead).
        if let Some(b) = isr.iter().find(|b| !p.isr.contains(b) && !live.contains(b)) {
            return refused(Refusal::InvalidIsr, format!("{topic}-{partition}: broker {b} is fenced and cannot join the ISR"));
        }
        let mut sorted = isr.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != isr.len() {
            return refused(Refusal::InvalidIsr, format!("{topic}-{partition}: the ISR {isr:?} names a broker twice"));
        }
        p.isr = isr.to_vec();
        p.partition_epoch += 1;
        Applied::Done
    }

    /// Replicas for new partitions: `rf` live brokers each, spread round
    /// robin from a start chosen by the topic name (so topics do not all
    /// lead on the same broker) and the first partition index.
    pub fn assign(&self, name: &str, first_partition: i32, count: i32, rf: i32) -> Result<Vec<Vec<NodeId>>, String> {
        let live: Vec<NodeId> = self.brokers.values().filter(|b| !b.fenced).map(|b| b.id).collect();
        if rf < 1 {
            return Err(format!("replication factor must be positive, not {rf}"));
        }
        if first_partition < 0 || count < 0 || first_partition.checked_add(count).is_none() {
            return Err(format!("partitions {first_partition}..+{count} are out of range"));
        }
        if rf as usize > live.len() {
            return Err(format!("replication factor {rf} is larger than the {} available brokers", live.len()));
        }
        let start = name.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) as usize;
        Ok((first_partition..first_partition + count)
            .map(|p| (0..rf as usize).map(|r| live[(start + p as usize + r) % live.len()]).collect())
            .collect())
    }

    /// The partition's state, if it exists.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.topics.get(topic).and_then(|t| usize::try_from(partition).ok().and_then(|i| t.partitions.get(i)))
    }

    /// Checks the invariants every image must hold; `Err` names the first broken one.
    pub fn check(&self) -> Result<(), String> {
        for (name, t) in &self.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.isr.is_empty() {
                    return Err(format!("{name}-{i}: empty ISR"));
                }
                if p.isr.iter().any(|b| !p.replicas.contains(b)) {
                    return Err(format!("{name}-{i}: ISR {:?} outside replicas {:?}", p.isr, p.replicas));
                }
                if p.leader != NO_LEADER && (!p.isr.contains(&p.leader) || !self.live(p.leader)) {
                    return Err(format!("{name}-{i}: leader {} is not a live ISR member ({:?})", p.leader, p.isr));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: NodeId, incarnation: u128) -> Command {
        Command::RegisterBroker {
            info: BrokerInfo {
                id,
                host: "127.0.0.1".into(),
                kafka_port: 9092 + id,
                rpc: format!("127.0.0.1:{}", 9192 + id),
                incarnation: Uuid::from_u128(incarnation),
                fenced: false,
                left: false,
            },
        }
    }

    fn cluster(n: NodeId) -> Image {
        let mut img = Image::default();
        for id in 1..=n {
            assert_eq!(img.apply(&broker(id, id as u128)), Applied::Done);
            assert_eq!(img.apply(&Command::UnfenceBroker { id, incarnation: Uuid::from_u128(id as u128) }), Applied::Done);
        }
        img
    }

    fn create(img: &mut Image, name: &str, assignment: Vec<Vec<NodeId>>, unclean: bool) {
        let mut configs = BTreeMap::new();
        if unclean {
            configs.insert("unclean.leader.election.enable".to_string(), "true".to_string());
        }
        assert_eq!(img.apply(&Command::CreateTopic { name: name.into(), id: Uuid::from_u128(7), configs, assignment }), Applied::Done);
    }

    fn alter(img: &mut Image, p: &PartitionState, isr: Vec<NodeId>) -> Applied {
        img.apply(&Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr,
        })
    }

    #[test]
    fn a_new_partition_is_led_by_its_first_replica_with_every_replica_in_sync() {
        let mut img = cluster(3);
        let assignment = img.assign("t", 0, 4, 3).unwrap();
        assert!(assignment.iter().all(|r| r.len() == 3));
        let leaders: std::collections::BTreeSet<_> = assignment.iter().map(|r| r[0]).collect();
        assert_eq!(leaders.len(), 3, "leadership is spread: {assignment:?}");
        create(&mut img, "t", assignment.clone(), false);
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.leader, &p.isr, p.leader_epoch), (assignment[0][0], &assignment[0], 0));
        assert_eq!(img.assign("t", 0, 1, 4), Err("replication factor 4 is larger than the 3 available brokers".into()));
        img.check().unwrap();
    }

    #[test]
    fn fencing_the_leader_elects_another_isr_member_and_bumps_the_epoch() {
        let mut img = cluster(3);
        create(&mut img, "t", vec![vec![1, 2, 3]], false);
        assert_eq!(img.apply(&Command::FenceBroker { id: 1 }), Applied::Done);
        let p = img.partition("t", 0).unwrap().clone();
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2, 3], 1));
        img.check().unwrap();
        // The old leader's ISR change is refused: it is from an old epoch.
        let stale = img.apply(&Command::AlterPartition { topic: "t".into(), partition: 0, leader: 1, leader_epoch: 0, partition_epoch: 0, isr: vec![1] });
        assert!(matches!(stale, Applied::Refused { reason: Refusal::FencedEpoch, .. }), "{stale:?}");
        // Back again, it is a follower outside the ISR until the leader adds it.
        assert_eq!(img.apply(&broker(1, 11)), Applied::Done);
        assert_eq!(img.apply(&Command::UnfenceBroker { id: 1, incarnation: Uuid::from_u128(11) }), Applied::Done);
        assert_eq!(img.partition("t", 0).unwrap().leader, 2);
        let p = img.partition("t", 0).unwrap().clone();
        assert_eq!(alter(&mut img, &p, vec![2, 3, 1]), Applied::Done);
        assert_eq!(img.partition("t", 0).unwrap().isr, vec![2, 3, 1]);
        img.check().unwrap();
    }

    #[test]
    fn the_last_isr_member_stays_eligible_and_leads_again_when_it_returns() {
        let mut img = cluster(3);
        create(&mut img, "t", vec![vec![1, 2, 3]], false);
        let p = img.partition("t", 0).unwrap().clone();
        assert_eq!(alter(&mut img, &p, vec![1]), Applied::Done, "the followers fell behind");
        // 2 and 3 may lack acknowledged records: they must not lead.
        img.apply(&Command::FenceBroker { id: 1 });
        let p = img.partition("t", 0).unwrap().clone();
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]), "offline, not unclean");
        img.check().unwrap();
        img.apply(&Command::FenceBroker { id: 2 });
        img.apply(&broker(1, 21));
        assert_eq!(img.partition("t", 0).unwrap().leader, NO_LEADER, "registered but still fenced");
        img.apply(&Command::UnfenceBroker { id: 1, incarnation: Uuid::from_u128(21) });
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
        img.check().unwrap();
    }

    #[test]
    fn unclean_election_takes_any_live_replica_when_the_topic_allows_it() {
        let mut img = cluster(3);
        create(&mut img, "t", vec![vec![1, 2, 3]], true);
        let p = img.partition("t", 0).unwrap().clone();
        alter(&mut img, &p, vec![1]);
        img.apply(&Command::FenceBroker { id: 1 });
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        img.check().unwrap();
    }

    #[test]
    fn isr_changes_must_keep_the_leader_stay_within_replicas_and_add_only_live_brokers() {
        let mut img = cluster(4);
        create(&mut img, "t", vec![vec![1, 2, 3]], false);
        let p = img.partition("t", 0).unwrap().clone();
        for bad in [vec![2, 3], vec![1, 4], vec![1, 1]] {
            assert!(matches!(alter(&mut img, &p, bad.clone()), Applied::Refused { reason: Refusal::InvalidIsr, .. }), "{bad:?}");
        }
        assert_eq!(alter(&mut img, &p, vec![1, 2]), Applied::Done);
        // The same change again carries a now-stale partition epoch.
        assert!(matches!(alter(&mut img, &p, vec![1, 2]), Applied::Refused { reason: Refusal::FencedEpoch, .. }));
        img.apply(&Command::FenceBroker { id: 3 });
        let p = img.partition("t", 0).unwrap().clone();
        assert!(matches!(alter(&mut img, &p, vec![1, 2, 3]), Applied::Refused { reason: Refusal::InvalidIsr, .. }), "3 is fenced");
        img.check().unwrap();
    }

    #[test]
    fn a_new_partition_is_led_by_a_live_replica_or_waits_for_one() {
        let mut img = cluster(3);
        img.apply(&Command::FenceBroker { id: 1 });
        create(&mut img, "t", vec![vec![1, 2, 3], vec![1]], false);
        assert_eq!((img.partition("t", 0).unwrap().leader, img.partition("t", 0).unwrap().isr.clone()), (2, vec![2, 3]), "1 is fenced");
        assert_eq!(img.partition("t", 1).unwrap().leader, NO_LEADER);
        img.check().unwrap();
        img.apply(&broker(1, 31));
        img.apply(&Command::UnfenceBroker { id: 1, incarnation: Uuid::from_u128(31) });
        assert_eq!(img.partition("t", 1).unwrap().leader, 1);
        img.check().unwrap();
    }

    #[test]
    fn commands_that_cannot_apply_are_refused_not_panicked_on() {
        let mut img = cluster(1);
        for count in [0, -5, MAX_PRODUCER_ID_BLOCK + 1, i64::MAX] {
            assert!(matches!(img.apply(&Command::AllocateProducerIds { count }), Applied::Refused { reason: Refusal::InvalidRequest, .. }));
        }
        img.next_producer_id = i64::MAX - 10;
        assert!(matches!(img.apply(&Command::AllocateProducerIds { count: 100 }), Applied::Refused { .. }));
        assert!(img.assign("t", -1, 1, 1).is_err());
        assert!(img.assign("t", i32::MAX, 2, 1).is_err());
    }

    #[test]
    fn a_second_process_with_a_live_node_id_is_refused() {
        let mut img = cluster(2);
        let r = img.apply(&broker(2, 77));
        assert!(matches!(r, Applied::Refused { reason: Refusal::DuplicateRegistration, .. }), "{r:?}");
        assert_eq!(img.brokers[&2].incarnation, Uuid::from_u128(2));
        // The same registration again (a retry) is harmless.
        assert_eq!(img.apply(&broker(2, 2)), Applied::Done);
        assert!(!img.brokers[&2].fenced);
        // Once the live one is fenced (session expired), a restart registers.
        img.apply(&Command::FenceBroker { id: 2 });
        assert_eq!(img.apply(&broker(2, 77)), Applied::Done);
    }

    #[test]
    fn a_controlled_shutdown_fences_for_good_until_the_next_registration() {
        let mut img = cluster(3);
        create(&mut img, "t", vec![vec![1, 2, 3]], false);
        assert_eq!(img.apply(&Command::ControlledShutdown { id: 1, incarnation: Uuid::from_u128(1) }), Applied::Done);
        assert_eq!(img.partition("t", 0).unwrap().leader, 2);
        // A heartbeat that was in flight cannot bring it back.
        assert!(matches!(img.apply(&Command::UnfenceBroker { id: 1, incarnation: Uuid::from_u128(1) }), Applied::Refused { .. }));
        assert!(img.brokers[&1].fenced);
        // Its restart registers at once.
        assert_eq!(img.apply(&broker(1, 41)), Applied::Done);
        assert_eq!(img.apply(&Command::UnfenceBroker { id: 1, incarnation: Uuid::from_u128(41) }), Applied::Done);
        img.check().unwrap();
    }

    #[test]
    fn a_stale_incarnation_cannot_unfence_a_restarted_broker() {
        let mut img = cluster(2);
        img.apply(&Command::FenceBroker { id: 2 });
        img.apply(&broker(2, 99));
        let r = img.apply(&Command::UnfenceBroker { id: 2, incarnation: Uuid::from_u128(2) });
        assert!(matches!(r, Applied::Refused { reason: Refusal::StaleIncarnation, .. }));
        assert!(img.brokers[&2].fenced);
    }

    #[test]
    fn commands_round_trip_and_refusals_change_nothing() {
        let mut img = cluster(3);
        create(&mut img, "t", vec![vec![1, 2, 3], vec![2, 3, 1]], false);
        let before = img.clone();
        for c in [
            Command::CreateTopic { name: "t".into(), id: Uuid::nil(), configs: BTreeMap::new(), assignment: vec![vec![1]] },
            Command::CreateTopic { name: "u".into(), id: Uuid::nil(), configs: BTreeMap::new(), assignment: vec![vec![9]] },
            Command::CreatePartitions { name: "t".into(), assignment: vec![vec![1, 1]] },
            Command::DeleteTopic { name: "nope".into() },
            Command::AlterPartition { topic: "t".into(), partition: 5, leader: 1, leader_epoch: 0, partition_epoch: 0, isr: vec![1] },
        ] {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), c);
            assert!(matches!(img.apply(&c), Applied::Refused { .. }), "{c:?}");
            assert_eq!(img, before);
        }
        assert_eq!(img.apply(&Command::AllocateProducerIds { count: 1000 }), Applied::ProducerIds { first: 0 });
        assert_eq!(img.apply(&Command::AllocateProducerIds { count: 1000 }), Applied::ProducerIds { first: 1000 });
    }

    /// Any sequence of fences, restarts and ISR changes keeps the invariants,
    /// and never elects a replica that was out of the ISR when a record was
    /// acknowledged: every "acknowledged" position (taken as held by the whole
    /// ISR at that moment) is held by every later leader.
    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            Fence(NodeId),
            Restart(NodeId),
            Shrink(usize),
            Expand(NodeId),
            Ack,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (1..=4i32).prop_map(Step::Fence),
                (1..=4i32).prop_map(Step::Restart),
                (0..3usize).prop_map(Step::Shrink),
                (1..=4i32).prop_map(Step::Expand),
                Just(Step::Ack),
            ]
        }

        proptest! {
            #[test]
            fn elections_never_lose_acknowledged_records(steps in proptest::collection::vec(step(), 1..60)) {
                let mut img = cluster(4);
                create(&mut img, "t", vec![vec![1, 2, 3]], false);
                // Which replicas hold every acknowledged record.
                let mut holders: Vec<NodeId> = vec![1, 2, 3];
                let mut incarnation = 100u128;
                let mut last_epoch = 0;
                for s in steps {
                    let p = img.partition("t", 0).unwrap().clone();
                    match s {
                        Step::Fence(id) => { img.apply(&Command::FenceBroker { id }); }
                        Step::Restart(id) => {
                            // Its old session expires first (or it shut down cleanly).
                            img.apply(&Command::FenceBroker { id });
                            incarnation += 1;
                            img.apply(&broker(id, incarnation));
                            img.apply(&Command::UnfenceBroker { id, incarnation: Uuid::from_u128(incarnation) });
                        }
                        Step::Shrink(i) if p.leader != NO_LEADER => {
                            let mut isr = p.isr.clone();
                            let victim = isr[i % isr.len()];
                            if victim != p.leader {
                                isr.retain(|b| *b != victim);
                                alter(&mut img, &p, isr);
                            }
                        }
                        Step::Expand(id) if p.leader != NO_LEADER && !p.isr.contains(&id) => {
                            // A follower joins only once it has caught up: it then holds everything.
                            let mut isr = p.isr.clone();
                            isr.push(id);
                            if alter(&mut img, &p, isr) == Applied::Done {
                                holders.push(id);
                            }
                        }
                        Step::Ack if p.leader != NO_LEADER => holders = p.isr.clone(),
                        _ => {}
                    }
                    img.check().map_err(TestCaseError::fail)?;
                    let p = img.partition("t", 0).unwrap();
                    if p.leader != NO_LEADER {
                        prop_assert!(holders.contains(&p.leader), "leader {} may lack acknowledged records held by {:?}", p.leader, holders);
                    }
                    prop_assert!(p.leader_epoch >= last_epoch);
                    last_epoch = p.leader_epoch;
                }
            }
        }
    }
}
