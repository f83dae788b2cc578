//! The broker-to-broker message seam.
//!
//! A [`Transport`] delivers opaque messages between node ids. Its contract is
//! deliberately weak, as a real network's is: a sent message may be dropped,
//! delivered twice, delayed, or delivered out of order; it is never corrupted
//! undetectably (gRPC/TCP checksums, or the simulator's model). Protocols built
//! on it (replication, the controller) must tolerate all of these. The
//! single-node broker sends nothing; the cluster issue adds the gRPC
//! implementation and the simulator its own.

/// A node in the cluster.
pub type NodeId = i32;

/// Fire-and-forget delivery of a message to another node.
pub trait Transport: Send + Sync + 'static {
    /// Queues `message` for `to`. Returning does not mean delivery.
    fn send(&self, to: NodeId, message: Vec<u8>);
}

/// A transport for a single node: there is no one to send to.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, to: NodeId, _message: Vec<u8>) {
        tracing::warn!(to, "single-node broker asked to send to another node; dropped");
    }
}
