"""`lab demo`: bring a lab up, run real TCP/UDP traffic through it, show a table, tear down.

Every pod runs probe.py's server (TCP 8080, UDP 5353) and the outside world one on
203.0.113.100:80; each answer names the server and the client address it saw. A row is a
flow (source namespace, destination, protocol, N requests) with what must hold for it.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .netns import LabError, exec_argv
from .topology import PROBE, LabSpec, _python, add_pids, down, start_process, up

__all__ = ["Row", "Flow", "probe", "start_servers", "flows", "run_flows", "demo"]

SERVER_TCP, SERVER_UDP, OUTSIDE_PORT = 8080, 5353, 80
CLOSED_PORT = 9          # discard: nothing listens on it in the lab


def probe(ns: str, proto: str, host: str, port: int, count: int = 1, timeout: float = 2.0,
          retry_for: float = 0.0) -> list[dict]:
    """`count` requests from namespace ns; one result dict per attempt (see probe.py)."""
    argv = _python() + [str(PROBE), proto, host, str(port), "--count", str(count), "--timeout", str(timeout),
                        "--retry-for", str(retry_for)]
    cp = subprocess.run(exec_argv(ns, argv), capture_output=True, text=True,
                        timeout=retry_for + count * (timeout + 1) + 30)
    if cp.returncode != 0:
        raise LabError(f"probe in {ns} failed: {cp.stderr.strip()}")
    return [json.loads(line) for line in cp.stdout.splitlines()]


def start_servers(state: dict) -> None:
    """A server in every pod and in the outside world; waits until each one listens."""
    root = Path(state["stateDir"])
    pids = {}
    ends = [(p["netns"], p["name"], "0.0.0.0", ["--tcp", str(SERVER_TCP), "--udp", str(SERVER_UDP)], SERVER_TCP)
            for p in state["pods"]]
    out = state["outside"]
    ends.append((out["netns"], "outside", out["serverIP"], ["--tcp", str(OUTSIDE_PORT)], OUTSIDE_PORT))
    for ns, name, bind, ports, _ in ends:
        argv = _python() + [str(PROBE), "serve", "--name", name, "--bind", bind, *ports]
        pids[f"server/{name}"] = start_process(state["name"], ns, argv, root / "servers" / f"{name}.log")
    add_pids(state["name"], pids)
    for ns, name, bind, _, port in ends:
        local = "127.0.0.1" if bind == "0.0.0.0" else bind
        if not probe(ns, "tcp", local, port, timeout=0.5, retry_for=5)[0]["ok"]:
            raise LabError(f"the server in {name} ({ns}) did not start; see {root / 'servers' / (name + '.log')}")
    # The dataplane queues nothing while it resolves a neighbour (the packet becomes the ARP
    # request), so a UDP request to a pod that never sent anything would be lost. Real pods talk
    # early (DNS); these knock once on their node (a closed port), and the pod's ARP for its
    # gateway teaches the node its MAC.
    node_ip = {n["name"]: n["ip"] for n in state["nodes"]}
    for pod in state["pods"]:
        probe(pod["netns"], "tcp", node_ip[pod["node"]], CLOSED_PORT, timeout=0.5)


@dataclass
class Flow:
    title: str
    ns: str
    proto: str
    host: str
    port: int
    count: int
    # Given the answers, returns (passed, what was observed) for the table.
    check: Callable[[list[dict]], tuple[bool, str]]
    needs_proxy: bool = False     # a Service flow: not available in kernel mode
    expect_failure: bool = False  # no retrying: the first attempt must already be the answer


@dataclass
class Row:
    title: str
    flow: str
    result: str                   # PASS, FAIL or SKIP
    observed: str
    answers: list[dict] = field(default_factory=list)


def _summary(answers: list[dict]) -> str:
    ok = [a for a in answers if a["ok"]]
    by_server = Counter(a["server"] for a in ok)
    seen = sorted({a["seen"] for a in ok})
    errors = Counter(a["error"] for a in answers if not a["ok"])
    parts = [" ".join(f"{s}:{n}" for s, n in sorted(by_server.items()))] if ok else []
    if seen:
        parts.append(f"seen {','.join(seen)}")
    if errors:
        parts.append("errors " + " ".join(f"{e}:{n}" for e, n in errors.items()))
    return "; ".join(parts)


def _all_ok(cond: Callable[[dict], bool] = lambda a: True, servers: Callable[[set], bool] = lambda s: True):
    def check(answers: list[dict]) -> tuple[bool, str]:
        ok = all(a["ok"] and cond(a) for a in answers) and servers({a["server"] for a in answers if a["ok"]})
        return ok, _summary(answers)
    return check


def _refused_at_once(answers: list[dict]) -> tuple[bool, str]:
    a = answers[0]
    ok = not a["ok"] and a["error"] == "ECONNREFUSED" and a["ms"] < 1000
    return ok, (f"{a['error']} after {a['ms']:.1f} ms" if not a["ok"] else _summary(answers))


def flows(state: dict, requests: int) -> list[Flow]:
    """The demo's table for a lab with at least two nodes with a pod each and the example Services."""
    nodes = state["nodes"]
    pods = {p["name"]: p for p in state["pods"]}
    n1, n2 = nodes[0], nodes[1]
    a = pods["pod-1-1"]
    b = pods["pod-2-1"]
    client = state["external"]
    node_of = {p["name"]: p["node"] for p in state["pods"]}
    outside = state["outside"]["serverIP"]

    def on_nodes(*names):
        return lambda servers: {node_of.get(s) for s in servers} >= set(names)

    def only_node(name):
        return lambda servers: bool(servers) and {node_of.get(s) for s in servers} == {name}

    def preserved(pod):  # the source address survives, except for a hairpin to the client itself
        return lambda ans: ans["seen"] == pod["ip"] or ans["server"] == pod["name"]

    two = (n1["name"], n2["name"])
    return [
        Flow("pod -> pod, other node", a["netns"], "tcp", b["ip"], SERVER_TCP, requests,
             _all_ok(lambda ans: ans["seen"] == a["ip"] and ans["server"] == b["name"])),
        Flow("pod -> pod, other node, UDP", a["netns"], "udp", b["ip"], SERVER_UDP, requests,
             _all_ok(lambda ans: ans["seen"] == a["ip"] and ans["server"] == b["name"])),
        Flow("node -> pod, other node", n1["netns"], "tcp", b["ip"], SERVER_TCP, requests,
             _all_ok(lambda ans: ans["seen"] == n1["ip"])),
        Flow("pod -> ClusterIP web", a["netns"], "tcp", "10.96.0.10", 80, requests,
             _all_ok(preserved(a), on_nodes(*two)), needs_proxy=True),
        Flow("pod -> ClusterIP echo-udp", a["netns"], "udp", "10.96.0.53", 53, requests,
             _all_ok(preserved(a), on_nodes(*two)), needs_proxy=True),
        Flow("client -> NodePort Cluster (masq.)", client["netns"], "tcp", n1["ip"], 30080, requests,
             _all_ok(lambda ans: ans["seen"] == n1["ip"]), needs_proxy=True),
        Flow("client -> NodePort Local, node-1", client["netns"], "tcp", n1["ip"], 30081, requests,
             _all_ok(lambda ans: ans["seen"] == client["ip"], only_node(n1["name"])), needs_proxy=True),
        Flow("client -> NodePort Local, node-2", client["netns"], "tcp", n2["ip"], 30081, requests,
             _all_ok(lambda ans: ans["seen"] == client["ip"], only_node(n2["name"])), needs_proxy=True),
        Flow("pod -> outside (masq.)", a["netns"], "tcp", outside, OUTSIDE_PORT, requests,
             _all_ok(lambda ans: ans["seen"] == n1["ip"])),
        Flow("pod -> Service without endpoints", a["netns"], "tcp", "10.96.0.99", 80, 1, _refused_at_once,
             needs_proxy=True, expect_failure=True),
        # By name: getaddrinfo in the pod, through its resolv.conf (search path, ndots:5) to the
        # kube-dns Service, answered by its node's `dataplane dns`.
        Flow("pod -> web by name (DNS)", a["netns"], "tcp", "web", 80, requests,
             _all_ok(preserved(a), on_nodes(*two)), needs_proxy=True),
        Flow("pod -> echo-udp.default.svc (DNS)", b["netns"], "udp", "echo-udp.default.svc", 53, requests,
             _all_ok(preserved(b), on_nodes(*two)), needs_proxy=True),
        Flow("pod -> FQDN of web-nodeport (DNS)", b["netns"], "tcp", "web-nodeport.default.svc.cluster.local",
             80, requests, _all_ok(preserved(b), on_nodes(*two)), needs_proxy=True),
    ]


def run_flows(state: dict, table: list[Flow]) -> list[Row]:
    rows = []
    for f in table:
        what = f"{f.proto.upper()} {f.host}:{f.port} x{f.count}"
        if f.needs_proxy and state["dataplane"] == "kernel":
            rows.append(Row(f.title, what, "SKIP", "kernel mode has no Service proxy"))
            continue
        # Retrying the first attempt covers a dataplane still attaching or resolving neighbours.
        answers = probe(f.ns, f.proto, f.host, f.port, f.count, retry_for=0 if f.expect_failure else 5)
        passed, observed = f.check(answers)
        rows.append(Row(f.title, what, "PASS" if passed else "FAIL", observed, answers))
    return rows


def print_rows(rows: list[Row], out=sys.stdout) -> None:
    headers = ("flow", "request", "result", "observed (answers per pod; source address the server saw)")
    table = [headers] + [(r.title, r.flow, r.result, r.observed) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3], file=out)


COUNTER_COLUMNS = ("rx", "routed", "local", "ct_new", "dnat", "snat", "reject", "neigh_reply",
                   "neigh_solicit")
OVERLAY_COLUMNS = ("vxlan_encap", "vxlan_decap")   # shown when a node used the overlay


def node_counters(state) -> dict[str, dict]:
    """Each running dataplane's counters, from the stats file it rewrites every second."""
    found = {}
    for node in state["nodes"]:
        try:
            found[node["name"]] = json.loads(Path(node["stats"]).read_text())
        except (OSError, ValueError, KeyError):
            continue
    return found


def print_counters(stats: dict[str, dict], out) -> None:
    columns = COUNTER_COLUMNS + tuple(k for k in OVERLAY_COLUMNS
                                      if any(st.get("counters", {}).get(k) for st in stats.values()))
    headers = ("node",) + columns + ("drops",)
    table = [headers]
    for name, st in stats.items():
        c = st.get("counters", {})
        drops = ", ".join(f"{k}:{v}" for k, v in sorted(st.get("drops", {}).items(),
                                                        key=lambda kv: -kv[1])[:3])
        table.append((name,) + tuple(str(c.get(k, 0)) for k in columns) + (drops or "-",))
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def demo(spec: LabSpec, requests: int = 20, keep: bool = False, as_json: bool = False) -> int:
    """Up, traffic, table, counters, down (also on Ctrl-C, SIGTERM or failure). 0 if every row
    that ran passed, 1 otherwise."""
    if spec.nodes < 2 or spec.pods_per_node < 1:
        raise LabError("the demo needs at least 2 nodes with 1 pod each")
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
    out = sys.stderr if as_json else sys.stdout
    rows: list[Row] = []
    outputs: dict[str, str] = {}
    stats: dict[str, dict] = {}
    try:
        print(f"lab {spec.name}: {spec.nodes} nodes x {spec.pods_per_node} pods, dataplane {spec.dataplane}",
              file=out, flush=True)
        state = up(spec)
        start_servers(state)
        rows = run_flows(state, flows(state, requests))
        print_rows(rows, out)
        time.sleep(1.2)  # one stats-file period, so the counters include the last flows
        stats = node_counters(state)
    finally:
        if keep:
            print(f"\nlab {spec.name} kept: `dataplane lab status --name {spec.name}`, "
                  f"`dataplane lab down --name {spec.name}`", file=out)
        else:
            outputs = down(spec.name)
        signal.signal(signal.SIGTERM, previous)
    print("\ndataplane counters per node:", file=out)
    if stats:
        print_counters(stats, out)
    else:
        print("(kernel mode: no dataplane processes)", file=out)
    if as_json:
        print(json.dumps({"rows": [r.__dict__ for r in rows], "counters": stats,
                          "dataplaneOutput": outputs}))
    failed = [r for r in rows if r.result == "FAIL"]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} rows passed or skipped" + (
        f"; FAILED: {', '.join(r.title for r in failed)}" if failed else ""), file=out)
    return 1 if failed else 0
