#!/usr/bin/env bash
# Cluster benchmark: produce throughput of 3 brokers with replication factor
# 3 as a ratio of one broker, acks=all latency on both, and leader failover
# time (kill -9 to the first acknowledged write) p50/p99. Prints figures;
# not a test.
#   bash ci/bench-cluster.sh
# Knobs: BENCH_CLUSTER_RECORDS (300000), BENCH_CLUSTER_KILLS (20),
# BENCH_CLUSTER_SESSION_MS (3000), BENCH_CLUSTER_LATENCY_RECORDS (2000), BENCH_SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p chronik-server
fi
CHRONIK_BIN="$PWD/target/release/chronik" exec python3 ci/bench_cluster.py
