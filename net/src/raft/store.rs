//! The controller quorum's Raft log and state machine, on the `Disk` seam
//! (so the simulator's faulty disk exercises them too).
//!
//! Files, under `raft/` in the data directory:
//! - `log`: the entries, back to back, each `[len u32][crc32c u32][json]`.
//!   An append is fsynced before openraft is told it is durable; a truncated
//!   tail is cut and fsynced. At start the file is read up to its first
//!   record that is short or fails its CRC (a torn, never-acknowledged
//!   append), and cut there.
//! - `vote`: the vote, replaced atomically (fsynced) before `save_vote` returns.
//! - `purged`: the last purged log id, replaced atomically before entries
//!   are dropped from memory; the file is rewritten without purged entries
//!   once they are most of it.
//! - `snapshot`: the last snapshot (the metadata image as of a log id),
//!   replaced atomically when built or installed. At start the state machine
//!   is the snapshot; openraft re-applies the committed entries after it
//!   once a leader tells it the commit index.
//! - `cluster_id`: the cluster's name, written (atomically) once this member
//!   has applied it, so a restarted member knows its cluster before it hears
//!   from a leader (the snapshot may be older than the name, or absent).
//!   Raft messages carry it (see `network.rs`).

#![allow(clippy::result_large_err)] // openraft's StorageError is large; it is its API

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chronik_core::cluster::image::{Applied, Image};
use chronik_core::disk::{read_all, write_atomic, Disk, DiskFile};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::{Cfg, Node, NodeId};

type SErr = StorageError<NodeId>;

/// Rewrite the log file once purged entries take this many bytes and most of it.
const COMPACT_BYTES: u64 = 1 << 20;

/// Under `raft/`: the cluster's name once this member has applied it.
const CLUSTER_ID_FILE: &str = "cluster_id";

fn io_err(e: std::io::Error) -> AnyError {
    AnyError::new(&e)
}

struct LogInner {
    file: Arc<dyn DiskFile>,
    /// index -> (position in the file, entry)
    entries: BTreeMap<u64, (u64, Entry<Cfg>)>,
    end: u64,
    purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

/// The Raft log; clones share it (the log reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    inner: Arc<Mutex<LogInner>>,
}

fn frame(entry: &Entry<Cfg>) -> Vec<u8> {
    let json = serde_json::to_vec(entry).expect("raft entries serialize");
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// Reads records from the start of `bytes`; returns them with their
/// positions and where the valid prefix ends. Only the last record may be
/// damaged (a torn, never-acknowledged append); a damaged record with more
/// after it, or one whose checksum holds but which does not decode, is
/// corruption of entries that may have been acknowledged: `Err`.
/// Records with their positions, and the end of the valid prefix.
type Unframed = (Vec<(u64, Entry<Cfg>)>, u64);

fn unframe(bytes: &[u8]) -> Result<Unframed, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        if pos + 8 > bytes.len() {
            break; // a torn header at the end
        }
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        let Some(body) = bytes.get(pos + 8..pos + 8 + len) else { break }; // runs past the end: torn
        if crc32c::crc32c(body) != crc {
            if pos + 8 + len == bytes.len() {
                break; // the last record, torn
            }
            return Err(format!("record at byte {pos} fails its checksum and more records follow it"));
        }
        let entry = serde_json::from_slice::<Entry<Cfg>>(body).map_err(|e| format!("record at byte {pos} does not decode: {e}"))?;
        out.push((pos as u64, entry));
        pos += 8 + len;
    }
    Ok((out, pos as u64))
}

fn read_json<T: for<'de> Deserialize<'de>>(disk: &dyn Disk, path: &Path) -> std::io::Result<Option<T>> {
    match read_all(disk, path)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
    }
}

impl LogStore {
    /// Opens (or creates) the log under `dir`, cutting a torn tail.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path) -> std::io::Result<LogStore> {
        if !disk.exists(dir) {
            disk.create_dir_all(dir)?;
            disk.sync_dir(dir.parent().unwrap_or(Path::new("")))?;
        }
        let vote = read_json(&*disk, &dir.join("vote"))?;
        let purged: Option<LogId<NodeId>> = read_json::<Option<LogId<NodeId>>>(&*disk, &dir.join("purged"))?.flatten();
        let bytes = read_all(&*disk, &dir.join("log"))?.unwrap_or_default();
        let (records, valid) = unframe(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the controller's Raft log {} is damaged: {e}; refusing to start rather than lose committed metadata (restore this node's raft/ directory from a copy)", dir.join("log").display()),
            )
        })?;
        let file = disk.open(&dir.join("log"), true)?;
        if valid < bytes.len() as u64 {
            tracing::warn!(dir = %dir.display(), at = valid, len = bytes.len(), "raft log: cutting a torn tail");
            file.truncate(valid)?;
            file.sync()?;
        }
        disk.sync_dir(dir)?;
        let after = purged.map(|p| p.index);
        let entries = records.into_iter().filter(|(_, e)| after.is_none_or(|a| e.log_id.index > a)).map(|(p, e)| (e.log_id.index, (p, e))).collect();
        Ok(LogStore {
            disk,
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(LogInner { file, entries, end: valid, purged, vote, committed: None })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().expect("raft log lock poisoned")
    }

    /// Rewrites the file with only the entries still kept.
    fn compact(&self, inner: &mut LogInner) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        let mut entries = BTreeMap::new();
        for (index, (_, e)) in std::mem::take(&mut inner.entries) {
            entries.insert(index, (bytes.len() as u64, e.clone()));
            bytes.extend_from_slice(&frame(&e));
        }
        write_atomic(&*self.disk, &self.dir.join("log"), &bytes)?;
        inner.file = self.disk.open(&self.dir.join("log"), false)?;
        inner.entries = entries;
        inner.end = bytes.len() as u64;
        Ok(())
    }
}

impl RaftLogReader<Cfg> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(&mut self, range: RB) -> Result<Vec<Entry<Cfg>>, SErr> {
        Ok(self.lock().entries.range(range).map(|(_, (_, e))| e.clone()).collect())
    }
}

impl RaftLogStorage<Cfg> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<Cfg>, SErr> {
        let inner = self.lock();
        let last = inner.entries.values().next_back().map(|(_, e)| e.log_id).or(inner.purged);
        Ok(LogState { last_purged_log_id: inner.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        let bytes = serde_json::to_vec(vote).expect("votes serialize");
        write_atomic(&*self.disk, &self.dir.join("vote"), &bytes).map_err(|e| StorageIOError::write_vote(io_err(e)))?;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        // Kept in memory only: after a restart the commit point is learned again.
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Cfg>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<Cfg>> + Send,
        I::IntoIter: Send,
    {
        let result = {
            let mut inner = self.lock();
            let mut bytes = Vec::new();
            let mut added = Vec::new();
            for e in entries {
                added.push((inner.end + bytes.len() as u64, e.clone()));
                bytes.extend_from_slice(&frame(&e));
            }
            let skip_sync = chronik_core::planted::active(chronik_core::planted::Bug::RaftAckBeforeFsync);
            let written = inner.file.write_at(inner.end, &bytes).and_then(|()| if skip_sync { Ok(()) } else { inner.file.sync() });
            if written.is_ok() {
                inner.end += bytes.len() as u64;
                for (pos, e) in added {
                    inner.entries.insert(e.log_id.index, (pos, e));
                }
            }
            written
        };
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "raft log append failed");
                let message = e.to_string();
                callback.log_io_completed(Err(e));
                Err(StorageIOError::write_logs(AnyError::error(message)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let mut inner = self.lock();
        let Some(&(pos, _)) = inner.entries.get(&log_id.index) else { return Ok(()) };
        inner.file.truncate(pos).and_then(|()| inner.file.sync()).map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        inner.end = pos;
        inner.entries.retain(|i, _| *i < log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let bytes = serde_json::to_vec(&Some(log_id)).expect("log ids serialize");
        write_atomic(&*self.disk, &self.dir.join("purged"), &bytes).map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        let mut inner = self.lock();
        inner.purged = Some(log_id);
        inner.entries.retain(|i, _| *i > log_id.index);
        let kept_from = inner.entries.values().next().map_or(inner.end, |(p, _)| *p);
        if kept_from >= COMPACT_BYTES && kept_from * 2 >= inner.end {
            let mut inner = inner;
            self.compact(&mut inner).map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        }
        Ok(())
    }
}

/// What a snapshot holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, Node>,
    image: Image,
}

struct SmInner {
    image: Image,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    snapshot: Option<(SnapshotMeta<NodeId, Node>, Vec<u8>)>,
    /// Bumped on every apply; readers wait on `changed`.
    version: u64,
    /// The cluster id as `raft/cluster_id` holds it.
    cluster_id_saved: Option<String>,
}

/// The metadata image as the applied log made it; clones share it.
#[derive(Clone)]
pub struct StateMachine {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    inner: Arc<Mutex<SmInner>>,
    changed: Arc<tokio::sync::Notify>,
}

impl StateMachine {
    pub fn open(disk: Arc<dyn Disk>, dir: &Path) -> std::io::Result<StateMachine> {
        let file: Option<SnapshotFile> = read_json(&*disk, &dir.join("snapshot"))?;
        let cluster_id_saved: Option<String> = read_json(&*disk, &dir.join(CLUSTER_ID_FILE))?;
        let inner = match file {
            Some(f) => {
                let bytes = serde_json::to_vec(&f.image).expect("images serialize");
                SmInner {
                    image: f.image,
                    last_applied: f.meta.last_log_id,
                    membership: f.meta.last_membership.clone(),
                    snapshot: Some((f.meta, bytes)),
                    version: 0,
                    cluster_id_saved,
                }
            }
            None => SmInner {
                image: Image::default(),
                last_applied: None,
                membership: StoredMembership::default(),
                snapshot: None,
                version: 0,
                cluster_id_saved,
            },
        };
        Ok(StateMachine { disk, dir: dir.to_path_buf(), inner: Arc::new(Mutex::new(inner)), changed: Arc::new(tokio::sync::Notify::new()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmInner> {
        self.inner.lock().expect("raft state machine lock poisoned")
    }

    /// The image and the log index it reflects.
    pub fn image(&self) -> (Image, u64) {
        let inner = self.lock();
        (inner.image.clone(), inner.last_applied.map_or(0, |l| l.index))
    }

    /// The cluster this member belongs to: as its applied image names it,
    /// or as it was saved before a restart; `None` before it was named.
    pub fn cluster_id(&self) -> Option<String> {
        let inner = self.lock();
        inner.image.cluster_id.clone().or_else(|| inner.cluster_id_saved.clone())
    }

    /// Saves the image's cluster id once it has one (a failure is logged and
    /// tried again at the next apply: the running node knows it anyway).
    fn save_cluster_id(&self, inner: &mut SmInner) {
        let Some(id) = inner.image.cluster_id.clone() else { return };
        if inner.cluster_id_saved.as_ref() == Some(&id) {
            return;
        }
        let bytes = serde_json::to_vec(&id).expect("strings serialize");
        match write_atomic(&*self.disk, &self.dir.join(CLUSTER_ID_FILE), &bytes) {
            Ok(()) => inner.cluster_id_saved = Some(id),
            Err(e) => tracing::warn!(error = %e, "cannot save the cluster id under raft/; trying again at the next change"),
        }
    }

    /// Reads the image without copying it.
    pub fn with_image<T>(&self, f: impl FnOnce(&Image) -> T) -> T {
        f(&self.lock().image)
    }

    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Completes after the next apply or snapshot install.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn save_snapshot(&self, meta: &SnapshotMeta<NodeId, Node>, image: &Image) -> Result<(), SErr> {
        let bytes = serde_json::to_vec(&SnapshotFile { meta: meta.clone(), image: image.clone() }).expect("snapshots serialize");
        write_atomic(&*self.disk, &self.dir.join("snapshot"), &bytes)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), io_err(e)).into())
    }
}

impl RaftSnapshotBuilder<Cfg> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Cfg>, SErr> {
        let (meta, image) = {
            let inner = self.lock();
            let id = inner.last_applied.map_or("0-0".to_string(), |l| format!("{}-{}", l.leader_id.term, l.index));
            (SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone(), snapshot_id: id }, inner.image.clone())
        };
        self.save_snapshot(&meta, &image)?;
        let bytes = serde_json::to_vec(&image).expect("images serialize");
        self.lock().snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<Cfg> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), SErr> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, SErr>
    where
        I: IntoIterator<Item = Entry<Cfg>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            for e in entries {
                inner.last_applied = Some(e.log_id);
                out.push(match e.payload {
                    EntryPayload::Blank => Applied::Done,
                    EntryPayload::Normal(command) => inner.image.apply_at(e.log_id.index, &command),
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(e.log_id), m);
                        Applied::Done
                    }
                });
            }
            inner.version += 1;
            self.save_cluster_id(&mut inner);
        }
        self.changed.notify_waiters();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta<NodeId, Node>, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), SErr> {
        let bytes = snapshot.into_inner();
        let image: Image = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        self.save_snapshot(meta, &image)?;
        {
            let mut inner = self.lock();
            inner.image = image;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some((meta.clone(), bytes));
            inner.version += 1;
            self.save_cluster_id(&mut inner);
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Cfg>>, SErr> {
        Ok(self.lock().snapshot.clone().map(|(meta, bytes)| Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}
