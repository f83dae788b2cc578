#!/usr/bin/env bash
# Throughput benchmark of a single release broker with Apache Kafka's own
# perf tools (org.apache.kafka:kafka-tools from Maven Central). Prints figures;
# it is not a test and asserts nothing beyond the tools succeeding.
#
#   bash ci/bench.sh
#
# Knobs (environment):
#   BENCH_RECORDS      records to produce and consume     (default 5000000)
#   BENCH_RECORD_SIZE  bytes per record value             (default 100)
#   BENCH_PRODUCER_PROPS  extra producer props, space separated
#                      (default "linger.ms=5 batch.size=1048576")
#   BENCH_BROKER_ARGS  extra `chronik start` flags (e.g. "--flush-interval-ms 2")
#   CHRONIK_BIN        broker binary (default: target/release/chronik, built here)
#   BENCH_SKIP_BUILD=1 do not run cargo build
#
# Produce: kafka-tools ProducerPerformance, acks=all (the Java producer is
# idempotent by default), one partition, --throughput -1.
# Consume: kafka-tools ConsumerPerformance, a consumer-group member.
# For the same figures against Apache Kafka in the same run, see
# ci/bench-vs-kafka.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

RECORDS=${BENCH_RECORDS:-5000000}
RECORD_SIZE=${BENCH_RECORD_SIZE:-100}
PRODUCER_PROPS=${BENCH_PRODUCER_PROPS:-"linger.ms=5 batch.size=1048576"}
BROKER_ARGS=${BENCH_BROKER_ARGS:-}
TOPIC=bench
KAFKA_TOOLS_VERSION=4.3.1

log() { echo "[bench $(date +%T)] $*" >&2; }

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ] && [ -z "${CHRONIK_BIN:-}" ]; then
  log "cargo build --release -p chronik-server"
  cargo build --release -p chronik-server
fi
BIN=${CHRONIK_BIN:-$ROOT/target/release/chronik}
[ -x "$BIN" ] || { echo "no broker binary at $BIN" >&2; exit 1; }

command -v java >/dev/null || { echo "java (17+) is required" >&2; exit 1; }
command -v mvn >/dev/null || { echo "maven (mvn) is required" >&2; exit 1; }

log "resolving kafka-tools $KAFKA_TOOLS_VERSION (maven, tests/kafka/pom.xml)"
CP="$(bash ci/kafka.sh classpath)"
JAVA=(java -Xms512m -Xmx2g -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$CP")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chronik-bench.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BOOTSTRAP=127.0.0.1:$PORT
BROKER_PID=

cleanup() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

log "starting chronik on $BOOTSTRAP (data in $WORK/data) $BROKER_ARGS"
# shellcheck disable=SC2086
"$BIN" start --data-dir "$WORK/data" --kafka-listen "$BOOTSTRAP" --http-listen 127.0.0.1:0 --rpc-listen 127.0.0.1:0 --node-id 1 $BROKER_ARGS \
  2>"$WORK/broker.log" &
BROKER_PID=$!
for i in $(seq 1 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  kill -0 "$BROKER_PID" 2>/dev/null || { cat "$WORK/broker.log" >&2; echo "broker exited" >&2; exit 1; }
  [ "$i" = 300 ] && { echo "broker not listening after 30 s" >&2; exit 1; }
  sleep 0.1
done

log "creating topic $TOPIC (1 partition) with kafka-tools TopicCommand"
timeout 120 "${JAVA[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
  --create --topic "$TOPIC" --partitions 1 --replication-factor 1 >&2

log "producing $RECORDS x $RECORD_SIZE-byte records, acks=all, $PRODUCER_PROPS"
# shellcheck disable=SC2086
timeout 1800 "${JAVA[@]}" org.apache.kafka.tools.ProducerPerformance \
  --topic "$TOPIC" --num-records "$RECORDS" --record-size "$RECORD_SIZE" --throughput -1 \
  --command-property bootstrap.servers="$BOOTSTRAP" acks=all $PRODUCER_PROPS \
  | tee "$WORK/produce.txt" >&2
PRODUCE_LINE=$(grep '99th' "$WORK/produce.txt" | tail -1)
[ -n "$PRODUCE_LINE" ] || { echo "no summary line from ProducerPerformance" >&2; exit 1; }

log "consuming $RECORDS records with ConsumerPerformance (a consumer group)"
timeout 1800 "${JAVA[@]}" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$BOOTSTRAP" \
  --topic "$TOPIC" --num-records "$RECORDS" --timeout 60000 --group chronik-bench \
  | tee "$WORK/consume.txt" >&2
# start.time, end.time, MB, MB/sec, nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
CONSUME_LINE=$(grep -E '^[0-9]{4}-' "$WORK/consume.txt" | tail -1)
[ -n "$CONSUME_LINE" ] || { echo "no summary line from ConsumerPerformance" >&2; exit 1; }

log "stopping the broker (SIGTERM)"
kill -TERM "$BROKER_PID"
BROKER_RC=0
wait "$BROKER_PID" || BROKER_RC=$?
BROKER_PID=
DISK=$(du -sh "$WORK/data" | cut -f1)

# "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency,
#  P50 ms 50th, P95 ms 95th, P99 ms 99th, P999 ms 99.9th."
field() { sed -E "s#.*[ ,(]([0-9.]+) $1.*#\\1#" <<<"$2"; }
P_RATE=$(field 'records/sec' "$PRODUCE_LINE")
P_MB=$(field 'MB/sec' "$PRODUCE_LINE")
P_AVG=$(field 'ms avg latency' "$PRODUCE_LINE")
P50=$(field 'ms 50th' "$PRODUCE_LINE")
P99=$(field 'ms 99th' "$PRODUCE_LINE")
P999=$(field 'ms 99.9th' "$PRODUCE_LINE")
C_RATE=$(cut -d, -f10 <<<"$CONSUME_LINE" | tr -d ' ')
C_MB=$(cut -d, -f9 <<<"$CONSUME_LINE" | tr -d ' ')
C_REBALANCE=$(cut -d, -f7 <<<"$CONSUME_LINE" | tr -d ' ')

cat <<EOF

=== Chronik benchmark: $RECORDS records x $RECORD_SIZE bytes, 1 partition, acks=all ===
machine: $(nproc) cores, client and broker on the same host (loopback)
broker:  $BIN $BROKER_ARGS (exit code $BROKER_RC after SIGTERM; $DISK on disk)
produce: kafka-tools $KAFKA_TOOLS_VERSION ProducerPerformance, props: acks=all $PRODUCER_PROPS
         $(printf '%.0f' "$P_RATE") msgs/s, $P_MB MB/s, latency avg $P_AVG ms, p50 $P50 ms, p99 $P99 ms, p99.9 $P999 ms
consume: kafka-tools $KAFKA_TOOLS_VERSION ConsumerPerformance (group member; rates exclude the $C_REBALANCE ms join)
         $(printf '%.0f' "$C_RATE") msgs/s, $C_MB MB/s
raw:     $PRODUCE_LINE
         $CONSUME_LINE
EOF
