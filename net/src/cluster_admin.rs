//! Kafka admin requests that a cluster member answers through the
//! controller quorum: topic creation and deletion (also auto-creation on
//! Metadata), new partitions, and producer ids from the quorum's blocks.
//! `chronik_core::broker::cluster_admin` plans each request and builds its
//! answer; this module proposes the commands and waits until this broker
//! has applied them, so a Metadata right after the answer shows the change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chronik_core::broker::ops::Refusal;
use chronik_core::broker::Broker;
use chronik_core::cluster::image::{Applied, Command};
use chronik_proto::ResponseError::*;
use chronik_core::group::OFFSETS_TOPIC;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{InitProducerIdResponse, MetadataRequest, RequestKind, ResponseKind};
use tokio::time::Instant;

use crate::raft::node::{Controller, ProposeError};
use crate::Shared;

/// How many producer ids a broker takes from the quorum at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// How long an answer waits for this broker to apply its own change.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// A cluster member's handle on the quorum.
pub struct Cluster {
    pub controller: Controller,
    /// Producer ids taken from the quorum and not handed out yet: [next, end).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// A proposal to create `__consumer_offsets` is under way.
    creating_offsets: AtomicBool,
}

impl Cluster {
    pub fn new(controller: Controller) -> Cluster {
        Cluster { controller, producer_ids: tokio::sync::Mutex::new((0, 0)), creating_offsets: AtomicBool::new(false) }
    }
}

/// Has the controller create `__consumer_offsets` if its image lacks it;
/// FindCoordinator answers `COORDINATOR_NOT_AVAILABLE` meanwhile and the
/// client asks again, as with Kafka. One attempt at a time, at most one a
/// second; a refusal (too few live brokers for its replication factor) is
/// logged and tried again at a later FindCoordinator.
pub fn ensure_offsets_topic(shared: &Arc<Shared>) {
    let Some(cluster) = shared.cluster.get() else { return };
    if cluster.controller.sm.with_image(|i| i.topics.contains_key(OFFSETS_TOPIC)) || cluster.creating_offsets.swap(true, Ordering::SeqCst) {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let cluster = shared.cluster.get().expect("checked above");
        let broker = &shared.broker;
        let group = &broker.config().group;
        let configs = chronik_core::group::OFFSETS_TOPIC_CONFIGS
            .map(|(k, v)| CreatableTopicConfig::default().with_name(k.to_string().into()).with_value(Some(v.to_string().into())));
        let spec = CreatableTopic::default()
            .with_num_partitions(group.offsets_topic_partitions)
            .with_replication_factor(group.offsets_topic_replication_factor as i16)
            .with_configs(configs.to_vec());
        let (image, _) = cluster.controller.sm.image();
        let outcome = match broker.plan_topic(&image, OFFSETS_TOPIC, &spec) {
            Ok(plan) => match cluster.controller.propose(plan.command).await {
                Ok((applied, _)) => chronik_core::broker::cluster_admin::refusal_error(&applied).map_or(Ok(true), Err),
                Err(e) => Err(unavailable(e)),
            },
            Err((TopicAlreadyExists, _)) => Ok(false),
            Err(refusal) => Err(refusal),
        };
        match outcome {
            Ok(true) => tracing::info!(
                partitions = group.offsets_topic_partitions,
                replication_factor = group.offsets_topic_replication_factor,
                "created the internal topic {OFFSETS_TOPIC} through the controller"
            ),
            Ok(false) | Err((TopicAlreadyExists, _)) => {}
            Err((e, message)) => {
                tracing::warn!(error = ?e, %message, "cannot create {OFFSETS_TOPIC} yet; consumer groups wait for it (see --offsets-topic-replication-factor)");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        cluster.creating_offsets.store(false, Ordering::SeqCst);
    });
}

/// Whether a request goes through the controller in a cluster.
pub fn handles(body: &RequestKind) -> bool {
    matches!(
        body,
        RequestKind::CreateTopics(_)
            | RequestKind::DeleteTopics(_)
            | RequestKind::CreatePartitions(_)
            | RequestKind::InitProducerId(_)
            | RequestKind::Metadata(_)
            | RequestKind::AlterConfigs(_)
            | RequestKind::IncrementalAlterConfigs(_)
    )
}

fn unavailable(e: ProposeError) -> Refusal {
    (RequestTimedOut, format!("the controller quorum did not answer: {e}"))
}

/// Proposes `command`; `Ok` once it is applied here too.
async fn propose(shared: &Shared, cluster: &Cluster, command: Command, applied_here: impl Fn(&Broker) -> bool) -> Result<Applied, Refusal> {
    let (applied, _) = cluster.controller.propose(command).await.map_err(unavailable)?;
    if let Some(refusal) = chronik_core::broker::cluster_admin::refusal_error(&applied) {
        return Err(refusal);
    }
    let deadline = Instant::now() + APPLY_WAIT;
    loop {
        let changed = shared.cluster_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if applied_here(&shared.broker) {
            return Ok(applied);
        }
        tokio::select! {
            biased;
            _ = shared.stopped() => return Ok(applied),
            _ = &mut changed => {}
            // Committed, but slow to reach this broker: answer anyway.
            _ = tokio::time::sleep_until(deadline) => return Ok(applied),
        }
    }
}

pub async fn handle(shared: &Arc<Shared>, version: i16, body: RequestKind) -> ResponseKind {
    let cluster = shared.cluster.get().expect("checked by the caller");
    let broker = &shared.broker;
    match body {
        RequestKind::CreateTopics(request) => {
            let (image, _) = cluster.controller.sm.image();
            let mut outcomes = broker.plan_create_topics(&image, &request);
            if !request.validate_only {
                for outcome in &mut outcomes {
                    let Ok(plan) = outcome else { continue };
                    let name = plan.name.clone();
                    if let Err(refusal) = propose(shared, cluster, plan.command.clone(), |b| b.topic(&name).is_some()).await {
                        *outcome = Err(refusal);
                    }
                }
            }
            ResponseKind::CreateTopics(broker.create_topics_answer(&request, outcomes, version))
        }
        RequestKind::DeleteTopics(request) => {
            let (mut response, deletes) = broker.plan_delete_topics(request, version);
            for (slot, name) in deletes {
                let command = Command::DeleteTopic { name: name.clone() };
                if let Err(refusal) = propose(shared, cluster, command, |b| b.topic(&name).is_none()).await {
                    Broker::delete_failed(&mut response, slot, refusal, version);
                }
            }
            ResponseKind::DeleteTopics(response)
        }
        RequestKind::CreatePartitions(request) => {
            let (image, _) = cluster.controller.sm.image();
            let plans = broker.plan_create_partitions(&image, &request);
            let mut outcomes = Vec::with_capacity(plans.len());
            for plan in plans {
                outcomes.push(match plan {
                    Err(refusal) => Err(refusal),
                    Ok(_) if request.validate_only => Ok(()),
                    Ok(command) => {
                        let Command::CreatePartitions { name, assignment } = &command else { unreachable!("planned as CreatePartitions") };
                        let (name, count) = (name.clone(), image.topics.get(name).map_or(0, |t| t.partitions.len() + assignment.len()));
                        propose(shared, cluster, command, |b| b.topic(&name).is_some_and(|t| t.partitions.len() >= count)).await.map(|_| ())
                    }
                });
            }
            ResponseKind::CreatePartitions(Broker::create_partitions_answer(&request, outcomes))
        }
        RequestKind::InitProducerId(request) => {
            if let Some(refused) = Broker::init_producer_id_refusal(&request) {
                return ResponseKind::InitProducerId(refused);
            }
            let mut response = InitProducerIdResponse::default();
            match next_producer_id(cluster).await {
                Ok(id) => {
                    response.producer_id = id.into();
                    response.producer_epoch = 0;
                }
                Err((e, message)) => {
                    tracing::warn!(error = %message, "cannot hand out a producer id");
                    response.error_code = e.code();
                    response.producer_id = (-1).into();
                    response.producer_epoch = -1;
                }
            }
            ResponseKind::InitProducerId(response)
        }
        RequestKind::Metadata(request) => ResponseKind::Metadata(metadata(shared, cluster, request, version).await),
        RequestKind::AlterConfigs(request) => {
            let outcomes = propose_all(shared, cluster, broker.plan_alter_configs(&request)).await;
            ResponseKind::AlterConfigs(Broker::alter_configs_answer(&request, outcomes))
        }
        RequestKind::IncrementalAlterConfigs(request) => {
            let outcomes = propose_all(shared, cluster, broker.plan_incremental_alter_configs(&request)).await;
            ResponseKind::IncrementalAlterConfigs(Broker::incremental_alter_configs_answer(&request, outcomes))
        }
        other => unreachable!("handles() admits only these requests, got {:?}", std::mem::discriminant(&other)),
    }
}

/// Proposes each planned config change, in order; waits until this broker
/// has applied each.
async fn propose_all(shared: &Shared, cluster: &Cluster, plans: Vec<Result<Option<Command>, Refusal>>) -> Vec<Result<(), Refusal>> {
    let mut out = Vec::with_capacity(plans.len());
    for plan in plans {
        out.push(match plan {
            Err(refusal) => Err(refusal),
            Ok(None) => Ok(()),
            Ok(Some(command)) => {
                let Command::AlterConfigs { name, configs, .. } = &command else { unreachable!("config plans are AlterConfigs") };
                let (name, configs) = (name.clone(), configs.clone());
                propose(shared, cluster, command, |b| b.topic(&name).is_some_and(|t| t.record.configs == configs)).await.map(|_| ())
            }
        });
    }
    out
}

/// A producer id unique in the cluster, from this broker's block (taking a
/// new block from the quorum when it runs out).
async fn next_producer_id(cluster: &Cluster) -> Result<i64, Refusal> {
    let mut ids = cluster.producer_ids.lock().await;
    if ids.0 >= ids.1 {
        let (applied, _) = cluster.controller.propose(Command::AllocateProducerIds { count: PRODUCER_ID_BLOCK }).await.map_err(unavailable)?;
        match applied {
            Applied::ProducerIds { first } => *ids = (first, first + PRODUCER_ID_BLOCK),
            other => return Err((UnknownServerError, format!("the controller refused producer ids: {other:?}"))),
        }
    }
    let id = ids.0;
    ids.0 += 1;
    Ok(id)
}

/// Metadata in a cluster: answered from the image; unknown topics the
/// request may auto-create are proposed to the controller and answered
/// `LEADER_NOT_AVAILABLE` (the client asks again), as Kafka does.
async fn metadata(shared: &Arc<Shared>, cluster: &Cluster, request: MetadataRequest, version: i16) -> kafka_protocol::messages::MetadataResponse {
    let broker = &shared.broker;
    let auto_create = broker.config().auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
    let ResponseKind::Metadata(mut response) = broker.handle(version, RequestKind::Metadata(request)) else { unreachable!("metadata answers metadata") };
    if !auto_create {
        return response;
    }
    if !response.topics.iter().any(|t| t.error_code == UnknownTopicOrPartition.code()) {
        return response;
    }
    let (image, _) = cluster.controller.sm.image();
    for t in &mut response.topics {
        if t.error_code != UnknownTopicOrPartition.code() {
            continue;
        }
        let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else { continue };
        if name == OFFSETS_TOPIC {
            // With its own partitions, replication factor and configs.
            ensure_offsets_topic(shared);
            t.error_code = LeaderNotAvailable.code();
            continue;
        }
        let spec = CreatableTopic::default().with_num_partitions(-1).with_replication_factor(-1);
        match broker.plan_topic(&image, &name, &spec) {
            Ok(plan) => match cluster.controller.propose(plan.command).await {
                Ok((applied, _)) => {
                    if let Some((e, m)) = chronik_core::broker::cluster_admin::refusal_error(&applied).filter(|(e, _)| *e != TopicAlreadyExists) {
                        tracing::info!(topic = %name, error = ?e, message = %m, "auto-creation refused");
                        continue;
                    }
                    tracing::info!(topic = %name, "auto-creating topic");
                    t.error_code = LeaderNotAvailable.code();
                }
                Err(e) => tracing::info!(topic = %name, error = %e, "auto-creation failed"),
            },
            Err((TopicAlreadyExists, _)) => t.error_code = LeaderNotAvailable.code(),
            Err((e, m)) => {
                tracing::info!(topic = %name, error = ?e, message = %m, "auto-creation refused");
                t.error_code = e.code();
            }
        }
    }
    response
}
