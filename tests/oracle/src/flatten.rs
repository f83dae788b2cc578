//! Turns a response's pretty `Debug` text into `path = value` leaves, so two
//! responses can be compared field by field without a serializer for every
//! message type. List elements that carry a natural key (a topic name, a
//! partition index, an API key, ...) are labelled by it rather than by their
//! position, so the order in which a broker lists topics does not matter.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Leaf(String),
    Struct(Vec<(String, Node)>),
    List(Vec<Node>),
}

/// Fields that identify a list element, in order of preference.
const KEY_FIELDS: &[&str] = &["name", "topic", "partition_index", "partition", "api_key", "group_id", "key", "index"];

/// `{:#?}` of a value as sorted `path -> value` leaves.
pub fn flatten_debug<T: std::fmt::Debug>(value: &T) -> BTreeMap<String, String> {
    let text = format!("{value:#?}");
    let mut lines = text.lines().map(str::trim).peekable();
    let mut out = BTreeMap::new();
    if let Some(first) = lines.next() {
        let node = parse(first, &mut lines);
        flatten(&node, String::new(), &mut out);
    }
    out
}

fn parse<'a, I: Iterator<Item = &'a str>>(head: &str, lines: &mut std::iter::Peekable<I>) -> Node {
    let head = head.strip_suffix(',').unwrap_or(head);
    if head.ends_with('{') {
        let mut fields = Vec::new();
        while let Some(line) = lines.next() {
            if line == "}" || line == "}," {
                break;
            }
            let (name, rest) = line.split_once(": ").unwrap_or(("?", line));
            fields.push((name.trim_matches('"').to_string(), parse(rest, lines)));
        }
        Node::Struct(fields)
    } else if head.ends_with('[') || head.ends_with('(') {
        let close = if head.ends_with('[') { ']' } else { ')' };
        let mut items = Vec::new();
        while let Some(line) = lines.next() {
            if line.starts_with(close) && line.len() <= 2 {
                break;
            }
            items.push(parse(line, lines));
        }
        if close == ')' && items.len() == 1 {
            // `Some(x)` and tuple newtypes: the value itself.
            items.pop().expect("one item")
        } else {
            Node::List(items)
        }
    } else {
        Node::Leaf(head.to_string())
    }
}

fn element_label(node: &Node, index: usize) -> String {
    if let Node::Struct(fields) = node {
        for key in KEY_FIELDS {
            if let Some((_, Node::Leaf(v))) = fields.iter().find(|(n, _)| n == key) {
                return format!("[{key}={v}]");
            }
        }
    }
    format!("[{index}]")
}

fn flatten(node: &Node, path: String, out: &mut BTreeMap<String, String>) {
    match node {
        Node::Leaf(v) => {
            out.insert(path, v.clone());
        }
        Node::Struct(fields) => {
            if fields.is_empty() {
                out.insert(path.clone(), "{}".into());
            }
            for (name, child) in fields {
                let p = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                flatten(child, p, out);
            }
        }
        Node::List(items) => {
            if items.is_empty() {
                out.insert(path.clone(), "[]".into());
            }
            for (i, child) in items.iter().enumerate() {
                flatten(child, format!("{path}{}", element_label(child, i)), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Partition {
        partition_index: i32,
        error_code: i16,
        leader: Option<i32>,
    }
    #[derive(Debug)]
    struct Topic {
        name: &'static str,
        partitions: Vec<Partition>,
        tags: Vec<u8>,
    }
    #[derive(Debug)]
    struct Response {
        throttle_time_ms: i32,
        topics: Vec<Topic>,
        note: Option<&'static str>,
    }

    #[test]
    fn leaves_are_keyed_by_natural_keys() {
        let r = Response {
            throttle_time_ms: 5,
            topics: vec![Topic {
                name: "a{[(",
                partitions: vec![
                    Partition { partition_index: 1, error_code: 0, leader: Some(3) },
                    Partition { partition_index: 0, error_code: 3, leader: None },
                ],
                tags: vec![],
            }],
            note: None,
        };
        let flat = flatten_debug(&r);
        let want: BTreeMap<String, String> = [
            ("throttle_time_ms", "5"),
            ("topics[name=\"a{[(\"].name", "\"a{[(\""),
            ("topics[name=\"a{[(\"].partitions[partition_index=1].partition_index", "1"),
            ("topics[name=\"a{[(\"].partitions[partition_index=1].error_code", "0"),
            ("topics[name=\"a{[(\"].partitions[partition_index=1].leader", "3"),
            ("topics[name=\"a{[(\"].partitions[partition_index=0].partition_index", "0"),
            ("topics[name=\"a{[(\"].partitions[partition_index=0].error_code", "3"),
            ("topics[name=\"a{[(\"].partitions[partition_index=0].leader", "None"),
            ("topics[name=\"a{[(\"].tags", "[]"),
            ("note", "None"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(flat, want);
    }
}
