//! The invariant checkers, one per file. Each returns the violations it
//! found as sentences; an empty list means the history is fine.

mod acked_durable;
mod commits;
mod hw_monotonic;
mod no_duplicates;
mod offsets_dense;
pub mod quorum;
mod reads_match_log;
mod search_index;

use crate::history::History;

/// A named checker.
pub struct Checker {
    pub name: &'static str,
    pub check: fn(&History) -> Vec<String>,
}

/// Every checker that applies to a single-node broker.
pub const CHECKERS: &[Checker] = &[
    Checker { name: "acked-durable", check: acked_durable::check },
    Checker { name: "no-duplicates", check: no_duplicates::check },
    Checker { name: "offsets-dense", check: offsets_dense::check },
    Checker { name: "reads-match-log", check: reads_match_log::check },
    Checker { name: "hw-monotonic", check: hw_monotonic::check },
    Checker { name: "commits", check: commits::check },
    Checker { name: "search-index", check: search_index::check },
];

/// The checkers of the cluster world's replicated topic and its groups'
/// commits (whose coordinator moves with the leaders of
/// `__consumer_offsets`). The high watermark a consumer is told may go back
/// when leadership moves (a new leader learns it from its followers, as in
/// Kafka), so `hw-monotonic` does not apply; a read of anything a leader
/// change took back still fails `reads-match-log`.
pub const CLUSTER_CHECKERS: &[Checker] = &[
    Checker { name: "acked-durable", check: acked_durable::check },
    Checker { name: "no-duplicates", check: no_duplicates::check },
    Checker { name: "offsets-dense", check: offsets_dense::check },
    Checker { name: "reads-match-log", check: reads_match_log::check },
    Checker { name: "commits", check: commits::check },
];

/// Runs every cluster checker; returns `(checker, violation)` pairs.
pub fn run_cluster(history: &History) -> Vec<(&'static str, String)> {
    CLUSTER_CHECKERS.iter().flat_map(|c| (c.check)(history).into_iter().map(move |v| (c.name, v))).collect()
}

/// Runs every checker; returns `(checker, violation)` pairs.
pub fn run_all(history: &History) -> Vec<(&'static str, String)> {
    CHECKERS.iter().flat_map(|c| (c.check)(history).into_iter().map(move |v| (c.name, v))).collect()
}
