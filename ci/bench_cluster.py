"""The cluster benchmark (run by ci/bench-cluster.sh): prints figures, asserts nothing.

Release brokers on this machine, fresh data directories. Measures
  * produce throughput of a 3-broker cluster with a replication-factor-3
    topic (acks=all, idempotent, min.insync.replicas=2) as a ratio of one
    broker with the same topic at replication factor 1 (same producer
    settings, same records, 3 partitions);
  * acks=all produce latency, one 200-byte record at a time (each waits
    for its acknowledgement), p50/p99, on one broker and on the cluster;
  * leader failover time: kill -9 of the partition's leader to the first
    acknowledged write after it, over BENCH_CLUSTER_KILLS kills (the killed
    broker is restarted and rejoins the ISR before the next), p50/p99.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchlib import free_port, logger

RECORDS = int(os.environ.get("BENCH_CLUSTER_RECORDS", 300_000))
KILLS = int(os.environ.get("BENCH_CLUSTER_KILLS", 20))
LATENCY_RECORDS = int(os.environ.get("BENCH_CLUSTER_LATENCY_RECORDS", 2000))
SESSION_MS = int(os.environ.get("BENCH_CLUSTER_SESSION_MS", 3000))
BIN = Path(os.environ.get("CHRONIK_BIN", Path(__file__).resolve().parent.parent / "target" / "release" / "chronik"))


log = logger("bench-cluster")


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Node:
    def __init__(self, root, node_id, controllers=None):
        self.id, self.root = node_id, root
        self.kafka, self.rpc = free_port(), free_port()
        self.controllers = controllers
        self.proc = None

    def start(self):
        args = [str(BIN), "start", "--node-id", str(self.id), "--data-dir", str(self.root / f"n{self.id}"),
                "--kafka-listen", f"127.0.0.1:{self.kafka}", "--rpc-listen", f"127.0.0.1:{self.rpc}", "--http-listen", "off"]
        if self.controllers:
            args += ["--controllers", self.controllers, "--broker-session-timeout-ms", str(SESSION_MS)]
        self.log = open(self.root / f"n{self.id}.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not accepts(self.kafka):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"broker {self.id} did not start; see {self.root}/n{self.id}.log")
            time.sleep(0.05)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def bootstrap(nodes):
    return ",".join(f"127.0.0.1:{n.kafka}" for n in nodes if n.proc)


def create(nodes, topic, partitions, rf):
    admin = AdminClient({"bootstrap.servers": bootstrap(nodes)})
    deadline = time.monotonic() + 60
    while True:
        try:
            admin.create_topics([NewTopic(topic, partitions, rf, config={"min.insync.replicas": str(min(rf, 2))})])[topic].result(30)
            break
        except Exception as e:  # brokers may not all be registered yet
            if time.monotonic() > deadline:
                raise
            log(f"create {topic}: {e}; retrying")
            time.sleep(0.5)
    while True:
        md = admin.list_topics(topic, timeout=10).topics[topic]
        if md.error is None and len(md.partitions) == partitions and all(p.leader >= 0 and len(p.isrs) == rf for p in md.partitions.values()):
            return
        time.sleep(0.1)


def throughput(nodes, topic):
    p = Producer({"bootstrap.servers": bootstrap(nodes), "enable.idempotence": True, "acks": "all", "linger.ms": 5, "batch.size": 1_000_000})
    value = b"x" * 200
    t0 = time.monotonic()
    for i in range(RECORDS):
        while True:
            try:
                p.produce(topic, value=value, key=str(i).encode())
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(300) == 0
    return RECORDS / (time.monotonic() - t0)


def latency(nodes, topic, n=LATENCY_RECORDS):
    """acks=all round trips of single records, in seconds."""
    p = Producer({"bootstrap.servers": bootstrap(nodes), "enable.idempotence": True, "acks": "all", "linger.ms": 0})
    value = b"x" * 200
    p.produce(topic, value=value, partition=0)  # connections and producer id first
    assert p.flush(30) == 0
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        p.produce(topic, value=value, partition=0)
        assert p.flush(30) == 0
        times.append(time.monotonic() - t0)
    return times


def leader_of(nodes, topic):
    md = AdminClient({"bootstrap.servers": bootstrap(nodes)}).list_topics(topic, timeout=10).topics[topic]
    p = md.partitions[0]
    return p.leader, sorted(p.isrs)


def failovers(nodes, topic):
    by_id = {n.id: n for n in nodes}
    acked = []
    stop = threading.Event()

    def produce():
        p = Producer({"bootstrap.servers": bootstrap(nodes), "enable.idempotence": True, "acks": "all", "linger.ms": 0,
                      "message.timeout.ms": 120000, "retry.backoff.ms": 20, "topic.metadata.refresh.interval.ms": 500})
        while not stop.is_set():
            sent = time.monotonic()
            p.produce(topic, value=b"f", partition=0, on_delivery=lambda e, m, sent=sent: e is None and acked.append((sent, time.monotonic())))
            p.poll(0.005)
        p.flush(60)

    t = threading.Thread(target=produce)
    t.start()
    times = []
    try:
        for k in range(KILLS):
            time.sleep(1)
            leader, _ = leader_of(nodes, topic)
            killed = time.monotonic()
            by_id[leader].kill9()
            # The first write sent after the kill that is acknowledged (one
            # sent before may be answered a moment after the kill).
            while not any(s > killed for s, _ in list(acked)):
                time.sleep(0.01)
                if time.monotonic() - killed > 120:
                    raise SystemExit("no write acknowledged within 120 s of a kill")
            times.append(min(a for s, a in acked if s > killed) - killed)
            log(f"kill {k + 1}/{KILLS}: leader {leader}, first write acknowledged after {times[-1]:.2f} s")
            by_id[leader].start()
            while leader_of(nodes, topic)[1] != [1, 2, 3]:
                time.sleep(0.1)
    finally:
        stop.set()
        t.join(120)
    return times


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    root = Path(tempfile.mkdtemp(prefix="chronik-bench-cluster-"))
    nodes = []
    try:
        single = Node(root, 1)
        single.start()
        create([single], "solo", 3, 1)
        log(f"single broker: producing {RECORDS} records")
        solo = throughput([single], "solo")
        solo_latency = latency([single], "solo")
        single.stop()
        shutil.rmtree(root / "n1")

        probe = [Node(root, i) for i in (1, 2, 3)]
        controllers = ",".join(f"{n.id}@127.0.0.1:{n.rpc}" for n in probe)
        nodes = [Node(root, i, controllers) for i in (1, 2, 3)]
        for n, p in zip(nodes, probe):
            n.kafka, n.rpc = p.kafka, p.rpc
            n.start()
        create(nodes, "rep", 3, 3)
        log(f"3 brokers, replication factor 3: producing {RECORDS} records")
        rep = throughput(nodes, "rep")
        rep_latency = latency(nodes, "rep")
        fo = []
        if KILLS > 0:
            create(nodes, "fo", 1, 3)
            log(f"{KILLS} leader kills")
            fo = failovers(nodes, "fo")
        print(f"produce, 1 broker (RF 1):       {solo:,.0f} records/s (200-byte values, acks=all, idempotent)")
        print(f"produce, 3 brokers (RF 3):      {rep:,.0f} records/s")
        print(f"ratio:                          {rep / solo:.2f}")
        for name, xs in (("1 broker (RF 1)", solo_latency), ("3 brokers (RF 3)", rep_latency)):
            print(f"acks=all latency, {name + ':':17} p50 {pct(xs, 0.5) * 1000:.2f} ms, p99 {pct(xs, 0.99) * 1000:.2f} ms "
                  f"({len(xs)} records one at a time)")
        if fo:
            print(f"leader failover (kill -9 to first acknowledged write, session {SESSION_MS} ms), {len(fo)} kills: "
                  f"p50 {pct(fo, 0.5):.2f} s, p99 {pct(fo, 0.99):.2f} s, max {max(fo):.2f} s")
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
