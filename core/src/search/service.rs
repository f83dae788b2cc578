//! Answers searches on a topic: asks each partition's index for its best
//! matches, merges them in sort order, and reads every hit's record back from
//! the log, so a hit is always a real record.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::indexer::{decode_docs, search_enabled};
use super::query::QueryError;
use super::{index_name, Doc, Query, SearchIndexes, SortField, SortKey};
use crate::broker::Broker;
use crate::cluster::image::TopicState;

/// The most hits one search can reach (`from + size`), as Elasticsearch's
/// default `index.max_result_window`; a larger `size` is capped to it.
pub const MAX_RESULT_WINDOW: usize = 10_000;

/// Hits per page when a request does not say (`limit`, `size`).
pub const DEFAULT_SIZE: usize = 10;

/// The simple search's parameters, as the HTTP API (`/topics/{t}/search`)
/// and the gRPC admin service's `Search` both take them.
#[derive(Debug, Clone, Default)]
pub struct SimpleSearch {
    /// A query string (`level:error AND user.id:42`); everything when `None`.
    pub q: Option<String>,
    pub limit: Option<usize>,
    pub from: Option<usize>,
    /// `relevance` (the default), `offset`, `timestamp` or a JSON field.
    pub sort: Option<String>,
    /// `asc` or `desc`.
    pub order: Option<String>,
    pub from_ts: Option<i64>,
    pub to_ts: Option<i64>,
    pub partitions: Option<Vec<i32>>,
}

impl SimpleSearch {
    pub fn request(&self) -> Result<SearchRequest, QueryError> {
        use std::ops::Bound;
        use super::query::{parse_query_string, parse_sort};
        use super::{FieldRef, SortOrder};
        let mut query = parse_query_string(self.q.as_deref().unwrap_or("*"), &FieldRef::Any, false)?;
        if self.from_ts.is_some() || self.to_ts.is_some() {
            let range = Query::Range {
                field: FieldRef::Timestamp,
                lower: self.from_ts.map_or(Bound::Unbounded, |t| Bound::Included(t as f64)),
                upper: self.to_ts.map_or(Bound::Unbounded, |t| Bound::Included(t as f64)),
            };
            query = Query::bool_of(vec![query], Vec::new(), Vec::new(), vec![range], None);
        }
        let sort = match self.sort.as_deref() {
            None | Some("relevance") => vec![SortField::Score(SortOrder::Desc)],
            Some(name) => vec![parse_sort(name, self.order.as_deref())?],
        };
        Ok(SearchRequest {
            query,
            from: self.from.unwrap_or(0),
            size: self.limit.unwrap_or(DEFAULT_SIZE).min(MAX_RESULT_WINDOW),
            sort,
            search_after: None,
            partitions: self.partitions.clone(),
        })
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SearchRequest {
    pub query: Query,
    pub from: usize,
    pub size: usize,
    pub sort: Vec<SortField>,
    pub search_after: Option<SortKey>,
    /// Only these partitions (all when `None`).
    pub partitions: Option<Vec<i32>>,
}

#[derive(Debug, Clone)]
pub struct Hit {
    pub doc: Doc,
    pub score: f32,
    pub sort: SortKey,
}

#[derive(Debug, Clone, Default)]
pub struct SearchResponse {
    pub total: u64,
    pub hits: Vec<Hit>,
    /// How many partitions the search covered (answered or failed).
    pub partitions: usize,
    /// The partitions that could not answer (a search across a cluster
    /// answers with the others, as Elasticsearch does with its shards).
    pub failures: Vec<PartitionFailure>,
}

/// A partition a search could not cover, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionFailure {
    pub partition: i32,
    /// The broker that was asked (-1: none could be).
    pub node: i32,
    pub reason: String,
}

impl SearchRequest {
    /// The sort order in force (relevance when none is given).
    pub fn sort_order(&self) -> Vec<SortField> {
        if self.sort.is_empty() {
            vec![SortField::Score(super::SortOrder::Desc)]
        } else {
            self.sort.clone()
        }
    }

    /// Refuses a page beyond [`MAX_RESULT_WINDOW`], as Elasticsearch does.
    pub fn check_window(&self) -> Result<(), SearchError> {
        if self.from >= MAX_RESULT_WINDOW {
            return Err(SearchError::Bad(QueryError {
                kind: "illegal_argument_exception",
                reason: format!("Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] but was [{}]", self.from.saturating_add(self.size)),
            }));
        }
        Ok(())
    }

    /// The request to send to each part of a search that spans brokers:
    /// the whole window (`from + size`) from its start, since any of a
    /// part's best hits may be on the page once the parts are merged.
    pub fn for_part(&self, partitions: Vec<i32>) -> SearchRequest {
        let window = self.from.saturating_add(self.size).min(MAX_RESULT_WINDOW);
        SearchRequest { from: 0, size: window, partitions: Some(partitions), ..self.clone() }
    }
}

/// Merges the answers of a search's parts (each asked with
/// [`SearchRequest::for_part`]) into the page `req` asks for: every hit in
/// sort order (ties by partition, then offset), `from` skipped, `size` kept.
pub fn merge(req: &SearchRequest, parts: Vec<SearchResponse>) -> SearchResponse {
    let sort = req.sort_order();
    let mut out = SearchResponse::default();
    for p in parts {
        out.total += p.total;
        out.partitions += p.partitions;
        out.hits.extend(p.hits);
        out.failures.extend(p.failures);
    }
    out.hits.sort_by(|a, b| SortKey::cmp(&sort, &a.sort, &b.sort));
    // (Each part's window ends at MAX_RESULT_WINDOW: nothing past it is known.)
    let size = req.size.min(MAX_RESULT_WINDOW.saturating_sub(req.from));
    out.hits = std::mem::take(&mut out.hits).into_iter().skip(req.from).take(size).collect();
    out.failures.sort_by_key(|f| f.partition);
    out
}

#[derive(Debug, Clone, PartialEq)]
pub enum SearchError {
    /// No such topic (404).
    NoTopic(String),
    /// The request is wrong (400): an Elasticsearch error type and reason.
    Bad(QueryError),
    /// The topic exists but is not indexed (`search.enabled` is off).
    NotEnabled(String),
    /// An index could not answer (503).
    Unavailable(String),
}

impl SearchError {
    /// The refusal as an Elasticsearch error: (HTTP status, type, reason).
    pub fn es_error(&self) -> (u16, &'static str, String) {
        match self {
            SearchError::NoTopic(t) => (404, "index_not_found_exception", format!("no such index [{t}]")),
            SearchError::Bad(q) => (400, q.kind, q.reason.clone()),
            SearchError::NotEnabled(t) => {
                (400, "illegal_argument_exception", format!("search is not enabled on topic [{t}]: set its config search.enabled=true"))
            }
            SearchError::Unavailable(why) => (503, "search_phase_execution_exception", why.clone()),
        }
    }
}

impl From<QueryError> for SearchError {
    fn from(e: QueryError) -> Self {
        SearchError::Bad(e)
    }
}

pub struct SearchService {
    broker: Arc<Broker>,
    indexes: Arc<SearchIndexes>,
}

impl SearchService {
    pub fn new(broker: Arc<Broker>, indexes: Arc<SearchIndexes>) -> SearchService {
        SearchService { broker, indexes }
    }

    /// Checks that `topic` exists and is searchable.
    pub fn check_topic(&self, topic: &str) -> Result<(), SearchError> {
        let t = self.broker.topic(topic).ok_or_else(|| SearchError::NoTopic(topic.to_string()))?;
        if !search_enabled(&t.record.configs) {
            return Err(SearchError::NotEnabled(topic.to_string()));
        }
        Ok(())
    }

    /// Asks for `topic`'s indexes to be rebuilt from its log (see
    /// [`SearchIndexes::request_rebuild`]).
    pub fn rebuild(&self, topic: &str) -> Result<(), SearchError> {
        self.check_topic(topic)?;
        self.indexes.request_rebuild(topic);
        tracing::info!(topic, "search index rebuild requested");
        Ok(())
    }

    pub fn search(&self, topic: &str, req: &SearchRequest) -> Result<SearchResponse, SearchError> {
        self.search_with(topic, req, false)
    }

    /// This broker's part of a search across the cluster: the partitions
    /// `req` names, each that cannot be searched here (not held, offline,
    /// its index unavailable) reported in `failures` instead of failing the
    /// others, so the caller can ask another replica for just that one.
    pub fn search_part(&self, topic: &str, req: &SearchRequest) -> Result<SearchResponse, SearchError> {
        self.search_with(topic, req, true)
    }

    fn search_with(&self, topic: &str, req: &SearchRequest, lenient: bool) -> Result<SearchResponse, SearchError> {
        self.check_topic(topic)?;
        let t = self.broker.topic(topic).ok_or_else(|| SearchError::NoTopic(topic.to_string()))?;
        req.check_window()?;
        let size = req.size.min(MAX_RESULT_WINDOW - req.from);
        let window = req.from + size;
        let sort = req.sort_order();
        let me = self.broker.config().node_id;
        let mut out = SearchResponse::default();
        let mut keyed = Vec::new();
        // A part names its partitions, and one missing here is a failure; a
        // search of its own skips partitions the topic does not have.
        let indexes: Vec<i32> = match (&req.partitions, lenient) {
            (Some(ps), true) => ps.clone(),
            (Some(ps), false) => t.partitions.iter().map(|p| p.index).filter(|i| ps.contains(i)).collect(),
            (None, _) => t.partitions.iter().map(|p| p.index).collect(),
        };
        for i in indexes {
            out.partitions += 1;
            let searched = t
                .partition(i)
                .ok_or_else(|| format!("partition {i} does not exist here"))
                .and_then(|p| self.search_partition(&t.record, p, req, window, &sort).map(|a| (p, a)));
            let (p, answer) = match searched {
                Ok(found) => found,
                Err(reason) if lenient => {
                    out.failures.push(PartitionFailure { partition: i, node: me, reason });
                    continue;
                }
                Err(reason) => return Err(SearchError::Unavailable(reason)),
            };
            out.total += answer.total;
            for h in answer.hits {
                keyed.push((SortKey::of(&sort, p.index, h.offset, h.timestamp, h.score), h.score, p.clone(), h.doc));
            }
        }
        keyed.sort_by(|a, b| SortKey::cmp(&sort, &a.0, &b.0));
        for (key, score, p, copy) in keyed.into_iter().skip(req.from).take(size) {
            // Retention may have removed the record since the search began.
            let start = p.log_start_offset().ok_or_else(|| SearchError::Unavailable(format!("partition {} is offline", p.index)))?;
            if key.offset < start {
                continue;
            }
            let doc = match copy {
                Some(doc) => doc,
                None => match read_record(&p, key.offset) {
                    Ok(Some(doc)) => doc,
                    Ok(None) => continue,
                    Err(e) => return Err(SearchError::Unavailable(e)),
                },
            };
            out.hits.push(Hit { doc, score, sort: key });
        }
        Ok(out)
    }

    /// One partition's best `window` hits, from its index, of the records
    /// its log still has.
    fn search_partition(
        &self,
        record: &crate::broker::catalog::TopicRecord,
        p: &crate::broker::Partition,
        req: &SearchRequest,
        window: usize,
        sort: &[SortField],
    ) -> Result<super::IndexAnswer, String> {
        // Only records the log still has: retention may have deleted some
        // since the indexer last removed their documents. (Checked first: a
        // partition not held here has no log, and must get no index either.)
        let start = p.log_start_offset().ok_or_else(|| format!("partition {} is offline or not held here", p.index))?;
        let index = self.indexes.get(&index_name(record, p.index))?;
        let query = if start > 0 {
            let live = Query::Range { field: super::FieldRef::Offset, lower: std::ops::Bound::Included(start as f64), upper: std::ops::Bound::Unbounded };
            Query::bool_of(vec![req.query.clone()], Vec::new(), Vec::new(), vec![live], None)
        } else {
            req.query.clone()
        };
        index.search(&query, window, sort, req.search_after.as_ref())
    }

    /// In a cluster, where each partition of `topic` may be searched: the
    /// brokers that hold it in sync, best first — this broker when it holds
    /// the partition in sync (no network hop; its index follows its high
    /// watermark), then the leader (the freshest index), then the other
    /// in-sync replicas. `None` for a topic this broker serves alone (no
    /// cluster, or a local topic): every partition is searched here. Only
    /// `wanted` partitions, when given (unknown ones are skipped, as the
    /// local search skips them).
    pub fn routes(&self, topic: &str, wanted: Option<&[i32]>) -> Option<(uuid::Uuid, BTreeMap<i32, Vec<i32>>)> {
        let local = self.broker.topic(topic)?;
        let view = self.broker.cluster_view()?;
        let state = view.topics.get(topic).filter(|t| t.id == local.record.id)?;
        let me = self.broker.config().node_id;
        let held = |p: i32| local.partition(p).is_some_and(|p| p.log_end_offset().is_some());
        Some((state.id, routes_of(state, me, held, wanted)))
    }

    /// How many records of `topic` match.
    pub fn count(&self, topic: &str, query: &Query) -> Result<u64, SearchError> {
        let req = SearchRequest { query: query.clone(), from: 0, size: 0, sort: vec![SortField::Offset(super::SortOrder::Asc)], search_after: None, partitions: None };
        Ok(self.search(topic, &req)?.total)
    }
}

/// See [`SearchService::routes`].
pub fn routes_of(state: &TopicState, me: i32, held: impl Fn(i32) -> bool, wanted: Option<&[i32]>) -> BTreeMap<i32, Vec<i32>> {
    let mut out = BTreeMap::new();
    for (index, ps) in state.partitions.iter().enumerate() {
        let index = index as i32;
        if wanted.is_some_and(|w| !w.contains(&index)) {
            continue;
        }
        let mut brokers = Vec::new();
        if ps.isr.contains(&me) && held(index) {
            brokers.push(me);
        }
        if ps.leader >= 0 && !brokers.contains(&ps.leader) && (ps.leader != me || held(index)) {
            brokers.push(ps.leader);
        }
        let mut others: Vec<i32> = ps.isr.iter().copied().filter(|b| *b != me && !brokers.contains(b)).collect();
        others.sort_unstable();
        brokers.extend(others);
        out.insert(index, brokers);
    }
    out
}

/// The record at `offset` of a partition, if the log still has it.
pub fn read_record(p: &crate::broker::Partition, offset: i64) -> Result<Option<Doc>, String> {
    let (bytes, _, _) = p.read_committed(offset, 1)?;
    let (docs, _) = decode_docs(&bytes, p.index, offset)?;
    Ok(docs.into_iter().find(|d| d.offset == offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::image::PartitionState;

    fn state(partitions: Vec<(Vec<i32>, i32)>) -> TopicState {
        TopicState {
            id: uuid::Uuid::from_u128(1),
            created_index: 1,
            configs: BTreeMap::new(),
            partitions: partitions
                .into_iter()
                .map(|(isr, leader)| PartitionState { replicas: vec![1, 2, 3], isr, leader, leader_epoch: 1, partition_epoch: 1 })
                .collect(),
        }
    }

    fn hit(partition: i32, offset: i64, ts: i64) -> Hit {
        let doc = Doc { partition, offset, timestamp: ts, key: None, value: None, headers: Vec::new() };
        Hit { doc, score: 0.0, sort: SortKey { values: vec![ts as f64], partition, offset } }
    }

    #[test]
    fn parts_merge_into_the_page_in_sort_order() {
        use crate::search::SortOrder;
        let req = SearchRequest { query: Query::All, from: 2, size: 3, sort: vec![SortField::Timestamp(SortOrder::Desc)], search_after: None, partitions: None };
        let part = |hits: Vec<Hit>, total| SearchResponse { total, partitions: 1, hits, failures: Vec::new() };
        // Each part answers its own best from + size = 5, newest first.
        let a = part(vec![hit(0, 9, 90), hit(0, 7, 70), hit(0, 5, 50), hit(0, 3, 30), hit(0, 1, 10)], 10);
        let b = part(vec![hit(1, 8, 80), hit(1, 6, 70), hit(1, 4, 40)], 3);
        let failed = SearchResponse { partitions: 1, failures: vec![PartitionFailure { partition: 2, node: 3, reason: "down".into() }], ..Default::default() };
        let page = merge(&req, vec![a, b, failed]);
        let at: Vec<(i32, i64)> = page.hits.iter().map(|h| (h.doc.partition, h.doc.offset)).collect();
        // 90, 80, [70 (p0), 70 (p1): ties by partition, 50], 40, ...
        assert_eq!(at, [(0, 7), (1, 6), (0, 5)]);
        assert_eq!((page.total, page.partitions, page.failures.len()), (13, 3, 1));
        assert_eq!(req.for_part(vec![0]).size, 5, "each part is asked for the whole window");
        // Past the window, nothing is known: nothing is made up.
        let deep = SearchRequest { from: MAX_RESULT_WINDOW - 1, size: 10, ..req.clone() };
        let many = part((0..MAX_RESULT_WINDOW as i64).map(|o| hit(0, o, -o)).collect(), MAX_RESULT_WINDOW as u64 + 5);
        assert_eq!(merge(&deep, vec![many]).hits.len(), 1);
    }

    #[test]
    fn a_partition_is_searched_here_when_held_in_sync_else_at_its_leader_then_the_isr() {
        let t = state(vec![(vec![1, 2, 3], 2), (vec![2, 3], 3), (vec![1], -1), (vec![3], -1), (vec![1, 3], 1)]);
        let held = |p: i32| p != 4; // partition 4's log is offline here
        let routes = routes_of(&t, 1, held, None);
        assert_eq!(routes[&0], vec![1, 2, 3], "here first, then the leader, then the rest of the ISR");
        assert_eq!(routes[&1], vec![3, 2], "not in sync here: the leader first");
        assert_eq!(routes[&2], vec![1], "offline partition, but its last in-sync copy is here");
        assert_eq!(routes[&3], vec![3], "no leader: the ISR");
        assert_eq!(routes[&4], vec![3], "led here but unreadable: elsewhere");
        let only = routes_of(&t, 1, held, Some(&[1, 9]));
        assert_eq!(only.keys().copied().collect::<Vec<_>>(), vec![1], "unknown partitions are skipped");
    }
}
