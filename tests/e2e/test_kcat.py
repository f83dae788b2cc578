"""Debian's kcat (old librdkafka, 2.0.2 on bookworm) producing and consuming.

Skipped when kcat is not installed, unless CHRONIK_E2E_REQUIRE_KCAT=1 (set by
ci/test.sh, which installs it), in which case its absence fails."""

import os
import shutil
import subprocess

import pytest

from e2e_util import create_topic, production_producer_conf, produce_confluent, Rec

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
N = 400

if KCAT is None and os.environ.get("CHRONIK_E2E_REQUIRE_KCAT") == "1":
    raise RuntimeError("kcat is required (CHRONIK_E2E_REQUIRE_KCAT=1) but not installed")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed "
                                "(apt-get install kcat)")


def kcat(*args, input_bytes=None, timeout=60):
    r = subprocess.run([KCAT, *args], input=input_bytes, capture_output=True,
                       timeout=timeout)
    return r


def kcat_consume(bootstrap, topic, partition=0, fmt="%o\t%k\t%s\n"):
    r = kcat("-C", "-b", bootstrap, "-t", topic, "-p", str(partition), "-o", "beginning",
             "-e", "-q", "-f", fmt, "-X", "check.crcs=true")
    assert r.returncode == 0, f"kcat -C exit {r.returncode}: {r.stderr.decode()[-2000:]}"
    return r.stdout.decode().splitlines()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_produce_consume(broker, codec):
    topic = f"kcat-{codec}"  # auto-created by kcat's Metadata request
    lines = [f"key-{i}\tvalue-{codec}-{i}-" + "x" * (i % 50) for i in range(N)]
    r = kcat("-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-K", "\t",
             "-z", codec, "-X", "acks=all", "-X", "enable.idempotence=true",
             input_bytes=("\n".join(lines) + "\n").encode())
    assert r.returncode == 0, f"kcat -P exit {r.returncode}: {r.stderr.decode()[-2000:]}"

    out = kcat_consume(broker.bootstrap, topic)
    want = [f"{i}\t{line}" for i, line in enumerate(lines)]
    assert len(out) == N, f"kcat read {len(out)} records, expected {N}: {out[:3]} ... {out[-3:]}"
    assert out == want, next(f"first difference at {i}: {a!r} != {b!r}"
                             for i, (a, b) in enumerate(zip(out, want)) if a != b)


def test_kcat_reads_what_librdkafka_2_16_wrote(broker):
    """Old client reading new client's batches (zstd, headers)."""
    topic = "kcat-cross"
    create_topic(broker.bootstrap, topic, 1)
    recs = [Rec(f"k{i}".encode(), f"v{i}".encode(), (("h", f"{i}".encode()),), None)
            for i in range(N)]
    res = produce_confluent(production_producer_conf(broker.bootstrap, "zstd"), topic, recs,
                            partition=0)
    assert not res.failed and len(res.acked) == N
    out = kcat_consume(broker.bootstrap, topic, fmt="%o|%k|%s|%h\n")
    assert out == [f"{i}|k{i}|v{i}|h={i}" for i in range(N)], out[:5]


def test_kcat_metadata(broker):
    create_topic(broker.bootstrap, "kcat-meta", 3)
    r = kcat("-L", "-b", broker.bootstrap, "-t", "kcat-meta")
    assert r.returncode == 0, r.stderr.decode()
    text = r.stdout.decode()
    assert 'topic "kcat-meta" with 3 partitions' in text, text
    assert f"broker 1 at 127.0.0.1:{broker.port}" in text, text
