//! ApiVersions, Metadata, topic administration, DescribeConfigs and
//! InitProducerId.

use std::collections::BTreeMap;
use std::sync::Arc;

use chronik_proto::api::SUPPORTED;
use chronik_proto::ResponseError::{self, *};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::catalog::{TopicRecord, PRODUCER_ID_BLOCK};
use super::{open_partition, validate_topic_name, Broker, Topic, LEADER_EPOCH};
use crate::config::{topic_config_def, validate_topic_configs, TOPIC_CONFIGS};

/// Kafka's "authorized operations not requested" sentinel.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// Operations on the cluster resource without an authorizer: every one, as
/// ACL operation codes (CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9,
/// DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12).
const CLUSTER_OPERATIONS: i32 = (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
/// DescribeCluster endpoint types.
const ENDPOINT_BROKERS: i8 = 1;
/// Config resource types (DescribeConfigs, AlterConfigs, IncrementalAlterConfigs).
pub(super) const RESOURCE_TOPIC: i8 = 2;
pub(super) const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// A new partition count: positive, and at most 100000.
pub(super) fn check_partition_count(partitions: i32) -> Result<(), (ResponseError, String)> {
    if partitions <= 0 {
        return Err((InvalidPartitions, format!("number of partitions must be positive, not {partitions}")));
    }
    if partitions > 100_000 {
        return Err((InvalidPartitions, format!("{partitions} partitions is more than the limit of 100000")));
    }
    Ok(())
}

/// A CreateTopics topic's config overrides: each named config known and
/// given a value (the values are validated as a whole afterwards).
pub(super) fn creatable_configs(t: &CreatableTopic) -> Result<BTreeMap<String, String>, (ResponseError, String)> {
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let Some(value) = &c.value else {
            return Err((InvalidConfig, format!("config '{}' has a null value", c.name)));
        };
        if topic_config_def(&c.name).is_none() {
            return Err((InvalidConfig, format!("unknown topic config '{}'", c.name)));
        }
        configs.insert(c.name.to_string(), value.to_string());
    }
    Ok(configs)
}

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The ApiVersions answer: exactly the table in `chronik_proto::api`.
/// An unsupported ApiVersions version is answered by the network layer
/// with `UNSUPPORTED_VERSION` and this same table at v0.
pub fn api_versions(_request: ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    api_versions_table(0)
}

pub fn api_versions_table(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|s| ApiVersion::default().with_api_key(s.key as i16).with_min_version(s.version_min).with_max_version(s.version_max))
        .collect();
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys)
}

pub(super) struct Created {
    pub(super) record: TopicRecord,
}

impl Broker {
    /// The brokers as (id, host, Kafka port, fenced) — in a cluster the
    /// unfenced ones unless `include_fenced` — and the controller id. What
    /// Metadata, DescribeCluster and the admin service all report.
    pub fn brokers_and_controller(&self, include_fenced: bool) -> (Vec<(i32, String, i32, bool)>, i32) {
        match self.cluster_view() {
            Some(v) => (v.brokers.into_iter().filter(|b| include_fenced || !b.3).collect(), v.controller_id),
            None => (vec![(self.config.node_id, self.config.advertised_host.clone(), self.config.advertised_port, false)], self.config.node_id),
        }
    }

    /// The controller Kafka clients are told of: the quorum's leader if it
    /// is a live broker; otherwise this broker (every broker takes admin
    /// requests and passes them to the quorum, as KRaft brokers forward
    /// them), so admin clients never wait for a controller to appear.
    fn kafka_controller_id(&self, quorum_leader: i32) -> i32 {
        let listed = self.kafka_brokers().iter().any(|b| b.0 == quorum_leader);
        if listed { quorum_leader } else { self.config.node_id }
    }

    /// The live brokers Kafka clients are offered: this one too, even
    /// before the controller has registered it (a client connected to it
    /// must find the broker it talks to).
    fn kafka_brokers(&self) -> Vec<(i32, String, i32, bool)> {
        let mut brokers = self.brokers_and_controller(false).0;
        if !brokers.iter().any(|b| b.0 == self.config.node_id) {
            brokers.push((self.config.node_id, self.config.advertised_host.clone(), self.config.advertised_port, false));
            brokers.sort();
        }
        brokers
    }

    fn broker_list(&self) -> Vec<MetadataResponseBroker> {
        self.kafka_brokers()
            .into_iter()
            .map(|(id, host, port, _)| MetadataResponseBroker::default().with_node_id(BrokerId(id)).with_host(text(host)).with_port(port))
            .collect()
    }

    fn topic_metadata(&self, topic: &Topic, version: i16) -> MetadataResponseTopic {
        let node = BrokerId(self.config.node_id);
        let view = self.cluster_view();
        let cluster = view.as_ref().and_then(|v| v.topics.get(&topic.record.name).filter(|t| t.id == topic.record.id).map(|t| (v, t)));
        let partitions = match cluster {
            // The controller's topic: leaders, replicas and ISR from its image.
            Some((v, t)) => t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, ps)| {
                    let ids = |b: &[i32]| b.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
                    let fenced = |b: &i32| v.brokers.iter().find(|x| x.0 == *b).is_none_or(|x| x.3);
                    let mut m = MetadataResponsePartition::default()
                        .with_partition_index(i as i32)
                        .with_leader_id(BrokerId(ps.leader))
                        .with_replica_nodes(ids(&ps.replicas))
                        .with_isr_nodes(ids(&ps.isr));
                    if ps.leader == crate::cluster::image::NO_LEADER {
                        m.error_code = LeaderNotAvailable.code();
                    }
                    if version >= 5 {
                        m.offline_replicas = ps.replicas.iter().filter(|b| fenced(b)).map(|b| BrokerId(*b)).collect();
                    }
                    if version >= 7 {
                        m.leader_epoch = ps.leader_epoch;
                    }
                    m
                })
                .collect(),
            // A cluster topic this broker's image does not show (yet, after a
            // restart): no leader to offer.
            None if topic.record.created_index.is_some() => topic
                .partitions
                .iter()
                .map(|p| {
                    let mut m = MetadataResponsePartition::default().with_partition_index(p.index).with_leader_id(BrokerId(-1)).with_error_code(LeaderNotAvailable.code());
                    if version >= 7 {
                        m.leader_epoch = -1;
                    }
                    m
                })
                .collect(),
            None => topic
                .partitions
                .iter()
                .map(|p| {
                    let offline = p.high_watermark().is_none();
                    let mut m = MetadataResponsePartition::default()
                        .with_partition_index(p.index)
                        .with_leader_id(if offline { BrokerId(-1) } else { node })
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(if offline { vec![] } else { vec![node] });
                    if offline {
                        m.error_code = KafkaStorageError.code();
                        if version >= 5 {
                            m.offline_replicas = vec![node];
                        }
                    }
                    if version >= 7 {
                        m.leader_epoch = LEADER_EPOCH;
                    }
                    m
                })
                .collect(),
        };
        let mut t = MetadataResponseTopic::default()
            .with_name(Some(TopicName(text(topic.record.name.clone()))))
            .with_partitions(partitions);
        if version >= 10 {
            t.topic_id = topic.record.id;
        }
        if version >= 8 {
            t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
        }
        if version >= 1 {
            t.is_internal = super::is_internal(&topic.record.name);
        }
        t
    }

    /// DescribeCluster (KIP-700): a single broker is the cluster and its own
    /// controller; in a cluster, the brokers and controller of the quorum's
    /// image. Only the broker endpoint is served.
    pub(super) fn describe_cluster(&self, request: DescribeClusterRequest, version: i16) -> DescribeClusterResponse {
        let (brokers, controller) = self.brokers_and_controller(request.include_fenced_brokers);
        let controller = self.kafka_controller_id(controller);
        // (Not nullable here: empty while a cluster member has not taken the quorum's id.)
        let cluster_id = self.client_cluster_id().unwrap_or_default();
        let mut r = DescribeClusterResponse::default().with_cluster_id(text(cluster_id)).with_controller_id(BrokerId(controller));
        r.error_message = None;
        r.cluster_authorized_operations = if request.include_cluster_authorized_operations { CLUSTER_OPERATIONS } else { AUTHORIZED_OPERATIONS_OMITTED };
        if version >= 1 {
            r.endpoint_type = ENDPOINT_BROKERS;
            if request.endpoint_type != ENDPOINT_BROKERS {
                r.error_code = MismatchedEndpointType.code();
                r.error_message = Some(text(format!("this is a broker endpoint; endpoint type {} was asked for", request.endpoint_type)));
                r.cluster_id = text("");
                r.controller_id = BrokerId(-1);
                return r;
            }
        }
        r.brokers = brokers
            .into_iter()
            .map(|(id, host, port, fenced)| {
                DescribeClusterBroker::default().with_broker_id(BrokerId(id)).with_host(text(host)).with_port(port).with_rack(None).with_is_fenced(fenced)
            })
            .collect();
        r
    }

    pub(super) fn metadata(&self, request: MetadataRequest, version: i16) -> MetadataResponse {
        let mut response = MetadataResponse::default().with_brokers(self.broker_list());
        if version >= 2 {
            response.cluster_id = self.client_cluster_id().map(text);
        }
        if version >= 1 {
            response.controller_id = BrokerId(self.kafka_controller_id(self.brokers_and_controller(false).1));
        }
        if (8..=10).contains(&version) {
            response.cluster_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
        }
        let requested = match request.topics {
            // v0: an empty list means all topics; v1+: null means all.
            None => None,
            Some(t) if t.is_empty() && version == 0 => None,
            Some(t) => Some(t),
        };
        let Some(requested) = requested else {
            response.topics = self.topics().iter().map(|t| self.topic_metadata(t, version)).collect();
            return response;
        };
        // In a cluster the controller creates topics: the network layer does
        // that for the topics this answer names unknown.
        let auto_create = self.config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation) && !self.config.cluster;
        for rt in requested {
            // A topic id (v10+) names the topic even when a name is also sent, as in Kafka.
            let name = if rt.topic_id.is_nil() { rt.name } else { None };
            let entry = match name {
                Some(name) => {
                    let name_str = name.0.to_string();
                    match self.topic(&name_str) {
                        Some(t) => self.topic_metadata(&t, version),
                        None => {
                            let error = if let Err(why) = validate_topic_name(&name_str) {
                                tracing::debug!(topic = %name_str, %why, "metadata for an invalid topic name");
                                InvalidTopicException
                            } else if auto_create && super::is_internal(&name_str) {
                                // Created as the group coordinator creates it (its partitions and configs).
                                match self.offsets_topic() {
                                    Ok(t) => {
                                        response.topics.push(self.topic_metadata(&t, version));
                                        continue;
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "cannot auto-create an internal topic");
                                        LeaderNotAvailable
                                    }
                                }
                            } else if auto_create {
                                match self.create_topic(&name_str, self.config.num_partitions, BTreeMap::new(), false) {
                                    Ok(_) => {
                                        tracing::info!(topic = %name_str, partitions = self.config.num_partitions, "auto-created topic");
                                        let t = self.topic(&name_str).expect("just created");
                                        response.topics.push(self.topic_metadata(&t, version));
                                        continue;
                                    }
                                    Err((TopicAlreadyExists, _)) if self.topic(&name_str).is_some() => {
                                        // Created meanwhile by someone else.
                                        let t = self.topic(&name_str).expect("checked just now");
                                        response.topics.push(self.topic_metadata(&t, version));
                                        continue;
                                    }
                                    Err((e, _)) => e,
                                }
                            } else {
                                UnknownTopicOrPartition
                            };
                            let mut t = MetadataResponseTopic::default().with_name(Some(name)).with_error_code(error.code());
                            if version >= 8 {
                                t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
                            }
                            t
                        }
                    }
                }
                None => match self.topic_by_id(rt.topic_id) {
                    Some(t) => self.topic_metadata(&t, version),
                    None => {
                        let mut t = MetadataResponseTopic::default().with_name(None).with_error_code(UnknownTopicId.code());
                        t.topic_id = rt.topic_id;
                        t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
                        t
                    }
                },
            };
            response.topics.push(entry);
        }
        response
    }

    /// Creates a topic durably (catalogue first, then partition logs).
    pub(super) fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Created, (ResponseError, String)> {
        validate_topic_name(name).map_err(|m| (InvalidTopicException, m))?;
        check_partition_count(partitions)?;
        validate_topic_configs(&configs).map_err(|m| (InvalidConfig, m))?;
        let exists = || (TopicAlreadyExists, format!("topic '{name}' already exists"));
        if self.read_state().catalog.topics.contains_key(name) {
            return Err(exists());
        }
        let record = TopicRecord { name: name.to_string(), id: self.new_topic_id(), partitions, configs, created_index: None };
        if validate_only {
            return Ok(Created { record });
        }
        // Create the partition logs without holding the broker lock (this is
        // file creation and fsyncs); a crash before the catalogue names the
        // topic leaves orphan directories, removed at the next start.
        let now = self.clock.now_ms();
        let parts: Vec<_> = (0..partitions).map(|i| open_partition(&self.disk, &self.config, &record, i, now)).collect();
        let mut state = self.write_state();
        if state.catalog.topics.contains_key(name) {
            drop(state);
            let _ = self.disk.remove_dir_all(&record.dir());
            return Err(exists());
        }
        let mut catalog = state.catalog.clone();
        catalog.topics.insert(name.to_string(), record.clone());
        catalog.save(&*self.disk).map_err(|e| {
            tracing::error!(topic = name, error = %e, "cannot persist the catalogue");
            (KafkaStorageError, format!("cannot persist the topic: {e}"))
        })?;
        state.catalog = catalog;
        state.topics.insert(name.to_string(), Arc::new(Topic { record: record.clone(), partitions: parts }));
        Ok(Created { record })
    }

    pub(super) fn new_topic_id(&self) -> Uuid {
        let mut b = self.rng.bytes16();
        b[6] = (b[6] & 0x0f) | 0x40; // version 4
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        Uuid::from_bytes(b)
    }

    pub(super) fn described_topic_configs(&self, record: &TopicRecord) -> Vec<CreatableTopicConfigs> {
        TOPIC_CONFIGS
            .iter()
            .map(|d| {
                let overridden = record.configs.contains_key(d.name);
                CreatableTopicConfigs::default()
                    .with_name(text(d.name))
                    .with_value(Some(text(self.config.topic_value(&record.configs, d.name))))
                    .with_config_source(if overridden { SOURCE_TOPIC } else { SOURCE_DEFAULT })
            })
            .collect()
    }

    pub(super) fn create_topics(&self, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
        let mut results = Vec::with_capacity(request.topics.len());
        let mut seen = std::collections::BTreeSet::new();
        for t in request.topics {
            let name = t.name.0.to_string();
            let duplicate = !seen.insert(name.clone());
            let mut r = CreatableTopicResult::default().with_name(t.name.clone());
            r.error_message = None;
            let outcome = if duplicate {
                Err((InvalidRequest, format!("topic '{name}' appears more than once in the request")))
            } else {
                let internal = if self.topic(&name).is_some() { Ok(()) } else { super::groups::refuse_internal_change(&name, "create") };
                internal.and_then(|()| self.create_one(&name, &t, request.validate_only))
            };
            match outcome {
                Ok(created) => {
                    tracing::info!(topic = %name, partitions = created.record.partitions, validate_only = request.validate_only, "created topic");
                    if version >= 5 {
                        r.num_partitions = created.record.partitions;
                        r.replication_factor = 1;
                        r.configs = Some(self.described_topic_configs(&created.record));
                    }
                    if version >= 7 {
                        r.topic_id = created.record.id;
                    }
                }
                Err((e, message)) => {
                    tracing::info!(topic = %name, error = ?e, %message, "create topic refused");
                    r.error_code = e.code();
                    r.error_message = Some(text(message));
                    if version >= 5 {
                        // Kafka answers an empty (not null) list for a refused topic.
                        r.configs = Some(Vec::new());
                    }
                }
            }
            results.push(r);
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    fn create_one(&self, name: &str, t: &CreatableTopic, validate_only: bool) -> Result<Created, (ResponseError, String)> {
        if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err((InvalidRequest, "give either assignments or num_partitions/replication_factor, not both".into()));
            }
            for a in &t.assignments {
                if a.broker_ids.iter().any(|b| b.0 != self.config.node_id) || a.broker_ids.len() != 1 {
                    return Err((InvalidReplicaAssignment, format!("partition {} must be assigned to broker {} alone", a.partition_index, self.config.node_id)));
                }
            }
            let mut indexes: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
            indexes.sort_unstable();
            if indexes.iter().enumerate().any(|(i, p)| *p != i as i32) {
                return Err((InvalidReplicaAssignment, "partition indexes must be 0..n without gaps".into()));
            }
        }
        let partitions = match (t.assignments.len(), t.num_partitions) {
            (n, _) if n > 0 => n as i32,
            (_, -1) => self.config.num_partitions,
            (_, n) => n,
        };
        match t.replication_factor {
            -1 | 1 => {}
            rf if rf <= 0 => return Err((InvalidReplicationFactor, format!("replication factor must be positive, not {rf}"))),
            rf => return Err((InvalidReplicationFactor, format!("replication factor {rf} is larger than the 1 available broker"))),
        }
        let configs = creatable_configs(t)?;
        self.create_topic(name, partitions, configs, validate_only)
    }

    pub(super) fn delete_topics(&self, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
        let (mut response, deletes) = self.plan_delete_topics(request, version);
        for (slot, name) in deletes {
            if let Err(message) = self.delete_topic(&name) {
                Broker::delete_failed(&mut response, slot, (KafkaStorageError, message), version);
            }
        }
        response
    }

    pub(super) fn delete_topic(&self, name: &str) -> Result<(), String> {
        let topic = {
            let mut state = self.write_state();
            let mut catalog = state.catalog.clone();
            let Some(record) = catalog.topics.remove(name) else { return Ok(()) };
            catalog.save(&*self.disk).map_err(|e| format!("cannot persist the catalogue: {e}"))?;
            state.catalog = catalog;
            tracing::info!(topic = name, id = %record.id, "deleted topic");
            state.topics.remove(name)
        };
        // The catalogue no longer names it; its files go now, or at the next
        // start if this fails half-way.
        if let Some(topic) = topic {
            let dir = topic.record.dir();
            for p in &topic.partitions {
                // Wait for in-flight requests on the partition to finish.
                drop(p.lock());
            }
            if let Err(e) = self.disk.remove_dir_all(&dir).and_then(|()| self.disk.sync_dir(std::path::Path::new("topics"))) {
                tracing::warn!(topic = name, error = %e, "could not remove the deleted topic's files; they will be removed at the next start");
            }
        }
        Ok(())
    }

    pub(super) fn create_partitions(&self, request: CreatePartitionsRequest, _version: i16) -> CreatePartitionsResponse {
        let mut results = Vec::with_capacity(request.topics.len());
        for t in request.topics {
            let name = t.name.0.to_string();
            let outcome = self.add_partitions(&name, t.count, t.assignments.as_deref(), request.validate_only);
            let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
            match outcome {
                Ok(()) => r.error_message = None,
                Err((e, message)) => {
                    tracing::info!(topic = %name, error = ?e, %message, "create partitions refused");
                    r.error_code = e.code();
                    r.error_message = Some(text(message));
                }
            }
            results.push(r);
        }
        CreatePartitionsResponse::default().with_results(results)
    }

    fn add_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<&[kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment]>,
        validate_only: bool,
    ) -> Result<(), (ResponseError, String)> {
        let Some(topic) = self.topic(name) else {
            return Err((UnknownTopicOrPartition, format!("topic '{name}' does not exist")));
        };
        super::groups::refuse_internal_change(name, "add partitions to")?;
        let current = topic.record.partitions;
        if count <= current {
            return Err((InvalidPartitions, format!("topic has {current} partitions; the new count {count} must be larger")));
        }
        check_partition_count(count)?;
        if let Some(a) = assignments.filter(|a| !a.is_empty()) {
            if a.len() as i32 != count - current {
                return Err((InvalidReplicaAssignment, format!("{} assignments given for {} new partitions", a.len(), count - current)));
            }
            if a.iter().any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != self.config.node_id) {
                return Err((InvalidReplicaAssignment, format!("new partitions must be assigned to broker {} alone", self.config.node_id)));
            }
        }
        if validate_only {
            return Ok(());
        }
        // Create the new logs without the broker lock; if the topic changed
        // meanwhile, give up (the unused directories are removed now or at
        // the next start).
        let mut record = topic.record.clone();
        record.partitions = count;
        let now = self.clock.now_ms();
        let new: Vec<_> = (current..count).map(|i| open_partition(&self.disk, &self.config, &record, i, now)).collect();
        let mut state = self.write_state();
        if state.topics.get(name).is_none_or(|t| !Arc::ptr_eq(t, &topic)) {
            drop(state);
            for i in current..count {
                let _ = self.disk.remove_dir_all(&record.partition_dir(i));
            }
            return Err((InvalidRequest, format!("topic '{name}' changed during the request; retry")));
        }
        let mut catalog = state.catalog.clone();
        catalog.topics.insert(name.to_string(), record.clone());
        catalog.save(&*self.disk).map_err(|e| (KafkaStorageError, format!("cannot persist the catalogue: {e}")))?;
        state.catalog = catalog;
        let mut partitions = topic.partitions.clone();
        partitions.extend(new);
        state.topics.insert(name.to_string(), Arc::new(Topic { record, partitions }));
        tracing::info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    pub(super) fn describe_configs(&self, request: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
        let mut results = Vec::with_capacity(request.resources.len());
        for res in request.resources {
            let keys: Option<Vec<String>> = res.configuration_keys.map(|k| k.iter().map(|s| s.to_string()).collect());
            let wanted = |n: &str| keys.as_ref().is_none_or(|k| k.is_empty() || k.iter().any(|x| x == n));
            let mut out = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            out.error_message = None;
            match res.resource_type {
                RESOURCE_TOPIC => match self.topic(&res.resource_name) {
                    None if validate_topic_name(&res.resource_name).is_err() => {
                        out.error_code = InvalidTopicException.code();
                        out.error_message = Some(text(format!("'{}' is not a valid topic name", &*res.resource_name)));
                    }
                    None => {
                        out.error_code = UnknownTopicOrPartition.code();
                        out.error_message = Some(text(format!("topic '{}' does not exist", &*res.resource_name)));
                    }
                    Some(t) => {
                        for d in TOPIC_CONFIGS.iter().filter(|d| wanted(d.name)) {
                            let value = self.config.topic_value(&t.record.configs, d.name);
                            let overridden = t.record.configs.contains_key(d.name);
                            let mut e = DescribeConfigsResourceResult::default()
                                .with_name(text(d.name))
                                .with_value(Some(text(value.clone())))
                                .with_config_source(if overridden { SOURCE_TOPIC } else { SOURCE_DEFAULT });
                            if request.include_synonyms {
                                let mut syn = Vec::new();
                                if overridden {
                                    syn.push(DescribeConfigsSynonym::default().with_name(text(d.name)).with_value(Some(text(value))).with_source(SOURCE_TOPIC));
                                }
                                syn.push(
                                    DescribeConfigsSynonym::default()
                                        .with_name(text(d.broker_synonym))
                                        .with_value(Some(text(self.config.topic_default(d.name))))
                                        .with_source(SOURCE_DEFAULT),
                                );
                                e.synonyms = syn;
                            }
                            if version >= 3 {
                                e.config_type = d.config_type as i8;
                                e.documentation = request.include_documentation.then(|| text(d.doc));
                            }
                            out.configs.push(e);
                        }
                    }
                },
                RESOURCE_BROKER => {
                    let me = self.config.node_id.to_string();
                    if !res.resource_name.is_empty() && *res.resource_name != *me {
                        out.error_code = InvalidRequest.code();
                        out.error_message = Some(text(format!("this is broker {me}, not broker '{}'", &*res.resource_name)));
                    } else {
                        // As Kafka: a value set at start is STATIC_BROKER_CONFIG, one left
                        // at its default DEFAULT_CONFIG. The broker's identity is always set.
                        let defaults: BTreeMap<&str, String> =
                            crate::config::BrokerConfig::default().describe().into_iter().map(|(n, v, ..)| (n, v)).collect();
                        for (name, value, ty, doc) in self.config.describe().into_iter().filter(|(n, ..)| wanted(n)) {
                            let identity = matches!(name, "node.id" | "broker.id" | "advertised.listeners");
                            let source = if !identity && defaults.get(name) == Some(&value) { SOURCE_DEFAULT } else { SOURCE_STATIC_BROKER };
                            let mut e = DescribeConfigsResourceResult::default()
                                .with_name(text(name))
                                .with_value(Some(text(value.clone())))
                                .with_read_only(true)
                                .with_config_source(source);
                            if request.include_synonyms {
                                e.synonyms = vec![DescribeConfigsSynonym::default().with_name(text(name)).with_value(Some(text(value))).with_source(source)];
                            }
                            if version >= 3 {
                                e.config_type = ty as i8;
                                e.documentation = request.include_documentation.then(|| text(doc));
                            }
                            out.configs.push(e);
                        }
                    }
                }
                other => {
                    out.error_code = InvalidRequest.code();
                    out.error_message = Some(text(format!("resource type {other} is not supported; use 2 (topic) or 4 (broker)")));
                }
            }
            results.push(out);
        }
        DescribeConfigsResponse::default().with_results(results)
    }

    /// InitProducerId's refusal of a request, if it is refused.
    pub fn init_producer_id_refusal(request: &InitProducerIdRequest) -> Option<InitProducerIdResponse> {
        let mut response = InitProducerIdResponse::default();
        response.producer_id = (-1).into();
        response.producer_epoch = -1;
        if request.transactional_id.as_ref().is_some_and(|id| id.is_empty()) {
            response.error_code = InvalidRequest.code();
            return Some(response);
        }
        if request.transactional_id.is_some() {
            response.error_code = TransactionalIdAuthorizationFailed.code();
            tracing::info!("InitProducerId with a transactional id refused: transactions are not supported yet");
            return Some(response);
        }
        None
    }

    pub(super) fn init_producer_id(&self, request: InitProducerIdRequest, _version: i16) -> InitProducerIdResponse {
        if let Some(refused) = Self::init_producer_id_refusal(&request) {
            return refused;
        }
        let mut response = InitProducerIdResponse::default();
        // A non-transactional producer always gets a fresh id at epoch 0,
        // as Kafka does; ids are reserved on disk in blocks so that no id is
        // handed out twice across restarts.
        let mut state = self.write_state();
        if state.next_producer_id >= state.catalog.producer_id_reserved {
            let mut catalog = state.catalog.clone();
            catalog.producer_id_reserved = state.next_producer_id + PRODUCER_ID_BLOCK;
            if let Err(e) = catalog.save(&*self.disk) {
                tracing::error!(error = %e, "cannot reserve producer ids");
                response.error_code = KafkaStorageError.code();
                response.producer_id = (-1).into();
                response.producer_epoch = -1;
                return response;
            }
            state.catalog = catalog;
        }
        let id = state.next_producer_id;
        state.next_producer_id += 1;
        assert!(state.next_producer_id <= state.catalog.producer_id_reserved);
        response.producer_id = id.into();
        response.producer_epoch = 0;
        response
    }
}
