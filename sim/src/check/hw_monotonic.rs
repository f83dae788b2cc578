//! The high watermark never moves backwards as seen by consumers — not even
//! across a broker crash, since on Chronik it is the end of the fsynced log.
//! Partitions hit by deliberate bit rot are exempt: with one replica,
//! recovery cuts the log at the first corrupt batch of the active segment.

use std::collections::BTreeMap;

use crate::history::{Event, History};

pub fn check(h: &History) -> Vec<String> {
    let mut out = Vec::new();
    let mut highest: BTreeMap<i32, i64> = BTreeMap::new();
    for e in &h.events {
        let Event::Read { partition, high_watermark, .. } = e else { continue };
        if *high_watermark < 0 || h.rotted.contains(partition) {
            continue; // an error answer carries no HW
        }
        let best = highest.entry(*partition).or_insert(*high_watermark);
        if *high_watermark < *best {
            out.push(format!("partition {partition}: high watermark went back from {best} to {high_watermark}"));
        }
        *best = (*best).max(*high_watermark);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_a_regression() {
        let read = |hw| Event::Read { partition: 0, records: vec![], high_watermark: hw };
        let mut h = History::default();
        for hw in [0, 3, 3, 7, -1] {
            h.push(read(hw));
        }
        assert!(check(&h).is_empty());
        h.push(read(5));
        assert_eq!(check(&h).len(), 1);
        h.rotted.push(0);
        assert!(check(&h).is_empty());
    }
}
