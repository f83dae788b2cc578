//! A partition leader's view of its followers: how far each has durably
//! replicated, the high watermark that follows from it, and when the ISR
//! should shrink or grow. Events and time are passed in; nothing here does
//! I/O, so every rule is unit-tested.
//!
//! The rules (Kafka's, with two deliberate choices):
//! - A follower reports, with each fetch, the end of its log it has
//!   **fsynced** (not merely written), so the high watermark is durable on
//!   every ISR member: an acknowledged record survives the loss of power
//!   of any minority, not only `kill -9`.
//! - The high watermark is the minimum durable end over the **maximal ISR**:
//!   the committed ISR plus any member being added or removed by a change not
//!   yet committed (KIP-841), so an ISR change in flight never lets the high
//!   watermark pass a broker that may still be counted as in sync.
//! - A follower is out of sync when it has not caught up to the leader's log
//!   end within `replica.lag.time.max.ms`; it rejoins once its durable end
//!   reaches the high watermark and the start of the leader's current epoch
//!   (so it holds everything acknowledged, and nothing of an older leader's
//!   divergent tail).
//! - The high watermark never moves backwards.

use std::collections::BTreeMap;

use crate::transport::NodeId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    /// The end of its log it has fsynced, as of its last fetch.
    pub durable_end: i64,
    /// The last time its fetch reached the leader's log end then.
    pub caught_up_ms: i64,
    /// The last time it fetched at all.
    pub fetched_ms: i64,
    /// The leader's log end at its previous fetch, and when that was.
    pub prev_fetch: (i64, i64),
}

/// A change of the ISR the leader should propose to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrChange {
    Shrink(Vec<NodeId>),
    Expand(Vec<NodeId>),
}

#[derive(Debug, Clone)]
pub struct LeaderState {
    pub me: NodeId,
    pub leader_epoch: i32,
    /// The first offset of this leader's epoch.
    pub epoch_start: i64,
    /// The committed ISR (as the controller last applied it).
    pub isr: Vec<NodeId>,
    /// The ISR as a proposed change would make it, until the controller
    /// applies or refuses it.
    pub pending: Option<Vec<NodeId>>,
    pub replicas: Vec<NodeId>,
    pub followers: BTreeMap<NodeId, Follower>,
    pub high_watermark: i64,
    pub lag_max_ms: i64,
}

impl LeaderState {
    #[allow(clippy::too_many_arguments)] // each is a distinct fact about the new leadership
    /// A new leader at `epoch`, starting its epoch at its log end. Followers
    /// start as caught up now (they get a full lag window to fetch).
    pub fn new(me: NodeId, leader_epoch: i32, replicas: Vec<NodeId>, isr: Vec<NodeId>, log_end: i64, high_watermark: i64, now_ms: i64, lag_max_ms: i64) -> LeaderState {
        let followers = replicas
            .iter()
            .filter(|r| **r != me)
            .map(|r| (*r, Follower { durable_end: -1, caught_up_ms: now_ms, fetched_ms: now_ms, prev_fetch: (i64::MAX, now_ms) }))
            .collect();
        LeaderState { me, leader_epoch, epoch_start: log_end, isr, pending: None, replicas, followers, high_watermark, lag_max_ms }
    }

    /// The members that may count as in sync: committed ISR and pending change.
    pub fn maximal_isr(&self) -> Vec<NodeId> {
        let mut all = self.isr.clone();
        if let Some(p) = &self.pending {
            for b in p {
                if !all.contains(b) {
                    all.push(*b);
                }
            }
        }
        all
    }

    /// A follower fetched at `fetch_offset` (everything below it is in its
    /// log) and reports `durable_end`; the leader's log ends at `log_end`.
    /// Returns whether the high watermark moved.
    pub fn on_fetch(&mut self, follower: NodeId, fetch_offset: i64, durable_end: i64, log_end: i64, local_durable: i64, now_ms: i64) -> bool {
        let Some(f) = self.followers.get_mut(&follower) else { return false };
        f.fetched_ms = now_ms;
        // What it has durably can never exceed what it has fetched.
        f.durable_end = durable_end.min(fetch_offset);
        // Caught up now, or with where the log ended at its previous fetch
        // (under steady produce a healthy follower is always one fetch
        // behind the very end; as Kafka's lastFetchLeaderLogEndOffset).
        if fetch_offset >= log_end {
            f.caught_up_ms = now_ms;
        } else if fetch_offset >= f.prev_fetch.0 {
            f.caught_up_ms = f.caught_up_ms.max(f.prev_fetch.1);
        }
        f.prev_fetch = (log_end, now_ms);
        self.advance(local_durable)
    }

    /// The leader's own log became durable up to `local_durable`.
    pub fn on_local_flush(&mut self, local_durable: i64) -> bool {
        self.advance(local_durable)
    }

    fn advance(&mut self, local_durable: i64) -> bool {
        let mut hw = local_durable;
        let isr = if crate::planted::active(crate::planted::Bug::AckBeforeReplicate) { Vec::new() } else { self.maximal_isr() };
        for b in isr {
            if b == self.me {
                continue;
            }
            let end = self.followers.get(&b).map_or(-1, |f| f.durable_end);
            hw = hw.min(end);
        }
        // Safe to expose once every member that may be in sync has it durably:
        // the next leader comes from the ISR, and a broker joins the ISR only
        // holding everything up to the high watermark. This covers an old
        // leader's tail too, once the whole ISR has it.
        if hw > self.high_watermark {
            self.high_watermark = hw;
            return true;
        }
        false
    }

    /// The ISR change due now, if any and none is pending: drop followers
    /// that have not caught up within the lag window, add those that have
    /// durably reached the high watermark and this epoch's start.
    pub fn isr_change(&self, now_ms: i64) -> Option<IsrChange> {
        if self.pending.is_some() {
            return None;
        }
        let lagging: Vec<NodeId> = self
            .isr
            .iter()
            .filter(|b| **b != self.me)
            .filter(|b| self.followers.get(b).is_none_or(|f| now_ms - f.caught_up_ms > self.lag_max_ms))
            .copied()
            .collect();
        if !lagging.is_empty() {
            return Some(IsrChange::Shrink(self.isr.iter().filter(|b| !lagging.contains(b)).copied().collect()));
        }
        let joining: Vec<NodeId> = self
            .followers
            .iter()
            .filter(|(b, _)| !self.isr.contains(b))
            .filter(|(_, f)| f.durable_end >= self.high_watermark && f.durable_end >= self.epoch_start && now_ms - f.caught_up_ms <= self.lag_max_ms)
            .map(|(b, _)| *b)
            .collect();
        if !joining.is_empty() {
            let mut isr = self.isr.clone();
            isr.extend(joining);
            return Some(IsrChange::Expand(isr));
        }
        None
    }

    /// Enough replicas for `acks=all`?
    pub fn enough_replicas(&self, min_insync: usize) -> bool {
        self.isr.len() >= min_insync
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader() -> LeaderState {
        // Broker 1 leads epoch 3 from offset 100; 2 and 3 in sync; HW 100.
        LeaderState::new(1, 3, vec![1, 2, 3], vec![1, 2, 3], 100, 100, 0, 30_000)
    }

    #[test]
    fn the_high_watermark_is_the_least_durable_end_over_the_isr() {
        let mut l = leader();
        // The leader appends 100..110 and syncs; nobody else has it yet.
        assert!(!l.on_local_flush(110));
        assert!(!l.on_fetch(2, 110, 110, 110, 110, 10));
        assert_eq!(l.high_watermark, 100);
        // 3 fetched 105 but has only fsynced up to 103.
        assert!(l.on_fetch(3, 105, 103, 110, 110, 20));
        assert_eq!(l.high_watermark, 103);
        assert!(l.on_fetch(3, 110, 110, 110, 110, 30));
        assert_eq!(l.high_watermark, 110);
        // A durable end beyond what was fetched is not believed.
        let mut l = leader();
        l.on_local_flush(110);
        l.on_fetch(2, 105, 110, 110, 110, 10);
        l.on_fetch(3, 110, 110, 110, 110, 10);
        assert_eq!(l.high_watermark, 105);
    }

    #[test]
    fn the_high_watermark_never_moves_back() {
        let mut l = leader();
        l.on_local_flush(120);
        l.on_fetch(2, 120, 120, 120, 120, 1);
        l.on_fetch(3, 120, 120, 120, 120, 1);
        assert_eq!(l.high_watermark, 120);
        // A restarted follower reports less (it lost unsynced data): the HW stays.
        assert!(!l.on_fetch(3, 110, 110, 120, 120, 2));
        assert_eq!(l.high_watermark, 120);
    }

    #[test]
    fn lagging_followers_leave_the_isr_and_caught_up_ones_rejoin() {
        let mut l = leader();
        l.on_local_flush(150);
        l.on_fetch(2, 150, 150, 150, 150, 1_000);
        l.on_fetch(3, 120, 120, 150, 150, 1_000);
        assert_eq!(l.isr_change(20_000), None, "within the lag window");
        assert_eq!(l.isr_change(31_000), Some(IsrChange::Shrink(vec![1, 2])), "3 has not reached the log end for 31 s");
        // While the change is pending, the HW still counts 3.
        l.pending = Some(vec![1, 2]);
        assert_eq!(l.high_watermark, 120);
        assert_eq!(l.isr_change(40_000), None, "one change at a time");
        // Committed.
        l.isr = vec![1, 2];
        l.pending = None;
        assert!(l.on_local_flush(150));
        assert_eq!(l.high_watermark, 150);
        // 3 catches up durably (2 keeps fetching): it may rejoin.
        l.on_fetch(2, 150, 150, 150, 150, 41_000);
        l.on_fetch(3, 150, 150, 150, 150, 41_000);
        assert_eq!(l.isr_change(41_000), Some(IsrChange::Expand(vec![1, 2, 3])));
    }

    #[test]
    fn a_new_leader_settles_the_old_tail_once_the_whole_isr_has_it() {
        // The old leader's tail 100..110 may be on some replicas only.
        let mut l = LeaderState::new(1, 4, vec![1, 2, 3], vec![1, 2, 3], 110, 100, 0, 30_000);
        l.on_local_flush(110);
        l.on_fetch(2, 110, 110, 110, 110, 1);
        assert_eq!(l.high_watermark, 100, "3 has not got it");
        l.on_fetch(3, 110, 110, 110, 110, 2);
        assert_eq!(l.high_watermark, 110);
        // A follower below the epoch start cannot join, even at the HW.
        let mut l = LeaderState::new(1, 4, vec![1, 2, 3], vec![1, 2], 110, 100, 0, 30_000);
        l.on_fetch(3, 100, 100, 110, 110, 1);
        assert_eq!(l.isr_change(1), None);
        l.on_fetch(3, 110, 110, 110, 110, 2);
        assert_eq!(l.isr_change(2), Some(IsrChange::Expand(vec![1, 2, 3])), "durably at the epoch start and the high watermark");
    }

    #[test]
    fn a_follower_one_fetch_behind_under_steady_produce_stays_in_sync() {
        let mut l = leader();
        let mut end = 100;
        for t in 1..=100 {
            // Each fetch reaches where the log ended at the previous one; the
            // leader appended more meanwhile.
            let fetched = end;
            end += 10;
            l.on_local_flush(end);
            l.on_fetch(2, fetched, fetched, end, end, t * 1_000);
            l.on_fetch(3, fetched, fetched, end, end, t * 1_000);
        }
        assert_eq!(l.isr_change(100_000), None, "never more than one fetch behind");
        assert_eq!(l.high_watermark, end - 10);
    }

    #[test]
    fn acks_all_needs_min_insync_replicas() {
        let mut l = leader();
        assert!(l.enough_replicas(2));
        l.isr = vec![1];
        assert!(!l.enough_replicas(2));
    }
}
