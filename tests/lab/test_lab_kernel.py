"""Lab topology, state and cleanup in kernel mode (Linux forwards), with real TCP/UDP sockets."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dataplane.lab import LabError, LabSpec, apply, down, load_state, up
from dataplane.lab.demo import probe, start_servers
from dataplane.lab.netns import alive, list_netns, netns_pids
from dataplane.lab.topology import REPO, start_process, state_dir


def lab_cli(*args: str) -> subprocess.CompletedProcess:
    """`dataplane lab ...` in a separate process, as an operator would run it."""
    return subprocess.run([sys.executable, "-m", "dataplane.lab", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def lab_namespaces(name: str) -> set[str]:
    return {ns for ns in list_netns() if ns.startswith(f"dpl.{name}.")}


def test_up_status_down(lab_name):
    state = up(LabSpec(name=lab_name, nodes=3, pods_per_node=2, dataplane="kernel"))
    assert [n["podCIDR"] for n in state["nodes"]] == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    assert [n["ip"] for n in state["nodes"]] == ["192.168.0.2", "192.168.0.3", "192.168.0.4"]
    assert [n["ips"] for n in state["nodes"]] == [["192.168.0.2"], ["192.168.0.3"], ["192.168.0.4"]]
    assert [(p["name"], p["ip"], p["node"]) for p in state["pods"][:3]] == [
        ("pod-1-1", "10.244.1.10", "node-1"), ("pod-1-2", "10.244.1.11", "node-1"),
        ("pod-2-1", "10.244.2.10", "node-2")]
    expected = {f"dpl.{lab_name}.{r}" for r in ("fabric", "client", "world", "node-1", "node-2", "node-3")}
    expected |= {p["netns"] for p in state["pods"]}
    assert lab_namespaces(lab_name) == expected

    status = lab_cli("status", "--name", lab_name, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == state == load_state(lab_name)
    assert {s["name"] for s in state["services"]} >= {"web", "web-nodeport", "web-local", "echo-udp", "empty"}
    table = lab_cli("status", "--name", lab_name)
    assert table.returncode == 0 and "kernel forwarding" in table.stdout and "10.244.3.0/24" in table.stdout

    down_ = lab_cli("down", "--name", lab_name)
    assert down_.returncode == 0, down_.stderr
    assert not lab_namespaces(lab_name) and not state_dir(lab_name).exists()
    assert lab_cli("down", "--name", lab_name).returncode == 0           # idempotent
    missing = lab_cli("status", "--name", lab_name)
    assert missing.returncode == 1 and f"no lab named {lab_name!r}" in missing.stderr


def test_up_cleans_leftovers_of_a_crashed_lab(lab_name):
    state = up(LabSpec(name=lab_name, dataplane="kernel"))
    start_servers(state)
    # An unrecorded process inside a lab namespace: only the namespace prefix can find it.
    stray = start_process(lab_name, state["pods"][0]["netns"], ["sleep", "600"], state_dir(lab_name) / "stray.log")
    servers = [pid for key, pid in load_state(lab_name)["pids"].items() if key.startswith("server/")]
    for pid in servers:  # the crash: processes killed, state file gone
        os.kill(pid, signal.SIGKILL)
    (state_dir(lab_name) / "state.json").unlink()

    again = up(LabSpec(name=lab_name, dataplane="kernel"))
    assert not alive(stray)
    assert again["pids"] == {}
    assert all(netns_pids(ns) == [] for ns in lab_namespaces(lab_name))
    assert lab_namespaces(lab_name) == {p["netns"] for p in again["pods"]} | {
        f"dpl.{lab_name}.{r}" for r in ("fabric", "client", "world", "node-1", "node-2")}


def test_labs_with_similar_names_are_independent(lab_name):
    other = f"{lab_name}-b"
    try:
        up(LabSpec(name=lab_name, nodes=1, pods_per_node=1, dataplane="kernel"))
        up(LabSpec(name=other, nodes=1, pods_per_node=1, dataplane="kernel"))
        down(lab_name)
        assert not lab_namespaces(lab_name)
        assert len(lab_namespaces(other)) == 5 and load_state(other)["name"] == other
    finally:
        down(other)


def test_kernel_connectivity(lab_name):
    state = up(LabSpec(name=lab_name, dataplane="kernel"))
    start_servers(state)
    pods = {p["name"]: p for p in state["pods"]}
    a, b = pods["pod-1-1"], pods["pod-2-2"]
    node1 = state["nodes"][0]

    for proto, port in (("tcp", 8080), ("udp", 5353)):   # pod -> pod across nodes: source preserved
        answers = probe(a["netns"], proto, b["ip"], port, count=3)
        assert [(x["ok"], x["server"], x["seen"]) for x in answers] == [(True, "pod-2-2", a["ip"])] * 3
    same_node = probe(a["netns"], "tcp", pods["pod-1-2"]["ip"], 8080)[0]
    assert (same_node["server"], same_node["seen"]) == ("pod-1-2", a["ip"])
    outside = probe(a["netns"], "tcp", state["outside"]["serverIP"], 80)[0]  # masqueraded to the node IP
    assert (outside["ok"], outside["seen"]) == (True, node1["ip"])
    refused = probe(a["netns"], "tcp", b["ip"], 9)[0]
    assert (refused["ok"], refused["error"]) == (False, "ECONNREFUSED")


def test_apply(lab_name, tmp_path):
    up(LabSpec(name=lab_name, nodes=1, pods_per_node=1, dataplane="kernel"))
    extra = tmp_path / "extra.yaml"
    extra.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: default}\n"
                     "spec: {clusterIP: 10.96.0.77, ports: [{port: 80, targetPort: 8080}]}\n")
    result = lab_cli("apply", "--name", lab_name, str(extra))
    assert result.returncode == 0, result.stderr
    assert "extra" in {s["name"] for s in load_state(lab_name)["services"]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: 0}]}\n")
    result = lab_cli("apply", "--name", lab_name, str(bad))
    assert result.returncode == 1 and "spec.ports[0].port" in result.stderr
    assert "bad" not in {s["name"] for s in load_state(lab_name)["services"]}


def test_demo_kernel_mode(lab_name):
    started = time.monotonic()
    result = lab_cli("demo", "--name", lab_name, "--dataplane", "kernel", "--requests", "5", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert {r["result"] for r in rows} == {"PASS", "SKIP"}
    assert {r["title"] for r in rows if r["result"] == "PASS"} == {
        "pod -> pod, other node", "pod -> pod, other node, UDP", "node -> pod, other node", "pod -> outside (masq.)"}
    assert not lab_namespaces(lab_name) and not state_dir(lab_name).exists()
    assert time.monotonic() - started < 60


def test_errors_are_one_clear_line(lab_name):
    result = lab_cli("up", "--name", lab_name, "--nodes", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == "dataplane lab up: --nodes must be 1..50, got 0"
    with pytest.raises(LabError, match="no lab named"):
        load_state(lab_name)


def test_demo_kernel_mode_over_vxlan(lab_name):
    result = lab_cli("demo", "--name", lab_name, "--dataplane", "kernel", "--overlay", "vxlan",
                     "--requests", "5", "--json", "--keep")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert {r["title"] for r in rows if r["result"] == "PASS"} == {
        "pod -> pod, other node", "pod -> pod, other node, UDP", "node -> pod, other node", "pod -> outside (masq.)"}
    node = load_state(lab_name)["nodes"][0]["netns"]
    route = subprocess.run(["ip", "-n", node, "route", "get", "10.244.2.10"], capture_output=True, text=True)
    assert "dev flannel.1" in route.stdout
    link = subprocess.run(["ip", "-n", node, "-d", "link", "show", "flannel.1"], capture_output=True, text=True)
    assert "vxlan id 1" in link.stdout and "dstport 4789" in link.stdout and "nolearning" in link.stdout
