"""Debian's python3-confluent-kafka (1.7.0 on librdkafka 2.0.2, bookworm) run
by Debian's own Python: old clients keep working. The scenario lives in
debian_librdkafka_check.py (it cannot import pytest or the pinned PyPI
packages). Skipped when the package is missing, unless
CHRONIK_E2E_REQUIRE_DEBIAN_CLIENT=1 (set by ci/test.sh, which installs it)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("debian_librdkafka_check.py")


def debian_client() -> str | None:
    if not os.path.exists(SYSTEM_PYTHON):
        return None
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import confluent_kafka as c; print(c.libversion()[0])"],
                       capture_output=True, text=True, timeout=60)
    return r.stdout.strip() if r.returncode == 0 else None


VERSION = debian_client()
if VERSION is None and os.environ.get("CHRONIK_E2E_REQUIRE_DEBIAN_CLIENT") == "1":
    raise RuntimeError("python3-confluent-kafka (Debian) is required but not importable by /usr/bin/python3")
pytestmark = pytest.mark.skipif(VERSION is None, reason="apt-get install python3-confluent-kafka")


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_debian_confluent_kafka_group_resumes(broker_factory, codec):
    broker = broker_factory("--group-initial-rebalance-delay-ms", "0")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    r = subprocess.run([SYSTEM_PYTHON, str(SCRIPT), broker.bootstrap, f"debian-{codec}", codec],
                       capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"ok": False, "why": r.stderr[-3000:]}
    assert r.returncode == 0 and result["ok"], result
    assert result["librdkafka"].startswith("2.0."), result
