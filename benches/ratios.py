#!/usr/bin/env python3
"""Per-round proxy CPU per request (us) and the gateway's ratio to each peer, from a run.sh results file.

usage: benches/ratios.py benches/results/<run>.jsonl
"""
import json, statistics, sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
us = defaultdict(dict)  # (test, round) -> target -> us/req
for r in rows:
    if r["rps"] > 0:
        us[(r["test"], r["round"])][r["target"]] = r["proxy_cpu_pct"] * 10000.0 / r["rps"]
tests = sorted({t for t, _ in us}, key=lambda t: ["h1-small", "h1-large", "h2c-small"].index(t) if t in ["h1-small", "h1-large", "h2c-small"] else 9)
print("| test | gateway us/req | nginx | haproxy | minproxy | gateway x nginx | gateway x minproxy |")
print("|---|---|---|---|---|---|---|")
for t in tests:
    rounds = [v for (tt, _), v in us.items() if tt == t and "gateway" in v]
    med = lambda k: statistics.median(r[k] for r in rounds if k in r) if any(k in r for r in rounds) else float("nan")
    ratio = lambda k: [r["gateway"] / r[k] for r in rounds if k in r]
    fmt = lambda xs: f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})" if xs else "-"
    num = lambda k: "-" if med(k) != med(k) else f"{med(k):.1f}"  # NaN: target not in this run
    print(f"| {t} | {num('gateway')} | {num('nginx')} | {num('haproxy')} | {num('minproxy')} | {fmt(ratio('nginx'))} | {fmt(ratio('minproxy'))} |")
