//! Kafka admin requests a cluster member answers through the controller:
//! CreateTopics, DeleteTopics, CreatePartitions, InitProducerId and topic
//! auto-creation. This module validates a request and turns it into
//! controller commands against the current image, and builds the Kafka
//! answer from the commands' outcomes; `chronik-net` proposes the commands
//! in between (it owns the waiting).


use chronik_proto::ResponseError::*;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::admin::{check_partition_count, creatable_configs};
use super::ops::Refusal;
use super::{is_internal, validate_topic_name, Broker};
use crate::cluster::image::{Applied, Command, Image, Refusal as ImageRefusal};
use crate::config::validate_topic_configs;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The Kafka error for a command the controller refused.
pub fn refusal_error(applied: &Applied) -> Option<Refusal> {
    let Applied::Refused { reason, message } = applied else { return None };
    let e = match reason {
        ImageRefusal::TopicExists => TopicAlreadyExists,
        ImageRefusal::UnknownTopic | ImageRefusal::UnknownPartition => UnknownTopicOrPartition,
        ImageRefusal::InvalidAssignment => InvalidReplicaAssignment,
        ImageRefusal::InvalidRequest => InvalidRequest,
        _ => UnknownServerError,
    };
    Some((e, message.clone()))
}

/// One topic of a CreateTopics request, planned.
#[derive(Debug, Clone)]
pub struct PlannedTopic {
    pub name: String,
    pub command: Command,
    pub partitions: i32,
    pub replication_factor: i32,
}

impl Broker {
    /// Validates one topic of CreateTopics (or an auto-creation) and
    /// assigns its replicas from the image's live brokers (or checks the
    /// assignment the request gives).
    pub fn plan_topic(&self, image: &Image, name: &str, t: &CreatableTopic) -> Result<PlannedTopic, Refusal> {
        validate_topic_name(name).map_err(|m| (InvalidTopicException, m))?;
        if image.topics.contains_key(name) {
            return Err((TopicAlreadyExists, format!("topic '{name}' already exists")));
        }
        let configs = creatable_configs(t)?;
        validate_topic_configs(&configs).map_err(|m| (InvalidConfig, m))?;
        let assignment = if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err((InvalidRequest, "give either assignments or num_partitions/replication_factor, not both".into()));
            }
            let mut a = t.assignments.clone();
            a.sort_by_key(|a| a.partition_index);
            if a.iter().enumerate().any(|(i, a)| a.partition_index != i as i32) {
                return Err((InvalidReplicaAssignment, "partition indexes must be 0..n without gaps".into()));
            }
            let replicas: Vec<Vec<i32>> = a.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect();
            if replicas.iter().any(|r| r.len() != replicas[0].len()) {
                return Err((InvalidReplicaAssignment, "every partition must have the same number of replicas".into()));
            }
            replicas
        } else {
            let partitions = if t.num_partitions == -1 { self.config.num_partitions } else { t.num_partitions };
            check_partition_count(partitions)?;
            let rf = if t.replication_factor == -1 { self.config.default_replication_factor } else { t.replication_factor as i32 };
            if rf <= 0 {
                return Err((InvalidReplicationFactor, format!("replication factor must be positive, not {rf}")));
            }
            image.assign(name, 0, partitions, rf).map_err(|m| (InvalidReplicationFactor, m))?
        };
        let (partitions, replication_factor) = (assignment.len() as i32, assignment.first().map_or(0, |r| r.len() as i32));
        let id = self.new_topic_id();
        Ok(PlannedTopic { name: name.to_string(), command: Command::CreateTopic { name: name.to_string(), id, configs, assignment }, partitions, replication_factor })
    }

    /// CreateTopics in a cluster: each topic planned, or why not.
    pub fn plan_create_topics(&self, image: &Image, request: &CreateTopicsRequest) -> Vec<Result<PlannedTopic, Refusal>> {
        let mut seen = std::collections::BTreeSet::new();
        request
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                if !seen.insert(name.clone()) {
                    return Err((InvalidRequest, format!("topic '{name}' appears more than once in the request")));
                }
                if !image.topics.contains_key(&name) {
                    super::groups::refuse_internal_change(&name, "create")?;
                }
                self.plan_topic(image, &name, t)
            })
            .collect()
    }

    /// The CreateTopics answer from each topic's outcome.
    pub fn create_topics_answer(&self, request: &CreateTopicsRequest, outcomes: Vec<Result<PlannedTopic, Refusal>>, version: i16) -> CreateTopicsResponse {
        let results = request
            .topics
            .iter()
            .zip(outcomes)
            .map(|(t, outcome)| {
                let mut r = CreatableTopicResult::default().with_name(t.name.clone());
                r.error_message = None;
                match outcome {
                    Ok(plan) => {
                        let Command::CreateTopic { id, configs, .. } = &plan.command else { unreachable!("planned creations are CreateTopic") };
                        tracing::info!(topic = %plan.name, partitions = plan.partitions, replication_factor = plan.replication_factor, validate_only = request.validate_only, "created topic");
                        if version >= 5 {
                            r.num_partitions = plan.partitions;
                            r.replication_factor = plan.replication_factor as i16;
                            let record = super::catalog::TopicRecord { name: plan.name.clone(), id: *id, partitions: plan.partitions, configs: configs.clone(), created_index: None };
                            r.configs = Some(self.described_topic_configs(&record));
                        }
                        if version >= 7 {
                            r.topic_id = *id;
                        }
                    }
                    Err((e, message)) => {
                        tracing::info!(topic = %t.name.0, error = ?e, %message, "create topic refused");
                        r.error_code = e.code();
                        r.error_message = Some(text(message));
                        if version >= 5 {
                            r.configs = Some(Vec::new());
                        }
                    }
                }
                r
            })
            .collect();
        CreateTopicsResponse::default().with_topics(results)
    }

    /// DeleteTopics: the topics to delete (by name), and the answer with
    /// refusals filled in; the caller deletes them (here, or through the
    /// controller in a cluster) and marks the ones that failed with
    /// [`Broker::delete_failed`]. Internal topics, and in a cluster a
    /// broker's own topics, are refused.
    pub fn plan_delete_topics(&self, request: DeleteTopicsRequest, version: i16) -> (DeleteTopicsResponse, Vec<(usize, String)>) {
        let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
            request.topics.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect()
        } else {
            request.topic_names.into_iter().map(|n| (Some(n.0.to_string()), Uuid::nil())).collect()
        };
        let mut deletes = Vec::new();
        let mut responses = Vec::with_capacity(targets.len());
        for (i, (name, id)) in targets.into_iter().enumerate() {
            let topic = match &name {
                Some(n) => self.topic(n),
                None => self.topic_by_id(id),
            };
            let mut r = DeletableTopicResult::default().with_name(name.clone().map(|n| TopicName(text(n))));
            r.error_message = None;
            if version >= 6 {
                r.topic_id = topic.as_ref().map(|t| t.record.id).unwrap_or(id);
            }
            match topic {
                None => r.error_code = if name.is_none() { UnknownTopicId } else { UnknownTopicOrPartition }.code(),
                Some(t) if is_internal(&t.record.name) || (self.config.cluster && !self.is_cluster_topic(&t)) => {
                    r.name = Some(TopicName(text(t.record.name.clone())));
                    r.error_code = InvalidTopicException.code();
                    if version >= 5 {
                        let why = if is_internal(&t.record.name) { "an internal topic" } else { "this broker's own topic, not the cluster's" };
                        r.error_message = Some(text(format!("{} is {why}; it cannot be deleted", t.record.name)));
                    }
                }
                Some(t) => {
                    if version >= 6 {
                        r.name = Some(TopicName(text(t.record.name.clone())));
                    }
                    deletes.push((i, t.record.name.clone()));
                }
            }
            responses.push(r);
        }
        (DeleteTopicsResponse::default().with_responses(responses), deletes)
    }

    /// Marks a deletion the controller did not make.
    pub fn delete_failed(response: &mut DeleteTopicsResponse, slot: usize, (e, message): Refusal, version: i16) {
        let r = &mut response.responses[slot];
        r.error_code = e.code();
        if version >= 5 {
            r.error_message = Some(text(message));
        }
    }

    /// CreatePartitions in a cluster: for each topic, the command adding
    /// its partitions (replicas as the request gives them or assigned from
    /// the live brokers, as many as its first partition has), or why not.
    pub fn plan_create_partitions(&self, image: &Image, request: &CreatePartitionsRequest) -> Vec<Result<Command, Refusal>> {
        request
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let Some(state) = image.topics.get(&name) else {
                    return Err((UnknownTopicOrPartition, format!("topic '{name}' does not exist")));
                };
                super::groups::refuse_internal_change(&name, "add partitions to")?;
                let current = state.partitions.len() as i32;
                if t.count <= current {
                    return Err((InvalidPartitions, format!("topic has {current} partitions; the new count {} must be larger", t.count)));
                }
                check_partition_count(t.count)?;
                let rf = state.partitions.first().map_or(1, |p| p.replicas.len() as i32);
                let assignment = match t.assignments.as_deref().filter(|a| !a.is_empty()) {
                    Some(a) => {
                        if a.len() as i32 != t.count - current {
                            return Err((InvalidReplicaAssignment, format!("{} assignments given for {} new partitions", a.len(), t.count - current)));
                        }
                        let replicas: Vec<Vec<i32>> = a.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect();
                        if replicas.iter().any(|r| r.len() as i32 != rf) {
                            return Err((InvalidReplicaAssignment, format!("each new partition needs {rf} replicas, as the topic's others have")));
                        }
                        replicas
                    }
                    None => image.assign(&name, current, t.count - current, rf).map_err(|m| (InvalidReplicationFactor, m))?,
                };
                Ok(Command::CreatePartitions { name, assignment })
            })
            .collect()
    }

    /// The CreatePartitions answer from each topic's outcome.
    pub fn create_partitions_answer(request: &CreatePartitionsRequest, outcomes: Vec<Result<(), Refusal>>) -> CreatePartitionsResponse {
        let results = request
            .topics
            .iter()
            .zip(outcomes)
            .map(|(t, outcome)| {
                let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
                r.error_message = None;
                if let Err((e, message)) = outcome {
                    tracing::info!(topic = %t.name.0, error = ?e, %message, "create partitions refused");
                    r.error_code = e.code();
                    r.error_message = Some(text(message));
                }
                r
            })
            .collect();
        CreatePartitionsResponse::default().with_results(results)
    }
}
