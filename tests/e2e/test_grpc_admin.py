"""The gRPC admin service (proto/proto/chronik/v1/admin.proto) through the
real binary, from Python's grpcio with stubs generated from the .proto at
test time: topics, configs, the cluster, groups and search, each checked
against what Kafka clients see, and every refusal's status code."""

import subprocess
import sys
import time

import grpc
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, ConfigResource

from conftest import REPO
from test_search import QUERIES, produce, wait_http, wait_searchable


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """The generated modules (admin_pb2, admin_pb2_grpc)."""
    out = tmp_path_factory.mktemp("grpc_stubs")
    proto_root = REPO / "proto" / "proto"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}", f"--python_out={out}",
                    f"--grpc_python_out={out}", "chronik/v1/admin.proto"], check=True, timeout=120)
    sys.path.insert(0, str(out))
    try:
        from chronik.v1 import admin_pb2, admin_pb2_grpc
    finally:
        sys.path.remove(str(out))
    return admin_pb2, admin_pb2_grpc


def admin_stub(pb, broker):
    _, pb_grpc = pb
    channel = grpc.insecure_channel(broker.rpc)
    grpc.channel_ready_future(channel).result(timeout=20)
    return pb_grpc.AdminStub(channel)


def refused(call, code):
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == code, (e.value.code(), e.value.details())
    assert e.value.details(), "a refusal names the problem"
    return e.value.details()


def test_topics_configs_and_cluster(pb, broker):
    m, _ = pb
    admin = admin_stub(pb, broker)
    cluster = admin.DescribeCluster(m.DescribeClusterRequest(), timeout=10)
    assert cluster.cluster_id and cluster.controller_id == 1
    assert [(b.node_id, b.kafka_port) for b in cluster.brokers] == [(1, broker.port)]

    req = m.CreateTopicRequest(name="grpc-t", partitions=3, configs={"retention.ms": "3600000"})
    r = admin.CreateTopic(req, timeout=10)
    assert r.created and r.topic.name == "grpc-t" and len(r.topic.partitions) == 3 and len(r.topic.topic_id) == 32
    assert r.topic.overrides == {"retention.ms": "3600000"} and r.topic.configs["retention.ms"] == "3600000"
    # Idempotent: the same call again succeeds without creating anything.
    assert not admin.CreateTopic(req, timeout=10).created
    refused(lambda: admin.CreateTopic(m.CreateTopicRequest(name="grpc-t", partitions=4), timeout=10), grpc.StatusCode.ALREADY_EXISTS)
    refused(lambda: admin.CreateTopic(m.CreateTopicRequest(name="bad name!"), timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
    refused(lambda: admin.CreateTopic(m.CreateTopicRequest(name="x", configs={"retention.ms": "soon"}), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT)
    refused(lambda: admin.CreateTopic(m.CreateTopicRequest(name="x", replication_factor=3), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT)
    assert not admin.CreateTopic(m.CreateTopicRequest(name="grpc-v", validate_only=True), timeout=10).topic.partitions

    # Kafka clients see the topic; the admin service sees what they produce.
    kafka = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert "grpc-t" in kafka.list_topics(timeout=10).topics and "grpc-v" not in kafka.list_topics(timeout=10).topics
    acked = produce(broker.bootstrap, "grpc-t", 0, 300)
    d = admin.DescribeTopics(m.DescribeTopicsRequest(names=["grpc-t"]), timeout=10).topics[0]
    per_partition = {}
    for p, _ in acked:
        per_partition[p] = per_partition.get(p, 0) + 1
    assert {p.partition: p.high_watermark for p in d.partitions} == {p: per_partition.get(p, 0) for p in range(3)}
    assert all(p.leader == 1 and list(p.isr) == [1] and not p.offline_reason for p in d.partitions)
    refused(lambda: admin.DescribeTopics(m.DescribeTopicsRequest(names=["nope"]), timeout=10), grpc.StatusCode.NOT_FOUND)

    # Config changes, seen by Kafka's DescribeConfigs.
    r = admin.AlterTopicConfigs(m.AlterTopicConfigsRequest(topic="grpc-t", set={"segment.ms": "600000"}, delete=["retention.ms"]), timeout=10)
    assert dict(r.overrides) == {"segment.ms": "600000"}
    entries = list(kafka.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "grpc-t")]).values())[0].result(timeout=10)
    assert entries["segment.ms"].value == "600000" and entries["retention.ms"].is_default
    r = admin.AlterTopicConfigs(m.AlterTopicConfigsRequest(topic="grpc-t", set={"retention.ms": "1"}, validate_only=True), timeout=10)
    assert dict(r.overrides) == {"segment.ms": "600000", "retention.ms": "1"}
    assert "retention.ms" not in admin.DescribeTopics(m.DescribeTopicsRequest(names=["grpc-t"]), timeout=10).topics[0].overrides
    why = refused(lambda: admin.AlterTopicConfigs(m.AlterTopicConfigsRequest(topic="grpc-t", set={"retention.ms": "soon"}), timeout=10),
                  grpc.StatusCode.INVALID_ARGUMENT)
    assert "retention.ms" in why
    refused(lambda: admin.AlterTopicConfigs(m.AlterTopicConfigsRequest(topic="grpc-t", set={"no.such": "1"}), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT)
    refused(lambda: admin.AlterTopicConfigs(m.AlterTopicConfigsRequest(topic="nope", set={"retention.ms": "1"}), timeout=10),
            grpc.StatusCode.NOT_FOUND)
    refused(lambda: admin.AlterTopicConfigs(m.AlterTopicConfigsRequest(topic="grpc-t", set={"segment.ms": "1000"}, delete=["segment.ms"]),
                                            timeout=10), grpc.StatusCode.INVALID_ARGUMENT)

    # Groups, as a Kafka consumer made them.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "grpc-group", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    try:
        c.subscribe(["grpc-t"])
        got, deadline = 0, time.monotonic() + 30
        while got < 10 and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                got += 1
        assert got >= 10
        c.commit(asynchronous=False)
        groups = admin.ListGroups(m.ListGroupsRequest(), timeout=10).groups
        assert [(g.group_id, g.protocol_type, g.state, g.type) for g in groups] == [("grpc-group", "consumer", "Stable", "classic")]
        assert not admin.ListGroups(m.ListGroupsRequest(states=["Empty"]), timeout=10).groups
    finally:
        c.close()
    assert [g.state for g in admin.ListGroups(m.ListGroupsRequest(states=["empty"]), timeout=10).groups] == ["Empty"]

    # Deleting: once, then NOT_FOUND unless allow_missing; internal topics never.
    assert admin.DeleteTopic(m.DeleteTopicRequest(name="grpc-t"), timeout=10).deleted
    refused(lambda: admin.DeleteTopic(m.DeleteTopicRequest(name="grpc-t"), timeout=10), grpc.StatusCode.NOT_FOUND)
    assert not admin.DeleteTopic(m.DeleteTopicRequest(name="grpc-t", allow_missing=True), timeout=10).deleted
    assert "grpc-t" not in kafka.list_topics(timeout=10).topics
    internal = [t.name for t in admin.DescribeTopics(m.DescribeTopicsRequest(include_internal=True), timeout=10).topics]
    assert internal == ["__consumer_offsets"]
    refused(lambda: admin.DeleteTopic(m.DeleteTopicRequest(name="__consumer_offsets"), timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
    assert "panicked at" not in broker.log_text()


def grpc_hits(admin, m, topic, q):
    r = admin.Search(m.SearchRequest(topic=topic, query=q, limit=10000, sort="offset", order="asc"), timeout=30)
    got = [(h.partition, h.offset) for h in r.hits]
    assert len(got) == r.total, f"{q}: total {r.total} but {len(got)} hits"
    return got


def test_search_through_grpc_matches_ground_truth_after_kill9(pb, broker):
    m, _ = pb
    admin = admin_stub(pb, broker)
    topic = "grpc-search"
    admin.CreateTopic(m.CreateTopicRequest(name=topic, partitions=3, configs={"search.enabled": "true"}), timeout=10)
    wait_http(broker)
    acked = produce(broker.bootstrap, topic, 0, 1500)
    wait_searchable(broker, topic, 1500)

    def check():
        for q, pred in QUERIES:
            want = sorted(pos for pos, (i, r) in acked.items() if pred(i, r, *pos))
            assert sorted(grpc_hits(admin, m, topic, q)) == want, q

    check()
    # A hit is the record itself.
    r = admin.Search(m.SearchRequest(topic=topic, query="key-42"), timeout=10)
    h = r.hits[0]
    (p, o), = [pos for pos, (i, _) in acked.items() if i == 42]
    assert (h.partition, h.offset, h.key) == (p, o, b"key-42") and h.score > 0
    assert [(x.key, x.value) for x in h.headers] == [("src", b"svc-0")]
    # Pages, time and partition filters.
    first = admin.Search(m.SearchRequest(topic=topic, query="level:error", limit=5, sort="offset"), timeout=10)
    second = admin.Search(m.SearchRequest(topic=topic, query="level:error", limit=5, sort="offset", **{"from": 5}), timeout=10)
    assert len(first.hits) == 5 and len(second.hits) == 5 and first.total == second.total
    assert not {(x.partition, x.offset) for x in first.hits} & {(x.partition, x.offset) for x in second.hits}
    only1 = admin.Search(m.SearchRequest(topic=topic, query="*", partitions=[1], limit=10000), timeout=10)
    assert {x.partition for x in only1.hits} == {1} and only1.total == sum(1 for (pp, _) in acked if pp == 1)
    none = admin.Search(m.SearchRequest(topic=topic, query="*", to_ts=0), timeout=10)
    assert none.total == 0

    # Refusals.
    refused(lambda: admin.Search(m.SearchRequest(topic="nope", query="x"), timeout=10), grpc.StatusCode.NOT_FOUND)
    refused(lambda: admin.Search(m.SearchRequest(topic=topic, query="level:("), timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
    admin.CreateTopic(m.CreateTopicRequest(name="grpc-plain", partitions=1), timeout=10)
    refused(lambda: admin.Search(m.SearchRequest(topic="grpc-plain", query="x"), timeout=10), grpc.StatusCode.FAILED_PRECONDITION)
    refused(lambda: admin.RebuildSearchIndex(m.RebuildSearchIndexRequest(topic="grpc-plain"), timeout=10),
            grpc.StatusCode.FAILED_PRECONDITION)
    refused(lambda: admin.RebuildSearchIndex(m.RebuildSearchIndexRequest(topic="nope"), timeout=10), grpc.StatusCode.NOT_FOUND)
    admin.RebuildSearchIndex(m.RebuildSearchIndexRequest(topic=topic), timeout=10)
    time.sleep(0.5)  # the indexer takes the request at its next pass (every --search-refresh-ms)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and admin.Search(m.SearchRequest(topic=topic, query="*", limit=0), timeout=10).total != 1500:
        time.sleep(0.1)
    check()

    broker.kill9()
    broker.start()
    admin = admin_stub(pb, broker)
    wait_searchable(broker, topic, 1500)
    check()
    assert "panicked at" not in broker.log_text()
