//! Every read returns what was written at that offset: whatever a consumer
//! read during the run must be exactly what the final log holds there. A read
//! beyond the final log means the broker served data it later lost.

use std::collections::BTreeMap;

use crate::history::{Event, History};

pub fn check(h: &History) -> Vec<String> {
    let mut out = Vec::new();
    let finals: BTreeMap<_, BTreeMap<i64, &str>> =
        h.final_logs.iter().map(|(p, log)| (*p, log.iter().map(|(o, v)| (*o, v.as_str())).collect())).collect();
    for e in &h.events {
        let Event::Read { partition, records, .. } = e else { continue };
        if h.rotted.contains(partition) {
            continue;
        }
        let log = finals.get(partition);
        for (offset, value) in records {
            match log.and_then(|l| l.get(offset)) {
                Some(v) if v == value => {}
                Some(v) => out.push(format!("partition {partition} offset {offset}: read {value}, log has {v}")),
                None => out.push(format!("partition {partition} offset {offset}: read {value}, which the log no longer has")),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_a_changed_or_vanished_record() {
        let mut h = History::default();
        h.push(Event::Read { partition: 0, records: vec![(0, "a".into()), (1, "b".into())], high_watermark: 2 });
        h.final_logs.insert(0, vec![(0, "a".into()), (1, "b".into())]);
        assert!(check(&h).is_empty());
        h.final_logs.insert(0, vec![(0, "a".into()), (1, "c".into())]);
        assert_eq!(check(&h).len(), 1);
        h.final_logs.insert(0, vec![(0, "a".into())]);
        assert_eq!(check(&h).len(), 1);
    }
}
