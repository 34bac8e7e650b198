"""The `dataplane` command line."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from importlib import resources
from pathlib import Path

from dataplane.control import DEFAULT_SOCKET, ControlError
from dataplane.dns.cli import register as register_dns
from dataplane.lab.cli import register as register_lab
from dataplane.opscli import register as _register_operator_commands

__all__ = ["main"]


class CliError(Exception):
    """A user-facing failure: printed as one message, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from dataplane.logs import setup_logging
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (CliError, ControlError) as exc:
        print(f"dataplane {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `dataplane ... | head` is not an error
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dataplane", description=(
        "Userspace Kubernetes node dataplane: routing, conntrack and Service NAT "
        "over bursts of frames."))
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log detail on stderr (-v: sync steps, -vvvv: every sync)")
    sub = p.add_subparsers(metavar="COMMAND", dest="command")

    r = sub.add_parser("replay", help="run a capture through the pipeline",
                       description="Run every packet of IN through the pipeline and write the "
                                   "frames it transmits to OUT (pcap, or pcapng by extension).")
    r.add_argument("--config", required=True, type=Path, metavar="CONFIG",
                   help="YAML/JSON file or directory of configuration objects")
    r.add_argument("input", type=Path, metavar="IN", help="input capture (pcap or pcapng)")
    r.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                   help="where transmitted frames are written")
    r.add_argument("--trace", type=Path, metavar="TRACE.jsonl",
                   help="write one JSON object per input packet: verdict, reason, port, out")
    r.add_argument("--json", action="store_true", help="print the counters as one JSON object")
    r.add_argument("--in-port", metavar="NAME", help="port the packets arrive on (default: first)")
    r.add_argument("--burst-size", type=int, default=256, metavar="N",
                   help="frames per burst (default: 256)")
    r.set_defaults(func=_cmd_replay)

    c = sub.add_parser("check", help="validate a configuration and print what was understood",
                       description="Validate CONFIG (a file or a directory) and print what was "
                                   "understood; invalid objects are reported with kind, "
                                   "namespace/name and field path; the exit status is 1 when "
                                   "anything is invalid.")
    c.add_argument("config", type=Path, metavar="CONFIG")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.add_argument("--hostname-override", metavar="NAME",
                   help="check as node NAME would load it: of several DataplaneConfigurations "
                        "(one per node), NAME's")
    c.set_defaults(func=_cmd_check)

    run = sub.add_parser("run", help="forward live traffic on the configured ports",
                         description="Attach to the ports CONFIG names (AF_PACKET on existing "
                                     "interfaces, TAP devices created or attached by name) and "
                                     "forward until SIGINT/SIGTERM, then print the counters. "
                                     "Services, EndpointSlices, ServiceCIDRs and this node's Node "
                                     "come from the API server (list + watch) when a kubeconfig "
                                     "is given or found, else from CONFIG's files, which are "
                                     "watched. SIGHUP forces a full resync.")
    run.add_argument("--config", required=True, type=Path, metavar="CONFIG",
                     help="YAML/JSON file or directory: DataplaneConfiguration, "
                          "KubeProxyConfiguration (and, without an API server, the Kubernetes objects)")
    run.add_argument("--kubeconfig", metavar="FILE",
                     help="API server to watch (default: clientConnection.kubeconfig, else the "
                          "in-cluster service account when running in a pod)")
    run.add_argument("--hostname-override", metavar="NAME",
                     help="this node's name: the DataplaneConfiguration's nodeName must match")
    run.add_argument("--control-socket", type=Path, default=DEFAULT_SOCKET, metavar="PATH",
                     help=f"Unix socket for `dataplane services|conntrack|stats|monitor` "
                          f"(default: {DEFAULT_SOCKET}; mode 0600)")
    run.add_argument("--healthz-bind-address", metavar="ADDR:PORT", type=_bind_address(10256),
                     help="kube-proxy's /healthz and /livez (default: healthzBindAddress, 0.0.0.0:10256; "
                          "empty disables)")
    run.add_argument("--metrics-bind-address", metavar="ADDR:PORT", type=_bind_address(10249),
                     help="Prometheus /metrics (default: metricsBindAddress, 127.0.0.1:10249; "
                          "empty disables)")
    run.add_argument("--forwarding-cpu", type=int, metavar="CPU",
                     help="pin the forwarding thread to CPU; the control plane's threads use the "
                          "other CPUs, so table builds never share its core")
    run.add_argument("--json", action="store_true", help="print the exit counters as JSON")
    run.add_argument("--stats-file", type=Path, metavar="FILE",
                     help="rewrite FILE with the counters as JSON every second (mode 0600)")
    run.add_argument("--burst-size", type=int, default=256, metavar="N",
                     help="frames per burst (default: 256)")
    run.add_argument("--trace", type=Path, metavar="TRACE.jsonl",
                     help="write one JSON object per packet (slow: for debugging)")
    run.add_argument("--conntrack-file", type=Path, metavar="FILE",
                     help="reload the conntrack table from FILE at start and save it there at "
                          "exit, so connections survive a restart")
    run.set_defaults(func=_cmd_run)

    _register_operator_commands(sub)
    register_lab(sub)
    register_dns(sub)

    d = sub.add_parser("demo", help="replay the built-in example capture and show the counters",
                       description="Replay the example capture shipped with the package through "
                                   "the pipeline with the example configuration, print the "
                                   "per-stage counters and drop reasons, and show a few traces.")
    d.add_argument("--json", action="store_true", help="print the counters as one JSON object")
    d.set_defaults(func=_cmd_demo)
    return p


def _bind_address(default_port: int):
    """kube-proxy's bind address flags, read as the KubeProxyConfiguration fields are (a bare IP
    gets the default port); empty disables the server."""
    def parse(value: str) -> str:
        from dataplane.config.k8s import append_port_if_needed, host_port
        try:
            return value and host_port(append_port_if_needed(value, default_port))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("k8s-dataplane")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _load(path: Path):
    from dataplane.config import ConfigError, load
    try:
        return load(path)
    except ConfigError as exc:
        raise CliError(f"{path}: invalid configuration\n{exc}") from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None


def _load_node(path: Path):
    config = _load(path)
    if config.dataplane is None:
        raise CliError(f"{path}: no DataplaneConfiguration object (ports and routes)")
    return config


def _cmd_replay(args) -> int:
    from dataplane.replay import replay
    config = _load_node(args.config)
    try:
        result = replay(config, args.input, args.output, args.trace, args.in_port, args.burst_size)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    _report(result, args.json, args.output)
    if result.error:
        print(f"dataplane replay: {result.error}", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args) -> int:
    from dataplane.trace import TraceWriter
    from dataplane.worker import RunOptions, Worker, install_signal_handlers
    with contextlib.ExitStack() as stack:
        trace = None
        if args.trace is not None:
            ports = [p.name for p in _load_node(args.config).dataplane.ports]
            trace = TraceWriter(stack.enter_context(open(args.trace, "w", buffering=1)), ports)
        options = RunOptions(args.burst_size, args.stats_file, trace, args.conntrack_file, args.kubeconfig,
                             args.hostname_override, args.control_socket, args.healthz_bind_address,
                             args.metrics_bind_address, forwarding_cpu=args.forwarding_cpu)
        try:
            worker = Worker(args.config, options)
        except ValueError as exc:
            raise CliError(f"{args.config}: {exc}") from None
        except OSError as exc:
            raise CliError(f"cannot open ports: {exc}") from None
        stack.callback(worker.close)
        install_signal_handlers(worker)
        try:
            worker.run()
        except (OSError, ValueError) as exc:
            worker.save_conntrack()
            raise CliError(str(exc)) from None
        worker.save_conntrack()
        summary = worker.counters()
    if args.json:
        print(json.dumps(summary))
    else:
        _print_tree(summary)
    return 0


def _cmd_check(args) -> int:
    from dataplane.config import load
    # Like the node: every valid object is understood and shown, each bad one reported.
    try:
        config = load(args.config, strict=False)
        if args.hostname_override:
            from dataplane.worker import select_node_config
            config = select_node_config(config, args.hostname_override, args.config)
    except OSError as exc:
        raise CliError(f"{args.config}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(f"{args.config}: {exc}") from None
    summary = config.describe()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_tree(summary)
    if config.problems:
        print(f"{args.config}: {len(config.problems)} invalid:\n" + "\n".join(map(str, config.problems)),
              file=sys.stderr)
        return 1
    return 0


def _cmd_demo(args) -> int:
    from dataplane.replay import replay
    assets = resources.files("dataplane.demo")
    with resources.as_file(assets / "demo.yaml") as cfg_path, \
            resources.as_file(assets / "demo.pcap") as pcap_path, \
            tempfile.TemporaryDirectory(prefix="dataplane-demo-") as tmp:
        config = _load_node(cfg_path)
        dp = config.dataplane
        out = Path(tmp) / "out.pcap"
        trace = Path(tmp) / "trace.jsonl"
        result = replay(config, pcap_path, out, trace)
        if not args.json:
            print(f"demo: replaying {pcap_path.name} through node {dp.node_name} "
                  f"({len(dp.routes)} routes, ports {', '.join(p.name for p in dp.ports)})\n")
        _report(result, args.json, out)
        if not args.json:
            print("\nfirst packets of each verdict (from --trace):")
            seen = set()
            for line in trace.read_text().splitlines():
                rec = json.loads(line)
                key = (rec["verdict"], rec["reason"])
                if key not in seen:
                    seen.add(key)
                    print("  " + line)
    return 1 if result.error else 0


def _report(result, as_json: bool, out: Path) -> None:
    if as_json:
        print(json.dumps(result.as_dict()))
        return
    print(f"{result.packets} packets in {result.elapsed_s:.3f} s ({result.pps:,.0f} pps), "
          f"transmitted frames written to {out}")
    rows = [("stage counters", {k: v for k, v in result.counters.items() if v}),
            ("drops", {k: v for k, v in result.drops.items() if v}),
            ("transmitted per port", result.port_tx)]
    for title, values in rows:
        print(f"{title}:")
        if not values:
            print("  (none)")
        for name, value in values.items():
            print(f"  {name:<22}{value:>12,}")
    if result.oversize:
        print(f"records larger than a slot (dropped as oversize): {result.oversize}")


def _print_tree(value, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                print(f"{pad}{k}:")
                _print_tree(v, indent + 1)
            else:
                print(f"{pad}{k}: {v}")
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, (dict, list)):
                print(f"{pad}-")
                _print_tree(v, indent + 1)
            else:
                print(f"{pad}- {v}")
    else:
        print(f"{pad}{value}")


if __name__ == "__main__":
    sys.exit(main())
