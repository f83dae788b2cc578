//! The simulated world of one seed: a broker node running the production
//! `chronik_server::start` on a `SimDisk`, a client node with idempotent
//! producers and a tailing consumer, and a fault injector.
//!
//! Two phases: a **safety** phase under faults chosen by the seed (crashes
//! losing unsynced writes, torn writes, EIO, disk full, bit rot, clogged and
//! lossy links, clock jumps), then a **liveness** phase in which every fault
//! is healed, the broker restarts once more, every producer must resolve its
//! last batch and a final reader must read every partition to its high
//! watermark, all within bounded simulated time. Then the checkers run.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronik_core::clock::{Clock, SystemClock};
use chronik_core::disk::{Disk, FaultConfig, SimDisk};
use chronik_core::rng::Rng;
use chronik_proto::ResponseError;
use chronik_server::{Config, Deps, Settings};
use chronik_core::search::mem::MemBackend;
use chronik_core::search::SearchBackend;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng as _};
use madsim::runtime::Handle;

use crate::check;
use crate::client::{self, Conn};
use crate::groups;
use crate::history::{Event, History, Partition};

pub const TOPIC: &str = "sim";
pub const PARTITIONS: i32 = 2;
const PRODUCERS: u32 = 2;
/// Consumer groups, each with one member committing offsets.
const GROUPS: u32 = 2;
/// Members of the KIP-848 group `sim-k`.
const KIP848_MEMBERS: u32 = 3;
const BROKER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GROUP_TARGET: groups::Target = groups::Target { topic: TOPIC, partitions: PARTITIONS, bootstrap: broker_addr };
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PORT: u16 = 9092;

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub safety: Duration,
    pub liveness: Duration,
}

#[derive(Debug)]
pub struct Outcome {
    pub history: History,
    pub violations: Vec<(&'static str, String)>,
    pub faults: BTreeMap<&'static str, u32>,
    pub sim_elapsed: Duration,
}

/// A clock that the fault injector can jump.
struct JumpClock {
    offset_ms: AtomicI64,
}

impl Clock for JumpClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.offset_ms.load(Ordering::SeqCst)
    }

    /// Jumps move the wall clock only, as an NTP step would.
    fn monotonic_ms(&self) -> i64 {
        SystemClock.monotonic_ms()
    }
}

type Shared<T> = Arc<Mutex<T>>;

fn broker_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(BROKER_IP), PORT)
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

/// Runs one seed in a fresh madsim runtime.
pub fn run_seed(opts: &Options) -> Outcome {
    let rt = madsim::runtime::Runtime::with_seed_and_config(opts.seed, madsim::Config::default());
    rt.block_on(world(opts.clone()))
}

async fn world(opts: Options) -> Outcome {
    let start = tokio::time::Instant::now();
    let handle = Handle::current();
    let seed = opts.seed;
    let history: Shared<History> = Arc::default();
    let mut faults: BTreeMap<&'static str, u32> = BTreeMap::new();

    // Per-seed knobs.
    let (flush_ms, segment_bytes, rot_allowed) = {
        let mut r = thread_rng();
        (if r.gen_bool(0.5) { 0 } else { r.gen_range(1..20) }, r.gen_range(4u64..64) * 1024, r.gen_bool(0.2))
    };
    let base_faults = FaultConfig { torn_writes: true, ..Default::default() };
    let disk = SimDisk::with_faults(seed, base_faults.clone());
    let clock = Arc::new(JumpClock { offset_ms: AtomicI64::new(0) });
    let starts = Arc::new(AtomicU64::new(0));
    // The search indexes: in memory, kept across restarts like the disk (a
    // crash drops what was not committed).
    let search = Arc::new(MemBackend::default());

    let broker = {
        let (disk, clock, starts, search) = (disk.clone(), clock.clone(), starts.clone(), search.clone());
        handle
            .create_node()
            .name("broker")
            .ip(IpAddr::V4(BROKER_IP))
            .init(move || {
                let (disk, clock, starts, search) = (disk.clone(), clock.clone(), starts.clone(), search.clone());
                async move {
                    loop {
                        let n = starts.fetch_add(1, Ordering::SeqCst);
                        let settings = Settings {
                            data_dir: Some("/data".into()),
                            kafka_listen: Some(broker_addr().to_string()),
                            // Search (tantivy, HTTP) runs outside the simulation.
                            http_listen: Some("off".into()),
                            rpc_listen: Some("off".into()),
                            log_segment_bytes: Some(segment_bytes),
                            log_roll_ms: Some(60_000),
                            log_retention_ms: Some(-1),
                            // The producers stamp records with a fixed time and the
                            // broker's clock jumps: no timestamp window.
                            log_message_timestamp_after_max_ms: Some(i64::MAX),
                            flush_interval_ms: Some(flush_ms),
                            group_initial_rebalance_delay_ms: Some(100),
                            offsets_topic_num_partitions: Some(3),
                            // Small, so the coordinator's log cleaning runs under faults.
                            offsets_cleanup_bytes: Some(4096),
                            // Short, so KIP-848 members expire during faults.
                            group_consumer_session_timeout_ms: Some(2000),
                            group_consumer_heartbeat_interval_ms: Some(500),
                            ..Default::default()
                        };
                        let config = Config::from_settings(settings).expect("valid sim config");
                        let deps = Deps {
                            disk: Arc::new(disk.clone()),
                            clock: clock.clone(),
                            rng: Arc::new(Rng::seeded_with_buggify(seed.wrapping_mul(31).wrapping_add(n))),
                            search: Some(search.clone() as Arc<dyn SearchBackend>),
                        };
                        match chronik_server::start(config, deps).await {
                            Ok(_running) => std::future::pending::<()>().await,
                            Err(e) => {
                                tracing::warn!("broker failed to start: {e:#}");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                }
            })
            .build()
    };
    let client = handle.create_node().name("client").ip(IpAddr::V4(CLIENT_IP)).build();
    let net = NetSim::current();
    let mut default_latency = Duration::ZERO..Duration::ZERO;
    net.update_config(|c| default_latency = c.send_latency.clone());

    // The topic.
    let created = client
        .spawn(async move {
            for _ in 0..100 {
                if let Ok(mut c) = Conn::connect(broker_addr()).await {
                    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                        .with_name(name(TOPIC))
                        .with_num_partitions(PARTITIONS)
                        .with_replication_factor(1)
                        .with_configs(vec![CreatableTopicConfig::default()
                            .with_name(StrBytes::from_static_str("search.enabled"))
                            .with_value(Some(StrBytes::from_static_str("true")))])]);
                    if let Ok(ResponseKind::CreateTopics(r)) = c.call(ApiKey::CreateTopics, 5, RequestKind::CreateTopics(req)).await {
                        let code = r.topics[0].error_code;
                        if code == 0 || code == ResponseError::TopicAlreadyExists.code() {
                            return true;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        })
        .await
        .unwrap_or(false);
    assert!(created, "seed {seed}: could not create the topic on a healthy broker");

    // Producers and a consumer on the client node.
    let stop_producing = Arc::new(AtomicBool::new(false));
    let stop_consuming = Arc::new(AtomicBool::new(false));
    let rotted: Shared<Vec<Partition>> = Arc::default();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| client.spawn(producer(id, history.clone(), stop_producing.clone(), rotted.clone())))
        .collect();
    let consumer = client.spawn(consumer(history.clone(), stop_consuming.clone()));
    let members: Vec<_> = (0..GROUPS)
        .map(|g| client.spawn(groups::group_member(GROUP_TARGET, g, history.clone(), stop_producing.clone())))
        .chain((0..KIP848_MEMBERS).map(|k| client.spawn(kip848_member(k, history.clone(), stop_producing.clone()))))
        .collect();

    // Safety phase: faults.
    let safety_end = tokio::time::Instant::now() + opts.safety;
    while tokio::time::Instant::now() < safety_end {
        let (pause, choice) = {
            let mut r = thread_rng();
            (Duration::from_millis(r.gen_range(50..600)), r.gen_range(0..100))
        };
        tokio::time::sleep(pause).await;
        let mut note = |kind: &'static str, detail: String| {
            *faults.entry(kind).or_default() += 1;
            history.lock().unwrap().push(Event::Fault(format!("{kind}: {detail}")));
        };
        match choice {
            0..=19 => {
                let down = Duration::from_millis(thread_rng().gen_range(0..400));
                handle.kill(broker.id());
                disk.crash();
                search.crash();
                note("crash", format!("broker down {down:?}"));
                tokio::time::sleep(down).await;
                handle.restart(broker.id());
            }
            20..=34 => {
                let (both, dur) = {
                    let mut r = thread_rng();
                    (r.gen_bool(0.5), Duration::from_millis(r.gen_range(100..2000)))
                };
                net.clog_link(client.id(), broker.id());
                if both {
                    net.clog_link(broker.id(), client.id());
                }
                note("partition", format!("{} for {dur:?}", if both { "both ways" } else { "client->broker" }));
                tokio::time::sleep(dur).await;
                net.unclog_link(client.id(), broker.id());
                net.unclog_link(broker.id(), client.id());
            }
            35..=44 => {
                let (rate, dur) = {
                    let mut r = thread_rng();
                    (r.gen_range(0.01..0.2), Duration::from_millis(r.gen_range(200..2000)))
                };
                let latency_ms = thread_rng().gen_range(2..50);
                net.update_config(|c| {
                    c.packet_loss_rate = rate;
                    c.send_latency = Duration::from_millis(1)..Duration::from_millis(latency_ms);
                });
                note("packet-loss", format!("{rate:.2}, latency up to {latency_ms} ms, for {dur:?}"));
                tokio::time::sleep(dur).await;
                net.update_config(|c| {
                    c.packet_loss_rate = 0.0;
                    c.send_latency = default_latency.clone();
                });
            }
            45..=54 => {
                let jump = thread_rng().gen_range(-3_600_000i64..3_600_000);
                clock.offset_ms.fetch_add(jump, Ordering::SeqCst);
                note("clock-jump", format!("{jump} ms"));
            }
            55..=74 => {
                let (p, dur) = {
                    let mut r = thread_rng();
                    (r.gen_range(0.01..0.3), Duration::from_millis(r.gen_range(50..800)))
                };
                disk.set_faults(FaultConfig { read_error_probability: p, write_error_probability: p, sync_error_probability: p, ..base_faults.clone() });
                note("disk-eio", format!("p={p:.2} for {dur:?}"));
                tokio::time::sleep(dur).await;
                disk.set_faults(base_faults.clone());
            }
            75..=84 => {
                let dur = Duration::from_millis(thread_rng().gen_range(100..1000));
                let used = disk.used_bytes();
                disk.set_faults(FaultConfig { capacity_bytes: Some(used + 2048), ..base_faults.clone() });
                note("disk-full", format!("for {dur:?}"));
                tokio::time::sleep(dur).await;
                disk.set_faults(base_faults.clone());
            }
            85..=89 if rot_allowed => {
                if let Some((p, file, at)) = rot_target(&disk) {
                    let bit = thread_rng().gen_range(0..8);
                    let _ = disk.flip_bit(Path::new(&file), at, bit);
                    let mut rotted = rotted.lock().unwrap();
                    if !rotted.contains(&p) {
                        rotted.push(p);
                    }
                    note("bit-rot", format!("{file} byte {at}"));
                }
            }
            _ => {}
        }
    }

    // Liveness phase: heal everything, restart once more, and converge.
    net.update_config(|c| {
        c.packet_loss_rate = 0.0;
        c.send_latency = default_latency.clone();
    });
    net.unclog_link(client.id(), broker.id());
    net.unclog_link(broker.id(), client.id());
    disk.set_faults(base_faults.clone());
    handle.kill(broker.id());
    disk.crash();
    search.crash();
    handle.restart(broker.id());
    history.lock().unwrap().push(Event::Fault("heal: all faults off, broker restarted".into()));
    let liveness_end = tokio::time::Instant::now() + opts.liveness;

    stop_producing.store(true, Ordering::SeqCst);
    let mut violations: Vec<(&'static str, String)> = Vec::new();
    for (id, p) in producers.into_iter().enumerate() {
        let left = liveness_end.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(left, p).await.is_err() {
            violations.push(("liveness", format!("producer {id} did not resolve its last batch after healing")));
        }
    }
    for (g, m) in members.into_iter().enumerate() {
        let left = liveness_end.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(left, m).await.is_err() {
            violations.push(("liveness", format!("group member {g} did not stop after healing")));
        }
    }
    stop_consuming.store(true, Ordering::SeqCst);
    let left = liveness_end.saturating_duration_since(tokio::time::Instant::now());
    let _ = tokio::time::timeout(left, consumer).await;
    for g in 0..GROUPS {
        let left = liveness_end.saturating_duration_since(tokio::time::Instant::now());
        let h = history.clone();
        let fetched = tokio::time::timeout(left.max(Duration::from_secs(1)), client.spawn(groups::final_offsets(GROUP_TARGET, g, h))).await;
        if !matches!(fetched, Ok(Ok(true))) {
            violations.push(("liveness", format!("group sim-g{g}: OffsetFetch did not succeed after healing")));
        }
    }

    let left = liveness_end.saturating_duration_since(tokio::time::Instant::now());
    let rotted = rotted.lock().unwrap().clone();
    let finals = tokio::time::timeout(left.max(Duration::from_secs(1)), client.spawn(final_read(rotted.clone()))).await;
    let mut history = std::mem::take(&mut *history.lock().unwrap());
    history.rotted = rotted;
    match finals {
        Ok(Ok(Ok(logs))) => {
            // The indexer catches up with the final logs (bounded), then its
            // committed documents are compared with them.
            let deadline = liveness_end.max(tokio::time::Instant::now() + Duration::from_secs(5));
            loop {
                let index = search_index(&search);
                let caught_up = logs.iter().all(|(p, log)| {
                    let end = log.last().map_or(0, |l| l.0 + 1);
                    index.get(p).map_or(log.is_empty(), |(next, _)| *next >= end)
                });
                if caught_up || tokio::time::Instant::now() >= deadline {
                    history.search_index = index.into_iter().map(|(p, (next, docs))| (p, (next, docs))).collect();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            history.final_logs = logs;
        }
        Ok(Ok(Err(e))) => violations.push(("liveness", format!("final read failed after healing: {e:#}"))),
        _ => violations.push(("liveness", "final read did not finish after healing".into())),
    }
    if violations.is_empty() {
        violations.extend(check::run_all(&history));
    }
    Outcome { history, violations, faults, sim_elapsed: start.elapsed() }
}

/// A byte somewhere in a synced segment of some partition.
fn rot_target(disk: &SimDisk) -> Option<(Partition, String, u64)> {
    let topics = disk.list(Path::new("topics")).ok()?;
    let topic_dir = topics.iter().find(|d| d.starts_with(&format!("{TOPIC}.")))?;
    let p = thread_rng().gen_range(0..PARTITIONS);
    let dir = format!("topics/{topic_dir}/{p}");
    let logs: Vec<String> = disk.list(Path::new(&dir)).ok()?.into_iter().filter(|n| n.ends_with(".log")).collect();
    let file = format!("{dir}/{}", logs.first()?);
    let len = disk.open(Path::new(&file), false).ok()?.len().ok()?;
    (len > 0).then(|| (p, file, thread_rng().gen_range(0..len)))
}

/// An idempotent producer: one batch in flight, retried with the same
/// sequence until the broker answers it definitively.
async fn producer(id: u32, history: Shared<History>, stop: Arc<AtomicBool>, rotted: Shared<Vec<Partition>>) {
    let mut n: u64 = 0;
    'session: loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut conn) = Conn::connect(broker_addr()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let req = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
        let pid = match conn.call(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(req)).await {
            Ok(ResponseKind::InitProducerId(r)) if r.error_code == 0 => r.producer_id.0,
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut seq = vec![0i32; PARTITIONS as usize];
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let (partition, count, compression) = {
                let mut r = thread_rng();
                let c = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd][r.gen_range(0..5)];
                (r.gen_range(0..PARTITIONS), r.gen_range(1..5usize), c)
            };
            let values: Vec<String> = (0..count).map(|i| format!("p{id}-{}", n + i as u64)).collect();
            n += count as u64;
            let records = client::batch(&values, pid, 0, seq[partition as usize], compression, 1_700_000_000_000);
            // Resolve this batch: answered, or abandoned with a new session.
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(2000).with_topic_data(vec![TopicProduceData::default()
                    .with_name(name(TOPIC))
                    .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(records.clone()))])]);
                let answer = conn.call(ApiKey::Produce, 9, RequestKind::Produce(req)).await;
                let code = match answer {
                    Ok(ResponseKind::Produce(r)) => {
                        let p = &r.responses[0].partition_responses[0];
                        if p.error_code == 0 {
                            history.lock().unwrap().push(Event::Acked { partition, base_offset: p.base_offset, values: values.clone() });
                            seq[partition as usize] += count as i32;
                            break;
                        }
                        p.error_code
                    }
                    Ok(_) => unreachable!("produce answered with another API"),
                    Err(_) => {
                        // Connection trouble: reconnect and retry the same batch.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        match Conn::connect(broker_addr()).await {
                            Ok(c) => conn = c,
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                        continue;
                    }
                };
                if code == ResponseError::DuplicateSequenceNumber.code() {
                    history.lock().unwrap().push(Event::AckedOffsetUnknown { partition, values: values.clone() });
                    seq[partition as usize] += count as i32;
                    break;
                }
                let retriable = [ResponseError::KafkaStorageError, ResponseError::RequestTimedOut, ResponseError::UnknownTopicOrPartition, ResponseError::NotEnoughReplicas]
                    .iter()
                    .any(|e| e.code() == code);
                if retriable && stop.load(Ordering::SeqCst) && rotted.lock().unwrap().contains(&partition) {
                    // A partition whose synced data rotted stays offline (it
                    // refuses to drop acknowledged records): nothing to wait for.
                    history.lock().unwrap().push(Event::Note(format!("producer {id}: gave up on rotted partition {partition}")));
                    return;
                }
                if !retriable || attempts > 1000 {
                    history.lock().unwrap().push(Event::Note(format!("producer {id}: batch {values:?} refused with error {code}; new producer session")));
                    continue 'session;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Tails every partition, recording what it reads and the HW it is told.
async fn consumer(history: Shared<History>, stop: Arc<AtomicBool>) {
    let mut next = vec![0i64; PARTITIONS as usize];
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut conn) = Conn::connect(broker_addr()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            let partitions = (0..PARTITIONS)
                .map(|p| FetchPartition::default().with_partition(p).with_fetch_offset(next[p as usize]).with_partition_max_bytes(64 << 10))
                .collect();
            let req = FetchRequest::default()
                .with_max_wait_ms(200)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default().with_topic(name(TOPIC)).with_partitions(partitions)]);
            if thread_rng().gen_bool(0.1) {
                // ListOffsets(latest) is the HW too: record what it says.
                let topics = vec![ListOffsetsTopic::default()
                    .with_name(name(TOPIC))
                    .with_partitions((0..PARTITIONS).map(|p| ListOffsetsPartition::default().with_partition_index(p).with_timestamp(-1)).collect())];
                let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(topics);
                let Ok(ResponseKind::ListOffsets(r)) = conn.call(ApiKey::ListOffsets, 7, RequestKind::ListOffsets(req)).await else { break };
                for lp in &r.topics[0].partitions {
                    if lp.error_code == 0 {
                        history.lock().unwrap().push(Event::Read { partition: lp.partition_index, records: vec![], high_watermark: lp.offset });
                    }
                }
            }
            let Ok(ResponseKind::Fetch(r)) = conn.call(ApiKey::Fetch, 11, RequestKind::Fetch(req)).await else { break };
            for pd in &r.responses[0].partitions {
                let p = pd.partition_index;
                if pd.error_code != 0 {
                    history.lock().unwrap().push(Event::Note(format!("fetch partition {p} at {}: error {}", next[p as usize], pd.error_code)));
                    continue;
                }
                let records = match client::records(pd.records.clone().unwrap_or_default(), next[p as usize]) {
                    Ok(r) => r,
                    Err(e) => {
                        history.lock().unwrap().push(Event::Note(format!("fetch partition {p}: undecodable records: {e:#}")));
                        continue;
                    }
                };
                if let Some((last, _)) = records.last() {
                    next[p as usize] = last + 1;
                }
                history.lock().unwrap().push(Event::Read { partition: p, records, high_watermark: pd.high_watermark });
            }
        }
    }
}

/// Reads every partition from offset 0 to its high watermark.
async fn final_read(rotted: Vec<Partition>) -> anyhow::Result<BTreeMap<Partition, Vec<(i64, String)>>> {
    let mut logs = BTreeMap::new();
    'partition: for p in 0..PARTITIONS {
        let mut log: Vec<(i64, String)> = Vec::new();
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > if rotted.contains(&p) { 20 } else { 200 } {
                if rotted.contains(&p) {
                    logs.insert(p, log);
                    continue 'partition;
                }
                anyhow::bail!("partition {p}: could not read past offset {}", log.last().map(|l| l.0 + 1).unwrap_or(0));
            }
            let Ok(mut conn) = Conn::connect(broker_addr()).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let from = log.last().map(|l| l.0 + 1).unwrap_or(0);
            let Some((records, high_watermark)) = client::read_once(&mut conn, TOPIC, p, from).await? else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            log.extend(records);
            let end = log.last().map(|l| l.0 + 1).unwrap_or(0);
            if end >= high_watermark {
                logs.insert(p, log);
                continue 'partition;
            }
        }
    }
    Ok(logs)
}

/// A member of the KIP-848 group `sim-k`: heartbeats at its own pace with
/// its epoch and the partitions it owns, adopts whatever assignment it is
/// sent at once (revoking immediately), rejoins from epoch 0 when fenced or
/// forgotten, and now and then leaves. The broker checks after every change
/// that no partition has two owners (`ConsumerGroup::check_invariants`,
/// on in this debug build); a violation panics the run.
async fn kip848_member(k: u32, history: Shared<History>, stop: Arc<AtomicBool>) {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    let member = StrBytes::from_string(format!("k{k}"));
    let mut epoch = 0;
    let mut owned: Vec<TopicPartitions> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut conn) = Conn::connect(broker_addr()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            let leave = epoch > 0 && thread_rng().gen_bool(0.03);
            let req = ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("sim-k")))
                .with_member_id(member.clone())
                .with_member_epoch(if leave { -1 } else { epoch })
                .with_rebalance_timeout_ms(3_000)
                .with_subscribed_topic_names(Some(vec![name(TOPIC)]))
                .with_topic_partitions(Some(owned.clone()));
            let Ok(ResponseKind::ConsumerGroupHeartbeat(r)) = conn.call(ApiKey::ConsumerGroupHeartbeat, 1, RequestKind::ConsumerGroupHeartbeat(req)).await else {
                break; // reconnect; the same epoch is still ours unless the broker says otherwise
            };
            let rejoin = [ResponseError::FencedMemberEpoch, ResponseError::UnknownMemberId, ResponseError::GroupIdNotFound];
            if leave || rejoin.iter().any(|e| e.code() == r.error_code) {
                epoch = 0;
                owned.clear();
            } else if r.error_code == 0 {
                epoch = r.member_epoch;
                if let Some(a) = r.assignment {
                    owned = a.topic_partitions.into_iter().map(|tp| TopicPartitions::default().with_topic_id(tp.topic_id).with_partitions(tp.partitions)).collect();
                }
            }
            if r.error_code != 0 {
                history.lock().unwrap().push(Event::Note(format!("kip848 member k{k}: heartbeat error {}", r.error_code)));
            }
            let pause = Duration::from_millis(thread_rng().gen_range(100..600));
            tokio::time::sleep(pause).await;
        }
    }
}

/// Each partition's search index: where indexing resumes and its committed
/// documents as (offset, value).
fn search_index(search: &MemBackend) -> BTreeMap<Partition, (i64, Vec<(i64, String)>)> {
    let mut out = BTreeMap::new();
    for (name, index) in search.indexes() {
        let Some((topic_dir, p)) = name.rsplit_once('-') else { continue };
        if !topic_dir.starts_with(&format!("{TOPIC}.")) {
            continue;
        }
        let Ok(p) = p.parse::<Partition>() else { continue };
        let docs = index
            .committed()
            .into_iter()
            .map(|d| (d.offset, d.value.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default()))
            .collect();
        out.insert(p, (chronik_core::search::PartitionIndex::next_offset(&*index), docs));
    }
    out
}
