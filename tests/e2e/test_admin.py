"""Topic administration and offsets through real clients: confluent-kafka's
AdminClient (CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
Metadata, ListOffsets), the Consumer's watermark/offsets_for_times calls and
kafka-python's offset lookups."""

import pytest
from confluent_kafka import (Consumer, KafkaError, KafkaException, TopicCollection,
                             TopicPartition)
from confluent_kafka.admin import (ConfigResource, NewPartitions, NewTopic, OffsetSpec,
                                   ResourceType)
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from e2e_util import (BASE_TS_MS, Rec, admin, consume_range, consumer_conf, create_topic,
                      kafka_error_code, produce_confluent, production_producer_conf,
                      verify_topic, wait_until, watermarks)

T = 30  # seconds for any single admin call


def create_error(a, new_topic, **kw):
    """Run one CreateTopics and return the KafkaError code (None = created)."""
    fs = a.create_topics([new_topic], operation_timeout=T, request_timeout=T, **kw)
    try:
        fs[new_topic.topic].result(timeout=T)
        return None
    except KafkaException as e:
        return kafka_error_code(e)


def topic_partitions(a, name):
    """Partition count of `name` from a full Metadata request (which never
    auto-creates), or None when the topic is not listed."""
    md = a.list_topics(timeout=T)
    t = md.topics.get(name)
    return None if t is None else len(t.partitions)


def test_create_topic_errors(broker):
    a = admin(broker.bootstrap)
    assert create_error(a, NewTopic("dup", 3, 1)) is None
    assert create_error(a, NewTopic("dup", 3, 1)) == KafkaError.TOPIC_ALREADY_EXISTS
    assert create_error(a, NewTopic("dup", 5, 1)) == KafkaError.TOPIC_ALREADY_EXISTS
    assert topic_partitions(a, "dup") == 3

    # Kafka's topic name rules: [a-zA-Z0-9._-], at most 249 chars, not "." or "..".
    for bad in ["bad/name", "..", "x" * 250, "space name"]:
        code = create_error(a, NewTopic(bad, 1, 1))
        assert code == KafkaError.TOPIC_EXCEPTION, (
            f"create_topics({bad!r:.40}) gave {code}, expected INVALID_TOPIC_EXCEPTION (17)")
        assert bad not in a.list_topics(timeout=T).topics

    assert create_error(a, NewTopic("zero-parts", 0, 1)) == KafkaError.INVALID_PARTITIONS
    assert create_error(a, NewTopic("rf3", 1, 3)) == KafkaError.INVALID_REPLICATION_FACTOR
    # Configs Chronik does not implement are refused, not ignored.
    assert create_error(a, NewTopic("compacted", 1, 1,
                                    config={"cleanup.policy": "compact"})) == \
        KafkaError.INVALID_CONFIG
    assert create_error(a, NewTopic("bad-retention", 1, 1,
                                    config={"retention.ms": "not-a-number"})) == \
        KafkaError.INVALID_CONFIG
    for name in ["zero-parts", "rf3", "compacted", "bad-retention"]:
        assert topic_partitions(a, name) is None, f"{name} was created despite the error"

    # validate_only checks but does not create.
    assert create_error(a, NewTopic("validate-only", 2, 1), validate_only=True) is None
    assert topic_partitions(a, "validate-only") is None


def test_list_topics_metadata(broker):
    a = admin(broker.bootstrap)
    create_topic(broker.bootstrap, "meta-a", 4)
    create_topic(broker.bootstrap, "meta-b", 1)
    md = a.list_topics(timeout=T)
    assert md.cluster_id, "no cluster id in Metadata"
    assert md.controller_id == 1
    assert list(md.brokers) == [1]
    b = md.brokers[1]
    assert (b.host, b.port) == ("127.0.0.1", broker.port)
    for name, n in [("meta-a", 4), ("meta-b", 1)]:
        t = md.topics[name]
        assert t.error is None
        assert sorted(t.partitions) == list(range(n))
        for p in t.partitions.values():
            assert p.error is None
            assert (p.leader, list(p.replicas), list(p.isrs)) == (1, [1], [1])
    # describe_topics (Metadata by name, newer versions) agrees.
    fs = a.describe_topics(TopicCollection(["meta-a"]),
                           request_timeout=T)
    desc = fs["meta-a"].result(timeout=T)
    assert len(desc.partitions) == 4


def test_auto_create_on_metadata(broker):
    """Producing to an unknown topic creates it with num.partitions (1)."""
    recs = [Rec(f"k{i}".encode(), f"auto-{i}".encode(), (), BASE_TS_MS + i)
            for i in range(100)]
    res = produce_confluent(production_producer_conf(broker.bootstrap), "auto-created", recs)
    assert not res.failed and len(res.acked) == 100
    assert topic_partitions(admin(broker.bootstrap), "auto-created") == 1
    verify_topic(broker.bootstrap, "auto-created", 1, res.acked)


def _produce_timed(bootstrap, topic, n, partition=0, step_ms=10):
    recs = [Rec(f"k{i}".encode(), f"timed-{i}".encode(), (), BASE_TS_MS + i * step_ms)
            for i in range(n)]
    res = produce_confluent(production_producer_conf(bootstrap), topic, recs,
                            partition=partition)
    assert not res.failed and len(res.acked) == n
    return res


def test_list_offsets(broker):
    topic = "offsets"
    create_topic(broker.bootstrap, topic, 2)
    n = 100
    _produce_timed(broker.bootstrap, topic, n, partition=0)

    # Consumer.get_watermark_offsets: ListOffsets earliest + latest.
    assert watermarks(broker.bootstrap, topic, [0, 1]) == {0: (0, n), 1: (0, 0)}

    # Consumer.offsets_for_times: ListOffsets by timestamp.
    c = Consumer(consumer_conf(broker.bootstrap))
    try:
        def lookup(ts, p=0):
            [r] = c.offsets_for_times([TopicPartition(topic, p, ts)], timeout=T)
            assert r.error is None, r.error
            return r.offset
        assert lookup(BASE_TS_MS - 1000) == 0
        assert lookup(BASE_TS_MS) == 0
        assert lookup(BASE_TS_MS + 505) == 51   # first record with ts >= t
        assert lookup(BASE_TS_MS + 510) == 51
        assert lookup(BASE_TS_MS + (n - 1) * 10) == n - 1
        # No record at or after t: Kafka answers offset -1 (OFFSET_END).
        assert lookup(BASE_TS_MS + n * 10 + 1) == -1
        assert lookup(BASE_TS_MS, p=1) == -1
    finally:
        c.close()

    # AdminClient.list_offsets: earliest, latest, max_timestamp, for_timestamp.
    a = admin(broker.bootstrap)
    tp0 = TopicPartition(topic, 0)
    for spec, want in [(OffsetSpec.earliest(), 0), (OffsetSpec.latest(), n),
                       (OffsetSpec.max_timestamp(), n - 1),
                       (OffsetSpec.for_timestamp(BASE_TS_MS + 250), 25)]:
        fs = a.list_offsets({tp0: spec}, request_timeout=T)
        info = fs[tp0].result(timeout=T)
        assert info.offset == want, f"list_offsets {spec}: {info.offset}, expected {want}"
        if isinstance(spec, type(OffsetSpec.max_timestamp())):
            assert info.timestamp == BASE_TS_MS + (n - 1) * 10

    # kafka-python's ListOffsets implementation agrees.
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                       enable_auto_commit=False, request_timeout_ms=T * 1000)
    try:
        ktp = KpTopicPartition(topic, 0)
        assert kc.beginning_offsets([ktp], timeout_ms=T * 1000) == {ktp: 0}
        assert kc.end_offsets([ktp], timeout_ms=T * 1000) == {ktp: n}
        r = kc.offsets_for_times({ktp: BASE_TS_MS + 505}, timeout_ms=T * 1000)[ktp]
        assert (r.offset, r.timestamp) == (51, BASE_TS_MS + 510)
    finally:
        kc.close()


def test_delete_topics(broker):
    a = admin(broker.bootstrap)
    create_topic(broker.bootstrap, "doomed", 2)
    _produce_timed(broker.bootstrap, "doomed", 50, partition=1)
    assert topic_partitions(a, "doomed") == 2

    fs = a.delete_topics(["doomed"], operation_timeout=T, request_timeout=T)
    fs["doomed"].result(timeout=T)
    wait_until(lambda: topic_partitions(a, "doomed") is None, timeout=T,
               what="the deleted topic to leave Metadata")

    # Deleting it again: UNKNOWN_TOPIC_OR_PARTITION.
    fs = a.delete_topics(["doomed"], operation_timeout=T, request_timeout=T)
    with pytest.raises(KafkaException) as ei:
        fs["doomed"].result(timeout=T)
    assert kafka_error_code(ei.value) == KafkaError.UNKNOWN_TOPIC_OR_PART

    # Re-created under the same name it starts empty, also after a restart.
    create_topic(broker.bootstrap, "doomed", 1)
    assert watermarks(broker.bootstrap, "doomed", [0]) == {0: (0, 0)}
    broker.restart()
    assert topic_partitions(a, "doomed") == 1
    assert watermarks(broker.bootstrap, "doomed", [0]) == {0: (0, 0)}


def test_create_partitions(broker):
    a = admin(broker.bootstrap)
    topic = "growing"
    create_topic(broker.bootstrap, topic, 3)
    fs = a.create_partitions([NewPartitions(topic, 5)], operation_timeout=T,
                             request_timeout=T)
    fs[topic].result(timeout=T)
    wait_until(lambda: topic_partitions(a, topic) == 5, timeout=T,
               what="5 partitions in Metadata")

    # The new partitions take data.
    res = _produce_timed(broker.bootstrap, topic, 20, partition=4)
    assert {p for (p, _o) in res.acked} == {4}
    got = consume_range(broker.bootstrap, topic, {4: 20})
    assert [m.offset for m in got[4]] == list(range(20))

    # Shrinking is refused.
    fs = a.create_partitions([NewPartitions(topic, 2)], operation_timeout=T,
                             request_timeout=T)
    with pytest.raises(KafkaException) as ei:
        fs[topic].result(timeout=T)
    assert kafka_error_code(ei.value) == KafkaError.INVALID_PARTITIONS
    # Unknown topic.
    fs = a.create_partitions([NewPartitions("no-such-topic", 2)], operation_timeout=T,
                             request_timeout=T)
    with pytest.raises(KafkaException) as ei:
        fs["no-such-topic"].result(timeout=T)
    assert kafka_error_code(ei.value) == KafkaError.UNKNOWN_TOPIC_OR_PART

    # The count survives a restart.
    broker.restart()
    assert topic_partitions(a, topic) == 5


def test_describe_configs(broker):
    a = admin(broker.bootstrap)
    create_topic(broker.bootstrap, "configured", 1,
                 config={"retention.ms": "3600000", "max.message.bytes": "2097152"})
    create_topic(broker.bootstrap, "plain", 1)

    def describe(name):
        res = ConfigResource(ResourceType.TOPIC, name)
        fs = a.describe_configs([res], request_timeout=T)
        return fs[res].result(timeout=T)

    cfg = describe("configured")
    for key in ["retention.ms", "retention.bytes", "segment.bytes", "cleanup.policy",
                "max.message.bytes", "min.insync.replicas"]:
        assert key in cfg, f"describe_configs lacks {key}: has {sorted(cfg)}"
    assert cfg["retention.ms"].value == "3600000"
    assert not cfg["retention.ms"].is_default
    assert cfg["max.message.bytes"].value == "2097152"
    assert cfg["cleanup.policy"].value == "delete"

    plain = describe("plain")
    assert plain["retention.ms"].value == "604800000"  # broker default: 7 days
    assert plain["retention.ms"].value != cfg["retention.ms"].value

    # Overrides persist across a restart.
    broker.restart()
    assert describe("configured")["retention.ms"].value == "3600000"

    # An unknown topic is an error, not an empty answer.
    res = ConfigResource(ResourceType.TOPIC, "no-such-topic")
    fs = a.describe_configs([res], request_timeout=T)
    with pytest.raises(KafkaException) as ei:
        fs[res].result(timeout=T)
    assert kafka_error_code(ei.value) == KafkaError.UNKNOWN_TOPIC_OR_PART
