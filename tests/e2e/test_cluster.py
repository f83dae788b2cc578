"""The controller quorum through real processes: three `chronik start
--controllers ...` nodes elect a leader over gRPC, register as brokers and
keep their sessions alive; kill -9 of the leader elects another and fences
the dead broker; restarted, it registers again and is unfenced.

A node of another cluster is refused (`--cluster-id`). Replication through
real processes is in test_replication.py."""

import time

import grpc

from test_grpc_admin import admin_stub, pb  # noqa: F401  (pb is a fixture)

SESSION_MS = 1500
WAIT_S = 30


def view(pb, node):
    """(controller id, {broker id: fenced}) as `node` sees them, or None if it cannot answer."""
    m, _ = pb
    try:
        stub = admin_stub(pb, node)
        r = stub.DescribeCluster(m.DescribeClusterRequest(), timeout=5)
    except (grpc.RpcError, grpc.FutureTimeoutError):
        return None
    return r.controller_id, {b.node_id: b.fenced for b in r.brokers}


def wait_agreement(pb, nodes, want_fenced, exclude_leader=None):
    """Waits until every node names the same leader (not `exclude_leader`)
    and sees exactly `want_fenced` for each broker."""
    deadline = time.monotonic() + WAIT_S
    views = None
    while time.monotonic() < deadline:
        views = [view(pb, n) for n in nodes]
        leaders = {v[0] for v in views if v}
        if all(views) and len(leaders) == 1 and -1 not in leaders and exclude_leader not in leaders \
                and all(v[1] == want_fenced for v in views):
            return leaders.pop()
        time.sleep(0.2)
    raise AssertionError(f"no agreement within {WAIT_S}s: {views} (want {want_fenced})")


def test_quorum_elects_fences_and_readmits(pb, cluster_factory):
    nodes = cluster_factory(3, "--broker-session-timeout-ms", str(SESSION_MS))
    leader = wait_agreement(pb, nodes, {1: False, 2: False, 3: False})
    by_id = {n.node_id: n for n in nodes}
    # Kafka clients see every broker and the quorum's leader as controller.
    from confluent_kafka.admin import AdminClient
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        md = AdminClient({"bootstrap.servers": nodes[0].bootstrap}).list_topics(timeout=10)
        if sorted(md.brokers) == [1, 2, 3] and md.controller_id == leader:
            break
        time.sleep(0.2)
    assert sorted(md.brokers) == [1, 2, 3] and md.controller_id == leader, (md.brokers, md.controller_id)

    by_id[leader].kill9()
    rest = [n for n in nodes if n.node_id != leader]
    want = {1: False, 2: False, 3: False}
    want[leader] = True
    new_leader = wait_agreement(pb, rest, want, exclude_leader=leader)
    assert new_leader != leader
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        md = AdminClient({"bootstrap.servers": rest[0].bootstrap}).list_topics(timeout=10)
        if sorted(md.brokers) == sorted(n.node_id for n in rest):
            break
        time.sleep(0.2)
    assert sorted(md.brokers) == sorted(n.node_id for n in rest), "a fenced broker is not offered to clients"

    by_id[leader].start()
    wait_agreement(pb, nodes, {1: False, 2: False, 3: False})
    for n in nodes:
        assert "panicked at" not in n.log_text()


def test_controlled_shutdown_fences_at_once_and_a_wrong_node_id_is_refused(pb, cluster_factory, request, tmp_path):
    from conftest import BrokerError, _make_broker
    # A long session: only a controlled shutdown can fence within the wait below.
    nodes = cluster_factory(3, "--broker-session-timeout-ms", "60000")
    wait_agreement(pb, nodes, {1: False, 2: False, 3: False})
    follower = nodes[2]
    t0 = time.monotonic()
    follower.stop()
    wait_agreement(pb, nodes[:2], {1: False, 2: False, 3: True})
    assert time.monotonic() - t0 < 30, "fenced by the controlled shutdown, not by its session expiring"
    # It registers again at once: its old incarnation is fenced.
    follower.start()
    wait_agreement(pb, nodes, {1: False, 2: False, 3: False})

    # A fourth process that claims node id 2 but listens elsewhere.
    imposter = _make_broker(request, tmp_path, "imposter", node_id=2)
    voters = ",".join(f"{b.node_id}@{b.rpc}" for b in nodes)
    imposter.extra_args = ["--controllers", voters]
    try:
        imposter.start(timeout=20)
        raise AssertionError("a second node 2 started")
    except BrokerError:
        pass
    assert "is --node-id 2 right?" in imposter.log_text()


def test_a_node_of_another_cluster_is_refused(pb, cluster_factory, request, tmp_path):
    """Named clusters (--cluster-id, like `kafka-storage format -t`): a
    member restarted under another cluster's name is refused at start with
    a clear error, and a node of another cluster started at a member's
    address cannot take part in this cluster's Raft (both sides refuse the
    other's messages) — this cluster goes on, and its member comes back
    untouched."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from conftest import BrokerError, _make_broker
    nodes = cluster_factory(3, "--cluster-id", "alpha", "--broker-session-timeout-ms", str(SESSION_MS))
    wait_agreement(pb, nodes, {1: False, 2: False, 3: False})
    admin = AdminClient({"bootstrap.servers": nodes[0].bootstrap})
    admin.create_topics([NewTopic("alpha-topic", 1, 3)])["alpha-topic"].result(timeout=30)
    third = nodes[2]
    third.stop()

    # Its own data directory under another cluster's name: refused at start.
    alpha_args = third.extra_args
    third.extra_args = [a if a != "alpha" else "beta" for a in alpha_args]
    try:
        third.start(timeout=20)
        raise AssertionError("a member of cluster alpha started as cluster beta")
    except BrokerError:
        pass
    assert "belongs to cluster alpha" in third.log_text() and "not to cluster beta" in third.log_text()

    # A one-node cluster "beta" whose node 3 listens at node 3's address:
    # alpha's leader keeps sending it Raft messages, which it refuses.
    stranger = _make_broker(request, tmp_path, "stranger", node_id=3)
    stranger.rpc_port = third.rpc_port
    stranger.extra_args = ["--controllers", f"3@{third.rpc}", "--cluster-id", "beta"]
    stranger.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and "refusing Raft traffic" not in stranger.log_text():
            time.sleep(0.2)
        assert "refusing Raft traffic: inconsistent cluster id: this member is cluster beta, the peer cluster alpha" in stranger.log_text()
        # Alpha goes on without its third member, which it fences.
        leader = wait_agreement(pb, nodes[:2], {1: False, 2: False, 3: True})
        assert leader in (1, 2)
    finally:
        stranger.stop()

    # Node 3 on a fresh data directory with a typo in --cluster-id: alpha's
    # members and it refuse each other's Raft messages; rather than wait for
    # ever, it exits, saying why.
    typo = _make_broker(request, tmp_path, "typo", node_id=3)
    typo.rpc_port = third.rpc_port
    typo.extra_args = ["--controllers", ",".join(f"{b.node_id}@{b.rpc}" for b in nodes), "--cluster-id", "alpah"]
    try:
        try:
            typo.start()
        except BrokerError:
            pass  # it may give up before its Kafka port is checked
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and typo.running():
            time.sleep(0.5)
        assert not typo.running(), "a node with the wrong --cluster-id kept running"
        assert "is --cluster-id (or --controllers) right?" in typo.log_text()
        assert "came from cluster alpha, but it was started with --cluster-id alpah" in typo.log_text()
    finally:
        typo.kill9()
    # Node 3 comes back as itself, with alpha's topic.
    third.extra_args = alpha_args
    third.start()
    wait_agreement(pb, nodes, {1: False, 2: False, 3: False})
    md = AdminClient({"bootstrap.servers": third.bootstrap}).list_topics(timeout=10)
    assert "alpha-topic" in md.topics
    for n in nodes:
        assert "panicked at" not in n.log_text()


def test_without_a_quorum_metadata_changes_stop_but_reads_go_on(pb, cluster_factory):
    """Two of three members killed: the last one cannot change metadata (a
    topic creation fails with a clear timeout instead of hanging), yet it
    keeps serving reads of the partition it leads; with the quorum back,
    changes go through again."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    nodes = cluster_factory(3, "--broker-session-timeout-ms", str(SESSION_MS))
    wait_agreement(pb, nodes, {1: False, 2: False, 3: False})
    admin = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in nodes)})
    admin.create_topics([NewTopic("kept", 1, 3)])["kept"].result(timeout=30)
    deadline = time.monotonic() + WAIT_S
    leader = -1
    while time.monotonic() < deadline and leader < 0:
        t = admin.list_topics("kept", timeout=10).topics["kept"]
        leader = t.partitions[0].leader if t.error is None and len(t.partitions[0].isrs) == 3 else -1
        time.sleep(0.2)
    assert leader > 0
    p = Producer({"bootstrap.servers": admin_bootstrap(nodes), "acks": "all"})
    for i in range(50):
        p.produce("kept", value=f"k{i}".encode())
    assert p.flush(30) == 0

    survivor = next(n for n in nodes if n.node_id == leader)
    for n in nodes:
        if n is not survivor:
            n.kill9()
    # Once its election timeout has passed, the survivor knows no quorum
    # leader and names itself controller (a client that kept the dead
    # leader as its controller would send it the creation, not the survivor).
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and (view(pb, survivor) or (0,))[0] not in (survivor.node_id, -1):
        time.sleep(0.2)
    assert (view(pb, survivor) or (0,))[0] in (survivor.node_id, -1), view(pb, survivor)
    lone = AdminClient({"bootstrap.servers": survivor.bootstrap})
    t0 = time.monotonic()
    try:
        lone.create_topics([NewTopic("refused", 1, 1)], operation_timeout=5)["refused"].result(timeout=60)
        raise AssertionError("a topic was created without a quorum")
    except Exception as e:  # noqa: BLE001 (the admin client wraps the Kafka error)
        assert "REQUEST_TIMED_OUT" in str(e) or "timed out" in str(e).lower(), e
    assert time.monotonic() - t0 < 60
    c = Consumer({"bootstrap.servers": survivor.bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition("kept", 0, 0)])
        got, deadline = [], time.monotonic() + WAIT_S
        while len(got) < 50 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value().decode())
        assert got == [f"k{i}" for i in range(50)], f"read {len(got)} of 50 without a quorum"
    finally:
        c.close()

    for n in nodes:
        if n is not survivor:
            n.start()
    wait_agreement(pb, nodes, {1: False, 2: False, 3: False})
    admin.create_topics([NewTopic("after", 1, 3)])["after"].result(timeout=30)
    for n in nodes:
        assert "panicked at" not in n.log_text()


def admin_bootstrap(nodes):
    return ",".join(n.bootstrap for n in nodes if n.proc is not None)
