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

/// Who answers for a set of partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Here,
    Broker(i32),
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
        let mut failures = Vec::new();
        // Each partition's candidates, and how many have failed it so far.
        let mut pending: BTreeMap<i32, (Vec<i32>, usize)> = BTreeMap::new();
        for (p, brokers) in routes {
            if brokers.is_empty() {
                failures.push(PartitionFailure { partition: p, node: -1, reason: format!("partition {p} has no leader and no in-sync replica") });
            } else {
                pending.insert(p, (brokers, 0));
            }
        }
        while !pending.is_empty() {
            let mut groups: BTreeMap<Source, Vec<i32>> = BTreeMap::new();
            for (p, (brokers, tried)) in &pending {
                let source = if brokers[*tried] == self.me() { Source::Here } else { Source::Broker(brokers[*tried]) };
                groups.entry(source).or_default().push(*p);
            }
            // Every group at once.
            let mut running = Vec::new();
            for (source, partitions) in groups {
                let part = req.for_part(partitions.clone());
                let task = match source {
                    Source::Here => {
                        let (local, topic) = (self.local.clone(), topic.to_string());
                        tokio::spawn(async move { run_blocking(move || local.search(&topic, &part)).await.unwrap_or_else(|e| Err(SearchError::Unavailable(e))) })
                    }
                    Source::Broker(id) => {
                        let client = self.client(id);
                        let topic = topic.to_string();
                        tokio::spawn(async move {
                            match client {
                                Ok(client) => ask(client, topic, topic_id, part).await,
                                Err(e) => Err(SearchError::Unavailable(e)),
                            }
                        })
                    }
                };
                running.push((source, partitions, task));
            }
            for (source, partitions, task) in running {
                let answer = task.await.unwrap_or_else(|e| Err(SearchError::Unavailable(format!("search task failed: {e}"))));
                match answer {
                    Ok(answer) => {
                        parts.push(answer);
                        for p in &partitions {
                            pending.remove(p);
                        }
                    }
                    // The request itself is wrong: no other broker will take it.
                    Err(e @ (SearchError::Bad(_) | SearchError::NotEnabled(_))) => return Err(e),
                    Err(e) => {
                        let node = match source {
                            Source::Here => self.me(),
                            Source::Broker(id) => id,
                        };
                        let (_, _, reason) = e.es_error();
                        tracing::debug!(topic, node, ?partitions, %reason, "a part of a search failed; asking the next replica");
                        for p in partitions {
                            let (brokers, tried) = pending.get_mut(&p).expect("pending");
                            *tried += 1;
                            if *tried >= brokers.len() {
                                pending.remove(&p);
                                failures.push(PartitionFailure { partition: p, node, reason: format!("broker {node}: {reason}") });
                            }
                        }
                    }
                }
            }
        }
        if parts.is_empty() {
            let why = failures.first().map_or_else(|| "no partition to search".to_string(), |f| f.reason.clone());
            return Err(SearchError::Unavailable(format!("no partition of topic [{topic}] could be searched: {why}")));
        }
        let mut answer = merge(&req, parts);
        answer.partitions += failures.len();
        answer.failures.extend(failures);
        answer.failures.sort_by_key(|f| f.partition);
        Ok(answer)
    }

    /// Subscribes to the records of `topic`'s partitions held elsewhere
    /// (those this broker does not hold in sync) that match `query`, from
    /// their log ends now: each broker that holds some streams them, and
    /// every record and broken stream goes to `sink`. Returns where those
    /// partitions start, and the partitions no broker could be asked for.
    pub async fn subscribe_remote(
        &self,
        topic: &str,
        query: &Query,
        sink: tokio::sync::mpsc::Sender<RemoteEvent>,
    ) -> Result<(Vec<(i32, i64)>, Vec<PartitionFailure>), SearchError> {
        let Some((topic_id, routes)) = self.local.routes(topic, None) else { return Ok((Vec::new(), Vec::new())) };
        let me = self.me();
        let mut by_broker: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        let mut failures = Vec::new();
        for (p, brokers) in routes {
            match brokers.first() {
                Some(b) if *b == me => {}
                Some(b) => by_broker.entry(*b).or_default().push(p),
                None => failures.push(PartitionFailure { partition: p, node: -1, reason: format!("partition {p} has no leader and no in-sync replica") }),
            }
        }
        let query_json = serde_json::to_vec(query).map_err(|e| SearchError::Unavailable(format!("cannot encode the query: {e}")))?;
        let mut starts = Vec::new();
        for (id, partitions) in by_broker {
            let request = ShardSubscribeRequest { topic: topic.to_string(), topic_id: topic_id.as_bytes().to_vec().into(), partitions: partitions.clone(), query_json: query_json.clone().into() };
            let opened = async {
                let mut client = self.client(id)?;
                let mut stream = client.subscribe(Request::new(request)).await.map_err(|s| s.message().to_string())?.into_inner();
                // The first event says where the partitions start.
                match tokio::time::timeout(PART_TIMEOUT, stream.message()).await {
                    Ok(Ok(Some(ShardEvent { event: Some(Event::Subscribed(s)) }))) => Ok((stream, s.from)),
                    Ok(Err(s)) => Err(s.message().to_string()),
                    Ok(_) => Err("the stream did not begin with where it starts".to_string()),
                    Err(_) => Err(format!("no answer within {PART_TIMEOUT:?}")),
                }
            };
            let mut stream = match opened.await {
                Ok((stream, from)) => {
                    starts.extend(from);
                    stream
                }
                Err(reason) => {
                    failures.extend(partitions.iter().map(|p| PartitionFailure { partition: *p, node: id, reason: format!("broker {id}: {reason}") }));
                    continue;
                }
            };
            let sink = sink.clone();
            let topic = topic.to_string();
            tokio::spawn(async move {
                loop {
                    let event = tokio::select! {
                        biased;
                        _ = sink.closed() => return,
                        m = stream.message() => m,
                    };
                    let lost = match event {
                        Ok(Some(ShardEvent { event: Some(Event::Hit(h)) })) => {
                            if sink.send(RemoteEvent::Hit(doc_of(h))).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        Ok(Some(_)) => continue,
                        Ok(None) => "the stream ended".to_string(),
                        Err(s) => s.message().to_string(),
                    };
                    tracing::warn!(topic, node = id, reason = %lost, "a live search's stream from another broker broke");
                    let _ = sink.send(RemoteEvent::Lost { node: id, partitions, reason: lost }).await;
                    return;
                }
            });
        }
        starts.sort_unstable();
        Ok((starts, failures))
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
                client.rebuild_search_index(r).await
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
    let answer = client.search(r).await.map_err(|s| match s.code() {
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
    Ok(SearchResponse { total: answer.total, hits, partitions: answer.partitions as usize, failures: Vec::new() })
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
        let answer = run_blocking(move || search.search(&topic, &part)).await.map_err(Status::internal)?.map_err(search_status)?;
        let hits = answer.hits.iter().map(|h| ShardHit { hit: Some(hit_message(h)), sort_values: h.sort.values.clone() }).collect();
        Ok(Response::new(ShardSearchResponse { total: answer.total, hits, partitions: answer.partitions as u32 }))
    }

    type SubscribeStream = ReceiverStream<Result<ShardEvent, Status>>;

    async fn subscribe(&self, request: Request<ShardSubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        let query: Query = serde_json::from_slice(&r.query_json).map_err(|e| Status::invalid_argument(format!("illegal_argument_exception: undecodable query: {e}")))?;
        let t = self.check_topic(&r.topic, &r.topic_id)?;
        let partitions = r.partitions;
        let mut starts = BTreeMap::new();
        for p in &partitions {
            let end = t.partition(*p).and_then(|p| p.log_end_offset()).ok_or_else(|| Status::unavailable(format!("partition {p} of '{}' is not held here", r.topic)))?;
            starts.insert(*p, end);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBE_BUFFER);
        let first = ShardEvent { event: Some(Event::Subscribed(PartitionStarts { from: starts.clone().into_iter().collect() })) };
        let _ = tx.try_send(Ok(first));
        let topic = r.topic.clone();
        let sink_tx = tx.clone();
        // Set when the subscriber fell too far behind: its stream then ends
        // (with an error), so the caller knows it missed records.
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sink_dropped = dropped.clone();
        let id = self.live.subscribe(
            &r.topic,
            query,
            Box::new(move |doc| {
                if starts.get(&doc.partition).is_none_or(|s| doc.offset < *s) {
                    return true; // another partition, or from before the subscription
                }
                match sink_tx.try_send(Ok(ShardEvent { event: Some(Event::Hit(doc_message(doc))) })) {
                    Ok(()) => true,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(topic = %topic, "a live search from another broker fell {SUBSCRIBE_BUFFER} events behind; closing it");
                        sink_dropped.store(true, std::sync::atomic::Ordering::SeqCst);
                        false
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
                }
            }),
        );
        let Some(id) = id else { return Err(Status::unavailable("the broker is shutting down")) };
        // Unsubscribes once the caller is gone (the stream is dropped) or
        // the broker stops; ends the stream with an error once the
        // subscriber was dropped for falling behind.
        let (live, shared) = (self.live.clone(), self.shared.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = shared.stopped() => break,
                    _ = tx.closed() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if dropped.load(std::sync::atomic::Ordering::SeqCst) {
                    let ended = Err(Status::resource_exhausted(format!("fell {SUBSCRIBE_BUFFER} events behind")));
                    let _ = tokio::time::timeout(PART_TIMEOUT, tx.send(ended)).await;
                    break;
                }
            }
            live.unsubscribe(id);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
