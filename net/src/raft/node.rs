//! One member of the controller quorum: its Raft node, its copy of the
//! metadata image, and the `chronik.v1.Controller` service through which
//! brokers propose commands (a follower forwards them to the leader).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chronik_core::cluster::image::{Applied, Command};
use chronik_core::disk::Disk;
use chronik_proto::grpc::controller_client::ControllerClient;
use chronik_proto::grpc::controller_server;
use chronik_proto::grpc::{HeartbeatRequest, HeartbeatResponse, ProposeRequest, ProposeResponse};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};
use tonic::{Request, Response, Status};

use super::network::{channel, Heard, Network, RaftService};
use super::store::{LogStore, StateMachine};
use super::{Cfg, NodeId};

/// How many times a proposal may be forwarded to a (new) leader.
const MAX_HOPS: u32 = 3;
/// How long a proposal may wait to be committed.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a forwarded proposal may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node with `--cluster-id` hears only another cluster before
/// it gives up.
const STRANDED_AFTER: Duration = Duration::from_secs(20);

/// Timing of the controller quorum.
#[derive(Debug, Clone)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming { heartbeat_ms: 150, election_min_ms: 1000, election_max_ms: 2000 }
    }
}

#[derive(Clone)]
pub struct Controller {
    pub id: NodeId,
    pub raft: Raft<Cfg>,
    pub sm: StateMachine,
    /// `--cluster-id`, if the operator named the cluster.
    pub pinned: Option<String>,
    /// On the leader: when each broker was last heard from.
    last_seen: Arc<std::sync::Mutex<BTreeMap<i32, tokio::time::Instant>>>,
    /// What the Raft service has taken and refused.
    heard: Arc<std::sync::Mutex<Heard>>,
}

/// What the liveness task remembers between ticks.
#[derive(Debug, Default)]
pub struct LivenessState {
    /// The term this node has led since, while it leads.
    leader_since: Option<u64>,
    /// The last leader this node knew of.
    last_leader: Option<NodeId>,
}

/// A broker's liveness as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub fenced: bool,
    /// Not registered with this incarnation.
    pub unknown: bool,
}

/// Why a proposal did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// No leader is known, or it could not be reached: retry later.
    #[error("no controller leader is reachable: {0}")]
    Unavailable(String),
    /// This node's Raft has stopped (a storage failure).
    #[error("the controller has stopped: {0}")]
    Fatal(String),
}

impl Controller {
    /// Opens the Raft state under `raft/` on `disk` and starts the node. A
    /// voter that has never run initializes the quorum with `voters` (every
    /// voter does the same, so whichever starts first, they agree).
    pub async fn start(
        id: NodeId,
        voters: BTreeMap<NodeId, String>,
        disk: Arc<dyn Disk>,
        timing: &RaftTiming,
        pinned: Option<String>,
    ) -> anyhow::Result<Controller> {
        let dir = std::path::Path::new("raft");
        let log = LogStore::open(disk.clone(), dir)?;
        let sm = StateMachine::open(disk, dir)?;
        let config = openraft::Config {
            cluster_name: "chronik".into(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            install_snapshot_timeout: 2000,
            // JSON of a byte chunk is ~4x its size: stay well inside gRPC's limits.
            snapshot_max_chunk_size: 256 * 1024,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 500,
            ..Default::default()
        }
        .validate()?;
        if let (Some(want), Some(named)) = (&pinned, sm.cluster_id()) {
            if *want != named {
                anyhow::bail!(
                    "this node's controller state (raft/ in --data-dir) belongs to cluster {named}, not to cluster {want} (--cluster-id): \
                     start it with its own cluster's --cluster-id and --controllers, or with an empty --data-dir"
                );
            }
        }
        let raft = Raft::new(id, Arc::new(config), Network { sm: sm.clone(), pinned: pinned.clone() }, log, sm.clone()).await?;
        if voters.contains_key(&id) && !raft.is_initialized().await? {
            let members: BTreeMap<NodeId, BasicNode> = voters.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(node = id, voters = ?voters.keys().collect::<Vec<_>>(), "initialized the controller quorum"),
                Err(e) => tracing::info!(node = id, error = %e, "controller quorum already initialized"),
            }
        }
        Ok(Controller { id, raft, sm, pinned, last_seen: Arc::default(), heard: Arc::default() })
    }

    /// Why this node, started with `--cluster-id`, cannot join the quorum
    /// it was pointed at (see [`Heard::stranded`]), if that is so.
    pub fn stranded(&self) -> Option<String> {
        let pinned = self.pinned.as_deref()?;
        if self.sm.cluster_id().is_some() {
            return None;
        }
        self.heard.lock().expect("heard lock").stranded(pinned, tokio::time::Instant::now(), STRANDED_AFTER)
    }

    /// The gRPC services this node answers: Raft traffic and proposals
    /// (wrap them in `RaftServer` and `ControllerServer`).
    pub fn services(&self) -> (RaftService, ControllerService) {
        let raft = RaftService {
            raft: self.raft.clone(),
            sm: self.sm.clone(),
            pinned: self.pinned.clone(),
            last_refusal_logged: Default::default(),
            heard: self.heard.clone(),
        };
        (raft, ControllerService { controller: self.clone() })
    }

    /// Proposes `command`; answers once it is committed and applied, with its
    /// outcome and log index. Forwarded to the leader when this node is not it.
    pub async fn propose(&self, command: Command) -> Result<(Applied, u64), ProposeError> {
        self.propose_hops(command, 0).await
    }

    async fn propose_hops(&self, command: Command, hops: u32) -> Result<(Applied, u64), ProposeError> {
        // A leader that has lost its quorum would wait for ever.
        let Ok(written) = tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.client_write(command.clone())).await else {
            return Err(ProposeError::Unavailable(format!("not committed within {PROPOSE_TIMEOUT:?}: no quorum?")));
        };
        match written {
            Ok(r) => Ok((r.data, r.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let Some(node) = f.leader_node else {
                    return Err(ProposeError::Unavailable("no leader elected yet".into()));
                };
                if hops >= MAX_HOPS {
                    return Err(ProposeError::Unavailable(format!("forwarded {hops} times without reaching the leader")));
                }
                forward(&node.addr, &command, hops + 1).await
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(ProposeError::Fatal(e.to_string())),
        }
    }

    /// A broker's heartbeat: recorded on the leader (forwarded there from a
    /// follower). A registered, fenced broker whose incarnation matches is
    /// unfenced: it is alive and has caught up with its registration.
    pub async fn heartbeat(&self, node: i32, incarnation: uuid::Uuid) -> Result<Liveness, ProposeError> {
        self.heartbeat_hops(node, incarnation, 0).await
    }

    async fn heartbeat_hops(&self, node: i32, incarnation: uuid::Uuid, hops: u32) -> Result<Liveness, ProposeError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            let Some(leader) = metrics.current_leader else { return Err(ProposeError::Unavailable("no leader elected yet".into())) };
            let Some(addr) = metrics.membership_config.membership().get_node(&leader).map(|n| n.addr.clone()) else {
                return Err(ProposeError::Unavailable(format!("leader {leader} has no known address")));
            };
            if hops >= MAX_HOPS {
                return Err(ProposeError::Unavailable(format!("forwarded {hops} times without reaching the leader")));
            }
            return forward_heartbeat(&addr, node, incarnation, hops + 1).await;
        }
        // Make sure this node's image is current before judging it.
        match tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ProposeError::Unavailable(e.to_string())),
            Err(_) => return Err(ProposeError::Unavailable("leadership not confirmed in time: no quorum?".into())),
        }
        let registered = self.sm.with_image(|img| img.brokers.get(&node).map(|b| (b.incarnation, b.fenced)));
        match registered {
            Some((inc, fenced)) if inc == incarnation => {
                self.last_seen.lock().expect("liveness lock").insert(node, tokio::time::Instant::now());
                if fenced {
                    let (applied, _) = self.propose(Command::UnfenceBroker { id: node, incarnation }).await?;
                    return Ok(Liveness { fenced: applied != Applied::Done, unknown: false });
                }
                Ok(Liveness { fenced: false, unknown: false })
            }
            _ => Ok(Liveness { fenced: true, unknown: true }),
        }
    }

    /// On the leader, fences every unfenced broker not heard from within
    /// `session`; call it periodically. Leadership gained just now gives
    /// every broker a full session to check in (this node never saw their
    /// heartbeats) — but the previous leader's broker only half of one: this
    /// node was elected because the quorum stopped hearing from that leader,
    /// so it has most likely died with its broker, and a live one heartbeats
    /// (through its own member, to this leader) every quarter session.
    pub async fn fence_silent_brokers(&self, session: Duration, state: &mut LivenessState) {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            state.leader_since = None;
            if let Some(leader) = metrics.current_leader {
                state.last_leader = Some(leader);
            }
            return;
        }
        let now = tokio::time::Instant::now();
        if state.leader_since != Some(metrics.current_term) {
            state.leader_since = Some(metrics.current_term);
            let mut seen = self.last_seen.lock().expect("liveness lock");
            seen.clear();
            for id in self.sm.with_image(|img| img.brokers.keys().copied().collect::<Vec<_>>()) {
                let suspect = state.last_leader.is_some_and(|l| l != self.id && l == id as NodeId);
                let since = if suspect { now.checked_sub(session / 2).unwrap_or(now) } else { now };
                seen.insert(id, since);
            }
            if let Some(previous) = state.last_leader.filter(|l| *l != self.id) {
                tracing::info!(previous_leader = previous, "leading the controller quorum: the previous leader's broker has half a session to check in, the others a full one");
            }
            return;
        }
        let silent: Vec<i32> = {
            let mut seen = self.last_seen.lock().expect("liveness lock");
            self.sm.with_image(|img| {
                img.brokers
                    .values()
                    .filter(|b| !b.fenced)
                    .filter(|b| now.duration_since(*seen.entry(b.id).or_insert(now)) > session)
                    .map(|b| b.id)
                    .collect()
            })
        };
        for id in silent {
            tracing::warn!(broker = id, session_ms = session.as_millis() as u64, "fencing a broker not heard from within its session");
            if let Err(e) = self.propose(Command::FenceBroker { id }).await {
                tracing::warn!(broker = id, error = %e, "could not fence a silent broker");
            }
        }
    }

    /// Controlled shutdown: fences this broker's incarnation at once and for
    /// good (its partitions get new leaders now, not a session timeout
    /// later, and a restart registers without waiting for that session).
    /// Stop the membership task first, so no heartbeat follows.
    pub async fn leave(&self, node: i32, incarnation: uuid::Uuid) {
        match tokio::time::timeout(Duration::from_secs(2), self.propose(Command::ControlledShutdown { id: node, incarnation })).await {
            Ok(Ok(_)) => tracing::info!(node, "fenced for a controlled shutdown"),
            Ok(Err(e)) => tracing::warn!(node, error = %e, "could not fence for a controlled shutdown"),
            Err(_) => tracing::warn!(node, "the controller quorum did not answer the controlled shutdown in time"),
        }
    }

    /// The leader's id, if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// A client of the leader's controller service at `addr`.
fn leader_client(addr: &str) -> Result<ControllerClient<tonic::transport::Channel>, ProposeError> {
    channel(addr).map(ControllerClient::new).map_err(ProposeError::Unavailable)
}

/// A forwarded call, with its deadline.
fn forwarded<T>(message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.set_timeout(FORWARD_TIMEOUT);
    req
}

fn leader_failed(addr: &str) -> impl Fn(Status) -> ProposeError + '_ {
    move |s| ProposeError::Unavailable(format!("leader at {addr}: {}", s.message()))
}

async fn forward(addr: &str, command: &Command, hops: u32) -> Result<(Applied, u64), ProposeError> {
    let req = forwarded(ProposeRequest { command_json: serde_json::to_vec(command).expect("commands serialize").into(), hops });
    let answer = leader_client(addr)?.propose(req).await.map_err(leader_failed(addr))?.into_inner();
    let applied = serde_json::from_slice(&answer.applied_json).map_err(|e| ProposeError::Unavailable(format!("leader at {addr} answered badly: {e}")))?;
    Ok((applied, answer.log_index))
}

async fn forward_heartbeat(addr: &str, node: i32, incarnation: uuid::Uuid, hops: u32) -> Result<Liveness, ProposeError> {
    let req = forwarded(HeartbeatRequest { node_id: node, incarnation: incarnation.to_string(), hops });
    let answer = leader_client(addr)?.heartbeat(req).await.map_err(leader_failed(addr))?.into_inner();
    Ok(Liveness { fenced: answer.fenced, unknown: answer.unknown })
}

/// `chronik.v1.Controller`: proposals from brokers.
pub struct ControllerService {
    controller: Controller,
}

#[tonic::async_trait]
impl controller_server::Controller for ControllerService {
    async fn propose(&self, request: Request<ProposeRequest>) -> Result<Response<ProposeResponse>, Status> {
        let r = request.into_inner();
        let command: Command = serde_json::from_slice(&r.command_json).map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        match self.controller.propose_hops(command, r.hops).await {
            Ok((applied, index)) => Ok(Response::new(ProposeResponse {
                applied_json: serde_json::to_vec(&applied).expect("outcomes serialize").into(),
                log_index: index,
            })),
            Err(ProposeError::Unavailable(m)) => Err(Status::unavailable(m)),
            Err(ProposeError::Fatal(m)) => Err(Status::internal(m)),
        }
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let incarnation = uuid::Uuid::parse_str(&r.incarnation).map_err(|e| Status::invalid_argument(format!("bad incarnation: {e}")))?;
        match self.controller.heartbeat_hops(r.node_id, incarnation, r.hops).await {
            Ok(l) => Ok(Response::new(HeartbeatResponse { fenced: l.fenced, unknown: l.unknown })),
            Err(ProposeError::Unavailable(m)) => Err(Status::unavailable(m)),
            Err(ProposeError::Fatal(m)) => Err(Status::internal(m)),
        }
    }
}

/// On every controller: once a second (or as often as a session allows),
/// the leader fences brokers that stopped sending heartbeats.
pub async fn run_liveness(shared: Arc<crate::Shared>, controller: Controller, session: Duration) {
    let tick = (session / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut state = LivenessState::default();
    loop {
        tokio::select! {
            biased;
            _ = shared.stopped() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        tokio::select! {
            biased;
            _ = shared.stopped() => return,
            _ = controller.fence_silent_brokers(session, &mut state) => {}
        }
    }
}

/// This broker's membership: registers it (a new incarnation at every
/// start) and then sends heartbeats, registering again if the quorum does
/// not know this incarnation.
pub async fn run_membership(shared: Arc<crate::Shared>, controller: Controller, info: chronik_core::cluster::image::BrokerInfo, interval: Duration) {
    let mut registered = false;
    let mut fenced = true;
    let mut refusals = 0u32;
    let mut named = false;
    loop {
        if let Some(why) = controller.stranded() {
            tracing::error!(node = info.id, "refused to join the cluster: {why}");
            shared.fail(format!("refused to join the cluster: {why}"));
            return;
        }
        if !named {
            // The first broker to ask names the cluster; every one checks
            // its data directory against that name before it registers.
            let name = controller.pinned.clone().unwrap_or_else(|| shared.broker.cluster_id());
            match controller.propose(Command::InitCluster { cluster_id: name }).await {
                // (Applied on the leader; this member's copy may lag a moment.)
                Ok(_) => {
                    if let Some(id) = controller.sm.with_image(|img| img.cluster_id.clone()) {
                        if let Err(e) = shared.broker.adopt_cluster_id(&id) {
                            tracing::error!(node = info.id, error = %e, "refused to join the cluster: wrong cluster id");
                            shared.fail(format!("refused to join the cluster: {e}"));
                            return;
                        }
                        named = true;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot reach the controller quorum to check the cluster id; retrying"),
            }
        }
        if named && !registered {
            match controller.propose(Command::RegisterBroker { info: info.clone() }).await {
                Ok((Applied::Done, _)) => {
                    tracing::info!(node = info.id, incarnation = %info.incarnation, "registered with the controller quorum");
                    registered = true;
                    refusals = 0;
                }
                Ok((refused, _)) => {
                    // Said once, then every 30 attempts: it may last a session timeout.
                    if refusals.is_multiple_of(30) {
                        tracing::warn!(node = info.id, outcome = ?refused, "registration refused; retrying");
                    }
                    refusals += 1;
                }
                Err(e) => tracing::debug!(error = %e, "registration failed; retrying"),
            }
        }
        if registered {
            match controller.heartbeat(info.id, info.incarnation).await {
                Ok(l) if l.unknown => registered = false,
                Ok(l) => {
                    if l.fenced != fenced {
                        tracing::info!(node = info.id, fenced = l.fenced, "broker fencing changed");
                        fenced = l.fenced;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat failed; retrying"),
            }
        }
        // Until registered, retry soon (a long session's heartbeat interval
        // would keep a starting broker out that long), unless the quorum
        // refused the registration: each refusal is a committed command.
        let pause = if registered || refusals > 0 { interval } else { interval.min(Duration::from_millis(250)) };
        tokio::select! {
            biased;
            _ = shared.stopped() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Keeps the broker in step with the quorum's image: its topics, its
/// partition roles and what Metadata and DescribeCluster say. Wakes the
/// replication tasks after each change.
pub async fn run_cluster_view(shared: Arc<crate::Shared>, controller: Controller, incarnation: uuid::Uuid) {
    loop {
        // Listen before reading, so no change slips between the two.
        let changed = controller.sm.changed();
        let (image, _) = controller.sm.image();
        let controller_id = controller.leader().map_or(-1, |l| l as i32);
        shared.broker.apply_image(&image, controller_id, incarnation);
        shared.cluster_changed.notify_waiters();
        // An ISR that shrank may have moved a high watermark, and a lost
        // leadership ends acks=all waits: both look again.
        shared.hw_advanced.notify_waiters();
        tokio::select! {
            biased;
            _ = shared.stopped() => return,
            _ = changed => {}
            // Leadership changes do not go through the state machine.
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
