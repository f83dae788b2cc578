//! The controller quorum's invariants, over what the cluster world observed:
//! - **election safety**: at most one leader per Raft term;
//! - **state machine safety**: nodes that applied the log up to the same
//!   index hold the same metadata image;
//! - **acknowledged commands survive**: every topic whose creation was
//!   acknowledged is in the final image, and no two acknowledged producer-id
//!   allocations handed out the same ids;
//! - **convergence**: after healing, every node applied the same image, in
//!   which every broker is registered and unfenced;
//! - **one partition leader per epoch**: no two brokers ever acted as
//!   leader of one partition at one leader epoch.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default)]
pub struct QuorumHistory {
    /// (term, node) for every sample in which a node was leader.
    pub leaders: Vec<(u64, u64)>,
    /// (node, applied index, hash of the image at that index).
    pub applied: Vec<(u64, u64, u64)>,
    /// The first id of each acknowledged allocation (each of `ids_per_allocation`).
    pub allocations: Vec<i64>,
    pub ids_per_allocation: i64,
    /// Topics whose creation was acknowledged.
    pub acked_topics: Vec<String>,
    /// After healing: per node, (applied index, image hash, topics, brokers unfenced).
    pub finals: BTreeMap<u64, FinalView>,
    /// Every node's id.
    pub nodes: Vec<u64>,
    /// Broken image invariants (`Image::check`) seen in samples: (node, index, what).
    pub broken: Vec<(u64, u64, String)>,
    /// (topic, partition, leader epoch) -> the brokers seen acting as its leader.
    pub partition_leaders: BTreeMap<(String, i32, i32), BTreeSet<u64>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalView {
    pub index: u64,
    pub hash: u64,
    pub topics: BTreeSet<String>,
    /// Broker id -> fenced.
    pub brokers: BTreeMap<i32, bool>,
}

pub fn check(h: &QuorumHistory) -> Vec<String> {
    let mut out = Vec::new();
    for (node, index, what) in h.broken.iter().take(5) {
        out.push(format!("node {node}, image at index {index}: {what}"));
    }
    let mut by_term: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (term, node) in &h.leaders {
        by_term.entry(*term).or_default().insert(*node);
    }
    for (term, nodes) in by_term.iter().filter(|(_, n)| n.len() > 1) {
        out.push(format!("term {term} had {} leaders: {nodes:?}", nodes.len()));
    }
    for ((topic, partition, epoch), nodes) in h.partition_leaders.iter().filter(|(_, n)| n.len() > 1) {
        out.push(format!("{topic}-{partition} had {} leaders at leader epoch {epoch}: brokers {nodes:?}", nodes.len()));
    }
    let mut at_index: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (node, index, hash) in &h.applied {
        match at_index.get(index) {
            Some((other, h2)) if h2 != hash => {
                out.push(format!("nodes {other} and {node} applied up to index {index} but hold different images"));
            }
            Some(_) => {}
            None => {
                at_index.insert(*index, (*node, *hash));
            }
        }
    }
    let mut ids: BTreeMap<i64, usize> = BTreeMap::new();
    for (i, first) in h.allocations.iter().enumerate() {
        for id in *first..*first + h.ids_per_allocation.max(1) {
            if let Some(j) = ids.insert(id, i) {
                out.push(format!("producer id {id} was handed out twice (acknowledged allocations {j} and {i})"));
            }
        }
    }
    for node in &h.nodes {
        let Some(f) = h.finals.get(node) else {
            out.push(format!("node {node} did not converge after healing"));
            continue;
        };
        for t in &h.acked_topics {
            if !f.topics.contains(t) {
                out.push(format!("node {node}: topic {t} was acknowledged but is not in the final image"));
            }
        }
        for id in &h.nodes {
            match f.brokers.get(&(*id as i32)) {
                None => out.push(format!("node {node}: broker {id} is not registered after healing")),
                Some(true) => out.push(format!("node {node}: broker {id} is still fenced after healing")),
                Some(false) => {}
            }
        }
    }
    let distinct: BTreeSet<(u64, u64)> = h.finals.values().map(|f| (f.index, f.hash)).collect();
    if distinct.len() > 1 {
        out.push(format!("the nodes ended on different images: {:?}", h.finals.iter().map(|(n, f)| (*n, f.index)).collect::<Vec<_>>()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> QuorumHistory {
        let view = FinalView { index: 9, hash: 7, topics: ["a".to_string()].into(), brokers: [(1, false), (2, false), (3, false)].into() };
        QuorumHistory {
            leaders: vec![(1, 1), (1, 1), (2, 3)],
            applied: vec![(1, 5, 42), (2, 5, 42), (3, 9, 7)],
            allocations: vec![0, 10, 20],
            ids_per_allocation: 10,
            acked_topics: vec!["a".into()],
            finals: [(1, view.clone()), (2, view.clone()), (3, view)].into(),
            nodes: vec![1, 2, 3],
            broken: Vec::new(),
            partition_leaders: [(("r".to_string(), 0, 1), [1].into()), (("r".to_string(), 0, 2), [2].into())].into(),
        }
    }

    #[test]
    fn a_healthy_history_passes() {
        assert_eq!(check(&healthy()), Vec::<String>::new());
    }

    #[test]
    fn each_violation_is_named() {
        let mut h = healthy();
        h.leaders.push((1, 2));
        assert!(check(&h)[0].contains("term 1 had 2 leaders"));
        let mut h = healthy();
        h.applied.push((3, 5, 43));
        assert!(check(&h)[0].contains("different images"));
        let mut h = healthy();
        h.allocations.push(15);
        assert!(check(&h)[0].contains("handed out twice"));
        let mut h = healthy();
        h.acked_topics.push("lost".into());
        assert!(check(&h).iter().any(|v| v.contains("topic lost was acknowledged")));
        let mut h = healthy();
        h.finals.get_mut(&2).unwrap().brokers.insert(3, true);
        assert!(check(&h).iter().any(|v| v.contains("still fenced")));
        let mut h = healthy();
        h.broken.push((2, 7, "t-0: empty ISR".into()));
        assert!(check(&h)[0].contains("empty ISR"));
        let mut h = healthy();
        h.finals.remove(&3);
        assert!(check(&h).iter().any(|v| v.contains("did not converge")));
        let mut h = healthy();
        h.partition_leaders.get_mut(&("r".to_string(), 0, 2)).unwrap().insert(3);
        assert!(check(&h)[0].contains("r-0 had 2 leaders at leader epoch 2"));
    }
}
