"""`dataplane dns`: the cluster DNS server on its own."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from dataplane.config.dataplane import DnsConfig, dns_domain, host_port
from dataplane.config.fields import unicast_ip

RELOAD_S = 1.0


def register(sub) -> None:
    d = sub.add_parser(
        "dns", help="serve cluster DNS (the Kubernetes DNS specification) over UDP and TCP",
        description="Answer the Kubernetes DNS specification's names for the Services, EndpointSlices, "
                    "Pods and Namespaces in CONFIG, and forward every other name to upstream resolvers "
                    "through a cache. Settings default to the `dns:` section of a DataplaneConfiguration "
                    "in CONFIG, if any; flags override them. CONFIG is re-read when its files change; a bad "
                    "object is reported and skipped.")
    d.add_argument("--config", required=True, type=Path, metavar="PATH",
                   help="YAML/JSON file or directory of objects (none needs to be a DataplaneConfiguration)")
    d.add_argument("--listen", required=True, type=_arg(host_port(53, lowest=0)), metavar="ADDR[:PORT]",
                   help="address to serve UDP and TCP on (port 53 by default, 0 picks one)")
    d.add_argument("--cluster-domain", type=_arg(dns_domain), metavar="DOMAIN",
                   help="the cluster domain (default: cluster.local)")
    d.add_argument("--pods", choices=("disabled", "insecure", "verified"),
                   help="pod records a-b-c-d.NS.pod.DOMAIN, as CoreDNS's `pods` option (default: disabled)")
    d.add_argument("--endpoint-pod-names", action="store_true", default=None,
                   help="name endpoints without a hostname after their pod (CoreDNS's endpoint_pod_names)")
    d.add_argument("--ttl", type=_arg(_ttl), metavar="SECONDS", help="TTL of the zone's records (default: 5)")
    d.add_argument("--upstream", action="append", type=_arg(host_port(53)), metavar="ADDR[:PORT]",
                   help="resolver for other names, repeatable (default: the nameservers of /etc/resolv.conf)")
    d.add_argument("--server-ip", action="append", type=_arg(unicast_ip), metavar="IP",
                   help="an address of this DNS server, for the zone's NS records; repeatable")
    d.set_defaults(func=_cmd_dns)


def _arg(parse):
    def convert(value: str):
        try:
            return parse(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


def _ttl(value: str) -> int:
    if not value.isdigit() or int(value) > 3600:
        raise ValueError(f"must be 0-3600 seconds, got {value!r}")
    return int(value)


def settings_from(args, config) -> DnsConfig:
    base = (config.dataplane and config.dataplane.dns) or DnsConfig()
    flags = {"cluster_domain": args.cluster_domain, "pods": args.pods, "endpoint_pod_names": args.endpoint_pod_names,
             "ttl": args.ttl, "upstreams": args.upstream and tuple(args.upstream),
             "server_ips": args.server_ip and tuple(args.server_ip)}
    return replace(base, **{k: v for k, v in flags.items() if v is not None})


def _load(path: Path):
    from dataplane.config import load
    config = load(path, strict=False)
    for p in config.problems:
        print(f"dataplane dns: skipped: {p}", file=sys.stderr)
    return config


def _stamp(path: Path) -> tuple:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    out = []
    for f in files:
        try:
            out.append((f.name, f.stat().st_mtime_ns))
        except OSError:
            out.append((f.name, None))
    return tuple(out)


def _cmd_dns(args) -> int:
    from dataplane.cli import CliError
    from .server import DnsService
    if not args.config.exists():
        raise CliError(f"{args.config}: no such file or directory")
    config = _load(args.config)
    service = DnsService(settings_from(args, config))
    service.load_config(config)
    host, port = args.listen
    try:
        bound = service.start((str(host), port))
    except OSError as e:
        raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    print(f"dataplane dns: serving {service.settings.cluster_domain} on {bound[0]}:{bound[1]} (UDP, TCP); "
          f"upstreams: {', '.join(f'{a}:{p}' for a, p in service.resolver.upstreams) or 'none'}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stamp = _stamp(args.config)
    try:
        while not stop.wait(RELOAD_S):
            now = _stamp(args.config)
            if now != stamp:
                stamp = now
                service.load_config(_load(args.config))
                print("dataplane dns: configuration reloaded", flush=True)
    finally:
        service.stop()
    return 0


__all__ = ["register"]
