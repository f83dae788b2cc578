//! Raft messages over gRPC (`chronik.v1.Raft`): the client side
//! (openraft's `RaftNetworkFactory`) and the server side (handing incoming
//! messages to the local `Raft`). Messages are openraft's serde types as
//! JSON; a peer that cannot be reached is `Unreachable`, so openraft backs
//! off instead of hammering it. Every message carries the sender's cluster
//! id, and a member refuses one from another cluster.

use std::time::Duration;

use tokio::time::Instant;

use chronik_proto::grpc::raft_client::RaftClient;
use chronik_proto::grpc::raft_server;
use chronik_proto::grpc::RaftMessage;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::store::StateMachine;
use super::{Cfg, Node, NodeId};

/// The largest Raft message either side accepts (entries are batched up
/// to openraft's `max_payload_entries`, snapshot chunks are 256 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A lazily connecting channel to `addr` (`host:port`).
pub fn channel(addr: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| format!("bad peer address {addr}: {e}"))?;
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).connect_lazy())
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

/// This member's cluster id: the one its quorum named, or before that the
/// one its operator named (`--cluster-id`); "" if neither.
fn cluster_id(sm: &StateMachine, pinned: &Option<String>) -> String {
    sm.cluster_id().or_else(|| pinned.clone()).unwrap_or_default()
}

/// Why two members' cluster ids rule out talking, if they do.
fn foreign(ours: &str, theirs: &str) -> Option<String> {
    (!ours.is_empty() && !theirs.is_empty() && ours != theirs).then(|| format!("inconsistent cluster id: this member is cluster {ours}, the peer cluster {theirs}"))
}

/// Creates a client per peer.
#[derive(Clone)]
pub struct Network {
    pub sm: StateMachine,
    pub pinned: Option<String>,
}

impl RaftNetworkFactory<Cfg> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        let client = channel(&node.addr).map(|c| RaftClient::new(c).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES));
        Peer { target, node: node.clone(), client, network: self.clone() }
    }
}

pub struct Peer {
    target: NodeId,
    node: Node,
    client: Result<RaftClient<Channel>, String>,
    network: Network,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl Peer {
    async fn call<Req, Resp, E>(&mut self, kind: Kind, request: &Req, timeout: Duration) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&Failure(e.clone())))),
        };
        let json = serde_json::to_vec(request).expect("raft requests serialize");
        let ours = cluster_id(&self.network.sm, &self.network.pinned);
        let mut req = Request::new(RaftMessage { json: json.into(), cluster_id: ours.clone() });
        req.set_timeout(timeout);
        let answer = match kind {
            Kind::Append => client.append_entries(req).await,
            Kind::Vote => client.vote(req).await,
            Kind::Snapshot => client.install_snapshot(req).await,
        };
        let answer = answer.map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown => {
                RPCError::Unreachable(Unreachable::new(&Failure(format!("peer {}: {}", self.target, s.message()))))
            }
            // A member of another cluster: treated as unreachable (backed
            // off), never as an answer.
            tonic::Code::FailedPrecondition => RPCError::Unreachable(Unreachable::new(&Failure(format!("peer {}: {}", self.target, s.message())))),
            _ => RPCError::Network(NetworkError::new(&Failure(format!("peer {}: {s}", self.target)))),
        })?;
        let answer = answer.into_inner();
        if let Some(why) = foreign(&ours, &answer.cluster_id) {
            return Err(RPCError::Unreachable(Unreachable::new(&Failure(format!("peer {}: {why}", self.target)))));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&answer.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&Failure(format!("peer {} sent an undecodable answer: {e}", self.target)))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<Cfg> for Peer {
    async fn append_entries(&mut self, rpc: AppendEntriesRequest<Cfg>, option: RPCOption) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(Kind::Append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Cfg>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Kind::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(Kind::Vote, &rpc, option.hard_ttl()).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// What a member has heard over Raft: enough to tell that it was started
/// with the wrong `--cluster-id` (see [`Heard::stranded`]).
#[derive(Debug, Default)]
pub struct Heard {
    /// When a message from this cluster was last taken.
    accepted: Option<Instant>,
    /// Another cluster's id, when its messages began to be refused, and when
    /// the last one was.
    foreign: Option<(String, Instant, Instant)>,
}

/// Refusals further apart than this are not one stretch.
const REFUSAL_GAP: Duration = Duration::from_secs(10);

impl Heard {
    fn accepted(&mut self, now: Instant) {
        self.accepted = Some(now);
    }

    fn refused(&mut self, theirs: &str, now: Instant) {
        match &mut self.foreign {
            Some((id, _, last)) if id == theirs && now.duration_since(*last) < REFUSAL_GAP => *last = now,
            _ => self.foreign = Some((theirs.to_string(), now, now)),
        }
    }

    /// Why a member with `pinned` as its `--cluster-id` should give up, if
    /// it should: it is not part of a named cluster, and for `after` it has
    /// refused another cluster's messages and taken none of its own. That is
    /// a member listed in `--controllers` of a cluster named otherwise (a
    /// typo in `--cluster-id`, or the wrong `--controllers`): it would wait
    /// for ever.
    pub fn stranded(&self, pinned: &str, now: Instant, after: Duration) -> Option<String> {
        let (theirs, since, last) = self.foreign.as_ref()?;
        let refusing = now.duration_since(*since) >= after && now.duration_since(*last) < REFUSAL_GAP;
        let silent = self.accepted.is_none_or(|a| now.duration_since(a) >= after);
        (refusing && silent).then(|| {
            format!(
                "for {}s every Raft message this node was sent came from cluster {theirs}, but it was started with --cluster-id {pinned}: \
                 is --cluster-id (or --controllers) right?",
                after.as_secs()
            )
        })
    }
}

/// Hands incoming Raft messages to the local node.
pub struct RaftService {
    pub raft: openraft::Raft<Cfg>,
    pub sm: StateMachine,
    pub pinned: Option<String>,
    /// When a foreign request was last logged (at most every 10 s: the
    /// peer retries several times a second).
    pub last_refusal_logged: std::sync::Mutex<Option<Instant>>,
    pub heard: std::sync::Arc<std::sync::Mutex<Heard>>,
}

impl RaftService {
    /// Decodes a request from a member of this cluster; refuses one from
    /// another (`FAILED_PRECONDITION`), saying which and why.
    fn decode<T: DeserializeOwned>(&self, request: Request<RaftMessage>) -> Result<T, Status> {
        let peer = request.remote_addr();
        let message = request.into_inner();
        let now = Instant::now();
        if let Some(why) = foreign(&cluster_id(&self.sm, &self.pinned), &message.cluster_id) {
            self.heard.lock().expect("heard lock").refused(&message.cluster_id, now);
            let mut last = self.last_refusal_logged.lock().expect("refusal log lock");
            if last.is_none_or(|at| now.duration_since(at) >= std::time::Duration::from_secs(10)) {
                *last = Some(now);
                tracing::error!(
                    peer = ?peer,
                    "refusing Raft traffic: {why}. A data directory of one cluster was started among another's members \
                     (check that member's --data-dir and --controllers)"
                );
            }
            return Err(Status::failed_precondition(why));
        }
        self.heard.lock().expect("heard lock").accepted(now);
        serde_json::from_slice(&message.json).map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
    }

    fn encode<T: Serialize>(&self, answer: T) -> Result<Response<RaftMessage>, Status> {
        let json = serde_json::to_vec(&answer).expect("raft answers serialize").into();
        Ok(Response::new(RaftMessage { json, cluster_id: cluster_id(&self.sm, &self.pinned) }))
    }
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: AppendEntriesRequest<Cfg> = self.decode(request)?;
        self.encode(self.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: VoteRequest<NodeId> = self.decode(request)?;
        self.encode(self.raft.vote(req).await)
    }

    async fn install_snapshot(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: InstallSnapshotRequest<Cfg> = self.decode(request)?;
        self.encode(self.raft.install_snapshot(req).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_hearing_only_another_cluster_is_stranded_after_a_while() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let after = Duration::from_secs(20);
        let mut heard = Heard::default();
        assert_eq!(heard.stranded("alpah", at(0), after), None, "nothing heard");
        for s in 0..=25 {
            heard.refused("alpha", at(s));
        }
        let why = heard.stranded("alpah", at(25), after).expect("only alpha for 25 s");
        assert!(why.contains("cluster alpha") && why.contains("--cluster-id alpah"), "{why}");
        // A message of its own cluster within the window: not stranded.
        heard.accepted(at(10));
        assert_eq!(heard.stranded("alpah", at(25), after), None);
        // Refusals that stopped long ago are no evidence now.
        let mut old = Heard::default();
        for s in 0..=25 {
            old.refused("alpha", at(s));
        }
        assert_eq!(old.stranded("alpah", at(60), after), None);
        // A gap starts a new stretch.
        old.refused("alpha", at(60));
        assert_eq!(old.stranded("alpah", at(61), after), None);
    }
}
