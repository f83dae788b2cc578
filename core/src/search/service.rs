//! Answers searches on a topic: asks each partition's index for its best
//! matches, merges them in sort order, and reads every hit's record back from
//! the log, so a hit is always a real record.

use std::sync::Arc;

use super::indexer::{decode_docs, search_enabled};
use super::query::QueryError;
use super::{index_name, Doc, Query, SearchIndexes, SortField, SortKey};
use crate::broker::Broker;

/// The most hits one search can reach (`from + size`), as Elasticsearch's
/// default `index.max_result_window`; a larger `size` is capped to it.
pub const MAX_RESULT_WINDOW: usize = 10_000;

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
pub struct SearchResponse {
    pub total: u64,
    pub hits: Vec<Hit>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SearchError {
    /// No such topic (404).
    NoTopic(String),
    /// The request is wrong (400): an Elasticsearch error type and reason.
    Bad(QueryError),
    /// An index could not answer (503).
    Unavailable(String),
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
            return Err(SearchError::Bad(QueryError {
                kind: "illegal_argument_exception",
                reason: format!("search is not enabled on topic [{topic}]: create it with search.enabled=true"),
            }));
        }
        Ok(())
    }

    pub fn search(&self, topic: &str, req: &SearchRequest) -> Result<SearchResponse, SearchError> {
        self.check_topic(topic)?;
        let t = self.broker.topic(topic).ok_or_else(|| SearchError::NoTopic(topic.to_string()))?;
        if req.from >= MAX_RESULT_WINDOW {
            return Err(SearchError::Bad(QueryError {
                kind: "illegal_argument_exception",
                reason: format!("Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] but was [{}]", req.from.saturating_add(req.size)),
            }));
        }
        let size = req.size.min(MAX_RESULT_WINDOW - req.from);
        let window = req.from + size;
        let sort = if req.sort.is_empty() { vec![SortField::Score(super::SortOrder::Desc)] } else { req.sort.clone() };
        let mut total = 0;
        let mut keyed = Vec::new();
        for p in &t.partitions {
            if req.partitions.as_ref().is_some_and(|ps| !ps.contains(&p.index)) {
                continue;
            }
            let index = self.indexes.get(&index_name(&t.record, p.index)).map_err(SearchError::Unavailable)?;
            let after = req.search_after.as_ref();
            let answer = index.search(&req.query, window, &sort, after).map_err(SearchError::Unavailable)?;
            total += answer.total;
            for h in answer.hits {
                keyed.push((SortKey::of(&sort, p.index, h.offset, h.timestamp, h.score), h.score, p.clone(), h.doc));
            }
        }
        keyed.sort_by(|a, b| SortKey::cmp(&sort, &a.0, &b.0));
        let mut hits = Vec::new();
        for (key, score, p, copy) in keyed.into_iter().skip(req.from).take(size) {
            // Retention may have removed the record since it was indexed.
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
            hits.push(Hit { doc, score, sort: key });
        }
        Ok(SearchResponse { total, hits })
    }

    /// How many records of `topic` match.
    pub fn count(&self, topic: &str, query: &Query) -> Result<u64, SearchError> {
        let req = SearchRequest { query: query.clone(), from: 0, size: 0, sort: vec![SortField::Offset(super::SortOrder::Asc)], search_after: None, partitions: None };
        Ok(self.search(topic, &req)?.total)
    }
}

/// The record at `offset` of a partition, if the log still has it.
pub fn read_record(p: &crate::broker::Partition, offset: i64) -> Result<Option<Doc>, String> {
    let (bytes, _, _) = p.read_committed(offset, 1)?;
    let (docs, _) = decode_docs(&bytes, p.index, offset)?;
    Ok(docs.into_iter().find(|d| d.offset == offset))
}
