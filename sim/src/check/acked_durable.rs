//! No acknowledged (acks=all) write is lost: after healing, every value the
//! broker acknowledged is in the log — at the acknowledged offset when the
//! answer carried one. Partitions hit by deliberate bit rot are exempt (one
//! replica cannot repair rot; other checkers still require that no corrupt
//! data is served).

use crate::history::History;

pub fn check(h: &History) -> Vec<String> {
    let mut out = Vec::new();
    for (partition, offset, value) in h.acked() {
        if h.rotted.contains(&partition) {
            continue;
        }
        let log = h.final_logs.get(&partition).map(Vec::as_slice).unwrap_or(&[]);
        let found = match offset {
            Some(o) => log.iter().any(|(lo, v)| *lo == o && v == value),
            None => log.iter().any(|(_, v)| v == value),
        };
        if !found {
            let at = offset.map(|o| format!(" at offset {o}")).unwrap_or_default();
            let instead = offset.and_then(|o| log.iter().find(|(lo, _)| *lo == o)).map(|(_, v)| format!(" (the log has {v} there)")).unwrap_or_default();
            let elsewhere = log.iter().find(|(_, v)| v == value).map(|(o, _)| format!("; it is at offset {o}")).unwrap_or_default();
            out.push(format!("acknowledged value {value} of partition {partition}{at} is not in the log{instead}{elsewhere}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;

    #[test]
    fn catches_a_lost_ack() {
        let mut h = History::default();
        h.push(Event::Acked { partition: 0, base_offset: 0, values: vec!["a".into(), "b".into()] });
        h.final_logs.insert(0, vec![(0, "a".into()), (1, "b".into())]);
        assert!(check(&h).is_empty());
        h.final_logs.insert(0, vec![(0, "a".into())]);
        assert_eq!(check(&h).len(), 1);
        h.final_logs.insert(0, vec![(0, "a".into()), (1, "x".into()), (2, "b".into())]);
        assert_eq!(check(&h).len(), 1, "found at the wrong offset");
        h.rotted.push(0);
        assert!(check(&h).is_empty());
    }
}
