"""kill -9 (or SIGTERM) of the broker in the middle of an idempotent acks=all
stream.

A producer subprocess writes every acknowledged (partition, offset, value) to
a file as the delivery reports arrive; the broker is SIGKILLed (twice) while
it produces and restarted on the same data dir and port. Afterwards every
acknowledged record must be at its offset, no value may appear twice, and
offsets must be dense."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e_util import check_dense, consume_range, create_topic, wait_until, watermarks

HERE = Path(__file__).resolve().parent
PARTITIONS = 3
COUNT = 150_000
RATE = 20_000          # records/s: the stream lasts ~7.5 s
KILL_AT = (30_000, 80_000)  # acknowledged records seen before each kill -9
DOWN_S = 1.0           # broker down time after each kill


def _acked_lines(path: Path) -> list[tuple[int, int, bytes]]:
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue  # a line being written right now
        out.append((int(parts[0]), int(parts[1]), bytes.fromhex(parts[2])))
    return out


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["kill9", "sigterm"])
def test_broker_stopped_during_idempotent_production(broker, tmp_path, stop):
    """stop=kill9: SIGKILL; stop=sigterm: graceful shutdown (exit 0) while
    clients have requests in flight. Either way the broker comes back on the
    same data dir and port while the producer keeps going."""
    topic = f"stopped-{stop}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    acks_path = tmp_path / "acked.txt"
    prod_log = tmp_path / "producer.stderr.log"
    with open(prod_log, "wb") as plog:
        prod = subprocess.Popen(
            [sys.executable, str(HERE / "kill9_producer.py"), broker.bootstrap, topic,
             str(COUNT), str(RATE), str(acks_path), "150"],
            stdin=subprocess.DEVNULL, stdout=plog, stderr=plog)
    try:
        kills = []
        for at in KILL_AT:
            wait_until(lambda: _count_lines(acks_path) >= at or prod.poll() is not None,
                       timeout=60, interval=0.05, what=f"{at} acknowledged records")
            if prod.poll() is not None:
                break
            seen = _count_lines(acks_path)
            if stop == "kill9":
                broker.kill9()
            else:
                broker.stop()  # raises unless the exit code is 0
            kills.append(seen)
            time.sleep(DOWN_S)
            broker.start()
        assert len(kills) == len(KILL_AT), (
            f"the producer finished before every {stop} (kills at {kills} acks); "
            f"raise COUNT or lower RATE")
        try:
            rc = prod.wait(timeout=180)
        except subprocess.TimeoutExpired:
            prod.kill()
            prod.wait(timeout=10)
            rc = None
    finally:
        if prod.poll() is None:
            prod.kill()
            prod.wait(timeout=10)
    producer_log = prod_log.read_text(errors="replace")

    acked = _acked_lines(acks_path)
    failed_lines = (tmp_path / "acked.txt.failed").read_text().splitlines() \
        if (tmp_path / "acked.txt.failed").exists() else []
    assert acked, f"nothing acknowledged; producer log:\n{producer_log[-3000:]}"

    problems = []
    by_pos = {}
    by_value = {}
    for p, off, v in acked:
        if (p, off) in by_pos and by_pos[(p, off)] != v:
            problems.append(f"two values acknowledged at partition {p} offset {off}: "
                            f"{by_pos[(p, off)]!r} and {v!r}")
        by_pos[(p, off)] = v
        if v in by_value and by_value[v] != (p, off):
            problems.append(f"value {v!r} acknowledged twice: at {by_value[v]} and {(p, off)}")
        by_value[v] = (p, off)

    wm = watermarks(broker.bootstrap, topic, range(PARTITIONS))
    ends = {p: wm[p][1] for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        if wm[p][0] != 0:
            problems.append(f"partition {p}: log start offset {wm[p][0]}, expected 0")
    got = consume_range(broker.bootstrap, topic, ends, timeout=120)
    problems += check_dense(got, ends=ends)

    in_log = {}
    dup_values = []
    for p, msgs in got.items():
        for m in msgs:
            if m.value in in_log:
                dup_values.append((m.value, in_log[m.value], (p, m.offset)))
            in_log[m.value] = (p, m.offset)
    if dup_values:
        problems.append(f"{len(dup_values)} values appear twice in the log, first: "
                        f"{dup_values[:5]}")
    missing = [(pos, v) for pos, v in by_pos.items() if in_log.get(v) != pos]
    if missing:
        detail = [(pos, v, in_log.get(v)) for pos, v in missing[:10]]
        problems.append(f"{len(missing)} acknowledged records are not at their acknowledged "
                        f"offset (acked position, value, position in log or None): {detail}")

    summary = (f"kills after {kills} acks; producer rc={rc}; acked={len(acked)} "
               f"failed={len(failed_lines)} log records={len(in_log)} "
               f"high watermarks={ends}")
    assert not problems, summary + "\n  " + "\n  ".join(problems[:20]) + \
        f"\nproducer log tail:\n{producer_log[-3000:]}"

    # The producer rides out both kills: idempotent retries after the restart
    # are deduplicated, so every record is delivered exactly once.
    assert rc == 0 and len(acked) == COUNT and not failed_lines, (
        summary + f"\nfirst failures: {failed_lines[:5]}\nproducer log tail:\n"
        f"{producer_log[-3000:]}")
    assert len(in_log) == COUNT, summary
