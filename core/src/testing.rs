//! Helpers for tests: record batches as a client would send them.

use chronik_proto::batch::{encode, Producer};
use kafka_protocol::records::Compression;

/// A batch of `count` records; `producer` is `(id, epoch, base sequence)`
/// for an idempotent batch.
pub fn batch(count: i32, timestamp: i64, producer: Option<(i64, i16, i32)>, compression: Compression) -> Vec<u8> {
    let records: Vec<_> = (0..count).map(|i| (Some(format!("key-{i}").into()), Some(format!("value-{timestamp}-{i}").into()))).collect();
    let producer = match producer {
        Some((producer_id, producer_epoch, base_sequence)) => Producer { producer_id, producer_epoch, base_sequence, compression, timestamp },
        None => Producer::plain(compression, timestamp),
    };
    encode(&records, &producer).to_vec()
}

/// A plain uncompressed batch.
pub fn simple(count: i32, timestamp: i64) -> Vec<u8> {
    batch(count, timestamp, None, Compression::None)
}
