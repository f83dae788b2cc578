"""The Apache Kafka Java client (kafka-clients 4.3.1, the reference client)
with its defaults against the real broker. The checks live in
tests/java/src/main/java/dev/chronik/e2e/JavaClientCheck.java; ci/test.sh
builds it and writes the classpath to tests/java/target/classpath.txt."""

import os
import subprocess
from pathlib import Path

import pytest

JAVA = Path(__file__).resolve().parents[1] / "java"
CLASSPATH = JAVA / "target" / "classpath.txt"
JAR = JAVA / "target" / "chronik-java-e2e-0.1.0.jar"


def test_java_client_defaults(broker):
    if not (CLASSPATH.exists() and JAR.exists()):
        if os.environ.get("CHRONIK_E2E_REQUIRE_JAVA") == "1":
            pytest.fail("tests/java is not built (ci/test.sh builds it)")
        pytest.skip("tests/java is not built; run: cd tests/java && mvn -q package dependency:build-classpath -Dmdep.outputFile=target/classpath.txt")
    cp = f"{JAR}:{CLASSPATH.read_text().strip()}"
    run = subprocess.run(
        ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", cp,
         "dev.chronik.e2e.JavaClientCheck", broker.bootstrap],
        capture_output=True, text=True, timeout=300,
    )
    print(run.stdout[-4000:])
    print(run.stderr[-4000:])
    assert run.returncode == 0, "the Java client check failed (see output above)"
    assert "java client check passed" in run.stdout
