#!/usr/bin/env bash
# The deterministic simulation: builds the madsim target into its own target
# dir and runs seeds, one process per seed (so a failing seed replays alone).
#
#   ci/sim.sh --seed S                 replay one seed; prints its trace hash
#   ci/sim.sh --seeds N [--start S]    run N seeds from S (default 1)
#   ci/sim.sh --check-determinism ...  run every seed twice and compare traces
#   ci/sim.sh --bug NAME --seeds N     self-test: a planted bug must be caught
#   ci/sim.sh --seeds 10000            the nightly sweep
# Extra arguments after `--` go to chronik-sim (see `chronik-sim --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

seed="" seeds="" start=1 bug="" determinism="" jobs="$(nproc)" extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --start) start="$2"; shift 2 ;;
    --bug) bug="$2"; shift 2 ;;
    --check-determinism) determinism="--check-determinism"; shift ;;
    --jobs) jobs="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "ci/sim.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$seed" ] && [ -z "$seeds" ]; then
  echo "usage: ci/sim.sh --seed S | --seeds N [--start S] [--bug NAME] [--check-determinism] [--jobs J]" >&2
  exit 2
fi

flags="--cfg madsim"
target="target/sim"
if [ -n "$bug" ]; then
  flags="$flags --cfg chronik_planted_bugs"
  target="target/sim-bugs"
fi
RUSTFLAGS="$flags" CARGO_TARGET_DIR="$target" cargo build -q -p chronik-sim
bin="$target/debug/chronik-sim"
args=()
[ -n "$bug" ] && args+=(--bug "$bug")
[ -n "$determinism" ] && args+=("$determinism")
args+=("${extra[@]}")

if [ -n "$seed" ]; then
  exec "$bin" --seed "$seed" "${args[@]}"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
t0=$SECONDS
seq "$start" $((start + seeds - 1)) | xargs -P "$jobs" -I{} sh -c \
  'bin=$0; out=$1; shift; "$bin" --seed {} "$@" > "$out/{}.out" 2>&1 || echo {} >> "$out/failed"' "$bin" "$out" "${args[@]}" \
  2>/dev/null || true
failed=0
[ -f "$out/failed" ] && failed=$(wc -l < "$out/failed")
wall=$((SECONDS - t0))

if [ -n "$bug" ]; then
  if [ "$failed" -gt 0 ]; then
    caught=$(sort -n "$out/failed" | head -5 | tr '\n' ' ')
    first=$(sort -n "$out/failed" | head -1)
    echo "planted bug $bug: caught by $failed of $seeds seeds (first: $caught)"
    grep -h -E '^\s*\[|panicked' "$out/$first.out" | head -3 || true
    echo "$seeds seeds, $failed failed (expected: the bug is planted)"
    exit 0
  fi
  echo "planted bug $bug: NOT caught by any of $seeds seeds"
  echo "$seeds seeds, 0 failed"
  exit 1
fi

for s in $( [ -f "$out/failed" ] && sort -n "$out/failed" ); do
  head -n 25 "$out/$s.out"
done
echo "simulated $seeds seeds in ${wall}s on $jobs jobs ($(( seeds * 60 / (wall > 0 ? wall : 1) )) seeds/min)"
echo "$seeds seeds, $failed failed"
[ "$failed" -eq 0 ]
