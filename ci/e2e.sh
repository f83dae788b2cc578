#!/usr/bin/env bash
# End-to-end tests with real Kafka clients against the release broker.
# Expects the binary at target/release/chronik (or $CHRONIK_BIN) and the
# Python packages of tests/requirements.txt; ci/test.sh provides both.
# Extra arguments go to pytest (e.g. `bash ci/e2e.sh -k kcat -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

export CHRONIK_BIN="${CHRONIK_BIN:-$PWD/target/release/chronik}"
if [ ! -x "$CHRONIK_BIN" ]; then
  echo "ci/e2e.sh: no broker binary at $CHRONIK_BIN;" \
       "run \`cargo build --release -p chronik-server\` first" >&2
  exit 1
fi
export PYTHONDONTWRITEBYTECODE=1
export PYTHONUNBUFFERED=1

# Bounded as a whole; the suite takes a few minutes. pytest exits non-zero
# (5) if it collected no test, so an empty run fails too.
exec timeout --kill-after=30 1800 \
  python3 -m pytest tests/e2e -v -p no:cacheprovider --durations=10 "$@"
