"""A second, independent client implementation: kafka-python (pure Python
protocol code) producing with acks=all and consuming with assign/seek."""

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from e2e_util import (Rec, create_topic, make_records, produce_confluent,
                      production_producer_conf, verify_topic)

PARTITIONS = 2


def kp_produce(bootstrap, topic, records, compression=None, timeout=60):
    """Returns {(partition, offset): Rec} from the record metadata."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                      compression_type=compression, linger_ms=5, request_timeout_ms=30_000,
                      delivery_timeout_ms=60_000)
    try:
        futures = [p.send(topic, key=r.key, value=r.value, headers=list(r.headers),
                          timestamp_ms=r.ts) for r in records]
        p.flush(timeout=timeout)
        acked = {}
        for r, f in zip(records, futures):
            md = f.get(timeout=timeout)
            pos = (md.partition, md.offset)
            assert pos not in acked, f"two records acknowledged at {pos}"
            acked[pos] = r
        return acked
    finally:
        p.close(timeout=10)


def kp_consume(bootstrap, topic, ends: dict, starts: dict | None = None, timeout=60):
    """assign() + seek() to starts[p] (default 0), read until ends[p]."""
    starts = starts or {p: 0 for p in ends}
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="none", request_timeout_ms=30_000)
    got = {p: [] for p in ends}
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, starts[tp.partition])
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout * 10) + 10):
            if all(starts[p] + len(got[p]) >= ends[p] for p in ends):
                break
            if time.monotonic() > deadline:
                break
            batch = c.poll(timeout_ms=200, max_records=5000)
            for tp, recs in batch.items():
                got[tp.partition].extend(recs)
        extra = c.poll(timeout_ms=300)
        for tp, recs in extra.items():
            got[tp.partition].extend(recs)
    finally:
        c.close()
    return got


def _problems_kp(acked, got, starts=None):
    problems = []
    seen = set()
    for p, recs in got.items():
        offs = [r.offset for r in recs]
        first = (starts or {}).get(p, 0)
        if offs != list(range(first, first + len(offs))):
            problems.append(f"partition {p}: offsets not dense from {first}: {offs[:10]}...")
        for r in recs:
            pos = (p, r.offset)
            seen.add(pos)
            want = acked.get(pos)
            if want is None:
                problems.append(f"unexpected record at {pos}")
                continue
            headers = tuple((k, v) for k, v in (r.headers or []))
            if (r.key, r.value, headers, r.timestamp) != (want.key, want.value,
                                                          tuple(want.headers), want.ts):
                problems.append(f"{pos}: got key={r.key!r:.60} value={r.value!r:.60} "
                                f"headers={headers!r:.100} ts={r.timestamp}; want "
                                f"key={want.key!r:.60} value={want.value!r:.60} "
                                f"headers={want.headers!r:.100} ts={want.ts}")
    missing = set(acked) - seen
    if missing:
        problems.append(f"{len(missing)} acknowledged records missing, first "
                        f"{sorted(missing)[:10]}")
    return problems


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_kafka_python_roundtrip(broker, compression):
    topic = f"kafka-python-{compression or 'none'}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    # kafka-python headers need non-null values.
    records = [Rec(r.key, r.value, tuple(h for h in r.headers if h[1] is not None), r.ts)
               for r in make_records(f"kp-{compression}", 5_000, big_every=2_500)]
    acked = kp_produce(broker.bootstrap, topic, records, compression)
    assert len(acked) == len(records)
    ends = {p: sum(1 for (q, _o) in acked if q == p) for p in range(PARTITIONS)}
    assert all(ends.values()), f"records spread over partitions: {ends}"

    got = kp_consume(broker.bootstrap, topic, ends)
    problems = _problems_kp(acked, got)
    assert not problems, "\n".join(problems[:20])

    # seek() into the middle of the log: reading starts exactly there.
    mid = {p: ends[p] // 2 for p in ends}
    got_mid = kp_consume(broker.bootstrap, topic, ends, starts=mid)
    for p in ends:
        assert got_mid[p] and got_mid[p][0].offset == mid[p], (
            f"partition {p}: seek({mid[p]}) then poll returned offsets "
            f"{[r.offset for r in got_mid[p][:5]]}")
    problems = _problems_kp({k: v for k, v in acked.items() if k[1] >= mid[k[0]]}, got_mid,
                            starts=mid)
    assert not problems, "\n".join(problems[:20])

    # The other client reads the same bytes.
    verify_topic(broker.bootstrap, topic, PARTITIONS, acked)


def test_confluent_produced_read_by_kafka_python(broker):
    """Cross-client: librdkafka writes zstd-less codecs kafka-python can read
    (none, gzip); kafka-python reads them back exactly."""
    topic = "cross-client"
    create_topic(broker.bootstrap, topic, 1)
    acked = {}
    for codec in ("none", "gzip"):
        recs = [Rec(r.key, r.value, tuple(h for h in r.headers if h[1] is not None), r.ts)
                for r in make_records(f"cross-{codec}", 3_000, big_every=0)]
        res = produce_confluent(production_producer_conf(broker.bootstrap, codec), topic,
                                recs, partition=0)
        assert not res.failed and len(res.acked) == len(recs)
        acked.update(res.acked)
    got = kp_consume(broker.bootstrap, topic, {0: len(acked)})
    problems = _problems_kp(acked, got)
    assert not problems, "\n".join(problems[:20])
