"""kafkajs 2.2.4 (Node.js): idempotent produce, a two-member group consumer
with manual commits, and the group admin API, against the real broker. The
checks live in tests/js/group_check.js; ci/test.sh installs kafkajs with
`npm ci` in tests/js."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[1] / "js"


def test_kafkajs_group_consumer(broker_factory):
    if not (JS / "node_modules" / "kafkajs").exists() or shutil.which("node") is None:
        if os.environ.get("CHRONIK_E2E_REQUIRE_JS") == "1":
            pytest.fail("kafkajs is not installed (ci/test.sh runs `npm ci` in tests/js)")
        pytest.skip("kafkajs is not installed; run: cd tests/js && npm ci")
    b = broker_factory("--group-initial-rebalance-delay-ms", "300")
    run = subprocess.run(["node", str(JS / "group_check.js"), b.bootstrap],
                         capture_output=True, text=True, timeout=180)
    print(run.stdout[-4000:])
    print(run.stderr[-4000:])
    assert run.returncode == 0, "the kafkajs check failed (see output above)"
    assert "kafkajs check passed" in run.stdout
