//! [`SimDisk`]: an in-memory disk that fails the way real disks do.
//!
//! Fault model (all choices come from a seeded RNG, so a seed replays):
//! - **Crash** ([`SimDisk::crash`]): every file falls back to its last synced
//!   content plus a random prefix of the writes and truncates made since,
//!   the last of which may be torn (a random prefix of its bytes). Directory
//!   entries fall back to the last [`Disk::sync_dir`] of their parent.
//! - **EIO**: reads, writes and syncs fail with the configured probabilities
//!   ([`FaultConfig`]), or on demand with [`SimDisk::fail_next`]. A failed
//!   write changes nothing; a failed sync makes nothing durable.
//! - **Bit rot**: [`SimDisk::flip_bit`] corrupts stored bytes, synced or not.
//! - **Disk full**: writes that would grow the disk past
//!   [`FaultConfig::capacity_bytes`] fail with `StorageFull`, changing nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Disk, DiskFile};

/// Probabilistic faults; the default injects none.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    pub read_error_probability: f64,
    pub write_error_probability: f64,
    pub sync_error_probability: f64,
    /// Total bytes the disk holds; `None` is unlimited.
    pub capacity_bytes: Option<u64>,
    /// Whether a crash may keep a torn prefix of the last surviving write.
    pub torn_writes: bool,
}

/// Which operation [`SimDisk::fail_next`] makes fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Sync,
}

#[derive(Debug, Clone)]
enum Change {
    Write { offset: u64, data: Vec<u8> },
    Truncate(u64),
}

#[derive(Debug, Default)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Change>,
}

fn apply(buf: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*offset as usize..end].copy_from_slice(data);
        }
        Change::Truncate(len) => buf.resize(*len as usize, 0),
    }
}

type Node = Arc<Mutex<FileData>>;

struct State {
    rng: SmallRng,
    config: FaultConfig,
    fail_next: Vec<Op>,
    /// The namespace as seen now, and as it would be after a crash.
    files: BTreeMap<PathBuf, Node>,
    durable_files: BTreeMap<PathBuf, Node>,
    dirs: BTreeSet<PathBuf>,
    durable_dirs: BTreeSet<PathBuf>,
    crashes: u64,
}

impl State {
    fn should_fail(&mut self, op: Op) -> bool {
        if let Some(i) = self.fail_next.iter().position(|o| *o == op) {
            self.fail_next.remove(i);
            return true;
        }
        let p = match op {
            Op::Read => self.config.read_error_probability,
            Op::Write => self.config.write_error_probability,
            Op::Sync => self.config.sync_error_probability,
        };
        p > 0.0 && self.rng.gen_bool(p.min(1.0))
    }

    fn used_bytes(&self) -> u64 {
        self.files.values().map(|n| n.lock().expect("file lock").current.len() as u64).sum()
    }
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated EIO on {what}"))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

/// An in-memory, fault-injecting [`Disk`]. Clones share the same disk, so a
/// test can keep one across a simulated process crash and restart.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    pub fn new(seed: u64) -> SimDisk {
        SimDisk::with_faults(seed, FaultConfig::default())
    }

    pub fn with_faults(seed: u64, config: FaultConfig) -> SimDisk {
        let root = PathBuf::new();
        SimDisk {
            state: Arc::new(Mutex::new(State {
                rng: SmallRng::seed_from_u64(seed),
                config,
                fail_next: Vec::new(),
                files: BTreeMap::new(),
                durable_files: BTreeMap::new(),
                dirs: BTreeSet::from([root.clone()]),
                durable_dirs: BTreeSet::from([root]),
                crashes: 0,
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("sim disk lock")
    }

    pub fn set_faults(&self, config: FaultConfig) {
        self.state().config = config;
    }

    /// Makes the next operation of kind `op` fail with EIO.
    pub fn fail_next(&self, op: Op) {
        self.state().fail_next.push(op);
    }

    /// Simulates power loss: unsynced data and directory changes are lost,
    /// except a random prefix of them (possibly torn). Open handles keep
    /// pointing at the pre-crash files and must not be used afterwards.
    pub fn crash(&self) {
        let mut st = self.state();
        st.crashes += 1;
        st.fail_next.clear();
        let torn = st.config.torn_writes;
        let durable: Vec<(PathBuf, Node)> = st.durable_files.iter().map(|(p, n)| (p.clone(), n.clone())).collect();
        let mut files = BTreeMap::new();
        for (path, node) in durable {
            let (content, unsynced) = {
                let d = node.lock().expect("file lock");
                (d.durable.clone(), d.unsynced.clone())
            };
            let mut content = content;
            let keep = st.rng.gen_range(0..=unsynced.len());
            for (i, change) in unsynced.iter().take(keep).enumerate() {
                match change {
                    Change::Write { offset, data } if torn && i + 1 == keep && !data.is_empty() => {
                        let cut = st.rng.gen_range(0..=data.len());
                        apply(&mut content, &Change::Write { offset: *offset, data: data[..cut].to_vec() });
                    }
                    _ => apply(&mut content, change),
                }
            }
            // A fresh node: the pre-crash handles must not alias new files.
            let fresh = FileData { current: content.clone(), durable: content, unsynced: Vec::new() };
            files.insert(path, Arc::new(Mutex::new(fresh)));
        }
        // A directory survives only if its entry, and its parent's, and so on
        // up to the root, were synced; a file only if its directory survives.
        let dirs: BTreeSet<PathBuf> = st
            .durable_dirs
            .iter()
            .filter(|d| d.ancestors().skip(1).all(|a| a.as_os_str().is_empty() || st.durable_dirs.contains(a)))
            .cloned()
            .chain(std::iter::once(PathBuf::new()))
            .collect();
        files.retain(|path, _| path.parent().is_none_or(|p| dirs.contains(p)));
        st.durable_files = files.clone();
        st.files = files;
        st.durable_dirs = dirs.clone();
        st.dirs = dirs;
    }

    /// Flips one bit of the stored content of `path` at `offset`, in both
    /// the current and the durable copy (bit rot on the medium).
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let st = self.state();
        let node = st.files.get(path).ok_or_else(|| not_found(path))?;
        let mut guard = node.lock().expect("file lock");
        let d = &mut *guard;
        for buf in [&mut d.current, &mut d.durable] {
            if let Some(b) = buf.get_mut(offset as usize) {
                *b ^= 1 << (bit % 8);
            }
        }
        Ok(())
    }

    /// Bytes currently stored (what disk-full capacity is compared with).
    pub fn used_bytes(&self) -> u64 {
        self.state().used_bytes()
    }

    /// The fault settings in force.
    pub fn faults(&self) -> FaultConfig {
        self.state().config.clone()
    }

    /// How many times [`SimDisk::crash`] ran.
    pub fn crashes(&self) -> u64 {
        self.state().crashes
    }

    fn parent_exists(st: &State, path: &Path) -> bool {
        path.parent().is_none_or(|p| st.dirs.contains(p))
    }
}

struct SimFile {
    disk: SimDisk,
    node: Node,
}

impl DiskFile for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.disk.state().should_fail(Op::Read) {
            return Err(eio("read"));
        }
        let d = self.node.lock().expect("file lock");
        let end = offset as usize + buf.len();
        if end > d.current.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of file"));
        }
        buf.copy_from_slice(&d.current[offset as usize..end]);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.disk.state();
        if st.should_fail(Op::Write) {
            return Err(eio("write"));
        }
        let len = self.node.lock().expect("file lock").current.len() as u64;
        let growth = (offset + data.len() as u64).saturating_sub(len);
        if let Some(cap) = st.config.capacity_bytes {
            if growth > 0 && st.used_bytes() + growth > cap {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "simulated disk full"));
            }
        }
        drop(st);
        let change = Change::Write { offset, data: data.to_vec() };
        let mut d = self.node.lock().expect("file lock");
        apply(&mut d.current, &change);
        d.unsynced.push(change);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.node.lock().expect("file lock").current.len() as u64)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let change = Change::Truncate(len);
        let mut d = self.node.lock().expect("file lock");
        apply(&mut d.current, &change);
        d.unsynced.push(change);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        if self.disk.state().should_fail(Op::Sync) {
            return Err(eio("sync"));
        }
        let mut d = self.node.lock().expect("file lock");
        d.durable = d.current.clone();
        d.unsynced.clear();
        Ok(())
    }
}

impl Disk for SimDisk {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let mut st = self.state();
        let node = match st.files.get(path) {
            Some(n) => n.clone(),
            None if create => {
                if !Self::parent_exists(&st, path) || st.dirs.contains(path) {
                    return Err(not_found(path));
                }
                let n: Node = Arc::default();
                st.files.insert(path.to_path_buf(), n.clone());
                n
            }
            None => return Err(not_found(path)),
        };
        Ok(Arc::new(SimFile { disk: self.clone(), node }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state();
        for p in path.ancestors() {
            if st.files.contains_key(p) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is a file", p.display())));
            }
            st.dirs.insert(p.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let mut names: Vec<String> = st
            .files
            .keys()
            .chain(st.dirs.iter())
            .filter(|p| p.parent() == Some(dir) && p.as_os_str() != dir.as_os_str())
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.state();
        st.files.contains_key(path) || st.dirs.contains(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.state().files.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state();
        if !st.dirs.contains(path) {
            return Err(not_found(path));
        }
        st.files.retain(|p, _| !p.starts_with(path));
        st.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state();
        if !Self::parent_exists(&st, to) {
            return Err(not_found(to));
        }
        let node = st.files.remove(from).ok_or_else(|| not_found(from))?;
        st.files.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state();
        if st.should_fail(Op::Sync) {
            return Err(eio("directory sync"));
        }
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let in_dir = |p: &Path| p.parent() == Some(dir);
        st.durable_files.retain(|p, _| !in_dir(p));
        let current: Vec<(PathBuf, Node)> =
            st.files.iter().filter(|(p, _)| in_dir(p)).map(|(p, n)| (p.clone(), n.clone())).collect();
        st.durable_files.extend(current);
        // The subdirectory entries in `dir` become durable too; `dir`'s own
        // entry is durable only once its parent is synced.
        st.durable_dirs.retain(|p| !(in_dir(p)));
        let dirs: Vec<PathBuf> = st.dirs.iter().filter(|p| in_dir(p)).cloned().collect();
        st.durable_dirs.extend(dirs);
        Ok(())
    }
}
