#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft, one node: broker and controller), from
# Maven Central, on loopback only: the oracle for tests/oracle and the other
# side of ci/bench-vs-kafka.sh.
#   bash ci/kafka.sh classpath            resolve the jars (tests/kafka/pom.xml)
#   bash ci/kafka.sh start DIR PORT       format DIR, start Kafka on 127.0.0.1:PORT, wait until it answers
#   bash ci/kafka.sh stop DIR             stop the broker started in DIR
#   bash ci/kafka.sh run DIR CLASS ARGS   run a class from the same class path (the perf tools)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
POM_DIR="$ROOT/tests/kafka"
CP_FILE="$POM_DIR/target/classpath.txt"

classpath() {
  if [ ! -s "$CP_FILE" ] || [ "$POM_DIR/pom.xml" -nt "$CP_FILE" ]; then
    (cd "$POM_DIR" && mvn -q -B dependency:build-classpath -Dmdep.outputFile=target/classpath.txt)
  fi
  cat "$CP_FILE"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {
  local dir="$1" port="$2"
  local cp controller
  cp="$(classpath)"
  controller="$(free_port)"
  mkdir -p "$dir"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  java -cp "$cp" kafka.tools.StorageTool format -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
    -c "$dir/server.properties" > "$dir/format.log" 2>&1
  # -Xmx1g: enough for the tests and benchmarks here, and two JVMs fit in 2 cores' worth of memory.
  nohup java -Xms512m -Xmx1g -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$cp" kafka.Kafka "$dir/server.properties" \
    > "$dir/kafka.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 600); do
    if port_open "$port"; then
      echo "Apache Kafka (pid $(cat "$dir/pid")) listening on 127.0.0.1:$port"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "Apache Kafka exited during start; log:" >&2; tail -50 "$dir/kafka.log" >&2; return 1
    fi
    sleep 0.1
  done
  echo "Apache Kafka did not listen on 127.0.0.1:$port within 60 s; log:" >&2; tail -50 "$dir/kafka.log" >&2
  stop "$dir"; return 1
}

stop() {
  local dir="$1" pid
  [ -f "$dir/pid" ] || return 0
  pid="$(cat "$dir/pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  classpath) classpath ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  run) cp="$(classpath)"; java -Xmx1g -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$cp" "$@" ;;
  *) echo "usage: $0 classpath | start DIR PORT | stop DIR | run CLASS ARGS..." >&2; exit 2 ;;
esac
