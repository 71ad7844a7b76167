#!/usr/bin/env bash
# Cost of rate limiting on the passthrough path: the load benchmark twice, the gateway beside nginx
# and the minimal hyper proxy — once without limits, once with a per-caller limit on the route and a
# vendor-account quota on the upstream (both far above the offered load, so nothing is refused: this
# measures the check, not the refusals). Target: at most 10% more gateway CPU per request.
#
#   benches/ratelimit.sh        (needs the harness set up: see ../shared/bench/README.md)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH:-$ROOT/../shared/bench}"
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/interlock"
STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$ROOT/benches/results"

ON=/tmp/interlock-bench-limits
rm -rf "$ON" && cp -r "$ROOT/benches/load/policies" "$ON"
cat >> "$ON/routes/all.yaml" <<YAML
  rate_limit:
    per_caller: [10000000/1s]
YAML
cat >> "$ON/upstreams/origin.yaml" <<YAML
quota:
  limits: [10000000/1s, 100000000000/1d]
  headers: x-ratelimit
YAML
"$BIN" check "$ON" > /dev/null

export TESTS="${TESTS:-h1-small}" ROUNDS="${ROUNDS:-3}"
for mode in off on; do
  pol="$ROOT/benches/load/policies"; [ "$mode" = on ] && pol="$ON"
  RESULTS="$ROOT/benches/results/limits-$mode-$STAMP.jsonl" GATEWAY_CMD="$BIN run --config $pol" \
    "$BENCH/run.sh" ${TARGETS:-nginx minproxy gateway} > /dev/null 2>&1
  echo "== rate limits $mode"
  python3 "$ROOT/benches/ratios.py" "$ROOT/benches/results/limits-$mode-$STAMP.jsonl"
done
