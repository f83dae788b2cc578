//! Helpers for tests: record batches built with the kafka-protocol encoder,
//! as a client would send them.

use bytes::BytesMut;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// A batch of `count` records; `producer` is `(id, epoch, base sequence)`
/// for an idempotent batch.
pub fn batch(count: i32, timestamp: i64, producer: Option<(i64, i16, i32)>, compression: Compression) -> Vec<u8> {
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever `offset - sequence` changes.
            sequence: base_sequence + i,
            timestamp: timestamp + i as i64,
            key: Some(format!("key-{i}").into()),
            value: Some(format!("value-{timestamp}-{i}").into()),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression })
        .expect("encode batch");
    buf.to_vec()
}

/// A plain uncompressed batch.
pub fn simple(count: i32, timestamp: i64) -> Vec<u8> {
    batch(count, timestamp, None, Compression::None)
}
