//! The query language: one AST for the `q=` syntax (Lucene-like, parsed by
//! tantivy's query grammar crate) and the Elasticsearch query DSL subset, and
//! its meaning on a [`Doc`] (the reference every index implementation must
//! agree with on which documents match).

use std::ops::Bound;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tantivy_query_grammar::{Delimiter, Occur, UserInputAst, UserInputBound, UserInputLeaf};

use super::{tokenize, tokenize_with_positions, Doc, Leaf};

/// A field a query can name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FieldRef {
    /// The key or the value (a query without a field).
    Any,
    Key,
    Value,
    Offset,
    Timestamp,
    Partition,
    /// `headers.NAME`.
    Header(String),
    /// A dotted path into the JSON value (`user.id`).
    Json(String),
}

impl FieldRef {
    /// Resolves a user's field name; `Err` explains a name that cannot be a field.
    pub fn parse(name: &str) -> Result<FieldRef, String> {
        Ok(match name {
            "" | "*" | "_all" => FieldRef::Any,
            "key" => FieldRef::Key,
            "value" | "_source" => FieldRef::Value,
            "offset" | "_offset" => FieldRef::Offset,
            "timestamp" | "@timestamp" | "_timestamp" => FieldRef::Timestamp,
            "partition" | "_partition" => FieldRef::Partition,
            h if h.starts_with("headers.") && h.len() > "headers.".len() => FieldRef::Header(h["headers.".len()..].to_string()),
            f if f.starts_with('_') => return Err(format!("unknown field [{f}]")),
            f if f.split('.').any(|p| p.is_empty()) => return Err(format!("invalid field name [{f}]")),
            f => FieldRef::Json(f.to_string()),
        })
    }

    /// The name `present_fields` uses for it.
    pub fn presence_name(&self) -> String {
        match self {
            FieldRef::Any => "value".into(),
            FieldRef::Key => "key".into(),
            FieldRef::Value => "value".into(),
            FieldRef::Offset => "offset".into(),
            FieldRef::Timestamp => "timestamp".into(),
            FieldRef::Partition => "partition".into(),
            FieldRef::Header(h) => format!("headers.{h}"),
            FieldRef::Json(p) => p.clone(),
        }
    }
}

/// A query on one partition's documents. (Serialized as JSON between
/// brokers: a search that spans a cluster asks each broker for its
/// partitions.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Query {
    All,
    Nothing,
    /// Analyzed text: any (`all = false`) or every token, or the tokens as a
    /// phrase (in order, at the same distances as in the query: `positions`,
    /// which skip where the analyzer dropped a long token). On a number
    /// field the text must equal the number.
    Text { field: FieldRef, tokens: Vec<String>, positions: Vec<usize>, all: bool, phrase: bool, raw: String },
    /// One exact token (not analyzed), or an exact number.
    Term { field: FieldRef, value: String },
    /// A numeric range (offset, timestamp, partition, JSON numbers).
    Range { field: FieldRef, lower: Bound<f64>, upper: Bound<f64> },
    Exists { field: FieldRef },
    Bool { must: Vec<Query>, should: Vec<Query>, must_not: Vec<Query>, filter: Vec<Query>, min_should: usize },
}

/// A bad query: an Elasticsearch error type and a reason naming the problem.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryError {
    pub kind: &'static str,
    pub reason: String,
}

fn err(kind: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError { kind, reason: reason.into() }
}

impl Query {
    pub fn bool_of(must: Vec<Query>, should: Vec<Query>, must_not: Vec<Query>, filter: Vec<Query>, min_should: Option<usize>) -> Query {
        let min_should = min_should.unwrap_or(if must.is_empty() && filter.is_empty() && !should.is_empty() { 1 } else { 0 });
        Query::Bool { must, should, must_not, filter, min_should }
    }

    /// Text query: analyzed with the index's tokenizer.
    pub fn text(field: FieldRef, text: &str, all: bool, phrase: bool) -> Query {
        let (positions, tokens) = tokenize_with_positions(text).into_iter().unzip();
        Query::Text { field, tokens, positions, all, phrase, raw: text.to_string() }
    }

    /// Whether `doc` matches (the reference semantics).
    pub fn matches(&self, doc: &Doc) -> bool {
        match self {
            Query::All => true,
            Query::Nothing => false,
            Query::Text { field, tokens, positions, all, phrase, raw } => text_matches(doc, field, tokens, positions, *all, *phrase, raw),
            Query::Term { field, value } => term_matches(doc, field, value),
            Query::Range { field, lower, upper } => numbers(doc, field).into_iter().any(|n| in_range(n, *lower, *upper)),
            Query::Exists { field } => match field {
                FieldRef::Any => doc.key.is_some() || doc.value.is_some(),
                f => doc.present_fields().contains(&f.presence_name()),
            },
            Query::Bool { must, should, must_not, filter, min_should } => {
                must.iter().chain(filter).all(|q| q.matches(doc))
                    && !must_not.iter().any(|q| q.matches(doc))
                    && should.iter().filter(|q| q.matches(doc)).count() >= *min_should
            }
        }
    }
}

pub fn in_range(n: f64, lower: Bound<f64>, upper: Bound<f64>) -> bool {
    let lo = match lower {
        Bound::Included(l) => n >= l,
        Bound::Excluded(l) => n > l,
        Bound::Unbounded => true,
    };
    let hi = match upper {
        Bound::Included(u) => n <= u,
        Bound::Excluded(u) => n < u,
        Bound::Unbounded => true,
    };
    lo && hi
}

/// The texts of a field in a document, each as its own list of positioned tokens.
fn texts(doc: &Doc, field: &FieldRef) -> Vec<Vec<(usize, String)>> {
    let lossy = |b: &Option<bytes::Bytes>| b.as_ref().map(|b| tokenize_with_positions(&String::from_utf8_lossy(b)));
    match field {
        FieldRef::Any => [lossy(&doc.key), lossy(&doc.value)].into_iter().flatten().collect(),
        FieldRef::Key => lossy(&doc.key).into_iter().collect(),
        FieldRef::Value => lossy(&doc.value).into_iter().collect(),
        FieldRef::Header(h) => doc.header_texts().into_iter().filter(|(k, _)| k == h).map(|(_, v)| tokenize_with_positions(&v)).collect(),
        FieldRef::Json(p) => doc
            .json_leaves()
            .into_iter()
            .filter(|(path, _)| path == p)
            .filter_map(|(_, leaf)| match leaf {
                Leaf::Text(t) => Some(tokenize_with_positions(&t)),
                Leaf::Number(_) => None,
            })
            .collect(),
        FieldRef::Offset | FieldRef::Timestamp | FieldRef::Partition => Vec::new(),
    }
}

/// The numbers of a field in a document.
pub fn numbers(doc: &Doc, field: &FieldRef) -> Vec<f64> {
    match field {
        FieldRef::Offset => vec![doc.offset as f64],
        FieldRef::Timestamp => vec![doc.timestamp as f64],
        FieldRef::Partition => vec![doc.partition as f64],
        FieldRef::Json(p) => doc
            .json_leaves()
            .into_iter()
            .filter(|(path, _)| path == p)
            .filter_map(|(_, leaf)| match leaf {
                Leaf::Number(n) => Some(n),
                Leaf::Text(_) => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn text_matches(doc: &Doc, field: &FieldRef, tokens: &[String], positions: &[usize], all: bool, phrase: bool, raw: &str) -> bool {
    if let Some(n) = finite(raw) {
        if numbers(doc, field).contains(&n) {
            return true;
        }
    }
    if tokens.is_empty() {
        return false;
    }
    let values = texts(doc, field);
    // Positions ascend within a value: find one by binary search (a long
    // value must not make a phrase quadratic; live subscriptions run this).
    let has = |v: &[(usize, String)], pos: Option<usize>, t: &String| match pos {
        Some(want) => v.binary_search_by_key(&want, |(p, _)| *p).is_ok_and(|i| v[i].1 == *t),
        None => v.iter().any(|(_, x)| x == t),
    };
    if phrase && tokens.len() > 1 {
        // Some occurrence of the first token with every other one at the same distance as in the query.
        return values.iter().any(|v| {
            v.iter().filter(|(_, x)| *x == tokens[0]).any(|(start, _)| {
                tokens.iter().zip(positions).skip(1).all(|(t, q)| has(v, Some(start + (q - positions[0])), t))
            })
        });
    }
    if all {
        tokens.iter().all(|t| values.iter().any(|v| has(v, None, t)))
    } else {
        tokens.iter().any(|t| values.iter().any(|v| has(v, None, t)))
    }
}

fn term_matches(doc: &Doc, field: &FieldRef, value: &str) -> bool {
    if let Some(n) = finite(value) {
        if numbers(doc, field).contains(&n) {
            return true;
        }
    }
    texts(doc, field).iter().any(|v| v.iter().any(|(_, t)| t == value))
}

// ---- sorting ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    Asc,
    Desc,
}

/// What hits are ordered by. Ties are broken by partition, then offset (ascending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortField {
    Score(SortOrder),
    Timestamp(SortOrder),
    Offset(SortOrder),
}

/// A hit's position in the sort order, for `search_after`: the value of each
/// sort field, then partition and offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SortKey {
    pub values: Vec<f64>,
    pub partition: i32,
    pub offset: i64,
}

impl SortKey {
    pub fn of(sort: &[SortField], partition: i32, offset: i64, timestamp: i64, score: f32) -> SortKey {
        let values = sort
            .iter()
            .map(|s| match s {
                SortField::Score(_) => score as f64,
                SortField::Timestamp(_) => timestamp as f64,
                SortField::Offset(_) => offset as f64,
            })
            .collect();
        SortKey { values, partition, offset }
    }

    /// Orders two keys by `sort`: `Less` comes first.
    pub fn cmp(sort: &[SortField], a: &SortKey, b: &SortKey) -> std::cmp::Ordering {
        for (i, s) in sort.iter().enumerate() {
            let order = match s {
                SortField::Score(o) | SortField::Timestamp(o) | SortField::Offset(o) => *o,
            };
            let (x, y) = (a.values.get(i).copied().unwrap_or(0.0), b.values.get(i).copied().unwrap_or(0.0));
            let c = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
            let c = if order == SortOrder::Desc { c.reverse() } else { c };
            if c != std::cmp::Ordering::Equal {
                return c;
            }
        }
        (a.partition, a.offset).cmp(&(b.partition, b.offset))
    }
}

/// Parses a sort field name and order.
pub fn parse_sort(name: &str, order: Option<&str>) -> Result<SortField, QueryError> {
    let order = match order.map(|o| o.to_ascii_lowercase()) {
        None => None,
        Some(o) if o == "asc" => Some(SortOrder::Asc),
        Some(o) if o == "desc" => Some(SortOrder::Desc),
        Some(o) => return Err(err("parsing_exception", format!("unknown sort order [{o}]: use asc or desc"))),
    };
    Ok(match name {
        "_score" | "relevance" => SortField::Score(order.unwrap_or(SortOrder::Desc)),
        "timestamp" | "@timestamp" | "_timestamp" | "time" => SortField::Timestamp(order.unwrap_or(SortOrder::Desc)),
        "offset" | "_offset" | "_doc" => SortField::Offset(order.unwrap_or(SortOrder::Asc)),
        other => return Err(err("illegal_argument_exception", format!("No mapping found for [{other}] in order to sort on; sort by _score, timestamp or offset"))),
    })
}

// ---- the q= syntax ---------------------------------------------------------------

/// Limits on a query string (and on an Elasticsearch query's nesting).
pub const MAX_QUERY_BYTES: usize = 16 * 1024;
pub const MAX_QUERY_NESTING: usize = 32;

/// A number in a query: finite only (NaN and infinities are not numbers here).
fn finite(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Parses the `q=` / `query_string` syntax: `error`, `level:error`,
/// `"disk full"`, `user.id:42`, `offset:[10 TO 20]`, `+a -b`, `a AND (b OR c)`,
/// `field:IN [a b]`, `field:*` (exists). `and` makes unprefixed terms required.
pub fn parse_query_string(text: &str, default_field: &FieldRef, and: bool) -> Result<Query, QueryError> {
    if text.trim().is_empty() || text.trim() == "*" {
        return Ok(Query::All);
    }
    // The grammar is recursive: bound what it is given.
    if text.len() > MAX_QUERY_BYTES {
        return Err(err("query_shard_exception", format!("query of {} bytes is longer than the limit of {MAX_QUERY_BYTES}", text.len())));
    }
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_QUERY_NESTING {
                    return Err(err("query_shard_exception", format!("query nests deeper than {MAX_QUERY_NESTING} levels")));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let ast = tantivy_query_grammar::parse_query(text)
        .map_err(|_| err("query_shard_exception", format!("Failed to parse query [{text}]")))?;
    from_ast(&ast, default_field, and)
}

fn from_ast(ast: &UserInputAst, default_field: &FieldRef, and: bool) -> Result<Query, QueryError> {
    match ast {
        UserInputAst::Boost(inner, _) => from_ast(inner, default_field, and),
        UserInputAst::Leaf(leaf) => from_leaf(leaf, default_field),
        UserInputAst::Clause(clauses) => {
            if clauses.is_empty() {
                return Ok(Query::All);
            }
            let (mut must, mut should, mut must_not) = (Vec::new(), Vec::new(), Vec::new());
            for (occur, sub) in clauses {
                let q = from_ast(sub, default_field, and)?;
                match occur {
                    Some(Occur::Must) => must.push(q),
                    Some(Occur::MustNot) => must_not.push(q),
                    Some(Occur::Should) => should.push(q),
                    None if and => must.push(q),
                    None => should.push(q),
                }
            }
            if must.is_empty() && should.is_empty() {
                must.push(Query::All);
            }
            Ok(Query::bool_of(must, should, must_not, Vec::new(), None))
        }
    }
}

fn field_of(name: &Option<String>, default_field: &FieldRef) -> Result<FieldRef, QueryError> {
    match name {
        None => Ok(default_field.clone()),
        Some(n) => FieldRef::parse(n).map_err(|e| err("query_shard_exception", e)),
    }
}

fn from_leaf(leaf: &UserInputLeaf, default_field: &FieldRef) -> Result<Query, QueryError> {
    match leaf {
        UserInputLeaf::All => Ok(Query::All),
        UserInputLeaf::Literal(lit) => {
            let field = field_of(&lit.field_name, default_field)?;
            if lit.prefix || (lit.delimiter == Delimiter::None && lit.phrase.ends_with('*')) {
                return Err(err("query_shard_exception", format!("prefix queries ({}*) are not supported", lit.phrase)));
            }
            if lit.slop > 0 {
                return Err(err("query_shard_exception", format!("phrase slop (~{}) is not supported", lit.slop)));
            }
            let quoted = lit.delimiter != Delimiter::None;
            // An unquoted literal that splits into several tokens is a phrase too, as in tantivy.
            Ok(Query::text(field, &lit.phrase, true, true).with_phrase(quoted || tokenize(&lit.phrase).len() > 1))
        }
        UserInputLeaf::Range { field, lower, upper } => {
            let field = field_of(field, default_field)?;
            range_query(field, bound(lower)?, bound(upper)?)
        }
        UserInputLeaf::Set { field, elements } => {
            let field = field_of(field, default_field)?;
            let should = elements.iter().map(|e| Query::text(field.clone(), e, true, true).with_phrase(tokenize(e).len() > 1)).collect();
            Ok(Query::bool_of(Vec::new(), should, Vec::new(), Vec::new(), None))
        }
        UserInputLeaf::Exists { field } => Ok(Query::Exists { field: FieldRef::parse(field).map_err(|e| err("query_shard_exception", e))? }),
        UserInputLeaf::Regex { .. } => Err(err("query_shard_exception", "regular expression queries are not supported")),
    }
}

impl Query {
    fn with_phrase(self, phrase: bool) -> Query {
        match self {
            Query::Text { field, tokens, positions, all, raw, .. } => Query::Text { field, tokens, positions, all, phrase, raw },
            q => q,
        }
    }
}

fn bound(b: &UserInputBound) -> Result<Bound<f64>, QueryError> {
    let num = |s: &str| finite(s).ok_or_else(|| err("query_shard_exception", format!("range bound [{s}] is not a number")));
    Ok(match b {
        UserInputBound::Unbounded => Bound::Unbounded,
        UserInputBound::Inclusive(s) if s == "*" => Bound::Unbounded,
        UserInputBound::Exclusive(s) if s == "*" => Bound::Unbounded,
        UserInputBound::Inclusive(s) => Bound::Included(num(s)?),
        UserInputBound::Exclusive(s) => Bound::Excluded(num(s)?),
    })
}

fn range_query(field: FieldRef, lower: Bound<f64>, upper: Bound<f64>) -> Result<Query, QueryError> {
    match field {
        FieldRef::Any | FieldRef::Key | FieldRef::Value | FieldRef::Header(_) => {
            Err(err("query_shard_exception", format!("range queries need a numeric field (offset, timestamp, partition or a JSON number), not [{}]", field.presence_name())))
        }
        field => Ok(Query::Range { field, lower, upper }),
    }
}

// ---- the Elasticsearch query DSL ------------------------------------------------------

/// Parses an Elasticsearch query object (`{"match": {...}}`, `{"bool": {...}}`, ...).
pub fn parse_es_query(q: &Value) -> Result<Query, QueryError> {
    parse_es_query_at(q, 0)
}

fn parse_es_query_at(q: &Value, depth: usize) -> Result<Query, QueryError> {
    if depth > MAX_QUERY_NESTING {
        return Err(err("parsing_exception", format!("query nests deeper than {MAX_QUERY_NESTING} levels")));
    }
    let obj = q.as_object().ok_or_else(|| err("parsing_exception", "query must be an object"))?;
    if obj.len() != 1 {
        return Err(err("parsing_exception", format!("query must have exactly one clause, found {}", obj.len())));
    }
    let (kind, body) = obj.iter().next().expect("one entry");
    match kind.as_str() {
        "match_all" => Ok(Query::All),
        "match_none" => Ok(Query::Nothing),
        "query_string" | "simple_query_string" => {
            let text = body.get("query").and_then(Value::as_str).ok_or_else(|| err("parsing_exception", format!("[{kind}] needs a string [query]")))?;
            let field = match body.get("default_field").and_then(Value::as_str) {
                Some(f) => FieldRef::parse(f).map_err(|e| err("parsing_exception", e))?,
                None => FieldRef::Any,
            };
            let and = match body.get("default_operator").and_then(Value::as_str).map(str::to_ascii_uppercase) {
                None => false,
                Some(o) if o == "OR" => false,
                Some(o) if o == "AND" => true,
                Some(o) => return Err(err("parsing_exception", format!("[default_operator] must be AND or OR, not [{o}]"))),
            };
            parse_query_string(text, &field, and)
        }
        "match" | "match_phrase" => {
            let (field, v) = single_field(kind, body)?;
            let (text, and) = match v {
                Value::Object(o) => {
                    let text = o.get("query").ok_or_else(|| err("parsing_exception", format!("[{kind}] needs [query]")))?;
                    let and = match o.get("operator").and_then(Value::as_str).map(str::to_ascii_uppercase) {
                        None => false,
                        Some(x) if x == "OR" => false,
                        Some(x) if x == "AND" => true,
                        Some(x) => return Err(err("parsing_exception", format!("[operator] must be AND or OR, not [{x}]"))),
                    };
                    (scalar_text(kind, text)?, and)
                }
                other => (scalar_text(kind, other)?, false),
            };
            Ok(Query::text(field, &text, and, kind == "match_phrase"))
        }
        "term" => {
            let (field, v) = single_field(kind, body)?;
            let v = match v {
                Value::Object(o) => o.get("value").ok_or_else(|| err("parsing_exception", "[term] needs [value]"))?,
                other => other,
            };
            Ok(Query::Term { field, value: scalar_text(kind, v)? })
        }
        "terms" => {
            let (field, v) = single_field(kind, body)?;
            let items = v.as_array().ok_or_else(|| err("parsing_exception", "[terms] needs an array of values"))?;
            let should = items.iter().map(|i| Ok(Query::Term { field: field.clone(), value: scalar_text(kind, i)? })).collect::<Result<Vec<_>, QueryError>>()?;
            Ok(Query::bool_of(Vec::new(), should, Vec::new(), Vec::new(), Some(1)))
        }
        "range" => {
            let (field, v) = single_field(kind, body)?;
            let o = v.as_object().ok_or_else(|| err("parsing_exception", "[range] needs an object of bounds"))?;
            let mut lower = Bound::Unbounded;
            let mut upper = Bound::Unbounded;
            for (k, b) in o {
                let n = match b {
                    Value::Number(n) => n.as_f64().filter(|x| x.is_finite()).ok_or_else(|| err("parsing_exception", format!("[range] bound {n} is not a finite number")))?,
                    Value::String(s) => finite(s).ok_or_else(|| err("parsing_exception", format!("[range] bound [{s}] is not a number (timestamps are epoch milliseconds)")))?,
                    Value::Null => continue,
                    other => return Err(err("parsing_exception", format!("[range] bound {other} is not a number"))),
                };
                match k.as_str() {
                    "gte" | "from" => lower = Bound::Included(n),
                    "gt" => lower = Bound::Excluded(n),
                    "lte" | "to" => upper = Bound::Included(n),
                    "lt" => upper = Bound::Excluded(n),
                    "format" | "boost" | "time_zone" | "include_lower" | "include_upper" => {}
                    other => return Err(err("parsing_exception", format!("[range] query does not support [{other}]"))),
                }
            }
            range_query(field, lower, upper).map_err(|e| err("parsing_exception", e.reason))
        }
        "exists" => {
            let f = body.get("field").and_then(Value::as_str).ok_or_else(|| err("parsing_exception", "[exists] needs a string [field]"))?;
            Ok(Query::Exists { field: FieldRef::parse(f).map_err(|e| err("parsing_exception", e))? })
        }
        "bool" => {
            let o = body.as_object().ok_or_else(|| err("parsing_exception", "[bool] needs an object"))?;
            let list = |name: &str| -> Result<Vec<Query>, QueryError> {
                match o.get(name) {
                    None => Ok(Vec::new()),
                    Some(Value::Array(items)) => items.iter().map(|i| parse_es_query_at(i, depth + 1)).collect(),
                    Some(one) => Ok(vec![parse_es_query_at(one, depth + 1)?]),
                }
            };
            for k in o.keys() {
                if !["must", "should", "must_not", "filter", "minimum_should_match", "boost"].contains(&k.as_str()) {
                    return Err(err("parsing_exception", format!("[bool] query does not support [{k}]")));
                }
            }
            let min = match o.get("minimum_should_match") {
                None => None,
                Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| err("parsing_exception", "[minimum_should_match] must be a non-negative integer"))? as usize),
                Some(Value::String(s)) => Some(s.parse::<usize>().map_err(|_| err("parsing_exception", format!("[minimum_should_match] [{s}] is not supported: use an integer")))?),
                Some(other) => return Err(err("parsing_exception", format!("[minimum_should_match] {other} is not supported"))),
            };
            Ok(Query::bool_of(list("must")?, list("should")?, list("must_not")?, list("filter")?, min))
        }
        other => Err(err("parsing_exception", format!("unknown query [{other}]"))),
    }
}

fn single_field<'a>(kind: &str, body: &'a Value) -> Result<(FieldRef, &'a Value), QueryError> {
    let o = body.as_object().filter(|o| o.len() == 1).ok_or_else(|| err("parsing_exception", format!("[{kind}] query needs exactly one field")))?;
    let (name, v) = o.iter().next().expect("one entry");
    Ok((FieldRef::parse(name).map_err(|e| err("parsing_exception", e))?, v))
}

fn scalar_text(kind: &str, v: &Value) -> Result<String, QueryError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(err("parsing_exception", format!("[{kind}] value {other} must be a string, number or boolean"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn doc(offset: i64, value: &str) -> Doc {
        Doc { partition: 0, offset, timestamp: 1000 + offset, key: Some(Bytes::from(format!("k{offset}"))), value: Some(Bytes::from(value.to_string())), headers: vec![("h".into(), Some(Bytes::from_static(b"Trace-9")))] }
    }

    fn q(s: &str) -> Query {
        parse_query_string(s, &FieldRef::Any, false).unwrap()
    }

    #[test]
    fn query_string_semantics() {
        let d = doc(5, r#"{"level":"error","msg":"Disk full on node 7","user":{"id":42},"ok":true}"#);
        for yes in ["error", "level:error", "user.id:42", "\"disk full\"", "msg:\"full on\"", "offset:[5 TO 5]", "offset:{4 TO *]",
            "+error -warning", "error AND disk", "timestamp:[1000 TO 2000]", "headers.h:trace", "ok:true", "user:*", "k5", "key:k5", "level:IN [warn error]", "*"] {
            assert!(q(yes).matches(&d), "{yes} should match");
        }
        for no in ["warning", "level:disk", "user.id:43", "\"full disk\"", "offset:[6 TO 9]", "error AND warning", "-error", "nope:*", "key:k6"] {
            assert!(!q(no).matches(&d), "{no} should not match");
        }
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        for (bad, why) in [("abc*", "prefix"), ("value:[a TO b]", "range"), ("offset:[x TO 3]", "not a number"), ("_id:3", "unknown field"), ("a~2 \"b c\"~3", "slop")] {
            let e = parse_query_string(bad, &FieldRef::Any, false).unwrap_err();
            assert!(e.reason.contains(why), "{bad}: {e:?}");
        }
        assert!(parse_query_string("(unclosed", &FieldRef::Any, false).is_err());
        let deep = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(parse_query_string(&deep, &FieldRef::Any, false).unwrap_err().reason.contains("longer"));
        let nested = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert!(parse_query_string(&nested, &FieldRef::Any, false).unwrap_err().reason.contains("nests"));
        assert!(parse_query_string("offset:[nan TO *]", &FieldRef::Any, false).is_err());
        assert!(!parse_query_string("offset:nan", &FieldRef::Any, false).unwrap().matches(&doc(0, "x")));
    }

    #[test]
    fn es_dsl_semantics() {
        let d = doc(7, r#"{"level":"error","msg":"Disk full","n":3.5,"tags":["a","b"]}"#);
        let yes = [
            r#"{"match":{"msg":"disk"}}"#,
            r#"{"match":{"msg":{"query":"disk space","operator":"or"}}}"#,
            r#"{"match_phrase":{"msg":"disk full"}}"#,
            r#"{"term":{"level":"error"}}"#,
            r#"{"terms":{"tags":["x","b"]}}"#,
            r#"{"range":{"n":{"gt":3,"lte":3.5}}}"#,
            r#"{"range":{"offset":{"gte":7}}}"#,
            r#"{"exists":{"field":"tags"}}"#,
            r#"{"bool":{"must":[{"match":{"msg":"full"}}],"must_not":{"term":{"level":"info"}},"filter":[{"range":{"timestamp":{"lt":2000}}}]}}"#,
            r#"{"bool":{"should":[{"term":{"level":"info"}},{"term":{"level":"error"}}]}}"#,
            r#"{"query_string":{"query":"level:error AND n:3.5"}}"#,
            r#"{"match_all":{}}"#,
        ];
        for y in yes {
            assert!(parse_es_query(&serde_json::from_str(y).unwrap()).unwrap().matches(&d), "{y} should match");
        }
        let no = [
            r#"{"match":{"msg":{"query":"disk space","operator":"and"}}}"#,
            r#"{"term":{"level":"Error"}}"#,
            r#"{"range":{"n":{"gt":3.5}}}"#,
            r#"{"bool":{"should":[{"term":{"level":"info"}}],"must":[{"match_all":{}}],"minimum_should_match":1}}"#,
            r#"{"match_none":{}}"#,
        ];
        for n in no {
            assert!(!parse_es_query(&serde_json::from_str(n).unwrap()).unwrap().matches(&d), "{n} should not match");
        }
        for bad in [r#"{"fuzzy":{"a":"b"}}"#, r#"{"range":{"key":{"gt":1}}}"#, r#"{"bool":{"mustt":[]}}"#, r#"{"match":{"a":"x","b":"y"}}"#, r#"[]"#] {
            assert!(parse_es_query(&serde_json::from_str(bad).unwrap()).is_err(), "{bad} should be refused");
        }
    }
}
