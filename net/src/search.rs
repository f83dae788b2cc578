//! Search across the cluster (`chronik.v1.Shards`).
//!
//! Each broker indexes the replicas it holds (to their high watermark). A
//! search taken by any broker covers every partition of the topic, as an
//! Elasticsearch search covers every shard of an index: the partitions this
//! broker holds in sync are searched here; each other partition is asked of
//! its leader, or failing that of another in-sync replica
//! ([`SearchService::routes`]). Each part returns its best `from + size`
//! hits with their records and sort keys, and [`merge`] makes the page. A
//! partition no broker could search is reported (`_shards.failures`), and
//! the answer is the other partitions', as Elasticsearch answers with the
//! shards it reached; when none could be searched, the search fails.
//!
//! Live subscriptions do the same with streams: records of the partitions
//! held elsewhere come from a `Subscribe` stream to a broker that holds them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronik_core::search::query::QueryError;
use chronik_core::search::service::{merge, Hit, PartitionFailure, SearchError, SearchRequest, SearchResponse, SearchService};
use chronik_core::search::{Doc, Query, SortKey};
use chronik_proto::grpc::shard_event::Event;
use chronik_proto::grpc::shards_client::ShardsClient;
use chronik_proto::grpc::shards_server;
use chronik_proto::grpc::{
    PartitionStarts, RecordHeader, SearchHit, ShardEvent, ShardHit, ShardSearchRequest, ShardSearchResponse, ShardSubscribeRequest,
};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Shared;

/// How long a broker may take to answer its part of a search.
const PART_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message either side accepts: a part's window of hits (up
/// to 10,000) with their records.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Events a remote subscription may have unread before it is dropped.
const SUBSCRIBE_BUFFER: usize = 10_000;
/// How often a subscription stream says it is alive when it has nothing
/// else to say, and how long its reader waits before taking a silent
/// stream (a frozen or cut-off broker) for lost.
const HEARTBEAT: Duration = Duration::from_secs(3);
const HEARTBEAT_LOST: Duration = Duration::from_secs(10);

/// Runs `f` where it may block for a moment: a blocking-pool thread in
/// production; inline in the simulation (no OS threads there, and the
/// simulator's indexes are in memory).
pub async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(f).await.map_err(|e| format!("search task failed: {e}"))
    }
    #[cfg(madsim)]
    {
        Ok(f())
    }
}

/// Searches a topic wherever its partitions are: the entry point of the
/// HTTP API and the admin service's `Search`.
pub struct Searcher {
    shared: Arc<Shared>,
    local: Arc<SearchService>,
    /// One channel per broker address, reused across searches.
    channels: Mutex<BTreeMap<String, Channel>>,
}

/// Each partition's brokers to ask, best first, and how far down its list
/// a search (or subscription) has gone: partitions are grouped by the
/// broker to ask next, and one whose every broker failed is a failure.
struct Attempts {
    pending: BTreeMap<i32, (Vec<i32>, usize)>,
    failures: Vec<PartitionFailure>,
}

impl Attempts {
    fn new(routes: impl IntoIterator<Item = (i32, Vec<i32>)>) -> Attempts {
        let mut a = Attempts { pending: BTreeMap::new(), failures: Vec::new() };
        for (p, brokers) in routes {
            if brokers.is_empty() {
                a.failures.push(PartitionFailure { partition: p, node: -1, reason: format!("partition {p} has no leader and no in-sync replica") });
            } else {
                a.pending.insert(p, (brokers, 0));
            }
        }
        a
    }

    fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// The partitions still to ask for, by the broker to ask next.
    fn by_broker(&self) -> BTreeMap<i32, Vec<i32>> {
        let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for (p, (brokers, tried)) in &self.pending {
            out.entry(brokers[*tried]).or_default().push(*p);
        }
        out
    }

    fn done(&mut self, partition: i32) {
        self.pending.remove(&partition);
    }

    /// `node` could not answer for `partition`: its next broker is asked,
    /// or, with none left, it has failed.
    fn failed(&mut self, partition: i32, node: i32, reason: &str) {
        let Some((brokers, tried)) = self.pending.get_mut(&partition) else { return };
        *tried += 1;
        if *tried >= brokers.len() {
            self.pending.remove(&partition);
            self.failures.push(PartitionFailure { partition, node, reason: format!("broker {node}: {reason}") });
        }
    }

    fn into_failures(mut self) -> Vec<PartitionFailure> {
        self.failures.sort_by_key(|f| f.partition);
        self.failures
    }
}

impl Searcher {
    pub fn new(shared: Arc<Shared>, local: Arc<SearchService>) -> Searcher {
        Searcher { shared, local, channels: Mutex::default() }
    }

    /// This broker's own search (its indexes): topic checks, rebuilds.
    pub fn service(&self) -> &Arc<SearchService> {
        &self.local
    }

    /// A channel to broker `id`'s gRPC services, from the controller's image.
    fn channel(&self, id: i32) -> Result<Channel, String> {
        let cluster = self.shared.cluster.get().ok_or("not a cluster member")?;
        let rpc = cluster
            .controller
            .sm
            .with_image(|i| i.brokers.get(&id).map(|b| b.rpc.clone()))
            .ok_or_else(|| format!("broker {id} is not registered"))?;
        let mut channels = self.channels.lock().expect("search channels lock");
        if let Some(c) = channels.get(&rpc) {
            return Ok(c.clone());
        }
        let c = crate::raft::network::channel(&rpc)?;
        channels.insert(rpc, c.clone());
        Ok(c)
    }

    fn client(&self, id: i32) -> Result<ShardsClient<Channel>, String> {
        Ok(ShardsClient::new(self.channel(id)?).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Searches `topic` (every partition, or those `req` names).
    pub async fn search(&self, topic: &str, req: SearchRequest) -> Result<SearchResponse, SearchError> {
        self.local.check_topic(topic)?;
        req.check_window()?;
        let Some((topic_id, routes)) = self.local.routes(topic, req.partitions.as_deref()) else {
            // A topic this broker serves alone: every partition is here.
            let (local, topic) = (self.local.clone(), topic.to_string());
            return run_blocking(move || local.search(&topic, &req)).await.unwrap_or_else(|e| Err(SearchError::Unavailable(e)));
        };
        if routes.values().all(|brokers| brokers.first() == Some(&self.me())) {
            // Every partition asked for is held here in sync: one local search.
            let (local, topic) = (self.local.clone(), topic.to_string());
            let partitions = routes.keys().copied().collect();
            let req = SearchRequest { partitions: Some(partitions), ..req };
            return run_blocking(move || local.search(&topic, &req)).await.unwrap_or_else(|e| Err(SearchError::Unavailable(e)));
        }
        let mut parts = Vec::new();
        let mut attempts = Attempts::new(routes);
        while !attempts.is_done() {
            // Every broker at once.
            let mut running = Vec::new();
            for (node, partitions) in attempts.by_broker() {
                let part = req.for_part(partitions.clone());
                let task = if node == self.me() {
                    let (local, topic) = (self.local.clone(), topic.to_string());
                    tokio::spawn(async move { run_blocking(move || local.search_part(&topic, &part)).await.unwrap_or_else(|e| Err(SearchError::Unavailable(e))) })
                } else {
                    let client = self.client(node);
                    let topic = topic.to_string();
                    tokio::spawn(async move {
                        match client {
                            Ok(client) => ask(client, topic, topic_id, part).await,
                            Err(e) => Err(SearchError::Unavailable(e)),
                        }
                    })
                };
                running.push((node, partitions, task));
            }
            for (node, partitions, task) in running {
                let answer = task.await.unwrap_or_else(|e| Err(SearchError::Unavailable(format!("search task failed: {e}"))));
                // The partitions to ask of their next replica, and why.
                let failed: Vec<(i32, String)> = match answer {
                    Ok(mut answer) => {
                        let failed: Vec<(i32, String)> = std::mem::take(&mut answer.failures).into_iter().map(|f| (f.partition, f.reason)).collect();
                        answer.partitions -= failed.len();
                        if answer.partitions > 0 {
                            parts.push(answer);
                        }
                        failed
                    }
                    // The request itself is wrong: no other broker will take it.
                    Err(e @ (SearchError::Bad(_) | SearchError::NotEnabled(_))) => return Err(e),
                    Err(e) => {
                        let (_, _, reason) = e.es_error();
                        partitions.iter().map(|p| (*p, reason.clone())).collect()
                    }
                };
                for p in &partitions {
                    if !failed.iter().any(|(f, _)| f == p) {
                        attempts.done(*p);
                    }
                }
                for (p, reason) in failed {
                    tracing::debug!(topic, node, partition = p, %reason, "a partition's search failed; asking its next replica");
                    attempts.failed(p, node, &reason);
                }
            }
        }
        let failures = attempts.into_failures();
        if parts.is_empty() {
            let why = failures.first().map_or_else(|| "no partition to search".to_string(), |f| f.reason.clone());
            return Err(SearchError::Unavailable(format!("no partition of topic [{topic}] could be searched: {why}")));
        }
        let mut answer = merge(&req, parts);
        answer.partitions += failures.len();
        answer.failures.extend(failures);
        Ok(answer)
    }

    /// Subscribes to the records of `topic`'s partitions held elsewhere
    /// (those this broker does not hold in sync) that match `query`, from
    /// their log ends now: a broker that holds some streams them (their
    /// leader, or failing that another in-sync replica; the brokers are
    /// asked at once), and every record and broken stream goes to `sink`.
    /// Returns where those partitions start, and the partitions no broker
    /// could be asked for.
    pub async fn subscribe_remote(
        &self,
        topic: &str,
        query: &Query,
        sink: tokio::sync::mpsc::Sender<RemoteEvent>,
    ) -> Result<(Vec<(i32, i64)>, Vec<PartitionFailure>), SearchError> {
        let Some((topic_id, routes)) = self.local.routes(topic, None) else { return Ok((Vec::new(), Vec::new())) };
        let me = self.me();
        let query_json = serde_json::to_vec(query).map_err(|e| SearchError::Unavailable(format!("cannot encode the query: {e}")))?;
        let mut starts = Vec::new();
        // Those followed here aside, from the others' other replicas.
        let elsewhere = routes.into_iter().filter(|(_, b)| b.first() != Some(&me)).map(|(p, b)| (p, b.into_iter().filter(|b| *b != me).collect()));
        let mut attempts = Attempts::new(elsewhere);
        while !attempts.is_done() {
            let mut opening = Vec::new();
            for (id, partitions) in attempts.by_broker() {
                let request = ShardSubscribeRequest {
                    topic: topic.to_string(),
                    topic_id: topic_id.as_bytes().to_vec().into(),
                    partitions: partitions.clone(),
                    query_json: query_json.clone().into(),
                };
                let client = self.client(id);
                let open = async move {
                    let mut stream = client?.subscribe(Request::new(request)).await.map_err(|s| s.message().to_string())?.into_inner();
                    // The first event says where the partitions start.
                    match stream.message().await {
                        Ok(Some(ShardEvent { event: Some(Event::Subscribed(s)) })) => Ok((stream, s.from)),
                        Ok(_) => Err("the stream did not begin with where it starts".to_string()),
                        Err(s) => Err(s.message().to_string()),
                    }
                };
                let task = tokio::spawn(async move { tokio::time::timeout(PART_TIMEOUT, open).await.unwrap_or_else(|_| Err(format!("no answer within {PART_TIMEOUT:?}"))) });
                opening.push((id, partitions, task));
            }
            for (id, partitions, task) in opening {
                let opened = task.await.unwrap_or_else(|e| Err(format!("subscribe task failed: {e}")));
                match opened {
                    Ok((stream, from)) => {
                        starts.extend(from);
                        for p in &partitions {
                            attempts.done(*p);
                        }
                        tokio::spawn(follow_remote(stream, sink.clone(), topic.to_string(), id, partitions));
                    }
                    Err(reason) => {
                        tracing::debug!(topic, node = id, %reason, "cannot follow partitions at a broker; asking their next replica");
                        for p in partitions {
                            attempts.failed(p, id, &reason);
                        }
                    }
                }
            }
        }
        starts.sort_unstable();
        Ok((starts, attempts.into_failures()))
    }

    /// Asks for `topic`'s indexes to be rebuilt from its log here and, in a
    /// cluster (unless `local_only`), on every other live broker (each holds
    /// indexes of its own replicas). Returns the brokers that took the
    /// request; fails naming a broker that could not be asked.
    pub async fn rebuild(&self, topic: &str, local_only: bool) -> Result<Vec<i32>, SearchError> {
        self.local.rebuild(topic)?;
        let mut brokers = vec![self.me()];
        let Some(cluster) = self.shared.cluster.get().filter(|_| !local_only) else { return Ok(brokers) };
        let me = self.me();
        let others: Vec<(i32, String)> = cluster.controller.sm.with_image(|i| i.brokers.values().filter(|b| !b.fenced && b.id != me).map(|b| (b.id, b.rpc.clone())).collect());
        let mut failed = Vec::new();
        for (id, rpc) in others {
            let asked = async {
                let mut client = chronik_proto::grpc::admin_client::AdminClient::new(self.channel(id).map_err(Status::unavailable)?);
                let mut r = Request::new(chronik_proto::grpc::RebuildSearchIndexRequest { topic: topic.to_string(), local_only: true });
                r.set_timeout(PART_TIMEOUT);
                // (The deadline travels to the peer; a frozen peer never answers.)
                let called = tokio::time::timeout(PART_TIMEOUT, client.rebuild_search_index(r)).await;
                called.unwrap_or_else(|_| Err(Status::deadline_exceeded(format!("no answer within {PART_TIMEOUT:?}"))))
            };
            match asked.await {
                Ok(_) => brokers.push(id),
                Err(s) => failed.push(format!("broker {id} ({rpc}): {}", s.message())),
            }
        }
        if !failed.is_empty() {
            return Err(SearchError::Unavailable(format!("the rebuild was asked of brokers {brokers:?}, but not of {}", failed.join("; "))));
        }
        Ok(brokers)
    }

    fn me(&self) -> i32 {
        self.shared.broker.config().node_id
    }
}

/// Passes a remote broker's stream of matches to `sink` until the sink is
/// gone or the stream breaks (an error, its end, or no heartbeat within
/// [`HEARTBEAT_LOST`]), which it reports as [`RemoteEvent::Lost`].
async fn follow_remote(mut stream: tonic::Streaming<ShardEvent>, sink: tokio::sync::mpsc::Sender<RemoteEvent>, topic: String, node: i32, partitions: Vec<i32>) {
    loop {
        let event = tokio::select! {
            biased;
            _ = sink.closed() => return,
            m = tokio::time::timeout(HEARTBEAT_LOST, stream.message()) => m,
        };
        let lost = match event {
            Ok(Ok(Some(ShardEvent { event: Some(Event::Hit(h)) }))) => {
                if sink.send(RemoteEvent::Hit(doc_of(h))).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Ok(Some(_))) => continue, // a heartbeat
            Ok(Ok(None)) => "the stream ended".to_string(),
            Ok(Err(s)) => s.message().to_string(),
            Err(_) => format!("no word from it within {HEARTBEAT_LOST:?}"),
        };
        tracing::warn!(topic, node, reason = %lost, "a live search's stream from another broker broke");
        let _ = sink.send(RemoteEvent::Lost { node, partitions, reason: lost }).await;
        return;
    }
}

/// Where a live subscription starts, for the documents its sink is offered.
/// A subscription is registered before its start offsets are read (a record
/// indexed in between is then either below them or seen), so documents
/// offered before the starts are known wait here; afterwards a document
/// passes if it is at or past its partition's start (partitions without a
/// start are followed elsewhere).
#[derive(Default)]
pub struct Gate {
    state: Mutex<(Option<BTreeMap<i32, i64>>, Vec<Doc>)>,
}

impl Gate {
    /// The most documents held before the starts are known.
    const HELD_MAX: usize = 10_000;

    /// From the subscription's sink: holds `doc`, or passes it to `deliver`
    /// if it is in range. False once the subscriber is gone (or too much was
    /// held for it).
    pub fn offer(&self, doc: &Doc, deliver: impl FnOnce(&Doc) -> bool) -> bool {
        let mut state = self.state.lock().expect("gate lock");
        match &state.0 {
            None => {
                state.1.push(doc.clone());
                state.1.len() <= Self::HELD_MAX
            }
            Some(starts) if starts.get(&doc.partition).is_some_and(|s| doc.offset >= *s) => deliver(doc),
            Some(_) => true,
        }
    }

    /// Sets the starts. `first` runs at once (it sends the `subscribed`
    /// event), then the held documents in range go to `deliver`, all before
    /// any later document can pass. False if `deliver` said the subscriber
    /// is gone.
    pub fn open(&self, starts: BTreeMap<i32, i64>, first: impl FnOnce(), mut deliver: impl FnMut(&Doc) -> bool) -> bool {
        let mut state = self.state.lock().expect("gate lock");
        first();
        let held = std::mem::take(&mut state.1);
        let alive = held.iter().filter(|d| starts.get(&d.partition).is_some_and(|s| d.offset >= *s)).all(&mut deliver);
        state.0 = Some(starts);
        alive
    }
}

/// What a live subscription hears from the brokers that hold the
/// partitions it does not.
#[derive(Debug)]
pub enum RemoteEvent {
    Hit(Doc),
    /// A broker's stream broke: its partitions are no longer followed.
    Lost { node: i32, partitions: Vec<i32>, reason: String },
}

/// Asks another broker for its part of a search.
async fn ask(mut client: ShardsClient<Channel>, topic: String, topic_id: Uuid, part: SearchRequest) -> Result<SearchResponse, SearchError> {
    let request_json = serde_json::to_vec(&part).map_err(|e| SearchError::Unavailable(format!("cannot encode the request: {e}")))?;
    let mut r = Request::new(ShardSearchRequest { topic, topic_id: topic_id.as_bytes().to_vec().into(), request_json: request_json.into() });
    r.set_timeout(PART_TIMEOUT);
    // (The deadline travels to the peer; a frozen peer never answers.)
    let called = tokio::time::timeout(PART_TIMEOUT, client.search(r)).await;
    let answer = called.unwrap_or_else(|_| Err(Status::deadline_exceeded(format!("no answer within {PART_TIMEOUT:?}")))).map_err(|s| match s.code() {
        tonic::Code::InvalidArgument => {
            let (kind, reason) = s.message().split_once(": ").unwrap_or(("illegal_argument_exception", s.message()));
            SearchError::Bad(QueryError { kind: es_kind(kind), reason: reason.to_string() })
        }
        _ => SearchError::Unavailable(s.message().to_string()),
    })?;
    let answer = answer.into_inner();
    let hits = answer
        .hits
        .into_iter()
        .map(|h| {
            let hit = h.hit.unwrap_or_default();
            let (score, partition, offset) = (hit.score, hit.partition, hit.offset);
            Hit { doc: doc_of(hit), score, sort: SortKey { values: h.sort_values, partition, offset } }
        })
        .collect();
    let failures = answer.failures.into_iter().map(|f| PartitionFailure { partition: f.partition, node: f.node, reason: f.reason }).collect();
    Ok(SearchResponse { total: answer.total, hits, partitions: answer.partitions as usize, failures })
}

/// Elasticsearch error types a search may carry across brokers (a
/// `&'static str` in `QueryError`).
fn es_kind(kind: &str) -> &'static str {
    const KINDS: [&str; 5] = ["illegal_argument_exception", "parsing_exception", "query_shard_exception", "x_content_parse_exception", "search_phase_execution_exception"];
    KINDS.into_iter().find(|k| *k == kind).unwrap_or("illegal_argument_exception")
}

/// A hit as the admin service and the shard service send it.
pub fn hit_message(h: &Hit) -> SearchHit {
    let mut m = doc_message(&h.doc);
    m.score = h.score;
    m
}

fn doc_message(d: &Doc) -> SearchHit {
    SearchHit {
        partition: d.partition,
        offset: d.offset,
        timestamp: d.timestamp,
        key: d.key.clone(),
        value: d.value.clone(),
        headers: d.headers.iter().map(|(key, value)| RecordHeader { key: key.clone(), value: value.clone() }).collect(),
        score: 0.0,
    }
}

fn doc_of(h: SearchHit) -> Doc {
    Doc {
        partition: h.partition,
        offset: h.offset,
        timestamp: h.timestamp,
        key: h.key,
        value: h.value,
        headers: h.headers.into_iter().map(|r| (r.key, r.value)).collect(),
    }
}

/// A search's refusal as a gRPC status (the Elasticsearch error type
/// first in an invalid argument's message, so another broker can rebuild it).
pub fn search_status(e: SearchError) -> Status {
    match e {
        SearchError::NoTopic(t) => Status::not_found(format!("topic '{t}' does not exist")),
        SearchError::Bad(q) => Status::invalid_argument(format!("{}: {}", q.kind, q.reason)),
        e @ SearchError::NotEnabled(_) => Status::failed_precondition(e.es_error().2),
        SearchError::Unavailable(why) => Status::unavailable(why),
    }
}

/// The other brokers' side: `chronik.v1.Shards`.
pub struct ShardService {
    shared: Arc<Shared>,
    search: Arc<SearchService>,
    live: Arc<chronik_core::search::live::Live>,
}

impl ShardService {
    /// Wrap it in `ShardsServer` with [`MAX_MESSAGE_BYTES`] limits.
    pub fn new(shared: Arc<Shared>, search: Arc<SearchService>, live: Arc<chronik_core::search::live::Live>) -> ShardService {
        ShardService { shared, search, live }
    }

    /// The topic asked for, if it is the one this broker has under that name.
    fn check_topic(&self, topic: &str, id: &[u8]) -> Result<Arc<chronik_core::broker::Topic>, Status> {
        let id = Uuid::from_slice(id).map_err(|e| Status::invalid_argument(format!("illegal_argument_exception: bad topic id: {e}")))?;
        self.search.check_topic(topic).map_err(search_status)?;
        match self.shared.broker.topic(topic) {
            Some(t) if t.record.id == id => Ok(t),
            _ => Err(Status::not_found(format!("topic '{topic}' with id {id} is not here"))),
        }
    }
}

#[tonic::async_trait]
impl shards_server::Shards for ShardService {
    async fn search(&self, request: Request<ShardSearchRequest>) -> Result<Response<ShardSearchResponse>, Status> {
        let r = request.into_inner();
        let part: SearchRequest =
            serde_json::from_slice(&r.request_json).map_err(|e| Status::invalid_argument(format!("illegal_argument_exception: undecodable search: {e}")))?;
        if part.partitions.is_none() {
            return Err(Status::invalid_argument("illegal_argument_exception: a part of a search names its partitions"));
        }
        self.check_topic(&r.topic, &r.topic_id)?;
        let (search, topic) = (self.search.clone(), r.topic);
        let answer = run_blocking(move || search.search_part(&topic, &part)).await.map_err(Status::internal)?.map_err(search_status)?;
        let hits = answer.hits.iter().map(|h| ShardHit { hit: Some(hit_message(h)), sort_values: h.sort.values.clone() }).collect();
        let failures = answer.failures.into_iter().map(|f| chronik_proto::grpc::PartitionFailure { partition: f.partition, node: f.node, reason: f.reason }).collect();
        Ok(Response::new(ShardSearchResponse { total: answer.total, hits, partitions: answer.partitions as u32, failures }))
    }

    type SubscribeStream = ReceiverStream<Result<ShardEvent, Status>>;

    async fn subscribe(&self, request: Request<ShardSubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        let query: Query = serde_json::from_slice(&r.query_json).map_err(|e| Status::invalid_argument(format!("illegal_argument_exception: undecodable query: {e}")))?;
        let t = self.check_topic(&r.topic, &r.topic_id)?;
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBE_BUFFER);
        // Set when the subscriber fell too far behind: its stream then ends
        // (with an error), so the caller knows it missed records.
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = Arc::new(Gate::default());
        let (sink_tx, sink_dropped, sink_gate, topic) = (tx.clone(), dropped.clone(), gate.clone(), r.topic.clone());
        let deliver = move |doc: &Doc| match sink_tx.try_send(Ok(ShardEvent { event: Some(Event::Hit(doc_message(doc))) })) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(topic = %topic, "a live search from another broker fell {SUBSCRIBE_BUFFER} events behind; closing it");
                sink_dropped.store(true, std::sync::atomic::Ordering::SeqCst);
                false
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        };
        let sink_deliver = deliver.clone();
        let Some(id) = self.live.subscribe(&r.topic, query, Box::new(move |doc| sink_gate.offer(doc, &sink_deliver))) else {
            return Err(Status::unavailable("the broker is shutting down"));
        };
        // Registered first, then the starts read: see `Gate`.
        let mut starts = BTreeMap::new();
        for p in &r.partitions {
            match t.partition(*p).and_then(|p| p.log_end_offset()) {
                Some(end) => {
                    starts.insert(*p, end);
                }
                None => {
                    self.live.unsubscribe(id);
                    return Err(Status::unavailable(format!("partition {p} of '{}' is not held here", r.topic)));
                }
            }
        }
        let first = ShardEvent { event: Some(Event::Subscribed(PartitionStarts { from: starts.clone().into_iter().collect() })) };
        gate.open(starts, || drop(tx.try_send(Ok(first))), deliver);
        // Unsubscribes once the caller is gone (the stream is dropped) or
        // the broker stops; says it is alive every HEARTBEAT; ends the stream
        // with an error once the subscriber was dropped for falling behind.
        let (live, shared) = (self.live.clone(), self.shared.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = shared.stopped() => break,
                    _ = tx.closed() => break,
                    _ = tokio::time::sleep(HEARTBEAT) => {}
                }
                if dropped.load(std::sync::atomic::Ordering::SeqCst) {
                    let ended = Err(Status::resource_exhausted(format!("fell {SUBSCRIBE_BUFFER} events behind")));
                    let _ = tokio::time::timeout(PART_TIMEOUT, tx.send(ended)).await;
                    break;
                }
                let _ = tx.try_send(Ok(ShardEvent { event: None }));
            }
            live.unsubscribe(id);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(partition: i32, offset: i64) -> Doc {
        Doc { partition, offset, timestamp: 0, key: None, value: None, headers: Vec::new() }
    }

    #[test]
    fn a_gate_holds_documents_until_the_starts_are_known_then_passes_those_in_range() {
        let gate = Gate::default();
        let mut seen = Vec::new();
        // Indexed between registering and reading the starts: held.
        assert!(gate.offer(&doc(0, 4), |_| unreachable!("held")));
        assert!(gate.offer(&doc(0, 5), |_| unreachable!("held")));
        assert!(gate.offer(&doc(1, 9), |_| unreachable!("held")));
        let starts = BTreeMap::from([(0, 5), (2, 0)]);
        let mut order = Vec::new();
        assert!(gate.open(starts, || order.push("first"), |d| {
            seen.push((d.partition, d.offset));
            true
        }));
        assert_eq!(order, ["first"]);
        assert_eq!(seen, [(0, 5)], "below its start, or a partition followed elsewhere: not passed");
        let mut passed = Vec::new();
        for d in [doc(0, 6), doc(1, 10), doc(2, 0)] {
            assert!(gate.offer(&d, |d| {
                passed.push((d.partition, d.offset));
                true
            }));
        }
        assert_eq!(passed, [(0, 6), (2, 0)]);
        assert!(!gate.offer(&doc(0, 7), |_| false), "the subscriber is gone");
    }

    #[test]
    fn a_gate_that_holds_too_much_drops_its_subscriber() {
        let gate = Gate::default();
        let alive = (0..=Gate::HELD_MAX as i64).map(|o| gate.offer(&doc(0, o), |_| true)).collect::<Vec<_>>();
        assert!(alive[..Gate::HELD_MAX].iter().all(|a| *a));
        assert!(!alive[Gate::HELD_MAX]);
    }
}
