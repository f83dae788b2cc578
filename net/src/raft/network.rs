//! Raft messages over gRPC (`chronik.v1.Raft`): the client side
//! (openraft's `RaftNetworkFactory`) and the server side (handing incoming
//! messages to the local `Raft`). Messages are openraft's serde types as
//! JSON; a peer that cannot be reached is `Unreachable`, so openraft backs
//! off instead of hammering it. Every message carries the sender's cluster
//! id, and a member refuses one from another cluster.

use std::time::Duration;

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
    sm.with_image(|i| i.cluster_id.clone()).or_else(|| pinned.clone()).unwrap_or_default()
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

/// Hands incoming Raft messages to the local node.
pub struct RaftService {
    pub raft: openraft::Raft<Cfg>,
    pub sm: StateMachine,
    pub pinned: Option<String>,
    /// When a foreign request was last logged (at most every 10 s: the
    /// peer retries several times a second).
    pub last_refusal_logged: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl RaftService {
    /// Decodes a request from a member of this cluster; refuses one from
    /// another (`FAILED_PRECONDITION`), saying which and why.
    fn decode<T: DeserializeOwned>(&self, request: Request<RaftMessage>) -> Result<T, Status> {
        let peer = request.remote_addr();
        let message = request.into_inner();
        if let Some(why) = foreign(&cluster_id(&self.sm, &self.pinned), &message.cluster_id) {
            let now = tokio::time::Instant::now();
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
