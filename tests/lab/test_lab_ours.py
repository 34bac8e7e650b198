"""The lab on our dataplane (`dataplane run` in every node, kernel forwarding off): every demo
row must pass. Skipped until this tree's CLI has `dataplane run`."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dataplane.lab import LabSpec, apply, up
from dataplane.lab.demo import flows, probe, run_flows, start_servers
from dataplane.lab.topology import dataplane_run_available

pytestmark = pytest.mark.skipif(not dataplane_run_available(),
                                reason="`dataplane run --help` fails: the live dataplane is not in this tree yet")


def test_every_demo_row_passes(lab_name):
    state = up(LabSpec(name=lab_name))
    start_servers(state)
    rows = run_flows(state, flows(state, requests=10))
    failed = [(r.title, r.observed) for r in rows if r.result != "PASS"]
    assert not failed


def test_applied_service_is_picked_up_by_running_dataplanes(lab_name, tmp_path):
    state = up(LabSpec(name=lab_name))
    start_servers(state)
    extra = tmp_path / "extra.yaml"
    extra.write_text("""
apiVersion: v1
kind: Service
metadata: {name: extra, namespace: default}
spec: {clusterIP: 10.96.0.77, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: extra-1, namespace: default, labels: {kubernetes.io/service-name: extra}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.244.2.10], nodeName: node-2, conditions: {ready: true}}]
""")
    apply(lab_name, extra)
    deadline = time.monotonic() + 15
    answer = probe(state["pods"][0]["netns"], "tcp", "10.96.0.77", 80, timeout=1)[0]
    while not answer["ok"] and time.monotonic() < deadline:
        answer = probe(state["pods"][0]["netns"], "tcp", "10.96.0.77", 80, timeout=1)[0]
    assert (answer["ok"], answer.get("server")) == (True, "pod-2-1")


def test_every_demo_row_passes_over_vxlan(lab_name):
    state = up(LabSpec(name=lab_name, overlay="vxlan"))
    start_servers(state)
    rows = run_flows(state, flows(state, requests=10))
    failed = [(r.title, r.observed) for r in rows if r.result != "PASS"]
    assert not failed
    # Pod traffic between the nodes really went through the tunnel, both ways, on both nodes.
    deadline = time.monotonic() + 5
    while True:
        counters = [json.loads(Path(n["stats"]).read_text())["counters"] for n in state["nodes"]]
        if all(c["vxlan_encap"] and c["vxlan_decap"] for c in counters) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(c["vxlan_encap"] and c["vxlan_decap"] for c in counters), counters
