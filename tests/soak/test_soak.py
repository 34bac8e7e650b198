"""Soak test (issue 12; `-m slow`): a two-node lab on our dataplane for DATAPLANE_SOAK_SECONDS
(default 600) with, all at once:

  - 4 long-lived TCP connections from a pod to a ClusterIP (echo server on the other node),
    one line each per second, every echo awaited: none may be lost;
  - short connections to the lab's web Service every 20 s: each must succeed;
  - 1,000 frames/s of malformed and hostile traffic from the external client at node-1 (random
    bytes, cut headers, bad header checksums, martian and spoofed sources, a SYN flood from
    spoofed addresses, off-path RSTs with random sequence numbers);
  - Service churn: a file in every node's configuration directory rewritten every 15 s;
  - a restart of one node's dataplane every quarter of the run (conntrack saved and reloaded).

Then: each dataplane's RSS is flat once warm, no good connection was lost, the hostile traffic
was counted under its drop reasons, no reload failed, and every node's transmitted frames add
up to its per-port counts.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import pytest
from scapy.all import IP, TCP, UDP, Ether

from dataplane.lab import LabSpec, apply, up
from dataplane.lab.demo import probe, start_servers
from dataplane.lab.topology import add_pids, load_state, restart, start_process

pytestmark = pytest.mark.slow

SECONDS = int(os.environ.get("DATAPLANE_SOAK_SECONDS", "600"))
ENDS = str(Path(__file__).with_name("ends.py"))
VIP, ECHO_PORT = "10.96.0.88", 7007
# What reaches node-1: the lab's bridge (br_netfilter's IPv4 validation) already discards frames
# with bad header checksums, lengths or IHL, so those are not required here.
HOSTILE = ("martian_src", "spoofed_src", "invalid_state", "bad_ethertype")


def echo_service(server_pod) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: soak-echo, namespace: default}}
spec: {{clusterIP: {VIP}, ports: [{{name: echo, port: 7, targetPort: {ECHO_PORT}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: soak-echo-1, namespace: default, labels: {{kubernetes.io/service-name: soak-echo}}}}
addressType: IPv4
ports: [{{name: echo, port: {ECHO_PORT}, protocol: TCP}}]
endpoints: [{{addresses: [{server_pod['ip']}], nodeName: {server_pod['node']}, conditions: {{ready: true}}}}]
"""


def hostile_frames(node, pod_ip) -> bytes:
    """Length-prefixed frames for ends.py flood, all addressed to node-1's uplink."""
    rng = random.Random(12)
    eth = Ether(src="02:aa:00:00:00:01", dst=node["macs"]["eth0"])
    ip = node["ip"]
    frames = []
    for k in range(400):
        frames += [
            bytes(eth)[:12] + bytes(rng.getrandbits(8) for _ in range(rng.randrange(2, 200))),
            bytes(eth / IP(src="192.168.0.100", dst=ip) / TCP(dport=30080))[:rng.randrange(14, 40)],
            bytes(eth / IP(src=f"198.51.100.{k % 250 + 1}", dst=ip, chksum=0xbad) / TCP(dport=30080, flags="S")),
            bytes(eth / IP(src=rng.choice(["127.0.0.1", "0.1.2.3", "224.0.0.9", "240.1.1.1", ip, pod_ip]),
                           dst=ip) / TCP(sport=k, dport=30080, flags="S")),
            bytes(eth / IP(src=f"203.0.113.{k % 200 + 1}", dst=ip) / TCP(sport=1024 + k, dport=30080, flags="S",
                                                                           seq=rng.getrandbits(32))),
            bytes(eth / IP(src="192.168.0.100", dst=ip) / TCP(sport=rng.randrange(1024, 65536), dport=30080,
                                                              flags="R", seq=rng.getrandbits(32))),
            bytes(eth / IP(src="192.168.0.100", dst=ip, ihl=rng.randrange(0, 5)) / UDP()),
        ]
    return b"".join(len(f).to_bytes(2, "big") + f for f in frames)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@pytest.mark.timeout(SECONDS + 600)
def test_soak(lab_name, tmp_path):
    state = up(LabSpec(name=lab_name))
    start_servers(state)
    client_pod, server_pod = state["pods"][0], state["pods"][-1]
    assert client_pod["node"] != server_pod["node"]
    target = state["nodes"][0]
    add_pids(lab_name, {"soak/echo": start_process(
        lab_name, server_pod["netns"], [sys.executable, ENDS, "echo", str(ECHO_PORT)],
        tmp_path / "echo.log")})
    svc = tmp_path / "soak-echo.yaml"
    svc.write_text(echo_service(server_pod))
    apply(lab_name, svc)
    time.sleep(3)                                   # the dataplanes re-read their directories
    (tmp_path / "frames.bin").write_bytes(hostile_frames(target, next(
        p["ip"] for p in state["pods"] if p["node"] == target["name"])))
    hold_log = tmp_path / "hold.json"
    add_pids(lab_name, {
        "soak/hold": start_process(lab_name, client_pod["netns"], [
            sys.executable, ENDS, "hold", VIP, "7", "4", str(SECONDS), str(hold_log)],
            tmp_path / "hold.log"),
        "soak/flood": start_process(lab_name, state["external"]["netns"], [
            sys.executable, ENDS, "flood", "eth0", "1000", str(SECONDS), str(tmp_path / "frames.bin")],
            tmp_path / "flood.log"),
    })
    rss: dict[int, list[tuple[float, int]]] = {}
    failed_probes = []
    started = time.monotonic()
    next_churn = next_probe = 0.0
    restarts = 0
    while (now := time.monotonic() - started) < SECONDS:
        for node in state["nodes"]:
            pid = load_state(lab_name)["pids"][node["name"]]
            kib = rss_kib(pid)
            if kib is not None:
                rss.setdefault(pid, []).append((now, kib))
        if now >= next_churn:
            body = "" if int(now / 15) % 2 else (
                "apiVersion: v1\nkind: Service\nmetadata: {name: churn, namespace: default}\n"
                f"spec: {{clusterIP: 10.96.0.{100 + int(now) % 100}, ports: [{{port: 80}}]}}\n")
            for node in state["nodes"]:
                tmp = Path(node["configDir"]) / ".60-churn.yaml.tmp"
                tmp.write_text(body)
                tmp.replace(Path(node["configDir"]) / "60-churn.yaml")
            next_churn = now + 15
        if now >= next_probe:
            answer = probe(client_pod["netns"], "tcp", "10.96.0.10", 80, timeout=2, retry_for=10)[-1]
            if not answer["ok"]:
                failed_probes.append((round(now), answer))
            next_probe = now + 20
        if now >= (restarts + 1) * SECONDS / 4 and restarts < 3:
            restart(lab_name, state["nodes"][restarts % 2]["name"])
            restarts += 1
        time.sleep(5)

    deadline = time.monotonic() + 60
    while not hold_log.exists() and time.monotonic() < deadline:
        time.sleep(1)
    held = json.loads(hold_log.read_text())
    assert held["lost"] == 0 and held["sent"] >= 4 * (SECONDS // 2), held
    assert not failed_probes, failed_probes
    assert restarts == 3

    # RSS flat: for every dataplane instance that ran long enough, the last third of its samples
    # is within 16 MiB of the middle third (the first third is warm-up).
    for pid, series in rss.items():
        if series[-1][0] - series[0][0] < 90:
            continue
        third = len(series) // 3
        middle = sum(k for _, k in series[third:2 * third]) / third
        last = sum(k for _, k in series[2 * third:]) / (len(series) - 2 * third)
        assert last - middle < 16 * 1024, (pid, series)

    for node in state["nodes"]:
        stats = json.loads(Path(node["stats"]).read_text())
        assert not stats["reload_errors"], (node["name"], stats)
        assert stats["counters"]["tx"] == sum(p["tx_pipeline"] for p in stats["ports"].values())
    hostile = json.loads(Path(target["stats"]).read_text())["drops"]
    assert all(hostile.get(reason, 0) > 0 for reason in HOSTILE), hostile
