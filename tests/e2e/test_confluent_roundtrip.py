"""confluent-kafka (librdkafka) in production mode: idempotent, acks=all,
every compression codec; every acknowledged record read back byte for byte at
its acknowledged (partition, offset), before and after a graceful restart."""

import time

import pytest

from e2e_util import (compare_exact, check_dense, consume_range, create_topic, make_records,
                      produce_confluent, production_producer_conf, verify_topic, watermarks)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# 100k records per codec: 500k in total, with unique keys and values.
RECORDS_PER_CODEC = 100_000
PARTITIONS = 3


def _assert_clean(res, n):
    assert not res.failed, (f"{len(res.failed)} of {n} deliveries failed, first: "
                            f"{res.failed[:5]}")
    assert not res.client_errors, f"producer error_cb reported: {res.client_errors[:10]}"
    assert len(res.acked) == n


@pytest.mark.parametrize("codec", CODECS)
def test_idempotent_acks_all_roundtrip_and_graceful_restart(broker, codec):
    topic = f"roundtrip-{codec}"
    create_topic(broker.bootstrap, topic, PARTITIONS)

    records = make_records(codec, RECORDS_PER_CODEC)
    res = produce_confluent(production_producer_conf(broker.bootstrap, codec), topic, records)
    _assert_clean(res, len(records))
    used = {p for (p, _o) in res.acked}
    assert used == set(range(PARTITIONS)), f"keyed records landed only in partitions {used}"

    verify_topic(broker.bootstrap, topic, PARTITIONS, res.acked)

    # Scenario 2: the same data after a graceful restart (SIGTERM, exit 0,
    # start again on the same data dir).
    broker.restart()
    verify_topic(broker.bootstrap, topic, PARTITIONS, res.acked)

    # A new idempotent producer after the restart continues the offsets.
    more = make_records(f"{codec}-after-restart", 5_000, big_every=0)
    res2 = produce_confluent(production_producer_conf(broker.bootstrap, codec), topic, more)
    _assert_clean(res2, len(more))
    overlap = set(res.acked) & set(res2.acked)
    assert not overlap, f"offsets handed out twice after restart: {sorted(overlap)[:10]}"
    verify_topic(broker.bootstrap, topic, PARTITIONS, {**res.acked, **res2.acked})


def test_mixed_codecs_in_one_partition(broker):
    """Batches of every codec back to back in one partition, read in one pass,
    again after a graceful restart."""
    topic = "mixed-codecs"
    create_topic(broker.bootstrap, topic, 1)
    acked = {}
    for round_ in range(2):
        for codec in CODECS:
            recs = make_records(f"mixed-{round_}-{codec}", 3_000, big_every=1_000)
            res = produce_confluent(production_producer_conf(broker.bootstrap, codec), topic,
                                    recs, partition=0)
            _assert_clean(res, len(recs))
            assert not set(acked) & set(res.acked)
            acked.update(res.acked)
    verify_topic(broker.bootstrap, topic, 1, acked)
    broker.restart()
    verify_topic(broker.bootstrap, topic, 1, acked)


def test_acks_1_non_idempotent(broker):
    topic = "acks-one"
    create_topic(broker.bootstrap, topic, 2)
    recs = make_records("acks1", 20_000, big_every=0)
    conf = production_producer_conf(broker.bootstrap, "lz4", **{"acks": "1",
                                                                 "enable.idempotence": False})
    res = produce_confluent(conf, topic, recs)
    _assert_clean(res, len(recs))
    verify_topic(broker.bootstrap, topic, 2, res.acked)


def test_acks_0(broker):
    """acks=0 gets no answer: delivery reports carry no offset, so check that
    exactly the records sent are in the log, once each, densely."""
    topic = "acks-zero"
    create_topic(broker.bootstrap, topic, 1)
    recs = make_records("acks0", 5_000, big_every=0)
    conf = production_producer_conf(broker.bootstrap, "none", **{"acks": "0",
                                                                 "enable.idempotence": False})
    res = produce_confluent(conf, topic, recs, partition=0)
    assert not res.failed and not res.client_errors
    assert res.no_offset == len(recs)

    # acks=0 data may still be in flight when flush() returns; wait (bounded)
    # until the high watermark reaches the count.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if watermarks(broker.bootstrap, topic, [0])[0][1] >= len(recs):
            break
        time.sleep(0.2)
    wm = watermarks(broker.bootstrap, topic, [0])[0]
    assert wm == (0, len(recs)), f"watermarks {wm}, expected (0, {len(recs)})"
    got = consume_range(broker.bootstrap, topic, {0: len(recs)})
    problems = check_dense(got, ends={0: len(recs)})
    # Order within one partition from one producer connection is preserved.
    by_offset = {(0, i): r for i, r in enumerate(recs)}
    problems += compare_exact(by_offset, got)
    assert not problems, "\n".join(problems[:20])
