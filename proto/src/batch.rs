//! RecordBatch v2 headers, read without decoding the records.
//!
//! Layout (big-endian), as Kafka defines it:
//!
//! ```text
//! 0  baseOffset i64          | not covered by the CRC; the broker assigns it
//! 8  batchLength i32         | bytes after this field
//! 12 partitionLeaderEpoch i32| not covered by the CRC; the broker sets it
//! 16 magic i8 (= 2)
//! 17 crc u32                 | CRC-32C of bytes 21..end
//! 21 attributes i16          | bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control
//! 23 lastOffsetDelta i32
//! 27 baseTimestamp i64
//! 35 maxTimestamp i64
//! 43 producerId i64
//! 51 producerEpoch i16
//! 53 baseSequence i32
//! 57 recordsCount i32
//! 61 records...
//! ```

use thiserror::Error;

/// Bytes before the batch length field is counted: baseOffset + batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed batch header, up to the first record.
pub const HEADER_LEN: usize = 61;
/// The smallest legal `batchLength` (a header with no records).
pub const BATCH_LENGTH_MIN: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;
const CRC_START: usize = 21;

/// The producer id of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// The sequence of a batch written without idempotence.
pub const NO_SEQUENCE: i32 = -1;

/// Why a buffer does not hold a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    BadMagic(i8),
    #[error("invalid batch length {0}")]
    BadLength(i32),
    #[error("batch CRC mismatch: header says {expected:#010x}, data has {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    /// The base offset is not covered by the CRC: a stored batch whose base
    /// offset does not follow its predecessor has been damaged.
    #[error("batch claims base offset {found}; the log expects {expected}")]
    OffsetMismatch { expected: i64, found: i64 },
}

/// The fixed header of one RecordBatch v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `buf`; checks the magic and the
    /// length field, not the CRC and not that the whole batch is present.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated { needed: HEADER_LEN, have: buf.len() });
        }
        let magic = buf[16] as i8;
        if magic != 2 {
            return Err(BatchError::BadMagic(magic));
        }
        let batch_length = be_i32(buf, 8);
        if batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::BadLength(batch_length));
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: be_i32(buf, 17) as u32,
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Bytes of the whole batch, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// The offset of the last record, once the base offset is assigned.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Compression codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }

    /// True when timestamps are LogAppendTime rather than CreateTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & 0x8 != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Whether the batch was written by an idempotent producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID
    }

    /// The sequence of the last record; sequences wrap from i32::MAX to 0.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }
}

/// CRC-32C over the part of `batch` the CRC covers.
pub fn crc_of(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Checks that `batch` is exactly one whole batch whose CRC matches.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if batch.len() < header.total_len() {
        return Err(BatchError::Truncated { needed: header.total_len(), have: batch.len() });
    }
    let actual = crc_of(&batch[..header.total_len()]);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch { expected: header.crc, actual });
    }
    Ok(header)
}

/// Writes the broker-assigned fields, which the CRC does not cover.
pub fn stamp(batch: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// How [`encode`] writes a batch, as a producer would.
#[derive(Debug, Clone, Copy)]
pub struct Producer {
    /// -1 for a non-idempotent producer.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The first record's sequence (-1 without idempotence).
    pub base_sequence: i32,
    pub compression: kafka_protocol::records::Compression,
    /// The first record's timestamp; record `i` gets `timestamp + i`.
    pub timestamp: i64,
}

impl Producer {
    /// A plain (non-idempotent) producer.
    pub fn plain(compression: kafka_protocol::records::Compression, timestamp: i64) -> Producer {
        Producer { producer_id: NO_PRODUCER_ID, producer_epoch: -1, base_sequence: NO_SEQUENCE, compression, timestamp }
    }
}

/// One RecordBatch v2 holding `(key, value)` records, encoded with the
/// kafka-protocol encoder: for tests, tools and the simulator's clients.
pub fn encode(records: &[(Option<bytes::Bytes>, Option<bytes::Bytes>)], producer: &Producer) -> bytes::Bytes {
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: producer.producer_id,
            producer_epoch: producer.producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever `offset - sequence`
            // changes, so the sequence must advance with the offset.
            sequence: producer.base_sequence + i as i32,
            timestamp: producer.timestamp + i as i64,
            key: key.clone(),
            value: value.clone(),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression: producer.compression })
        .expect("encoding records into memory cannot fail");
    buf.freeze()
}

/// Splits a buffer of concatenated batches, checking each header and its
/// length; yields `(header, start, end)`. Stops at the first error.
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Batches { buf, pos: 0, failed: false }
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<(BatchHeader, usize, usize), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let result = BatchHeader::parse(rest).and_then(|h| {
            if rest.len() < h.total_len() {
                Err(BatchError::Truncated { needed: h.total_len(), have: rest.len() })
            } else {
                Ok(h)
            }
        });
        match result {
            Ok(h) => {
                let start = self.pos;
                self.pos += h.total_len();
                Some(Ok((h, start, self.pos)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kafka_protocol::records::Compression;

    /// `n` small records in one batch from producer 7, sequences from 0.
    pub fn encode_batch(n: i32, compression: Compression) -> Vec<u8> {
        let records: Vec<_> = (0..n).map(|i| (Some(format!("k{i}").into()), Some(format!("value {i}").into()))).collect();
        let producer = Producer { producer_id: 7, producer_epoch: 0, base_sequence: 0, compression, timestamp: 1_000 };
        encode(&records, &producer).to_vec()
    }

    #[test]
    fn parses_encoder_output() {
        for c in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let b = encode_batch(5, c);
            let h = validate(&b).unwrap();
            assert_eq!(h.records_count, 5);
            assert_eq!(h.last_offset_delta, 4);
            assert_eq!(h.compression(), c as i16);
            assert_eq!(h.producer_id, 7);
            assert_eq!(h.base_sequence, 0);
            assert_eq!(h.last_sequence(), 4);
            assert_eq!(h.max_timestamp, 1_004);
            assert_eq!(h.total_len(), b.len());
        }
    }

    #[test]
    fn stamping_keeps_the_crc() {
        let mut b = encode_batch(3, Compression::None);
        stamp(&mut b, 1234, 9);
        let h = validate(&b).unwrap();
        assert_eq!(h.base_offset, 1234);
        assert_eq!(h.partition_leader_epoch, 9);
        assert_eq!(h.last_offset(), 1236);
    }

    #[test]
    fn detects_corruption_and_truncation() {
        let b = encode_batch(3, Compression::None);
        let mut flipped = b.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(validate(&flipped), Err(BatchError::CrcMismatch { .. })));
        assert!(matches!(validate(&b[..b.len() - 1]), Err(BatchError::Truncated { .. })));
        assert!(matches!(validate(&b[..10]), Err(BatchError::Truncated { .. })));
        let mut magic = b.clone();
        magic[16] = 1;
        assert_eq!(validate(&magic), Err(BatchError::BadMagic(1)));
        let mut len = b.clone();
        len[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(validate(&len), Err(BatchError::BadLength(-5)));
    }

    #[test]
    fn iterates_concatenated_batches() {
        let mut all = encode_batch(2, Compression::None);
        all.extend(encode_batch(3, Compression::Lz4));
        let parts: Vec<_> = Batches::new(&all).collect::<Result<_, _>>().unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].2, all.len());
        let torn = &all[..all.len() - 3];
        let parts: Vec<_> = Batches::new(torn).collect();
        assert!(parts[0].is_ok());
        assert!(parts[1].is_err());
    }

    #[test]
    fn sequence_wraps() {
        let mut b = encode_batch(3, Compression::None);
        b[53..57].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.last_sequence(), 0);
    }
}
