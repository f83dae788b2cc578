"""The search benchmark (run by ci/bench-search.sh): prints figures, asserts nothing.

One release broker, fresh. Measures
  * produce throughput with search on, as a ratio of search off (same
    producer settings, same JSON records, 3 partitions, acks=all);
  * index throughput: documents and MB per second, from the first produce
    until every record is searchable;
  * query latency p50/p99 (term, phrase, bool, range) over the HTTP API on
    the indexed records while a producer keeps ingesting;
  * freshness p50/p99: from a record's acknowledgement to its first hit.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchlib import free_port, logger

RECORDS = int(os.environ.get("BENCH_SEARCH_RECORDS", 1_000_000))
QUERIES = int(os.environ.get("BENCH_SEARCH_QUERIES", 200))
FRESH = int(os.environ.get("BENCH_SEARCH_FRESHNESS", 200))
LEVELS = ["info", "warn", "error", "debug"]
WORDS = ["disk", "full", "network", "timeout", "login", "failed", "retry", "queue", "cache", "miss"]


log = logger("bench-search")


def value(i):
    return json.dumps({"level": LEVELS[i % 4], "msg": f"request {i} " + " ".join(WORDS[(i * 7 + j) % 10] for j in range(1 + i % 3)),
                       "user": {"id": i % 1000}, "latency_ms": i % 500, "service": f"svc-{i % 20}"})


def produce(bootstrap, topic, n, start=0):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                  "batch.size": 1_000_000, "compression.type": "lz4"})
    values = [value(i).encode() for i in range(start, start + n)]
    nbytes = sum(len(v) for v in values)
    t0 = time.monotonic()
    for i, v in enumerate(values):
        while True:
            try:
                p.produce(topic, value=v, key=b"%d" % (start + i))
                break
            except BufferError:
                p.poll(0.01)
    p.flush(300)
    return time.monotonic() - t0, nbytes


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def count(http, topic):
    return get(f"{http}/{topic}/_count")["count"]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    binary = sys.argv[1]
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    kport, hport = free_port(), free_port()
    bootstrap, http = f"127.0.0.1:{kport}", f"http://127.0.0.1:{hport}"
    logf = open(work / "chronik.log", "wb")
    proc = subprocess.Popen([binary, "start", "--data-dir", str(work / "data"), "--kafka-listen", bootstrap,
                             "--http-listen", f"127.0.0.1:{hport}", "--rpc-listen", "127.0.0.1:0"], stdout=logf, stderr=logf)
    try:
        for _ in range(300):
            try:
                get(http + "/")
                break
            except OSError:
                time.sleep(0.1)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for name, cfg in (("plain", {}), ("searched", {"search.enabled": "true"}), ("fresh", {"search.enabled": "true"})):
            admin.create_topics([NewTopic(name, 3, 1, config=cfg)])[name].result(30)

        log(f"producing {RECORDS} JSON records, search off")
        off_s, nbytes = produce(bootstrap, "plain", RECORDS)
        log(f"producing {RECORDS} JSON records, search on")
        t0 = time.monotonic()
        on_s, _ = produce(bootstrap, "searched", RECORDS)
        while count(http, "searched") < RECORDS:
            time.sleep(0.05)
        indexed_s = time.monotonic() - t0

        log(f"query latency while ingesting ({QUERIES} of each)")
        stop = threading.Event()

        def ingest():
            i = RECORDS
            while not stop.is_set():
                produce(bootstrap, "searched", 20_000, start=i)
                i += 20_000

        bg = threading.Thread(target=ingest, daemon=True)
        bg.start()
        queries = {
            "term": "level:error",
            "phrase": "msg:\"disk full\"",
            "bool": "level:warn AND user.id:42 AND -msg:retry",
            "range": "latency_ms:[100 TO 120] AND service:svc",
        }
        latency = {}
        for name, q in queries.items():
            url = f"{http}/topics/searched/search?" + urllib.parse.urlencode({"q": q, "limit": 10})
            ts = []
            for _ in range(QUERIES):
                t = time.monotonic()
                get(url)
                ts.append((time.monotonic() - t) * 1000)
            latency[name] = ts
        stop.set()
        bg.join(120)
        # Let the indexer catch up with the background ingest first.
        from confluent_kafka import Consumer, TopicPartition
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
        produced = sum(c.get_watermark_offsets(TopicPartition("searched", p), timeout=10)[1] for p in range(3))
        c.close()
        t0 = time.monotonic()
        while count(http, "searched") < produced and time.monotonic() - t0 < 600:
            time.sleep(0.1)
        log(f"indexer caught up with {produced} records {time.monotonic() - t0:.1f} s after the ingest stopped")

        log(f"freshness: {FRESH} single records, acknowledgement to first hit")
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 0})
        fresh = []
        for i in range(FRESH):
            token = f"fresh{i}x{os.getpid()}"
            acked = []
            p.produce("fresh", value=json.dumps({"token": token}).encode(), on_delivery=lambda e, m: acked.append(time.monotonic()))
            p.flush(30)
            url = f"{http}/topics/fresh/search?" + urllib.parse.urlencode({"q": f"token:{token}", "limit": 1})
            while get(url)["total"] == 0:
                time.sleep(0.002)
            fresh.append((time.monotonic() - acked[0]) * 1000)
        disk = sum(f.stat().st_size for f in (work / "data" / "search").rglob("*") if f.is_file())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        shutil.rmtree(work, ignore_errors=True)

    mb = nbytes / 1e6
    print(f"\nChronik search benchmark: {RECORDS} JSON records ({mb:.0f} MB of values), 3 partitions, acks=all, lz4, "
          f"{os.cpu_count()} cores, client and broker on one machine")
    print(f"produce, search off:   {RECORDS / off_s:10.0f} records/s  {mb / off_s:7.1f} MB/s")
    print(f"produce, search on:    {RECORDS / on_s:10.0f} records/s  {mb / on_s:7.1f} MB/s   ratio on/off {off_s / on_s:.2f}")
    print(f"indexing (to searchable): {RECORDS / indexed_s:7.0f} docs/s     {mb / indexed_s:7.1f} MB/s   ({indexed_s:.1f} s; index {disk / 1e6:.0f} MB on disk)")
    for name, ts in latency.items():
        print(f"query {name:7} p50 {pct(ts, 0.5):6.2f} ms  p99 {pct(ts, 0.99):6.2f} ms   ({queries[name]}; HTTP round trip, while ingesting)")
    print(f"freshness (ack to first hit): p50 {pct(fresh, 0.5):.0f} ms  p99 {pct(fresh, 0.99):.0f} ms")


if __name__ == "__main__":
    main()
