//! Chronik's deterministic simulation.
//!
//! [`world`] (built only with `--cfg madsim`) runs the production
//! `chronik_server::start` on a madsim node with a fault-injecting
//! `SimDisk`, drives it with simulated Kafka clients ([`client`]) that record
//! a [`history::History`], injects faults chosen by the seed, then heals and
//! checks the history with the checkers in [`check`], one invariant per file.
//! The history and checkers are plain code, unit-tested in every build.

pub mod check;
pub mod history;

#[cfg(madsim)]
pub mod client;
#[cfg(madsim)]
pub mod world;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod replication;
#[cfg(madsim)]
pub mod groups;
