//! Configuration: defaults, then a TOML file (`--config`), then `CHRONIK_*`
//! environment variables and command-line flags (which win). Every problem is
//! reported with the setting's name before the broker starts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{bail, Context};
use chronik_core::config::BrokerConfig;
use chronik_core::group::GroupConfig;
use chronik_core::log::LogConfig;
use clap::Args;
use serde::Deserialize;

/// Settings of `chronik start`. Each flag can also be set with the
/// environment variable shown, or as the same name with underscores in the
/// TOML file given to `--config`.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Directory for the log and metadata [default: ./data]
    #[arg(long, env = "CHRONIK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// host:port of the Kafka listener [default: 127.0.0.1:9092]
    #[arg(long, env = "CHRONIK_KAFKA_LISTEN")]
    pub kafka_listen: Option<String>,
    /// host:port of the search HTTP API (Elasticsearch subset, live streams), or "off" [default: 127.0.0.1:8080]
    #[arg(long, env = "CHRONIK_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// host:port of the gRPC admin service (topics, configs, cluster, groups, search), or "off" [default: 127.0.0.1:9093]
    #[arg(long, env = "CHRONIK_RPC_LISTEN")]
    pub rpc_listen: Option<String>,
    /// How often new records become searchable: the search index commit interval in ms [default: 100]
    #[arg(long, env = "CHRONIK_SEARCH_REFRESH_MS")]
    pub search_refresh_ms: Option<u64>,
    /// Host clients are told to connect to [default: the listen address, or 127.0.0.1 when it is 0.0.0.0]
    #[arg(long, env = "CHRONIK_ADVERTISED_HOST")]
    pub advertised_host: Option<String>,
    /// This broker's id [default: 1]
    #[arg(long, env = "CHRONIK_NODE_ID")]
    pub node_id: Option<i32>,
    /// The cluster's members, as id@host:port of each one's --rpc-listen
    /// (every member is a controller voter; this node must be listed)
    #[arg(long, env = "CHRONIK_CONTROLLERS")]
    pub controllers: Option<String>,
    /// The cluster's id, if the operator names it (like kafka-storage format -t): a data directory of
    /// another cluster, or a quorum that named itself otherwise, is refused [default: the first member's choice]
    #[arg(long, env = "CHRONIK_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// A broker not heard from for this long is fenced (broker.session.timeout.ms) [default: 9000]
    #[arg(long, env = "CHRONIK_BROKER_SESSION_TIMEOUT_MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// A follower not caught up with its leader for this long leaves the ISR (replica.lag.time.max.ms) [default: 30000]
    #[arg(long, env = "CHRONIK_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<i64>,
    /// Replicas of auto-created topics and of CreateTopics without a replication factor (default.replication.factor) [default: 1]
    #[arg(long, env = "CHRONIK_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<i32>,
    /// Partitions of auto-created topics (num.partitions) [default: 1]
    #[arg(long, env = "CHRONIK_NUM_PARTITIONS")]
    pub num_partitions: Option<i32>,
    /// Create unknown topics when a client asks for their metadata [default: true]
    #[arg(long, env = "CHRONIK_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Roll to a new segment at this size in bytes (log.segment.bytes) [default: 1073741824]
    #[arg(long, env = "CHRONIK_LOG_SEGMENT_BYTES")]
    pub log_segment_bytes: Option<u64>,
    /// Roll to a new segment after this many ms (log.roll.ms) [default: 604800000]
    #[arg(long, env = "CHRONIK_LOG_ROLL_MS")]
    pub log_roll_ms: Option<i64>,
    /// Delete segments older than this many ms; -1 keeps forever (log.retention.ms) [default: 604800000]
    #[arg(long, env = "CHRONIK_LOG_RETENTION_MS", allow_hyphen_values = true)]
    pub log_retention_ms: Option<i64>,
    /// Delete old segments while a partition is larger than this; -1 for no limit (log.retention.bytes) [default: -1]
    #[arg(long, env = "CHRONIK_LOG_RETENTION_BYTES", allow_hyphen_values = true)]
    pub log_retention_bytes: Option<i64>,
    /// How often retention runs, in ms [default: 300000]
    #[arg(long, env = "CHRONIK_RETENTION_CHECK_INTERVAL_MS")]
    pub retention_check_interval_ms: Option<u64>,
    /// Group-commit window in ms: 0 fsyncs as soon as data arrives (batching what arrives during a sync); N waits up to N ms to batch more [default: 0]
    #[arg(long, env = "CHRONIK_FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// Largest record batch accepted (message.max.bytes) [default: 1048588]
    #[arg(long, env = "CHRONIK_MESSAGE_MAX_BYTES")]
    pub message_max_bytes: Option<i32>,
    /// Refuse records whose timestamp is older than the broker's clock by more than this (log.message.timestamp.before.max.ms) [default: unbounded]
    #[arg(long, env = "CHRONIK_LOG_MESSAGE_TIMESTAMP_BEFORE_MAX_MS")]
    pub log_message_timestamp_before_max_ms: Option<i64>,
    /// Refuse records whose timestamp is ahead of the broker's clock by more than this (log.message.timestamp.after.max.ms) [default: 3600000]
    #[arg(long, env = "CHRONIK_LOG_MESSAGE_TIMESTAMP_AFTER_MAX_MS")]
    pub log_message_timestamp_after_max_ms: Option<i64>,
    /// Largest request frame; larger ones close the connection (socket.request.max.bytes) [default: 104857600]
    #[arg(long, env = "CHRONIK_SOCKET_REQUEST_MAX_BYTES")]
    pub socket_request_max_bytes: Option<i32>,
    /// How long the first rebalance of an empty classic group waits for more members (group.initial.rebalance.delay.ms) [default: 3000]
    #[arg(long, env = "CHRONIK_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<i64>,
    /// Smallest and largest session timeout a classic member may ask for (group.min/max.session.timeout.ms) [default: 6000, 1800000]
    #[arg(long, env = "CHRONIK_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    #[arg(long, env = "CHRONIK_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// Most members of one group (group.max.size) [default: 2147483647]
    #[arg(long, env = "CHRONIK_GROUP_MAX_SIZE")]
    pub group_max_size: Option<usize>,
    /// Session timeout of KIP-848 consumer-group members (group.consumer.session.timeout.ms) [default: 45000]
    #[arg(long, env = "CHRONIK_GROUP_CONSUMER_SESSION_TIMEOUT_MS")]
    pub group_consumer_session_timeout_ms: Option<i32>,
    /// Heartbeat interval given to KIP-848 members (group.consumer.heartbeat.interval.ms) [default: 5000]
    #[arg(long, env = "CHRONIK_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS")]
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    /// Server assignor of KIP-848 groups when members name none: uniform or range [default: uniform]
    #[arg(long, env = "CHRONIK_GROUP_CONSUMER_ASSIGNOR")]
    pub group_consumer_assignor: Option<String>,
    /// Committed offsets of a group empty this long are deleted (offsets.retention.minutes) [default: 10080]
    #[arg(long, env = "CHRONIK_OFFSETS_RETENTION_MINUTES")]
    pub offsets_retention_minutes: Option<i64>,
    /// Partitions of __consumer_offsets when it is created (offsets.topic.num.partitions) [default: 50]
    #[arg(long, env = "CHRONIK_OFFSETS_TOPIC_NUM_PARTITIONS")]
    pub offsets_topic_num_partitions: Option<i32>,
    /// Replicas of each __consumer_offsets partition in a cluster; groups wait until this many brokers are live (offsets.topic.replication.factor) [default: 3, or fewer controllers]
    #[arg(long, env = "CHRONIK_OFFSETS_TOPIC_REPLICATION_FACTOR")]
    pub offsets_topic_replication_factor: Option<i32>,
    /// A __consumer_offsets partition larger than this (and mostly superseded records) is cleaned [default: 16777216]
    #[arg(long, env = "CHRONIK_OFFSETS_CLEANUP_BYTES")]
    pub offsets_cleanup_bytes: Option<u64>,
}

impl Settings {
    /// Fills what `self` (flags and environment) leaves unset from `file`.
    pub fn or(self, file: Settings) -> Settings {
        Settings {
            data_dir: self.data_dir.or(file.data_dir),
            kafka_listen: self.kafka_listen.or(file.kafka_listen),
            http_listen: self.http_listen.or(file.http_listen),
            rpc_listen: self.rpc_listen.or(file.rpc_listen),
            search_refresh_ms: self.search_refresh_ms.or(file.search_refresh_ms),
            advertised_host: self.advertised_host.or(file.advertised_host),
            node_id: self.node_id.or(file.node_id),
            controllers: self.controllers.or(file.controllers),
            cluster_id: self.cluster_id.or(file.cluster_id),
            broker_session_timeout_ms: self.broker_session_timeout_ms.or(file.broker_session_timeout_ms),
            replica_lag_time_max_ms: self.replica_lag_time_max_ms.or(file.replica_lag_time_max_ms),
            default_replication_factor: self.default_replication_factor.or(file.default_replication_factor),
            num_partitions: self.num_partitions.or(file.num_partitions),
            auto_create_topics: self.auto_create_topics.or(file.auto_create_topics),
            log_segment_bytes: self.log_segment_bytes.or(file.log_segment_bytes),
            log_roll_ms: self.log_roll_ms.or(file.log_roll_ms),
            log_retention_ms: self.log_retention_ms.or(file.log_retention_ms),
            log_retention_bytes: self.log_retention_bytes.or(file.log_retention_bytes),
            retention_check_interval_ms: self.retention_check_interval_ms.or(file.retention_check_interval_ms),
            flush_interval_ms: self.flush_interval_ms.or(file.flush_interval_ms),
            message_max_bytes: self.message_max_bytes.or(file.message_max_bytes),
            log_message_timestamp_before_max_ms: self.log_message_timestamp_before_max_ms.or(file.log_message_timestamp_before_max_ms),
            log_message_timestamp_after_max_ms: self.log_message_timestamp_after_max_ms.or(file.log_message_timestamp_after_max_ms),
            socket_request_max_bytes: self.socket_request_max_bytes.or(file.socket_request_max_bytes),
            group_initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms.or(file.group_initial_rebalance_delay_ms),
            group_min_session_timeout_ms: self.group_min_session_timeout_ms.or(file.group_min_session_timeout_ms),
            group_max_session_timeout_ms: self.group_max_session_timeout_ms.or(file.group_max_session_timeout_ms),
            group_max_size: self.group_max_size.or(file.group_max_size),
            group_consumer_session_timeout_ms: self.group_consumer_session_timeout_ms.or(file.group_consumer_session_timeout_ms),
            group_consumer_heartbeat_interval_ms: self.group_consumer_heartbeat_interval_ms.or(file.group_consumer_heartbeat_interval_ms),
            group_consumer_assignor: self.group_consumer_assignor.or(file.group_consumer_assignor),
            offsets_retention_minutes: self.offsets_retention_minutes.or(file.offsets_retention_minutes),
            offsets_topic_num_partitions: self.offsets_topic_num_partitions.or(file.offsets_topic_num_partitions),
            offsets_topic_replication_factor: self.offsets_topic_replication_factor.or(file.offsets_topic_replication_factor),
            offsets_cleanup_bytes: self.offsets_cleanup_bytes.or(file.offsets_cleanup_bytes),
        }
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Settings> {
        toml::from_str(text).context("invalid config file")
    }
}

/// A validated configuration, ready for [`crate::start`].
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub kafka_listen: SocketAddr,
    /// The search HTTP API's address; `None` when turned off.
    pub http_listen: Option<SocketAddr>,
    /// The gRPC admin service's address; `None` when turned off.
    pub rpc_listen: Option<SocketAddr>,
    /// The search index commit interval.
    pub search_refresh_ms: u64,
    /// The cluster, when this node is a member of a controller quorum.
    pub cluster: Option<ClusterConfig>,
    pub broker: BrokerConfig,
}

impl Config {
    pub fn from_settings(s: Settings) -> anyhow::Result<Config> {
        let defaults = BrokerConfig::default();
        let group = group_config(&s)?;
        let listen_text = s.kafka_listen.unwrap_or_else(|| "127.0.0.1:9092".into());
        let kafka_listen = listen_text
            .to_socket_addrs()
            .with_context(|| format!("kafka-listen '{listen_text}' is not a host:port address"))?
            .next()
            .with_context(|| format!("kafka-listen '{listen_text}' resolves to no address"))?;
        let http_listen = optional_address("http-listen", s.http_listen.as_deref().unwrap_or("127.0.0.1:8080"))?;
        let rpc_listen = optional_address("rpc-listen", s.rpc_listen.as_deref().unwrap_or("127.0.0.1:9093"))?;
        let search_refresh_ms = s.search_refresh_ms.unwrap_or(100);
        let node_id = s.node_id.unwrap_or(1);
        if node_id < 0 {
            bail!("node-id must be 0 or more, not {node_id}");
        }
        let num_partitions = s.num_partitions.unwrap_or(defaults.num_partitions);
        if num_partitions < 1 {
            bail!("num-partitions must be at least 1, not {num_partitions}");
        }
        let segment_bytes = s.log_segment_bytes.unwrap_or(defaults.log.segment_bytes);
        if !(1024..=i32::MAX as u64).contains(&segment_bytes) {
            bail!("log-segment-bytes must be between 1024 and {}, not {segment_bytes}", i32::MAX);
        }
        let roll_ms = s.log_roll_ms.unwrap_or(defaults.log.segment_ms);
        if roll_ms < 1 {
            bail!("log-roll-ms must be positive, not {roll_ms}");
        }
        let retention_ms = s.log_retention_ms.unwrap_or(defaults.log.retention_ms);
        let retention_bytes = s.log_retention_bytes.unwrap_or(defaults.log.retention_bytes);
        if retention_ms < -1 || retention_bytes < -1 {
            bail!("log-retention-ms and log-retention-bytes must be -1 (no limit) or more");
        }
        let message_max_bytes = s.message_max_bytes.unwrap_or(defaults.message_max_bytes);
        let socket_request_max_bytes = s.socket_request_max_bytes.unwrap_or(defaults.socket_request_max_bytes);
        if message_max_bytes < 1 || socket_request_max_bytes < 1024 {
            bail!("message-max-bytes must be positive and socket-request-max-bytes at least 1024");
        }
        if message_max_bytes > socket_request_max_bytes {
            bail!("message-max-bytes ({message_max_bytes}) cannot exceed socket-request-max-bytes ({socket_request_max_bytes})");
        }
        let before_max = s.log_message_timestamp_before_max_ms.unwrap_or(defaults.message_timestamp_before_max_ms);
        let after_max = s.log_message_timestamp_after_max_ms.unwrap_or(defaults.message_timestamp_after_max_ms);
        if before_max < 0 || after_max < 0 {
            bail!("log-message-timestamp-before-max-ms and -after-max-ms must be 0 or more");
        }
        let advertised_host = s.advertised_host.unwrap_or_else(|| {
            if kafka_listen.ip().is_unspecified() {
                "127.0.0.1".into()
            } else {
                kafka_listen.ip().to_string()
            }
        });
        let mut broker = BrokerConfig {
            node_id,
            cluster: s.controllers.is_some(),
            cluster_id: match &s.cluster_id {
                None => None,
                Some(_) if s.controllers.is_none() => bail!("--cluster-id names a cluster: it needs --controllers"),
                Some(id) if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {
                    bail!("--cluster-id must be 1 to 64 characters of a-z, A-Z, 0-9, '-' and '_', not '{id}'")
                }
                Some(id) => Some(id.clone()),
            },
            advertised_host,
            advertised_port: kafka_listen.port() as i32,
            num_partitions,
            auto_create_topics_enable: s.auto_create_topics.unwrap_or(defaults.auto_create_topics_enable),
            log: LogConfig {
                segment_bytes,
                segment_ms: roll_ms,
                retention_ms,
                retention_bytes,
                index_interval_bytes: defaults.log.index_interval_bytes,
            },
            message_max_bytes,
            socket_request_max_bytes,
            fetch_max_bytes: defaults.fetch_max_bytes,
            flush_interval_ms: s.flush_interval_ms.unwrap_or(defaults.flush_interval_ms),
            retention_check_interval_ms: s.retention_check_interval_ms.unwrap_or(defaults.retention_check_interval_ms).max(1),
            producer_id_expiration_ms: defaults.producer_id_expiration_ms,
            message_timestamp_before_max_ms: before_max,
            message_timestamp_after_max_ms: after_max,
            group,
            replica_lag_time_max_ms: s.replica_lag_time_max_ms.unwrap_or(defaults.replica_lag_time_max_ms).max(1),
            default_replication_factor: match s.default_replication_factor.unwrap_or(defaults.default_replication_factor) {
                rf if rf < 1 => bail!("--default-replication-factor must be at least 1, not {rf}"),
                rf => rf,
            },
        };
        let cluster = match &s.controllers {
            None => None,
            Some(text) => {
                let voters = parse_controllers(text)?;
                if !voters.contains_key(&node_id) {
                    bail!("node-id {node_id} is not among --controllers {text}: every broker must be a controller member for now");
                }
                let Some(rpc) = rpc_listen else {
                    bail!("--controllers needs --rpc-listen: cluster members talk over gRPC");
                };
                // Two processes with one node id would both vote as it: make a
                // wrong --node-id fail here, before it can.
                let listed = &voters[&node_id];
                let matches = listed
                    .to_socket_addrs()
                    .map(|mut addrs| addrs.any(|a| a.port() == rpc.port() && (a.ip() == rpc.ip() || rpc.ip().is_unspecified())))
                    .unwrap_or(false);
                if !matches {
                    bail!("--rpc-listen {rpc} is not this node's entry {node_id}@{listed} in --controllers: is --node-id {node_id} right?");
                }
                let session_timeout_ms = s.broker_session_timeout_ms.unwrap_or(9000);
                if session_timeout_ms < 100 {
                    bail!("broker-session-timeout-ms must be at least 100, not {session_timeout_ms}");
                }
                Some(ClusterConfig { voters, session_timeout_ms, heartbeat_interval_ms: (session_timeout_ms / 4).max(50) })
            }
        };
        if let Some(c) = &cluster {
            let members = c.voters.len() as i32;
            if s.offsets_topic_replication_factor.is_none() {
                // A smaller cluster than Kafka's default would never create it.
                broker.group.offsets_topic_replication_factor = broker.group.offsets_topic_replication_factor.min(members);
            } else if broker.group.offsets_topic_replication_factor > members {
                bail!(
                    "offsets-topic-replication-factor {} is more than the {members} members of --controllers: consumer groups would wait for ever",
                    broker.group.offsets_topic_replication_factor
                );
            }
        }
        Ok(Config { data_dir: s.data_dir.unwrap_or_else(|| PathBuf::from("data")), kafka_listen, http_listen, rpc_listen, search_refresh_ms, cluster, broker })
    }
}

/// How this node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The controller quorum's voters: node id to `host:port` of their gRPC services.
    pub voters: std::collections::BTreeMap<i32, String>,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
}

/// Parses `1@host:port,2@host:port,...`.
fn parse_controllers(text: &str) -> anyhow::Result<std::collections::BTreeMap<i32, String>> {
    let mut voters = std::collections::BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('@').with_context(|| format!("controllers: '{part}' is not id@host:port"))?;
        let id: i32 = id.trim().parse().with_context(|| format!("controllers: '{id}' in '{part}' is not a node id"))?;
        let addr = addr.trim();
        addr.to_socket_addrs().with_context(|| format!("controllers: '{addr}' in '{part}' is not a host:port address"))?;
        if voters.insert(id, addr.to_string()).is_some() {
            bail!("controllers: node id {id} is listed twice");
        }
    }
    if voters.is_empty() {
        bail!("controllers: no members given (expected id@host:port,...)");
    }
    Ok(voters)
}

/// A listen address, or `None` for "off".
fn optional_address(flag: &str, text: &str) -> anyhow::Result<Option<SocketAddr>> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let addr = text
        .to_socket_addrs()
        .with_context(|| format!("{flag} '{text}' is not a host:port address (or \"off\")"))?
        .next()
        .with_context(|| format!("{flag} '{text}' resolves to no address"))?;
    Ok(Some(addr))
}

fn group_config(s: &Settings) -> anyhow::Result<GroupConfig> {
    let d = GroupConfig::default();
    let g = GroupConfig {
        min_session_timeout_ms: s.group_min_session_timeout_ms.unwrap_or(d.min_session_timeout_ms),
        max_session_timeout_ms: s.group_max_session_timeout_ms.unwrap_or(d.max_session_timeout_ms),
        initial_rebalance_delay_ms: s.group_initial_rebalance_delay_ms.unwrap_or(d.initial_rebalance_delay_ms),
        max_size: s.group_max_size.unwrap_or(d.max_size),
        consumer_session_timeout_ms: s.group_consumer_session_timeout_ms.unwrap_or(d.consumer_session_timeout_ms),
        consumer_heartbeat_interval_ms: s.group_consumer_heartbeat_interval_ms.unwrap_or(d.consumer_heartbeat_interval_ms),
        consumer_max_size: d.consumer_max_size,
        consumer_default_assignor: s.group_consumer_assignor.clone().unwrap_or(d.consumer_default_assignor),
        offsets_retention_ms: s.offsets_retention_minutes.map(|m| m.saturating_mul(60_000)).unwrap_or(d.offsets_retention_ms),
        offset_metadata_max_bytes: d.offset_metadata_max_bytes,
        offsets_topic_partitions: s.offsets_topic_num_partitions.unwrap_or(d.offsets_topic_partitions),
        offsets_topic_replication_factor: s.offsets_topic_replication_factor.unwrap_or(d.offsets_topic_replication_factor),
        offsets_cleanup_bytes: s.offsets_cleanup_bytes.unwrap_or(d.offsets_cleanup_bytes),
    };
    if g.min_session_timeout_ms < 1 || g.min_session_timeout_ms > g.max_session_timeout_ms {
        bail!("group-min-session-timeout-ms ({}) must be positive and at most group-max-session-timeout-ms ({})", g.min_session_timeout_ms, g.max_session_timeout_ms);
    }
    if g.initial_rebalance_delay_ms < 0 {
        bail!("group-initial-rebalance-delay-ms must be 0 or more, not {}", g.initial_rebalance_delay_ms);
    }
    if g.max_size < 1 {
        bail!("group-max-size must be at least 1");
    }
    if g.consumer_session_timeout_ms < 1 || g.consumer_heartbeat_interval_ms < 1 || g.consumer_heartbeat_interval_ms >= g.consumer_session_timeout_ms {
        bail!("group-consumer-heartbeat-interval-ms must be positive and below group-consumer-session-timeout-ms");
    }
    if !chronik_core::group::ASSIGNORS.contains(&g.consumer_default_assignor.as_str()) {
        bail!("group-consumer-assignor must be one of {}, not '{}'", chronik_core::group::ASSIGNORS.join(", "), g.consumer_default_assignor);
    }
    if g.offsets_retention_ms < 60_000 {
        bail!("offsets-retention-minutes must be at least 1");
    }
    if g.offsets_cleanup_bytes < 1024 {
        bail!("offsets-cleanup-bytes must be at least 1024, not {}", g.offsets_cleanup_bytes);
    }
    if !(1..=i16::MAX as i32).contains(&g.offsets_topic_replication_factor) {
        bail!("offsets-topic-replication-factor must be between 1 and {}, not {}", i16::MAX, g.offsets_topic_replication_factor);
    }
    if !(1..=1000).contains(&g.offsets_topic_partitions) {
        bail!("offsets-topic-num-partitions must be between 1 and 1000, not {}", g.offsets_topic_partitions);
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_bad_values_are_named() {
        let file = Settings::from_toml("node_id = 7\nkafka_listen = \"127.0.0.1:1234\"\nlog_retention_ms = -1\n").unwrap();
        let flags = Settings { node_id: Some(3), ..Default::default() };
        let c = Config::from_settings(flags.or(file)).unwrap();
        assert_eq!(c.broker.node_id, 3);
        assert_eq!(c.kafka_listen.port(), 1234);
        assert_eq!(c.broker.log.retention_ms, -1);
        assert!(Settings::from_toml("no_such_setting = 1").unwrap_err().to_string().contains("invalid config"));
        let bad = Settings { kafka_listen: Some("nonsense".into()), ..Default::default() };
        assert!(Config::from_settings(bad).unwrap_err().to_string().contains("kafka-listen"));
        let bad = Settings { log_segment_bytes: Some(10), ..Default::default() };
        assert!(Config::from_settings(bad).unwrap_err().to_string().contains("log-segment-bytes"));
    }

    #[test]
    fn cluster_settings_are_checked() {
        let node = |id: i32, rpc: &str, controllers: &str| Settings {
            node_id: Some(id),
            rpc_listen: Some(rpc.into()),
            controllers: Some(controllers.into()),
            ..Default::default()
        };
        let list = "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103";
        let c = Config::from_settings(node(2, "127.0.0.1:9102", list)).unwrap().cluster.unwrap();
        assert_eq!(c.voters.len(), 3);
        assert!(Config::from_settings(node(2, "0.0.0.0:9102", list)).is_ok(), "listening on every address");
        let err = |s: Settings| Config::from_settings(s).unwrap_err().to_string();
        assert!(err(node(2, "127.0.0.1:9103", list)).contains("is --node-id 2 right?"));
        assert!(err(node(4, "127.0.0.1:9104", list)).contains("not among --controllers"));
        assert!(err(node(1, "127.0.0.1:9101", "1@127.0.0.1:9101,1@127.0.0.1:9102")).contains("listed twice"));
        assert!(err(node(1, "127.0.0.1:9101", "1@nowhere")).contains("not a host:port"));
        assert!(err(node(1, "off", "1@127.0.0.1:9101")).contains("needs --rpc-listen"));
        // A named cluster, and the offsets topic's default replication factor.
        let named = |id: &str| Settings { cluster_id: Some(id.into()), ..node(2, "127.0.0.1:9102", list) };
        let c = Config::from_settings(named("prod-eu_1")).unwrap();
        assert_eq!(c.broker.cluster_id.as_deref(), Some("prod-eu_1"));
        assert!(c.broker.cluster);
        assert_eq!(c.broker.group.offsets_topic_replication_factor, 3);
        assert!(err(named("a b")).contains("--cluster-id must be"));
        assert!(err(Settings { cluster_id: Some("x".into()), ..Default::default() }).contains("needs --controllers"));
        let two = Config::from_settings(node(1, "127.0.0.1:9101", "1@127.0.0.1:9101,2@127.0.0.1:9102")).unwrap();
        assert_eq!(two.broker.group.offsets_topic_replication_factor, 2, "at most the cluster's size");
        let rf = |n: i32| Settings { offsets_topic_replication_factor: Some(n), ..node(2, "127.0.0.1:9102", list) };
        assert_eq!(Config::from_settings(rf(2)).unwrap().broker.group.offsets_topic_replication_factor, 2);
        assert!(err(rf(4)).contains("more than the 3 members"));
        assert!(err(rf(65537)).contains("between 1 and 32767"));
    }
}
