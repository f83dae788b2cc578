"""Shared helpers: record generation, confluent-kafka produce/consume and the
exact comparison of what was acknowledged with what is read back.

Every loop here is bounded in both iterations and wall-clock time.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition, TIMESTAMP_CREATE_TIME)
from confluent_kafka.admin import AdminClient, NewTopic

# A fixed base for CreateTime timestamps (2024-01-01T00:00:00Z) so that the
# timestamps read back can be compared exactly.
BASE_TS_MS = 1_704_067_200_000


@dataclass(frozen=True)
class Rec:
    key: bytes | None
    value: bytes | None
    headers: tuple  # ((name: str, value: bytes | None), ...)
    ts: int | None = None


def make_records(tag: str, n: int, seed: int = 0, big_every: int = 10_000) -> list[Rec]:
    """n records with unique keys and values, varied sizes and contents
    (compressible text, random bytes, empty payload after the unique prefix,
    some large values), and a variety of headers (none, one, repeated names,
    binary, null header value)."""
    rnd = random.Random(f"{tag}/{seed}")
    out = []
    for i in range(n):
        key = f"{tag}-key-{i:08d}".encode()
        prefix = f"{tag}-value-{i:08d}|".encode()
        kind = i % 5
        if big_every and i % big_every == big_every - 1:
            body = rnd.randbytes(150_000) if i % 2 else b"chronik " * 25_000
        elif kind == 0:
            body = (f"text {i} " * rnd.randint(1, 40)).encode()
        elif kind == 1:
            body = rnd.randbytes(rnd.randint(0, 400))
        elif kind == 2:
            body = b""
        elif kind == 3:
            body = bytes(rnd.randint(0, 255) for _ in range(8)) * rnd.randint(1, 30)
        else:
            body = b"\x00\xff" * rnd.randint(0, 100)
        value = prefix + body
        h = i % 4
        if h == 0:
            headers = ()
        elif h == 1:
            headers = (("trace-id", f"{i:x}".encode()),)
        elif h == 2:
            headers = (("a", b"1"), ("a", b"2"), ("bin", rnd.randbytes(16)),
                       ("empty", b""))
        else:
            headers = (("null-value", None), ("utf8-\u00e9", "\u2603".encode()))
        out.append(Rec(key, value, headers, BASE_TS_MS + i))
    return out


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, name: str, partitions: int, config: dict | None = None,
                 timeout: float = 30) -> None:
    a = admin(bootstrap)  # keep the client alive until the future resolves
    fs = a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1,
                  config=config or {})], operation_timeout=timeout, request_timeout=timeout)
    fs[name].result(timeout=timeout)


def production_producer_conf(bootstrap: str, compression: str = "none", **extra) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": compression,
        "linger.ms": 5,
        "message.timeout.ms": 60_000,
        "request.timeout.ms": 30_000,
    }
    conf.update(extra)
    return conf


@dataclass
class ProduceResult:
    acked: dict = field(default_factory=dict)   # (partition, offset) -> Rec
    failed: list = field(default_factory=list)  # (index, KafkaError)
    client_errors: list = field(default_factory=list)  # error_cb errors
    no_offset: int = 0  # delivered without an offset (acks=0)
    elapsed_s: float = 0.0


def produce_confluent(conf: dict, topic: str, records: list[Rec], partition: int | None = None,
                      timeout: float = 120) -> ProduceResult:
    """Produce every record, wait for every delivery report (bounded).
    With acks=0 the client makes up the offsets, so they are not recorded."""
    acks0 = str(conf.get("acks")) == "0"
    res = ProduceResult()
    conf = dict(conf)
    conf["error_cb"] = lambda err: res.client_errors.append(err)
    p = Producer(conf)
    reports = [None] * len(records)

    def on_delivery(i, err, msg):
        reports[i] = (err, msg.partition(), msg.offset())

    start = time.monotonic()
    deadline = start + timeout
    kw = {} if partition is None else {"partition": partition}
    for i, r in enumerate(records):
        while True:
            try:
                p.produce(topic, key=r.key, value=r.value, headers=list(r.headers) or None,
                          timestamp=r.ts or 0,
                          on_delivery=lambda err, msg, i=i: on_delivery(i, err, msg), **kw)
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"producer queue stayed full for {timeout}s "
                                         f"(at record {i}/{len(records)})")
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    remaining = p.flush(max(1.0, deadline - time.monotonic()))
    res.elapsed_s = time.monotonic() - start
    if remaining:
        raise AssertionError(f"{remaining} of {len(records)} records still undelivered "
                             f"after {timeout}s; client errors: {res.client_errors[:5]}")
    for i, rep in enumerate(reports):
        if rep is None:
            res.failed.append((i, "no delivery report"))
            continue
        err, part, off = rep
        if err is not None:
            res.failed.append((i, err))
        elif acks0 or off is None or off < 0:
            res.no_offset += 1  # acks=0: delivered without an offset
        else:
            if (part, off) in res.acked:
                raise AssertionError(f"two records acknowledged at the same position "
                                     f"partition={part} offset={off}: "
                                     f"{res.acked[(part, off)].key!r} and {records[i].key!r}")
            res.acked[(part, off)] = records[i]
    return res


def consumer_conf(bootstrap: str, **extra) -> dict:
    # librdkafka wants a group.id for its Consumer; we never subscribe or
    # commit (Chronik has no group coordinator yet), only assign().
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "chronik-e2e-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "check.crcs": True,
        "enable.partition.eof": False,
    }
    conf.update(extra)
    return conf


@dataclass
class Consumed:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple
    ts_type: int
    ts: int


def watermarks(bootstrap: str, topic: str, partitions, timeout: float = 15) -> dict:
    c = Consumer(consumer_conf(bootstrap))
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout,
                                           cached=False)
                for p in partitions}
    finally:
        c.close()


def consume_range(bootstrap: str, topic: str, ends: dict, starts: dict | None = None,
                  timeout: float = 120, settle_s: float = 1.0, conf_extra=None) -> dict:
    """Read each partition p from starts[p] (default 0) until offset ends[p]
    is reached (exclusive), then poll `settle_s` more to catch anything extra.
    Returns {partition: [Consumed, ...]} in arrival order. Errors raise."""
    starts = starts or {p: 0 for p in ends}
    c = Consumer(consumer_conf(bootstrap, **(conf_extra or {})))
    got = {p: [] for p in ends}
    want = {p: max(0, ends[p] - starts[p]) for p in ends}
    errors = []
    try:
        c.assign([TopicPartition(topic, p, starts[p]) for p in ends])
        deadline = time.monotonic() + timeout
        max_polls = int(timeout * 20) + 100

        def take(msgs):
            for m in msgs:
                if m.error():
                    errors.append(m.error())
                    continue
                ts_type, ts = m.timestamp()
                got[m.partition()].append(Consumed(
                    m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                    tuple(m.headers() or ()), ts_type, ts))

        for _ in range(max_polls):
            if all(len(got[p]) >= want[p] for p in ends) or time.monotonic() > deadline:
                break
            take(c.consume(num_messages=10_000, timeout=0.5))
            if errors:
                break
        settle_deadline = time.monotonic() + settle_s
        while not errors and time.monotonic() < settle_deadline:
            take(c.consume(num_messages=10_000, timeout=0.2))
    finally:
        c.close()
    if errors:
        raise AssertionError(f"consumer errors for {topic}: {errors[:5]}")
    return got


def check_dense(got: dict, starts: dict | None = None, ends: dict | None = None) -> list[str]:
    """Offsets of each partition are exactly starts[p], starts[p]+1, ..."""
    problems = []
    for p, msgs in got.items():
        first = (starts or {}).get(p, 0)
        offs = [m.offset for m in msgs]
        want = list(range(first, first + len(offs)))
        if offs != want:
            bad = next(i for i, (a, b) in enumerate(zip(offs, want)) if a != b) \
                if any(a != b for a, b in zip(offs, want)) else len(want)
            problems.append(f"partition {p}: offsets not dense/increasing from {first}: "
                            f"at index {bad} got {offs[max(0, bad - 2):bad + 3]} "
                            f"(expected {want[max(0, bad - 2):bad + 3]})")
        if ends is not None and first + len(offs) != ends[p]:
            problems.append(f"partition {p}: read offsets {first}..{first + len(offs)} but "
                            f"the high watermark is {ends[p]}")
    return problems


def compare_exact(acked: dict, got: dict, check_ts: bool = True) -> list[str]:
    """Every acknowledged record is at its (partition, offset), byte for byte;
    nothing else was read. Returns a list of problems (empty = ok)."""
    problems = []
    seen = set()
    extra = []
    for p, msgs in got.items():
        for m in msgs:
            pos = (p, m.offset)
            seen.add(pos)
            want = acked.get(pos)
            if want is None:
                extra.append(pos)
                continue
            diffs = []
            if m.key != want.key:
                diffs.append(f"key {m.key!r:.80} != {want.key!r:.80}")
            if m.value != want.value:
                diffs.append(f"value (len {len(m.value or b'')}) {m.value!r:.80} != "
                             f"(len {len(want.value or b'')}) {want.value!r:.80}")
            if m.headers != tuple(want.headers):
                diffs.append(f"headers {m.headers!r:.200} != {want.headers!r:.200}")
            if check_ts and want.ts is not None and (m.ts_type, m.ts) != (TIMESTAMP_CREATE_TIME, want.ts):
                diffs.append(f"timestamp {(m.ts_type, m.ts)} != CreateTime {want.ts}")
            if diffs:
                problems.append(f"partition {p} offset {m.offset}: " + "; ".join(diffs))
    missing = sorted(set(acked) - seen)
    if missing:
        problems.append(f"{len(missing)} acknowledged records not read back, first: "
                        f"{missing[:10]}")
    if extra:
        problems.append(f"{len(extra)} records read that were never acknowledged, first: "
                        f"{extra[:10]}")
    return problems


def verify_topic(bootstrap: str, topic: str, partitions: int, acked: dict,
                 timeout: float = 120) -> dict:
    """Full check of a topic whose every record is in `acked`: watermarks
    (0, count) per partition, dense offsets, byte-identical records, nothing
    missing or extra. Returns the per-partition high watermarks."""
    counts = {p: 0 for p in range(partitions)}
    for (p, _off) in acked:
        counts[p] += 1
    wm = watermarks(bootstrap, topic, range(partitions))
    problems = []
    for p in range(partitions):
        if wm[p] != (0, counts[p]):
            problems.append(f"partition {p}: watermarks (low, high) = {wm[p]}, expected "
                            f"(0, {counts[p]}) from the delivery reports")
    ends = {p: max(counts[p], wm[p][1]) for p in range(partitions)}
    got = consume_range(bootstrap, topic, ends, timeout=timeout)
    problems += check_dense(got, ends=ends)
    problems += compare_exact(acked, got)
    assert not problems, f"topic {topic}:\n  " + "\n  ".join(problems[:30])
    return {p: wm[p][1] for p in range(partitions)}


def kafka_error_code(exc: BaseException):
    """The KafkaError code inside a KafkaException raised by an admin future."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].code()
    return None


def wait_until(pred, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll pred() until truthy (bounded); returns its last value or raises."""
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / interval) + 2):
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Listener:
    """A live search subscription's server-sent events, read on a thread
    (bounded by `timeout_s`): `(event name, data)` pairs as they come."""

    def __init__(self, url, timeout_s=60):
        self.events, self.ready, self.ended = [], threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._listen, args=(url, timeout_s), daemon=True)
        self.thread.start()

    def _listen(self, url, timeout_s):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as r:
                name = None
                for raw in r:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        self.events.append((name, json.loads(line[5:])))
                        if name == "subscribed":
                            self.ready.set()
        except OSError:
            pass  # the broker went, or the read timed out: `ended` says so
        finally:
            self.ended.set()

    def named(self, name):
        return [d for n, d in self.events if n == name]

    def hits(self):
        """(partition, offset) of every `hit` event, in order."""
        return [(d["partition"], d["offset"]) for d in self.named("hit")]

    def wait_hits(self, want, timeout_s):
        """Waits (bounded) until the hits delivered are the set `want`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and set(self.hits()) != want:
            time.sleep(0.1)
        return self.hits()
