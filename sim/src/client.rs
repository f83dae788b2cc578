//! A minimal Kafka client for the simulation: real wire frames (the same
//! codec real clients' bytes go through) over madsim's TCP, every call
//! bounded by a timeout because a clogged link drops packets.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use chronik_proto::frame;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use chronik_proto::batch::Producer;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await.context("connect timed out")??;
        Ok(Conn { stream, correlation: 0 })
    }

    /// One request, one answer (never pipelined), within [`IO_TIMEOUT`].
    pub async fn call(&mut self, key: ApiKey, version: i16, body: RequestKind) -> anyhow::Result<ResponseKind> {
        self.call_within(key, version, body, IO_TIMEOUT).await
    }

    /// [`Conn::call`] with its own time limit (a JoinGroup may wait for the group).
    pub async fn call_within(&mut self, key: ApiKey, version: i16, body: RequestKind, limit: Duration) -> anyhow::Result<ResponseKind> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("chronik-sim")));
        let bytes = frame::encode_request(&header, &body)?;
        let correlation = self.correlation;
        let stream = &mut self.stream;
        let exchange = async move {
            stream.write_all(&bytes).await?;
            stream.flush().await?;
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).await?;
            let len = i32::from_be_bytes(len);
            if !(0..=64 << 20).contains(&len) {
                bail!("response frame of {len} bytes");
            }
            let mut body = vec![0u8; len as usize];
            stream.read_exact(&mut body).await?;
            let (got, response) = frame::decode_response(key, version, Bytes::from(body))?;
            if got != correlation {
                bail!("correlation id {got}, expected {correlation}");
            }
            Ok(response)
        };
        tokio::time::timeout(limit, exchange).await.context("request timed out")?
    }
}

/// One idempotent batch holding `values`.
pub fn batch(values: &[String], producer_id: i64, producer_epoch: i16, base_sequence: i32, compression: Compression, timestamp: i64) -> Bytes {
    let records: Vec<_> = values.iter().map(|v| (None, Some(Bytes::from(v.clone().into_bytes())))).collect();
    chronik_proto::batch::encode(&records, &Producer { producer_id, producer_epoch, base_sequence, compression, timestamp })
}

/// (offset, value) of every record at or after `from` in fetched bytes.
pub fn records(mut bytes: Bytes, from: i64) -> anyhow::Result<Vec<(i64, String)>> {
    let sets = RecordBatchDecoder::decode_all(&mut bytes)?;
    let mut out = Vec::new();
    for set in sets {
        for r in set.records {
            if r.offset >= from {
                let value = r.value.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
                out.push((r.offset, value));
            }
        }
    }
    Ok(out)
}

/// One fetch of `partition` of `topic` from `from` (no waiting, up to 1 MiB):
/// its records and the high watermark, or `None` if the broker answered
/// with an error or not at all.
pub async fn read_once(conn: &mut Conn, topic: &str, partition: i32, from: i64) -> anyhow::Result<Option<(Vec<(i64, String)>, i64)>> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    let req = FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_session_epoch(-1).with_topics(vec![FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(vec![FetchPartition::default().with_partition(partition).with_fetch_offset(from).with_partition_max_bytes(1 << 20)])]);
    let Ok(ResponseKind::Fetch(r)) = conn.call(ApiKey::Fetch, 11, RequestKind::Fetch(req)).await else { return Ok(None) };
    let pd = &r.responses[0].partitions[0];
    if pd.error_code != 0 {
        return Ok(None);
    }
    Ok(Some((records(pd.records.clone().unwrap_or_default(), from)?, pd.high_watermark)))
}
