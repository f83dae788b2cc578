#!/usr/bin/env bash
# Search benchmark: index throughput, produce throughput with search on as a
# ratio of search off, query latency while ingesting, and freshness, on one
# release broker. Prints figures; not a test.
#   bash ci/bench-search.sh
# Knobs: BENCH_SEARCH_RECORDS (1000000), BENCH_SEARCH_QUERIES (200 per type),
# BENCH_SEARCH_FRESHNESS (200 records), BENCH_SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p chronik-server
fi
exec python3 ci/bench_search.py "$PWD/target/release/chronik"
