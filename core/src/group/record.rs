//! The records of `__consumer_offsets`: JSON keys and values, so that a
//! person can read the topic with any consumer when something goes wrong.
//!
//! Key `["o", group, topic, partition]`: a committed offset ([`OffsetValue`]).
//! Key `["g", group]`: the group's membership snapshot ([`GroupSnapshot`]).
//! A null value is a tombstone. The latest record per key wins; a group's
//! tombstone also deletes every offset of the group recorded before it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Offset { group: String, topic: String, partition: i32 },
    Group { group: String },
}

impl Key {
    pub fn offset(group: &str, topic: &str, partition: i32) -> Bytes {
        Bytes::from(serde_json::to_vec(&("o", group, topic, partition)).expect("keys serialize"))
    }

    pub fn group(group: &str) -> Bytes {
        Bytes::from(serde_json::to_vec(&("g", group)).expect("keys serialize"))
    }

    pub fn parse(key: &[u8]) -> Result<Key, String> {
        let v: serde_json::Value = serde_json::from_slice(key).map_err(|e| format!("bad key: {e}"))?;
        let a = v.as_array().ok_or("key is not an array")?;
        let s = |i: usize| a.get(i).and_then(|x| x.as_str()).map(str::to_string).ok_or_else(|| format!("key field {i} is not a string"));
        match a.first().and_then(|x| x.as_str()) {
            Some("o") if a.len() == 4 => {
                let partition = a[3].as_i64().and_then(|p| i32::try_from(p).ok()).ok_or("key partition is not an i32")?;
                Ok(Key::Offset { group: s(1)?, topic: s(2)?, partition })
            }
            Some("g") if a.len() == 2 => Ok(Key::Group { group: s(1)? }),
            _ => Err(format!("unknown key {v}")),
        }
    }
}

/// A committed offset's record value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum GroupSnapshot {
    Classic(ClassicSnapshot),
    Consumer(ConsumerSnapshot),
}

/// A classic group as of its last Stable (or Empty) state, like Kafka's
/// GroupMetadata record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicSnapshot {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<ClassicMemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicMemberSnapshot {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (protocol name, metadata) as the member last joined with.
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

/// A KIP-848 group: epochs, subscriptions, target and current assignments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerSnapshot {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<ConsumerMemberSnapshot>,
}

pub type Assignment = std::collections::BTreeMap<Uuid, std::collections::BTreeSet<i32>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMemberSnapshot {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    pub target: Assignment,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = Key::offset("g/1\"x", "t", 7);
        assert_eq!(Key::parse(&k).unwrap(), Key::Offset { group: "g/1\"x".into(), topic: "t".into(), partition: 7 });
        assert_eq!(Key::parse(&Key::group("g")).unwrap(), Key::Group { group: "g".into() });
        assert!(Key::parse(b"[\"x\"]").is_err());
        assert!(Key::parse(b"not json").is_err());
        assert!(Key::parse(b"[\"o\",\"g\",\"t\",99999999999]").is_err());
    }
}
