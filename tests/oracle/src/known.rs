//! Differences from Apache Kafka that are understood and accepted, each with
//! its reason. DESIGN.md ("Apache Kafka as the oracle") carries the same list.
//! Patterns match `scenario/step:path`; `*` matches any run of characters.

pub const KNOWN: &[(&str, &str)] = &[
    (
        "api_versions/*:unimplemented.*",
        "APIs Chronik does not implement are not advertised (transactions, ACLs, SASL, quotas, share groups, \
         KRaft-internal and replica APIs, DeleteRecords, ...); DESIGN.md lists what is served",
    ),
    (
        "api_versions/*:key.Produce",
        "Kafka 4 advertises Produce v0-2 but refuses them (it keeps them listed for old librdkafka feature probes); \
         Chronik advertises v3-13, the versions it serves",
    ),
    (
        "api_versions/*:key.ListOffsets",
        "ListOffsets v11 is newer than the kafka-protocol 0.18 codec Chronik uses; clients negotiate v10",
    ),
    (
        "api_versions/*:key.OffsetCommit",
        "OffsetCommit v10 (topic ids) is newer than the kafka-protocol 0.18 codec; clients negotiate v9",
    ),
    (
        "api_versions/*:key.OffsetFetch",
        "OffsetFetch v10 (topic ids) is newer than the kafka-protocol 0.18 codec; clients negotiate v9",
    ),
    (
        "api_versions/*:*_features",
        "Chronik has no KRaft feature levels (metadata.version, group.version, ...) to report",
    ),
    (
        "metadata/auto_create.first",
        "Chronik creates an auto-created topic within the Metadata request and answers with it; \
         Kafka (KRaft) answers UNKNOWN_TOPIC_OR_PARTITION while its controller creates the topic, and the client asks again",
    ),
    (
        "create_topics/ok.configs:min.insync.replicas",
        "Kafka 4 stores min.insync.replicas as a cluster-wide dynamic default when it formats its storage \
         (source 3, DYNAMIC_DEFAULT_BROKER_CONFIG); Chronik has no dynamic broker configs, so its source is the default (5)",
    ),
    (
        "produce_idempotent/*_duplicate:*log_append_time_ms",
        "for a retried (duplicate) batch Kafka reports the batch's max timestamp as log_append_time_ms even on a \
         CreateTime topic; Chronik answers -1 as for the original append, so clients keep each record's own timestamp",
    ),
    (
        "produce_idempotent/behind_cache_retry:*error_code",
        "a retry of a batch older than the five cached ones, wholly within the written sequences: Kafka says \
         OUT_OF_ORDER_SEQUENCE_NUMBER (a Java producer then bumps its epoch and resends: a duplicate); Chronik says \
         DUPLICATE_SEQUENCE_NUMBER, which clients take as already written (DESIGN.md, 'Idempotent producers')",
    ),
    (
        "fetch/*:*partial_tail_bytes",
        "Kafka fills the byte limit with a file slice that may end in a partial batch, which clients drop; \
         Chronik sends only whole batches",
    ),
    (
        "describe_configs/*:unsupported_config.*",
        "configs of features Chronik does not have (KRaft quorum, tiered storage, compaction, quotas, SASL, \
         delegation tokens, share and streams groups, replication throttles, ...) are not described",
    ),
    (
        "describe_configs/topic.*:config.search.enabled.*",
        "search.enabled is Chronik's own topic config (search on the log); Kafka has no such config",
    ),
    (
        "describe_configs/topic.*:config.min.insync.replicas.source",
        "as for CreateTopics: Kafka 4 formats min.insync.replicas as a cluster-wide dynamic default",
    ),
    (
        "describe_configs/broker:config.min.insync.replicas.source",
        "as for CreateTopics: Kafka 4 formats min.insync.replicas as a cluster-wide dynamic default",
    ),
    (
        "alter_configs/unknown_op:responses[0].error_code",
        "an unknown IncrementalAlterConfigs operation is UNKNOWN_SERVER_ERROR in Kafka 4.3 (an exception it does \
         not map); Chronik answers INVALID_REQUEST, naming the operation",
    ),
    (
        "describe_configs/broker:config.*.read_only",
        "Chronik cannot change broker configs at run time (AlterConfigs and IncrementalAlterConfigs change \
         topic configs only), so it describes every broker config as read-only",
    ),
    (
        "describe_configs/broker:config.log.flush.interval.ms.value",
        "Kafka leaves log.flush.interval.ms unset (it never forces an fsync and relies on replication); \
         Chronik fsyncs before acknowledging and reports its group-commit window, 0 by default",
    ),
    (
        "describe_configs/broker:config.log.r*.ms.value",
        "Kafka leaves log.retention.ms and log.roll.ms unset in favour of log.retention.hours and log.roll.hours \
         (168); Chronik reports the same effective 7 days in milliseconds",
    ),
    (
        "consumer_group/join_empty_member_id:*",
        "Kafka 4.3 answers a new consumer-group member before computing its target assignment (it arrives with the \
         next heartbeat, at a higher epoch); Chronik assigns within the answer to the join. Epochs are opaque to clients",
    ),
    (
        "create_partitions/internal:*error_code",
        "Kafka lets clients add partitions to __consumer_offsets (its coordinator keeps placing groups by the \
         offsets.topic.num.partitions setting, so the new ones stay unused); Chronik places groups by the topic's \
         partition count, so it refuses the change (INVALID_REQUEST) rather than move groups away from their offsets",
    ),
    (
        "consumer_group/classic_join_on_consumer_group:*",
        "Kafka lets classic-protocol members join a consumer (KIP-848) group and migrates between the protocols \
         online; Chronik refuses a classic member while the group uses the consumer protocol (INCONSISTENT_GROUP_PROTOCOL)",
    ),
];

/// The index of the first pattern that explains the difference at `at`.
pub fn explain(at: &str) -> Option<usize> {
    KNOWN.iter().position(|(pattern, _)| glob(pattern, at))
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else { return false };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glob_matches_runs() {
        assert!(super::glob("a/*:x.*", "a/b.v3:x.y[1]"));
        assert!(super::glob("*", ""));
        assert!(!super::glob("a/*:x", "a/b:y"));
        assert!(super::glob("produce/*.v*:responses*error_code", "produce/ok.v3:responses[name=\"t\"].error_code"));
    }
}
