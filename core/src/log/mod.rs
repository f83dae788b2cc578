//! The partition log: an ordered list of [`Segment`]s in one directory, plus
//! the idempotent producer state derived from it.
//!
//! # Offsets
//! - `log_start_offset`: the base offset of the oldest segment (retention
//!   deletes whole segments and so moves it forward);
//! - `log_end_offset` (LEO): the offset the next batch gets;
//! - the durable end: the end of the prefix fsynced on this broker;
//! - `high_watermark` (HW): the end of the committed prefix. On one node it is
//!   the durable end: data becomes visible to consumers and `acks=all` is
//!   answered only once it is fsynced, so a consumer never reads a record
//!   that a crash could take back. In a cluster the partition's leader sets a
//!   lower limit (the least durable end over the ISR, see
//!   `cluster::replica`) and followers take the leader's.
//!
//! # Recovery
//! Sealed segments were synced when they were sealed; their indexes are
//! trusted if well formed and rebuilt otherwise. The active (last) segment is
//! scanned batch by batch (header, length, CRC-32C, offset contiguity); the
//! first invalid batch and everything after it is a torn or unsynced tail and
//! is truncated. Producer state is loaded from the newest snapshot (written
//! at each roll) and replayed from the log after it.

pub mod epochs;
pub mod segment;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chronik_proto::batch::{self, BatchError, BatchHeader};
use kafka_protocol::records::RecordBatchDecoder;

use crate::disk::{self, Disk, DiskFile};
use crate::producer::ProducerStates;
pub use segment::Segment;

const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// The recovery point: an offset below which the log is known to be synced.
const RECOVERY_POINT_FILE: &str = "recovery-point";
/// How often the flusher refreshes the recovery point (it is also written at
/// every roll and at shutdown).
pub const RECOVERY_POINT_INTERVAL_MS: i64 = 2000;
const SNAPSHOTS_KEPT: usize = 2;

/// Per-log settings (from topic configs and broker defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// -1: keep forever.
    pub retention_ms: i64,
    /// -1: no size limit.
    pub retention_bytes: i64,
    pub index_interval_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
        }
    }
}

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("corrupt data in {path} at position {position}: {reason}")]
    Corrupt { path: String, position: u64, reason: BatchError },
    #[error("the log is offline after an earlier I/O failure: {0}")]
    Offline(String),
    /// Replicated batches that do not continue this log (nothing written).
    #[error("replicated batches refused: {0}")]
    NotContiguous(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.display().to_string(), source }
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
}

/// Batches read from the log: whole batches, in offset order.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub bytes: Vec<u8>,
}

/// A sync to run outside the partition lock (see [`PartitionLog::flush_target`]).
pub struct FlushTarget {
    pub file: Arc<dyn DiskFile>,
    /// The log end offset when it was taken: what the sync makes durable.
    pub offset: i64,
}

pub struct PartitionLog {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    /// Everything below it is fsynced.
    durable_end: i64,
    /// In a cluster: the high watermark replication allows (the HW is the
    /// lower of this and the durable end).
    replicated_hw: Option<i64>,
    pub producers: ProducerStates,
    /// Everything below this offset was synced when it was last recorded:
    /// recovery treats damage below it as corruption, not as a torn tail.
    recovery_point: i64,
    recovery_point_written_ms: i64,
    /// Set after a failed write or sync; the log then refuses everything
    /// until the broker restarts and recovers it (fsync failures leave the
    /// page cache in an unknown state).
    offline: Option<String>,
    /// Where each leader epoch began (`leader-epoch-checkpoint`).
    epochs: epochs::EpochCache,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset())
            .field("log_end_offset", &self.log_end_offset())
            .field("durable_end", &self.durable_end)
            .field("high_watermark", &self.high_watermark())
            .finish()
    }
}

/// The recorded recovery point, or 0 if there is none or it is damaged
/// (then every invalid tail is treated as torn, as before it existed).
fn read_recovery_point(disk: &dyn Disk, dir: &Path) -> i64 {
    let path = dir.join(RECOVERY_POINT_FILE);
    match disk::read_all(disk, &path) {
        Ok(Some(b)) if b.len() == 12 && crc32c::crc32c(&b[..8]).to_be_bytes() == b[8..12] => {
            i64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
        }
        Ok(None) => 0,
        Ok(Some(_)) => {
            tracing::warn!(file = %path.display(), "ignoring a damaged recovery point");
            0
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the recovery point");
            0
        }
    }
}

/// The partition's epoch cache; an unreadable checkpoint is rebuilt from the log.
fn open_epochs(disk: &Arc<dyn Disk>, dir: &Path) -> Result<epochs::EpochCache, LogError> {
    match epochs::EpochCache::open(disk.clone(), dir) {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(dir = %dir.display(), error = %e, "rebuilding an unreadable leader-epoch checkpoint from the log");
            let _ = disk.remove_file(&dir.join(epochs::CHECKPOINT));
            epochs::EpochCache::open(disk.clone(), dir).map_err(io_err(dir))
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

fn parse_name(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

impl PartitionLog {
    /// Opens (recovering) or creates the log in `dir`.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path, config: LogConfig, now_ms: i64) -> Result<PartitionLog, LogError> {
        if !disk.exists(dir) {
            disk.create_dir_all(dir).map_err(io_err(dir))?;
        }
        // Every directory entry on the way to the log's files is made
        // durable at every open, not only when the directory is new: a
        // creation an I/O error cut short leaves entries that exist but are
        // not durable, and a retry must not take them for durable ones.
        for d in dir.ancestors() {
            disk.sync_dir(d).map_err(io_err(d))?;
        }
        let names = disk.list(dir).map_err(io_err(dir))?;
        for name in &names {
            if name.ends_with(".tmp") {
                let _ = disk.remove_file(&dir.join(name));
            }
        }
        let mut bases: Vec<i64> = names.iter().filter_map(|n| parse_name(n, segment::LOG_SUFFIX)).collect();
        bases.sort_unstable();
        let mut snapshots: Vec<i64> = names.iter().filter_map(|n| parse_name(n, SNAPSHOT_SUFFIX)).collect();
        snapshots.sort_unstable();

        let mut log = PartitionLog {
            disk: disk.clone(),
            dir: dir.to_path_buf(),
            config,
            segments: Vec::new(),
            durable_end: 0,
            replicated_hw: None,
            producers: ProducerStates::default(),
            recovery_point: 0,
            recovery_point_written_ms: now_ms,
            offline: None,
            epochs: open_epochs(&disk, dir)?,
        };
        if bases.is_empty() {
            let seg = Segment::create(&*disk, dir, 0, now_ms, log.config.index_interval_bytes).map_err(io_err(dir))?;
            log.segments.push(seg);
            return Ok(log);
        }

        let recovery_point = read_recovery_point(&*disk, dir);
        // Producer state: the newest snapshot at or before the active segment.
        let active_base = *bases.last().expect("non-empty");
        let mut replay_from = bases[0];
        if let Some(&snap) = snapshots.iter().rev().find(|&&s| s <= active_base && s >= bases[0]) {
            let path = dir.join(segment::file_name(snap, SNAPSHOT_SUFFIX));
            match disk::read_all(&*disk, &path).map_err(io_err(&path))?.map(|b| serde_json::from_slice::<ProducerStates>(&b)) {
                Some(Ok(state)) => {
                    log.producers = state;
                    replay_from = snap;
                }
                Some(Err(e)) => tracing::warn!(snapshot = %path.display(), error = %e, "ignoring unreadable producer snapshot"),
                None => {}
            }
        }

        for (i, &base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            let interval = log.config.index_interval_bytes;
            let (mut seg, end) = if is_active || base >= replay_from {
                let producers = &mut log.producers;
                let replay = base >= replay_from;
                Segment::recover(&*disk, dir, base, now_ms, interval, |h| {
                    if replay {
                        producers.record(h)
                    }
                })
                .map_err(io_err(dir))?
            } else {
                Segment::open_sealed(&*disk, dir, base, bases[i + 1], now_ms, interval).map_err(io_err(dir))?
            };
            if let Some(reason) = end.invalid {
                if is_active && crate::planted::active(crate::planted::Bug::TruncateTornTailOff) {
                    seg.size = disk.open(seg.path(), false).and_then(|f| f.len()).map_err(io_err(dir))?;
                } else if is_active && seg.next_offset < recovery_point {
                    // Damage below what was synced: bit rot, not a torn write.
                    return Err(seg.corrupt(end.valid_len, reason));
                } else if is_active {
                    tracing::warn!(
                        segment = %seg.path().display(),
                        valid_bytes = end.valid_len,
                        %reason,
                        "truncating the torn tail of the active segment"
                    );
                    seg.truncate_file(end.valid_len).map_err(io_err(seg.path()))?;
                } else {
                    return Err(seg.corrupt(end.valid_len, reason));
                }
            }
            if let Some(prev) = log.segments.last() {
                if prev.next_offset != seg.base_offset {
                    return Err(seg.corrupt(0, BatchError::BadLength(-1)));
                }
            }
            log.segments.push(seg);
        }
        if log.log_end_offset() < recovery_point {
            let missing = BatchError::Truncated { needed: (recovery_point - log.log_end_offset()) as usize, have: 0 };
            return Err(log.active().corrupt(log.active().size, missing));
        }
        // Everything that survived recovery is durable from here on.
        log.active().file.sync().map_err(io_err(dir))?;
        log.durable_end = log.log_end_offset();
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        log.epochs.truncate_from_end(end).map_err(io_err(dir))?;
        if log.epochs.latest().is_none() && end > start {
            // No checkpoint (a log written before it existed): rebuild it
            // from every batch header.
            for (epoch, at) in log.scan_epochs().map_err(io_err(dir))? {
                log.epochs.assign(epoch, at).map_err(io_err(dir))?;
            }
        }
        log.epochs.truncate_from_start(start).map_err(io_err(dir))?;
        log.recovery_point = recovery_point;
        log.check_invariants();
        Ok(log)
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has an active segment")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.segments[0].base_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    pub fn high_watermark(&self) -> i64 {
        self.replicated_hw.map_or(self.durable_end, |r| r.clamp(self.log_start_offset(), self.durable_end))
    }

    /// The end of the prefix fsynced here.
    pub fn durable_end(&self) -> i64 {
        self.durable_end
    }

    /// In a cluster, the high watermark replication allows; `None` on a
    /// single node (the HW is then the durable end).
    pub fn set_replicated_hw(&mut self, hw: Option<i64>) {
        self.replicated_hw = hw;
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Where each epoch begins, read from the batch headers of every segment.
    fn scan_epochs(&self) -> io::Result<Vec<(i32, i64)>> {
        let mut out: Vec<(i32, i64)> = Vec::new();
        let mut header = [0u8; batch::HEADER_LEN];
        for seg in &self.segments {
            let mut pos = 0u64;
            while pos + batch::HEADER_LEN as u64 <= seg.size {
                seg.file.read_at(pos, &mut header)?;
                let h = BatchHeader::parse(&header).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                if out.last().is_none_or(|(e, _)| h.partition_leader_epoch > *e) {
                    out.push((h.partition_leader_epoch, h.base_offset));
                }
                pos += h.total_len() as u64;
            }
        }
        Ok(out)
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` that led
    /// this log and the offset where it ended (the log end for the latest).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// The epochs that led this log and where each began.
    pub fn epoch_starts(&self) -> &[(i32, i64)] {
        self.epochs.entries()
    }

    pub fn offline(&self) -> Option<&str> {
        self.offline.as_deref()
    }

    fn ensure_online(&self) -> Result<(), LogError> {
        match &self.offline {
            Some(why) => Err(LogError::Offline(why.clone())),
            None => Ok(()),
        }
    }

    fn go_offline(&mut self, e: LogError) -> LogError {
        tracing::error!(dir = %self.dir.display(), error = %e, "partition log is going offline until restart");
        self.offline = Some(e.to_string());
        e
    }

    /// Asserts the log's own invariants; cheap, and on in release.
    pub fn check_invariants(&self) {
        assert!(!self.segments.is_empty());
        for w in self.segments.windows(2) {
            assert_eq!(w[0].next_offset, w[1].base_offset, "segments must be contiguous");
        }
        assert!(self.log_start_offset() <= self.durable_end, "durable end below log start");
        assert!(self.durable_end <= self.log_end_offset(), "durable end beyond LEO");
    }

    /// Appends one validated batch (CRC checked by the caller), stamping its
    /// base offset and leader epoch. Not durable until [`Self::flush`].
    pub fn append(&mut self, batch: Vec<u8>, leader_epoch: i32, now_ms: i64) -> Result<Appended, LogError> {
        self.append_batches(vec![batch], leader_epoch, now_ms)
    }

    /// Appends validated batches with consecutive offsets in one write: all
    /// of them or, on an I/O error, none.
    pub fn append_batches(&mut self, mut batches: Vec<Vec<u8>>, leader_epoch: i32, now_ms: i64) -> Result<Appended, LogError> {
        self.ensure_online()?;
        assert!(!batches.is_empty(), "append of no batches");
        let mut headers = Vec::with_capacity(batches.len());
        let mut next = self.log_end_offset();
        let base_offset = next;
        for b in &mut batches {
            batch::stamp(b, next, leader_epoch);
            let h = BatchHeader::parse(b).expect("batch was validated before append");
            next = h.last_offset() + 1;
            headers.push((h, b.len() as u64));
        }
        self.note_epoch(leader_epoch, base_offset)?;
        let bytes = if batches.len() == 1 { batches.pop().expect("one batch") } else { batches.concat() };
        self.write(bytes, headers, now_ms)
    }

    /// Records (and fsyncs) that `epoch` begins at `start`, before the
    /// epoch's first batch is written.
    fn note_epoch(&mut self, epoch: i32, start: i64) -> Result<(), LogError> {
        if self.epochs.latest().is_none_or(|(e, _)| epoch > e) {
            let dir = self.dir.clone();
            self.epochs.assign(epoch, start).map_err(|e| self.go_offline(LogError::Io { path: dir.display().to_string(), source: e }))?;
        }
        Ok(())
    }

    /// A new leader's epoch begins at the log end now, before it appends
    /// anything: OffsetForLeaderEpoch then tells a follower with an older
    /// epoch's tail where that epoch ended here (as Kafka does).
    pub fn begin_epoch(&mut self, epoch: i32) -> Result<(), LogError> {
        self.ensure_online()?;
        let end = self.log_end_offset();
        self.note_epoch(epoch, end)
    }

    /// A follower appends its leader's batches as they are (offsets and
    /// leader epochs already stamped). They must start at the log end, be
    /// contiguous, pass their CRC, and never go back in epoch; otherwise
    /// nothing is written.
    pub fn append_replicated(&mut self, records: &[u8], now_ms: i64) -> Result<Option<Appended>, LogError> {
        self.ensure_online()?;
        let refuse = |m: String| LogError::NotContiguous(m);
        let mut headers = Vec::new();
        let mut next = self.log_end_offset();
        let mut epoch = self.epochs.latest().map_or(-1, |(e, _)| e);
        let mut epochs = Vec::new();
        for item in batch::Batches::new(records) {
            let (h, start, end) = item.map_err(|e| refuse(format!("malformed batch at offset {next}: {e}")))?;
            batch::validate(&records[start..end]).map_err(|e| refuse(format!("batch at offset {}: {e}", h.base_offset)))?;
            if h.base_offset != next {
                return Err(refuse(format!("batch at offset {} where the log ends at {next}", h.base_offset)));
            }
            if h.partition_leader_epoch < epoch {
                return Err(refuse(format!("batch at offset {next} of epoch {} after epoch {epoch}", h.partition_leader_epoch)));
            }
            if h.partition_leader_epoch > epoch {
                epoch = h.partition_leader_epoch;
                epochs.push((epoch, next));
            }
            next = h.last_offset() + 1;
            headers.push((h, (end - start) as u64));
        }
        if headers.is_empty() {
            return Ok(None);
        }
        for (e, start) in epochs {
            self.note_epoch(e, start)?;
        }
        self.write(records.to_vec(), headers, now_ms).map(Some)
    }

    /// Writes stamped batches at the log end, rolling first if due.
    fn write(&mut self, bytes: Vec<u8>, headers: Vec<(BatchHeader, u64)>, now_ms: i64) -> Result<Appended, LogError> {
        let base_offset = self.log_end_offset();
        let next = headers.last().map_or(base_offset, |(h, _)| h.last_offset() + 1);
        let total: u64 = headers.iter().map(|(_, len)| len).sum();
        if self.should_roll(total, next - 1 - base_offset, now_ms) {
            self.roll(now_ms).map_err(|e| self.go_offline(e))?;
        }
        let seg = self.segments.last_mut().expect("active segment");
        let position = seg.size;
        if let Err(source) = seg.file.write_at(position, &bytes) {
            let e = LogError::Io { path: seg.path().display().to_string(), source };
            // A failed write may have left part of the data behind: cut it
            // off so the next append does not land after garbage.
            let cut = seg.file.truncate(position);
            let full = matches!(e, LogError::Io { ref source, .. } if source.kind() == io::ErrorKind::StorageFull);
            return Err(if full && cut.is_ok() { e } else { self.go_offline(e) });
        }
        for (h, len) in &headers {
            seg.note_append(h, *len);
            self.producers.record(h);
        }
        Ok(Appended { base_offset, last_offset: next - 1 })
    }

    /// Seals the active segment now, if it has data (the simulator's
    /// buggify uses this to make rolls frequent).
    pub fn roll_now(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.ensure_online()?;
        if self.active().size == 0 {
            return Ok(());
        }
        self.roll(now_ms).map_err(|e| self.go_offline(e))
    }

    fn should_roll(&self, incoming: u64, last_offset_delta: i64, now_ms: i64) -> bool {
        let seg = self.active();
        // Relative offsets in the indexes are 32-bit; Kafka rolls at i32::MAX too.
        let relative_last = self.log_end_offset() + last_offset_delta - seg.base_offset;
        seg.size > 0
            && (seg.size + incoming > self.config.segment_bytes.min(i32::MAX as u64)
                || now_ms - seg.created_ms >= self.config.segment_ms
                || relative_last > i32::MAX as i64)
    }

    /// Seals the active segment (sync, write its indexes, snapshot producer
    /// state) and starts a new one at the LEO.
    fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let seg = self.active();
        seg.file.sync().map_err(io_err(seg.path()))?;
        seg.write_indexes(&*self.disk, &dir).map_err(io_err(&dir))?;
        let base = self.log_end_offset();
        self.durable_end = base;
        self.write_recovery_point(now_ms)?;
        let snapshot = serde_json::to_vec(&self.producers).expect("producer state serializes");
        let path = dir.join(segment::file_name(base, SNAPSHOT_SUFFIX));
        disk::write_atomic(&*self.disk, &path, &snapshot).map_err(io_err(&path))?;
        let seg = Segment::create(&*self.disk, &dir, base, now_ms, self.config.index_interval_bytes).map_err(io_err(&dir))?;
        self.segments.push(seg);
        self.prune_snapshots();
        tracing::debug!(dir = %dir.display(), base, "rolled a new segment");
        Ok(())
    }

    fn prune_snapshots(&self) {
        let Ok(names) = self.disk.list(&self.dir) else { return };
        let mut snaps: Vec<i64> = names.iter().filter_map(|n| parse_name(n, SNAPSHOT_SUFFIX)).collect();
        snaps.sort_unstable();
        let start = self.log_start_offset();
        let keep_from = snaps.len().saturating_sub(SNAPSHOTS_KEPT);
        for (i, s) in snaps.iter().enumerate() {
            if i < keep_from || *s < start {
                let _ = self.disk.remove_file(&self.dir.join(segment::file_name(*s, SNAPSHOT_SUFFIX)));
            }
        }
    }

    /// What a flush must sync, taken under the partition lock so the sync
    /// itself can run without it: the active file and the LEO it covers.
    pub fn flush_target(&self) -> Option<FlushTarget> {
        if self.offline.is_some() || self.durable_end == self.log_end_offset() {
            return None;
        }
        Some(FlushTarget { file: self.active().file.clone(), offset: self.log_end_offset() })
    }

    /// Records that `target`'s sync completed: everything below its offset
    /// is durable, if the log is still the one it was taken from. A
    /// follower's truncation since then reopened the log (new files), and
    /// may have appended past the old end again: those records were not in
    /// the synced file, so the sync says nothing about them. A roll since
    /// then synced the sealed segment itself.
    pub fn flushed(&mut self, target: &FlushTarget) {
        if !std::ptr::addr_eq(Arc::as_ptr(&target.file), Arc::as_ptr(&self.active().file)) {
            return;
        }
        let offset = target.offset.min(self.log_end_offset());
        if offset > self.durable_end {
            self.durable_end = offset;
        }
    }

    /// Marks the log offline after a failed flush.
    pub fn flush_failed(&mut self, source: io::Error) -> LogError {
        let e = LogError::Io { path: self.active().path().display().to_string(), source };
        self.go_offline(e)
    }

    /// Syncs everything now and records the recovery point (graceful
    /// shutdown, tests).
    pub fn flush(&mut self, now_ms: i64) -> Result<(), LogError> {
        if let Some(target) = self.flush_target() {
            if let Err(e) = target.file.sync() {
                return Err(self.flush_failed(e));
            }
            self.flushed(&target);
        }
        self.write_recovery_point(now_ms)
    }

    /// Records the HW as the recovery point if the last one is older than
    /// [`RECOVERY_POINT_INTERVAL_MS`]. A failure is logged, not fatal: the
    /// older recovery point stays valid.
    pub fn checkpoint_if_due(&mut self, now_ms: i64) {
        if now_ms - self.recovery_point_written_ms >= RECOVERY_POINT_INTERVAL_MS || now_ms < self.recovery_point_written_ms {
            if let Err(e) = self.write_recovery_point(now_ms) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not record the recovery point");
            }
        }
    }

    /// Durably records the HW (which is synced) as the recovery point.
    fn write_recovery_point(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.recovery_point_written_ms = now_ms;
        if self.durable_end <= self.recovery_point {
            return Ok(());
        }
        let offset = self.durable_end;
        let mut bytes = offset.to_be_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&offset.to_be_bytes()).to_be_bytes());
        let path = self.dir.join(RECOVERY_POINT_FILE);
        disk::write_atomic(&*self.disk, &path, &bytes).map_err(io_err(&path))?;
        self.recovery_point = offset;
        Ok(())
    }

    fn segment_index_for(&self, offset: i64) -> usize {
        self.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1)
    }

    /// Reads whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (but at least one batch if `at_least_one`), never past
    /// `upper` (exclusive; the HW for consumers). Every batch's CRC is
    /// checked after the read, pairing the check made before the write.
    pub fn read(&self, offset: i64, max_bytes: usize, at_least_one: bool, upper: i64) -> Result<ReadResult, LogError> {
        self.ensure_online()?;
        if offset >= upper || offset < self.log_start_offset() {
            return Ok(ReadResult::default());
        }
        let mut i = self.segment_index_for(offset);
        while i + 1 < self.segments.len() && self.segments[i].next_offset <= offset {
            i += 1;
        }
        let mut out = Vec::new();
        let mut pos = self.segments[i].position_for(offset);
        // Skip the batches wholly before `offset` in the first segment.
        // Base offsets are outside the batch CRC, so their continuity is
        // checked here: a flipped bit there must not move records.
        let first = &self.segments[i];
        let mut expected: Option<i64> = None;
        while let Some(h) = first.header_at(pos)? {
            if let Some(e) = expected.filter(|e| *e != h.base_offset) {
                return Err(first.corrupt(pos, BatchError::OffsetMismatch { expected: e, found: h.base_offset }));
            }
            if h.last_offset() >= offset {
                if h.base_offset > offset {
                    return Err(first.corrupt(pos, BatchError::OffsetMismatch { expected: offset, found: h.base_offset }));
                }
                break;
            }
            expected = Some(h.last_offset() + 1);
            pos += h.total_len() as u64;
        }
        // Then whole batches, segment after segment, until the budget, the
        // upper bound or the end of the log.
        for seg in &self.segments[i..] {
            let budget = max_bytes.saturating_sub(out.len());
            let mut want = budget.min((seg.size.saturating_sub(pos)) as usize);
            if at_least_one && out.is_empty() {
                if let Some(Ok(h)) = segment::read_header(&*seg.file, pos, seg.size).map_err(io_err(seg.path()))? {
                    want = want.max(h.total_len());
                }
            }
            if want == 0 {
                if pos < seg.size {
                    break;
                }
                pos = 0;
                continue;
            }
            let mut bytes = vec![0u8; want];
            seg.file.read_at(pos, &mut bytes).map_err(io_err(seg.path()))?;
            let mut keep = 0;
            let mut stop = false;
            for item in batch::Batches::new(&bytes) {
                let Ok((h, _, end)) = item else {
                    stop = true; // a partial batch at the end of the window
                    break;
                };
                if let Some(e) = expected.filter(|e| *e != h.base_offset) {
                    return Err(seg.corrupt(pos + keep as u64, BatchError::OffsetMismatch { expected: e, found: h.base_offset }));
                }
                if h.last_offset() >= upper {
                    stop = true;
                    break;
                }
                if let Err(reason) = batch::validate(&bytes[keep..end]) {
                    return Err(seg.corrupt(pos + keep as u64, reason));
                }
                expected = Some(h.last_offset() + 1);
                keep = end;
            }
            out.extend_from_slice(&bytes[..keep]);
            if stop || pos + (keep as u64) < seg.size {
                break;
            }
            pos = 0;
        }
        Ok(ReadResult { bytes: out })
    }

    /// The first record at or after `timestamp` below `upper`: (offset, its timestamp).
    pub fn offset_for_timestamp(&self, timestamp: i64, upper: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.ensure_online()?;
        for seg in &self.segments {
            if seg.max_timestamp < timestamp || seg.base_offset >= upper {
                continue;
            }
            let mut pos = seg.position_for_timestamp(timestamp);
            while let Some(h) = seg.header_at(pos)? {
                if h.base_offset >= upper {
                    break;
                }
                if h.max_timestamp >= timestamp {
                    let found = self.records_of(seg, pos, &h)?.into_iter().find(|(o, ts)| *ts >= timestamp && *o < upper);
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                pos += h.total_len() as u64;
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp below `upper` (the first such if tied).
    pub fn max_timestamp_record(&self, upper: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.ensure_online()?;
        let mut best: Option<(i64, i64)> = None;
        for seg in &self.segments {
            if seg.base_offset >= upper || best.is_some_and(|(_, ts)| seg.max_timestamp <= ts) {
                continue;
            }
            let mut pos = 0;
            while let Some(h) = seg.header_at(pos)? {
                if h.base_offset >= upper {
                    break;
                }
                if best.is_none_or(|(_, ts)| h.max_timestamp > ts) {
                    for (o, ts) in self.records_of(seg, pos, &h)? {
                        if o < upper && best.is_none_or(|(_, b)| ts > b) {
                            best = Some((o, ts));
                        }
                    }
                }
                pos += h.total_len() as u64;
            }
        }
        Ok(best)
    }

    /// (offset, timestamp) of every record of the batch at `pos`, decompressing it.
    fn records_of(&self, seg: &Segment, pos: u64, h: &BatchHeader) -> Result<Vec<(i64, i64)>, LogError> {
        let mut buf = vec![0u8; h.total_len()];
        seg.file.read_at(pos, &mut buf).map_err(io_err(seg.path()))?;
        let corrupt = |reason| seg.corrupt(pos, reason);
        batch::validate(&buf).map_err(corrupt)?;
        let mut bytes = bytes::Bytes::from(buf);
        let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| {
            tracing::error!(segment = %seg.path().display(), position = pos, error = %e, "cannot decode a stored batch");
            corrupt(BatchError::BadLength(h.batch_length))
        })?;
        Ok(set.records.iter().map(|r| (r.offset, r.timestamp)).collect())
    }

    /// Deletes whole sealed segments beyond the retention limits; returns how
    /// many. The active segment is never deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let mut deleted = 0;
        let mut total = self.size_bytes() as i64;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            // Only data below the HW may go: it has been durable and visible.
            if oldest.next_offset > self.high_watermark() {
                break;
            }
            let by_time = self.config.retention_ms >= 0 && oldest.max_timestamp >= 0 && now_ms - oldest.max_timestamp > self.config.retention_ms;
            let by_size = self.config.retention_bytes >= 0 && total - oldest.size as i64 >= self.config.retention_bytes;
            if !by_time && !by_size {
                break;
            }
            let seg = self.delete_oldest_segment()?;
            total -= seg.size as i64;
            tracing::info!(dir = %self.dir.display(), base = seg.base_offset, by_time, by_size, "retention deleted a segment");
            deleted += 1;
        }
        if deleted > 0 {
            self.prune_snapshots();
            let start = self.log_start_offset();
            self.epochs.truncate_from_start(start).map_err(io_err(&self.dir))?;
        }
        Ok(deleted)
    }

    /// Deletes the oldest segment durably (its files, then the directory
    /// synced) before the next may go: a file system may persist unsynced
    /// unlinks in any order, and a crash must leave the log a contiguous
    /// run of segments, never one with a hole that recovery calls corrupt.
    fn delete_oldest_segment(&mut self) -> Result<Segment, LogError> {
        assert!(self.segments.len() > 1, "the active segment is never deleted");
        let seg = self.segments.remove(0);
        seg.delete(&*self.disk, &self.dir).map_err(io_err(&self.dir))?;
        self.disk.sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok(seg)
    }

    /// Deletes every sealed segment that lies wholly below `offset` (and
    /// below the HW): the log then starts at the first segment kept. Used by
    /// the group coordinator once it has rewritten its live state above
    /// `offset`. Returns how many segments went.
    pub fn delete_segments_before(&mut self, offset: i64) -> Result<usize, LogError> {
        self.ensure_online()?;
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[0].next_offset <= offset.min(self.high_watermark()) {
            self.delete_oldest_segment()?;
            deleted += 1;
        }
        if deleted > 0 {
            self.prune_snapshots();
            let start = self.log_start_offset();
            self.epochs.truncate_from_start(start).map_err(io_err(&self.dir))?;
        }
        Ok(deleted)
    }

    /// The latest leader epoch this log knows (-1 for none): what a
    /// follower sends as its last fetched epoch.
    pub fn latest_epoch(&self) -> i32 {
        self.epochs.latest().map_or(-1, |(e, _)| e)
    }

    /// Cuts the log back to end at `offset` (rounded down to a batch start),
    /// durably, and reopens it so segments, indexes and producer state are
    /// rebuilt as recovery builds them: a follower whose tail diverged from
    /// its leader's. Epochs that began at or after the new end are gone.
    /// At or below the log start, the log is emptied and begins at `offset`.
    pub fn truncate_to(mut self, offset: i64, now_ms: i64) -> Result<PartitionLog, LogError> {
        self.ensure_online()?;
        let dir = self.dir.clone();
        if offset >= self.log_end_offset() {
            self.epochs.truncate_from_end(offset).map_err(io_err(&dir))?;
            return Ok(self);
        }
        if offset <= self.log_start_offset() {
            return self.reset_to(offset, now_ms);
        }
        // The first batch that reaches `offset` goes, with all after it.
        let keep = self.segment_index_for(offset);
        let (mut position, mut end) = {
            let seg = &self.segments[keep];
            (seg.position_for(offset), seg.next_offset)
        };
        while let Some(h) = self.segments[keep].header_at(position)? {
            if h.last_offset() >= offset {
                end = h.base_offset;
                break;
            }
            position += h.total_len() as u64;
        }
        // In an order a crash at any step leaves a log that recovery reads
        // as the old log or a prefix of it. First the recovery point goes
        // down durably, so a log ending below the old one is not taken for
        // damaged; then the later segments go, newest first, each durably
        // (a file system may persist unsynced unlinks in any order), and
        // the kept one's indexes (it is the active segment again, whose
        // indexes recovery rebuilds by scanning); only then is its file cut.
        // Cutting first would leave, after a crash that kept the later
        // segments, a gap that the sealed segment's stale index would hide.
        self.lower_recovery_point(end)?;
        while self.segments.len() > keep + 1 {
            let seg = self.segments.pop().expect("more than kept");
            seg.delete(&*self.disk, &dir).map_err(io_err(&dir))?;
            self.disk.sync_dir(&dir).map_err(io_err(&dir))?;
        }
        let base = self.segments[keep].base_offset;
        for suffix in [segment::INDEX_SUFFIX, segment::TIME_INDEX_SUFFIX] {
            let _ = self.disk.remove_file(&dir.join(segment::file_name(base, suffix)));
        }
        self.disk.sync_dir(&dir).map_err(io_err(&dir))?;
        self.segments[keep].truncate_file(position).map_err(io_err(&dir))?;
        self.forget_above(end)?;
        self.reopen(now_ms)
    }

    fn reopen(self, now_ms: i64) -> Result<PartitionLog, LogError> {
        let (disk, dir, config, replicated) = (self.disk.clone(), self.dir.clone(), self.config.clone(), self.replicated_hw);
        drop(self);
        let mut log = PartitionLog::open(disk, &dir, config, now_ms)?;
        log.replicated_hw = replicated;
        Ok(log)
    }

    /// Empties the log, which then begins at `start`: a follower whose
    /// leader no longer has what it would fetch next (retention moved the
    /// leader's log start past it), or that keeps nothing of its own.
    pub fn reset_to(mut self, start: i64, now_ms: i64) -> Result<PartitionLog, LogError> {
        self.ensure_online()?;
        let dir = self.dir.clone();
        // As in `truncate_to`: recovery point down first, newest segment first.
        self.lower_recovery_point(0)?;
        while let Some(seg) = self.segments.pop() {
            seg.delete(&*self.disk, &dir).map_err(io_err(&dir))?;
            self.disk.sync_dir(&dir).map_err(io_err(&dir))?;
        }
        self.forget_above(i64::MIN)?;
        // (A crash before this leaves no segment: the log then starts at 0,
        // and the follower is reset again.)
        Segment::create(&*self.disk, &dir, start, now_ms, self.config.index_interval_bytes).map_err(io_err(&dir))?;
        self.disk.sync_dir(&dir).map_err(io_err(&dir))?;
        self.reopen(now_ms)
    }

    /// After a truncation to `end`: producer snapshots, epochs and the
    /// recovery point above it are gone (durably).
    fn forget_above(&mut self, end: i64) -> Result<(), LogError> {
        let dir = self.dir.clone();
        if let Ok(names) = self.disk.list(&dir) {
            for s in names.iter().filter_map(|n| parse_name(n, SNAPSHOT_SUFFIX)).filter(|s| *s > end) {
                let _ = self.disk.remove_file(&dir.join(segment::file_name(s, SNAPSHOT_SUFFIX)));
            }
        }
        self.epochs.truncate_from_end(end).map_err(io_err(&dir))?;
        self.lower_recovery_point(end)?;
        self.disk.sync_dir(&dir).map_err(io_err(&dir))
    }

    /// Makes the recovery point at most `end`, durably: a recovery after a
    /// crash scans (rather than trusts) everything from there on.
    fn lower_recovery_point(&mut self, end: i64) -> Result<(), LogError> {
        let point = end.clamp(0, self.recovery_point.max(0));
        if point == self.recovery_point {
            return Ok(());
        }
        let mut bytes = point.to_be_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&point.to_be_bytes()).to_be_bytes());
        let path = self.dir.join(RECOVERY_POINT_FILE);
        disk::write_atomic(&*self.disk, &path, &bytes).map_err(io_err(&path))?;
        self.recovery_point = point;
        Ok(())
    }

    /// Removes the log's directory (topic deletion).
    pub fn delete(self) -> Result<(), LogError> {
        self.disk.remove_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        if let Some(parent) = self.dir.parent() {
            self.disk.sync_dir(parent).map_err(io_err(parent))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
