//! The controller quorum: openraft replicating the cluster's metadata
//! commands (`chronik_core::cluster::image`), with its log and state
//! machine on the `Disk` seam ([`store`]) and its runtime over the workspace
//! `tokio` ([`runtime`]), so the same code runs in production and in the
//! simulation.

pub mod network;
pub mod node;
pub mod runtime;
pub mod store;

use std::io::Cursor;

use chronik_core::cluster::image::{Applied, Command};

pub type NodeId = u64;
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// Chronik's Raft types: metadata commands in, their outcomes out.
    pub Cfg:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<Cfg>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = runtime::Runtime,
);

#[cfg(all(test, not(madsim)))]
mod tests;
