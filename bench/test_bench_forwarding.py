"""Live forwarding: our dataplane over AF_PACKET vs the Linux kernel, same topology, one run.

src -> rtr -> dst, three network namespaces joined by two veth pairs (offloads off), created
per case and deleted afterwards (bench/netbench.py). In rtr, one of:
  ours        `dataplane run` with two afpacket ports; kernel forwarding off, no addresses on
              the rtr interfaces; the dataplane answers ARP for the gateways and resolves the
              hosts behind them by ARP.
  kernel      the gateway addresses on rtr and net.ipv4.ip_forward=1.
  kernel+RPS  the same, r0's receive work spread over both CPUs (RPS): on a veth the kernel
              otherwise forwards on the sending CPU, inside the generator's sendmmsg.
  iptables    kernel plus kube-proxy's iptables-mode nat table (iptables-restore) for N UDP
              ClusterIP Services: KUBE-SERVICES jumps, KUBE-SVC statistic jumps, KUBE-SEP DNAT.
  nftables    kernel plus kube-proxy's nftables-mode shape (one verdict-map lookup); slow to load
              (~20 s for 10,000 Services); BENCH_NFTABLES=0 leaves it out.
Traffic: 64-byte UDP frames from src at the highest rate the generator (our AfPacketPort.tx,
prebuilt bursts) sustains, for BENCH_SECONDS (3) per case, after a 0.3 s warm-up on other flows
(ARP, first-packet work). Delivered = what dst's veth received; for (b) dst also counts the
frames that arrive DNATed (UDP port 8080, the endpoints' targetPort). Workloads:
  (a) forwarding: 64 fixed flows to a routed destination (no Service);
  (b) new connections: every frame a new UDP flow (new source port / address) to the LAST of
      10,000 Services' VIP, so iptables walks the whole KUBE-SERVICES chain on every new flow;
      the same Services are in our dataplane's config (Service + EndpointSlice, a JSON List).

Two CPUs for everything: the generator is pinned to CPU 0, our dataplane to CPU 1; the kernel
forwards in softirq on CPU 0 (or both with RPS). Rates are from one run and noisy; nothing
asserts on them.

Run (about a minute, a third of it loading the nftables rules):
    .venv/bin/python -m pytest bench/test_bench_forwarding.py -m slow --benchmark-enable -s
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

import netbench as nb

SECONDS = float(os.environ.get("BENCH_SECONDS", 3.0))
WARMUP_S = 0.3
N_SERVICES = int(os.environ.get("BENCH_SERVICES", 10_000))
N_ENDPOINTS = 2
NFTABLES = os.environ.get("BENCH_NFTABLES", "1") != "0"
CONNTRACK_SIZE = 1 << 22   # ours: room for every flow one run opens (a full table drops new flows)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("ip", "ethtool", "nft", "iptables-restore")),
                       reason="needs iproute2, ethtool, nftables and iptables"),
]

WORKLOADS = {
    "fwd": ("fwd", nb.FWD_TARGET, 9, int(ipaddress.IPv4Address(nb.SRC_HOST))),
    "new": ("new", nb.service_vip(N_SERVICES - 1), nb.SVC_PORT, nb.NEW_SRC),
}


@contextmanager
def triangle():
    tri = nb.Triangle().up()
    workdir = Path(tempfile.mkdtemp(prefix=f"dpb{tri.tag}-"))
    try:
        yield tri, workdir
    finally:
        tri.down()
        shutil.rmtree(workdir, ignore_errors=True)


def drive(tri, workload: str, vip_index: int | None = None) -> nb.GenResult:
    mode, dst, dport, src = WORKLOADS[workload]
    if vip_index is not None:
        dst = nb.service_vip(vip_index)
    nb.traffic(tri, mode, dst, dport, WARMUP_S, nb.WARM_SRC)
    return nb.traffic(tri, mode, dst, dport, SECONDS, src)


def kernel(workload: str, rules: str | None = None, n_services: int = 0, rps: bool = False) -> dict:
    with triangle() as (tri, workdir):
        tri.kernel_router(rps=rps)
        load_s = None
        if rules == "iptables":
            load_s = nb.load_rules(tri, "iptables", nb.iptables_rules(n_services, N_ENDPOINTS), workdir)
        elif rules == "nftables":
            load_s = nb.load_rules(tri, "nftables", nb.nft_rules(n_services, N_ENDPOINTS), workdir)
        r = drive(tri, workload, n_services - 1 if rules else None)
        return {"result": r, "load_s": load_s}


def generator_alone() -> nb.GenResult:
    """The generator's ceiling: same frames into rtr, which drops them (no forwarding at all)."""
    with triangle() as (tri, _):
        return drive(tri, "fwd")


def ours(workload: str, n_services: int) -> dict:
    with triangle() as (tri, workdir):
        dp = nb.Dataplane(tri, workdir)
        dp.write_config(n_services, N_ENDPOINTS, CONNTRACK_SIZE)
        try:
            ready_s = dp.start()
            r = drive(tri, workload)
        finally:
            counters = dp.stop()
        return {"result": r, "load_s": ready_s, "counters": counters}


@pytest.fixture(scope="module")
def ours_unavailable():
    return nb.dataplane_run_available()


def row(name: str, m: dict | None, base: float | None = None, unit: str = "kpps",
        nat: bool = False) -> str:
    if m is None:
        return f"  {name:<34} {'n/a':>10}"
    r = m["result"]
    ratio = f"{r.rate / base:7.2f}x" if base else ""
    dnat = f"  DNATed {r.translated / max(r.delivered, 1):4.0%}" if nat else ""
    load = f"  (setup {m['load_s']:.1f} s)" if m.get("load_s") else ""
    bound = "*" if r.delivered >= 0.99 * r.sent else " "
    return (f"  {name:<34} {r.rate / 1e3:8.0f}{bound}{unit}  offered {r.offered_rate / 1e3:6.0f}k  "
            f"{ratio}{dnat}{load}")


def info(m: dict | None) -> dict | None:
    if m is None:
        return None
    r = m["result"]
    return {"delivered_per_s": round(r.rate), "offered_per_s": round(r.offered_rate),
            "delivered": r.delivered, "dnat": r.translated, "sent": r.sent, "seconds": round(r.seconds, 3)}


def our_drops(m: dict | None) -> str:
    c = (m or {}).get("counters")
    if not c:
        return ""
    ring = sum(p.get("rx_dropped", 0) for p in c.get("ports", {}).values())
    return (f"  ours, whole run incl. warm-up: RX ring overflow drops {ring:,}, "
            f"pipeline drops {c.get('drops') or {}}, conntrack entries {c.get('conntrack', 0):,}")


HEADER = (f"64-byte UDP over veth, {SECONDS:g} s per case; {os.cpu_count()} CPUs shared by generator and "
          f"router (generator on CPU {nb.GEN_CPU}, our dataplane on CPU {nb.ROUTER_CPU}; the kernel forwards "
          f"in softirq on the generator's CPU unless RPS).\n  'offered' = what the generator got out; "
          f"* = the router kept up with it (>= 99% delivered), so the figure is bounded by the generator.")


def test_forwarding(benchmark, ours_unavailable):
    """(a) 64 fixed flows to a routed destination: ours vs Linux forwarding."""
    g = generator_alone()
    k = kernel("fwd")
    k_rps = kernel("fwd", rps=True)
    o = None
    if not ours_unavailable:
        o = benchmark.pedantic(ours, args=("fwd", 0), rounds=1, iterations=1)
    base = k["result"].rate
    print(f"\nforwarding (a), delivered pps. {HEADER}")
    print(f"  {'generator alone (rtr drops all)':<34} {'-':>8}      offered {g.offered_rate / 1e3:6.0f}k")
    print(row("kernel (ip_forward)", k, base))
    print(row("kernel + RPS over both CPUs", k_rps, base))
    print(row("ours (dataplane run, AF_PACKET)", o, base))
    print(our_drops(o))
    benchmark.extra_info.update(generator_alone_per_s=round(g.offered_rate), kernel=info(k),
                                kernel_rps=info(k_rps), ours=info(o))
    if o is not None:
        ratio = o["result"].rate / base
        ratio_rps = o["result"].rate / k_rps["result"].rate
        benchmark.extra_info.update(ratio_vs_kernel=round(ratio, 2), ratio_vs_kernel_rps=round(ratio_rps, 2))
        print(f"ours / kernel = {ratio:.2f}x, ours / kernel+RPS = {ratio_rps:.2f}x (target >= 0.5x)")
    else:
        pytest.skip(f"dataplane run unavailable: {ours_unavailable}")


def test_new_connections(benchmark, ours_unavailable):
    """(b) every frame a new UDP flow to the last of N Services: ours vs iptables (N rules and 1)."""
    k1 = kernel("new", "iptables", 1)
    kn = kernel("new", "iptables", N_SERVICES)
    nft = kernel("new", "nftables", N_SERVICES) if NFTABLES else None
    o = None
    if not ours_unavailable:
        o = benchmark.pedantic(ours, args=("new", N_SERVICES), rounds=1, iterations=1)
    base = kn["result"].rate
    print(f"\nnew connections (b), new UDP flows/s delivered, to the last of {N_SERVICES:,} Services "
          f"x {N_ENDPOINTS} endpoints. {HEADER}")
    print(row(f"kernel + iptables, {N_SERVICES:,} Services", kn, base, "k/s ", nat=True))
    print(row("kernel + iptables, 1 Service", k1, base, "k/s ", nat=True))
    print(row(f"kernel + nftables, {N_SERVICES:,} Services", nft, base, "k/s ", nat=True) if NFTABLES
          else "  kernel + nftables: not run (BENCH_NFTABLES=0)")
    print(row(f"ours, {N_SERVICES:,} Services", o, base, "k/s ", nat=True))
    print(our_drops(o))
    print("  the kernel's conntrack table (nf_conntrack_max, host-wide) fills during a run; unreplied "
          "UDP entries are early-dropped to make room, so no new flow is refused")
    benchmark.extra_info.update(kernel_iptables_n=info(kn), kernel_iptables_1=info(k1),
                                kernel_nftables_n=info(nft), ours=info(o), services=N_SERVICES,
                                iptables_restore_s=round(kn["load_s"], 2))
    if o is not None:
        r = o["result"].rate
        benchmark.extra_info.update(ratio_vs_iptables_n=round(r / base, 1),
                                    ratio_vs_iptables_1=round(r / k1["result"].rate, 2))
        print(f"ours / iptables({N_SERVICES:,}) = {r / base:.1f}x, ours / iptables(1) = "
              f"{r / k1['result'].rate:.2f}x" + (f", ours / nftables = {r / nft['result'].rate:.2f}x" if nft else ""))
        if nft:
            benchmark.extra_info.update(ratio_vs_nftables_n=round(r / nft["result"].rate, 2))
    else:
        pytest.skip(f"dataplane run unavailable: {ours_unavailable}")
