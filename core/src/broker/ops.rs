//! Typed administrative operations, for callers that are not Kafka clients
//! (the gRPC admin service). They share their validation and effects with the
//! Kafka handlers; refusals carry the Kafka error they map to and a message.

use std::collections::BTreeMap;

use chronik_proto::ResponseError::{self, *};
use kafka_protocol::messages::ListGroupsRequest;
use kafka_protocol::protocol::StrBytes;

use super::alter::Change;
use super::catalog::TopicRecord;
use super::{is_internal, Broker, Topic, LEADER_EPOCH};
use crate::config::TOPIC_CONFIGS;

pub type Refusal = (ResponseError, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
    /// Why the partition is offline, if it is.
    pub offline: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub record: TopicRecord,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
    /// Every topic config with its effective value.
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
    /// `classic` or `consumer`.
    pub group_type: String,
}

/// Checks a requested replication factor (0 or -1: the default).
fn check_replication_factor(rf: i32) -> Result<(), Refusal> {
    match rf {
        -1..=1 => Ok(()),
        rf if rf < 0 => Err((InvalidReplicationFactor, format!("replication factor must be positive, not {rf}"))),
        rf => Err((InvalidReplicationFactor, format!("replication factor {rf} is larger than the 1 available broker"))),
    }
}

impl Broker {
    /// A topic as this broker sees it: offsets of its local replicas, and
    /// in a cluster the leader, replicas and ISR from the controller.
    pub fn describe_topic(&self, topic: &Topic) -> TopicInfo {
        let me = self.config.node_id;
        let view = self.cluster_view();
        let cluster = view.as_ref().and_then(|v| v.topics.get(&topic.record.name).filter(|t| t.id == topic.record.id));
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let guard = p.lock();
                let (offline, start, hw, leo) = match &*guard {
                    Err(e) => (Some(e.clone()), -1, -1, -1),
                    Ok(log) => (log.offline().map(str::to_string), log.log_start_offset(), log.high_watermark(), log.log_end_offset()),
                };
                let (leader, leader_epoch, replicas, isr) = match cluster.and_then(|t| t.partitions.get(p.index as usize)) {
                    Some(ps) => (ps.leader, ps.leader_epoch, ps.replicas.clone(), ps.isr.clone()),
                    // A cluster topic this broker's image does not show (yet): no leader to name.
                    None if self.is_cluster_topic(topic) => (-1, -1, Vec::new(), Vec::new()),
                    None => (if offline.is_some() { -1 } else { me }, LEADER_EPOCH, vec![me], vec![me]),
                };
                PartitionInfo {
                    partition: p.index,
                    leader,
                    leader_epoch,
                    replicas,
                    isr,
                    log_start_offset: start,
                    high_watermark: hw,
                    log_end_offset: leo,
                    offline,
                }
            })
            .collect();
        let configs = TOPIC_CONFIGS.iter().map(|d| (d.name.to_string(), self.config.topic_value(&topic.record.configs, d.name))).collect();
        TopicInfo { record: topic.record.clone(), internal: is_internal(&topic.record.name), partitions, configs }
    }

    /// Creates a topic; one that exists with the same partition count and
    /// overrides is success too (`Ok(false)`), so a retried call is harmless.
    /// `partitions` 0 or -1 is the broker's `num.partitions`.
    pub fn create_topic_idempotent(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(TopicRecord, bool), Refusal> {
        check_replication_factor(replication_factor)?;
        let partitions = if partitions == 0 || partitions == -1 { self.config.num_partitions } else { partitions };
        if let Some(t) = self.topic(name) {
            if t.record.partitions == partitions && t.record.configs == configs {
                return Ok((t.record.clone(), false));
            }
            return Err((TopicAlreadyExists, format!("topic '{name}' already exists with other settings ({} partitions, overrides {:?})", t.record.partitions, t.record.configs)));
        }
        super::groups::refuse_internal_change(name, "create")?;
        let created = self.create_topic(name, partitions, configs, validate_only)?;
        Ok((created.record, true))
    }

    /// Deletes a topic; `Ok(false)` when there was none.
    pub fn delete_topic_by_name(&self, name: &str) -> Result<bool, Refusal> {
        let Some(t) = self.topic(name) else { return Ok(false) };
        if is_internal(&t.record.name) {
            return Err((InvalidTopicException, format!("{name} is an internal topic; it cannot be deleted")));
        }
        self.delete_topic(name).map_err(|e| (KafkaStorageError, e))?;
        Ok(true)
    }

    /// Sets and deletes topic config overrides; returns the overrides after
    /// the change (or as they would be, with `validate_only`).
    pub fn alter_topic_configs(
        &self,
        name: &str,
        set: &BTreeMap<String, String>,
        delete: &[String],
        validate_only: bool,
    ) -> Result<BTreeMap<String, String>, Refusal> {
        if let Some(both) = delete.iter().find(|n| set.contains_key(*n)) {
            return Err((InvalidRequest, format!("config '{both}' is both set and deleted")));
        }
        let mut changes: Vec<Change> = set.iter().map(|(n, v)| Change::set(n, v)).collect();
        changes.extend(delete.iter().map(|n| Change::delete(n)));
        self.update_topic_configs(name, |current| self.changed_topic_configs(current, &changes, false), validate_only)
    }

    /// The groups the coordinator knows, optionally only those in `states`
    /// (Kafka's names, any case).
    pub fn list_groups(&self, states: &[String]) -> Vec<GroupInfo> {
        let request = ListGroupsRequest::default().with_states_filter(states.iter().map(|s| StrBytes::from_string(s.clone())).collect());
        self.groups()
            .list_groups(request, 5)
            .groups
            .into_iter()
            .map(|g| GroupInfo {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
                group_type: g.group_type.to_string(),
            })
            .collect()
    }
}
