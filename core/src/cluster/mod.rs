//! The cluster: the metadata the controller quorum replicates ([`image`]).
//! Plain synchronous code like the rest of the core; the Raft transport and
//! storage glue lives outside it.

pub mod image;
pub mod replica;
