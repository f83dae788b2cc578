//! Counting the records inside a batch, decompressing as a stream.
//!
//! A batch header states its record count, and the broker assigns offsets
//! from it; a client that lies (or a bug) would make offsets overlap. So the
//! broker checks the count against the records actually present, walking
//! their length prefixes. Compressed batches are decompressed as a stream
//! into nothing — memory stays small — and the decompressed size is capped
//! so that a compression bomb is refused instead of burning CPU and memory.

use std::io::{self, BufRead, BufReader, Read};

use thiserror::Error;

use crate::batch::{BatchError, BatchHeader, HEADER_LEN};

/// The most decompressed bytes one batch may hold.
pub const DECOMPRESSED_BATCH_BYTES_MAX: u64 = 64 << 20;

#[derive(Debug, Error)]
pub enum RecordsError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    #[error("cannot decompress the batch: {0}")]
    Decompress(io::Error),
    #[error("decompressed batch exceeds {DECOMPRESSED_BATCH_BYTES_MAX} bytes")]
    TooLarge,
    #[error("record framing is invalid: {0}")]
    Framing(&'static str),
}

/// The number of records in `batch` (one whole batch, header included).
pub fn count_records(batch: &[u8]) -> Result<i32, RecordsError> {
    for_each_record(batch, &mut |_| {})
}

/// Every record's timestamp (base timestamp plus its delta), in order; for
/// checking them against the broker's clock when the header's bounds fail.
pub fn record_timestamps(batch: &[u8]) -> Result<Vec<i64>, RecordsError> {
    let base = BatchHeader::parse(batch)?.base_timestamp;
    let mut out = Vec::new();
    for_each_record(batch, &mut |delta| out.push(base.wrapping_add(delta)))?;
    Ok(out)
}

fn for_each_record(batch: &[u8], each: &mut dyn FnMut(i64)) -> Result<i32, RecordsError> {
    let h = BatchHeader::parse(batch)?;
    let body = &batch[HEADER_LEN..h.total_len().min(batch.len())];
    match h.compression() {
        0 => walk(body, u64::MAX, each),
        1 => walk(flate2::read::MultiGzDecoder::new(body), DECOMPRESSED_BATCH_BYTES_MAX, each),
        2 => walk(SnappyReader::new(body)?, DECOMPRESSED_BATCH_BYTES_MAX, each),
        3 => walk(lz4::Decoder::new(body).map_err(RecordsError::Decompress)?, DECOMPRESSED_BATCH_BYTES_MAX, each),
        4 => walk(zstd::stream::read::Decoder::new(body).map_err(RecordsError::Decompress)?, DECOMPRESSED_BATCH_BYTES_MAX, each),
        c => Err(RecordsError::UnknownCodec(c)),
    }
}

/// Walks `varint length, body` records to the end of the stream, checking
/// that each record's offset delta is its position in the batch (so the
/// count cannot be inflated with empty records). `each` sees every
/// record's timestamp delta.
fn walk(reader: impl Read, cap: u64, each: &mut dyn FnMut(i64)) -> Result<i32, RecordsError> {
    let mut r = BufReader::with_capacity(64 << 10, reader);
    let mut count: i32 = 0;
    let mut total: u64 = 0;
    loop {
        let Some(len) = read_varint(&mut r)? else { return Ok(count) };
        if len < RECORD_BODY_MIN {
            return Err(RecordsError::Framing("record shorter than its fixed fields"));
        }
        total += len as u64 + 1;
        if total > cap {
            return Err(RecordsError::TooLarge);
        }
        // attributes (1 byte), timestampDelta (varlong), offsetDelta (varint)
        let mut counted = CountingRead { inner: &mut r, used: 0 };
        skip(&mut counted, 1)?;
        let timestamp_delta = read_varint(&mut counted)?.ok_or(RecordsError::Framing("stream ends inside a record"))?;
        let offset_delta = read_varint(&mut counted)?.ok_or(RecordsError::Framing("stream ends inside a record"))?;
        let used = counted.used;
        if offset_delta != count as i64 {
            return Err(RecordsError::Framing("record offset deltas are not 0, 1, 2, ..."));
        }
        if used > len as u64 {
            return Err(RecordsError::Framing("record fields run past the record length"));
        }
        skip(&mut r, len as u64 - used)?;
        each(timestamp_delta);
        count = count.checked_add(1).ok_or(RecordsError::Framing("too many records"))?;
    }
}

/// A record body has at least: attributes, timestamp delta, offset delta,
/// key length, value length and header count, one byte each.
const RECORD_BODY_MIN: i64 = 6;

/// Counts the bytes consumed through it.
struct CountingRead<'a, R> {
    inner: &'a mut R,
    used: u64,
}

impl<R: BufRead> Read for CountingRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.used += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountingRead<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.used += amt as u64;
        self.inner.consume(amt)
    }
}

/// A zig-zag varint, or `None` at a clean end of stream.
fn read_varint(r: &mut impl BufRead) -> Result<Option<i64>, RecordsError> {
    let mut raw: u64 = 0;
    for i in 0..10 {
        let buf = r.fill_buf().map_err(RecordsError::Decompress)?;
        let Some(&b) = buf.first() else {
            return if i == 0 { Ok(None) } else { Err(RecordsError::Framing("stream ends inside a record length")) };
        };
        r.consume(1);
        raw |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(((raw >> 1) as i64) ^ -((raw & 1) as i64)));
        }
    }
    Err(RecordsError::Framing("record length varint is too long"))
}

fn skip(r: &mut impl BufRead, mut n: u64) -> Result<(), RecordsError> {
    while n > 0 {
        let buf = r.fill_buf().map_err(RecordsError::Decompress)?;
        if buf.is_empty() {
            return Err(RecordsError::Framing("stream ends inside a record"));
        }
        let take = (buf.len() as u64).min(n) as usize;
        r.consume(take);
        n -= take as u64;
    }
    Ok(())
}

/// Kafka's snappy: either one raw snappy block, or the xerial framing the
/// Java client writes (a 16-byte magic header, then `u32 length, block`).
struct SnappyReader<'a> {
    rest: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    pos: usize,
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

impl<'a> SnappyReader<'a> {
    fn new(body: &'a [u8]) -> Result<SnappyReader<'a>, RecordsError> {
        if body.starts_with(XERIAL_MAGIC) && body.len() >= XERIAL_HEADER_LEN {
            return Ok(SnappyReader { rest: &body[XERIAL_HEADER_LEN..], framed: true, block: Vec::new(), pos: 0 });
        }
        let mut r = SnappyReader { rest: &[], framed: false, block: Vec::new(), pos: 0 };
        r.block = decompress_block(body)?;
        Ok(r)
    }

    fn next_block(&mut self) -> io::Result<bool> {
        if !self.framed || self.rest.is_empty() {
            return Ok(false);
        }
        if self.rest.len() < 4 {
            return Err(io::Error::other("truncated snappy block length"));
        }
        let len = u32::from_be_bytes(self.rest[..4].try_into().expect("4 bytes")) as usize;
        let end = 4usize.checked_add(len).filter(|e| *e <= self.rest.len()).ok_or_else(|| io::Error::other("truncated snappy block"))?;
        self.block = decompress_block(&self.rest[4..end]).map_err(|e| io::Error::other(e.to_string()))?;
        self.pos = 0;
        self.rest = &self.rest[end..];
        Ok(true)
    }
}

fn decompress_block(block: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let len = snap::raw::decompress_len(block).map_err(|e| RecordsError::Decompress(io::Error::other(e)))?;
    if len as u64 > DECOMPRESSED_BATCH_BYTES_MAX {
        return Err(RecordsError::TooLarge);
    }
    snap::raw::Decoder::new().decompress_vec(block).map_err(|e| RecordsError::Decompress(io::Error::other(e)))
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::encode_batch;
    use kafka_protocol::records::Compression;

    #[test]
    fn counts_every_codec() {
        for c in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            for n in [1, 7, 300] {
                assert_eq!(count_records(&encode_batch(n, c)).unwrap(), n, "{c:?}");
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for c in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let mut b = encode_batch(20, c);
            let n = b.len();
            for i in (HEADER_LEN..n).step_by(3) {
                b[i] ^= 0x5a;
            }
            assert!(count_records(&b).is_err() || count_records(&b).unwrap() != 20, "{c:?}");
        }
    }

    #[test]
    fn empty_records_cannot_inflate_the_count() {
        // A batch of three real records with ten one-byte "records" appended.
        let mut b = encode_batch(3, Compression::None);
        b.extend_from_slice(&[0u8; 10]);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(count_records(&b), Err(RecordsError::Framing(_))));
    }

    #[test]
    fn bombs_are_refused() {
        // 100 MiB of zeros compresses to a few hundred KiB with zstd.
        let zeros = vec![0u8; 100 << 20];
        let compressed = zstd::stream::encode_all(&zeros[..], 3).unwrap();
        let mut b = encode_batch(1, Compression::None)[..HEADER_LEN].to_vec();
        b[21..23].copy_from_slice(&4i16.to_be_bytes());
        b.extend_from_slice(&compressed);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(count_records(&b), Err(RecordsError::TooLarge | RecordsError::Framing(_))));
    }
}
