//! Committed offsets: an acknowledged commit is what OffsetFetch returns
//! until a later commit replaces it — across crashes, restarts and the
//! coordinator's log cleaning — and a refused commit never shows.
//!
//! Each simulated group has one member with one commit in flight, so its
//! commits are ordered. Per (group, partition) the checker tracks the last
//! acknowledged value and the values of later commits whose fate is unknown
//! (no answer, or an error after the record may have been appended: it may
//! still become durable and apply). A fetch must return the acknowledged
//! value or one of those; seeing one of them settles the ones before it.

use std::collections::BTreeMap;

use crate::history::{CommitOutcome, Event, History};

pub fn check(history: &History) -> Vec<String> {
    let mut state: BTreeMap<(&str, i32), (i64, Vec<i64>)> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, e) in history.events.iter().enumerate() {
        match e {
            Event::Commit { group, offsets, outcome } => {
                for &(p, v) in offsets {
                    let (base, pending) = state.entry((group.as_str(), p)).or_insert((-1, Vec::new()));
                    match outcome {
                        CommitOutcome::Acked => {
                            *base = v;
                            pending.clear();
                        }
                        CommitOutcome::Unknown => pending.push(v),
                        CommitOutcome::Refused => {}
                    }
                }
            }
            Event::OffsetsFetched { group, offsets } => {
                for &(p, f) in offsets {
                    let (base, pending) = state.entry((group.as_str(), p)).or_insert((-1, Vec::new()));
                    if f == *base {
                        continue;
                    }
                    if let Some(at) = pending.iter().position(|v| *v == f) {
                        *base = f;
                        pending.drain(..=at);
                        continue;
                    }
                    out.push(format!(
                        "event {i}: group {group} partition {p}: OffsetFetch returned {f}, but the last acknowledged commit is {base} \
                         (unacknowledged since: {pending:?})"
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(offset: i64, outcome: CommitOutcome) -> Event {
        Event::Commit { group: "g".into(), offsets: vec![(0, offset)], outcome }
    }

    fn fetched(offset: i64) -> Event {
        Event::OffsetsFetched { group: "g".into(), offsets: vec![(0, offset)] }
    }

    #[test]
    fn acked_commits_must_be_returned() {
        let ok = History {
            events: vec![fetched(-1), commit(5, CommitOutcome::Acked), fetched(5), commit(9, CommitOutcome::Unknown), fetched(5), fetched(9), commit(11, CommitOutcome::Refused), fetched(9)],
            ..Default::default()
        };
        assert!(check(&ok).is_empty(), "{:?}", check(&ok));
        // A crash took an acknowledged commit back.
        let lost = History { events: vec![commit(5, CommitOutcome::Acked), commit(8, CommitOutcome::Acked), fetched(5)], ..Default::default() };
        assert_eq!(check(&lost).len(), 1);
        // A refused commit applied anyway.
        let refused = History { events: vec![commit(5, CommitOutcome::Acked), commit(8, CommitOutcome::Refused), fetched(8)], ..Default::default() };
        assert_eq!(check(&refused).len(), 1);
        // Once a later unknown commit is seen, the earlier value cannot come back.
        let back = History {
            events: vec![commit(5, CommitOutcome::Acked), commit(8, CommitOutcome::Unknown), fetched(8), fetched(5)],
            ..Default::default()
        };
        assert_eq!(check(&back).len(), 1);
    }
}
