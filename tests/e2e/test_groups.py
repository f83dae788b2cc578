"""Consumer groups end to end: real clients' group consumers against the
real binary, with both group protocols, member changes mid-stream, manual
commits, and a kill -9 of the broker.

Every loop is bounded in iterations and wall-clock time.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from e2e_util import create_topic

# Groups' first rebalance waits for more members (Kafka's 3 s default);
# shorter here so the tests spend their time on the interesting parts.
GROUP_ARGS = ("--group-initial-rebalance-delay-ms", "300",
              "--group-consumer-heartbeat-interval-ms", "500")
PARTITIONS = 6
DEADLINE_S = 120
# What a commit may be refused with while the group rebalances.
REBALANCE_ERRORS = (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
                    KafkaError.STALE_MEMBER_EPOCH)


def produce(bootstrap: str, topic: str, start: int, n: int) -> dict:
    """Produces records start..start+n (key = value = their number) with an
    idempotent acks=all producer; returns {(partition, offset): number}."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 2})
    acked = {}

    def report(err, msg):
        assert err is None, err
        acked[(msg.partition(), msg.offset())] = int(msg.value())

    for i in range(start, start + n):
        p.produce(topic, key=str(i).encode(), value=str(i).encode(), on_delivery=report)
        if i % 200 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    assert len(acked) == n
    return acked


class Member:
    """One group consumer in its own thread, as applications run them. It
    commits synchronously after every batch it processes, so whatever it
    consumed is committed before it can lose the partition (revocation
    happens inside consume(), on this thread)."""

    def __init__(self, name: str, bootstrap: str, group: str, topic: str, protocol: str):
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
        if protocol == "consumer":
            conf["group.protocol"] = "consumer"
        else:
            conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                         "partition.assignment.strategy": protocol})
        self.name = name
        self.seen: list[tuple[int, int, int]] = []  # (partition, offset, number)
        self.errors: list = []
        self.refused_commits = 0
        self.c = Consumer(conf)
        self.c.subscribe([topic], on_revoke=self._on_revoke)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            deadline = time.monotonic() + DEADLINE_S + 60
            while not self._stop.is_set() and time.monotonic() < deadline:
                self.step()
        finally:
            self.c.close()

    def _on_revoke(self, consumer, partitions) -> None:
        # Commit what was processed before giving partitions up, so the next
        # owner starts exactly there (the usual pattern with manual commits).
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:
                self.errors.append(e.args[0])

    def step(self) -> None:
        msgs = self.c.consume(num_messages=200, timeout=0.1)
        got = False
        for m in msgs:
            if m.error():
                self.errors.append(m.error())
                continue
            got = True
            self.seen.append((m.partition(), m.offset(), int(m.value())))
        if got:
            try:
                self.c.commit(asynchronous=False)
            except KafkaException as e:
                if e.args[0].code() in REBALANCE_ERRORS:
                    # Refused mid-rebalance, as Kafka does too; the next
                    # commit, or the one in on_revoke, covers these records.
                    self.refused_commits += 1
                else:
                    self.errors.append(e.args[0])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), f"{self.name} did not stop"


def run_group(bootstrap: str, topic: str, group: str, protocol: str, total: int) -> list[Member]:
    """Three members consume while records keep arriving; one member leaves
    at a third of the way and a new one joins at two thirds. Returns every
    member once all `total` records have been consumed."""
    members = [Member(f"m{i}", bootstrap, group, topic, protocol) for i in range(3)]
    produced = 0
    chunk = total // 10
    deadline = time.monotonic() + DEADLINE_S
    left = joined = False
    while time.monotonic() < deadline:
        if produced < total:
            produce(bootstrap, topic, produced, chunk)
            produced += chunk
        time.sleep(0.1)
        consumed = sum(len(m.seen) for m in members)
        if not left and consumed >= total // 3:
            members[1].close()
            left = True
        if left and not joined and consumed >= 2 * total // 3:
            members.append(Member("m3", bootstrap, group, topic, protocol))
            joined = True
        if produced >= total and consumed >= total and joined:
            time.sleep(2)  # a little longer, to catch any record delivered twice
            break
    for m in members:
        m.close()
    return members


def check_exactly_once(members: list[Member], total: int) -> None:
    seen = [s for m in members for s in m.seen]
    numbers = sorted(n for _, _, n in seen)
    dupes = len(numbers) - len(set(numbers))
    missing = set(range(total)) - set(numbers)
    assert dupes == 0 and not missing, (
        f"{dupes} records consumed twice, {len(missing)} never consumed "
        f"(e.g. {sorted(missing)[:5]}); per member: "
        + ", ".join(f"{m.name}={len(m.seen)}" for m in members))
    # Offsets within a partition are consumed in order, without gaps across
    # members' hand-overs.
    by_partition: dict[int, list[int]] = {}
    for p, o, _ in sorted(seen):
        by_partition.setdefault(p, []).append(o)
    for p, offsets in by_partition.items():
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), f"partition {p} has gaps"
    busy = [m.name for m in members if m.seen]
    assert len(busy) >= 3, f"the work was not shared: only {busy} consumed"


def committed(bootstrap: str, group: str, topic: str) -> dict:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def ends(bootstrap: str, topic: str) -> dict:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=15, cached=False)[1]
                for p in range(PARTITIONS)}
    finally:
        c.close()


@pytest.mark.parametrize("protocol", ["range", "cooperative-sticky", "consumer"])
def test_group_members_share_the_work_exactly_once(broker_factory, protocol):
    b = broker_factory(*GROUP_ARGS)
    topic, group, total = f"work-{protocol}", f"g-{protocol}", 6000
    create_topic(b.bootstrap, topic, PARTITIONS)
    members = run_group(b.bootstrap, topic, group, protocol, total)
    try:
        check_exactly_once(members, total)
        for m in members:
            assert not [e for e in m.errors if e.code() not in (KafkaError._NO_OFFSET,)], \
                f"{m.name}: {m.errors[:5]}"
    finally:
        for m in members:
            m.close()
    # The group's commits are exactly the end of every partition.
    assert committed(b.bootstrap, group, topic) == ends(b.bootstrap, topic)


def test_commits_survive_kill9(broker_factory):
    b = broker_factory(*GROUP_ARGS)
    topic, group = "resume", "g-resume"
    create_topic(b.bootstrap, topic, PARTITIONS)
    produce(b.bootstrap, topic, 0, 3000)
    m = Member("first", b.bootstrap, group, topic, "range")
    deadline = time.monotonic() + 60
    while len(m.seen) < 1500 and time.monotonic() < deadline:
        time.sleep(0.05)
    m.close()  # leaves the group; its last batch was committed synchronously
    assert len(m.seen) >= 1500
    before = committed(b.bootstrap, group, topic)
    b.kill9()
    b.start()
    after = committed(b.bootstrap, group, topic)
    assert after == before, "acknowledged commits must survive kill -9"
    # A new member resumes from the commits: together they read each record once.
    m2 = Member("second", b.bootstrap, group, topic, "range")
    deadline = time.monotonic() + 60
    while len(m.seen) + len(m2.seen) < 3000 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)
    m2.close()
    firsts = {}
    for p, o, _ in m2.seen:
        firsts.setdefault(p, o)
    # Where it started: each partition's commit, or the beginning if none.
    assert all(firsts[p] == max(before[p], 0) for p in firsts), (firsts, before)
    numbers = sorted(n for _, _, n in m.seen + m2.seen)
    # Every batch was committed synchronously, so nothing is read twice.
    assert numbers == list(range(3000))


def test_kafka_python_group_consumer(broker_factory):
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata, TopicPartition as KTP

    b = broker_factory(*GROUP_ARGS)
    topic, group = "kp-group", "kp-g"
    create_topic(b.bootstrap, topic, PARTITIONS)
    produce(b.bootstrap, topic, 0, 1200)
    consumers = [KafkaConsumer(topic, bootstrap_servers=b.bootstrap, group_id=group,
                               enable_auto_commit=False, auto_offset_reset="earliest",
                               client_id=f"kp{i}", session_timeout_ms=6000,
                               heartbeat_interval_ms=500, consumer_timeout_ms=500)
                 for i in range(2)]
    got = []
    per = [0, 0]
    deadline = time.monotonic() + 60
    try:
        while len(got) < 1200 and time.monotonic() < deadline:
            for i, c in enumerate(consumers):
                batch = c.poll(timeout_ms=200, max_records=300)
                for tp, recs in batch.items():
                    for r in recs:
                        got.append(int(r.value))
                        per[i] += 1
                    c.commit({tp: OffsetAndMetadata(recs[-1].offset + 1, "", -1)})
        assert sorted(got) == list(range(1200)), f"{len(got)} consumed, {len(set(got))} distinct"
        assert all(per), f"both members should get partitions: {per}"
        assignment = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
        assert sorted(assignment[0] + assignment[1]) == list(range(PARTITIONS))
    finally:
        for c in consumers:
            c.close()
    # Its commits are visible to another client.
    assert committed(b.bootstrap, group, topic) == ends(b.bootstrap, topic)
    # A new member of the group resumes from them: it reads only what came after.
    produce(b.bootstrap, topic, 1200, 300)
    c = KafkaConsumer(topic, bootstrap_servers=b.bootstrap, group_id=group, enable_auto_commit=False,
                      auto_offset_reset="earliest", client_id="kp-resume", session_timeout_ms=6000,
                      heartbeat_interval_ms=500)
    later = []
    try:
        deadline = time.monotonic() + 60
        while len(later) < 300 and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200, max_records=300).values():
                later.extend(int(r.value) for r in recs)
        time.sleep(0.5)
        for recs in c.poll(timeout_ms=300).values():
            later.extend(int(r.value) for r in recs)
    finally:
        c.close()
    assert sorted(later) == list(range(1200, 1500)), f"{len(later)} read after resuming: {sorted(later)[:5]}..."


def test_group_admin(broker_factory):
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka import ConsumerGroupTopicPartitions

    b = broker_factory(*GROUP_ARGS)
    topic, group = "admin-t", "admin-g"
    create_topic(b.bootstrap, topic, PARTITIONS)
    produce(b.bootstrap, topic, 0, 600)
    m = Member("a", b.bootstrap, group, topic, "range")
    deadline = time.monotonic() + 30
    while len(m.seen) < 600 and time.monotonic() < deadline:
        time.sleep(0.05)
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    listed = a.list_consumer_groups(request_timeout=15).result()
    ids = {g.group_id: g for g in listed.valid}
    assert group in ids and ids[group].state == ConsumerGroupState.STABLE
    desc = a.describe_consumer_groups([group], request_timeout=15)[group].result()
    assert desc.state == ConsumerGroupState.STABLE
    assert len(desc.members) == 1 and desc.members[0].client_id == "a"
    assert sorted(tp.partition for tp in desc.members[0].assignment.topic_partitions) == list(range(PARTITIONS))
    # A group with members cannot be deleted.
    with pytest.raises(KafkaException) as e:
        a.delete_consumer_groups([group], request_timeout=15)[group].result()
    assert e.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
    m.close()
    offsets = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
    assert sum(tp.offset for tp in offsets.topic_partitions) == 600
    # Empty now: it can be deleted, and its offsets go with it.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        desc = a.describe_consumer_groups([group], request_timeout=15)[group].result()
        if desc.state == ConsumerGroupState.EMPTY:
            break
        time.sleep(0.2)
    a.delete_consumer_groups([group], request_timeout=15)[group].result()
    assert all(o < 0 for o in committed(b.bootstrap, group, topic).values())
    with pytest.raises(KafkaException) as e:
        a.delete_consumer_groups(["never-existed"], request_timeout=15)["never-existed"].result()
    assert e.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND


def test_static_member_restart_keeps_its_partitions(broker_factory):
    """KIP-345 with librdkafka: a member with group.instance.id that restarts
    within its session timeout gets its partitions back without a
    rebalance — the other member is never asked to give anything up."""
    b = broker_factory(*GROUP_ARGS)
    topic, group = "static-t", "static-g"
    create_topic(b.bootstrap, topic, PARTITIONS)
    produce(b.bootstrap, topic, 0, 600)
    events: list[tuple[str, str, list[int]]] = []

    def consumer(name: str) -> Consumer:
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "client.id": name,
                      "group.instance.id": name, "session.timeout.ms": 10000,
                      "heartbeat.interval.ms": 500, "partition.assignment.strategy": "range",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.subscribe([topic],
                    on_assign=lambda _c, ps: events.append((name, "assign", sorted(p.partition for p in ps))),
                    on_revoke=lambda _c, ps: events.append((name, "revoke", sorted(p.partition for p in ps))))
        return c

    def pump(cs, until, limit=30):
        deadline = time.monotonic() + limit
        while not until() and time.monotonic() < deadline:
            for c in cs:
                c.poll(0.05)
        assert until(), f"timed out; events: {events}"

    a, bee = consumer("static-a"), consumer("static-b")
    assigned = lambda name: [e for e in events if e[0] == name and e[1] == "assign" and e[2]]
    pump([a, bee], lambda: assigned("static-a") and assigned("static-b"))
    a_parts = assigned("static-a")[-1][2]
    b_events_before = [e for e in events if e[0] == "static-b"]
    a.close()  # a static member does not leave the group on close
    a2 = consumer("static-a")
    pump([a2, bee], lambda: len(assigned("static-a")) >= 2)
    assert assigned("static-a")[-1][2] == a_parts, "the restarted static member gets its partitions back"
    for _ in range(20):  # a little longer: nothing may happen to the other member
        a2.poll(0.05)
        bee.poll(0.05)
    assert [e for e in events if e[0] == "static-b"] == b_events_before, \
        f"the other member was disturbed: {events}"
    a2.close()
    bee.close()
