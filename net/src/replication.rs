//! Partition replication between brokers (`chronik.v1.Replica`).
//!
//! - The leader answers followers' fetches ([`ReplicaService`]), holding a
//!   fetch that finds nothing new until records arrive (a long poll).
//! - Each followed partition has a fetcher task ([`run_replication`] starts
//!   and stops them as the controller's image moves leaders): it fetches,
//!   appends the batches as they are, truncates where its log diverged from
//!   the leader's, and waits for its own fsync before the next fetch, which
//!   reports its durable end (the leader's high watermark counts only
//!   fsynced replicas).
//! - [`run_isr`] proposes the ISR changes the partitions led here need.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chronik_core::broker::replication::{FollowerStep, ReplicaAnswer, ReplicaFetch};
use chronik_core::cluster::image::Applied;
use chronik_proto::grpc::replica_client::ReplicaClient;
use chronik_proto::grpc::replica_fetch_response::Outcome;
use chronik_proto::grpc::{replica_server, EpochEnd, Records, ReplicaFetchRequest, ReplicaFetchResponse};
use chronik_proto::ResponseError;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::raft::node::Controller;
use crate::Shared;

/// The most a leader holds a fetch that finds nothing new.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// The most record bytes one replica fetch carries.
const MAX_BYTES: u32 = 8 << 20;
/// A replica fetch answered later than this has failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a follower waits before fetching again after a failure.
const RETRY: Duration = Duration::from_millis(100);
/// The largest message either side accepts (a fetch plus framing).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The leader's side: `chronik.v1.Replica`.
pub struct ReplicaService {
    shared: Arc<Shared>,
}

impl ReplicaService {
    /// Wrap it in `ReplicaServer` with [`MAX_MESSAGE_BYTES`] limits.
    pub fn new(shared: Arc<Shared>) -> ReplicaService {
        ReplicaService { shared }
    }
}

#[tonic::async_trait]
impl replica_server::Replica for ReplicaService {
    async fn fetch(&self, request: Request<ReplicaFetchRequest>) -> Result<Response<ReplicaFetchResponse>, Status> {
        let r = request.into_inner();
        let topic_id = Uuid::from_slice(&r.topic_id).map_err(|e| Status::invalid_argument(format!("bad topic id: {e}")))?;
        let fetch = ReplicaFetch {
            topic_id,
            partition: r.partition,
            replica: r.replica_id,
            leader_epoch: r.leader_epoch,
            fetch_offset: r.fetch_offset,
            last_fetched_epoch: r.last_fetched_epoch,
            durable_end: r.durable_end,
            max_bytes: r.max_bytes.min(MAX_BYTES) as usize,
        };
        let deadline = Instant::now() + Duration::from_millis(r.max_wait_ms as u64).min(MAX_WAIT);
        let shared = &self.shared;
        loop {
            let arrived = shared.records_arrived.notified();
            let changed = shared.cluster_changed.notified();
            tokio::pin!(arrived, changed);
            arrived.as_mut().enable();
            changed.as_mut().enable();
            let (answer, moved) = shared.broker.replica_fetch(&fetch);
            if moved {
                // Producers waiting for acks=all look again.
                shared.hw_advanced.notify_waiters();
            }
            let empty = matches!(&answer, ReplicaAnswer::Records { records, .. } if records.is_empty());
            if !empty || Instant::now() >= deadline {
                return Ok(Response::new(encode(answer)));
            }
            tokio::select! {
                biased;
                _ = shared.stopped() => return Err(Status::unavailable("the broker is stopping")),
                _ = &mut arrived => {}
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

fn encode(answer: ReplicaAnswer) -> ReplicaFetchResponse {
    let mut out = ReplicaFetchResponse::default();
    match answer {
        ReplicaAnswer::Records { records, high_watermark, log_start_offset, log_end_offset } => {
            out.outcome = Some(Outcome::Records(Records { batches: records.into(), high_watermark, log_start_offset, log_end_offset }));
        }
        ReplicaAnswer::Diverging { epoch, end_offset } => out.outcome = Some(Outcome::Diverging(EpochEnd { epoch, end_offset })),
        ReplicaAnswer::StartAt { log_start_offset } => out.outcome = Some(Outcome::StartAt(log_start_offset)),
        ReplicaAnswer::Refused(e, m) => {
            out.error_code = e.code() as i32;
            out.error_message = m;
        }
    }
    out
}

fn decode(r: ReplicaFetchResponse) -> ReplicaAnswer {
    if r.error_code != 0 {
        let e = i16::try_from(r.error_code).ok().and_then(ResponseError::try_from_code).unwrap_or(ResponseError::UnknownServerError);
        return ReplicaAnswer::Refused(e, r.error_message);
    }
    match r.outcome {
        Some(Outcome::Records(x)) => ReplicaAnswer::Records {
            records: x.batches.to_vec(),
            high_watermark: x.high_watermark,
            log_start_offset: x.log_start_offset,
            log_end_offset: x.log_end_offset,
        },
        Some(Outcome::Diverging(d)) => ReplicaAnswer::Diverging { epoch: d.epoch, end_offset: d.end_offset },
        Some(Outcome::StartAt(s)) => ReplicaAnswer::StartAt { log_start_offset: s },
        None => ReplicaAnswer::Refused(ResponseError::UnknownServerError, "an empty answer".into()),
    }
}

/// One followed partition at one leader epoch.
type FollowKey = (Uuid, i32, i32);

/// Starts a fetcher for each partition this broker follows and stops the
/// ones it no longer follows (at that epoch), whenever the image changes.
pub async fn run_replication(shared: Arc<Shared>, controller: Controller) {
    let mut tasks: BTreeMap<FollowKey, JoinHandle<()>> = BTreeMap::new();
    loop {
        let changed = shared.cluster_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let followed = shared.broker.followed();
        let wanted: BTreeMap<FollowKey, _> = followed.into_iter().map(|f| ((f.topic_id, f.partition.index, f.leader_epoch), f)).collect();
        tasks.retain(|key, task| {
            let keep = wanted.contains_key(key) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, f) in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let addr = controller.sm.with_image(|img| img.brokers.get(&f.leader).map(|b| b.rpc.clone()));
            let Some(addr) = addr else {
                tracing::warn!(topic = %f.partition.topic, partition = f.partition.index, leader = f.leader, "the partition's leader has no known address");
                continue;
            };
            tasks.insert(key, tokio::spawn(follow(shared.clone(), f, addr)));
        }
        tokio::select! {
            biased;
            _ = shared.stopped() => break,
            _ = &mut changed => {}
            // A fetcher that ended (its log went offline) is looked at again.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    for task in tasks.values() {
        task.abort();
    }
}

/// Replicates one partition from its leader until this broker stops
/// following it at this epoch.
async fn follow(shared: Arc<Shared>, f: chronik_core::broker::replication::Followed, addr: String) {
    let broker = &shared.broker;
    let (topic, index) = (f.partition.topic.clone(), f.partition.index);
    let mut client = match crate::raft::network::channel(&addr) {
        Ok(c) => ReplicaClient::new(c).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES),
        Err(e) => {
            tracing::error!(%topic, partition = index, error = %e, "cannot reach the partition's leader");
            return;
        }
    };
    let me = broker.config().node_id;
    broker.begin_following(&f);
    let mut failures = 0u32;
    loop {
        if shared.is_stopping() {
            return;
        }
        let Some((fetch_offset, last_fetched_epoch, durable_end)) = broker.replica_position(&f.partition, f.leader_epoch) else { return };
        let request = ReplicaFetchRequest {
            topic_id: f.topic_id.as_bytes().to_vec().into(),
            partition: index,
            replica_id: me,
            leader_epoch: f.leader_epoch,
            fetch_offset,
            last_fetched_epoch,
            durable_end,
            max_bytes: MAX_BYTES,
            max_wait_ms: MAX_WAIT.as_millis() as u32,
        };
        let answer = match fetch(&mut client, request).await {
            Ok(a) => a,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::info!(%topic, partition = index, leader = f.leader, error = %e, failures, "replica fetch failed; retrying");
                }
                pause(&shared, RETRY).await;
                continue;
            }
        };
        let step = match broker.follower_step(&f.partition, answer) {
            Ok(Some(step)) => step,
            Ok(None) => continue,
            Err(refusal) => {
                // The leader may not have applied the image that made it
                // leader yet, or a newer one moved leadership: try again.
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::info!(%topic, partition = index, leader = f.leader, %refusal, "the leader refused a replica fetch; retrying");
                }
                pause(&shared, RETRY).await;
                continue;
            }
        };
        failures = 0;
        let appended = matches!(&step, FollowerStep::Append { records, .. } if !records.is_empty());
        match broker.follower_apply(&f.partition, f.leader_epoch, step) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(%topic, partition = index, error = %e, "cannot apply the leader's batches; replication of this partition stops");
                return;
            }
        }
        if appended {
            shared.appended.notify_one();
            wait_durable(&shared, &f).await;
        }
    }
}

async fn fetch(client: &mut ReplicaClient<Channel>, request: ReplicaFetchRequest) -> Result<ReplicaAnswer, String> {
    let mut request = Request::new(request);
    request.set_timeout(FETCH_TIMEOUT);
    match tokio::time::timeout(FETCH_TIMEOUT, client.fetch(request)).await {
        Ok(Ok(r)) => Ok(decode(r.into_inner())),
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
    }
}

/// Waits (a bounded time) until the follower's log is fsynced to its end,
/// so the next fetch reports it durable.
async fn wait_durable(shared: &Shared, f: &chronik_core::broker::replication::Followed) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let flushed = shared.hw_advanced.notified();
        tokio::pin!(flushed);
        flushed.as_mut().enable();
        let done = match f.partition.lock_log().as_ref() {
            Ok(log) => log.offline().is_some() || log.durable_end() >= log.log_end_offset(),
            Err(_) => true,
        };
        if done {
            return;
        }
        tokio::select! {
            biased;
            _ = shared.stopped() => return,
            _ = &mut flushed => {}
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

async fn pause(shared: &Shared, d: Duration) {
    tokio::select! {
        biased;
        _ = shared.stopped() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Proposes the ISR changes the partitions this broker leads need, a few
/// times a second.
pub async fn run_isr(shared: Arc<Shared>, controller: Controller) {
    let tick = Duration::from_millis((shared.broker.config().replica_lag_time_max_ms as u64 / 4).clamp(50, 500));
    loop {
        tokio::select! {
            biased;
            _ = shared.stopped() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        for command in shared.broker.isr_changes() {
            let chronik_core::cluster::image::Command::AlterPartition { topic, partition, leader_epoch, .. } = &command else { continue };
            let (topic, partition, leader_epoch) = (topic.clone(), *partition, *leader_epoch);
            let outcome = tokio::select! {
                biased;
                _ = shared.stopped() => return,
                r = controller.propose(command) => r,
            };
            match outcome {
                Ok((Applied::Done, _)) => {}
                Ok((other, _)) => {
                    tracing::info!(%topic, partition, outcome = ?other, "the controller refused an ISR change");
                    shared.broker.isr_change_failed(&topic, partition, leader_epoch);
                }
                Err(e) => {
                    tracing::info!(%topic, partition, error = %e, "could not propose an ISR change; will retry");
                    shared.broker.isr_change_failed(&topic, partition, leader_epoch);
                }
            }
        }
    }
}
