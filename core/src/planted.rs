//! Planted bugs: the simulator's self-test.
//!
//! The simulator proves its checkers work by switching one of these on and
//! showing that some seed catches it. They exist only in builds made with
//! `RUSTFLAGS="--cfg chronik_planted_bugs"` (which `ci/sim.sh --bug` uses, in
//! its own target directory); in every other build [`active`] is a constant
//! `false` and the buggy branches compile away.

/// A bug the simulator must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The flusher advances the high watermark (and so answers acks=all)
    /// without calling fsync.
    SkipFsync,
    /// Recovery keeps the torn tail of the active segment instead of
    /// truncating it.
    TruncateTornTailOff,
    /// The group coordinator applies and acknowledges an offset commit as
    /// soon as its record is appended, before it is fsynced.
    AckCommitBeforeFsync,
    /// After a restart the search indexer resumes at the high watermark
    /// instead of the offset its index last committed: the records indexed
    /// but not committed before a crash are never indexed again.
    IndexResumeAtHw,
    /// The controller quorum's Raft log tells openraft an append is durable
    /// without fsyncing it: a crash can take back entries a majority
    /// acknowledged.
    RaftAckBeforeFsync,
    /// A partition leader advances its high watermark (and answers
    /// acks=all) on its own fsync, without waiting for the ISR.
    AckBeforeReplicate,
    /// A broker that starts following a leader truncates its log to its
    /// high watermark (Kafka before KIP-101) instead of to where its log
    /// diverged by leader epoch.
    TruncateToHw,
    /// A leader serves consumers up to its log end, not its high
    /// watermark: they read records not yet committed.
    StaleHwRead,
}

impl Bug {
    pub const ALL: [Bug; 8] = [
        Bug::SkipFsync,
        Bug::TruncateTornTailOff,
        Bug::AckCommitBeforeFsync,
        Bug::IndexResumeAtHw,
        Bug::RaftAckBeforeFsync,
        Bug::AckBeforeReplicate,
        Bug::TruncateToHw,
        Bug::StaleHwRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::SkipFsync => "skip-fsync",
            Bug::TruncateTornTailOff => "truncate-torn-tail-off",
            Bug::AckCommitBeforeFsync => "ack-commit-before-fsync",
            Bug::IndexResumeAtHw => "index-resume-at-hw",
            Bug::RaftAckBeforeFsync => "raft-ack-before-fsync",
            Bug::AckBeforeReplicate => "ack-before-replicate",
            Bug::TruncateToHw => "truncate-to-hw",
            Bug::StaleHwRead => "stale-hw-read",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

#[cfg(chronik_planted_bugs)]
static ACTIVE: std::sync::Mutex<Option<Bug>> = std::sync::Mutex::new(None);

/// Switches `bug` on (or all off with `None`). Only planted-bug builds can.
#[cfg(chronik_planted_bugs)]
pub fn plant(bug: Option<Bug>) {
    *ACTIVE.lock().expect("planted bug lock") = bug;
}

/// Whether `bug` is switched on. Always false outside planted-bug builds.
#[inline(always)]
pub fn active(bug: Bug) -> bool {
    #[cfg(chronik_planted_bugs)]
    {
        *ACTIVE.lock().expect("planted bug lock") == Some(bug)
    }
    #[cfg(not(chronik_planted_bugs))]
    {
        let _ = bug;
        false
    }
}
