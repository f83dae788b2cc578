//! The leader-epoch cache of a partition (KIP-101/279): at which offset each
//! leader epoch began. It answers OffsetForLeaderEpoch ("where does epoch E
//! end here?"), which is how a follower that was out of date finds the exact
//! point where its log diverged from the leader's and truncates there, never
//! to the high watermark (which could drop acknowledged records, or keep a
//! divergent tail).
//!
//! Persisted as `leader-epoch-checkpoint` in the partition directory (JSON,
//! replaced atomically and fsynced at every change: changes happen once per
//! leadership change, not per record).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{read_all, write_atomic, Disk};

pub const CHECKPOINT: &str = "leader-epoch-checkpoint";
/// No such epoch or offset (Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET).
pub const UNDEFINED: (i32, i64) = (-1, -1);

pub struct EpochCache {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    /// (epoch, start offset), both ascending.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    pub fn open(disk: Arc<dyn Disk>, dir: &Path) -> io::Result<EpochCache> {
        let path = dir.join(CHECKPOINT);
        let entries = match read_all(&*disk, &path)? {
            None => Vec::new(),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?,
        };
        Ok(EpochCache { disk, path, entries })
    }

    fn save(&self) -> io::Result<()> {
        write_atomic(&*self.disk, &self.path, &serde_json::to_vec(&self.entries).expect("epochs serialize"))
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The latest epoch and its start offset.
    pub fn latest(&self) -> Option<(i32, i64)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` begins at `start` (its first batch is being
    /// appended there). An epoch already known, or older than the latest, is
    /// left as it is.
    pub fn assign(&mut self, epoch: i32, start: i64) -> io::Result<()> {
        if let Some((last, last_start)) = self.latest() {
            if epoch <= last {
                return Ok(());
            }
            if start < last_start {
                // The log was truncated below the latest epoch's start without telling us.
                self.entries.retain(|(_, s)| *s < start);
            }
        }
        self.entries.push((epoch, start));
        self.save()
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` and the
    /// offset where it ended here (the next epoch's start, or `log_end` for
    /// the latest); for an epoch older than any kept, the oldest kept one's
    /// start; [`UNDEFINED`] for -1 or an empty cache.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        if epoch < 0 || self.entries.is_empty() {
            return UNDEFINED;
        }
        match self.entries.iter().rposition(|(e, _)| *e <= epoch) {
            // Older than every epoch kept (retention removed the rest): it
            // ended where the oldest kept one begins, as Kafka answers.
            None => (epoch, self.entries[0].1),
            Some(i) => (self.entries[i].0, self.entries.get(i + 1).map_or(log_end, |(_, start)| *start)),
        }
    }

    /// The log was truncated to end at `end`: epochs that began at or after
    /// it are gone.
    pub fn truncate_from_end(&mut self, end: i64) -> io::Result<()> {
        let before = self.entries.len();
        self.entries.retain(|(_, start)| *start < end);
        if self.entries.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// Retention removed everything below `start`: the epoch that covered it
    /// now starts there, and older ones are forgotten.
    pub fn truncate_from_start(&mut self, start: i64) -> io::Result<()> {
        let Some(keep) = self.entries.iter().rposition(|(_, s)| *s <= start) else { return Ok(()) };
        if keep == 0 && self.entries[0].1 == start {
            return Ok(());
        }
        self.entries.drain(..keep);
        self.entries[0].1 = start;
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::SimDisk;

    fn cache(disk: &SimDisk) -> EpochCache {
        disk.create_dir_all(Path::new("p")).unwrap();
        disk.sync_dir(Path::new("")).unwrap(); // the partition directory is durable before its files
        EpochCache::open(Arc::new(disk.clone()), Path::new("p")).unwrap()
    }

    #[test]
    fn answers_offset_for_leader_epoch_like_kafka() {
        let disk = SimDisk::new(1);
        let mut c = cache(&disk);
        assert_eq!(c.end_offset_for(0, 0), UNDEFINED);
        c.assign(1, 0).unwrap();
        c.assign(1, 50).unwrap(); // already known
        c.assign(3, 100).unwrap();
        c.assign(5, 180).unwrap();
        assert_eq!(c.entries(), &[(1, 0), (3, 100), (5, 180)]);
        assert_eq!(c.end_offset_for(0, 250), (0, 0), "older than any epoch here: where the oldest begins");
        assert_eq!(c.end_offset_for(-1, 250), UNDEFINED);
        assert_eq!(c.end_offset_for(1, 250), (1, 100));
        assert_eq!(c.end_offset_for(2, 250), (1, 100), "epoch 2 never led here: the one before it");
        assert_eq!(c.end_offset_for(3, 250), (3, 180));
        assert_eq!(c.end_offset_for(5, 250), (5, 250), "the latest ends at the log end");
        assert_eq!(c.end_offset_for(9, 250), (5, 250));
    }

    #[test]
    fn follows_truncation_and_retention_and_survives_a_crash() {
        let disk = SimDisk::new(2);
        let mut c = cache(&disk);
        for (e, s) in [(1, 0), (2, 40), (4, 90)] {
            c.assign(e, s).unwrap();
        }
        c.truncate_from_end(90).unwrap();
        assert_eq!(c.entries(), &[(1, 0), (2, 40)]);
        c.assign(6, 70).unwrap();
        assert_eq!(c.entries(), &[(1, 0), (2, 40), (6, 70)]);
        c.truncate_from_start(50).unwrap();
        assert_eq!(c.entries(), &[(2, 50), (6, 70)]);
        // A new epoch below the latest start (an unreported truncation) replaces what it covers.
        c.assign(7, 60).unwrap();
        assert_eq!(c.entries(), &[(2, 50), (7, 60)]);
        drop(c);
        disk.crash();
        let c = EpochCache::open(Arc::new(disk.clone()), Path::new("p")).unwrap();
        assert_eq!(c.entries(), &[(2, 50), (7, 60)], "every change was fsynced");
    }
}
