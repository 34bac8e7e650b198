"""`dataplane lab ...`: registered by dataplane/cli.py through register(subparsers)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .netns import LabError, alive

__all__ = ["register"]

DEFAULT_NAME = "lab"


def register(subparsers) -> None:
    lab = subparsers.add_parser(
        "lab", help="a Kubernetes-like cluster of network namespaces running the dataplane",
        description="Build a host-gw cluster on this host out of network namespaces and veth pairs: "
                    "a fabric bridge, N nodes with pods, an external client and an outside world. "
                    "All addresses exist only inside the lab's namespaces (dpl.NAME.*).")
    sub = lab.add_subparsers(metavar="SUBCOMMAND", dest="lab_command")
    lab.set_defaults(func=lambda args: (lab.print_help(), 2)[1])

    def named(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default=DEFAULT_NAME, help=f"lab name, [a-z0-9-] (default: {DEFAULT_NAME})")

    def topology(p: argparse.ArgumentParser) -> None:
        named(p)
        p.add_argument("--nodes", type=int, default=2, help="number of nodes (default: 2)")
        p.add_argument("--pods-per-node", type=int, default=2, help="pods on each node (default: 2)")
        p.add_argument("--overlay", choices=("none", "vxlan"), default="none",
                       help="none: host-gw routes between nodes; vxlan: flannel-style VXLAN (VNI 1, port 4789)")
        p.add_argument("--dataplane", choices=("ours", "kernel"), default="ours",
                       help="ours: `dataplane run` in every node, kernel forwarding off; kernel: Linux "
                            "forwards and masquerades, no Service proxy (baseline) (default: ours)")

    u = sub.add_parser("up", help="create a lab (replacing any leftovers of one with the same name)",
                       description="Create the lab's namespaces, veths, addresses and routes; in ours mode "
                                   "write each node's configuration and start `dataplane run` in it.")
    topology(u)
    u.add_argument("--services", type=Path, default=None, metavar="FILE",
                   help="Kubernetes objects for every node (default: examples/lab/services.yaml)")
    u.add_argument("--no-services", action="store_true", help="start without any Service")
    u.add_argument("--json", action="store_true", help="print the state as one JSON object")
    u.set_defaults(func=_cmd_up)

    s = sub.add_parser("status", help="show a lab's nodes, pods, Services and processes",
                       description="Print the lab's state (from its state.json) and whether each "
                                   "dataplane process is alive.")
    named(s)
    s.add_argument("--json", action="store_true", help="print state.json as one JSON object")
    s.set_defaults(func=_cmd_status)

    d = sub.add_parser("down", help="stop a lab's processes, delete its namespaces and state",
                       description="SIGTERM every process of the lab (SIGKILL after 5 s), print each "
                                   "dataplane's final output, delete the namespaces and the state "
                                   "directory. Succeeds when there is nothing to delete.")
    named(d)
    d.set_defaults(func=_cmd_down)

    a = sub.add_parser("apply", help="add Kubernetes objects (Services, EndpointSlices) to every node",
                       description="Validate FILE and copy it into every node's configuration directory; "
                                   "running dataplanes pick it up. Invalid objects are rejected with the "
                                   "loader's message and nothing is copied.")
    named(a)
    a.add_argument("file", type=Path, metavar="FILE")
    a.set_defaults(func=_cmd_apply)

    r = sub.add_parser("restart", help="restart one node's dataplane (connections survive)",
                       description="Stop NODE's dataplane (SIGTERM: it saves its conntrack table) and "
                                   "start it again on the same configuration; it reloads the table, so "
                                   "established connections carry on.")
    named(r)
    r.add_argument("node", metavar="NODE", help="node name, e.g. node-1")
    r.set_defaults(func=_cmd_restart)

    m = sub.add_parser("demo", help="up, real TCP/UDP flows through the lab as a table, counters, down",
                       description="Bring a lab up, run a server in every pod and in the outside world, "
                                   "send pod->pod, pod->ClusterIP, client->NodePort (Cluster, Local), "
                                   "pod->outside and no-endpoint flows, print what each server saw and the "
                                   "dataplanes' counters, then tear down (also on Ctrl-C). Exit 1 if a row "
                                   "fails.")
    topology(m)
    m.add_argument("--requests", type=int, default=20, metavar="N", help="requests per flow (default: 20)")
    m.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    m.add_argument("--json", action="store_true", help="print the rows as one JSON object at the end")
    m.set_defaults(func=_cmd_demo)


def _guard(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except LabError as exc:
            print(f"dataplane lab {args.lab_command}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"dataplane lab {args.lab_command}: interrupted", file=sys.stderr)
            return 130
    return run


@_guard
def _cmd_restart(args) -> int:
    from .topology import restart
    print(f"lab {args.name}: {args.node} dataplane restarted (pid {restart(args.name, args.node)})")
    return 0


def _spec(args, services=None):
    from .topology import DEFAULT_SERVICES, LabSpec
    return LabSpec(args.name, args.nodes, args.pods_per_node, args.overlay, args.dataplane,
                   services if services is not None else DEFAULT_SERVICES)


@_guard
def _cmd_up(args) -> int:
    from .topology import up
    spec = _spec(args, args.services)
    if args.no_services:
        spec = spec.__class__(**{**spec.__dict__, "services": None})
    return _show(up(spec), args.json)


@_guard
def _cmd_status(args) -> int:
    from .topology import load_state
    return _show(load_state(args.name), args.json)


def _show(state: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(state))
    else:
        print_status(state)
    return 0


@_guard
def _cmd_down(args) -> int:
    from .topology import down
    outputs = down(args.name)
    for node, text in outputs.items():
        print(f"--- {node}: dataplane output at exit")
        print(text.rstrip() or "(no output)")
    print(f"lab {args.name}: down")
    return 0


@_guard
def _cmd_apply(args) -> int:
    from .topology import apply
    services = apply(args.name, args.file)
    print(f"lab {args.name}: applied {args.file}; {len(services)} Services now")
    return 0


@_guard
def _cmd_demo(args) -> int:
    from .demo import demo
    if args.requests < 1:
        raise LabError("--requests must be at least 1")
    return demo(_spec(args), args.requests, args.keep, args.json)


def _table(headers: tuple, rows: list[tuple]) -> None:
    cells = [tuple(map(str, headers))] + [tuple("" if c is None else str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print()


def _process(state: dict, key: str) -> str:
    pid = state["pids"].get(key)
    if pid is None:
        return "-"
    return f"{pid} {'running' if alive(pid) else 'DEAD'}"


def _stats(node: dict) -> list[tuple[str, int]]:
    """Non-zero numbers of the dataplane's --stats-file, flattened to dotted keys."""
    try:
        data = json.loads(Path(node["stats"]).read_text())
    except (KeyError, OSError, ValueError):
        return []
    out: list[tuple[str, int]] = []

    def walk(value, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value:
            out.append((key, value))
    walk(data, "")
    return out


def print_status(state: dict) -> None:
    kernel = state["dataplane"] == "kernel"
    print(f"lab {state['name']}: dataplane {state['dataplane']}, overlay {state['overlay']}, "
          f"cluster CIDR {state['clusterCIDR']}, state {state['stateDir']}\n")
    _table(("NODE", "NETNS", "NODE IP", "POD CIDR", "GATEWAY", "DATAPLANE"),
           [(n["name"], n["netns"], n["ip"], n["podCIDR"], n["podGateway"],
             "kernel forwarding" if kernel else _process(state, n["name"])) for n in state["nodes"]])
    _table(("POD", "NODE", "IP", "PORT", "NETNS", "SERVER"),
           [(p["name"], p["node"], p["ip"], p["port"], p["netns"], _process(state, f"server/{p['name']}"))
            for p in state["pods"]])
    if state["services"]:
        _table(("SERVICE", "TYPE", "CLUSTER-IP", "PORTS", "ENDPOINTS"),
               [(f"{s['namespace']}/{s['name']}", s["type"] + ("/Local" if s["externalTrafficPolicy"] == "Local"
                                                               and s["type"] != "ClusterIP" else ""),
                 s["clusterIP"], ",".join(f"{p['port']}{':' + str(p['nodePort']) if p['nodePort'] else ''}"
                                          f"/{p['protocol']}" for p in s["ports"]),
                 ",".join(s["endpoints"]) or "(none)") for s in state["services"]])
    for n in state["nodes"]:
        counters = _stats(n)
        if counters:
            print(f"{n['name']} counters ({n['stats']}):")
            for key, value in counters:
                print(f"  {key:<40}{value:>14,}")
            print()
    _table(("OTHER", "NETNS", "IP"),
           [("external client", state["external"]["netns"], state["external"]["ip"]),
            ("outside world", state["outside"]["netns"],
             f"{state['outside']['ip']} (gateway), {state['outside']['serverIP']} (server)")])
