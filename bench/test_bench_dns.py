"""Cluster DNS: the fast-path stage's answers per second in memory, and the standalone server live
over UDP on a veth pair, each against a straightforward dnslib server over the same records,
measured in the same run (medians over rounds on both sides).

    .venv/bin/python -m pytest bench/test_bench_dns.py --benchmark-enable -s

Run as a script, this module is the live benchmark's query generator (`gen`, in the client
namespace) or its dnslib baseline server (`dnslib`, in the server namespace).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dnslib import QTYPE, DNSRecord  # noqa: E402
from dnslib.server import BaseResolver, DNSLogger, DNSServer  # noqa: E402

from dataplane.config import loads  # noqa: E402
from dataplane.config.dataplane import DnsConfig  # noqa: E402
from dataplane.dns import DnsService  # noqa: E402
from dataplane.dns.zone import Zone  # noqa: E402

N_SERVICES = 1000
DNS_IP = "10.96.0.10"
BURST = 256
# Upstream for names outside the zone: loopback's discard port, where nothing listens (never the
# host's own resolvers).
LOOPBACK_DISCARD = ((ipaddress.ip_address("127.0.0.1"), 9),)


def cluster_yaml(n: int = N_SERVICES) -> str:
    """n ClusterIP Services with two named ports (every fourth dual-stack) and a headless one."""
    docs = []
    for i in range(n):
        ips = f"[10.97.{i >> 8}.{i & 255}" + (f', "fd00:97::{i:x}"]' if i % 4 == 0 else "]")
        fam = "[IPv4, IPv6]" if i % 4 == 0 else "[IPv4]"
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: svc-{i}, namespace: ns-{i % 20}}}
spec: {{clusterIPs: {ips}, ipFamilies: {fam}, ports: [{{name: http, port: 80}}, {{name: grpc, port: 9000}}]}}""")
    return "\n---\n".join(docs)


def questions(n: int = BURST, seed: int = 1) -> list[tuple[str, str]]:
    """A mix as pods ask: A mostly, AAAA for dual-stack names, some SRV."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        i = rng.randrange(N_SERVICES)
        name = f"svc-{i}.ns-{i % 20}.svc.cluster.local."
        r = rng.random()
        if r < 0.15:
            out.append((f"_http._tcp.{name}", "SRV"))
        elif r < 0.3 and i % 4 == 0:
            out.append((name, "AAAA"))
        else:
            out.append((name, "A"))
    return out


def wire_query(name: str, qtype: str, qid: int) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    return q.pack()


class RecordsResolver(BaseResolver):
    """The baseline: a dict of the zone's hot answers served by dnslib as its examples do."""

    def __init__(self, zone: Zone):
        self.records = {}
        for name, qtype in zone.hot_names():
            ans = zone.resolve(name, qtype)
            self.records[(name, qtype)] = (ans.answers, ans.additional)

    def resolve(self, request, handler):
        reply = request.reply()
        found = self.records.get((str(request.q.qname).lower().rstrip("."), request.q.qtype))
        if found is None:
            reply.header.rcode = 3
        else:
            for rr in found[0]:
                reply.add_answer(rr)
            for rr in found[1]:
                reply.add_ar(rr)
        return reply


def zone_of(text: str) -> DnsService:
    service = DnsService(replace(DnsConfig(), upstreams=LOOPBACK_DISCARD))
    service.load_config(loads(text))
    return service


def _median_rate(fn, n: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def test_bench_dns_stage(benchmark):
    from scapy.all import IP, UDP, Ether, Raw

    from dataplane.burst import COUNTERS, Burst
    from dataplane.parse import parse

    service = zone_of(cluster_yaml())
    table = service.compile_stage_table([DNS_IP])
    qs = questions()
    payloads = [wire_query(n, t, k) for k, (n, t) in enumerate(qs)]
    template = Burst(BURST)
    for k, p in enumerate(payloads):
        template.append(bytes(Ether(src="0a:00:00:00:00:01", dst="02:00:00:00:00:02")
                              / IP(src=f"10.244.{k >> 8}.{k & 255 or 1}", dst=DNS_IP) / UDP(sport=40000 + k, dport=53)
                              / Raw(p)))
    b = Burst(BURST)
    counters = parse(b)
    answered = COUNTERS.index("dns_answer")

    def run():
        b.copy_from(template)     # the stage rewrites queries into answers: fresh queries every round
        parse(b, counters)
        table.run(b, counters)

    benchmark.pedantic(run, rounds=2000, warmup_rounds=50)
    assert int(counters[0][answered]) >= BURST * 2000 and (b.verdicts == 1).all()
    ours = BURST / benchmark.stats.stats.median

    resolver = RecordsResolver(service.zone)

    def baseline():
        for p in payloads:
            resolver.resolve(DNSRecord.parse(p), None).pack()

    def control_plane():
        for p in payloads:
            service.resolver.handle(p, udp=True)

    base = _median_rate(baseline, BURST, 15)
    cp = _median_rate(control_plane, BURST, 15)
    benchmark.extra_info.update(answers_per_s=round(ours), dnslib_baseline_per_s=round(base),
                                control_plane_per_s=round(cp), speedup=round(ours / base, 1))
    print(f"\nDNS stage (parse + answer, burst of {BURST}, {len(table)} hot answers): {ours / 1e6:.2f} M answers/s; "
          f"dnslib resolve + pack baseline {base / 1e3:.1f} k/s ({ours / base:.0f}x); "
          f"our control plane {cp / 1e3:.1f} k/s")


def test_bench_dns_update(benchmark):
    """One EndpointSlice change applied to the zone and the fast-path table recompiled (only the
    changed Service is packed again), against rebuilding both from scratch, same cluster."""
    import ipaddress as ip
    from dataplane.config.k8s import Endpoint, EndpointSlice
    from dataplane.dns.stage import TableCompiler
    n = 2000
    text = cluster_yaml(n) + """
---
apiVersion: v1
kind: Service
metadata: {name: pets, namespace: ns-0}
spec: {clusterIP: None, ports: [{name: http, port: 80}]}"""
    config = loads(text)
    service = zone_of(text)
    service.compile_stage_table([DNS_IP])
    slices = [EndpointSlice("ns-0", "pets-1", "pets", "IPv4",
                            tuple(Endpoint((ip.ip_address(f"10.246.{k}.{i}"),)) for i in range(1, 11)))
              for k in (1, 2)]
    state = {"k": 0, "current": None}

    def update():
        new = slices[state["k"]]
        service.on_endpoint_slice(state["current"], new)
        state["current"], state["k"] = new, state["k"] ^ 1
        return service.compile_stage_table([DNS_IP])

    benchmark.pedantic(update, rounds=30, warmup_rounds=2)
    ours = benchmark.stats.stats.median

    def rebuild():
        fresh = DnsService(replace(DnsConfig(), upstreams=LOOPBACK_DISCARD))
        fresh.load_config(config)
        return TableCompiler(fresh.zone).compile([DNS_IP])

    base = 1 / _median_rate(rebuild, 1, 3)
    benchmark.extra_info.update(update_ms=round(ours * 1e3, 2), rebuild_ms=round(base * 1e3, 1))
    print(f"\nDNS zone + stage table, one EndpointSlice change in {n + 1} Services: {ours * 1e3:.1f} ms; "
          f"full rebuild {base * 1e3:.0f} ms ({base / ours:.0f}x)")


# ---- live, over a veth pair ----

CLIENT_IP, SERVER_IP = "10.3.0.1", "10.3.0.2"


def _require_root():
    import shutil
    import pytest
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the live benchmark needs root and iproute2 (network namespaces)")


def _live_rate(client_ns: str, port: int, seconds: float) -> float:
    from dataplane.lab.netns import exec_argv, run
    out = run(exec_argv(client_ns, [sys.executable, __file__, "gen", "--server", SERVER_IP, "--port", str(port),
                                    "--seconds", str(seconds)]), timeout=seconds + 30).stdout
    return json.loads(out)["answers_per_s"]


def _wait_udp(client_ns: str, port: int) -> None:
    from dataplane.lab.netns import exec_argv, run
    run(exec_argv(client_ns, [sys.executable, __file__, "gen", "--server", SERVER_IP, "--port", str(port),
                              "--seconds", "0.2", "--wait"]), timeout=60)


def test_bench_dns_live_udp(tmp_path):
    _require_root()
    from dataplane.lab.netns import add_netns, delete_netns, exec_argv, ip, kill_pids, netns_pids, sysctl
    tag = secrets.token_hex(3)
    client, server = f"dpd{tag}-c", f"dpd{tag}-s"
    objects = tmp_path / "cluster.yaml"
    objects.write_text(cluster_yaml())
    procs = []
    try:
        for ns in (client, server):
            add_netns(ns)
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6", 1)
            ip(ns, "link", "set", "lo", "up")
        ip(client, "link", "add", "c0", "type", "veth", "peer", "name", "s0", "netns", server)
        ip(client, "addr", "add", f"{CLIENT_IP}/24", "dev", "c0")
        ip(server, "addr", "add", f"{SERVER_IP}/24", "dev", "s0")
        ip(client, "link", "set", "c0", "up")
        ip(server, "link", "set", "s0", "up")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        procs.append(subprocess.Popen(exec_argv(server, [sys.executable, "-m", "dataplane.cli", "dns", "--config",
                                                         str(objects), "--listen", f"{SERVER_IP}:53", "--upstream",
                                                         "127.0.0.1:9"]),
                                      stdout=subprocess.DEVNULL, env=env))
        procs.append(subprocess.Popen(exec_argv(server, [sys.executable, __file__, "dnslib", "--config", str(objects),
                                                         "--listen", f"{SERVER_IP}:5353"]),
                                      stdout=subprocess.DEVNULL, env=env))
        _wait_udp(client, 53)
        _wait_udp(client, 5353)
        ours, base = [], []
        for _ in range(3):                      # interleaved rounds: both sides see the same machine
            ours.append(_live_rate(client, 53, 2))
            base.append(_live_rate(client, 5353, 2))
        o, b = statistics.median(ours), statistics.median(base)
        print(f"\nDNS live over UDP (veth, 64 queries in flight): dataplane dns {o / 1e3:.1f} k answers/s, "
              f"dnslib DNSServer {b / 1e3:.1f} k/s ({o / b:.1f}x)")
        assert o > 0 and b > 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        for ns in (client, server):
            kill_pids(netns_pids(ns), timeout=3)
            delete_netns(ns)


def _gen(args) -> None:
    """Keep `window` queries in flight for `seconds`; print the answers per second."""
    qs = [wire_query(n, t, 0) for n, t in questions(4096, seed=2)]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((args.server, args.port))
    if args.wait:                               # until the server answers at all
        s.settimeout(0.2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            s.send(qs[0])
            try:
                s.recv(4096)
                return
            except OSError:
                continue
        raise SystemExit("no answer")
    s.settimeout(1.0)
    sent = got = 0
    t0 = time.perf_counter()
    end = t0 + args.seconds
    while sent - got < args.window:
        s.send(struct.pack("!H", sent & 0xFFFF) + qs[sent % len(qs)][2:])
        sent += 1
    while time.perf_counter() < end:
        try:
            s.recv(4096)
        except socket.timeout:
            sent = got               # a lost datagram: refill the window
        got += 1
        s.send(struct.pack("!H", sent & 0xFFFF) + qs[sent % len(qs)][2:])
        sent += 1
    print(json.dumps({"answers_per_s": got / (time.perf_counter() - t0)}))


def _dnslib_server(args) -> None:
    service = zone_of(Path(args.config).read_text())
    host, port = args.listen.rsplit(":", 1)
    server = DNSServer(RecordsResolver(service.zone), host, int(port),
                       logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))
    server.start()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="query generator")
    g.add_argument("--server", required=True)
    g.add_argument("--port", type=int, default=53)
    g.add_argument("--seconds", type=float, default=2)
    g.add_argument("--window", type=int, default=64)
    g.add_argument("--wait", action="store_true")
    g.set_defaults(func=_gen)
    d = sub.add_parser("dnslib", help="the baseline server")
    d.add_argument("--config", required=True)
    d.add_argument("--listen", required=True)
    d.set_defaults(func=_dnslib_server)
    a = parser.parse_args()
    a.func(a)
