"""What the benchmark scripts (ci/bench_*.py) share: progress lines on
stderr and free loopback ports."""

import socket
import sys
import time


def logger(name):
    """A function printing `[name HH:MM:SS] msg` progress lines to stderr."""
    def log(msg):
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    return log


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
