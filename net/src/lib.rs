//! Chronik's Kafka listener: TCP framing, request pipelining, and the
//! timers that drive the broker (group-commit flusher, retention).
//!
//! Per connection, a reader decodes frames and starts each request at once
//! (a produce is appended immediately); its answer is a future queued in
//! request order, and a writer sends the answers in that order, as Kafka
//! requires. So several in-flight `acks=all` produces on one connection share
//! one fsync instead of waiting for one each.
//!
//! Everything async here is the workspace `tokio` (madsim's under
//! `--cfg madsim`), so the simulator runs this same code.

pub mod grpc;
pub mod cluster_admin;
pub mod raft;
pub mod replication;
pub mod search;
#[cfg(not(madsim))]
pub mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chronik_core::broker::replication::AckState;
use chronik_core::broker::{is_group_request, not_durable, Broker, GroupAnswer, GroupWait, ProduceOutcome};
use chronik_core::group::Ctx;
use chronik_proto::frame::{self, DecodeFrameError};
use chronik_proto::ResponseError;
use kafka_protocol::messages::{ApiKey, FetchRequest, RequestKind, ResponseKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// How many answered-but-unsent requests one connection may have in flight.
const PIPELINE_DEPTH: usize = 32;

/// What the listener, the flusher and the connections share.
pub struct Shared {
    pub broker: Arc<Broker>,
    /// Signalled after an append, to wake the flusher.
    pub appended: Notify,
    /// Signalled after a flush moved some high watermark.
    pub hw_advanced: Notify,
    /// Signalled after a produce appended records (followers' fetches wait on it).
    pub records_arrived: Notify,
    /// Signalled after the broker applied a new controller image.
    pub cluster_changed: Notify,
    /// In a cluster: the controller quorum member, for the Kafka admin
    /// requests that go through it.
    pub cluster: std::sync::OnceLock<cluster_admin::Cluster>,
    /// Signalled after the group coordinator handled a request or ran its
    /// timers, so waiting JoinGroup/SyncGroup answers look again.
    pub groups_changed: Notify,
    shutdown: Notify,
    stopping: AtomicBool,
    /// Why this node cannot go on (it must exit), once it is known.
    fatal: std::sync::Mutex<Option<String>>,
    fatal_set: Notify,
}

impl Shared {
    pub fn new(broker: Arc<Broker>) -> Arc<Shared> {
        Arc::new(Shared {
            broker,
            appended: Notify::new(),
            hw_advanced: Notify::new(),
            records_arrived: Notify::new(),
            cluster_changed: Notify::new(),
            cluster: std::sync::OnceLock::new(),
            groups_changed: Notify::new(),
            shutdown: Notify::new(),
            stopping: AtomicBool::new(false),
            fatal: std::sync::Mutex::new(None),
            fatal_set: Notify::new(),
        })
    }

    /// This node cannot go on (e.g. it belongs to another cluster): the
    /// process shuts down and exits with `reason` (see [`Shared::failed`]).
    pub fn fail(&self, reason: String) {
        self.fatal.lock().expect("fatal lock").get_or_insert(reason);
        self.fatal_set.notify_waiters();
    }

    /// Completes with the reason once [`Shared::fail`] has been called.
    pub async fn failed(&self) -> String {
        loop {
            let notified = self.fatal_set.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.fatal.lock().expect("fatal lock").clone() {
                return reason;
            }
            notified.await;
        }
    }

    /// Asks every loop (listener, flusher, retention, long polls) to stop.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.shutdown.notify_waiters();
    }

    /// Whether [`Shared::stop`] has been called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Completes once [`Shared::stop`] has been called.
    pub async fn stopped(&self) {
        loop {
            let notified = self.shutdown.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.stopped() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, peer, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Option<BytesMut>> + Send>>;

async fn connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    tracing::debug!(%peer, "connection opened");
    let (reader, writer) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Answer>(PIPELINE_DEPTH);
    let writer_task = tokio::spawn(write_answers(writer, rx, peer));
    let end = read_requests(reader, tx, &shared, peer).await;
    if let Err(why) = end {
        tracing::warn!(%peer, "closing connection: {why}");
    }
    // The writer drains what was queued, then stops.
    let _ = writer_task.await;
    tracing::debug!(%peer, "connection closed");
}

async fn write_answers<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Answer>, peer: SocketAddr) {
    while let Some(answer) = rx.recv().await {
        if let Some(bytes) = answer.await {
            // flush: a no-op on a tokio socket, required by buffered streams
            // (madsim's simulated TCP among them).
            if let Err(e) = async { writer.write_all(&bytes).await?; writer.flush().await }.await {
                tracing::debug!(%peer, error = %e, "write failed");
                return;
            }
        }
    }
    let _ = writer.shutdown().await;
}

/// Reads frames until EOF or a reason to close the connection.
async fn read_requests<R: AsyncRead + Unpin>(
    mut reader: R,
    tx: mpsc::Sender<Answer>,
    shared: &Arc<Shared>,
    peer: SocketAddr,
) -> Result<(), String> {
    let max = shared.broker.config().socket_request_max_bytes;
    loop {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read failed: {e}")),
        }
        let len = i32::from_be_bytes(len);
        if len < 0 || len > max {
            return Err(format!("request frame of {len} bytes is outside 0..={max} (socket.request.max.bytes)"));
        }
        let mut body = vec![0u8; len as usize];
        reader.read_exact(&mut body).await.map_err(|e| format!("truncated request frame of {len} bytes: {e}"))?;
        let answer = start(Bytes::from(body), shared, peer)?;
        if tx.send(answer).await.is_err() {
            return Err("the writer stopped".into());
        }
    }
}

fn encode(key: ApiKey, version: i16, correlation_id: i32, body: ResponseKind) -> Option<BytesMut> {
    match frame::encode_response(key, version, correlation_id, &body) {
        Ok(b) => Some(b),
        Err(e) => {
            // A bug, not bad input: log loudly; the client times out.
            tracing::error!(?key, version, correlation_id, error = %e, "cannot encode response");
            None
        }
    }
}

/// Starts one request: decides everything that can be decided now and
/// returns the future of its answer. `Err` closes the connection.
fn start(frame: Bytes, shared: &Arc<Shared>, peer: SocketAddr) -> Result<Answer, String> {
    let request = match frame::decode_request(frame) {
        Ok(r) => r,
        Err(DecodeFrameError::UnsupportedVersion { api_key: ApiKey::ApiVersions, api_version, correlation_id }) => {
            // Kafka answers an ApiVersions it cannot parse with v0, naming only
            // the ApiVersions versions it has, so the client can retry with one.
            tracing::info!(api_version, "ApiVersions version not supported; answering with the supported range");
            let mut table = chronik_core::broker::api_versions_table(ResponseError::UnsupportedVersion.code());
            table.api_keys.retain(|k| k.api_key == ApiKey::ApiVersions as i16);
            let body = ResponseKind::ApiVersions(table);
            let bytes = encode(ApiKey::ApiVersions, 0, correlation_id, body);
            return Ok(Box::pin(async move { bytes }));
        }
        Err(e) => return Err(e.to_string()),
    };
    let (key, version, correlation_id) = (request.api_key, request.api_version, request.header.correlation_id);
    tracing::trace!(?key, version, correlation_id, "request");
    match request.body {
        RequestKind::Produce(p) => {
            let acks = p.acks;
            let timeout = Duration::from_millis(p.timeout_ms.max(0) as u64);
            let outcome = shared.broker.produce(p, version);
            if outcome.appended {
                shared.appended.notify_one();
                shared.records_arrived.notify_waiters();
            }
            if acks == 0 {
                return Ok(Box::pin(async { None }));
            }
            let shared = shared.clone();
            Ok(Box::pin(async move {
                let response = wait_durable(&shared, outcome, timeout).await;
                encode(key, version, correlation_id, ResponseKind::Produce(response))
            }))
        }
        RequestKind::Fetch(f) => {
            let shared = shared.clone();
            Ok(Box::pin(async move {
                let response = long_poll_fetch(&shared, f, version).await;
                encode(key, version, correlation_id, ResponseKind::Fetch(response))
            }))
        }
        body if is_group_request(&body) => {
            let ctx = Ctx {
                client_id: request.header.client_id.as_ref().map(|s| s.to_string()).unwrap_or_default(),
                client_host: format!("/{}", peer.ip()),
            };
            if shared.cluster.get().is_some() && matches!(body, RequestKind::FindCoordinator(_)) {
                cluster_admin::ensure_offsets_topic(shared);
            }
            let answer = shared.broker.handle_group(version, body, &ctx);
            shared.groups_changed.notify_waiters();
            shared.appended.notify_one();
            shared.records_arrived.notify_waiters();
            let shared = shared.clone();
            Ok(Box::pin(async move {
                let response = wait_group(&shared, answer).await?;
                encode(key, version, correlation_id, response)
            }))
        }
        body if shared.cluster.get().is_some() && cluster_admin::handles(&body) => {
            let shared = shared.clone();
            Ok(Box::pin(async move {
                let response = cluster_admin::handle(&shared, version, body).await;
                encode(key, version, correlation_id, response)
            }))
        }
        body => {
            let response = shared.broker.handle(version, body);
            let bytes = encode(key, version, correlation_id, response);
            Ok(Box::pin(async move { bytes }))
        }
    }
}

/// Waits until every acks=all partition's HW covers its batch, or the
/// request's timeout passes.
async fn wait_durable(shared: &Shared, mut outcome: ProduceOutcome, timeout: Duration) -> kafka_protocol::messages::ProduceResponse {
    let deadline = Instant::now() + timeout;
    let mut waits = std::mem::take(&mut outcome.waits);
    loop {
        let notified = shared.hw_advanced.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !outcome.settle(&mut waits) {
            break;
        }
        tokio::select! {
            biased;
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {
                let slots: Vec<_> = waits.iter().map(|w| w.slot).collect();
                tracing::warn!(partitions = slots.len(), "acks=all produce timed out waiting for fsync");
                outcome.time_out(&slots);
                break;
            }
        }
    }
    outcome.response
}

/// How long a group answer may wait for its records to become durable.
const GROUP_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for a group answer: the rest of the group (JoinGroup, SyncGroup;
/// bounded by the coordinator's own timers) or durable records (commits).
/// `None` (no answer) only at shutdown.
async fn wait_group(shared: &Shared, answer: GroupAnswer) -> Option<ResponseKind> {
    match answer {
        GroupAnswer::Now(r) => Some(r),
        GroupAnswer::Later { reply, group } => {
            let response = loop {
                let notified = shared.groups_changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(r) = reply.take() {
                    break r;
                }
                tokio::select! {
                    biased;
                    _ = &mut notified => {}
                    _ = shared.stopped() => return None,
                }
            };
            match shared.broker.group_barrier(&group, &response) {
                Some(wait) => Some(if durable(shared, std::slice::from_ref(&wait)).await? { response } else { not_durable(response) }),
                None => Some(response),
            }
        }
        GroupAnswer::Durable { waits, complete } => Some(complete(durable(shared, &waits).await?)),
    }
}

/// Waits until every wait is committed: `Some(true)`, or `Some(false)` if
/// one never will be here (its partition went offline, or this broker
/// stopped leading it) or [`GROUP_WRITE_TIMEOUT`] passed; `None` at shutdown.
async fn durable(shared: &Shared, waits: &[GroupWait]) -> Option<bool> {
    let deadline = Instant::now() + GROUP_WRITE_TIMEOUT;
    loop {
        let notified = shared.hw_advanced.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut done = true;
        for w in waits {
            match w.partition.ack_state(w.leader_epoch, w.offset) {
                AckState::Committed => {}
                AckState::Waiting => done = false,
                AckState::Lost(_) => return Some(false),
            }
        }
        if done {
            return Some(true);
        }
        tokio::select! {
            biased;
            _ = &mut notified => {}
            _ = shared.stopped() => return None,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!("group coordinator records not durable in time");
                return Some(false);
            }
        }
    }
}

/// Runs the group coordinator's timers (session expiry, rebalance and
/// SyncGroup deadlines, offsets retention) every `interval_ms`.
pub async fn group_timer(shared: Arc<Shared>, interval_ms: u64) {
    loop {
        tokio::select! {
            biased;
            _ = shared.stopped() => return,
            _ = tokio::time::sleep(Duration::from_millis(interval_ms.max(1))) => {}
        }
        if shared.broker.group_tick() {
            // Expiries and cleaning may have appended coordinator records.
            shared.appended.notify_one();
            shared.records_arrived.notify_waiters();
        }
        shared.groups_changed.notify_waiters();
    }
}

/// Answers a fetch once it has `min_bytes`, or at `max_wait_ms`.
async fn long_poll_fetch(shared: &Shared, request: FetchRequest, version: i16) -> kafka_protocol::messages::FetchResponse {
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    loop {
        let notified = shared.hw_advanced.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let outcome = shared.broker.fetch(&request, version);
        if outcome.has_error || outcome.bytes >= request.min_bytes.max(0) as usize || Instant::now() >= deadline {
            return outcome.response;
        }
        tokio::select! {
            biased;
            _ = &mut notified => {}
            _ = shared.stopped() => return outcome.response,
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Group commit: after appends, sync and advance high watermarks, then wake
/// waiting producers and consumers. With `interval_ms > 0`, waits that long
/// after the first append so more data shares one sync.
pub async fn flusher(shared: Arc<Shared>, interval_ms: u64) {
    loop {
        tokio::select! {
            biased;
            _ = shared.stopped() => return,
            _ = shared.appended.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(1000)) => {}
        }
        if interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
        if shared.broker.buggify(0.1) {
            // A slow disk: the sync takes a while (simulation only).
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        // Appends that land during a sync are picked up by the next round;
        // a round that moves no HW (nothing pending, or only failures) ends it.
        while shared.broker.flush() {
            shared.hw_advanced.notify_waiters();
            tokio::task::yield_now().await;
        }
        // Always wake the waiters: a segment roll also moves the HW, and a
        // failed sync takes a partition offline; either way they must look.
        shared.hw_advanced.notify_waiters();
    }
}

/// Runs retention every `interval_ms`.
pub async fn retention(shared: Arc<Shared>, interval_ms: u64) {
    loop {
        tokio::select! {
            biased;
            _ = shared.stopped() => return,
            _ = tokio::time::sleep(Duration::from_millis(interval_ms.max(1))) => {}
        }
        shared.broker.enforce_retention();
    }
}

/// Runs the search indexer as a task: a pass after every high-watermark move,
/// and at least every `refresh_ms` (which commits what was added). The
/// simulator drives its in-memory indexes this way; production runs the same
/// passes on a thread of its own, because tantivy blocks.
pub async fn search_indexer(shared: Arc<Shared>, mut indexer: chronik_core::search::indexer::Indexer, refresh_ms: u64) {
    let started = tokio::time::Instant::now();
    loop {
        indexer.run_once(started.elapsed().as_millis() as i64);
        tokio::select! {
            biased;
            _ = shared.stopped() => {
                indexer.commit_all();
                return;
            }
            _ = shared.hw_advanced.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(refresh_ms.max(1))) => {}
        }
    }
}
