"""Operator commands that talk to a running `dataplane run` over its control socket:
`dataplane services`, `dataplane conntrack list|flush`, `dataplane stats`, `dataplane monitor`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dataplane.control import DEFAULT_SOCKET, request, stream

__all__ = ["register"]


def register(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, metavar="PATH",
                        help=f"the running dataplane's control socket (default: {DEFAULT_SOCKET})")
    common.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                        help="output format (default: table)")

    s = sub.add_parser("services", parents=[common], help="the Services as programmed in a running dataplane",
                       description="List the Services a running dataplane has programmed: every "
                                   "frontend (ClusterIP, NodePort, external and load-balancer IPs) "
                                   "with the endpoints a new connection to it can reach.")
    s.set_defaults(func=_services)

    c = sub.add_parser("conntrack", help="list or flush tracked connections",
                       description="Like conntrack -L / -D, on a running dataplane's table. Filters "
                                   "apply to the original direction.")
    csub = c.add_subparsers(metavar="ACTION", dest="action", required=True)
    for action, text in (("list", "list the matching connections"), ("flush", "delete the matching connections")):
        a = csub.add_parser(action, parents=[common], help=text, description=text.capitalize() + ".")
        a.add_argument("-p", "--proto", help="tcp, udp, sctp, icmp or icmpv6")
        a.add_argument("-s", "--src", help="original source address")
        a.add_argument("-d", "--dst", help="original destination address")
        a.add_argument("--sport", type=int, help="original source port")
        a.add_argument("--dport", type=int, help="original destination port")
        a.add_argument("--service", metavar="NAMESPACE/NAME", help="connections to this Service")
        a.set_defaults(func=_conntrack)

    st = sub.add_parser("stats", parents=[common], help="counters of a running dataplane",
                        description="Per-stage counters, drops by reason, per-port packets, conntrack "
                                    "and sync statistics of a running dataplane.")
    st.add_argument("--watch", action="store_true", help="print them again every --interval seconds")
    st.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between prints (default 1)")
    st.set_defaults(func=_stats)

    m = sub.add_parser("monitor", parents=[common], help="stream per-packet events, like cilium monitor",
                       description="Print an event for every packet of the chosen flows (or every "
                                   "drop) as the running dataplane handles it, until interrupted.")
    m.add_argument("--drops", action="store_true", help="only dropped packets, with the reason")
    m.add_argument("-p", "--proto", help="tcp, udp, sctp, icmp or icmpv6")
    m.add_argument("--ip", help="packets from or to this address (as they leave: after NAT)")
    m.add_argument("--port", type=int, help="packets from or to this port (after NAT)")
    m.add_argument("-n", "--count", type=int, metavar="N", help="stop after N events")
    m.set_defaults(func=_monitor)


def _services(args) -> int:
    services = request(args.socket, {"cmd": "services"})
    if args.output != "table":
        return _dump(services, args.output)
    rows = [("NAMESPACE", "NAME", "KIND", "FRONTEND", "ENDPOINTS")]
    for svc in services:
        for fe in svc["frontends"]:
            addr = f"[{fe['ip']}]" if ":" in fe["ip"] else fe["ip"]
            eps = ",".join(f"{e['ip']}:{e['port']}" for e in fe["endpoints"]) or "<none>"
            rows.append((svc["namespace"], svc["name"], fe["kind"], f"{addr}:{fe['port']}/{fe['protocol']}", eps))
    _table(rows)
    return 0


def _conntrack(args) -> int:
    flt = {k: getattr(args, k) for k in ("proto", "src", "dst", "sport", "dport", "service")
           if getattr(args, k) is not None}
    result = request(args.socket, {"cmd": f"conntrack.{args.action}", "filter": flt})
    if args.action == "flush":
        if args.output == "table":
            print(f"{result['deleted']} connection(s) deleted")
            return 0
        return _dump(result, args.output)
    if args.output != "table":
        return _dump(result, args.output)
    for e in result:   # conntrack -L's shape
        o, r = e["orig"], e["reply"]
        print(f"{e['proto']:<6} {e['state']:<12} src={o['src']} dst={o['dst']} sport={o['sport']} "
              f"dport={o['dport']} src={r['src']} dst={r['dst']} sport={r['sport']} dport={r['dport']} "
              f"[{' '.join(e['flags'])}]")
    print(f"{len(result)} connection(s)", file=sys.stderr)
    return 0


def _stats(args) -> int:
    from dataplane.cli import _print_tree
    if not args.watch:
        result = request(args.socket, {"cmd": "stats"})
        if args.output == "table":
            _print_tree(result)
            return 0
        return _dump(result, args.output)
    try:
        for answer in stream(args.socket, {"cmd": "stats", "watch": True, "interval": args.interval}):
            if args.output == "table":
                print(f"--- {answer['result']['packets']} packets")
                _print_tree(answer["result"])
            else:
                _dump(answer["result"], args.output)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    return 0


def _monitor(args) -> int:
    req = {"cmd": "monitor", "drops": args.drops, "proto": args.proto, "ip": args.ip, "port": args.port}
    seen = 0
    try:
        for answer in stream(args.socket, req):
            if "lost" in answer:
                print(f"# {answer['lost']} events lost so far (ring full)", file=sys.stderr)
            ev = answer.get("event")
            if ev is None:
                continue
            if args.output == "table":
                what = ev["verdict"] + (f" ({ev['reason']})" if ev["reason"] else "")
                print(f"{ev['ts']:.6f} {what:<26} {ev['proto'] or '-':<5} {ev['src']}:{ev['sport']} -> "
                      f"{ev['dst']}:{ev['dport']} in={ev['in']} out={ev['out']} len={ev['len']}")
            else:
                _dump(ev, args.output)
            sys.stdout.flush()
            seen += 1
            if args.count and seen >= args.count:
                break
    except KeyboardInterrupt:
        pass
    return 0


def _dump(value, fmt: str) -> int:
    if fmt == "json":
        print(json.dumps(value, indent=2, default=str))
    else:
        import yaml
        print(yaml.safe_dump(value, sort_keys=False), end="" if isinstance(value, list) else "\n")
    return 0


def _table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
