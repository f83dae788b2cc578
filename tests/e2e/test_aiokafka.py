"""aiokafka (asyncio, its own protocol code): idempotent acks=all produce
with each codec, then a consumer group that reads part of the topic, commits
and leaves, and a second member of the same group that resumes from the
commits. Every acknowledged record is read exactly once and byte-identical."""

import asyncio

import pytest

from e2e_util import Rec, create_topic, make_records, verify_topic

aiokafka = pytest.importorskip("aiokafka")
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.structs import OffsetAndMetadata  # noqa: E402

PARTITIONS = 3
N = 3000
TIMEOUT_S = 90


async def produce(bootstrap, topic, records, compression):
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                         compression_type=compression, linger_ms=5, request_timeout_ms=30_000)
    await p.start()
    try:
        futures = [await p.send(topic, key=r.key, value=r.value, headers=list(r.headers),
                                timestamp_ms=r.ts) for r in records]
        acked = {}
        for r, f in zip(records, futures):
            md = await asyncio.wait_for(f, TIMEOUT_S)
            pos = (md.partition, md.offset)
            assert pos not in acked, f"two records acknowledged at {pos}"
            acked[pos] = r
        return acked
    finally:
        await p.stop()


def as_rec(m) -> Rec:
    return Rec(m.key, m.value, tuple((k, v) for k, v in (m.headers or ())), m.timestamp)


async def consume(bootstrap, topic, group, want, seen, stop_after=None):
    """Reads as a member of `group` until `seen` holds `want` records (or
    `stop_after` more); commits exactly what it read, partition by partition.
    Returns the first offset it saw per partition."""
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         session_timeout_ms=10_000, heartbeat_interval_ms=500)
    await c.start()
    firsts = {}
    read = 0
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT_S
        while len(seen) < want and (stop_after is None or read < stop_after):
            assert loop.time() < deadline, f"{len(seen)} of {want} records after {TIMEOUT_S}s"
            batches = await c.getmany(timeout_ms=200, max_records=200)
            commits = {}
            for tp, msgs in batches.items():
                for m in msgs:
                    firsts.setdefault(tp.partition, m.offset)
                    pos = (tp.partition, m.offset)
                    assert pos not in seen, f"record {pos} read twice"
                    seen[pos] = as_rec(m)
                    read += 1
                commits[tp] = OffsetAndMetadata(msgs[-1].offset + 1, "")
            if commits:
                await c.commit(commits)
    finally:
        await c.stop()
    return firsts


@pytest.mark.parametrize("compression", ["gzip", "lz4", "zstd"])
def test_aiokafka_group_resumes_from_commits(broker_factory, compression):
    broker = broker_factory("--group-initial-rebalance-delay-ms", "0")
    topic, group = f"aio-{compression}", f"aio-g-{compression}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    records = [Rec(r.key, r.value, tuple(h for h in r.headers if h[1] is not None), r.ts)
               for r in make_records(f"aio-{compression}", N, big_every=1500)]

    async def scenario():
        acked = await produce(broker.bootstrap, topic, records, compression)
        assert len(acked) == N
        seen = {}
        await consume(broker.bootstrap, topic, group, N, seen, stop_after=N // 2)
        first_member = dict(seen)
        committed = {p: max([o for (q, o) in first_member if q == p], default=-1) + 1
                     for p in range(PARTITIONS)}
        firsts = await consume(broker.bootstrap, topic, group, N, seen)
        return acked, seen, committed, firsts

    acked, seen, committed, firsts = asyncio.run(scenario())
    # The second member started exactly at the first one's commits.
    assert all(firsts.get(p, committed[p]) == committed[p] for p in range(PARTITIONS)), (firsts, committed)
    assert set(seen) == set(acked), f"{len(set(acked) - set(seen))} acknowledged records not read"
    bad = [pos for pos in acked if seen[pos] != acked[pos]]
    assert not bad, f"{len(bad)} records differ, first at {bad[0]}: {seen[bad[0]]!r:.200} != {acked[bad[0]]!r:.200}"
    # librdkafka reads the same bytes.
    verify_topic(broker.bootstrap, topic, PARTITIONS, acked)
