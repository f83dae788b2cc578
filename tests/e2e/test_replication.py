"""Topic replication across a 3-node cluster, through real processes and a
real client (confluent-kafka, i.e. librdkafka):

- a topic created with replication factor 3 through the ordinary Kafka admin
  API gets a leader and an ISR of three on every partition; acks=all writes
  are consumed back whole, and every replica ends with the same log;
- an idempotent acks=all producer keeps writing while the partition's leader
  is killed with kill -9, twice, and restarted: every acknowledged record is
  consumed exactly once afterwards, and the three replicas hold identical
  logs (compared byte for byte on disk).
"""

import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from test_grpc_admin import admin_stub, pb  # noqa: F401  (pb is a fixture)

SESSION_MS = 1500
LAG_MS = 3000
WAIT_S = 60


def start_cluster(cluster_factory):
    return cluster_factory(3, "--broker-session-timeout-ms", str(SESSION_MS), "--replica-lag-time-max-ms", str(LAG_MS))


def bootstrap(nodes):
    return ",".join(n.bootstrap for n in nodes if n.proc is not None)


def create_topic(nodes, name, partitions, rf=3, configs=None):
    admin = AdminClient({"bootstrap.servers": bootstrap(nodes)})
    deadline = time.monotonic() + WAIT_S
    while True:
        # Right after start the brokers may not all be unfenced yet.
        fut = admin.create_topics([NewTopic(name, partitions, rf, config=configs or {})], operation_timeout=10)[name]
        try:
            fut.result(timeout=30)
            return
        except KafkaException as e:
            if time.monotonic() > deadline:
                raise
            if "INVALID_REPLICATION_FACTOR" not in str(e) and "REQUEST_TIMED_OUT" not in str(e):
                raise
            time.sleep(0.5)


def partition_state(nodes, topic):
    """{partition: (leader, sorted isr)} as the first live node's Metadata says."""
    md = AdminClient({"bootstrap.servers": bootstrap(nodes)}).list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return {}
    return {p.id: (p.leader, sorted(p.isrs)) for p in t.partitions.values()}


def wait_state(nodes, topic, ok, what):
    deadline = time.monotonic() + WAIT_S
    state = None
    while time.monotonic() < deadline:
        try:
            state = partition_state(nodes, topic)
        except KafkaException:
            state = None
        if state and ok(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"{what}: not reached within {WAIT_S}s, last state {state}")


def consume_all(nodes, topic, partitions):
    """Every record of the topic, per partition, in offset order: [(partition, offset, value)]."""
    c = Consumer({"bootstrap.servers": bootstrap(nodes), "group.id": f"check-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        ends = {}
        for p in range(partitions):
            _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out, seen = [], {p: 0 for p in range(partitions)}
        deadline = time.monotonic() + WAIT_S
        while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append((m.partition(), m.offset(), m.value().decode()))
            seen[m.partition()] = m.offset() + 1
        assert all(seen[p] >= ends[p] for p in ends), f"consumed up to {seen}, high watermarks {ends}"
        return out
    finally:
        c.close()


def partition_logs(node, topic, partition):
    """The partition's segment files on `node`, concatenated in offset order."""
    dirs = [d for d in (Path(node.data_dir) / "topics").iterdir() if d.name.startswith(topic + ".")]
    assert len(dirs) == 1, dirs
    segs = sorted((dirs[0] / str(partition)).glob("*.log"))
    return b"".join(s.read_bytes() for s in segs)


def test_rf3_topic_replicates_to_every_broker(cluster_factory):
    nodes = start_cluster(cluster_factory)
    create_topic(nodes, "rep", 3)
    wait_state(nodes, "rep", lambda s: len(s) == 3 and all(l > 0 and isr == [1, 2, 3] for l, isr in s.values()),
               "a leader and a full ISR on every partition")
    p = Producer({"bootstrap.servers": bootstrap(nodes), "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    acked, errors = [], []

    def done(err, msg):
        (errors if err else acked).append(err or msg.value().decode())

    for i in range(600):
        p.produce("rep", value=f"v{i}".encode(), key=str(i).encode(), on_delivery=done)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:5]
    assert len(acked) == 600
    got = consume_all(nodes, "rep", 3)
    assert sorted(v for _, _, v in got) == sorted(f"v{i}" for i in range(600))
    # Every replica has the same log once the followers caught up.
    for n in nodes:
        n.stop()
    for part in range(3):
        logs = [partition_logs(n, "rep", part) for n in nodes]
        assert logs[0] and logs[0] == logs[1] == logs[2], f"partition {part}: replicas differ ({[len(x) for x in logs]} bytes)"
    for n in nodes:
        assert "panicked at" not in n.log_text()


def test_idempotent_acks_all_producer_survives_kill9_of_the_leader(cluster_factory):
    nodes = start_cluster(cluster_factory)
    by_id = {n.node_id: n for n in nodes}
    create_topic(nodes, "fo", 1, configs={"min.insync.replicas": "2"})
    state = wait_state(nodes, "fo", lambda s: s.get(0, (-1, []))[0] > 0 and s[0][1] == [1, 2, 3], "a leader and a full ISR")

    acked, errors = [], []
    ack_times = []
    stop = threading.Event()

    def produce():
        p = Producer({"bootstrap.servers": ",".join(n.bootstrap for n in nodes), "acks": "all", "enable.idempotence": True,
                      "linger.ms": 2, "message.timeout.ms": 120000, "retry.backoff.ms": 50,
                      "topic.metadata.refresh.interval.ms": 500})

        def done(err, msg):
            if err:
                errors.append(str(err))
            else:
                acked.append(msg.value().decode())
                ack_times.append(time.monotonic())

        i = 0
        while not stop.is_set():
            try:
                p.produce("fo", value=f"m{i}".encode(), on_delivery=done)
                i += 1
            except BufferError:
                pass
            p.poll(0.002)
        assert p.flush(120) == 0

    t = threading.Thread(target=produce)
    t.start()
    failovers = []
    try:
        time.sleep(2)
        for _ in range(2):
            leader = state[0][0]
            before = len(acked)
            killed_at = time.monotonic()
            by_id[leader].kill9()
            state = wait_state([n for n in nodes if n.proc], "fo",
                               lambda s: s.get(0, (-1, []))[0] not in (-1, leader), "a new leader")
            # Writes go on: the next acknowledgement after the kill.
            deadline = time.monotonic() + WAIT_S
            while len(acked) <= before + 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(acked) > before + 10, f"no writes acknowledged after killing leader {leader}"
            first = next(ts for ts in ack_times[before:] if ts > killed_at)
            failovers.append(first - killed_at)
            by_id[leader].start()
            state = wait_state(nodes, "fo", lambda s: s.get(0, (-1, []))[1] == [1, 2, 3], "the restarted broker back in the ISR")
            time.sleep(1)
    finally:
        stop.set()
        t.join(180)
    print(f"failover (kill -9 to first acknowledged write): {[round(f, 2) for f in failovers]} s; {len(acked)} acknowledged")
    assert not errors, errors[:5]
    got = [v for _, _, v in consume_all(nodes, "fo", 1)]
    # Exactly once: every acknowledged record, none twice.
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} records duplicated"
    missing = set(acked) - set(got)
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    # And the replicas converge to identical logs.
    wait_state(nodes, "fo", lambda s: s[0][1] == [1, 2, 3], "a full ISR")
    time.sleep(2)
    for n in nodes:
        n.stop()
    logs = [partition_logs(n, "fo", 0) for n in nodes]
    assert logs[0] == logs[1] == logs[2], f"replicas differ: {[len(x) for x in logs]} bytes"
    for n in nodes:
        assert "panicked at" not in n.log_text()


def test_topic_admin_goes_through_the_controller(cluster_factory, pb):
    """Config changes, new partitions and deletion reach every broker, from
    the Kafka admin API and the gRPC admin service alike."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions
    m, _ = pb
    nodes = start_cluster(cluster_factory)
    create_topic(nodes, "adm", 2)
    admin = AdminClient({"bootstrap.servers": bootstrap(nodes)})
    res = ConfigResource(ConfigResource.Type.TOPIC, "adm",
                         incremental_configs=[ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    admin.create_partitions([NewPartitions("adm", 4)])["adm"].result(timeout=30)

    def described(node):
        r = admin_stub(pb, node).DescribeTopics(m.DescribeTopicsRequest(names=["adm"]), timeout=10)
        return r.topics[0]

    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        ts = [described(n) for n in nodes]
        if all(dict(t.overrides).get("retention.ms") == "3600000" and len(t.partitions) == 4 for t in ts):
            break
        time.sleep(0.2)
    assert all(dict(t.overrides).get("retention.ms") == "3600000" and len(t.partitions) == 4 for t in ts), ts
    # Every partition has three replicas, the same leader seen from every broker.
    assert all(len(p.replicas) == 3 for p in ts[0].partitions)
    assert [[p.leader for p in t.partitions] for t in ts] == [[p.leader for p in ts[0].partitions]] * 3

    # The gRPC admin service creates replicated topics too, idempotently.
    stub = admin_stub(pb, nodes[1])
    created = stub.CreateTopic(m.CreateTopicRequest(name="viagrpc", partitions=2, replication_factor=3), timeout=30)
    assert created.created and all(len(p.replicas) == 3 for p in created.topic.partitions)
    again = stub.CreateTopic(m.CreateTopicRequest(name="viagrpc", partitions=2, replication_factor=3), timeout=30)
    assert not again.created

    admin.delete_topics(["adm"], operation_timeout=30)["adm"].result(timeout=30)
    assert stub.DeleteTopic(m.DeleteTopicRequest(name="viagrpc"), timeout=30).deleted
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        left = [t.name for n in nodes for t in admin_stub(pb, n).DescribeTopics(m.DescribeTopicsRequest(), timeout=10).topics]
        if not left:
            break
        time.sleep(0.2)
    assert not left, left
    for n in nodes:
        assert "panicked at" not in n.log_text()


def test_a_group_meets_at_one_coordinator_whichever_broker_its_members_ask(cluster_factory, pb):
    nodes = start_cluster(cluster_factory)
    create_topic(nodes, "grp", 4)
    wait_state(nodes, "grp", lambda s: len(s) == 4 and all(l > 0 for l, _ in s.values()), "leaders")
    consumers = [Consumer({"bootstrap.servers": n.bootstrap, "group.id": "g1", "auto.offset.reset": "earliest",
                           "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}) for n in nodes[:2]]
    try:
        for c in consumers:
            c.subscribe(["grp"])
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for c in consumers:
                c.poll(0.2)
            got = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
            if sorted(got[0] + got[1]) == [0, 1, 2, 3] and got[0] and got[1]:
                break
        assert sorted(got[0] + got[1]) == [0, 1, 2, 3] and got[0] and got[1], f"assignments {got}: one group, one coordinator"
        # The gRPC admin service lists the cluster's groups from any broker
        # (each asks the others; `local_only` lists only its own).
        m, _ = pb
        for n in nodes:
            listed = admin_stub(pb, n).ListGroups(m.ListGroupsRequest(), timeout=10).groups
            assert [(g.group_id, g.state) for g in listed] == [("g1", "Stable")], listed
        local = [len(admin_stub(pb, n).ListGroups(m.ListGroupsRequest(local_only=True), timeout=10).groups) for n in nodes]
        assert sorted(local) == [0, 0, 1], f"one coordinator holds the group: {local}"
    finally:
        for c in consumers:
            c.close()


def offsets_partition(group, partitions=50):
    """Kafka's choice of a group's __consumer_offsets partition: abs(Java hashCode) % n."""
    h = 0
    for c in group:  # ASCII group ids: one UTF-16 unit per character
        h = (31 * h + ord(c)) & 0xFFFFFFFF
    h = h - (1 << 32) if h >= 1 << 31 else h
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def test_committed_offsets_survive_kill9_of_the_group_coordinator(cluster_factory):
    """The coordinator of a group is the leader of its __consumer_offsets
    partition; killing it moves the group to the new leader with every
    committed offset, twice over (the second time with the first killed
    coordinator restarted and back in the ISR, so either it or the third
    broker may take over)."""
    nodes = start_cluster(cluster_factory)
    by_id = {n.node_id: n for n in nodes}
    create_topic(nodes, "co", 1)
    p = Producer({"bootstrap.servers": bootstrap(nodes), "acks": "all"})
    for i in range(100):
        p.produce("co", value=f"r{i}".encode())
    assert p.flush(60) == 0
    group, part = "cg-kill", offsets_partition("cg-kill")

    def consume_and_commit(n, expect_first):
        c = Consumer({"bootstrap.servers": bootstrap(nodes), "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        try:
            c.subscribe(["co"])
            got, deadline = [], time.monotonic() + WAIT_S
            while len(got) < n and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is not None and not m.error():
                    got.append(m)
            assert len(got) == n, f"consumed {len(got)} of {n}"
            assert got[0].offset() == expect_first, f"resumed at {got[0].offset()}, committed {expect_first}"
            committed = c.commit(message=got[-1], asynchronous=False)
            assert committed[0].error is None and committed[0].offset == expect_first + n, committed
        finally:
            c.close()

    def coordinator():
        admin = AdminClient({"bootstrap.servers": bootstrap(nodes)})
        return admin.describe_consumer_groups([group])[group].result(timeout=30).coordinator.id

    consume_and_commit(40, 0)
    offsets_leader = lambda s: s.get(part, (-1, []))[0]
    state = wait_state(nodes, "__consumer_offsets", lambda s: offsets_leader(s) > 0 and len(s) == 50, "leaders of __consumer_offsets")
    first = coordinator()
    assert first == offsets_leader(state), f"coordinator {first}, leader of __consumer_offsets-{part} {offsets_leader(state)}"

    by_id[first].kill9()
    wait_state(nodes, "__consumer_offsets", lambda s: offsets_leader(s) not in (-1, first), "a new leader of the group's partition")
    consume_and_commit(30, 40)  # resumes at the offset committed at the killed coordinator
    second = coordinator()
    assert second != first

    by_id[first].start()
    wait_state(nodes, "__consumer_offsets", lambda s: s.get(part, (-1, []))[1] == [1, 2, 3], "the restarted broker back in the ISR")
    by_id[second].kill9()
    wait_state(nodes, "__consumer_offsets", lambda s: offsets_leader(s) not in (-1, second), "another new leader")
    consume_and_commit(10, 70)
    for n in nodes:
        assert "panicked at" not in n.log_text()
