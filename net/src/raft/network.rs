//! Raft messages over gRPC (`chronik.v1.Raft`): the client side
//! (openraft's `RaftNetworkFactory`) and the server side (handing incoming
//! messages to the local `Raft`). Messages are openraft's serde types as
//! JSON; a peer that cannot be reached is `Unreachable`, so openraft backs
//! off instead of hammering it.

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

/// Creates a client per peer.
#[derive(Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<Cfg> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        let client = channel(&node.addr).map(|c| RaftClient::new(c).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES));
        Peer { target, node: node.clone(), client }
    }
}

pub struct Peer {
    target: NodeId,
    node: Node,
    client: Result<RaftClient<Channel>, String>,
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
        let mut req = Request::new(RaftMessage { json: json.into() });
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
            _ => RPCError::Network(NetworkError::new(&Failure(format!("peer {}: {s}", self.target)))),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&answer.into_inner().json)
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
}

fn decode<T: DeserializeOwned>(request: Request<RaftMessage>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().json).map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: Serialize>(answer: T) -> Result<Response<RaftMessage>, Status> {
    Ok(Response::new(RaftMessage { json: serde_json::to_vec(&answer).expect("raft answers serialize").into() }))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: AppendEntriesRequest<Cfg> = decode(request)?;
        encode(self.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: VoteRequest<NodeId> = decode(request)?;
        encode(self.raft.vote(req).await)
    }

    async fn install_snapshot(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: InstallSnapshotRequest<Cfg> = decode(request)?;
        encode(self.raft.install_snapshot(req).await)
    }
}
