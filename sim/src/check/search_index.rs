//! search-index: after healing, each partition's search index holds exactly
//! the records of the log below the offset it resumes from: every hit a real
//! record (same offset, same value), none missing, none twice, and it caught
//! up with the log. A rotted partition is exempt (its log may be unreadable).

use crate::history::History;

pub fn check(h: &History) -> Vec<String> {
    let mut out = Vec::new();
    for (p, log) in &h.final_logs {
        if h.rotted.contains(p) {
            continue;
        }
        let end = log.last().map_or(0, |l| l.0 + 1);
        let Some((next, docs)) = h.search_index.get(p) else {
            if !log.is_empty() {
                out.push(format!("partition {p}: no search index, but {} records", log.len()));
            }
            continue;
        };
        if *next < end {
            out.push(format!("partition {p}: the search index resumes at {next}, behind the log end {end}"));
        }
        let expected: Vec<&(i64, String)> = log.iter().filter(|(o, _)| o < next).collect();
        let got: Vec<&(i64, String)> = docs.iter().collect();
        if got != expected {
            let extra: Vec<_> = got.iter().filter(|d| !expected.contains(d)).take(3).collect();
            let missing: Vec<_> = expected.iter().filter(|d| !got.contains(d)).take(3).collect();
            out.push(format!(
                "partition {p}: the index holds {} documents below {next}, the log {} records; not in the log: {extra:?}; not indexed: {missing:?}",
                got.len(),
                expected.len()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(log: Vec<(i64, &str)>, next: i64, docs: Vec<(i64, &str)>) -> History {
        let mut h = History::default();
        h.final_logs.insert(0, log.into_iter().map(|(o, v)| (o, v.to_string())).collect());
        h.search_index.insert(0, (next, docs.into_iter().map(|(o, v)| (o, v.to_string())).collect()));
        h
    }

    #[test]
    fn an_index_equal_to_the_log_passes() {
        assert!(check(&history(vec![(0, "a"), (1, "b")], 2, vec![(0, "a"), (1, "b")])).is_empty());
    }

    #[test]
    fn ghosts_gaps_and_lag_are_caught() {
        assert_eq!(check(&history(vec![(0, "a")], 2, vec![(0, "a"), (1, "ghost")])).len(), 1);
        assert_eq!(check(&history(vec![(0, "a"), (1, "b")], 2, vec![(1, "b")])).len(), 1);
        assert_eq!(check(&history(vec![(0, "a"), (1, "b")], 1, vec![(0, "a")])).len(), 1);
        assert_eq!(check(&history(vec![(0, "a")], 1, vec![(0, "other")])).len(), 1);
    }
}
