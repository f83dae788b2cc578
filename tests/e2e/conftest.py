"""Fixtures for the end-to-end tests: a real `chronik` broker process.

The binary is taken from $CHRONIK_BIN, or <repo>/target/release/chronik.
Each test that asks for `broker` gets a fresh broker on a free loopback port
with its own data directory; its stderr goes to a file that is attached to the
report of a failing test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / "target" / "release" / "chronik"

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 300


def chronik_bin() -> Path:
    return Path(os.environ.get("CHRONIK_BIN", str(DEFAULT_BIN)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class BrokerError(AssertionError):
    pass


class Broker:
    """One chronik process at a time on a fixed data dir and port.

    `restart()` (graceful) and `kill9()` + `start()` reuse the same data
    directory and the same port, so clients reconnect to the same address.
    Every start and stop is logged into the same stderr file.
    """

    def __init__(self, bin_path: Path, data_dir: Path, log_path: Path,
                 port: int | None = None, extra_args=(), node_id: int = 1):
        self.bin_path = Path(bin_path)
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.port = port or free_port()
        # The search HTTP API, on a port of its own (the default 8080 would collide).
        self.http_port = free_port()
        # The gRPC admin service, likewise.
        self.rpc_port = free_port()
        self.extra_args = list(extra_args)
        self.node_id = node_id
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # Exit codes of every stop, in order: ("term"|"kill", returncode).
        self.exits: list[tuple[str, int]] = []

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        """Base URL of the search HTTP API."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def rpc(self) -> str:
        """host:port of the gRPC admin service."""
        return f"127.0.0.1:{self.rpc_port}"

    def _note(self, text: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(f"=== [e2e harness {time.strftime('%H:%M:%S')}] {text}\n")

    def _repick_taken_port(self) -> bool:
        """free_port() releases the port it found, so another process may
        take it before the broker binds it. If that is why the broker just
        exited, pick a new port for that listener (never one other nodes or
        clients already know: the Kafka port after a first start, the RPC
        port of a cluster member) and say so."""
        tail = self.log_text().rsplit("=== [e2e harness", 1)[-1]
        if "Address already in use" not in tail:
            return False
        in_cluster = "--controllers" in self.extra_args
        if "search HTTP API" in tail:
            self.http_port = free_port()
        elif "gRPC admin service" in tail and not in_cluster:
            self.rpc_port = free_port()
        elif f"cannot listen on {self.bootstrap}" in tail and self.starts == 1 and not in_cluster:
            self.port = free_port()
        else:
            return False
        self._note("a port was taken before the broker could bind it: retrying with a new one")
        return True

    def start(self, timeout: float = START_TIMEOUT_S, retries: int = 3) -> None:
        assert self.proc is None, "broker already running"
        if not self.bin_path.exists():
            pytest.fail(f"chronik binary not found at {self.bin_path}: build it with "
                        "`cargo build --release -p chronik-server` or set CHRONIK_BIN")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONIK_")}
        args = [str(self.bin_path), "start",
                "--data-dir", str(self.data_dir),
                "--kafka-listen", self.bootstrap,
                "--node-id", str(self.node_id), "--http-listen", f"127.0.0.1:{self.http_port}",
                "--rpc-listen", self.rpc, *self.extra_args]
        self.starts += 1
        self._note(f"start #{self.starts}: {' '.join(args)}")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=env)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                self.exits.append(("early", rc))
                if retries > 0 and self._repick_taken_port():
                    return self.start(timeout, retries - 1)
                raise BrokerError(f"chronik exited with code {rc} before accepting "
                                  f"connections on {self.bootstrap}; see its log "
                                  f"{self.log_path}")
            if port_accepts(self.port):
                return
            time.sleep(0.05)
        self.kill9()
        raise BrokerError(f"chronik did not accept connections on {self.bootstrap} "
                          f"within {timeout}s")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait; SIGKILL after `timeout`. Returns the exit code and
        raises if the shutdown was not graceful (exit code 0)."""
        if self.proc is None:
            return 0
        proc = self.proc
        self._note("SIGTERM")
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._note(f"no exit {timeout}s after SIGTERM: SIGKILL")
            proc.kill()
            rc = proc.wait(timeout=10)
            self.proc = None
            self.exits.append(("term-timeout", rc))
            raise BrokerError(f"chronik did not exit within {timeout}s of SIGTERM")
        self.proc = None
        self.exits.append(("term", rc))
        self._note(f"exited with code {rc} after SIGTERM")
        if rc != 0:
            raise BrokerError(f"chronik exited with code {rc} after SIGTERM (expected 0)")
        return rc

    def kill9(self) -> None:
        if self.proc is None:
            return
        self._note("SIGKILL")
        self.proc.kill()
        rc = self.proc.wait(timeout=10)
        self.exits.append(("kill", rc))
        self.proc = None

    def restart(self) -> None:
        """Graceful restart on the same data dir and port."""
        self.stop()
        self.start()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        all_lines = self.log_text().splitlines()
        head = ""
        if len(all_lines) > lines:
            head = f"[... {len(all_lines) - lines} earlier lines in {self.log_path}]\n"
        return head + "\n".join(all_lines[-lines:])


def _make_broker(request, tmp_path: Path, name: str, extra_args=(), node_id: int = 1) -> Broker:
    b = Broker(chronik_bin(), tmp_path / f"{name}-data", tmp_path / f"{name}.stderr.log",
               extra_args=extra_args, node_id=node_id)
    brokers = getattr(request.node, "_chronik_brokers", None)
    if brokers is None:
        brokers = request.node._chronik_brokers = []
    brokers.append(b)
    return b


def _teardown(b: Broker) -> None:
    problems = []
    if b.proc is not None:
        if b.proc.poll() is not None:
            rc = b.proc.returncode
            b.proc = None
            problems.append(f"chronik died during the test with exit code {rc}")
        else:
            try:
                b.stop()
            except BrokerError as e:
                problems.append(str(e))
    text = b.log_text()
    if "panicked at" in text:
        problems.append("chronik logged a panic ('panicked at' in its stderr)")
    if problems:
        raise BrokerError("; ".join(problems) + f" (log: {b.log_path})")


@pytest.fixture
def broker(request, tmp_path):
    """A running broker; yields the Broker (use `.bootstrap` for host:port)."""
    b = _make_broker(request, tmp_path, "chronik")
    b.start()
    yield b
    _teardown(b)


@pytest.fixture
def broker_factory(request, tmp_path):
    """Make brokers with extra command-line flags: factory(*extra_args)."""
    made = []

    def make(*extra_args) -> Broker:
        b = _make_broker(request, tmp_path, f"chronik{len(made)}", extra_args)
        made.append(b)
        b.start()
        return b

    yield make
    _teardown_all(made)


def _teardown_all(brokers) -> None:
    """Stops every broker, then reports every problem at once."""
    errors = []
    for b in brokers:
        try:
            _teardown(b)
        except BrokerError as e:
            errors.append(str(e))
    if errors:
        raise BrokerError("; ".join(errors))


@pytest.fixture
def cluster_factory(request, tmp_path):
    """Make an n-node cluster (every node a controller member, ids 1..n),
    started: factory(n, *extra_args) -> [Broker]."""
    made = []

    def make(n: int, *extra_args) -> list[Broker]:
        nodes = [_make_broker(request, tmp_path, f"node{i}", (), node_id=i) for i in range(1, n + 1)]
        voters = ",".join(f"{b.node_id}@{b.rpc}" for b in nodes)
        for b in nodes:
            b.extra_args = ["--controllers", voters, *extra_args]
        made.extend(nodes)
        for b in nodes:
            b.start()
        return nodes

    yield make
    _teardown_all(made)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or getattr(item, "_chronik_log_attached", False):
        return
    brokers = getattr(item, "_chronik_brokers", [])
    for b in brokers:
        rep.sections.append((f"chronik stderr ({b.log_path}, exits {b.exits})",
                             b.log_tail()))
    if brokers:
        item._chronik_log_attached = True


# ---- Apache Kafka itself, for the differential (oracle) tests ----------------

KAFKA_SH = REPO / "ci" / "kafka.sh"


def kafka_available() -> str | None:
    """Why Apache Kafka cannot run here, or None if it can."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


@pytest.fixture
def apache_kafka(tmp_path):
    """A fresh single-node Apache Kafka 4.x (KRaft) on a free loopback port;
    yields its bootstrap address. Skipped without Java and Maven unless
    CHRONIK_E2E_REQUIRE_KAFKA=1 (set by ci/test.sh), where that fails."""
    why = kafka_available()
    if why is not None:
        if os.environ.get("CHRONIK_E2E_REQUIRE_KAFKA") == "1":
            pytest.fail(f"Apache Kafka is required (CHRONIK_E2E_REQUIRE_KAFKA=1): {why}")
        pytest.skip(f"Apache Kafka cannot run: {why}")
    home = tmp_path / "apache-kafka"
    last = ""
    for _ in range(3):  # a free port can be taken between choosing and binding it
        port = free_port()
        r = subprocess.run(["bash", str(KAFKA_SH), "start", str(home), str(port)],
                           capture_output=True, text=True, timeout=180)
        if r.returncode == 0:
            break
        last = r.stdout + r.stderr
        subprocess.run(["bash", str(KAFKA_SH), "stop", str(home)], timeout=60)
        subprocess.run(["rm", "-rf", str(home)])
    else:
        pytest.fail(f"Apache Kafka did not start: {last[-3000:]}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(KAFKA_SH), "stop", str(home)], timeout=60)
