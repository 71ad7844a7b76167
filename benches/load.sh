#!/usr/bin/env bash
# Load benchmark: the gateway side by side with nginx, haproxy and the minimal hyper proxy, in one
# run of the shared harness (see ../shared/bench/README.md for its one-time setup).
#
#   benches/load.sh                      # 3 rounds x h1-small h1-large h2c-small, 8 s each
#   ROUNDS=2 DURATION=5 benches/load.sh  # quicker
#
# Results: benches/results/<timestamp>.jsonl and a table; copy the table into docs/performance.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH:-$ROOT/../shared/bench}"
[ -x "$BENCH/run.sh" ] || { echo "no bench harness at $BENCH (set BENCH=...)" >&2; exit 2; }
(cd "$ROOT" && cargo build --release --quiet)
mkdir -p "$ROOT/benches/results"
export RESULTS="${RESULTS:-$ROOT/benches/results/$(date +%Y%m%d-%H%M%S).jsonl}"
export TESTS="${TESTS:-h1-small h1-large h2c-small}"
export GATEWAY_CMD="$ROOT/target/release/interlock run --config $ROOT/benches/load/policies"
"$BENCH/run.sh" ${TARGETS:-nginx haproxy minproxy gateway}
python3 "$BENCH/summarize.py" "$RESULTS" --md
