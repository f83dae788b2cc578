"""Search on the log through the real binary: ground truth for every query
type (the expected (partition, offset) sets are computed here from what was
produced), the same answers after kill -9 and restart with no missing or
duplicate hits, the Elasticsearch Python client against the ES-compatible
endpoint, live subscriptions over server-sent events, the `chronik search`
command, and bad input answered 400/404 with an Elasticsearch-style body."""

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from confluent_kafka import Producer

from conftest import chronik_bin
from e2e_util import Listener, create_topic

PARTITIONS = 3
N = 3000
LEVELS = ["info", "warn", "error", "debug"]
WORDS = ["disk", "full", "network", "timeout", "login", "failed", "retry", "queue"]
FRESH_S = 15


def http_json(url, body=None, method=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method,
                                 headers=headers or ({"Content-Type": "application/json"} if data else {}))
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def wait_http(broker):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if http_json(broker.http + "/")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"search API not up at {broker.http}")


def record(i):
    words = [WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 3)]
    return {"level": LEVELS[i % 4], "msg": f"job {i} " + " ".join(words),
            "user": {"id": i % 25, "name": WORDS[i % len(WORDS)]}, "latency": (i % 200) / 2,
            **({"tag": "rare"} if i % 97 == 0 else {})}


def produce(bootstrap, topic, start, n):
    """Returns {(partition, offset): (i, record)}."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    acked, errors = {}, []

    def report(i, rec):
        def cb(err, msg):
            if err:
                errors.append(err)
            else:
                acked[(msg.partition(), msg.offset())] = (i, rec)
        return cb

    for i in range(start, start + n):
        rec = record(i)
        p.produce(topic, key=f"key-{i}", value=json.dumps(rec), headers=[("src", b"svc-%d" % (i % 3))],
                  on_delivery=report(i, rec))
        p.poll(0)
    assert p.flush(60) == 0 and not errors, errors[:3]
    return acked


def search_all(broker, topic, q):
    """Every hit of `q` through the simple API, paging by offset."""
    status, r = http_json(f"{broker.http}/topics/{topic}/search?" + urllib.parse.urlencode(
        {"q": q, "limit": 10000, "sort": "offset", "order": "asc"}))
    assert status == 200, r
    got = [(h["partition"], h["offset"]) for h in r["hits"]]
    assert len(got) == r["total"], f"{q}: total {r['total']} but {len(got)} hits"
    return got


def wait_searchable(broker, topic, n):
    deadline = time.monotonic() + FRESH_S
    count = None
    while time.monotonic() < deadline:
        count = http_json(f"{broker.http}/{topic}/_count")[1].get("count")
        if count == n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} of {n} records searchable after {FRESH_S}s")


# (query string, predicate on (i, record, partition, offset))
QUERIES = [
    ("level:error", lambda i, r, p, o: r["level"] == "error"),
    ("user.id:7", lambda i, r, p, o: r["user"]["id"] == 7),
    ("level:warn AND user.id:3", lambda i, r, p, o: r["level"] == "warn" and r["user"]["id"] == 3),
    ("\"disk full\"", lambda i, r, p, o: "disk full" in r["msg"]),
    ("msg:timeout -level:info", lambda i, r, p, o: "timeout" in r["msg"].split() and r["level"] != "info"),
    ("latency:[10 TO 20]", lambda i, r, p, o: 10 <= r["latency"] <= 20),
    ("user.id:{20 TO *]", lambda i, r, p, o: r["user"]["id"] > 20),
    ("tag:*", lambda i, r, p, o: "tag" in r),
    ("offset:[5 TO 9]", lambda i, r, p, o: 5 <= o <= 9),
    ("key-42", lambda i, r, p, o: i == 42),
    ("headers.src:svc AND headers.src:2", lambda i, r, p, o: i % 3 == 2),
    ("queue OR retry", lambda i, r, p, o: bool({"queue", "retry"} & set(re.findall(r"[a-z0-9]+", json.dumps(r).lower())))),
]


def check_ground_truth(broker, topic, acked):
    for q, pred in QUERIES:
        want = sorted(pos for pos, (i, r) in acked.items() if pred(i, r, *pos))
        got = search_all(broker, topic, q)
        assert len(got) == len(set(got)), f"{q}: duplicate hits"
        assert sorted(got) == want, f"{q}: {len(got)} hits, expected {len(want)}; " \
                                    f"missing {sorted(set(want) - set(got))[:5]}, extra {sorted(set(got) - set(want))[:5]}"
        assert want, f"{q} should match something"


def test_search_ground_truth_survives_kill9(broker):
    topic = "search-truth"
    create_topic(broker.bootstrap, topic, PARTITIONS, {"search.enabled": "true"})
    wait_http(broker)
    acked = produce(broker.bootstrap, topic, 0, N)
    wait_searchable(broker, topic, N)
    check_ground_truth(broker, topic, acked)
    # Hits are the records themselves.
    status, r = http_json(f"{broker.http}/topics/{topic}/search?q=key-42")
    (p, o), = [pos for pos, (i, _) in acked.items() if i == 42]
    assert r["hits"][0]["partition"] == p and r["hits"][0]["offset"] == o and r["hits"][0]["key"] == "key-42"
    assert r["hits"][0]["value"] == record(42) and r["hits"][0]["headers"] == {"src": "svc-0"}

    broker.kill9()
    broker.start()
    wait_http(broker)
    wait_searchable(broker, topic, N)
    check_ground_truth(broker, topic, acked)
    # Indexing goes on after the restart.
    acked.update(produce(broker.bootstrap, topic, N, 500))
    wait_searchable(broker, topic, N + 500)
    check_ground_truth(broker, topic, acked)


def test_elasticsearch_python_client(broker):
    es_mod = pytest.importorskip("elasticsearch")
    topic = "search-es"
    create_topic(broker.bootstrap, topic, PARTITIONS, {"search.enabled": "true"})
    wait_http(broker)
    acked = produce(broker.bootstrap, topic, 0, 1000)
    wait_searchable(broker, topic, 1000)
    es = es_mod.Elasticsearch(broker.http, request_timeout=30)
    r = es.search(index=topic, query={"bool": {"must": [{"match": {"msg": "disk"}}],
                                                 "filter": [{"term": {"level": "error"}}]}}, size=1000)
    want = {pos for pos, (i, rec) in acked.items() if "disk" in rec["msg"].split() and rec["level"] == "error"}
    got = {(h["_chronik"]["partition"], h["_chronik"]["offset"]) for h in r["hits"]["hits"]}
    assert got == want and r["hits"]["total"]["value"] == len(want)
    assert all(h["_source"]["level"] == "error" for h in r["hits"]["hits"])
    assert es.count(index=topic, query={"range": {"user.id": {"gte": 20}}})["count"] == \
        sum(1 for _, rec in acked.values() if rec["user"]["id"] >= 20)
    # Pages by search_after, newest first, cover every hit once.
    seen, after = [], None
    for _ in range(100):
        kw = {"search_after": after} if after else {}
        page = es.search(index=topic, query={"match_phrase": {"msg": "disk full"}}, size=50,
                         sort=[{"timestamp": "desc"}], **kw)["hits"]["hits"]
        if not page:
            break
        seen += [h["_id"] for h in page]
        after = page[-1]["sort"]
    want = {f"{p}-{o}" for (p, o), (i, rec) in acked.items() if "disk full" in rec["msg"]}
    assert len(seen) == len(set(seen)) and set(seen) == want
    m = es.msearch(searches=[{"index": topic}, {"query": {"term": {"level": "warn"}}, "size": 0},
                             {"index": "no-such-topic"}, {"query": {"match_all": {}}}])
    assert m["responses"][0]["hits"]["total"]["value"] == sum(1 for _, rec in acked.values() if rec["level"] == "warn")
    assert m["responses"][1]["status"] == 404
    with pytest.raises(es_mod.BadRequestError):
        es.search(index=topic, query={"fuzzy": {"msg": "dsk"}})
    with pytest.raises(es_mod.NotFoundError):
        es.search(index="no-such-topic", query={"match_all": {}})


def test_live_subscription_delivers_exactly_the_new_matches(broker):
    topic = "search-live"
    create_topic(broker.bootstrap, topic, PARTITIONS, {"search.enabled": "true"})
    wait_http(broker)
    before = produce(broker.bootstrap, topic, 0, 300)  # before the subscription: never delivered
    url = f"{broker.http}/topics/{topic}/search/stream?" + urllib.parse.urlencode({"q": "level:error AND user.id:[0 TO 9]"})
    listener = Listener(url)
    assert listener.ready.wait(20), "no 'subscribed' event"
    after = produce(broker.bootstrap, topic, 300, 1200)
    want = {pos for pos, (i, r) in after.items() if r["level"] == "error" and r["user"]["id"] <= 9}
    listener.wait_hits(want, FRESH_S)
    time.sleep(0.5)  # nothing more arrives
    got = listener.hits()
    events = listener.named("hit")
    assert len(got) == len(set(got)), "a record was delivered twice"
    assert set(got) == want, f"{len(got)} delivered, {len(want)} expected; extra {sorted(set(got) - want)[:5]}, " \
                             f"missing {sorted(want - set(got))[:5]}"
    assert not set(got) & set(before)
    assert all(e["value"]["level"] == "error" for e in events)


def test_chronik_search_command(broker):
    topic = "search-cli"
    create_topic(broker.bootstrap, topic, 1, {"search.enabled": "true"})
    wait_http(broker)
    acked = produce(broker.bootstrap, topic, 0, 200)
    wait_searchable(broker, topic, 200)
    r = subprocess.run([str(chronik_bin()), "search", topic, "user.id:4 AND level:info", "--url", broker.http,
                        "--limit", "100", "--sort", "offset"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    want = sorted(o for (p, o), (i, rec) in acked.items() if rec["user"]["id"] == 4 and rec["level"] == "info")
    assert [int(line.split("\t")[0].split("/")[1]) for line in lines] == want
    bad = subprocess.run([str(chronik_bin()), "search", topic, "level:(", "--url", broker.http],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "Failed to parse query" in bad.stderr

    # Rebuilt from the log by a command: every record again, once.
    r = subprocess.run([str(chronik_bin()), "rebuild-index", topic, "--url", broker.http],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "rebuilding" in r.stdout, r.stderr
    time.sleep(0.5)  # the indexer takes the request at its next pass (every --search-refresh-ms)
    deadline = time.monotonic() + FRESH_S
    while time.monotonic() < deadline:
        if len(search_all(broker, topic, "*")) == 200:
            break
        time.sleep(0.1)
    assert sorted(search_all(broker, topic, "*")) == sorted(acked)
    check_ground_truth_subset = [q for q in QUERIES if "key-42" not in q[0]]
    for q, pred in check_ground_truth_subset[:4]:
        want = sorted(pos for pos, (i, rec) in acked.items() if pred(i, rec, *pos))
        assert sorted(search_all(broker, topic, q)) == want, q
    missing = subprocess.run([str(chronik_bin()), "rebuild-index", "nope", "--url", broker.http],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "no such index" in missing.stderr


def test_bad_search_requests_get_clear_errors(broker):
    create_topic(broker.bootstrap, "search-bad", 1, {"search.enabled": "true"})
    create_topic(broker.bootstrap, "plain", 1)
    wait_http(broker)
    base = broker.http
    cases = [
        (f"{base}/topics/search-bad/search?q=" + urllib.parse.quote("level:("), None, 400, "query_shard_exception"),
        (f"{base}/topics/search-bad/search?q=" + urllib.parse.quote("value:[a TO b]"), None, 400, "query_shard_exception"),
        (f"{base}/topics/search-bad/search?q=x&limit=lots", None, 400, "illegal_argument_exception"),
        (f"{base}/topics/nope/search?q=x", None, 404, "index_not_found_exception"),
        (f"{base}/topics/plain/search?q=x", None, 400, "illegal_argument_exception"),
        (f"{base}/search-bad/_search", b"{not json", 400, "parsing_exception"),
        (f"{base}/search-bad/_search", {"query": {"fuzzy": {"a": "b"}}}, 400, "parsing_exception"),
        (f"{base}/search-bad/_search", {"query": {"match_all": {}}, "sort": [{"nope": "asc"}]}, 400, "illegal_argument_exception"),
        (f"{base}/search-bad/_search", {"query": {"match_all": {}}, "from": 20000}, 400, "illegal_argument_exception"),
        (f"{base}/search-bad/_search", {"query": {"range": {"key": {"gt": 1}}}}, 400, "parsing_exception"),
        (f"{base}/no/such/endpoint", None, 404, "resource_not_found_exception"),
    ]
    for url, body, status, kind in cases:
        got_status, r = http_json(url, body)
        assert got_status == status and r["error"]["type"] == kind and r["error"]["reason"], (url, body, got_status, r)
    # The HTTP server's own refusals have the same shape.
    for url, body, method, status, kind in [
        (f"{base}/search-bad/_search", None, "DELETE", 405, "method_not_allowed_exception"),
        (f"{base}/search-bad/_search", b"{" + b" " * (3 << 20) + b"}", "POST", 413, "content_too_long_exception"),
        (f"{base}/topics/%FF/search?q=x", None, "GET", 400, "illegal_argument_exception"),
    ]:
        got_status, r = http_json(url, body, method=method)
        assert got_status == status and r["error"]["type"] == kind and r["error"]["reason"], (url, method, got_status, r)
    # A huge size is capped, not refused.
    status, r = http_json(f"{base}/search-bad/_search", {"query": {"match_all": {}}, "size": 10 ** 9})
    assert status == 200, r
    assert "panicked at" not in broker.log_text()


def test_search_turned_on_and_off_for_an_existing_topic(broker):
    """search.enabled through IncrementalAlterConfigs (confluent-kafka) and the
    legacy AlterConfigs (kafka-python): turning it on indexes what the topic
    already holds; off, the topic is not searchable; on again, the index is
    rebuilt from the log."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
    from kafka.admin import ConfigResource as KpConfigResource, ConfigResourceType, KafkaAdminClient

    topic = "search-later"
    create_topic(broker.bootstrap, topic, PARTITIONS, {"retention.ms": "86400000"})
    wait_http(broker)
    acked = produce(broker.bootstrap, topic, 0, 600)
    status, r = http_json(f"{broker.http}/topics/{topic}/search?q=x")
    assert status == 400 and r["error"]["type"] == "illegal_argument_exception", r

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    on = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("search.enabled", "true", incremental_operation=AlterConfigOpType.SET)])
    for f in admin.incremental_alter_configs([on]).values():
        f.result(timeout=30)
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    entries = list(described.values())[0].result(timeout=30)
    assert entries["search.enabled"].value == "true" and entries["retention.ms"].value == "86400000"
    wait_searchable(broker, topic, 600)
    check_ground_truth(broker, topic, acked)
    # A refused change is refused whole and names the problem.
    bad = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(Exception, match="retention.ms"):
        for f in admin.incremental_alter_configs([bad]).values():
            f.result(timeout=30)

    # Off through the legacy API (it replaces every override of the topic;
    # kafka-python sends the other overrides along).
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        result = kp.alter_configs([KpConfigResource(ConfigResourceType.TOPIC, topic, configs={"search.enabled": "false"})],
                                  raise_on_unknown=False, incremental=False)
    finally:
        kp.close()
    assert "Error" not in repr(result) or "NoError" in repr(result), result
    entries = list(admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values())[0].result(timeout=30)
    assert entries["search.enabled"].value == "false" and entries["retention.ms"].value == "86400000"
    status, r = http_json(f"{broker.http}/topics/{topic}/search?q=x")
    assert status == 400, r

    # On again, after more records: every record, old and new, exactly once.
    acked.update(produce(broker.bootstrap, topic, 600, 300))
    for f in admin.incremental_alter_configs([on]).values():
        f.result(timeout=30)
    wait_searchable(broker, topic, 900)
    check_ground_truth(broker, topic, acked)
    assert "panicked at" not in broker.log_text()
