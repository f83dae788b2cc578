"""Produce and fetch semantics seen by librdkafka: size limits, fetch
positions out of range, tailing a partition (fetch long-poll), and several
idempotent producers writing one partition at once."""

import os
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from e2e_util import (BASE_TS_MS, Rec,
                      consumer_conf, create_topic, make_records, produce_confluent,
                      production_producer_conf, verify_topic, watermarks)

T = 30


def test_record_batch_above_max_message_bytes(broker):
    topic = "small-messages"
    create_topic(broker.bootstrap, topic, 1, config={"max.message.bytes": "10000"})
    conf = production_producer_conf(broker.bootstrap, "none",
                                    **{"enable.idempotence": False, "linger.ms": 0})
    big = Rec(b"big", os.urandom(50_000), (), BASE_TS_MS)
    res = produce_confluent(conf, topic, [big], partition=0)
    assert len(res.failed) == 1, f"a 50 KB batch into max.message.bytes=10000: {res}"
    err = res.failed[0][1]
    assert err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    # Nothing was written; small records still go through at offset 0.
    assert watermarks(broker.bootstrap, topic, [0]) == {0: (0, 0)}
    small = [Rec(f"k{i}".encode(), f"v{i}".encode(), (), BASE_TS_MS + i) for i in range(10)]
    res = produce_confluent(production_producer_conf(broker.bootstrap), topic, small,
                            partition=0)
    assert not res.failed and sorted(res.acked) == [(0, i) for i in range(10)]


def test_fetch_position_out_of_range(broker):
    topic = "out-of-range"
    create_topic(broker.bootstrap, topic, 1)
    recs = [Rec(f"k{i}".encode(), f"v{i}".encode(), (), BASE_TS_MS + i) for i in range(10)]
    res = produce_confluent(production_producer_conf(broker.bootstrap), topic, recs,
                            partition=0)
    assert not res.failed

    def first_event(extra, offset):
        c = Consumer(consumer_conf(broker.bootstrap, **extra))
        try:
            c.assign([TopicPartition(topic, 0, offset)])
            deadline = time.monotonic() + T
            while time.monotonic() < deadline:
                for m in c.consume(100, 0.5):
                    return m
            return None
        finally:
            c.close()

    # Beyond the high watermark with auto.offset.reset=error: an error.
    m = first_event({"auto.offset.reset": "error"}, 1_000)
    assert m is not None and m.error() is not None, m
    assert m.error().code() in (KafkaError._AUTO_OFFSET_RESET,
                                KafkaError.OFFSET_OUT_OF_RANGE), m.error()
    # With auto.offset.reset=earliest the client resets to offset 0.
    m = first_event({"auto.offset.reset": "earliest"}, 1_000)
    assert m is not None and m.error() is None and (m.offset(), m.value()) == (0, b"v0")


def test_tail_long_poll(broker):
    """A consumer positioned at the end gets each new record promptly."""
    topic = "tail"
    create_topic(broker.bootstrap, topic, 1)
    c = Consumer(consumer_conf(broker.bootstrap, **{"fetch.wait.max.ms": 500}))
    p = Producer(production_producer_conf(broker.bootstrap, **{"linger.ms": 0}))
    latencies = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        assert c.poll(1.0) is None
        for i in range(20):
            sent = time.monotonic()
            p.produce(topic, value=f"tail-{i}".encode(), partition=0)
            assert p.flush(T) == 0
            got = None
            deadline = time.monotonic() + 10
            while got is None and time.monotonic() < deadline:
                m = c.poll(0.2)  # returns as soon as one record is there
                if m is not None:
                    assert m.error() is None, m.error()
                    got = m
            assert got is not None, f"record {i} not delivered to the tailing consumer in 10s"
            assert (got.offset(), got.value()) == (i, f"tail-{i}".encode())
            latencies.append(time.monotonic() - sent)
    finally:
        c.close()
    latencies.sort()
    # Produce (acks=all, fsync) + fetch wake-up; generous for a loaded 2-core box.
    print("tail latencies (s):", [round(x, 3) for x in latencies])
    assert latencies[len(latencies) // 2] < 1.0, f"median tail latency {latencies}"


def test_concurrent_idempotent_producers_one_partition(broker):
    topic = "shared-partition"
    create_topic(broker.bootstrap, topic, 1)
    producers = 4
    per = 20_000
    results = [None] * producers
    errors = []

    def run(k):
        try:
            recs = make_records(f"prod{k}", per, big_every=0)
            results[k] = produce_confluent(
                production_producer_conf(broker.bootstrap, ["none", "gzip", "lz4", "zstd"][k]),
                topic, recs, partition=0)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((k, e))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a producer thread did not finish"
    assert not errors, errors
    acked = {}
    for k, res in enumerate(results):
        assert not res.failed and len(res.acked) == per, (k, res.failed[:3])
        # Each producer's records keep their order in the log.
        offsets = [o for (_p, o), _r in sorted(res.acked.items(),
                                                key=lambda kv: kv[1].key)]
        assert offsets == sorted(offsets), f"producer {k}: records reordered in the log"
        overlap = set(acked) & set(res.acked)
        assert not overlap, f"offsets given to two producers: {sorted(overlap)[:5]}"
        acked.update(res.acked)
    verify_topic(broker.bootstrap, topic, 1, acked)
