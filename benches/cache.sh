#!/usr/bin/env bash
# Cost of a cache hit against a cache miss on the passthrough load benchmark (h1-small), the
# gateway beside nginx and the minimal hyper proxy, measured side by side in one run:
#   miss: the route caches, but nothing can be stored (max_entry 1 byte): every request is looked
#         up, leads a flight, goes to the origin and streams back — the miss path;
#   hit:  the route caches the origin's answer for an hour: every request after the first is a hit.
# Target: hit <= 0.5x miss gateway CPU per request.
#
#   benches/cache.sh        (needs the harness set up: see ../shared/bench/README.md)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH:-$ROOT/../shared/bench}"
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/interlock"
STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$ROOT/benches/results"

for mode in miss hit; do
  dir=/tmp/interlock-bench-cache-$mode
  rm -rf "$dir" && cp -r "$ROOT/benches/load/policies" "$dir"
  entry=1MiB; [ "$mode" = miss ] && entry=1B
  cat >> "$dir/routes/all.yaml" <<YAML
  cache:
    ttl: 1h
    shared: true
    max_entry: $entry
YAML
  "$BIN" check "$dir" > /dev/null
done

export TESTS="${TESTS:-h1-small}" ROUNDS="${ROUNDS:-3}"
for mode in miss hit; do
  RESULTS="$ROOT/benches/results/cache-$mode-$STAMP.jsonl" GATEWAY_CMD="$BIN run --config /tmp/interlock-bench-cache-$mode" \
    "$BENCH/run.sh" ${TARGETS:-nginx minproxy gateway} > /dev/null 2>&1
  echo "== cache $mode"
  python3 "$ROOT/benches/ratios.py" "$ROOT/benches/results/cache-$mode-$STAMP.jsonl"
done
