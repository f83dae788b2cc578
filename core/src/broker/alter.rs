//! AlterConfigs and IncrementalAlterConfigs: changing a topic's config
//! overrides at run time (`search.enabled`, retention, segment sizes, ...).
//!
//! On a single broker both (and the gRPC admin service) end in
//! `Broker::update_topic_configs`: the new overrides are computed from the
//! current ones under the catalogue lock (config changes are serialized, so
//! none is lost), validated as a whole, persisted in the catalogue (fsynced)
//! before the answer, and then take effect: the partition logs get their new
//! settings (retention applies at the next retention pass, segment sizes at
//! the next roll) and request handlers and the search indexer see the new
//! topic record. In a cluster the same changes are planned as controller
//! commands instead (`plan_alter_configs`), and every broker applies them
//! from the image. Both paths share one answer builder per API. Broker
//! configs are static (flags, environment, config file): a
//! request to change one is refused with `INVALID_REQUEST`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chronik_proto::ResponseError::{self, *};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::admin::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{validate_topic_name, Broker, Topic};
use crate::cluster::image::Command;
use crate::config::{topic_config_def, validate_topic_configs, ConfigType};

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

type Refusal = (ResponseError, String);

/// One requested change, as both APIs can express it.
pub(super) struct Change {
    name: String,
    op: i8,
    value: Option<String>,
}

impl Change {
    pub(super) fn set(name: &str, value: &str) -> Change {
        Change { name: name.to_string(), op: OP_SET, value: Some(value.to_string()) }
    }

    pub(super) fn delete(name: &str) -> Change {
        Change { name: name.to_string(), op: OP_DELETE, value: None }
    }
}

/// AlterConfigs' resources as changes: every config is set.
fn legacy_changes(request: &AlterConfigsRequest) -> impl Iterator<Item = (i8, String, Vec<Change>)> + '_ {
    request.resources.iter().map(|res| {
        let changes = res.configs.iter().map(|c| Change { name: c.name.to_string(), op: OP_SET, value: c.value.as_ref().map(|v| v.to_string()) });
        (res.resource_type, res.resource_name.to_string(), changes.collect())
    })
}

/// IncrementalAlterConfigs' resources as changes, with their operations.
fn incremental_changes(request: &IncrementalAlterConfigsRequest) -> impl Iterator<Item = (i8, String, Vec<Change>)> + '_ {
    request.resources.iter().map(|res| {
        let changes = res.configs.iter().map(|c| Change { name: c.name.to_string(), op: c.config_operation, value: c.value.as_ref().map(|v| v.to_string()) });
        (res.resource_type, res.resource_name.to_string(), changes.collect())
    })
}

fn list_items(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl Broker {
    /// AlterConfigs on a single broker. The legacy API replaces the whole
    /// set of overrides.
    pub(super) fn alter_configs(&self, request: AlterConfigsRequest, _version: i16) -> AlterConfigsResponse {
        let outcomes = legacy_changes(&request).map(|(rtype, name, changes)| self.alter_resource(rtype, &name, &changes, true, request.validate_only)).collect();
        Self::alter_configs_answer(&request, outcomes)
    }

    /// IncrementalAlterConfigs on a single broker.
    pub(super) fn incremental_alter_configs(&self, request: IncrementalAlterConfigsRequest, _version: i16) -> IncrementalAlterConfigsResponse {
        let outcomes =
            incremental_changes(&request).map(|(rtype, name, changes)| self.alter_resource(rtype, &name, &changes, false, request.validate_only)).collect();
        Self::incremental_alter_configs_answer(&request, outcomes)
    }

    fn alter_resource(&self, rtype: i8, name: &str, changes: &[Change], replace: bool, validate_only: bool) -> Result<(), Refusal> {
        if !self.check_resource(rtype, name, changes)? {
            return Ok(());
        }
        self.update_topic_configs(name, |current| self.changed_topic_configs(current, changes, replace), validate_only).map(|_| ())
    }

    /// Checks one resource of a request; true if it changes a topic's
    /// configs (a broker resource changes nothing, or is refused).
    fn check_resource(&self, rtype: i8, name: &str, changes: &[Change]) -> Result<bool, Refusal> {
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = changes.iter().find(|c| !seen.insert(c.name.as_str())) {
            return Err((InvalidRequest, format!("config '{}' appears more than once in one resource", dup.name)));
        }
        match rtype {
            RESOURCE_TOPIC => {
                if name.is_empty() {
                    return Err((InvalidRequest, "a topic config change needs a topic name".into()));
                }
                if let Err(e) = validate_topic_name(name) {
                    return Err((InvalidTopicException, e));
                }
                Ok(true)
            }
            RESOURCE_BROKER => {
                let me = self.config.node_id.to_string();
                if !name.is_empty() && name != me {
                    return Err((InvalidRequest, format!("this is broker {me}, not broker '{name}'")));
                }
                match changes.first() {
                    None => Ok(false),
                    Some(c) => Err((
                        InvalidRequest,
                        format!("broker config '{}' cannot be changed at run time: broker configs come from flags, CHRONIK_* environment or the config file, read at start", c.name),
                    )),
                }
            }
            other => Err((InvalidRequest, format!("resource type {other} cannot be altered; use 2 (topic)"))),
        }
    }

    /// In a cluster: the controller command each resource needs (`None`:
    /// nothing to propose), computed from the topic's current overrides, or
    /// why the resource is refused. The command names the overrides it was
    /// computed from, so a concurrent change makes it fail, not vanish.
    fn plan_resources(&self, resources: impl Iterator<Item = (i8, String, Vec<Change>)>, replace: bool, validate_only: bool) -> Vec<Result<Option<Command>, Refusal>> {
        resources
            .map(|(rtype, name, changes)| {
                if !self.check_resource(rtype, &name, &changes)? {
                    return Ok(None);
                }
                let topic = self.topic(&name).filter(|t| self.is_cluster_topic(t)).ok_or_else(|| (UnknownTopicOrPartition, format!("topic '{name}' does not exist")))?;
                let configs = self.changed_topic_configs(&topic.record.configs, &changes, replace)?;
                if validate_only || configs == topic.record.configs {
                    return Ok(None);
                }
                Ok(Some(Command::AlterConfigs { name, configs, expected: Some(topic.record.configs.clone()) }))
            })
            .collect()
    }

    /// AlterConfigs in a cluster: the commands to propose, per resource.
    pub fn plan_alter_configs(&self, request: &AlterConfigsRequest) -> Vec<Result<Option<Command>, Refusal>> {
        self.plan_resources(legacy_changes(request), true, request.validate_only)
    }

    /// IncrementalAlterConfigs in a cluster: the commands to propose, per resource.
    pub fn plan_incremental_alter_configs(&self, request: &IncrementalAlterConfigsRequest) -> Vec<Result<Option<Command>, Refusal>> {
        self.plan_resources(incremental_changes(request), false, request.validate_only)
    }

    /// The AlterConfigs answer from each resource's outcome.
    pub fn alter_configs_answer(request: &AlterConfigsRequest, outcomes: Vec<Result<(), Refusal>>) -> AlterConfigsResponse {
        let responses = request
            .resources
            .iter()
            .zip(outcomes)
            .map(|(res, outcome)| {
                let (code, message) = answer(outcome);
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone())
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect();
        AlterConfigsResponse::default().with_responses(responses)
    }

    /// The IncrementalAlterConfigs answer from each resource's outcome.
    pub fn incremental_alter_configs_answer(request: &IncrementalAlterConfigsRequest, outcomes: Vec<Result<(), Refusal>>) -> IncrementalAlterConfigsResponse {
        let responses = request
            .resources
            .iter()
            .zip(outcomes)
            .map(|(res, outcome)| {
                let (code, message) = answer(outcome);
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone())
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect();
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }

    /// The topic's overrides after `changes`, validated as a whole.
    pub(super) fn changed_topic_configs(&self, current: &BTreeMap<String, String>, changes: &[Change], replace: bool) -> Result<BTreeMap<String, String>, Refusal> {
        let mut configs = if replace { BTreeMap::new() } else { current.clone() };
        for c in changes {
            let def = topic_config_def(&c.name).ok_or_else(|| (InvalidConfig, format!("unknown topic config '{}'", c.name)))?;
            let value = || c.value.clone().ok_or_else(|| (InvalidRequest, format!("config '{}' needs a value", c.name)));
            match c.op {
                OP_SET => {
                    configs.insert(c.name.clone(), value()?);
                }
                OP_DELETE => {
                    configs.remove(&c.name);
                }
                OP_APPEND | OP_SUBTRACT => {
                    if def.config_type != ConfigType::List {
                        return Err((InvalidConfig, format!("config '{}' is not a list: it can be set or deleted, not appended to or subtracted from", c.name)));
                    }
                    let now = configs.get(&c.name).cloned().unwrap_or_else(|| self.config.topic_default(&c.name));
                    let mut items = list_items(&now);
                    let given = list_items(&value()?);
                    if c.op == OP_APPEND {
                        for g in given {
                            if !items.contains(&g) {
                                items.push(g);
                            }
                        }
                    } else {
                        items.retain(|i| !given.contains(i));
                    }
                    configs.insert(c.name.clone(), items.join(","));
                }
                op => return Err((InvalidRequest, format!("unknown config operation {op} for '{}'", c.name))),
            }
        }
        validate_topic_configs(&configs).map_err(|m| (InvalidConfig, m))?;
        Ok(configs)
    }

    /// Replaces a topic's config overrides: persisted (fsynced) first, then
    /// applied to the served topic and its partition logs.
    pub fn set_topic_configs(&self, name: &str, configs: BTreeMap<String, String>) -> Result<(), Refusal> {
        self.update_topic_configs(name, |_| Ok(configs), false).map(|_| ())
    }

    /// Changes a topic's overrides: `change` computes them from the current
    /// ones, under the catalogue lock, so concurrent changes cannot lose each
    /// other. Config changes are serialized; the partition logs get their
    /// new settings after the catalogue lock is released (a partition may be
    /// busy for a while, and requests need that lock). Returns the overrides
    /// after the change (or as they would be, with `validate_only`).
    pub(super) fn update_topic_configs(
        &self,
        name: &str,
        change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Refusal>,
        validate_only: bool,
    ) -> Result<BTreeMap<String, String>, Refusal> {
        let _one_at_a_time = self.config_changes.lock().expect("config change lock poisoned");
        let (partitions, record) = {
            let mut state = self.write_state();
            let Some(topic) = state.topics.get(name).cloned() else {
                return Err((UnknownTopicOrPartition, format!("topic '{name}' does not exist")));
            };
            let configs = change(&topic.record.configs)?;
            if validate_only || topic.record.configs == configs {
                return Ok(configs);
            }
            let mut record = topic.record.clone();
            record.configs = configs;
            let mut catalog = state.catalog.clone();
            catalog.topics.insert(name.to_string(), record.clone());
            catalog.save(&*self.disk).map_err(|e| (KafkaStorageError, format!("cannot persist the catalogue: {e}")))?;
            state.catalog = catalog;
            state.topics.insert(name.to_string(), Arc::new(Topic { record: record.clone(), partitions: topic.partitions.clone() }));
            (topic.partitions.clone(), record)
        };
        let log_config = self.config.log_config(&record.configs);
        for p in &partitions {
            if let Ok(log) = &mut *p.lock() {
                log.set_config(log_config.clone());
            }
        }
        tracing::info!(topic = name, configs = ?record.configs, "topic configs changed");
        Ok(record.configs)
    }
}

fn answer(outcome: Result<(), Refusal>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((e, message)) => {
            tracing::info!(error = ?e, %message, "config change refused");
            (e.code(), Some(StrBytes::from_string(message)))
        }
    }
}
