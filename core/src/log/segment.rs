//! One segment of a partition log: a `.log` file of record batches stored as
//! the client sent them (with the broker's base offset stamped in), and two
//! sparse indexes kept in memory and written beside it when it is sealed:
//!
//! - `.index`: `(relative offset u32, file position u32)` every
//!   `index.interval.bytes`, pointing at a batch start;
//! - `.timeindex`: `(max timestamp so far i64, relative offset u32)` at the
//!   same points — every batch before that offset has a max timestamp at or
//!   below the entry's; a sealed segment's last entry is its max timestamp
//!   at its end offset.
//!
//! All integers big-endian. A missing or malformed index is rebuilt by
//! scanning the `.log`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chronik_proto::batch::{self, BatchError, BatchHeader, HEADER_LEN};

use crate::disk::{Disk, DiskFile};

pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// `00000000000000001234.log` style file names, sortable as text.
pub fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// How a scan of a segment file ended.
#[derive(Debug)]
pub struct ScanEnd {
    /// Bytes of valid batches from the start.
    pub valid_len: u64,
    /// Why the scan stopped before the file's end, if it did.
    pub invalid: Option<BatchError>,
}

pub struct Segment {
    pub base_offset: i64,
    pub file: Arc<dyn DiskFile>,
    path: PathBuf,
    /// Bytes of whole batches in the file.
    pub size: u64,
    /// The offset after the last batch.
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// When the first batch was appended (for segment.ms), by the clock.
    pub created_ms: i64,
    pub offset_index: Vec<OffsetEntry>,
    pub time_index: Vec<TimeEntry>,
    bytes_since_index: u64,
    index_interval_bytes: u64,
}

/// Reads the batch header at `position`, or `None` if the file ends first.
pub fn read_header(file: &dyn DiskFile, position: u64, file_len: u64) -> io::Result<Option<Result<BatchHeader, BatchError>>> {
    if position + HEADER_LEN as u64 > file_len {
        return Ok(None);
    }
    let mut buf = [0u8; HEADER_LEN];
    file.read_at(position, &mut buf)?;
    Ok(Some(BatchHeader::parse(&buf)))
}

impl Segment {
    /// Creates a new empty segment file (durably: file and directory entry).
    pub fn create(disk: &dyn Disk, dir: &Path, base_offset: i64, now_ms: i64, index_interval_bytes: u64) -> io::Result<Segment> {
        let path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let file = disk.open(&path, true)?;
        file.truncate(0)?;
        file.sync()?;
        disk.sync_dir(dir)?;
        Ok(Segment::empty(path, file, base_offset, now_ms, index_interval_bytes))
    }

    fn empty(path: PathBuf, file: Arc<dyn DiskFile>, base_offset: i64, now_ms: i64, index_interval_bytes: u64) -> Segment {
        Segment {
            base_offset,
            file,
            path,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            created_ms: now_ms,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: 0,
            index_interval_bytes: index_interval_bytes.max(1),
        }
    }

    /// Opens an existing segment and rebuilds its state by scanning every
    /// batch, verifying CRCs. Stops at the first invalid batch: the caller
    /// decides whether that is a torn tail (truncate) or corruption.
    /// `on_batch` sees every valid batch in order.
    pub fn recover(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
        index_interval_bytes: u64,
        mut on_batch: impl FnMut(&BatchHeader),
    ) -> io::Result<(Segment, ScanEnd)> {
        let path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let file = disk.open(&path, false)?;
        let file_len = file.len()?;
        let mut seg = Segment::empty(path, file.clone(), base_offset, now_ms, index_interval_bytes);
        let mut invalid = None;
        let mut buf = Vec::new();
        while seg.size < file_len {
            let header = match read_header(&*file, seg.size, file_len)? {
                None => {
                    invalid = Some(BatchError::Truncated { needed: HEADER_LEN, have: (file_len - seg.size) as usize });
                    break;
                }
                Some(Err(e)) => {
                    invalid = Some(e);
                    break;
                }
                Some(Ok(h)) => h,
            };
            let len = header.total_len() as u64;
            if seg.size + len > file_len {
                invalid = Some(BatchError::Truncated { needed: len as usize, have: (file_len - seg.size) as usize });
                break;
            }
            buf.resize(len as usize, 0);
            file.read_at(seg.size, &mut buf)?;
            if let Err(e) = batch::validate(&buf) {
                invalid = Some(e);
                break;
            }
            if header.base_offset != seg.next_offset {
                invalid = Some(BatchError::BadLength(-1));
                tracing::error!(
                    segment = %seg.path.display(),
                    expected = seg.next_offset,
                    found = header.base_offset,
                    "batch offsets are not contiguous"
                );
                break;
            }
            on_batch(&header);
            seg.note_append(&header, len);
        }
        let end = ScanEnd { valid_len: seg.size, invalid };
        Ok((seg, end))
    }

    /// Opens a sealed segment whose end offset is known (the next segment's
    /// base), trusting its indexes if they are present and well formed, and
    /// scanning otherwise.
    pub fn open_sealed(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: i64,
        next_offset: i64,
        now_ms: i64,
        index_interval_bytes: u64,
    ) -> io::Result<(Segment, ScanEnd)> {
        let path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let file = disk.open(&path, false)?;
        let size = file.len()?;
        let mut seg = Segment::empty(path, file, base_offset, now_ms, index_interval_bytes);
        seg.size = size;
        seg.next_offset = next_offset;
        if seg.load_indexes(disk, dir).unwrap_or(false) {
            return Ok((seg, ScanEnd { valid_len: size, invalid: None }));
        }
        tracing::info!(segment = %seg.path.display(), "rebuilding missing or invalid segment indexes");
        let (seg, end) = Segment::recover(disk, dir, base_offset, now_ms, index_interval_bytes, |_| {})?;
        if end.invalid.is_none() {
            seg.write_indexes(disk, dir)?;
        }
        Ok((seg, end))
    }

    fn load_indexes(&mut self, disk: &dyn Disk, dir: &Path) -> io::Result<bool> {
        let Some(index) = crate::disk::read_all(disk, &dir.join(file_name(self.base_offset, INDEX_SUFFIX)))? else {
            return Ok(false);
        };
        let Some(time) = crate::disk::read_all(disk, &dir.join(file_name(self.base_offset, TIME_INDEX_SUFFIX)))? else {
            return Ok(false);
        };
        if index.len() % 8 != 0 || time.len() % 12 != 0 || time.is_empty() {
            return Ok(false);
        }
        let offsets: Vec<OffsetEntry> = index
            .chunks_exact(8)
            .map(|c| OffsetEntry {
                relative_offset: u32::from_be_bytes(c[0..4].try_into().expect("4")),
                position: u32::from_be_bytes(c[4..8].try_into().expect("4")),
            })
            .collect();
        let times: Vec<TimeEntry> = time
            .chunks_exact(12)
            .map(|c| TimeEntry {
                timestamp: i64::from_be_bytes(c[0..8].try_into().expect("8")),
                relative_offset: u32::from_be_bytes(c[8..12].try_into().expect("4")),
            })
            .collect();
        let span = (self.next_offset - self.base_offset) as u64;
        let offsets_ok = offsets.windows(2).all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position)
            && offsets.iter().all(|e| (e.position as u64) < self.size && (e.relative_offset as u64) < span);
        let last = *times.last().expect("non-empty");
        let times_ok = times.windows(2).all(|w| w[0].timestamp <= w[1].timestamp && w[0].relative_offset <= w[1].relative_offset)
            && last.relative_offset as u64 == span;
        if !offsets_ok || !times_ok {
            return Ok(false);
        }
        self.max_timestamp = last.timestamp;
        self.offset_index = offsets;
        self.time_index = times;
        self.time_index.pop(); // the seal entry is re-added when written again
        Ok(true)
    }

    /// Writes both indexes durably (called when the segment is sealed).
    pub fn write_indexes(&self, disk: &dyn Disk, dir: &Path) -> io::Result<()> {
        let mut index = Vec::with_capacity(self.offset_index.len() * 8);
        for e in &self.offset_index {
            index.extend_from_slice(&e.relative_offset.to_be_bytes());
            index.extend_from_slice(&e.position.to_be_bytes());
        }
        let mut time = Vec::with_capacity((self.time_index.len() + 1) * 12);
        let seal = TimeEntry { timestamp: self.max_timestamp, relative_offset: (self.next_offset - self.base_offset) as u32 };
        for e in self.time_index.iter().chain(std::iter::once(&seal)) {
            time.extend_from_slice(&e.timestamp.to_be_bytes());
            time.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        for (suffix, data) in [(INDEX_SUFFIX, index), (TIME_INDEX_SUFFIX, time)] {
            let f = disk.open(&dir.join(file_name(self.base_offset, suffix)), true)?;
            f.truncate(0)?;
            f.write_at(0, &data)?;
            f.sync()?;
        }
        disk.sync_dir(dir)
    }

    /// Updates size, offsets and indexes for a batch just written at `self.size`.
    pub fn note_append(&mut self, h: &BatchHeader, len: u64) {
        assert_eq!(h.base_offset, self.next_offset, "segment offsets must be contiguous");
        if self.size == 0 || self.bytes_since_index >= self.index_interval_bytes {
            let relative_offset = (h.base_offset - self.base_offset) as u32;
            self.offset_index.push(OffsetEntry { relative_offset, position: self.size as u32 });
            self.time_index.push(TimeEntry { timestamp: self.max_timestamp, relative_offset });
            self.bytes_since_index = 0;
        }
        self.size += len;
        self.bytes_since_index += len;
        self.next_offset = h.last_offset() + 1;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
    }

    /// A file position at or before the batch containing `offset`.
    pub fn position_for(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).max(0) as u32;
        let i = self.offset_index.partition_point(|e| e.relative_offset <= rel);
        if i == 0 {
            0
        } else {
            self.offset_index[i - 1].position as u64
        }
    }

    /// A file position at or before the first batch whose max timestamp may
    /// reach `timestamp`.
    pub fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        let i = self.time_index.partition_point(|e| e.timestamp < timestamp);
        if i == 0 {
            0
        } else {
            self.position_for(self.base_offset + self.time_index[i - 1].relative_offset as i64)
        }
    }

    /// Cuts the file back to `len` bytes (a torn or corrupt tail) durably.
    pub fn truncate_file(&mut self, len: u64) -> io::Result<()> {
        self.file.truncate(len)?;
        self.file.sync()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A corruption error at `position` of this segment.
    pub fn corrupt(&self, position: u64, reason: BatchError) -> super::LogError {
        super::LogError::Corrupt { path: self.path.display().to_string(), position, reason }
    }

    /// The batch header at `position`, or `None` past the last whole header.
    pub fn header_at(&self, position: u64) -> Result<Option<BatchHeader>, super::LogError> {
        match read_header(&*self.file, position, self.size) {
            Err(source) => Err(super::LogError::Io { path: self.path.display().to_string(), source }),
            Ok(None) => Ok(None),
            Ok(Some(Err(reason))) => Err(self.corrupt(position, reason)),
            Ok(Some(Ok(h))) => Ok(Some(h)),
        }
    }

    /// Removes the segment's files (retention, topic deletion).
    pub fn delete(&self, disk: &dyn Disk, dir: &Path) -> io::Result<()> {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            match disk.remove_file(&dir.join(file_name(self.base_offset, suffix))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
