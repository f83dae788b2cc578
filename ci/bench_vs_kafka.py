"""The measuring half of ci/bench-vs-kafka.sh (which builds what this needs).

One broker at a time on this machine, first Apache Kafka, then Chronik, each
fresh; the same tools and the same settings against both:
  * produce throughput: kafka-producer-perf-test (Java producer, acks=all,
    idempotent, its defaults) and rdkafka_performance -P (acks=all,
    idempotent), 100-byte and 1 KiB records, as fast as they go;
  * produce latency: both tools at a fixed rate, p50 and p99 of the time from
    send to acknowledgement;
  * consume throughput: kafka-consumer-perf-test and rdkafka_performance -G,
    both as consumer-group members, reading what the producers wrote.
Prints a table with the ratio Chronik/Kafka for every figure."""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib import free_port, logger

ROOT = Path(__file__).resolve().parents[1]
KAFKA_SH = ROOT / "ci" / "kafka.sh"


def env_int(name, default):
    return int(os.environ.get(name, default))


RECORDS = {100: env_int("BENCH_RECORDS_100", 2_000_000), 1024: env_int("BENCH_RECORDS_1K", 500_000)}
PARTITIONS = env_int("BENCH_PARTITIONS", 3)
LAT_RATE = env_int("BENCH_LATENCY_RATE", 5000)
LAT_RECORDS = env_int("BENCH_LATENCY_RECORDS", 20000)


log = logger("bench-vs-kafka")


def run(args, timeout=900):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args[:4]))}... failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout


def kafka_tool(cls, *args, timeout=900):
    return run(["bash", str(KAFKA_SH), "run", f"org.apache.kafka.tools.{cls}", *map(str, args)], timeout)


def create_topic(bootstrap, topic):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    time.sleep(1)  # Kafka elects the leaders asynchronously


def java_produce(bootstrap, topic, n, size, rate=-1):
    out = kafka_tool("ProducerPerformance", "--topic", topic, "--num-records", n, "--record-size", size,
                     "--throughput", rate, "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all")
    line = [l for l in out.splitlines() if "records sent" in l][-1]
    m = re.search(r"([\d.]+) records/sec \(([\d.]+) MB/sec\).* ([\d.]+) ms 50th, ([\d.]+) ms 95th, ([\d.]+) ms 99th", line)
    return {"msg/s": float(m[1]), "MB/s": float(m[2]), "p50 ms": float(m[4]), "p99 ms": float(m[5])}


def java_consume(bootstrap, topic, n):
    out = kafka_tool("ConsumerPerformance", "--bootstrap-server", bootstrap, "--topic", topic,
                     "--num-records", n, "--timeout", 60000, "--group", f"perf-{topic}")
    rows = [l for l in out.splitlines() if re.match(r"^\d{4}-\d\d-\d\d", l)]
    f = [x.strip() for x in rows[-1].split(",")]
    # start, end, MB, MB/s, nMsg, nMsg/s, rebalance ms, fetch ms, fetch MB/s, fetch nMsg/s
    return {"msg/s": float(f[9]), "MB/s": float(f[8])}


def rd_produce(rdperf, bootstrap, topic, n, size):
    out = run([rdperf, "-P", "-t", topic, "-b", bootstrap, "-s", str(size), "-c", str(n),
               "-X", "acks=all", "-X", "enable.idempotence=true", "-X", "linger.ms=5"])
    line = [l for l in out.splitlines() if "messages produced" in l][-1]
    m = re.search(r"([\d.]+) msgs/s and ([\d.]+) MB/s", line)
    return {"msg/s": float(m[1]), "MB/s": float(m[2])}


def rd_latency(rdperf, bootstrap, topic, n, size, rate, workdir):
    path = Path(workdir) / f"lat-{topic}.txt"
    run([rdperf, "-P", "-l", "-A", str(path), "-t", topic, "-b", bootstrap, "-s", str(size), "-c", str(n),
         "-r", str(rate), "-X", "acks=all", "-X", "enable.idempotence=true", "-X", "linger.ms=0"])
    lat = sorted(int(x) for x in path.read_text().split())
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000.0
    return {"p50 ms": pct(0.50), "p99 ms": pct(0.99)}


def rd_consume(rdperf, bootstrap, topic, n):
    out = run([rdperf, "-G", f"rd-{topic}", "-t", topic, "-b", bootstrap, "-c", str(n), "-e",
               "-X", "auto.offset.reset=earliest"])
    line = [l for l in out.splitlines() if "consumed in" in l][-1]
    m = re.search(r"([\d.]+) msgs/s \(([\d.]+) MB/s\)", line)
    return {"msg/s": float(m[1]), "MB/s": float(m[2])}


def measure(name, bootstrap, rdperf, workdir):
    results = {}
    for size, n in RECORDS.items():
        for tool in ("java", "rdkafka"):
            topic = f"{tool}-{size}"
            create_topic(bootstrap, topic)
            log(f"{name}: {tool} produce {n} x {size} B")
            results[("produce", tool, size)] = (java_produce(bootstrap, topic, n, size) if tool == "java"
                                                else rd_produce(rdperf, bootstrap, topic, n, size))
            log(f"{name}: {tool} consume {n} x {size} B")
            results[("consume", tool, size)] = (java_consume(bootstrap, topic, n) if tool == "java"
                                                else rd_consume(rdperf, bootstrap, topic, n))
            lat_topic = f"lat-{tool}-{size}"
            create_topic(bootstrap, lat_topic)
            log(f"{name}: {tool} latency at {LAT_RATE} records/s")
            results[("latency", tool, size)] = (java_produce(bootstrap, lat_topic, LAT_RECORDS, size, LAT_RATE)
                                                if tool == "java" else
                                                rd_latency(rdperf, bootstrap, lat_topic, LAT_RECORDS, size, LAT_RATE, workdir))
    return results


def wait_port(port, proc=None, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"broker exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rdkafka-performance", required=True)
    ap.add_argument("--chronik", required=True)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-vs-kafka-")
    all_results = {}
    try:
        port = free_port()
        kdir = Path(work) / "kafka"
        run(["bash", str(KAFKA_SH), "start", str(kdir), str(port)], timeout=180)
        try:
            all_results["Kafka"] = measure("Kafka", f"127.0.0.1:{port}", args.rdkafka_performance, work)
        finally:
            run(["bash", str(KAFKA_SH), "stop", str(kdir)], timeout=120)

        port = free_port()
        cdir = Path(work) / "chronik"
        extra = os.environ.get("BENCH_BROKER_ARGS", "").split()
        with open(Path(work) / "chronik.log", "wb") as logf:
            proc = subprocess.Popen([args.chronik, "start", "--data-dir", str(cdir), "--kafka-listen",
                                     f"127.0.0.1:{port}", "--http-listen", "127.0.0.1:0", "--rpc-listen", "127.0.0.1:0", *extra], stdout=logf, stderr=logf)
        try:
            wait_port(port, proc)
            all_results["Chronik"] = measure("Chronik", f"127.0.0.1:{port}", args.rdkafka_performance, work)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    k, c = all_results["Kafka"], all_results["Chronik"]
    print(f"\nChronik vs Apache Kafka 4.3.1, one broker each, acks=all, {PARTITIONS} partitions, "
          f"{os.cpu_count()} cores; latency runs at {LAT_RATE} records/s")
    print("Kafka acknowledges acks=all from the page cache (it never forces an fsync); Chronik after its fsync.")
    print(f"{'figure':64} {'Kafka':>12} {'Chronik':>12} {'Chronik/Kafka':>14}")
    for key in k:
        what, tool, size = key
        label_tool = "kafka-producer-perf-test" if (tool == "java" and what != "consume") else \
            "kafka-consumer-perf-test" if tool == "java" else "rdkafka_performance"
        for metric in k[key]:
            if what == "latency" and metric in ("msg/s", "MB/s"):
                continue  # a fixed rate
            if what == "produce" and metric == "p50 ms":
                continue  # at full speed latency is queueing; the latency rows measure it
            kv, cv = k[key][metric], c[key][metric]
            ratio = cv / kv if kv else float("nan")
            label = f"{what} {size} B {metric}" + (" at full speed" if what == "produce" and metric == "p99 ms" else "")
            print(f"{label + ' (' + label_tool + ')':64} {kv:12.2f} {cv:12.2f} {ratio:14.2f}")


if __name__ == "__main__":
    main()
