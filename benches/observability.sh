#!/usr/bin/env bash
# Cost of full observability on the passthrough path: the load benchmark twice, each time the
# gateway beside the minimal hyper proxy — once with audit/tracing/access log off, once with the
# audit trail to a file, 10% trace sampling to an OTLP sink and metrics (always on).
# Then a 60 s wrk run with full observability: audit records must equal requests served.
#
#   benches/observability.sh        (needs the harness set up: see ../shared/bench/README.md)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH:-$ROOT/../shared/bench}"
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/interlock"
STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$ROOT/benches/results"

taskset -c 0 python3 "$ROOT/benches/otlp_sink.py" 4318 & SINK=$!
trap 'kill $SINK 2>/dev/null || true' EXIT

ON=/tmp/interlock-bench-obs
rm -rf "$ON" && cp -r "$ROOT/benches/load/policies" "$ON"
cat >> "$ON/gateway.yaml" <<YAML
shutdown:
  grace: 5s
telemetry:
  audit:
    file: /tmp/interlock-bench-audit/audit.log
    fsync: 1s
  tracing:
    endpoint: http://127.0.0.1:4318/v1/traces
    sampling: 0.1
YAML
"$BIN" check "$ON" > /dev/null

export TESTS="${TESTS:-h1-small}" ROUNDS="${ROUNDS:-3}"
for mode in off on; do
  rm -rf /tmp/interlock-bench-audit
  pol="$ROOT/benches/load/policies"; [ "$mode" = on ] && pol="$ON"
  RESULTS="$ROOT/benches/results/obs-$mode-$STAMP.jsonl" GATEWAY_CMD="$BIN run --config $pol" \
    "$BENCH/run.sh" minproxy gateway > /dev/null 2>&1
  echo "== observability $mode"
  python3 "$ROOT/benches/ratios.py" "$ROOT/benches/results/obs-$mode-$STAMP.jsonl"
done

echo "== 60 s under load with full observability: audit records vs requests"
rm -rf /tmp/interlock-bench-audit
taskset -c 1 "${UPSTREAM_BIN:-/tmp/bench-target/release/bench-upstream}" 127.0.0.1:18080 > /dev/null 2>&1 & ORIGIN=$!
taskset -c 1 "$BIN" run --config "$ON" > /tmp/interlock-bench-obs.log 2>&1 & GW=$!
sleep 1
taskset -c 0 wrk -t1 -c64 -d"${LOAD_SECONDS:-60}"s http://127.0.0.1:18106/small > /tmp/interlock-bench-wrk.txt
served=$(curl -s http://127.0.0.1:19106/metrics | awk '/^interlock_requests_total/ {s += $2} END {print s}')
kill -TERM $GW; wait $GW || true; kill $ORIGIN || true
records=$(cat /tmp/interlock-bench-audit/audit.log* | wc -l)
echo "wrk: $(grep 'requests in' /tmp/interlock-bench-wrk.txt)"
echo "requests served (metrics): $served; audit records: $records"
"$BIN" audit verify /tmp/interlock-bench-audit/audit.log*
[ "$served" = "$records" ] && echo "audit complete: every request has its record" || { echo "MISMATCH"; exit 1; }
