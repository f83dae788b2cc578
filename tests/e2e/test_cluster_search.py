"""Search across a 3-node cluster, through real processes: a topic whose
partitions are spread over the brokers (replication factor 1, so each broker
holds only some of them) is searched from every broker with the same
answers, checked against ground truth computed from what was produced; pages
merge across brokers in sort order; the Elasticsearch `_shards` header, the
gRPC admin `Search` and a rebuild cover the whole cluster; a live
subscription on one broker delivers matches from every partition. With a
broker killed, searches answer with the partitions still reachable and name
the ones that are not, and a live subscription that loses a broker says so
and ends."""

import time
import urllib.parse

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from e2e_util import Listener
from test_grpc_admin import admin_stub, pb  # noqa: F401  (pb is a fixture)
from test_replication import bootstrap, start_cluster, wait_state
from test_search import QUERIES, http_json, produce, search_all, wait_http

PARTITIONS = 6
N = 1200
WAIT_S = 30


def wait_count(node, topic, n):
    deadline = time.monotonic() + WAIT_S
    count = None
    while time.monotonic() < deadline:
        status, r = http_json(f"{node.http}/{topic}/_count")
        count = r.get("count") if status == 200 else r
        if count == n:
            return
        time.sleep(0.1)
    raise AssertionError(f"broker {node.node_id}: {count} of {n} records searchable after {WAIT_S}s")


def spread_topic(nodes, name):
    """A search-enabled topic with one replica per partition, on every broker."""
    admin = AdminClient({"bootstrap.servers": bootstrap(nodes)})
    assignment = [[1 + p % 3] for p in range(PARTITIONS)]
    deadline = time.monotonic() + WAIT_S
    while True:
        # Refused until every broker has registered.
        new = NewTopic(name, num_partitions=PARTITIONS, replica_assignment=assignment, config={"search.enabled": "true"})
        try:
            admin.create_topics([new], operation_timeout=10)[name].result(timeout=30)
            break
        except KafkaException as e:
            if time.monotonic() > deadline:
                raise
            print(f"create {name}: {e}; retrying")
            time.sleep(0.5)
    state = wait_state(nodes, name, lambda s: len(s) == PARTITIONS and all(l > 0 for l, _ in s.values()), f"leaders of {name}")
    leaders = {p: leader for p, (leader, _) in state.items()}
    assert set(leaders.values()) == {1, 2, 3}, f"partitions not spread over the brokers: {leaders}"
    return leaders


def test_a_search_on_any_broker_covers_every_partition(cluster_factory, pb):  # noqa: F811
    m, _ = pb
    nodes = start_cluster(cluster_factory)
    for n in nodes:
        wait_http(n)
    leaders = spread_topic(nodes, "cs")
    acked = produce(bootstrap(nodes), "cs", 0, N)
    assert {p for p, _ in acked} == set(range(PARTITIONS))
    for n in nodes:
        wait_count(n, "cs", N)

    # Ground truth, from every broker: the same hits, whichever it is.
    for q, pred in QUERIES:
        want = sorted(pos for pos, (i, r) in acked.items() if pred(i, r, *pos))
        answers = [search_all(n, "cs", q) for n in nodes]
        assert sorted(answers[0]) == want, f"{q}: {len(answers[0])} hits, expected {len(want)}"
        assert answers[1] == answers[0] and answers[2] == answers[0], f"{q}: brokers disagree"

    # Pages merge across brokers in sort order, and _shards counts partitions.
    body = {"query": {"match": {"level": "error"}}, "size": 1000, "sort": [{"timestamp": "desc"}, {"offset": "asc"}]}
    status, whole = http_json(f"{nodes[0].http}/cs/_search", body)
    assert status == 200, whole
    assert whole["_shards"] == {"total": PARTITIONS, "successful": PARTITIONS, "skipped": 0, "failed": 0}
    ids = [h["_id"] for h in whole["hits"]["hits"]]
    assert len(ids) == whole["hits"]["total"]["value"] == sum(1 for _, r in acked.values() if r["level"] == "error")
    for n in nodes:
        paged = []
        for start in range(0, len(ids), 70):
            status, page = http_json(f"{n.http}/cs/_search", {**body, "from": start, "size": 70})
            assert status == 200, page
            paged += [h["_id"] for h in page["hits"]["hits"]]
        assert paged == ids, f"broker {n.node_id}: pages differ from the whole"
        status, count = http_json(f"{n.http}/cs/_count", {"query": {"match": {"level": "error"}}})
        assert (status, count["count"], count["_shards"]["total"]) == (200, len(ids), PARTITIONS)

    # The gRPC admin service searches the cluster too.
    answer = admin_stub(pb, nodes[1]).Search(m.SearchRequest(topic="cs", query="level:error", limit=10000, sort="offset"), timeout=30)
    assert answer.total == len(ids) and answer.partitions == PARTITIONS and not answer.failures
    assert sorted((h.partition, h.offset) for h in answer.hits) == sorted(search_all(nodes[0], "cs", "level:error"))

    # A rebuild reaches every broker, and the indexes come back whole.
    status, r = http_json(f"{nodes[2].http}/topics/cs/search/_rebuild", b"", method="POST")
    assert (status, sorted(r["brokers"])) == (202, [1, 2, 3]), r
    time.sleep(0.5)  # each indexer takes the request at its next pass (every --search-refresh-ms)
    for n in nodes:
        wait_count(n, "cs", N)

    # Broker 3 killed: its partitions cannot be searched (one replica each);
    # the others answer, and the failed ones are named.
    nodes[2].kill9()
    lost = sorted(p for p, leader in leaders.items() if leader == 3)
    want = sorted(pos for pos, (i, r) in acked.items() if r["level"] == "error" and pos[0] not in lost)
    # (Polled: the rebuild above may still be re-indexing a partition.)
    deadline = time.monotonic() + WAIT_S
    while True:
        status, r = http_json(f"{nodes[0].http}/cs/_search", {**body, "size": 10000})
        assert status == 200, r
        got = sorted((h["_chronik"]["partition"], h["_chronik"]["offset"]) for h in r["hits"]["hits"])
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r["_shards"]["failed"] == len(lost) and sorted(f["shard"] for f in r["_shards"]["failures"]) == lost, r["_shards"]
    assert got == want, f"{len(got)} hits, expected {len(want)}"
    status, r = http_json(f"{nodes[1].http}/topics/cs/search?q=level:error&limit=10000")
    assert status == 200 and sorted(f["partition"] for f in r["partitions"]["failed"]) == lost, r.get("partitions")


def test_a_live_subscription_on_one_broker_follows_every_partition(cluster_factory):
    nodes = start_cluster(cluster_factory)
    for n in nodes:
        wait_http(n)
    leaders = spread_topic(nodes, "cl")
    produce(bootstrap(nodes), "cl", 0, 200)  # before the subscription: never delivered
    url = f"{nodes[0].http}/topics/cl/search/stream?" + urllib.parse.urlencode({"q": "level:error"})
    listener = Listener(url, timeout_s=WAIT_S * 2)
    assert listener.ready.wait(WAIT_S), "no 'subscribed' event"
    started = listener.named("subscribed")[0]["from"]
    assert sorted(int(p) for p in started) == list(range(PARTITIONS)), started
    after = produce(bootstrap(nodes), "cl", 200, 600)
    want = {pos for pos, (i, r) in after.items() if r["level"] == "error"}
    assert {p for p, _ in want} == set(range(PARTITIONS))
    got = listener.wait_hits(want, WAIT_S)
    assert len(got) == len(set(got)), "a record was delivered twice"
    assert set(got) == want, f"missing {sorted(want - set(got))[:5]}, extra {sorted(set(got) - want)[:5]}"
    assert not listener.named("partial") and not listener.named("error")

    # A broker holding some partitions dies: the subscriber is told which
    # partitions it stopped hearing from, and the stream ends.
    victim = next(n for n in nodes[1:] if n.node_id in leaders.values())
    victim.kill9()
    assert listener.ended.wait(WAIT_S), "the stream went on after losing a broker"
    errors = listener.named("error")
    assert errors and sorted(f["partition"] for f in errors[0]["failed"]) == sorted(p for p, l in leaders.items() if l == victim.node_id), errors
