"""Go clients (franz-go 1.22 and sarama 1.61, from the Go module proxy):
idempotent acks=all produce, a two-member consumer group reading every
record exactly once with commits, and the group admin API, against the real
broker. The checks live in tests/go; ci/test.sh builds them into
tests/go/target/chronik-go-e2e."""

import os
import subprocess
from pathlib import Path

import pytest

BIN = Path(__file__).resolve().parents[1] / "go" / "target" / "chronik-go-e2e"


@pytest.mark.parametrize("client", ["franz", "sarama"])
def test_go_client_group(broker_factory, client):
    if not BIN.exists():
        if os.environ.get("CHRONIK_E2E_REQUIRE_GO") == "1":
            pytest.fail("tests/go is not built (ci/test.sh builds it)")
        pytest.skip("tests/go is not built; run: cd tests/go && go build -o target/chronik-go-e2e .")
    b = broker_factory("--group-initial-rebalance-delay-ms", "300")
    run = subprocess.run([str(BIN), client, b.bootstrap], capture_output=True, text=True, timeout=180)
    print(run.stdout[-4000:])
    print(run.stderr[-4000:])
    assert run.returncode == 0, f"the {client} check failed (see output above)"
    assert f"{client} check passed" in run.stdout
