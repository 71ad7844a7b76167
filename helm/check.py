#!/usr/bin/env python3
"""Lint and render the Helm chart offline, validate the manifests against the Kubernetes schemas,
and compile the policies the chart would mount with `interlock check`.

usage: python3 helm/check.py [path/to/interlock-binary]
needs: pip install helm-python-sdk kubernetes-validate
"""
import os
import subprocess
import sys
import tempfile

import helm_python as helm
import kubernetes_validate
import yaml

here = os.path.dirname(os.path.abspath(__file__))
chart_dir = os.path.join(here, "interlock")
binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "target", "debug", "interlock")

report = helm.lint(chart_dir, strict=True)
problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
if problems:
    sys.exit(f"helm lint: {problems}")

chart = helm.Chart.load(chart_dir)
manifests = chart.render(name="gw", namespace="security", is_install=True)
configmap = None
for path, text in sorted(manifests.items()):
    if path.endswith("NOTES.txt"):
        continue
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        kubernetes_validate.validate(doc, "1.30", strict=True)
        if doc["kind"] == "ConfigMap":
            configmap = doc
        print(f"ok  {path}: {doc['kind']} {doc['metadata']['name']}")

if configmap is None:
    sys.exit("no policies ConfigMap rendered")
with tempfile.TemporaryDirectory() as d:
    for key, content in configmap["data"].items():
        p = os.path.join(d, key.replace("__", "/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(content)
    env = dict(os.environ, EXAMPLE_API_TOKEN="placeholder-for-check")
    out = subprocess.run([binary, "check", d], capture_output=True, text=True, env=env)
    print(out.stdout, out.stderr, sep="")
    if out.returncode != 0:
        sys.exit("the chart's default policies do not compile")
print("helm chart OK")
