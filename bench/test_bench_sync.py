"""Hitless sync: what the control plane costs forwarding, while `dataplane run` forwards steady
traffic, compared with kube-proxy programming the same state into the kernel.

src -> rtr -> dst (bench/netbench.py). In rtr: `dataplane run --kubeconfig` against an in-test
API server (tests/k8s/fake_apiserver.py, serving list/watch), forwarding thread pinned to one
CPU (--forwarding-cpu), the control plane on the other. A paced probe stream (20 kpps, 16
flows) goes from src to the ClusterIP of `svc-0`, a Service no phase touches; dst timestamps
every frame in the kernel (bench/syncbench.py). Phases, each under the probe stream:

  (a) from scratch: 9,999 more Services with 10 endpoints each arrive through the watch (20,000
      events), then the API server restarts with its history compacted, so the reflectors
      relist 10,000 Services and their slices and the node does full syncs of all of them;
  (b) churn: 1,000 EndpointSlice changes a second for 10 s (other Services' endpoints).

Reported per phase: the longest gap between two probe frames at dst (and the sender's own
longest pause, which bounds what can be blamed on the router), the longest time the forwarding
thread was parked for a swap, probe frames lost, untranslated or sent to a non-endpoint, and the
event-to-visible latency (p50 / p99) from the watch event's arrival, and from the EndpointSlice
trigger time written by the "API server" (network programming latency).
Baseline, same run: the same state programmed as kube-proxy does it: iptables-restore of the
whole nat table (iptables mode resyncs it), nft -f of the whole table (nftables full sync) and of
1,000 changed services (one nftables partial sync per second of churn).

    .venv/bin/python -m pytest bench/test_bench_sync.py -m slow --benchmark-enable -s
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

import netbench as nb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "k8s"))
from fake_apiserver import FakeApiServer  # noqa: E402
from nstools import netns  # noqa: E402

N_SERVICES = int(os.environ.get("BENCH_SYNC_SERVICES", 10_000))
N_ENDPOINTS = 10
CHURN_RATE = int(os.environ.get("BENCH_SYNC_CHURN_RATE", 1000))
CHURN_SECONDS = float(os.environ.get("BENCH_SYNC_CHURN_SECONDS", 10))
PROBE_RATE = 20_000
RESULTS = Path(__file__).resolve().parent / "results"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("ip", "ethtool", "nft", "iptables-restore")),
                       reason="needs iproute2, ethtool, nftables and iptables"),
]


def service(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}", "namespace": "default"},
            "spec": {"clusterIP": nb.service_vip(i), "ports": [{"name": "dns", "protocol": "UDP", "port": nb.SVC_PORT,
                                                                  "targetPort": nb.TARGET_PORT}]}}


def endpoint_slice(i: int, n: int = N_ENDPOINTS, trigger: bool = False) -> dict:
    meta = {"name": f"svc-{i}-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": f"svc-{i}"}}
    if trigger:
        meta["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time":
                               datetime.now(timezone.utc).isoformat()}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4", "metadata": meta,
            "endpoints": [{"addresses": [ep], "conditions": {"ready": True}} for ep in nb.endpoint_ips(i, n)],
            "ports": [{"name": "dns", "protocol": "UDP", "port": nb.TARGET_PORT}]}


class Probe:
    """The paced sender in src and the timestamping receiver in dst, for one phase."""

    def __init__(self, tri, seconds: float):
        script = str(Path(__file__).resolve().parent / "syncbench.py")
        env = {**os.environ, "PYTHONPATH": str(nb.REPO)}
        eps = ",".join(nb.endpoint_ips(0, 2))
        self.recv = subprocess.Popen(nb.exec_argv(tri.dst, [sys.executable, script, "recv", "--ifname", "d0",
                                                            "--seconds", str(seconds + 2), "--endpoints", eps]),
                                     stdout=subprocess.PIPE, text=True, env=env)
        time.sleep(0.5)
        cpu = ["--cpu", str(nb.GEN_CPU)] if nb.GEN_CPU is not None else []
        self.send = subprocess.Popen(nb.exec_argv(tri.src, [sys.executable, script, "send", "--ifname", "s0",
                                                            "--dst-mac", tri.macs["r0"], "--vip", nb.service_vip(0),
                                                            "--rate", str(PROBE_RATE), "--seconds", str(seconds),
                                                            *cpu]),
                                     stdout=subprocess.PIPE, text=True, env=env)

    def result(self) -> dict:
        sent = json.loads(self.send.communicate(timeout=120)[0].strip().splitlines()[-1])
        got = json.loads(self.recv.communicate(timeout=120)[0].strip().splitlines()[-1])
        return {**sent, **got, "lost": sent["sent"] - got["unique"]}


class Node:
    def __init__(self, tri, workdir: Path, api: FakeApiServer):
        self.socket = workdir / "ctl.sock"
        conf = workdir / "conf"
        conf.mkdir()
        dp, _ = nb.dataplane_config(tri, 0, 0, 1 << 20)
        (conf / "00-dataplane.json").write_text(json.dumps(dp))
        (conf / "10-kube-proxy.json").write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clusterCIDR": nb.CLUSTER_CIDR}))
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig())
        argv = [sys.executable, "-m", "dataplane.cli", "run", "--config", str(conf), "--kubeconfig", str(kubeconfig),
                "--control-socket", str(self.socket), "--json"]
        if nb.ROUTER_CPU is not None:
            argv += ["--forwarding-cpu", str(nb.ROUTER_CPU)]
        self.err = open(workdir / "run.err", "w+")
        self.proc = subprocess.Popen(nb.exec_argv(tri.rtr, argv), stdout=subprocess.PIPE, stderr=self.err,
                                     text=True, env={**os.environ, "PYTHONPATH": str(nb.REPO)}, cwd=str(nb.REPO))

    def call(self, cmd: str) -> dict:
        from dataplane.control import request
        return request(self.socket, {"cmd": cmd}, timeout=120)

    def wait(self, check, timeout: float = 120) -> float:
        started = time.monotonic()
        while True:
            try:
                if check():
                    return time.monotonic() - started
            except Exception:   # not up yet
                pass
            if self.proc.poll() is not None:
                self.err.seek(0)
                raise RuntimeError(f"dataplane run exited: {self.err.read()[-2000:]}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(check)
            time.sleep(0.1)

    def stop(self) -> dict:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return json.loads(out.strip().splitlines()[-1])


def _time(argv, netns_name) -> float:
    started = time.perf_counter()
    subprocess.run(nb.exec_argv(netns_name, argv), check=True, capture_output=True, timeout=300)
    return time.perf_counter() - started


def kube_proxy_baseline(tri, workdir: Path) -> dict:
    """The same state, programmed as kube-proxy's iptables and nftables modes program it."""
    ipt = workdir / "full.iptables"
    ipt.write_text(nb.iptables_rules(N_SERVICES, N_ENDPOINTS))
    nft_full = workdir / "full.nft"
    nft_full.write_text(nb.nft_rules(N_SERVICES, N_ENDPOINTS))
    out = {"iptables_restore_full_s": _time(["iptables-restore", str(ipt)], tri.dst),
           "nft_full_s": _time(["nft", "-f", str(nft_full)], tri.dst)}
    # One nftables partial sync of 1,000 changed Services: their chains flushed and refilled.
    changed = {f"-default-svc-{i}-udp-dns" for i in range(1, CHURN_RATE + 1)}
    flushes, blocks, block = [], [], None
    for line in nft_full.read_text().splitlines()[1:]:
        if line.startswith("  chain "):
            name = line.split()[1]
            tag = name[name.index("-default-"):].split("__")[0] if "-default-" in name else ""
            block = [line] if tag in changed else None
            if block is not None:
                flushes.append(f"flush chain ip kube-proxy {name}")
        elif block is not None:
            block.append(line)
            if line == "  }":
                blocks += block
                block = None
    nft_partial = workdir / "partial.nft"
    nft_partial.write_text("\n".join(flushes + ["table ip kube-proxy {", *blocks, "}"]) + "\n")
    out["nft_partial_1000_s"] = _time(["nft", "-f", str(nft_partial)], tri.dst)
    return out


@pytest.mark.timeout(1200)
def test_sync_while_forwarding(benchmark):
    benchmark.extra_info["kind"] = "live"
    tri = nb.Triangle().up()
    workdir = Path(tempfile.mkdtemp(prefix="dp-syncbench-"))
    api = node = None
    results: dict = {"services": N_SERVICES, "endpoints": N_ENDPOINTS, "probe_pps": PROBE_RATE,
                     "churn_per_s": CHURN_RATE, "churn_seconds": CHURN_SECONDS,
                     "forwarding_cpu": nb.ROUTER_CPU}
    try:
        with netns(tri.rtr):
            api = FakeApiServer("127.0.0.1", 6443, bookmark_interval=1.0).start()
        api.put(service(0))
        api.put(endpoint_slice(0, 2))
        node = Node(tri, workdir, api)
        node.wait(lambda: node.call("services"))
        warm = Probe(tri, 1.0)                       # neighbours resolved, flows pinned
        results["warmup"] = warm.result()

        # (a) from scratch
        probe = Probe(tri, 25.0)
        time.sleep(1.0)
        before = node.call("stats")["engine"]
        t0 = time.monotonic()
        for i in range(1, N_SERVICES):
            api.put(service(i))
            api.put(endpoint_slice(i))
        node.wait(lambda: len(node.call("services")) == N_SERVICES, 300)
        results["a_all_visible_s"] = time.monotonic() - t0
        lists = node.call("status")["sources"][0]["services"]["lists"]
        api.stop()                                   # an API server restart with its history compacted:
        api.put(service(0))                          # the watch cannot resume, the node relists all
        api.compact()
        t1 = time.monotonic()
        with netns(tri.rtr):
            api.start()
        node.wait(lambda: node.call("status")["sources"][0]["endpointslices"]["lists"] > lists, 300)
        node.wait(lambda: node.call("status")["sources"][0]["services"]["lists"] > lists, 300)
        results["a_relist_s"] = time.monotonic() - t1
        stats = node.call("stats")
        results["a_engine"] = {k: stats["engine"][k] - before.get(k, 0) for k in ("pauses", "bursts")}
        results["a_pause_max_ms"] = stats["engine"]["pause_max_ns"] / 1e6
        results["a_probe"] = probe.result()
        results["a_syncs"] = stats["syncs"]

        # (b) churn
        lat_before = node.call("stats")["sync_latency"]
        probe = Probe(tri, CHURN_SECONDS + 2)
        time.sleep(1.0)
        stop = threading.Event()
        changes = [0]

        def churn():
            start = time.monotonic()
            k = 0
            while not stop.is_set() and time.monotonic() - start < CHURN_SECONDS:
                i = 1 + k % (N_SERVICES - 1)
                api.put(endpoint_slice(i, N_ENDPOINTS - 1 if (k // (N_SERVICES - 1)) % 2 == 0 else N_ENDPOINTS,
                                       trigger=True))
                k += 1
                changes[0] = k
                ahead = k / CHURN_RATE - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        t = threading.Thread(target=churn)
        t.start()
        t.join()
        results["b_changes"] = changes[0]
        time.sleep(1.0)
        stats = node.call("stats")
        results["b_latency"] = stats["sync_latency"]
        results["b_latency_before"] = lat_before
        results["b_pause_max_ms"] = stats["engine"]["pause_max_ns"] / 1e6
        results["b_probe"] = probe.result()
        results["b_syncs"] = stats["syncs"]
        results["exit"] = {k: v for k, v in node.stop().items() if k in ("engine", "syncs", "drops")}
        node = None
        results["kube_proxy"] = kube_proxy_baseline(tri, workdir)
    finally:
        if node is not None:
            node.proc.kill()
        if api is not None:
            api.stop()
        tri.down()
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sync.json").write_text(json.dumps(results, indent=2))
    benchmark.extra_info.update(results)
    benchmark.pedantic(lambda: None, rounds=1)
    print(json.dumps(results, indent=2))
