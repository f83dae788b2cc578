"""Run by Debian's own Python with Debian's python3-confluent-kafka (1.7.0 on
librdkafka 2.0.2): an old client, as distributions ship it. Produces
idempotently with acks=all, consumes half as a group member that commits
synchronously and leaves, resumes with a second member from the commits, and
checks that every acknowledged record was read once, byte-identical.

    /usr/bin/python3 debian_librdkafka_check.py BOOTSTRAP TOPIC CODEC
Prints one JSON line; exits non-zero with the reason on any failure."""

import json
import sys
import time

import confluent_kafka
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 3
N = 3000
TIMEOUT_S = 90


def fail(why):
    print(json.dumps({"ok": False, "why": why}))
    sys.exit(1)


def main():
    bootstrap, topic, codec = sys.argv[1:4]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                  "compression.codec": codec, "linger.ms": 5})
    acked = {}
    errors = []

    def on_delivery(sent):
        # What was sent, not what the report echoes (1.7.0 reports no headers).
        def report(err, msg):
            if err is not None:
                errors.append(str(err))
                return
            pos = (msg.partition(), msg.offset())
            if pos in acked:
                errors.append(f"two records acknowledged at {pos}")
            acked[pos] = sent
        return report

    for i in range(N):
        value = (f"debian-{codec}-{i:06d}|" + "x" * (i % 300)).encode() + bytes([i % 256]) * (i % 13)
        headers = [("i", str(i).encode())] if i % 3 else None
        while True:
            try:
                key = f"k{i}".encode()
                p.produce(topic, key=key, value=value, headers=headers,
                          on_delivery=on_delivery((key, value, tuple(headers or ()))))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    if p.flush(TIMEOUT_S) != 0:
        fail("producer did not flush in time")
    if errors or len(acked) != N:
        fail(f"{len(acked)} of {N} acknowledged; errors: {errors[:5]}")

    seen = {}
    group = f"debian-{topic}"

    def member(stop_after):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "session.timeout.ms": 10000})
        c.subscribe([topic])
        firsts, read = {}, 0
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while len(seen) < N and (stop_after is None or read < stop_after):
                if time.monotonic() > deadline:
                    fail(f"{len(seen)} of {N} read after {TIMEOUT_S}s")
                msgs = c.consume(200, 0.2)
                last = {}
                for m in msgs:
                    if m.error():
                        fail(f"consume error: {m.error()}")
                    pos = (m.partition(), m.offset())
                    if pos in seen:
                        fail(f"record {pos} read twice")
                    firsts.setdefault(m.partition(), m.offset())
                    seen[pos] = (m.key(), m.value(), tuple(m.headers() or ()))
                    last[m.partition()] = m.offset()
                    read += 1
                if last:
                    c.commit(offsets=[TopicPartition(topic, q, o + 1) for q, o in last.items()],
                             asynchronous=False)
        finally:
            c.close()
        return firsts

    member(N // 2)
    committed = {q: max([o for (pp, o) in seen if pp == q], default=-1) + 1 for q in range(PARTITIONS)}
    firsts = member(None)
    if any(firsts.get(q, committed[q]) != committed[q] for q in range(PARTITIONS)):
        fail(f"second member did not resume at the commits: {firsts} vs {committed}")
    if set(seen) != set(acked):
        fail(f"{len(set(acked) - set(seen))} acknowledged records not read")
    bad = [pos for pos in acked if seen[pos] != acked[pos]]
    if bad:
        fail(f"{len(bad)} records differ, first at {bad[0]}")
    print(json.dumps({"ok": True, "client": confluent_kafka.version()[0],
                      "librdkafka": confluent_kafka.libversion()[0], "records": N}))


main()
