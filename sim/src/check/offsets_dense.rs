//! Offsets are dense and increasing per partition: the final log and every
//! fetch response hold consecutive offsets (a fetch may start inside a batch,
//! so only the step between records is checked there).

use crate::history::{Event, History};

fn gaps(records: &[(i64, String)]) -> Option<(i64, i64)> {
    records.windows(2).find(|w| w[1].0 != w[0].0 + 1).map(|w| (w[0].0, w[1].0))
}

pub fn check(h: &History) -> Vec<String> {
    let mut out = Vec::new();
    for (partition, log) in &h.final_logs {
        if h.rotted.contains(partition) {
            continue;
        }
        if let Some((a, b)) = gaps(log) {
            out.push(format!("final log of partition {partition} jumps from offset {a} to {b}"));
        }
        if let Some((first, _)) = log.first() {
            if *first != 0 {
                out.push(format!("final log of partition {partition} starts at {first}, not 0"));
            }
        }
    }
    for e in &h.events {
        if let Event::Read { partition, records, .. } = e {
            if let Some((a, b)) = gaps(records) {
                out.push(format!("a fetch of partition {partition} jumped from offset {a} to {b}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_gaps() {
        let mut h = History::default();
        h.final_logs.insert(0, vec![(0, "a".into()), (1, "b".into())]);
        assert!(check(&h).is_empty());
        h.final_logs.insert(0, vec![(0, "a".into()), (2, "b".into())]);
        assert_eq!(check(&h).len(), 1);
        h.final_logs.clear();
        h.push(Event::Read { partition: 0, records: vec![(5, "x".into()), (7, "y".into())], high_watermark: 8 });
        assert_eq!(check(&h).len(), 1);
    }
}
