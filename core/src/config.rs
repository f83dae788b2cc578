//! Broker settings and the topic-level configs Chronik understands.
//!
//! Topic configs are validated when a topic is created (or later altered):
//! an unknown name, a value of the wrong type or out of range, or a value
//! Chronik does not implement is refused with `INVALID_CONFIG` and a message
//! naming the problem — never silently stored and ignored.

use std::collections::BTreeMap;

use crate::log::LogConfig;

/// Settings of one broker, from the command line / config file.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// A member of a cluster: topics come from the controller (none is
    /// created here alone), and group coordinators follow the leaders of
    /// `__consumer_offsets`.
    pub cluster: bool,
    /// `--cluster-id`: the cluster this broker belongs to, if the operator
    /// named it. A data directory of another cluster is refused at start,
    /// and so is a controller quorum that named itself otherwise.
    pub cluster_id: Option<String>,
    /// The host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// `num.partitions`: partitions of auto-created topics and of
    /// CreateTopics with `num_partitions = -1`.
    pub num_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// Defaults for topics' log settings (`log.segment.bytes`, ...).
    pub log: LogConfig,
    /// `message.max.bytes`: the largest batch accepted, unless a topic sets
    /// `max.message.bytes`.
    pub message_max_bytes: i32,
    /// `socket.request.max.bytes`: frames larger than this close the connection.
    pub socket_request_max_bytes: i32,
    /// `fetch.max.bytes`: the most record bytes one fetch response carries,
    /// whatever the client asks for (at least one batch is always returned).
    pub fetch_max_bytes: i32,
    /// Group-commit window: 0 syncs as soon as data is appended (batching
    /// whatever arrives while a sync runs); N > 0 syncs at most every N ms.
    pub flush_interval_ms: u64,
    /// How often retention runs.
    pub retention_check_interval_ms: u64,
    /// `producer.id.expiration.ms`: idle producers' dedup state is dropped.
    pub producer_id_expiration_ms: i64,
    /// `log.message.timestamp.before.max.ms` / `after.max.ms`: how far a
    /// record's CreateTime may lie behind or ahead of the broker's clock
    /// (Kafka 4's defaults: unbounded, one hour); others are `INVALID_TIMESTAMP`.
    pub message_timestamp_before_max_ms: i64,
    pub message_timestamp_after_max_ms: i64,
    /// The group coordinator's settings.
    pub group: crate::group::GroupConfig,
    /// `replica.lag.time.max.ms`: a follower that has not caught up with
    /// its leader's log end for this long leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `default.replication.factor`: replicas of auto-created topics and
    /// of CreateTopics with `replication_factor = -1`.
    pub default_replication_factor: i32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            cluster: false,
            cluster_id: None,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            num_partitions: 1,
            auto_create_topics_enable: true,
            log: LogConfig::default(),
            message_max_bytes: 1_048_588,
            socket_request_max_bytes: 104_857_600,
            fetch_max_bytes: 57_671_680,
            flush_interval_ms: 0,
            retention_check_interval_ms: 300_000,
            producer_id_expiration_ms: 86_400_000,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: 3_600_000,
            group: crate::group::GroupConfig::default(),
            replica_lag_time_max_ms: 30_000,
            default_replication_factor: 1,
        }
    }
}

/// Kafka's `ConfigType` ids, as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    List = 7,
}

/// One topic-level config Chronik implements.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    /// The broker config it falls back to.
    pub broker_synonym: &'static str,
    pub doc: &'static str,
    /// Checks a value; `Err` names what is wrong.
    pub validate: fn(&str) -> Result<(), String>,
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v: &str| match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(n) => Err(format!("{n} is below the minimum {min}")),
        Err(_) => Err(format!("'{v}' is not a whole number")),
    }
}

fn int_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v: &str| match v.trim().parse::<i32>() {
        Ok(n) if n as i64 >= min => Ok(()),
        Ok(n) => Err(format!("{n} is below the minimum {min}")),
        Err(_) => Err(format!("'{v}' is not a 32-bit whole number")),
    }
}

fn boolean(v: &str) -> Result<(), String> {
    match v.trim() {
        "true" | "false" => Ok(()),
        _ => Err(format!("'{v}' is not true or false")),
    }
}

macro_rules! validator {
    ($f:expr) => {{
        fn v(s: &str) -> Result<(), String> {
            ($f)(s)
        }
        v
    }};
}

pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        config_type: ConfigType::List,
        broker_synonym: "log.cleanup.policy",
        doc: "Only 'delete' (retention by time and size) is implemented; compaction is not yet.",
        validate: validator!(|v: &str| if v.trim() == "delete" {
            Ok(())
        } else {
            Err(format!("'{v}' is not supported: only cleanup.policy=delete is implemented"))
        }),
    },
    TopicConfigDef {
        name: "retention.ms",
        config_type: ConfigType::Long,
        broker_synonym: "log.retention.ms",
        doc: "Delete whole segments whose newest record is older than this; -1 keeps forever.",
        validate: validator!(long_at_least(-1)),
    },
    TopicConfigDef {
        name: "retention.bytes",
        config_type: ConfigType::Long,
        broker_synonym: "log.retention.bytes",
        doc: "Delete the oldest segments while the partition is larger than this; -1 for no limit.",
        validate: validator!(long_at_least(-1)),
    },
    TopicConfigDef {
        name: "segment.bytes",
        config_type: ConfigType::Int,
        broker_synonym: "log.segment.bytes",
        doc: "Roll to a new segment file when the active one would exceed this size.",
        validate: validator!(int_at_least(1024)),
    },
    TopicConfigDef {
        name: "segment.ms",
        config_type: ConfigType::Long,
        broker_synonym: "log.roll.ms",
        doc: "Roll to a new segment when the active one is older than this.",
        validate: validator!(long_at_least(1)),
    },
    TopicConfigDef {
        name: "segment.index.bytes",
        config_type: ConfigType::Int,
        broker_synonym: "log.index.size.max.bytes",
        doc: "Accepted for compatibility; Chronik's indexes grow with the segment.",
        validate: validator!(int_at_least(4)),
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        config_type: ConfigType::Int,
        broker_synonym: "log.index.interval.bytes",
        doc: "Bytes of log between two entries of the sparse offset and time indexes.",
        validate: validator!(int_at_least(0)),
    },
    TopicConfigDef {
        name: "max.message.bytes",
        config_type: ConfigType::Int,
        broker_synonym: "message.max.bytes",
        doc: "The largest record batch the topic accepts.",
        validate: validator!(int_at_least(0)),
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        broker_synonym: "min.insync.replicas",
        doc: "Replicas that must have a batch before acks=all is answered.",
        validate: validator!(int_at_least(1)),
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        config_type: ConfigType::String,
        broker_synonym: "log.message.timestamp.type",
        doc: "Only CreateTime is implemented: records keep the producer's timestamps.",
        validate: validator!(|v: &str| if v.trim() == "CreateTime" {
            Ok(())
        } else {
            Err(format!("'{v}' is not supported: only message.timestamp.type=CreateTime is implemented"))
        }),
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        config_type: ConfigType::Long,
        broker_synonym: "log.message.timestamp.before.max.ms",
        doc: "A record whose timestamp is older than the broker's clock by more than this is refused (INVALID_TIMESTAMP).",
        validate: validator!(long_at_least(0)),
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        config_type: ConfigType::Long,
        broker_synonym: "log.message.timestamp.after.max.ms",
        doc: "A record whose timestamp is ahead of the broker's clock by more than this is refused (INVALID_TIMESTAMP).",
        validate: validator!(long_at_least(0)),
    },
    TopicConfigDef {
        name: "search.enabled",
        config_type: ConfigType::Boolean,
        broker_synonym: "search.enabled",
        doc: "Index every record for search (Chronik's own config): the search HTTP API and live streams then serve this topic.",
        validate: boolean,
    },
    TopicConfigDef {
        name: "compression.type",
        config_type: ConfigType::String,
        broker_synonym: "compression.type",
        doc: "Only 'producer' is implemented: batches are stored compressed as the producer sent them.",
        validate: validator!(|v: &str| if v.trim() == "producer" {
            Ok(())
        } else {
            Err(format!("'{v}' is not supported: only compression.type=producer is implemented"))
        }),
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        config_type: ConfigType::Boolean,
        broker_synonym: "unclean.leader.election.enable",
        doc: "Whether a replica outside the ISR may become leader (off: never lose acknowledged data).",
        validate: boolean,
    },
];

pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks a set of topic configs; the error names the first bad one.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in configs {
        let def = topic_config_def(name).ok_or_else(|| format!("unknown topic config '{name}'"))?;
        (def.validate)(value).map_err(|e| format!("invalid value for {name}: {e}"))?;
    }
    Ok(())
}

impl BrokerConfig {
    /// The broker-level default of topic config `name`, as text.
    pub fn topic_default(&self, name: &str) -> String {
        match name {
            "cleanup.policy" => "delete".into(),
            "retention.ms" => self.log.retention_ms.to_string(),
            "retention.bytes" => self.log.retention_bytes.to_string(),
            "segment.bytes" => self.log.segment_bytes.to_string(),
            "segment.ms" => self.log.segment_ms.to_string(),
            "segment.index.bytes" => "10485760".into(),
            "index.interval.bytes" => self.log.index_interval_bytes.to_string(),
            "max.message.bytes" => self.message_max_bytes.to_string(),
            "min.insync.replicas" => "1".into(),
            "message.timestamp.type" => "CreateTime".into(),
            "message.timestamp.before.max.ms" => self.message_timestamp_before_max_ms.to_string(),
            "message.timestamp.after.max.ms" => self.message_timestamp_after_max_ms.to_string(),
            "compression.type" => "producer".into(),
            "unclean.leader.election.enable" => "false".into(),
            "search.enabled" => "false".into(),
            other => unreachable!("no default for unknown topic config {other}"),
        }
    }

    /// The effective value of topic config `name` given the topic's overrides.
    pub fn topic_value(&self, overrides: &BTreeMap<String, String>, name: &str) -> String {
        overrides.get(name).cloned().unwrap_or_else(|| self.topic_default(name))
    }

    /// The log settings of a topic with these overrides (validated before).
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        let get = |n: &str| self.topic_value(overrides, n);
        LogConfig {
            segment_bytes: get("segment.bytes").trim().parse().unwrap_or(self.log.segment_bytes),
            segment_ms: get("segment.ms").trim().parse().unwrap_or(self.log.segment_ms),
            retention_ms: get("retention.ms").trim().parse().unwrap_or(self.log.retention_ms),
            retention_bytes: get("retention.bytes").trim().parse().unwrap_or(self.log.retention_bytes),
            index_interval_bytes: get("index.interval.bytes").trim().parse().unwrap_or(self.log.index_interval_bytes),
        }
    }

    /// The window `(before, after)` around the broker's clock that record
    /// timestamps must fall in, for a topic with these overrides.
    pub fn timestamp_window(&self, overrides: &BTreeMap<String, String>) -> (i64, i64) {
        let get = |n: &str, d: i64| self.topic_value(overrides, n).trim().parse().unwrap_or(d);
        (
            get("message.timestamp.before.max.ms", self.message_timestamp_before_max_ms),
            get("message.timestamp.after.max.ms", self.message_timestamp_after_max_ms),
        )
    }

    /// `min.insync.replicas` of a topic with these overrides.
    pub fn min_insync_replicas(&self, overrides: &BTreeMap<String, String>) -> usize {
        self.topic_value(overrides, "min.insync.replicas").trim().parse().unwrap_or(1)
    }

    pub fn max_message_bytes(&self, overrides: &BTreeMap<String, String>) -> i32 {
        self.topic_value(overrides, "max.message.bytes").trim().parse().unwrap_or(self.message_max_bytes)
    }

    /// Broker configs DescribeConfigs reports: (name, value, type, doc).
    pub fn describe(&self) -> Vec<(&'static str, String, ConfigType, &'static str)> {
        let g = &self.group;
        let assignors = if g.consumer_default_assignor == "range" { "range,uniform" } else { "uniform,range" }.to_string();
        vec![
            ("node.id", self.node_id.to_string(), ConfigType::Int, "This broker's id."),
            ("broker.id", self.node_id.to_string(), ConfigType::Int, "This broker's id (same as node.id)."),
            ("advertised.listeners", format!("PLAINTEXT://{}:{}", self.advertised_host, self.advertised_port), ConfigType::List, "Where clients connect."),
            ("num.partitions", self.num_partitions.to_string(), ConfigType::Int, "Partitions of auto-created topics."),
            ("default.replication.factor", "1".into(), ConfigType::Int, "Replication factor of auto-created topics."),
            ("auto.create.topics.enable", self.auto_create_topics_enable.to_string(), ConfigType::Boolean, "Create unknown topics on Metadata and Produce."),
            ("log.retention.ms", self.log.retention_ms.to_string(), ConfigType::Long, "Default retention.ms."),
            ("log.retention.bytes", self.log.retention_bytes.to_string(), ConfigType::Long, "Default retention.bytes."),
            ("log.segment.bytes", self.log.segment_bytes.to_string(), ConfigType::Int, "Default segment.bytes."),
            ("log.roll.ms", self.log.segment_ms.to_string(), ConfigType::Long, "Default segment.ms."),
            ("log.index.interval.bytes", self.log.index_interval_bytes.to_string(), ConfigType::Int, "Default index.interval.bytes."),
            ("log.cleanup.policy", "delete".into(), ConfigType::List, "Default cleanup.policy."),
            ("message.max.bytes", self.message_max_bytes.to_string(), ConfigType::Int, "Default max.message.bytes."),
            ("socket.request.max.bytes", self.socket_request_max_bytes.to_string(), ConfigType::Int, "Largest request frame accepted."),
            ("fetch.max.bytes", self.fetch_max_bytes.to_string(), ConfigType::Int, "Most record bytes in one fetch response."),
            ("log.flush.interval.ms", self.flush_interval_ms.to_string(), ConfigType::Long, "Group-commit window for fsync; 0 syncs as soon as data arrives."),
            ("log.retention.check.interval.ms", self.retention_check_interval_ms.to_string(), ConfigType::Long, "How often retention runs."),
            ("producer.id.expiration.ms", self.producer_id_expiration_ms.to_string(), ConfigType::Int, "Idle time after which a producer's dedup state is dropped."),
            ("min.insync.replicas", "1".into(), ConfigType::Int, "Default min.insync.replicas."),
            ("log.message.timestamp.type", "CreateTime".into(), ConfigType::String, "Default message.timestamp.type."),
            ("log.message.timestamp.before.max.ms", self.message_timestamp_before_max_ms.to_string(), ConfigType::Long, "Default message.timestamp.before.max.ms."),
            ("log.message.timestamp.after.max.ms", self.message_timestamp_after_max_ms.to_string(), ConfigType::Long, "Default message.timestamp.after.max.ms."),
            ("compression.type", "producer".into(), ConfigType::String, "Default compression.type."),
            ("unclean.leader.election.enable", "false".into(), ConfigType::Boolean, "Default unclean.leader.election.enable."),
            ("group.initial.rebalance.delay.ms", g.initial_rebalance_delay_ms.to_string(), ConfigType::Int, "How long the first rebalance of an empty classic group waits for more members."),
            ("group.min.session.timeout.ms", g.min_session_timeout_ms.to_string(), ConfigType::Int, "Smallest session timeout a classic member may ask for."),
            ("group.max.session.timeout.ms", g.max_session_timeout_ms.to_string(), ConfigType::Int, "Largest session timeout a classic member may ask for."),
            ("group.max.size", g.max_size.to_string(), ConfigType::Int, "Most members of a classic group."),
            ("group.consumer.session.timeout.ms", g.consumer_session_timeout_ms.to_string(), ConfigType::Int, "Session timeout of consumer-protocol (KIP-848) members."),
            ("group.consumer.heartbeat.interval.ms", g.consumer_heartbeat_interval_ms.to_string(), ConfigType::Int, "Heartbeat interval told to consumer-protocol members."),
            ("group.consumer.max.size", g.consumer_max_size.to_string(), ConfigType::Int, "Most members of a consumer-protocol group."),
            ("group.consumer.assignors", assignors, ConfigType::List, "Server assignors; the first is used when a member names none."),
            ("offsets.retention.minutes", (g.offsets_retention_ms / 60_000).to_string(), ConfigType::Int, "Committed offsets of a group empty this long are deleted."),
            ("offset.metadata.max.bytes", g.offset_metadata_max_bytes.to_string(), ConfigType::Int, "Largest metadata string of a committed offset."),
            ("offsets.topic.num.partitions", g.offsets_topic_partitions.to_string(), ConfigType::Int, "Partitions of __consumer_offsets."),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_config_has_a_valid_default() {
        let b = BrokerConfig::default();
        for def in TOPIC_CONFIGS {
            let v = b.topic_default(def.name);
            (def.validate)(&v).unwrap_or_else(|e| panic!("default of {} invalid: {e}", def.name));
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let m = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(validate_topic_configs(&m("retention.ms", "1000")).is_ok());
        assert!(validate_topic_configs(&m("retention.ms", "soon")).unwrap_err().contains("retention.ms"));
        assert!(validate_topic_configs(&m("retention.ms", "-2")).unwrap_err().contains("minimum"));
        assert!(validate_topic_configs(&m("no.such", "1")).unwrap_err().contains("unknown"));
        assert!(validate_topic_configs(&m("cleanup.policy", "compact")).unwrap_err().contains("only"));
    }
}
