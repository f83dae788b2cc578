"""Producer run as a subprocess by test_kill9.py.

Produces COUNT records (idempotent, acks=all) at about RATE records/s to TOPIC
and appends one line per acknowledged record to ACKS_FILE as its delivery
report arrives ("partition offset value-hex"), flushing the file after every
poll, so whatever was acknowledged before the broker is killed is on record.
Failed deliveries go to ACKS_FILE + ".failed". Exits 0 when every record was
delivered, 2 when some failed, 3 on a fatal client error, 4 on a timeout.

usage: kill9_producer.py BOOTSTRAP TOPIC COUNT RATE ACKS_FILE DEADLINE_S
"""

import sys
import time

from confluent_kafka import Producer


def main() -> int:
    bootstrap, topic, count, rate, acks_path, deadline_s = sys.argv[1:7]
    count, rate, deadline_s = int(count), float(rate), float(deadline_s)
    acks = open(acks_path, "w")
    failed = open(acks_path + ".failed", "w")
    client_errors = []
    fatal = []

    def on_error(err):
        client_errors.append(err)
        if err.fatal():
            fatal.append(err)
        print(f"[kill9-producer] error_cb: {err}", file=sys.stderr, flush=True)

    p = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        # Long enough to ride out the broker being killed and restarted.
        "message.timeout.ms": 120_000,
        "request.timeout.ms": 10_000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "error_cb": on_error,
    })
    stats = {"ok": 0, "failed": 0}

    def on_delivery(err, msg):
        if err is not None:
            stats["failed"] += 1
            failed.write(f"{msg.value().hex()} {err}\n")
        else:
            stats["ok"] += 1
            acks.write(f"{msg.partition()} {msg.offset()} {msg.value().hex()}\n")

    start = time.monotonic()
    deadline = start + deadline_s
    for i in range(count):
        if fatal or time.monotonic() > deadline:
            break
        # Pace the stream so the broker can be killed in the middle of it.
        ahead = i / rate - (time.monotonic() - start)
        if ahead > 0:
            p.poll(ahead)
            acks.flush()
            failed.flush()
        value = f"kill9-value-{i:08d}".encode() + b"." * (i % 97)
        for _ in range(100_000):
            try:
                p.produce(topic, key=f"k{i}".encode(), value=value, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
                acks.flush()
                if time.monotonic() > deadline:
                    break
        if i % 500 == 0:
            p.poll(0)
            acks.flush()
            failed.flush()
    for _ in range(10_000):
        left = p.flush(0.2)
        acks.flush()
        failed.flush()
        if left == 0 or fatal or time.monotonic() > deadline:
            break
    left = len(p)
    acks.close()
    failed.close()
    print(f"[kill9-producer] acked={stats['ok']} failed={stats['failed']} "
          f"undelivered={left} fatal={[str(e) for e in fatal]} "
          f"errors={len(client_errors)} elapsed={time.monotonic() - start:.1f}s",
          file=sys.stderr, flush=True)
    if fatal:
        return 3
    if left:
        return 4
    if stats["failed"]:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
