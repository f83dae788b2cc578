//! The composition root: [`start`] builds a broker from a [`Config`] and the
//! I/O it is given ([`Deps`]) and runs it on the workspace `tokio`.
//! Production passes [`Deps::production`] (the file system, the system clock,
//! an OS-seeded RNG); the simulator passes its own disk, clock and seed to
//! the same function.

pub mod alloc;
pub mod config;
#[cfg(not(madsim))]
pub mod search;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use chronik_core::broker::Broker;
use chronik_core::clock::{Clock, SystemClock};
use chronik_core::disk::{Disk, FsDisk};
use chronik_core::rng::Rng;
use chronik_net::Shared;
pub use config::{Config, Settings};
use tokio::task::JoinHandle;

/// The I/O a broker runs on.
pub struct Deps {
    pub disk: Arc<dyn Disk>,
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<Rng>,
    /// Search indexes driven from a task (the simulator's in-memory ones).
    /// `None` in production, where tantivy indexes run on a thread of their
    /// own next to the HTTP API (see `search::start`).
    pub search: Option<Arc<dyn chronik_core::search::SearchBackend>>,
}

impl Deps {
    /// The real disk at `config.data_dir`, the system clock, and an RNG
    /// seeded once from the clock and the process id.
    pub fn production(config: &Config) -> anyhow::Result<Deps> {
        let disk = FsDisk::new(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let seed = nanos ^ ((std::process::id() as u64) << 32);
        Ok(Deps { disk: Arc::new(disk), clock: Arc::new(SystemClock), rng: Arc::new(Rng::seeded(seed)), search: None })
    }
}

/// How often the group coordinator's timers run: the precision of session
/// timeouts and rebalance deadlines.
const GROUP_TICK_MS: u64 = 100;

/// A running broker.
pub struct Running {
    pub shared: Arc<Shared>,
    /// The address the Kafka listener is bound to (useful with port 0).
    pub kafka_addr: SocketAddr,
    /// The address of the search HTTP API, if it runs.
    pub http_addr: Option<SocketAddr>,
    /// The address of the gRPC admin service, if it runs.
    pub rpc_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    #[cfg(not(madsim))]
    search: Option<search::Running>,
    /// This node's member of the controller quorum, in a cluster.
    pub controller: Option<chronik_net::raft::node::Controller>,
    /// This broker's registration and heartbeats, in a cluster.
    membership: Option<JoinHandle<()>>,
    incarnation: uuid::Uuid,
}

/// Opens the broker (recovering its data) and starts the Kafka listener,
/// the flusher, retention and the group coordinator's timers.
pub async fn start(config: Config, deps: Deps) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(config.kafka_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.kafka_listen))?;
    let kafka_addr = listener.local_addr()?;
    let mut broker_config = config.broker.clone();
    if broker_config.advertised_port == 0 {
        broker_config.advertised_port = kafka_addr.port() as i32;
    }
    // Chosen at every start: the controller quorum tells restarts apart by it.
    let incarnation = deps.rng.bytes16();
    let broker = Broker::open(broker_config.clone(), deps.disk.clone(), deps.clock, deps.rng).context("cannot open the broker's data")?;
    if config.cluster.is_some() {
        // Until the quorum's image arrives, Metadata and DescribeCluster
        // name no controller (and no topic is created here alone: the
        // broker config says it is a cluster member).
        broker.set_cluster_view(Some(chronik_core::broker::ClusterView { controller_id: -1, ..Default::default() }));
    }
    let shared = Shared::new(Arc::new(broker));
    // Search: the simulator injects in-memory indexes driven from a task;
    // production runs tantivy on a thread of its own.
    let mut search_service = None;
    let mut search_live = None;
    let task_indexer = deps.search.map(|backend| {
        let indexes = Arc::new(chronik_core::search::SearchIndexes::new(backend));
        let live = Arc::new(chronik_core::search::live::Live::default());
        search_service = Some(Arc::new(chronik_core::search::service::SearchService::new(shared.broker.clone(), indexes.clone())));
        search_live = Some(live.clone());
        chronik_core::search::indexer::Indexer::new(shared.broker.clone(), indexes, live, config.search_refresh_ms as i64)
    });
    let mut tasks = Vec::new();
    #[cfg(not(madsim))]
    let search = match task_indexer {
        Some(_) => None,
        None => {
            let running = search::start(&config, shared.clone())?;
            search_service = Some(running.service.clone());
            search_live = Some(running.live.clone());
            Some(running)
        }
    };
    // Searches cover every partition of a topic, in a cluster wherever it is held.
    let searcher = search_service.clone().map(|s| Arc::new(chronik_net::search::Searcher::new(shared.clone(), s)));
    #[cfg(not(madsim))]
    let http_addr = match (config.http_listen, &search, &searcher) {
        (Some(addr), Some(search), Some(searcher)) => {
            let (bound, task) = search::serve_http(shared.clone(), search, searcher.clone(), addr).await?;
            tasks.push(task);
            Some(bound)
        }
        _ => None,
    };
    #[cfg(madsim)]
    let http_addr: Option<SocketAddr> = None;
    // The controller quorum, when this node is a cluster member.
    let controller = match &config.cluster {
        None => None,
        Some(cluster) => {
            let voters = cluster.voters.iter().map(|(id, addr)| (*id as u64, addr.clone())).collect();
            let controller = chronik_net::raft::node::Controller::start(
                broker_config.node_id as u64,
                voters,
                deps.disk.clone(),
                &chronik_net::raft::node::RaftTiming::default(),
                broker_config.cluster_id.clone(),
            )
            .await
            .context("cannot start the controller")?;
            Some(controller)
        }
    };
    let rpc_addr = match config.rpc_listen {
        Some(addr) => {
            let listener = chronik_net::grpc::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for the gRPC admin service (set --rpc-listen to another address, or \"off\")")
            })?;
            let bound = listener.addr;
            tasks.push(tokio::spawn(chronik_net::grpc::serve(listener, shared.clone(), searcher.clone(), search_live.clone(), controller.clone())));
            Some(bound)
        }
        None => None,
    };
    tasks.extend([
        tokio::spawn(chronik_net::serve(listener, shared.clone())),
        tokio::spawn(chronik_net::flusher(shared.clone(), broker_config.flush_interval_ms)),
        tokio::spawn(chronik_net::retention(shared.clone(), broker_config.retention_check_interval_ms)),
        tokio::spawn(chronik_net::group_timer(shared.clone(), GROUP_TICK_MS)),
    ]);
    let mut membership = None;
    if let (Some(controller), Some(cluster), Some(rpc)) = (&controller, &config.cluster, rpc_addr) {
        let info = chronik_core::cluster::image::BrokerInfo {
            id: broker_config.node_id,
            host: broker_config.advertised_host.clone(),
            kafka_port: broker_config.advertised_port,
            rpc: cluster.voters.get(&broker_config.node_id).cloned().unwrap_or_else(|| rpc.to_string()),
            incarnation: uuid::Uuid::from_bytes(incarnation),
            fenced: true,
            left: false,
        };
        if shared.cluster.set(chronik_net::cluster_admin::Cluster::new(controller.clone())).is_err() {
            unreachable!("the cluster handle is set once");
        }
        tasks.push(tokio::spawn(chronik_net::raft::node::run_cluster_view(shared.clone(), controller.clone(), uuid::Uuid::from_bytes(incarnation))));
        tasks.push(tokio::spawn(chronik_net::replication::run_replication(shared.clone(), controller.clone())));
        tasks.push(tokio::spawn(chronik_net::replication::run_isr(shared.clone(), controller.clone())));
        let session = std::time::Duration::from_millis(cluster.session_timeout_ms);
        tasks.push(tokio::spawn(chronik_net::raft::node::run_liveness(shared.clone(), controller.clone(), session)));
        let interval = std::time::Duration::from_millis(cluster.heartbeat_interval_ms);
        membership = Some(tokio::spawn(chronik_net::raft::node::run_membership(shared.clone(), controller.clone(), info, interval)));
    }
    if let Some(indexer) = task_indexer {
        tasks.push(tokio::spawn(chronik_net::search_indexer(shared.clone(), indexer, config.search_refresh_ms)));
    }
    tracing::info!(
        kafka = %kafka_addr,
        http = %http_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        rpc = %rpc_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        node_id = broker_config.node_id,
        data_dir = %config.data_dir.display(),
        cluster_id = %shared.broker.cluster_id(),
        topics = shared.broker.topics().len(),
        "chronik broker started"
    );
    Ok(Running {
        shared,
        kafka_addr,
        http_addr,
        rpc_addr,
        tasks,
        controller,
        membership,
        incarnation: uuid::Uuid::from_bytes(incarnation),
        #[cfg(not(madsim))]
        search,
    })
}

impl Running {
    /// Graceful shutdown: stop accepting and stop the timers, then fsync
    /// every partition.
    pub async fn shutdown(self) {
        if let Some(membership) = &self.membership {
            membership.abort();
        }
        if let Some(controller) = &self.controller {
            controller.leave(self.shared.broker.config().node_id, self.incarnation).await;
        }
        self.shared.stop();
        for t in self.tasks {
            let _ = t.await;
        }
        #[cfg(not(madsim))]
        if let Some(search) = self.search {
            search.stop().await;
        }
        if let Some(controller) = self.controller {
            controller.shutdown().await;
        }
        self.shared.broker.shutdown();
        tracing::info!("chronik broker stopped; all data flushed");
    }
}
