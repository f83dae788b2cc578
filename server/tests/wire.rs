//! The real listener over real sockets: framing, bad input, durability
//! waits, long polls, graceful restart. Raw frames are built with the
//! kafka-protocol codec so every byte on the wire is under the test's control.

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use chronik_proto::frame;
use chronik_server::{start, Config, Deps, Settings};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use chronik_proto::batch::Producer;
use kafka_protocol::records::Compression;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(dir: &std::path::Path) -> Config {
    let settings = Settings {
        data_dir: Some(dir.to_path_buf()),
        kafka_listen: Some("127.0.0.1:0".into()),
        http_listen: Some("127.0.0.1:0".into()),
        rpc_listen: Some("127.0.0.1:0".into()),
        socket_request_max_bytes: Some(2 << 20),
        ..Default::default()
    };
    Config::from_settings(settings).unwrap()
}

async fn boot(dir: &std::path::Path) -> chronik_server::Running {
    let c = config(dir);
    let deps = Deps::production(&c).unwrap();
    start(c, deps).await.unwrap()
}

struct Client {
    stream: TcpStream,
    correlation: i32,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        Client { stream: TcpStream::connect(addr).await.unwrap(), correlation: 0 }
    }

    async fn send(&mut self, key: ApiKey, version: i16, body: RequestKind) {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("wire-test")));
        let bytes = frame::encode_request(&header, &body).unwrap();
        self.stream.write_all(&bytes).await.unwrap();
    }

    async fn receive(&mut self, key: ApiKey, version: i16) -> ResponseKind {
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(&mut len)).await.unwrap().unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).await.unwrap();
        let (correlation, response) = frame::decode_response(key, version, Bytes::from(body)).unwrap();
        assert_eq!(correlation, self.correlation);
        response
    }

    async fn call(&mut self, key: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
        self.send(key, version, body).await;
        self.receive(key, version).await
    }

    /// True if the server closed the connection (EOF) within a few seconds.
    async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
    }
}

/// A hand-made frame: length, api key, version, correlation id, then `rest`.
fn raw_frame(api_key: i16, api_version: i16, correlation_id: i32, rest: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(&api_key.to_be_bytes());
    raw.extend_from_slice(&api_version.to_be_bytes());
    raw.extend_from_slice(&correlation_id.to_be_bytes());
    raw.extend_from_slice(rest);
    let mut framed = (raw.len() as i32).to_be_bytes().to_vec();
    framed.extend(raw);
    framed
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

fn batch(n: i32) -> Bytes {
    let records: Vec<_> = (0..n).map(|i| (None, Some(Bytes::from(format!("record {i}"))))).collect();
    chronik_proto::batch::encode(&records, &Producer::plain(Compression::Lz4, 1_700_000_000_000))
}

fn produce_request(topic: &str, records: Bytes, acks: i16) -> RequestKind {
    RequestKind::Produce(ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
        .with_name(name(topic))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))])]))
}

fn fetch_request(topic: &str, offset: i64, max_wait_ms: i32) -> RequestKind {
    RequestKind::Fetch(
        FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default().with_fetch_offset(offset).with_partition_max_bytes(1 << 20)])]),
    )
}

async fn create_topic(c: &mut Client, topic: &str) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default().with_name(name(topic)).with_num_partitions(1).with_replication_factor(1)]);
    let ResponseKind::CreateTopics(r) = c.call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(req)).await else { panic!() };
    assert_eq!(r.topics[0].error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_at_every_version_and_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = boot(dir.path()).await;
    let mut c = Client::connect(server.kafka_addr).await;
    for v in 0..=4 {
        let ResponseKind::ApiVersions(r) = c.call(ApiKey::ApiVersions, v, RequestKind::ApiVersions(ApiVersionsRequest::default())).await else { panic!() };
        assert_eq!(r.error_code, 0);
        assert!(r.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16 && k.max_version == 13));
        assert_eq!(r.api_keys.len(), chronik_proto::api::SUPPORTED.len());
    }
    // A version from the future: answered at v0 with UNSUPPORTED_VERSION and the table.
    c.correlation += 1;
    let framed = raw_frame(ApiKey::ApiVersions as i16, 9, c.correlation, &[0xff, 0xff, 0, 0, 0]);
    c.stream.write_all(&framed).await.unwrap();
    let ResponseKind::ApiVersions(r) = c.receive(ApiKey::ApiVersions, 0).await else { panic!() };
    assert_eq!(r.error_code, 35);
    assert!(!r.api_keys.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_the_connection_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = boot(dir.path()).await;
    let addr = server.kafka_addr;

    // Oversized (beyond socket.request.max.bytes) and negative lengths.
    for len in [(2 << 20) + 1, i32::MAX, -1, -100] {
        let mut c = Client::connect(addr).await;
        c.stream.write_all(&(len as i32).to_be_bytes()).await.unwrap();
        assert!(c.closed().await, "frame length {len} did not close the connection");
    }
    let bad = [
        ("an unknown API key", raw_frame(999, 0, 1, &[0, 0])),
        ("Produce v2, older than we implement", raw_frame(ApiKey::Produce as i16, 2, 1, &[0, 0, 0, 0, 0, 0])),
        ("a Metadata body that does not decode", raw_frame(ApiKey::Metadata as i16, 12, 1, &[0xff, 0xff, 0x00, 0x7f, 0xff, 0xff])),
    ];
    for (what, frame) in bad {
        let mut c = Client::connect(addr).await;
        c.stream.write_all(&frame).await.unwrap();
        assert!(c.closed().await, "{what} did not close the connection");
    }
    // A truncated frame: the client goes away mid-request.
    {
        let mut c = Client::connect(addr).await;
        c.stream.write_all(&100i32.to_be_bytes()).await.unwrap();
        c.stream.write_all(&[0, 3, 0, 12]).await.unwrap();
    }
    // The broker still serves everyone else.
    let mut c = Client::connect(addr).await;
    let ResponseKind::ApiVersions(r) = c.call(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default())).await else { panic!() };
    assert_eq!(r.error_code, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_and_durable_acks() {
    let dir = tempfile::tempdir().unwrap();
    let server = boot(dir.path()).await;
    let mut c = Client::connect(server.kafka_addr).await;
    create_topic(&mut c, "t").await;

    // Invalid topic name through Metadata.
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name("no/slashes")))]));
    let ResponseKind::Metadata(m) = c.call(ApiKey::Metadata, 12, RequestKind::Metadata(req)).await else { panic!() };
    assert_eq!(m.topics[0].error_code, 17);

    // Corrupt CRC.
    let mut bad = batch(5).to_vec();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    let ResponseKind::Produce(r) = c.call(ApiKey::Produce, 9, produce_request("t", Bytes::from(bad), -1)).await else { panic!() };
    assert_eq!(r.responses[0].partition_responses[0].error_code, 2);
    assert!(r.responses[0].partition_responses[0].error_message.as_ref().unwrap().contains("CRC"));

    // acks=all is answered only once the data is durable, and then visible.
    let ResponseKind::Produce(r) = c.call(ApiKey::Produce, 9, produce_request("t", batch(5), -1)).await else { panic!() };
    let p = &r.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    let ResponseKind::Fetch(f) = c.call(ApiKey::Fetch, 11, fetch_request("t", 0, 0)).await else { panic!() };
    assert_eq!(f.responses[0].partitions[0].high_watermark, 5);
    let mut records = f.responses[0].partitions[0].records.clone().unwrap();
    let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).unwrap();
    assert_eq!(sets[0].records.len(), 5);
    assert_eq!(sets[0].records[4].value.as_ref().unwrap().chunk(), b"record 4");

    // acks=0 gets no answer; the next request's answer comes next.
    c.send(ApiKey::Produce, 9, produce_request("t", batch(2), 0)).await;
    let ResponseKind::ApiVersions(_) = c.call(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default())).await else { panic!() };
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_long_polls_until_data_or_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = boot(dir.path()).await;
    let mut c = Client::connect(server.kafka_addr).await;
    create_topic(&mut c, "t").await;

    let t0 = Instant::now();
    let ResponseKind::Fetch(f) = c.call(ApiKey::Fetch, 11, fetch_request("t", 0, 400)).await else { panic!() };
    assert!(f.responses[0].partitions[0].records.as_ref().unwrap().is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(350), "empty fetch returned before max_wait_ms");

    let mut consumer = Client::connect(server.kafka_addr).await;
    consumer.send(ApiKey::Fetch, 11, fetch_request("t", 0, 10_000)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let ResponseKind::Produce(_) = c.call(ApiKey::Produce, 9, produce_request("t", batch(3), 1)).await else { panic!() };
    let ResponseKind::Fetch(f) = consumer.receive(ApiKey::Fetch, 11).await else { panic!() };
    assert!(t0.elapsed() < Duration::from_secs(5), "long poll did not wake on new data");
    assert!(!f.responses[0].partitions[0].records.as_ref().unwrap().is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = boot(dir.path()).await;
    let mut c = Client::connect(server.kafka_addr).await;
    create_topic(&mut c, "kept").await;
    for i in 0..20 {
        let ResponseKind::Produce(r) = c.call(ApiKey::Produce, 9, produce_request("kept", batch(4), 1)).await else { panic!() };
        assert_eq!(r.responses[0].partition_responses[0].base_offset, i * 4);
    }
    server.shutdown().await;
    let server = boot(dir.path()).await;
    let mut c = Client::connect(server.kafka_addr).await;
    let ResponseKind::Fetch(f) = c.call(ApiKey::Fetch, 11, fetch_request("kept", 0, 0)).await else { panic!() };
    assert_eq!(f.responses[0].partitions[0].high_watermark, 80);
    server.shutdown().await;
}
