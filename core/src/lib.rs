//! Chronik's broker core: the log, the partition and producer state, the
//! topic catalogue and the Kafka request handlers — and the I/O seams they
//! run on ([`disk::Disk`], [`clock::Clock`], [`transport::Transport`],
//! [`rng::Rng`]).
//!
//! This crate has no async runtime, no sockets and no search engine: the same
//! code runs under the production composition root (`chronik-server`) and the
//! deterministic simulator. Invariant assertions stay on in release builds.

pub mod disk;
pub mod clock;
pub mod rng;
pub mod transport;
pub mod producer;
pub mod log;
#[cfg(test)]
pub mod testing;
pub mod config;
pub mod broker;
pub mod group;
pub mod planted;
pub mod search;
pub mod cluster;
