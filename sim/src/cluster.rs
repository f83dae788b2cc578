//! The simulated cluster of one seed: three or five nodes, each running the
//! production `chronik_server::start` as a controller-quorum member on its
//! own `SimDisk`, a client proposing metadata commands over gRPC to random
//! members, and a fault injector (crashes losing unsynced writes, network
//! partitions of a node, lossy links, disk errors).
//!
//! While it runs, every node's Raft state is sampled (who leads which term,
//! which image it applied at which index). After healing, every node must
//! converge on the same image, holding every acknowledged command, with every
//! broker registered and unfenced. `check::quorum` judges.
//!
//! Meanwhile a replicated topic is written and read through the Kafka
//! protocol (`crate::replication`), and consumer groups commit offsets of it
//! (`crate::groups`) at coordinators that move with the leaders of
//! `__consumer_offsets`; the history goes through the data checkers, and
//! every replica must end byte-identical to its leader.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronik_core::cluster::image::{Applied, Command, Image};
use chronik_core::disk::{FaultConfig, SimDisk};
use chronik_core::rng::Rng;
use chronik_net::raft::node::Controller;
use chronik_proto::grpc::controller_client::ControllerClient;
use chronik_proto::grpc::ProposeRequest;
use chronik_server::{Config, Deps, Settings};
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng as _};
use madsim::runtime::{Handle, NodeHandle};

use crate::check::quorum::{self, FinalView, QuorumHistory};
use crate::history::{Event, History};
use crate::world::{Options, Outcome};

const RPC_PORT: u16 = 9093;
const KAFKA_PORT: u16 = 9092;
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);
const IDS_PER_ALLOCATION: i64 = 10;
const SESSION_MS: u64 = 2000;
const LAG_MS: i64 = 3000;
const PRODUCERS: u32 = 2;
/// Consumer groups, each with one member committing offsets.
const GROUPS: u32 = 2;
/// Partitions of `__consumer_offsets` (Kafka's 50 would only slow the world).
const OFFSETS_PARTITIONS: i32 = 4;
const GROUP_TARGET: crate::groups::Target =
    crate::groups::Target { topic: crate::replication::TOPIC, partitions: crate::replication::PARTITIONS, bootstrap: any_broker };

/// One of the brokers every world has (nodes 1 to 3), at random.
fn any_broker() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(node_ip(thread_rng().gen_range(1..=3))), KAFKA_PORT)
}

pub(crate) fn node_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, id as u8)
}

fn rpc_addr(id: u64) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(node_ip(id)), RPC_PORT)
}

/// A hash of an image that is the same on every node for the same image.
fn image_hash(image: &Image) -> u64 {
    crate::history::fnv1a(crate::history::FNV_OFFSET, serde_json::to_string(image).expect("images serialize").as_bytes())
}

type Slot = Arc<Mutex<Option<Controller>>>;
type BrokerSlot = Arc<Mutex<Option<Arc<chronik_core::broker::Broker>>>>;

struct Member {
    id: u64,
    node: NodeHandle,
    disk: SimDisk,
    /// The running node's controller, `None` while it is down.
    slot: Slot,
    /// The running node's broker, `None` while it is down.
    broker: BrokerSlot,
}

pub fn run_seed(opts: &Options) -> Outcome {
    let rt = madsim::runtime::Runtime::with_seed_and_config(opts.seed, madsim::Config::default());
    rt.block_on(world(opts.clone()))
}

async fn world(opts: Options) -> Outcome {
    let start = tokio::time::Instant::now();
    let handle = Handle::current();
    let seed = opts.seed;
    let n: u64 = if thread_rng().gen_bool(0.5) { 3 } else { 5 };
    let voters: String = (1..=n).map(|id| format!("{id}@{}", rpc_addr(id))).collect::<Vec<_>>().join(",");
    let base_faults = FaultConfig { torn_writes: true, ..Default::default() };
    let starts = Arc::new(AtomicU64::new(0));
    let mut members = Vec::new();
    for id in 1..=n {
        let disk = SimDisk::with_faults(seed.wrapping_add(id), base_faults.clone());
        let slot: Slot = Arc::default();
        let broker: BrokerSlot = Arc::default();
        let (d, s, b, voters, starts) = (disk.clone(), slot.clone(), broker.clone(), voters.clone(), starts.clone());
        let node = handle
            .create_node()
            .name(format!("node{id}"))
            .ip(IpAddr::V4(node_ip(id)))
            .init(move || {
                let (disk, slot, broker, voters, starts) = (d.clone(), s.clone(), b.clone(), voters.clone(), starts.clone());
                async move {
                    loop {
                        let k = starts.fetch_add(1, Ordering::SeqCst);
                        let settings = Settings {
                            data_dir: Some("/data".into()),
                            kafka_listen: Some(SocketAddr::new(IpAddr::V4(node_ip(id)), KAFKA_PORT).to_string()),
                            http_listen: Some("off".into()),
                            rpc_listen: Some(rpc_addr(id).to_string()),
                            node_id: Some(id as i32),
                            controllers: Some(voters.clone()),
                            broker_session_timeout_ms: Some(SESSION_MS),
                            replica_lag_time_max_ms: Some(LAG_MS),
                            offsets_topic_num_partitions: Some(OFFSETS_PARTITIONS),
                            ..Default::default()
                        };
                        let config = Config::from_settings(settings).expect("valid sim config");
                        let deps = Deps {
                            disk: Arc::new(disk.clone()),
                            clock: Arc::new(chronik_core::clock::SystemClock),
                            rng: Arc::new(Rng::seeded_with_buggify(seed.wrapping_mul(31).wrapping_add(k))),
                            search: None,
                        };
                        match chronik_server::start(config, deps).await {
                            Ok(running) => {
                                *slot.lock().unwrap() = running.controller.clone();
                                *broker.lock().unwrap() = Some(running.shared.broker.clone());
                                std::future::pending::<()>().await
                            }
                            Err(e) => {
                                tracing::warn!("node {id} failed to start: {e:#}");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                }
            })
            .build();
        members.push(Member { id, node, disk, slot, broker });
    }
    let client = handle.create_node().name("client").ip(IpAddr::V4(CLIENT_IP)).build();
    let net = NetSim::current();
    let mut default_latency = Duration::ZERO..Duration::ZERO;
    net.update_config(|c| default_latency = c.send_latency.clone());

    let history: Arc<Mutex<History>> = Arc::default();
    let quorum: Arc<Mutex<QuorumHistory>> = Arc::new(Mutex::new(QuorumHistory {
        ids_per_allocation: IDS_PER_ALLOCATION,
        nodes: (1..=n).collect(),
        ..Default::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let proposer = client.spawn(propose_loop(n, quorum.clone(), history.clone(), stop.clone()));
    let data = {
        let (history, stop) = (history.clone(), stop.clone());
        client.spawn(async move {
            crate::replication::create_topic(n, history.clone()).await;
            let mut tasks = Vec::new();
            for id in 0..PRODUCERS {
                tasks.push(tokio::spawn(crate::replication::producer(id, n, history.clone(), stop.clone())));
            }
            tasks.push(tokio::spawn(crate::replication::consumer(n, history.clone(), stop.clone())));
            for g in 0..GROUPS {
                tasks.push(tokio::spawn(crate::groups::group_member(GROUP_TARGET, g, history.clone(), stop.clone())));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };

    // Sample every node's Raft state.
    let slots: Vec<(u64, Slot)> = members.iter().map(|m| (m.id, m.slot.clone())).collect();
    let broker_slots: Vec<(u64, BrokerSlot)> = members.iter().map(|m| (m.id, m.broker.clone())).collect();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (slots, broker_slots, quorum, sampling) = (slots.clone(), broker_slots.clone(), quorum.clone(), sampling.clone());
        tokio::spawn(async move {
            while !sampling.load(Ordering::SeqCst) {
                sample(&slots, &broker_slots, &quorum);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut faults: BTreeMap<&'static str, u32> = BTreeMap::new();
    let safety_end = tokio::time::Instant::now() + opts.safety;
    while tokio::time::Instant::now() < safety_end {
        let (pause, choice, target) = {
            let mut r = thread_rng();
            (Duration::from_millis(r.gen_range(100..800)), r.gen_range(0..100), r.gen_range(0..n as usize))
        };
        tokio::time::sleep(pause).await;
        let m = &members[target];
        let mut note = |kind: &'static str, detail: String| {
            *faults.entry(kind).or_default() += 1;
            history.lock().unwrap().push(Event::Fault(format!("{kind}: {detail}")));
        };
        match choice {
            0..=24 => {
                let down = Duration::from_millis(thread_rng().gen_range(0..3000));
                note("crash", format!("node {} down {down:?}", m.id));
                crash(&handle, m, down).await;
            }
            25..=49 => {
                let dur = Duration::from_millis(thread_rng().gen_range(200..4000));
                net.clog_node(m.node.id());
                note("partition", format!("node {} isolated for {dur:?}", m.id));
                tokio::time::sleep(dur).await;
                net.unclog_node(m.node.id());
            }
            50..=64 => {
                let (rate, dur) = {
                    let mut r = thread_rng();
                    (r.gen_range(0.01..0.2), Duration::from_millis(r.gen_range(200..2000)))
                };
                net.update_config(|c| {
                    c.packet_loss_rate = rate;
                    c.send_latency = Duration::from_millis(1)..Duration::from_millis(30);
                });
                note("packet-loss", format!("{rate:.2} for {dur:?}"));
                tokio::time::sleep(dur).await;
                net.update_config(|c| {
                    c.packet_loss_rate = 0.0;
                    c.send_latency = default_latency.clone();
                });
            }
            75..=89 => {
                // Jepsen's favourite: kill the leader of a replicated
                // partition, or a group's coordinator (the leader of the
                // group's partition of `__consumer_offsets`).
                let (topic, partition) = {
                    let mut r = thread_rng();
                    if r.gen_bool(0.5) {
                        (crate::replication::TOPIC, r.gen_range(0..crate::replication::PARTITIONS))
                    } else {
                        let group = format!("sim-g{}", r.gen_range(0..GROUPS));
                        (chronik_core::group::OFFSETS_TOPIC, chronik_core::group::partition_for(&group, OFFSETS_PARTITIONS))
                    }
                };
                let image = members.iter().find_map(|m| m.slot.lock().unwrap().clone()).map(|c| c.sm.image().0);
                let leader = image.as_ref().and_then(|i| i.partition(topic, partition)).map(|p| p.leader);
                if let Some(l) = members.iter().find(|m| Some(m.id as i32) == leader) {
                    let down = Duration::from_millis(thread_rng().gen_range(0..3000));
                    note("crash-leader", format!("node {} (leader of {topic}-{partition}) down {down:?}", l.id));
                    crash(&handle, l, down).await;
                }
            }
            65..=74 => {
                let (p, dur) = {
                    let mut r = thread_rng();
                    (r.gen_range(0.01..0.3), Duration::from_millis(r.gen_range(50..800)))
                };
                m.disk.set_faults(FaultConfig { write_error_probability: p, sync_error_probability: p, ..base_faults.clone() });
                note("disk-eio", format!("node {} p={p:.2} for {dur:?}", m.id));
                tokio::time::sleep(dur).await;
                m.disk.set_faults(base_faults.clone());
            }
            _ => {}
        }
    }

    // Heal: every fault off, every node restarted (a node whose Raft
    // stopped on a disk error comes back too), then converge.
    net.update_config(|c| {
        c.packet_loss_rate = 0.0;
        c.send_latency = default_latency.clone();
    });
    for m in &members {
        net.unclog_node(m.node.id());
        m.disk.set_faults(base_faults.clone());
        *m.slot.lock().unwrap() = None;
        *m.broker.lock().unwrap() = None;
        handle.kill(m.node.id());
        m.disk.crash();
        handle.restart(m.node.id());
    }
    history.lock().unwrap().push(Event::Fault("heal: all faults off, every node restarted".into()));
    stop.store(true, Ordering::SeqCst);
    let liveness_end = tokio::time::Instant::now() + opts.liveness;
    let mut violations: Vec<(&'static str, String)> = Vec::new();
    if tokio::time::timeout(liveness_end.saturating_duration_since(tokio::time::Instant::now()), proposer).await.is_err() {
        violations.push(("liveness", "the proposer did not stop after healing".into()));
    }
    // Converged: every node on the same image, every broker unfenced.
    let finals = loop {
        let finals = final_views(&slots);
        let converged = finals.len() == n as usize
            && finals.values().map(|f| (f.index, f.hash)).collect::<std::collections::BTreeSet<_>>().len() == 1
            && finals.values().all(|f| f.brokers.len() == n as usize && f.brokers.values().all(|fenced| !fenced));
        if converged || tokio::time::Instant::now() >= liveness_end {
            break finals;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The replicated topic: the clients finish their last batches, every
    // replica must converge on its leader's log, then the whole log is read.
    if tokio::time::timeout(liveness_end.saturating_duration_since(tokio::time::Instant::now()), data).await.is_err() {
        violations.push(("liveness", "the data clients did not finish after healing".into()));
    }
    let brokers: Vec<BrokerSlot> = members.iter().map(|m| m.broker.clone()).collect();
    let replicas = loop {
        let running: Vec<(u64, Arc<chronik_core::broker::Broker>)> =
            members.iter().zip(&brokers).filter_map(|(m, b)| b.lock().unwrap().clone().map(|b| (m.id, b))).collect();
        let logs = crate::replication::replica_logs(&running);
        let same = crate::replication::replicas_identical(&logs);
        if same.is_ok() || tokio::time::Instant::now() >= liveness_end + Duration::from_secs(10) {
            break same;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if let Err(e) = replicas {
        violations.push(("replicas-identical", e));
    }
    // Read once every replica has committed its whole log: a leader that
    // restarted learns its high watermark again from its followers.
    let final_logs = client.spawn(crate::replication::final_read(n)).await.expect("the client node runs");
    match final_logs {
        Ok(logs) => history.lock().unwrap().final_logs = logs,
        Err(e) => violations.push(("liveness", format!("final read of the replicated topic: {e:#}"))),
    }
    for g in 0..GROUPS {
        if !client.spawn(crate::groups::final_offsets(GROUP_TARGET, g, history.clone())).await.expect("the client node runs") {
            violations.push(("liveness", format!("group sim-g{g}: its committed offsets could not be read after healing")));
        }
    }
    sampling.store(true, Ordering::SeqCst);
    let _ = sampler.await;
    let mut q = std::mem::take(&mut *quorum.lock().unwrap());
    q.finals = finals;
    violations.extend(quorum::check(&q).into_iter().map(|v| ("quorum", v)));
    let mut history = std::mem::take(&mut *history.lock().unwrap());
    violations.extend(crate::check::run_cluster(&history));
    for (node, f) in &q.finals {
        history.push(Event::Note(format!("final node {node}: index {} hash {:016x}", f.index, f.hash)));
    }
    history.push(Event::Note(format!("acked allocations {} topics {}", q.allocations.len(), q.acked_topics.len())));
    Outcome { history, violations, faults, sim_elapsed: start.elapsed() }
}

/// Kills a node (its unsynced writes are lost) and restarts it after `down`.
async fn crash(handle: &Handle, m: &Member, down: Duration) {
    *m.slot.lock().unwrap() = None;
    *m.broker.lock().unwrap() = None;
    handle.kill(m.node.id());
    m.disk.crash();
    tokio::time::sleep(down).await;
    handle.restart(m.node.id());
}

fn sample(slots: &[(u64, Slot)], brokers: &[(u64, BrokerSlot)], quorum: &Arc<Mutex<QuorumHistory>>) {
    let mut q = quorum.lock().unwrap();
    for (id, slot) in brokers {
        let Some(b) = slot.lock().unwrap().clone() else { continue };
        for t in b.topics() {
            for p in &t.partitions {
                if let chronik_core::broker::replication::Role::Leader { leader, .. } = &*p.role() {
                    q.partition_leaders.entry((t.record.name.clone(), p.index, leader.leader_epoch)).or_default().insert(*id);
                }
            }
        }
    }
    for (id, slot) in slots {
        let Some(c) = slot.lock().unwrap().clone() else { continue };
        let m = c.raft.metrics().borrow().clone();
        if m.state == openraft::ServerState::Leader {
            q.leaders.push((m.current_term, *id));
        }
        let (image, index) = c.sm.image();
        if index > 0 {
            q.applied.push((*id, index, image_hash(&image)));
            if let Err(what) = image.check() {
                q.broken.push((*id, index, what));
            }
        }
    }
}

fn final_views(slots: &[(u64, Slot)]) -> BTreeMap<u64, FinalView> {
    let mut out = BTreeMap::new();
    for (id, slot) in slots {
        let Some(c) = slot.lock().unwrap().clone() else { continue };
        let (image, index) = c.sm.image();
        out.insert(
            *id,
            FinalView {
                index,
                hash: image_hash(&image),
                topics: image.topics.keys().cloned().collect(),
                brokers: image.brokers.values().map(|b| (b.id, b.fenced)).collect(),
            },
        );
    }
    out
}

/// Proposes commands to random members until told to stop: producer-id
/// allocations and topic creations, recording what was acknowledged.
async fn propose_loop(n: u64, quorum: Arc<Mutex<QuorumHistory>>, history: Arc<Mutex<History>>, stop: Arc<AtomicBool>) {
    let mut next_topic = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let (target, create) = {
            let mut r = thread_rng();
            (r.gen_range(1..=n), r.gen_bool(0.3))
        };
        let command = if create {
            next_topic += 1;
            Command::CreateTopic {
                name: format!("t{next_topic}"),
                id: uuid::Uuid::from_u128(next_topic as u128),
                configs: BTreeMap::new(),
                assignment: vec![vec![(target as i32)]],
            }
        } else {
            Command::AllocateProducerIds { count: IDS_PER_ALLOCATION }
        };
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", rpc_addr(target))).expect("valid address").connect_lazy();
        let mut client = ControllerClient::new(channel);
        let mut req = tonic::Request::new(ProposeRequest { command_json: serde_json::to_vec(&command).unwrap().into(), hops: 0 });
        req.set_timeout(Duration::from_secs(3));
        match client.propose(req).await {
            Ok(r) => {
                let applied: Applied = serde_json::from_slice(&r.into_inner().applied_json).expect("outcomes decode");
                let mut q = quorum.lock().unwrap();
                match (&command, applied) {
                    (Command::AllocateProducerIds { .. }, Applied::ProducerIds { first }) => q.allocations.push(first),
                    (Command::CreateTopic { name, .. }, Applied::Done) => q.acked_topics.push(name.clone()),
                    // Refused: its broker is not registered yet.
                    (Command::CreateTopic { .. }, Applied::Refused { .. }) => {}
                    (c, a) => history.lock().unwrap().push(Event::Note(format!("unexpected outcome {a:?} of {c:?}"))),
                }
            }
            Err(s) => history.lock().unwrap().push(Event::Note(format!("propose to node {target}: {:?}", s.code()))),
        }
        tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(10..200))).await;
    }
}
