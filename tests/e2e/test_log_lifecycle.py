"""The log over its life: many small segments (reads across segment
boundaries, time lookups through the indexes) across graceful restart, kill -9
and lost index files; retention by size and by time moving the log start."""

import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from e2e_util import (BASE_TS_MS, Rec, check_dense, compare_exact, consume_range,
                      consumer_conf, create_topic, make_records, produce_confluent,
                      production_producer_conf, verify_topic, wait_until, watermarks)

T = 30


def _segment_files(broker, topic, suffix):
    # DESIGN.md: topics/<topic>.<topic-id>/<partition>/<base offset>.log|.index|.timeindex
    return sorted(broker.data_dir.glob(f"topics/{topic}.*/*/*{suffix}"))


def _lookup(bootstrap, topic, queries, partition=0):
    # One ListOffsets per timestamp: a request names each partition once.
    c = Consumer(consumer_conf(bootstrap))
    out = []
    try:
        for ts in queries:
            [r] = c.offsets_for_times([TopicPartition(topic, partition, ts)], timeout=T)
            assert r.error is None, r.error
            out.append(r.offset)
    finally:
        c.close()
    return out


def test_many_segments_restart_kill9_and_lost_indexes(broker):
    topic = "segmented"
    create_topic(broker.bootstrap, topic, 1,
                 config={"segment.bytes": "65536", "retention.ms": "-1",
                         "index.interval.bytes": "1024"})
    n = 30_000
    # Batches larger than a segment (150 KB records) are in there too.
    recs = make_records("seg", n, big_every=5_000)
    res = produce_confluent(production_producer_conf(broker.bootstrap, "lz4",
                                                     **{"batch.size": 32768}),
                            topic, recs, partition=0)
    assert not res.failed and len(res.acked) == n
    segments = _segment_files(broker, topic, ".log")
    assert len(segments) >= 20, (f"expected many segments with segment.bytes=65536, "
                                 f"found {len(segments)}: {segments[:3]}")

    probes = [0, 1, 777, 4_999, 5_000, 12_345, 20_000, n - 2, n - 1]
    want = probes  # record i has timestamp BASE_TS_MS + i and sits at offset i

    def check_all(when):
        verify_topic(broker.bootstrap, topic, 1, res.acked)
        got = _lookup(broker.bootstrap, topic, [BASE_TS_MS + i for i in probes])
        assert got == want, f"{when}: offsets_for_times {got} != {want}"
        # Read from the middle of sealed segments.
        for start in (4_321, 17_000):
            part = consume_range(broker.bootstrap, topic, {0: n}, starts={0: start},
                                 settle_s=0.3)
            problems = check_dense(part, starts={0: start}, ends={0: n})
            problems += compare_exact({k: v for k, v in res.acked.items() if k[1] >= start},
                                      part)
            assert not problems, f"{when}, reading from {start}: " + "\n".join(problems[:10])

    check_all("before restart")
    broker.restart()
    check_all("after graceful restart")
    broker.kill9()
    broker.start()
    check_all("after kill -9")

    # DESIGN.md: a missing index is rebuilt by scanning the segment at start.
    broker.stop()
    removed = _segment_files(broker, topic, ".index") + _segment_files(broker, topic,
                                                                       ".timeindex")
    assert removed, "no index files on disk after a graceful stop"
    for f in removed:
        f.unlink()
    broker.start()
    check_all(f"after deleting {len(removed)} index files")

    # And appends continue at the right offset.
    more = make_records("seg-more", 2_000, big_every=0)
    more = [Rec(r.key, r.value, r.headers, BASE_TS_MS + n + i) for i, r in enumerate(more)]
    res2 = produce_confluent(production_producer_conf(broker.bootstrap, "zstd"), topic, more,
                             partition=0)
    assert not res2.failed and sorted(o for _p, o in res2.acked) == list(range(n, n + 2_000))
    verify_topic(broker.bootstrap, topic, 1, {**res.acked, **res2.acked})


def test_retention_by_size(broker_factory):
    broker = broker_factory("--retention-check-interval-ms", "200")
    topic = "retained-bytes"
    create_topic(broker.bootstrap, topic, 1,
                 config={"segment.bytes": "65536", "retention.bytes": "262144",
                         "retention.ms": "-1"})
    n = 20_000
    recs = make_records("ret", n, big_every=0)
    # Batches well below segment.bytes (a batch never spans segments).
    res = produce_confluent(production_producer_conf(broker.bootstrap,
                                                     **{"batch.size": 16384}),
                            topic, recs, partition=0)
    assert not res.failed and len(res.acked) == n

    wait_until(lambda: watermarks(broker.bootstrap, topic, [0])[0][0] > 0, timeout=T,
               what="retention.bytes to delete old segments (log start > 0)")
    # Retention runs in the background; let it settle.
    time.sleep(1)
    low, high = watermarks(broker.bootstrap, topic, [0])[0]
    assert high == n and 0 < low < high
    on_disk = sum(f.stat().st_size for f in _segment_files(broker, topic, ".log"))
    # Kafka's rule: drop the oldest segment while the rest is still >= retention.bytes.
    assert on_disk <= 262_144 + 65_536 + 16_384, f"{on_disk} bytes of segments remain"

    # What is left is intact and dense from the new log start.
    got = consume_range(broker.bootstrap, topic, {0: high}, starts={0: low})
    problems = check_dense(got, starts={0: low}, ends={0: high})
    problems += compare_exact({k: v for k, v in res.acked.items() if k[1] >= low}, got)
    assert not problems, "\n".join(problems[:10])

    # Time lookups before the log start answer the log start.
    assert _lookup(broker.bootstrap, topic, [BASE_TS_MS]) == [low]

    # Reading below the log start is OFFSET_OUT_OF_RANGE.
    c = Consumer(consumer_conf(broker.bootstrap, **{"auto.offset.reset": "error"}))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        err = None
        deadline = time.monotonic() + T
        while err is None and time.monotonic() < deadline:
            for m in c.consume(100, 0.5):
                if m.error():
                    err = m.error()
                    break
                raise AssertionError(f"read offset {m.offset()} below the log start {low}")
        assert err is not None and err.code() in (KafkaError._AUTO_OFFSET_RESET,
                                                  KafkaError.OFFSET_OUT_OF_RANGE), err
    finally:
        c.close()

    # The log start survives a restart.
    broker.restart()
    low2, high2 = watermarks(broker.bootstrap, topic, [0])[0]
    assert high2 == n and low2 >= low, (low2, high2, low)


def test_retention_by_time(broker_factory):
    broker = broker_factory("--retention-check-interval-ms", "200")
    topic = "retained-time"
    create_topic(broker.bootstrap, topic, 1,
                 config={"segment.bytes": "16384", "retention.ms": str(24 * 3600 * 1000)})
    old = [Rec(f"old{i}".encode(), f"old-{i}".encode() + b"." * 100, (), BASE_TS_MS + i)
           for i in range(3_000)]
    now_ms = int(time.time() * 1000)
    new = [Rec(f"new{i}".encode(), f"new-{i}".encode() + b"." * 100, (), now_ms + i)
           for i in range(3_000)]
    acked = {}
    for batch in (old, new):
        res = produce_confluent(production_producer_conf(broker.bootstrap,
                                                         **{"batch.size": 8192}),
                                topic, batch, partition=0)
        assert not res.failed and len(res.acked) == len(batch)
        acked.update(res.acked)

    # Segments holding only records older than a day go; the rest stays.
    wait_until(lambda: watermarks(broker.bootstrap, topic, [0])[0][0] > 0, timeout=T,
               what="retention.ms to delete old segments")
    time.sleep(1)
    low, high = watermarks(broker.bootstrap, topic, [0])[0]
    assert high == 6_000
    assert 0 < low <= 3_000, f"log start {low}: records newer than retention.ms deleted?"
    got = consume_range(broker.bootstrap, topic, {0: high}, starts={0: low})
    problems = check_dense(got, starts={0: low}, ends={0: high})
    problems += compare_exact({k: v for k, v in acked.items() if k[1] >= low}, got)
    assert not problems, "\n".join(problems[:10])
