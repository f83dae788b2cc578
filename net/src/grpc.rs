//! The public gRPC admin service (`proto/chronik/v1/admin.proto`): topics,
//! configs, the cluster, groups and search, for tools that speak gRPC rather
//! than Kafka. Runs in both builds (tonic is madsim's under `--cfg madsim`).
//!
//! Each call maps onto the same broker operation the Kafka APIs use, so it
//! validates and persists the same way; a refusal becomes a gRPC status
//! whose message names the problem.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chronik_core::broker::ops::{Refusal, TopicInfo};
use chronik_core::search::service::SimpleSearch;
use chronik_proto::grpc::admin_server::{Admin, AdminServer};
use chronik_proto::grpc::*;
use chronik_proto::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{CreateTopicsRequest, DeleteTopicsRequest, IncrementalAlterConfigsRequest, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use tonic::{Request, Response, Status};

use crate::search::{hit_message, search_status, Searcher};
use crate::Shared;

pub struct AdminService {
    shared: Arc<Shared>,
    search: Option<Arc<Searcher>>,
}

impl AdminService {
    /// `search` answers `Search`; without it (no search indexes) the call is
    /// `UNAVAILABLE`.
    pub fn new(shared: Arc<Shared>, search: Option<Arc<Searcher>>) -> AdminService {
        AdminService { shared, search }
    }
}

fn status((error, message): Refusal) -> Status {
    use ResponseError::*;
    tracing::info!(?error, %message, "admin call refused");
    match error {
        UnknownTopicOrPartition | UnknownTopicId | GroupIdNotFound => Status::not_found(message),
        TopicAlreadyExists => Status::already_exists(message),
        KafkaStorageError | NotLeaderOrFollower | NotController | CoordinatorNotAvailable => Status::unavailable(message),
        InvalidTopicException | InvalidPartitions | InvalidReplicationFactor | InvalidReplicaAssignment | InvalidConfig | InvalidRequest => {
            Status::invalid_argument(message)
        }
        _ => Status::failed_precondition(message),
    }
}

fn topic_description(t: TopicInfo) -> TopicDescription {
    TopicDescription {
        name: t.record.name.clone(),
        topic_id: t.record.id.simple().to_string(),
        internal: t.internal,
        partitions: t
            .partitions
            .into_iter()
            .map(|p| PartitionDescription {
                partition: p.partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas,
                isr: p.isr,
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                log_end_offset: p.log_end_offset,
                offline_reason: p.offline.unwrap_or_default(),
            })
            .collect(),
        configs: t.configs.into_iter().collect(),
        overrides: t.record.configs.into_iter().collect(),
    }
}

fn sorted(map: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

/// A Kafka answer's error as a refusal, `None` for success.
fn refusal(code: i16, message: Option<&StrBytes>) -> Option<Refusal> {
    (code != 0).then(|| {
        let e = ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
        (e, message.map(|m| m.to_string()).unwrap_or_else(|| format!("{e:?}")))
    })
}

/// In a cluster, topic changes go through the controller as the Kafka
/// requests that make them do (`cluster_admin`), with this service's
/// idempotence on top.
impl AdminService {
    async fn create_in_cluster(&self, r: &CreateTopicRequest) -> Result<(chronik_core::broker::catalog::TopicRecord, bool), Refusal> {
        let broker = &self.shared.broker;
        let partitions = if r.partitions <= 0 { broker.config().num_partitions } else { r.partitions };
        let configs = sorted(r.configs.clone());
        if let Some(t) = broker.topic(&r.name) {
            if t.record.partitions == partitions && t.record.configs == configs {
                return Ok((t.record.clone(), false));
            }
            return Err((ResponseError::TopicAlreadyExists, format!("topic '{}' already exists with other settings ({} partitions, overrides {:?})", r.name, t.record.partitions, t.record.configs)));
        }
        let topic = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(r.name.clone())))
            .with_num_partitions(partitions)
            .with_replication_factor(if r.replication_factor <= 0 { -1 } else { r.replication_factor as i16 })
            .with_configs(configs.iter().map(|(k, v)| CreatableTopicConfig::default().with_name(StrBytes::from_string(k.clone())).with_value(Some(StrBytes::from_string(v.clone())))).collect());
        let req = CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(10_000).with_validate_only(r.validate_only);
        let ResponseKind::CreateTopics(answer) = crate::cluster_admin::handle(&self.shared, 7, RequestKind::CreateTopics(req)).await else { unreachable!("creates answer creates") };
        let t = &answer.topics[0];
        if let Some(refused) = refusal(t.error_code, t.error_message.as_ref()) {
            return Err(refused);
        }
        let record = broker.topic(&r.name).map(|t| t.record.clone()).unwrap_or(chronik_core::broker::catalog::TopicRecord {
            name: r.name.clone(),
            id: t.topic_id,
            partitions,
            configs,
            created_index: None,
        });
        Ok((record, true))
    }

    async fn alter_in_cluster(&self, r: &AlterTopicConfigsRequest) -> Result<BTreeMap<String, String>, Refusal> {
        use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
        if let Some(both) = r.delete.iter().find(|n| r.set.contains_key(*n)) {
            return Err((ResponseError::InvalidRequest, format!("config '{both}' is both set and deleted")));
        }
        let text = |s: &str| StrBytes::from_string(s.to_string());
        let mut configs: Vec<AlterableConfig> = sorted(r.set.clone()).iter().map(|(k, v)| AlterableConfig::default().with_name(text(k)).with_config_operation(0).with_value(Some(text(v)))).collect();
        configs.extend(r.delete.iter().map(|k| AlterableConfig::default().with_name(text(k)).with_config_operation(1)));
        let resource = AlterConfigsResource::default().with_resource_type(2).with_resource_name(text(&r.topic)).with_configs(configs);
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]).with_validate_only(r.validate_only);
        let ResponseKind::IncrementalAlterConfigs(answer) = crate::cluster_admin::handle(&self.shared, 1, RequestKind::IncrementalAlterConfigs(req)).await else {
            unreachable!("alters answer alters")
        };
        let res = &answer.responses[0];
        if let Some(refused) = refusal(res.error_code, res.error_message.as_ref()) {
            return Err(refused);
        }
        self.shared.broker.topic(&r.topic).map(|t| t.record.configs.clone()).ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("topic '{}' does not exist", r.topic)))
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(&self, request: Request<CreateTopicRequest>) -> Result<Response<CreateTopicResponse>, Status> {
        let r = request.into_inner();
        let broker = &self.shared.broker;
        let (record, created) = if self.shared.cluster.get().is_some() {
            self.create_in_cluster(&r).await.map_err(status)?
        } else {
            broker.create_topic_idempotent(&r.name, r.partitions, r.replication_factor, sorted(r.configs), r.validate_only).map_err(status)?
        };
        if created && !r.validate_only {
            tracing::info!(topic = %record.name, partitions = record.partitions, "created topic (admin API)");
        }
        let topic = match broker.topic(&record.name) {
            Some(t) if !r.validate_only => broker.describe_topic(&t),
            // validate_only: describe what would be created.
            _ => TopicInfo { internal: false, partitions: Vec::new(), configs: BTreeMap::new(), record },
        };
        Ok(Response::new(CreateTopicResponse { topic: Some(topic_description(topic)), created }))
    }

    async fn delete_topic(&self, request: Request<DeleteTopicRequest>) -> Result<Response<DeleteTopicResponse>, Status> {
        let r = request.into_inner();
        let deleted = if self.shared.cluster.get().is_some() {
            let req = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(StrBytes::from_string(r.name.clone()))]).with_timeout_ms(10_000);
            let ResponseKind::DeleteTopics(answer) = crate::cluster_admin::handle(&self.shared, 5, RequestKind::DeleteTopics(req)).await else { unreachable!("deletes answer deletes") };
            let t = &answer.responses[0];
            match refusal(t.error_code, t.error_message.as_ref()) {
                None => true,
                Some((ResponseError::UnknownTopicOrPartition, _)) => false,
                Some(refused) => return Err(status(refused)),
            }
        } else {
            self.shared.broker.delete_topic_by_name(&r.name).map_err(status)?
        };
        if !deleted && !r.allow_missing {
            return Err(Status::not_found(format!("topic '{}' does not exist", r.name)));
        }
        Ok(Response::new(DeleteTopicResponse { deleted }))
    }

    async fn describe_topics(&self, request: Request<DescribeTopicsRequest>) -> Result<Response<DescribeTopicsResponse>, Status> {
        let r = request.into_inner();
        let broker = &self.shared.broker;
        let topics = if r.names.is_empty() {
            broker.topics().into_iter().filter(|t| r.include_internal || !chronik_core::broker::is_internal(&t.record.name)).collect()
        } else {
            let mut out = Vec::with_capacity(r.names.len());
            for name in &r.names {
                out.push(broker.topic(name).ok_or_else(|| Status::not_found(format!("topic '{name}' does not exist")))?);
            }
            out
        };
        let topics = topics.iter().map(|t| topic_description(broker.describe_topic(t))).collect();
        Ok(Response::new(DescribeTopicsResponse { topics }))
    }

    async fn describe_cluster(&self, _request: Request<DescribeClusterRequest>) -> Result<Response<DescribeClusterResponse>, Status> {
        let broker = &self.shared.broker;
        let (brokers, controller_id) = broker.brokers_and_controller(true);
        let brokers = brokers.into_iter().map(|(node_id, host, kafka_port, fenced)| BrokerDescription { node_id, host, kafka_port, fenced }).collect();
        Ok(Response::new(DescribeClusterResponse { cluster_id: broker.client_cluster_id().unwrap_or_default(), controller_id, brokers }))
    }

    async fn alter_topic_configs(&self, request: Request<AlterTopicConfigsRequest>) -> Result<Response<AlterTopicConfigsResponse>, Status> {
        let r = request.into_inner();
        // (validate_only computes the overrides without changing anything,
        // the same in a cluster.)
        let overrides = if self.shared.cluster.get().is_some() && !r.validate_only {
            self.alter_in_cluster(&r).await.map_err(status)?
        } else {
            self.shared.broker.alter_topic_configs(&r.topic, &sorted(r.set), &r.delete, r.validate_only).map_err(status)?
        };
        Ok(Response::new(AlterTopicConfigsResponse { overrides: overrides.into_iter().collect() }))
    }

    async fn list_groups(&self, request: Request<ListGroupsRequest>) -> Result<Response<ListGroupsResponse>, Status> {
        let r = request.into_inner();
        let mut groups: Vec<GroupListing> = self
            .shared
            .broker
            .list_groups(&r.states)
            .into_iter()
            .map(|g| GroupListing { group_id: g.group_id, protocol_type: g.protocol_type, state: g.state, r#type: g.group_type })
            .collect();
        if let (false, Some(cluster)) = (r.local_only, self.shared.cluster.get()) {
            let me = self.shared.broker.config().node_id;
            let members: Vec<(i32, String)> =
                cluster.controller.sm.with_image(|i| i.brokers.values().filter(|b| !b.fenced && b.id != me).map(|b| (b.id, b.rpc.clone())).collect());
            for (id, rpc) in members {
                let ask = ListGroupsRequest { states: r.states.clone(), local_only: true };
                let answer = async {
                    let channel = crate::raft::network::channel(&rpc).map_err(Status::internal)?;
                    let mut client = chronik_proto::grpc::admin_client::AdminClient::new(channel);
                    let timeout = std::time::Duration::from_secs(5);
                    let mut req = Request::new(ask);
                    req.set_timeout(timeout);
                    // (The deadline travels to the peer; a frozen peer never answers.)
                    tokio::time::timeout(timeout, client.list_groups(req)).await.unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer within 5 s")))
                };
                match answer.await {
                    Ok(a) => groups.extend(a.into_inner().groups),
                    Err(s) => return Err(Status::unavailable(format!("broker {id} ({rpc}) did not list its groups: {}", s.message()))),
                }
            }
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            groups.dedup_by(|a, b| a.group_id == b.group_id);
        }
        Ok(Response::new(ListGroupsResponse { groups }))
    }

    async fn rebuild_search_index(&self, request: Request<RebuildSearchIndexRequest>) -> Result<Response<RebuildSearchIndexResponse>, Status> {
        let r = request.into_inner();
        let Some(search) = &self.search else {
            return Err(Status::unavailable("this broker runs no search indexer"));
        };
        let brokers = search.rebuild(&r.topic, r.local_only).await.map_err(search_status)?;
        Ok(Response::new(RebuildSearchIndexResponse { brokers }))
    }

    async fn search(&self, request: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let Some(search) = self.search.clone() else {
            return Err(Status::unavailable("this broker runs no search indexer"));
        };
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let simple = SimpleSearch {
            q: nonempty(r.query),
            limit: r.limit.map(|n| n as usize),
            from: r.from.map(|n| n as usize),
            sort: nonempty(r.sort),
            order: nonempty(r.order),
            from_ts: r.from_ts,
            to_ts: r.to_ts,
            partitions: (!r.partitions.is_empty()).then_some(r.partitions),
        };
        let req = simple.request().map_err(|e| Status::invalid_argument(format!("{}: {}", e.kind, e.reason)))?;
        let answer = search.search(&r.topic, req).await.map_err(search_status)?;
        let hits = answer.hits.iter().map(hit_message).collect();
        let failures = answer.failures.iter().map(|f| PartitionFailure { partition: f.partition, node: f.node, reason: f.reason.clone() }).collect();
        Ok(Response::new(SearchResponse {
            total: answer.total,
            hits,
            took_ms: started.elapsed().as_millis() as u64,
            partitions: answer.partitions as u32,
            failures,
        }))
    }
}

/// The admin service's listener, bound at start so that a taken port is a
/// clear start-up error (the simulated transport binds when serving).
pub struct RpcListener {
    #[cfg(not(madsim))]
    listener: tokio::net::TcpListener,
    pub addr: std::net::SocketAddr,
}

pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<RpcListener> {
    #[cfg(not(madsim))]
    {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(RpcListener { listener, addr })
    }
    #[cfg(madsim)]
    {
        Ok(RpcListener { addr })
    }
}

/// Serves the admin service (and, on a controller, the Raft and
/// controller services) until the broker stops.
pub async fn serve(
    listener: RpcListener,
    shared: Arc<Shared>,
    search: Option<Arc<Searcher>>,
    live: Option<Arc<chronik_core::search::live::Live>>,
    controller: Option<crate::raft::node::Controller>,
) {
    let (raft, proposals) = match &controller {
        Some(c) => {
            let (r, p) = c.services();
            let limit = crate::raft::network::MAX_MESSAGE_BYTES;
            (
                Some(chronik_proto::grpc::raft_server::RaftServer::new(r).max_decoding_message_size(limit).max_encoding_message_size(limit)),
                Some(chronik_proto::grpc::controller_server::ControllerServer::new(p)),
            )
        }
        None => (None, None),
    };
    let replicas = controller.as_ref().map(|_| {
        let limit = crate::replication::MAX_MESSAGE_BYTES;
        chronik_proto::grpc::replica_server::ReplicaServer::new(crate::replication::ReplicaService::new(shared.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    });
    // Other brokers' parts of cluster-wide searches and live subscriptions.
    let shards = match (&controller, &search, live) {
        (Some(_), Some(search), Some(live)) => {
            let limit = crate::search::MAX_MESSAGE_BYTES;
            Some(
                chronik_proto::grpc::shards_server::ShardsServer::new(crate::search::ShardService::new(shared.clone(), search.service().clone(), live))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            )
        }
        _ => None,
    };
    let service = AdminServer::new(AdminService::new(shared.clone(), search));
    let stop = async move { shared.stopped().await };
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .add_optional_service(raft)
        .add_optional_service(proposals)
        .add_optional_service(replicas)
        .add_optional_service(shards);
    // Without TCP_NODELAY a small answer (a replica fetch's, a vote's) waits
    // for the peer's delayed ACK: ~40 ms on every acks=all write in a
    // cluster. (tonic sets it on the connections it accepts itself, not on
    // ours.)
    #[cfg(not(madsim))]
    let served = {
        let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener.listener), |s| {
            s.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        });
        server.serve_with_incoming_shutdown(incoming, stop).await
    };
    #[cfg(madsim)]
    let served = server.serve_with_shutdown(listener.addr, stop).await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the gRPC admin service failed");
    }
}
