#!/usr/bin/env bash
# Chronik against Apache Kafka on this machine, in one run, with the tools
# Kafka users measure with: Kafka's own kafka-producer-perf-test and
# kafka-consumer-perf-test (org.apache.kafka:kafka-tools 4.3.1, Maven Central)
# and librdkafka's rdkafka_performance (built from Debian's librdkafka 2.0.2
# source package against the system library). Prints each figure for both
# brokers and the ratio Chronik/Kafka. A benchmark, not a test.
#
#   bash ci/bench-vs-kafka.sh
#
# Knobs (environment): BENCH_RECORDS_100 (default 2000000), BENCH_RECORDS_1K
# (500000), BENCH_PARTITIONS (3), BENCH_LATENCY_RATE (records/s of the latency
# runs, 5000), BENCH_LATENCY_RECORDS (20000), BENCH_BROKER_ARGS (extra
# `chronik start` flags), BENCH_SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { echo "[bench-vs-kafka $(date +%T)] $*" >&2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else echo "need root or sudo to run: $*" >&2; return 1
  fi
}

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p chronik-server"
  cargo build --release -p chronik-server
fi
log "Apache Kafka and kafka-tools from Maven Central"
bash ci/kafka.sh classpath > /dev/null

RDPERF="$ROOT/target/rdkafka_performance"
if [ ! -x "$RDPERF" ]; then
  log "building rdkafka_performance from Debian's librdkafka source package"
  export DEBIAN_FRONTEND=noninteractive
  if ! dpkg -s librdkafka-dev >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends librdkafka-dev dpkg-dev
  fi
  src="$ROOT/target/rdkafka-src"
  rm -rf "$src" && mkdir -p "$src"
  if ! (cd "$src" && apt-get source -qq librdkafka) 2>/dev/null; then
    # Source packages need a deb-src entry (Debian images ship only deb).
    as_root tee /etc/apt/sources.list.d/chronik-deb-src.sources > /dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    as_root apt-get update -qq
    (cd "$src" && apt-get source -qq librdkafka)
  fi
  dir="$(find "$src" -maxdepth 1 -type d -name 'librdkafka-*' | head -1)"
  (cd "$dir" && ./configure --disable-ssl --disable-sasl > configure.log 2>&1)
  gcc -O2 -I "$dir/src" -I "$dir" "$dir/examples/rdkafka_performance.c" -o "$RDPERF" -lrdkafka -lm -lpthread
fi

exec python3 ci/bench_vs_kafka.py --rdkafka-performance "$RDPERF" --chronik "$ROOT/target/release/chronik"
