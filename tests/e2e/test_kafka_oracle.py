"""Apache Kafka as the oracle: `chronik-oracle` sends the same request
sequences to a real Apache Kafka 4.x broker and to Chronik and compares the
answers field by field. Every difference must be listed, with its reason, in
tests/oracle/src/known.rs (and DESIGN.md); any other fails this test."""

import os
import subprocess
from pathlib import Path

from conftest import REPO

ORACLE = Path(os.environ.get("CHRONIK_ORACLE_BIN", str(REPO / "target" / "release" / "chronik-oracle")))


def test_chronik_answers_like_apache_kafka(apache_kafka, broker_factory):
    assert ORACLE.exists(), f"{ORACLE} missing: cargo build --release -p chronik-oracle"
    # Kafka's test broker runs with group.initial.rebalance.delay.ms=0 too.
    chronik = broker_factory("--group-initial-rebalance-delay-ms", "0")
    r = subprocess.run([str(ORACLE), "--kafka", apache_kafka, "--chronik", chronik.bootstrap],
                       capture_output=True, text=True, timeout=600)
    print(r.stdout)
    summary = [line for line in r.stdout.splitlines() if line.startswith("oracle:")]
    assert r.returncode == 0, (
        f"Chronik answered differently from Apache Kafka (exit {r.returncode}):\n"
        + "\n".join(line for line in r.stdout.splitlines()
                    if line.startswith(("  DIFF", "ERROR", "DIFFERENT")))[-6000:]
        + f"\n{r.stderr[-3000:]}")
    assert summary and " 0 unexplained" in summary[0], summary
