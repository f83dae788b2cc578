//! No acknowledged idempotent write appears twice: every value the clients
//! wrote is unique, so a value at two offsets is a duplicate.

use std::collections::BTreeMap;

use crate::history::History;

pub fn check(h: &History) -> Vec<String> {
    let mut out = Vec::new();
    for (partition, log) in &h.final_logs {
        let mut seen: BTreeMap<&str, i64> = BTreeMap::new();
        for (offset, value) in log {
            if let Some(first) = seen.insert(value.as_str(), *offset) {
                out.push(format!("value {value} appears twice in partition {partition}: offsets {first} and {offset}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_a_duplicate() {
        let mut h = History::default();
        h.final_logs.insert(1, vec![(0, "a".into()), (1, "b".into())]);
        assert!(check(&h).is_empty());
        h.final_logs.insert(1, vec![(0, "a".into()), (1, "b".into()), (2, "a".into())]);
        assert_eq!(check(&h).len(), 1);
    }
}
