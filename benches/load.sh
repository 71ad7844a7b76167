#!/usr/bin/env bash
# Load benchmark: the gateway side by side with nginx, haproxy and the minimal hyper proxy, in one
# run of the shared harness (see ../shared/bench/README.md for its one-time setup).
#
#   benches/load.sh                      # 3 rounds x h1-small h1-large h2c-small, 8 s each
#   TESTS="tls-h2-small tls-h1-small tls-newconn" TARGETS="nginx minproxy gateway" benches/load.sh
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
# The benchmark policies plus a TLS listener on 18206 with the harness's certificate (absolute paths,
# so the policies are copied to a scratch directory).
POL=/tmp/interlock-bench-policies
rm -rf "$POL" && cp -r "$ROOT/benches/load/policies" "$POL"
python3 - "$POL/gateway.yaml" "$BENCH/tls" <<'PY'
import sys
path, tls = sys.argv[1], sys.argv[2]
text = open(path).read().replace("listeners:\n", f"""listeners:
  - name: bench-tls
    bind: 127.0.0.1:18206
    tls:
      certificates:
        - cert: {tls}/cert.pem
          key: {tls}/key.pem
""", 1)
open(path, "w").write(text)
PY
"$ROOT/target/release/interlock" check "$POL" >/dev/null
export GATEWAY_CMD="$ROOT/target/release/interlock run --config $POL"
"$BENCH/run.sh" ${TARGETS:-nginx haproxy minproxy gateway}
python3 "$BENCH/summarize.py" "$RESULTS" --md
