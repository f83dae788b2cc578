//! The storage seam: every byte Chronik persists goes through [`Disk`].
//!
//! Production uses [`FsDisk`] (the local file system); tests and the
//! simulator use [`SimDisk`], an in-memory disk that injects faults.
//!
//! # Durability contract
//! Implementations must behave like a POSIX file system on a disk that may
//! lose power at any moment:
//! - [`DiskFile::write_at`] and [`DiskFile::truncate`] change what later reads
//!   see at once, but are **not durable** until [`DiskFile::sync`] returns Ok.
//!   After a crash, any suffix of the unsynced operations on a file may be
//!   missing, and the last surviving write may be torn (only a prefix of it
//!   present).
//! - Creating, removing or renaming a directory entry is **not durable** until
//!   [`Disk::sync_dir`] on its parent directory returns Ok. A file whose data
//!   was synced but whose directory entry was not may vanish on crash.
//! - [`Disk::rename`] atomically replaces the target: a reader sees the old
//!   file or the new one, never a mix; after a crash (before `sync_dir`) either
//!   may be present.
//! - A failed `sync` leaves durability unknown: the caller must not assume any
//!   unsynced data survived and must not retry as if it had (fsyncgate). The
//!   log treats it as fatal for that partition.
//! - Reads may fail (EIO) or return corrupted bytes (bit rot); callers that
//!   care check CRCs.
//!
//! Paths are relative to the disk's root and use `/` separators.

mod fs;
mod sim;
#[cfg(test)]
mod suite;

pub use fs::FsDisk;
pub use sim::{FaultConfig, Op as DiskOp, SimDisk};

use std::io;
use std::path::Path;
use std::sync::Arc;

/// An open file with positional I/O. Cloned handles share one file.
pub trait DiskFile: Send + Sync {
    /// Fills `buf` from `offset`; `UnexpectedEof` if the file is shorter.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset`, extending the file (with zeros over
    /// any gap) if needed. Not durable until [`DiskFile::sync`].
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// The current length, including unsynced writes.
    fn len(&self) -> io::Result<u64>;
    /// Cuts or extends the file to `len`. Not durable until `sync`.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Makes every earlier write and truncate of this file durable.
    fn sync(&self) -> io::Result<()>;
}

/// A directory tree of files. See the module docs for the contract.
pub trait Disk: Send + Sync + 'static {
    /// Opens `path` for reading and writing, creating an empty file if
    /// `create` is true and it does not exist; `NotFound` otherwise.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>>;
    /// Creates `path` and its missing parents; Ok if it exists.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries directly inside `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything below it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Atomically moves `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, removals, renames) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Replaces `path` with `data` durably: write a temporary file, sync it,
/// rename it over `path`, sync the directory.
pub fn write_atomic(disk: &dyn Disk, path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new(""));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let f = disk.open(&tmp, true)?;
        f.truncate(0)?;
        f.write_at(0, data)?;
        f.sync()?;
    }
    disk.rename(&tmp, path)?;
    disk.sync_dir(dir)
}

/// Reads a whole file, or `None` if it does not exist.
pub fn read_all(disk: &dyn Disk, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let f = match disk.open(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.len()?;
    let mut buf = vec![0; len as usize];
    f.read_at(0, &mut buf)?;
    Ok(Some(buf))
}
