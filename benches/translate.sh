#!/usr/bin/env bash
# Translation throughput, side by side with the jq command: the shipped CrowdStrike alerts ->
# OCSF Detection Finding mapping over the same 10,000 alerts (built from the shipped fixture).
#
#   benches/translate.sh            # needs `jq` (Debian package jq) and python3
#
# jq runs the mapping's program with src/translate/prelude.jq in front (the same helpers in jq);
# interlock runs it with validation against OCSF 1.8.0 (`interlock translate`). Both are one
# process on one core; CPU time (user + sys) is what counts. The outputs are compared record by
# record. The in-process figure without start-up and printing: `cargo bench --bench hot_paths -- translate`.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
command -v jq >/dev/null || { echo "jq is not installed (apt-get install jq)"; exit 2; }
cargo build --release -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$N" "$work" <<'PY'
import json, sys
n, work = int(sys.argv[1]), sys.argv[2]
page = json.load(open("policies/mappings/samples/crowdstrike/alerts-v2.json"))
recs = page["resources"]
out = []
for i in range(n):
    r = dict(recs[i % len(recs)])
    r["composite_id"] = "cid:ind:%08d" % i
    r["id"] = "ind:%08d" % i
    out.append(r)
page["resources"] = out
json.dump(page, open(f"{work}/page.json", "w"))
with open(f"{work}/records.ndjson", "w") as f:
    for r in out:
        f.write(json.dumps(r) + "\n")
PY
cat src/translate/prelude.jq policies/mappings/crowdstrike-alerts-ocsf.jq > "$work/program.jq"

cpu() { # seconds of user+sys CPU of a command
  /usr/bin/time -f "%U %S" -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
  awk '{print $1 + $2}' "$work/t"
}
jq_s=$(cpu bash -c "jq -c -f '$work/program.jq' '$work/records.ndjson' > '$work/jq.ndjson'")
il_s=$(cpu bash -c "target/release/interlock translate -c policies -m crowdstrike-alerts-ocsf '$work/page.json' > '$work/il.json'")
grep -q "valid: $N record" "$work/err" || { echo "interlock did not validate all records:"; cat "$work/err"; exit 1; }
python3 - "$work" "$N" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
jq = [json.loads(l) for l in open(f"{work}/jq.ndjson")]
il = json.load(open(f"{work}/il.json"))["resources"]
same = sum(1 for a, b in zip(jq, il) if a == b)
print(f"outputs identical for {same} of {n} records")
sys.exit(0 if same == n else 1)
PY
python3 - "$N" "$jq_s" "$il_s" <<'PY'
import sys
n, jq_s, il_s = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"jq        {jq_s:6.2f} s CPU  {n / jq_s:9.0f} events/s  (no validation)")
print(f"interlock {il_s:6.2f} s CPU  {n / il_s:9.0f} events/s  (validated against OCSF 1.8.0; includes start-up, parsing and printing)")
print(f"interlock / jq: {jq_s / il_s:.1f}x")
PY
