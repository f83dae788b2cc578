//! The search HTTP API (outside the simulation): a simple search endpoint, an
//! Elasticsearch-compatible subset (`_search`, `_count`, `_msearch`, `GET /`)
//! that existing Elasticsearch clients can query, and live search
//! subscriptions as server-sent events. Every error is an Elasticsearch-style
//! body with a 400 or 404, never a 500 for bad input.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chronik_core::search::live::Live;
use chronik_core::search::query::{parse_es_query, parse_query_string, parse_sort, QueryError};
use chronik_core::search::service::{Hit, PartitionFailure, SearchError, SearchRequest, SearchResponse, SimpleSearch, DEFAULT_SIZE, MAX_RESULT_WINDOW};
use chronik_core::search::{FieldRef, Query, SortField, SortKey, SortOrder};
use serde_json::{json, Value};

use crate::search::{Gate, RemoteEvent};


/// Events a live subscriber may have unread before it is dropped.
pub const LIVE_BUFFER: usize = 10_000;

#[derive(Clone)]
pub struct HttpState {
    /// Searches every partition of a topic, wherever in the cluster it is.
    pub search: Arc<crate::search::Searcher>,
    pub live: Arc<Live>,
    pub broker: Arc<chronik_core::broker::Broker>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(info))
        .route("/topics/{topic}/search", get(simple_search))
        .route("/topics/{topic}/search/stream", get(stream))
        .route("/topics/{topic}/search/_rebuild", axum::routing::post(rebuild))
        .route("/_msearch", get(msearch_all).post(msearch_all))
        .route("/{topic}/_search", get(es_search).post(es_search))
        .route("/{topic}/_count", get(es_count).post(es_count))
        .route("/{topic}/_msearch", get(msearch_topic).post(msearch_topic))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(es_style_errors))
        .with_state(state)
}

/// Answers axum's own refusals (wrong method, a body over the limit, a path
/// or query that does not decode) in the Elasticsearch error shape too, so
/// that a client always gets a body it can parse and a reason it can act on.
async fn es_style_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || response.headers().contains_key("x-elastic-product") {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 << 10).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => status.canonical_reason().unwrap_or("request refused").to_string(),
    };
    let (kind, reason) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed_exception", format!("Incorrect HTTP method for uri [{path}] and method [{method}]")),
        StatusCode::PAYLOAD_TOO_LARGE => ("content_too_long_exception", format!("request body too large: {text}")),
        s if s.is_client_error() => ("illegal_argument_exception", text),
        _ => ("internal_server_error", text),
    };
    error(status, kind, &reason)
}

/// Serves until `stop` completes.
pub async fn serve_http(listener: tokio::net::TcpListener, state: HttpState, stop: impl std::future::Future<Output = ()> + Send + 'static) {
    let live = state.live.clone();
    // Live streams never end by themselves: close them, or shutdown would wait for them.
    let stop = async move {
        stop.await;
        live.close_all();
    };
    if let Err(e) = axum::serve(listener, router(state)).with_graceful_shutdown(stop).await {
        tracing::error!(error = %e, "the search HTTP server failed");
    }
}

// ---- responses ---------------------------------------------------------------------

fn es_json(status: StatusCode, body: Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    // Elasticsearch clients check this header before trusting an answer.
    h.insert("x-elastic-product", HeaderValue::from_static("Elasticsearch"));
    r
}

fn error(status: StatusCode, kind: &str, reason: &str) -> Response {
    tracing::debug!(status = status.as_u16(), kind, reason, "search request refused");
    es_json(status, json!({
        "error": { "root_cause": [{ "type": kind, "reason": reason }], "type": kind, "reason": reason },
        "status": status.as_u16(),
    }))
}

fn bad(e: QueryError) -> Response {
    error(StatusCode::BAD_REQUEST, e.kind, &e.reason)
}

fn search_error(e: SearchError) -> Response {
    if let SearchError::Unavailable(why) = &e {
        tracing::warn!(%why, "search failed");
    }
    let (status, kind, reason) = e.es_error();
    error(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), kind, &reason)
}

fn qerr(kind: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError { kind, reason: reason.into() }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "resource_not_found_exception", "no such endpoint; see the README's search section")
}

async fn info(State(s): State<HttpState>) -> Response {
    es_json(StatusCode::OK, json!({
        "name": "chronik",
        "cluster_name": "chronik",
        "cluster_uuid": s.broker.cluster_id(),
        "version": { "number": "8.17.0", "build_flavor": "default", "lucene_version": "tantivy", "minimum_wire_compatibility_version": "7.17.0", "minimum_index_compatibility_version": "7.0.0" },
        "tagline": "You Know, for Search",
    }))
}

/// Runs a search over every partition of the topic (in a cluster, on the
/// brokers that hold them), off the async workers.
async fn run(s: &HttpState, topic: String, req: SearchRequest) -> Result<SearchResponse, SearchError> {
    s.search.search(&topic, req).await
}

/// Elasticsearch's `_shards`: a topic's partitions are its shards.
fn shards_json(topic: &str, r: &SearchResponse) -> Value {
    let mut v = json!({ "total": r.partitions, "successful": r.partitions - r.failures.len(), "skipped": 0, "failed": r.failures.len() });
    if !r.failures.is_empty() {
        v["failures"] = Value::Array(r.failures.iter().map(|f| failure_json(topic, f)).collect());
    }
    v
}

fn failure_json(topic: &str, f: &PartitionFailure) -> Value {
    json!({ "shard": f.partition, "index": topic, "node": f.node.to_string(), "reason": { "type": "unavailable_shards_exception", "reason": f.reason } })
}

// ---- POST /topics/{topic}/search/_rebuild ----------------------------------------------

/// In a cluster, every live broker rebuilds the indexes of the replicas it
/// holds (`?local_only=true`: this broker alone).
async fn rebuild(State(s): State<HttpState>, Path(topic): Path<String>, UrlQuery(p): UrlQuery<HashMap<String, String>>) -> Response {
    let local_only = p.get("local_only").is_some_and(|v| v == "true");
    match s.search.rebuild(&topic, local_only).await {
        Ok(brokers) => es_json(StatusCode::ACCEPTED, json!({ "acknowledged": true, "topic": topic, "brokers": brokers })),
        Err(e) => search_error(e),
    }
}

// ---- GET /topics/{topic}/search -------------------------------------------------------

fn param_usize(p: &HashMap<String, String>, name: &str, default: usize) -> Result<usize, QueryError> {
    match p.get(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| qerr("illegal_argument_exception", format!("[{name}] must be a non-negative integer, not [{v}]"))),
    }
}

fn param_i64(p: &HashMap<String, String>, name: &str) -> Result<Option<i64>, QueryError> {
    p.get(name).map(|v| v.parse().map_err(|_| qerr("illegal_argument_exception", format!("[{name}] must be epoch milliseconds, not [{v}]")))).transpose()
}

fn simple_request(p: &HashMap<String, String>) -> Result<SearchRequest, QueryError> {
    let partitions = match p.get("partition") {
        None => None,
        Some(v) => Some(
            v.split(',')
                .map(|x| x.trim().parse::<i32>().map_err(|_| qerr("illegal_argument_exception", format!("[partition] must be partition numbers, not [{v}]"))))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let optional = |name: &str| -> Result<Option<usize>, QueryError> { p.contains_key(name).then(|| param_usize(p, name, 0)).transpose() };
    SimpleSearch {
        q: p.get("q").cloned(),
        limit: optional("limit")?,
        from: optional("from")?,
        sort: p.get("sort").cloned(),
        order: p.get("order").cloned(),
        from_ts: param_i64(p, "from_ts")?,
        to_ts: param_i64(p, "to_ts")?,
        partitions,
    }
    .request()
}

fn hit_json(topic: &str, h: &Hit) -> Value {
    let mut v = h.doc.to_json(topic);
    v["score"] = json!(h.score);
    v
}

async fn simple_search(State(s): State<HttpState>, Path(topic): Path<String>, UrlQuery(p): UrlQuery<HashMap<String, String>>) -> Response {
    let started = Instant::now();
    let req = match simple_request(&p) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    match run(&s, topic.clone(), req).await {
        Ok(r) => es_json(StatusCode::OK, json!({
            "took_ms": started.elapsed().as_millis() as u64,
            "total": r.total,
            "hits": r.hits.iter().map(|h| hit_json(&topic, h)).collect::<Vec<_>>(),
            "partitions": {
                "total": r.partitions,
                "failed": r.failures.iter().map(|f| json!({ "partition": f.partition, "node": f.node, "reason": f.reason })).collect::<Vec<_>>(),
            },
        })),
        Err(e) => search_error(e),
    }
}

// ---- Elasticsearch subset --------------------------------------------------------------

fn parse_body(body: &Bytes) -> Result<Value, QueryError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| qerr("parsing_exception", format!("request body is not JSON: {e}")))
}

fn es_sort(v: Option<&Value>) -> Result<Vec<SortField>, QueryError> {
    let items = match v {
        None => return Ok(vec![SortField::Score(SortOrder::Desc)]),
        Some(Value::Array(a)) => a.clone(),
        Some(one) => vec![one.clone()],
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(name) => parse_sort(name, None),
            Value::Object(o) if o.len() == 1 => {
                let (name, spec) = o.iter().next().expect("one entry");
                match spec {
                    Value::String(order) => parse_sort(name, Some(order)),
                    Value::Object(so) => parse_sort(name, so.get("order").and_then(Value::as_str)),
                    other => Err(qerr("parsing_exception", format!("[sort] {other} is not an order"))),
                }
            }
            other => Err(qerr("parsing_exception", format!("[sort] entry {other} is not supported"))),
        })
        .collect()
}

fn es_request(body: &Value, url: &HashMap<String, String>) -> Result<SearchRequest, QueryError> {
    let o = body.as_object().ok_or_else(|| qerr("parsing_exception", "request body must be a JSON object"))?;
    for k in o.keys() {
        if !["query", "size", "from", "sort", "search_after", "_source", "track_total_hits", "timeout", "stored_fields", "version", "seq_no_primary_term"].contains(&k.as_str()) {
            return Err(qerr("parsing_exception", format!("unknown key [{k}] in the search request")));
        }
    }
    let query = match (o.get("query"), url.get("q")) {
        (Some(q), _) => parse_es_query(q)?,
        (None, Some(q)) => parse_query_string(q, &FieldRef::Any, url.get("default_operator").is_some_and(|d| d.eq_ignore_ascii_case("and")))?,
        (None, None) => Query::All,
    };
    let num = |name: &str| -> Result<Option<usize>, QueryError> {
        match o.get(name) {
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| qerr("parsing_exception", format!("[{name}] must be a non-negative integer"))),
            None => url.get(name).map(|v| v.parse::<usize>().map_err(|_| qerr("parsing_exception", format!("[{name}] must be a non-negative integer")))).transpose(),
        }
    };
    let sort = es_sort(o.get("sort"))?;
    let search_after = match o.get("search_after") {
        None => None,
        Some(Value::Array(vals)) => {
            let n = sort.len();
            if vals.len() != n + 2 {
                return Err(qerr("illegal_argument_exception", format!("search_after has {} values; it takes the {} of a hit's [sort] (its sort values, then partition and offset)", vals.len(), n + 2)));
            }
            let f = |v: &Value| v.as_f64().ok_or_else(|| qerr("illegal_argument_exception", format!("search_after value {v} is not a number")));
            Some(SortKey { values: vals[..n].iter().map(f).collect::<Result<_, _>>()?, partition: f(&vals[n])? as i32, offset: f(&vals[n + 1])? as i64 })
        }
        Some(other) => return Err(qerr("parsing_exception", format!("[search_after] {other} must be an array"))),
    };
    Ok(SearchRequest { query, from: num("from")?.unwrap_or(0), size: num("size")?.unwrap_or(DEFAULT_SIZE).min(MAX_RESULT_WINDOW), sort, search_after, partitions: None })
}

fn es_hit(topic: &str, h: &Hit, sorted: bool) -> Value {
    let d = &h.doc;
    let source = match d.json() {
        Some(v @ Value::Object(_)) => v,
        _ => json!({ "value": d.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()) }),
    };
    let full = d.to_json(topic);
    let mut hit = json!({
        "_index": topic,
        "_id": format!("{}-{}", d.partition, d.offset),
        "_score": if sorted { Value::Null } else { json!(h.score) },
        "_source": source,
        "_chronik": { "partition": d.partition, "offset": d.offset, "timestamp": d.timestamp, "key": full["key"], "headers": full["headers"] },
    });
    // Whole numbers (timestamps, offsets) as integers, as Elasticsearch writes longs.
    let number = |v: f64| if v.fract() == 0.0 && v.abs() < 9.0e15 { json!(v as i64) } else { json!(v) };
    let mut sort: Vec<Value> = h.sort.values.iter().map(|v| number(*v)).collect();
    sort.push(json!(h.sort.partition));
    sort.push(json!(h.sort.offset));
    hit["sort"] = Value::Array(sort);
    hit
}

fn es_response(topic: &str, req: &SearchRequest, r: &SearchResponse, took_ms: u64) -> Value {
    let sorted_by_score = matches!(req.sort.first(), Some(SortField::Score(_)));
    let max_score = if sorted_by_score { r.hits.iter().map(|h| h.score).fold(None, |m: Option<f32>, s| Some(m.map_or(s, |m| m.max(s)))) } else { None };
    json!({
        "took": took_ms,
        "timed_out": false,
        "_shards": shards_json(topic, r),
        "hits": {
            "total": { "value": r.total, "relation": "eq" },
            "max_score": max_score,
            "hits": r.hits.iter().map(|h| es_hit(topic, h, !sorted_by_score)).collect::<Vec<_>>(),
        },
    })
}

async fn es_search(State(s): State<HttpState>, Path(topic): Path<String>, UrlQuery(p): UrlQuery<HashMap<String, String>>, body: Bytes) -> Response {
    let started = Instant::now();
    let req = match parse_body(&body).and_then(|b| es_request(&b, &p)) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    match run(&s, topic.clone(), req.clone()).await {
        Ok(r) => es_json(StatusCode::OK, es_response(&topic, &req, &r, started.elapsed().as_millis() as u64)),
        Err(e) => search_error(e),
    }
}

async fn es_count(State(s): State<HttpState>, Path(topic): Path<String>, UrlQuery(p): UrlQuery<HashMap<String, String>>, body: Bytes) -> Response {
    let query = match parse_body(&body) {
        Ok(b) => match (b.get("query"), p.get("q")) {
            (Some(q), _) => parse_es_query(q),
            (None, Some(q)) => parse_query_string(q, &FieldRef::Any, false),
            (None, None) => Ok(Query::All),
        },
        Err(e) => Err(e),
    };
    let query = match query {
        Ok(q) => q,
        Err(e) => return bad(e),
    };
    let req = SearchRequest { query, from: 0, size: 0, sort: vec![SortField::Offset(SortOrder::Asc)], search_after: None, partitions: None };
    match run(&s, topic.clone(), req).await {
        Ok(r) => es_json(StatusCode::OK, json!({ "count": r.total, "_shards": shards_json(&topic, &r) })),
        Err(e) => search_error(e),
    }
}

async fn msearch(s: HttpState, default_topic: Option<String>, body: Bytes) -> Response {
    let started = Instant::now();
    let text = String::from_utf8_lossy(&body);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() % 2 != 0 {
        return error(StatusCode::BAD_REQUEST, "illegal_argument_exception", "_msearch takes pairs of lines: a header, then a search body");
    }
    let mut responses = Vec::new();
    for pair in lines.chunks(2) {
        let header: Value = match serde_json::from_str(pair[0]) {
            Ok(h) => h,
            Err(e) => return error(StatusCode::BAD_REQUEST, "parsing_exception", &format!("_msearch header is not JSON: {e}")),
        };
        let topic = header.get("index").and_then(|i| i.as_str().map(str::to_string).or_else(|| i.get(0).and_then(Value::as_str).map(str::to_string))).or(default_topic.clone());
        let one_started = Instant::now();
        let answer = match topic {
            None => json!({ "error": { "type": "illegal_argument_exception", "reason": "no index named in the _msearch header" }, "status": 400 }),
            Some(topic) => {
                let req = serde_json::from_str::<Value>(pair[1]).map_err(|e| qerr("parsing_exception", format!("search body is not JSON: {e}"))).and_then(|b| es_request(&b, &HashMap::new()));
                match req {
                    Err(e) => json!({ "error": { "type": e.kind, "reason": e.reason }, "status": 400 }),
                    Ok(req) => match run(&s, topic.clone(), req.clone()).await {
                        Ok(r) => {
                            let mut v = es_response(&topic, &req, &r, one_started.elapsed().as_millis() as u64);
                            v["status"] = json!(200);
                            v
                        }
                        Err(e) => {
                            let (status, kind, reason) = e.es_error();
                            json!({ "error": { "type": kind, "reason": reason }, "status": status })
                        }
                    },
                }
            }
        };
        responses.push(answer);
    }
    es_json(StatusCode::OK, json!({ "took": started.elapsed().as_millis() as u64, "responses": responses }))
}

async fn msearch_all(State(s): State<HttpState>, body: Bytes) -> Response {
    msearch(s, None, body).await
}

async fn msearch_topic(State(s): State<HttpState>, Path(topic): Path<String>, body: Bytes) -> Response {
    msearch(s, Some(topic), body).await
}

// ---- live subscriptions -------------------------------------------------------------------

/// `GET /topics/{topic}/search/stream?q=...`: server-sent events, one `hit`
/// event per record that matches and was produced after the subscription
/// started (offsets at or past each partition's log end at that moment).
/// The first event, `subscribed`, says where each partition starts. In a
/// cluster, the partitions this broker does not hold in sync are followed
/// through streams from brokers that do: a `partial` event next names any
/// no broker could be asked for (the others are followed), and if a stream
/// breaks later, an `error` event names its partitions and the stream
/// ends, so the subscriber knows it may have missed records and subscribes
/// again.
async fn stream(State(s): State<HttpState>, Path(topic): Path<String>, UrlQuery(p): UrlQuery<HashMap<String, String>>) -> Response {
    let query = match parse_query_string(p.get("q").map(String::as_str).unwrap_or("*"), &FieldRef::Any, false) {
        Ok(q) => q,
        Err(e) => return bad(e),
    };
    if let Err(e) = s.search.service().check_topic(&topic) {
        return search_error(e);
    }
    let Some(t) = s.broker.topic(&topic) else { return search_error(SearchError::NoTopic(topic)) };
    // The partitions followed here: all of them, or in a cluster those held here in sync.
    let me = s.broker.config().node_id;
    let here: Vec<i32> = match s.search.service().routes(&topic, None) {
        None => t.partitions.iter().map(|p| p.index).collect(),
        Some((_, routes)) => routes.into_iter().filter(|(_, b)| b.first() == Some(&me)).map(|(p, _)| p).collect(),
    };
    // Bounded: a subscriber that stops reading is dropped (and told), not
    // buffered without end.
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(LIVE_BUFFER);
    let dropped = Arc::new(AtomicBool::new(false));
    let (sink_tx, sink_topic, sink_dropped) = (tx.clone(), topic.clone(), dropped.clone());
    let deliver = move |doc: &chronik_core::search::Doc| match sink_tx.try_send(doc.to_json(&sink_topic)) {
        Ok(()) => true,
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(topic = %sink_topic, "a live search subscriber fell {LIVE_BUFFER} events behind; closing it");
            sink_dropped.store(true, Ordering::SeqCst);
            false
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false, // it left
    };
    // Registered before the start offsets are read (see `Gate`).
    let gate = Arc::new(Gate::default());
    let (sink_gate, sink_deliver) = (gate.clone(), deliver.clone());
    let Some(id) = s.live.subscribe(&topic, query.clone(), Box::new(move |doc| sink_gate.offer(doc, &sink_deliver))) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "node_closed_exception", "the broker is shutting down");
    };
    let unsubscribe = Unsubscribe(s.live.clone(), id);
    let local_starts: BTreeMap<i32, i64> = here.iter().map(|p| (*p, t.partition(*p).and_then(|p| p.log_end_offset()).unwrap_or(0))).collect();
    // The other partitions, from the brokers that hold them.
    let (remote_tx, mut remote_rx) = tokio::sync::mpsc::channel::<RemoteEvent>(LIVE_BUFFER);
    let (remote_starts, failures) = match s.search.subscribe_remote(&topic, &query, remote_tx).await {
        Ok(r) => r,
        Err(e) => return search_error(e),
    };
    let mut starts = local_starts.clone();
    starts.extend(remote_starts);
    let first = json!({ "_event": "subscribed", "data": {
        "topic": topic,
        "from": starts.iter().map(|(p, o)| (p.to_string(), json!(o))).collect::<serde_json::Map<_, _>>(),
    }});
    // The others are followed all the same, as a search answers with the
    // partitions it reached.
    let partial = (!failures.is_empty()).then(|| json!({ "_event": "partial", "data": {
        "reason": "some partitions cannot be followed",
        "failed": failures.iter().map(|f| json!({ "partition": f.partition, "node": f.node, "reason": f.reason })).collect::<Vec<_>>(),
    }}));
    let opened_tx = tx.clone();
    gate.open(
        local_starts,
        move || {
            let _ = opened_tx.try_send(first);
            if let Some(partial) = partial {
                let _ = opened_tx.try_send(partial);
            }
        },
        deliver,
    );
    // Records from other brokers join the same stream, until the subscriber leaves.
    let remote_topic = topic.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                biased;
                _ = tx.closed() => return,
                e = remote_rx.recv() => e,
            };
            let Some(event) = event else { return };
            let v = match event {
                RemoteEvent::Hit(doc) => doc.to_json(&remote_topic),
                RemoteEvent::Lost { node, partitions, reason } => json!({ "_event": "error", "data": {
                    "reason": format!("broker {node} stopped streaming partitions {partitions:?}: {reason}"),
                    "failed": partitions.iter().map(|p| json!({ "partition": p, "node": node, "reason": reason })).collect::<Vec<_>>(),
                }}),
            };
            if tx.send(v).await.is_err() {
                return;
            }
        }
    });
    let events = LiveEvents { rx, dropped, ended: false, _unsubscribe: unsubscribe };
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// Ends a live subscription when its HTTP stream goes.
struct Unsubscribe(Arc<Live>, u64);

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.0.unsubscribe(self.1);
    }
}

/// A live subscription's events as server-sent events; the stream ends
/// after an `error` event, which is also sent once the subscriber fell
/// [`LIVE_BUFFER`] events behind and was dropped.
struct LiveEvents {
    rx: tokio::sync::mpsc::Receiver<Value>,
    dropped: Arc<AtomicBool>,
    ended: bool,
    _unsubscribe: Unsubscribe,
}

impl tokio_stream::Stream for LiveEvents {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        if self.ended {
            return std::task::Poll::Ready(None);
        }
        if self.dropped.load(Ordering::SeqCst) {
            self.ended = true;
            let data = json!({ "reason": format!("this subscriber fell {LIVE_BUFFER} events behind and was dropped; records may have been missed") });
            return std::task::Poll::Ready(Some(Ok(Event::default().event("error").data(data.to_string()))));
        }
        self.rx.poll_recv(cx).map(|v| {
            v.map(|v| {
                Ok(match v.get("_event").and_then(Value::as_str) {
                    Some(name) => {
                        self.ended = name == "error";
                        Event::default().event(name).data(v["data"].to_string())
                    }
                    None => Event::default().event("hit").data(v.to_string()),
                })
            })
        })
    }
}
