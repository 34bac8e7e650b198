"""Helpers for the live forwarding benchmark (bench/test_bench_forwarding.py).

Topology, in three throwaway namespaces `dpb<hex>-src`, `-rtr`, `-dst`:

    src [s0] ---- [r0] rtr [r1] ---- [d0] dst
    10.1.0.2/16   10.1.0.1  10.2.0.1  10.2.0.2/16, AnyIP 10.2.128.0/17 (targets, endpoints)

All four veth ends have tso/gso/gro/tx offloads off. The generator runs in `src` (our
AfPacketPort.tx on s0, prebuilt 64-byte Ethernet/IPv4/UDP frames); what reaches `dst` is read
from d0's rx counter, which on a veth counts the frames its peer r1 handed over, so `dst` spends
no CPU on counting (an ingress tc rule drops IPv4 on d0: no sockets, no ICMP errors; ARP still
passes, so `dst` answers ARP for the targets and the endpoints through its AnyIP route).

Every command runs in one of these namespaces (dataplane.lab.netns wrappers); `Triangle.down`
kills what runs in them and deletes them, also after a failure.

Run as a script inside `src`, this module is the traffic generator:
    python bench/netbench.py gen --ifname s0 --dst-mac .. --mode fwd|new --seconds 3
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dataplane.lab.netns import (add_netns, delete_netns, exec_argv, ip, kill_pids, link_mac,  # noqa: E402
                                 netns_pids, no_offloads, run, sysctl)

SRC_NET, SRC_GW, SRC_HOST = "10.1.0.0/16", "10.1.0.1", "10.1.0.2"
DST_NET, DST_GW, DST_HOST = "10.2.0.0/16", "10.2.0.1", "10.2.0.2"
TARGETS = "10.2.128.0/17"             # AnyIP on dst: the plain destination and every endpoint
FWD_TARGET = "10.2.128.1"             # workload (a): the routed destination
ENDPOINT_BASE = int(ipaddress.IPv4Address("10.2.160.0"))
SERVICE_BASE = int(ipaddress.IPv4Address("10.96.0.0"))
CLUSTER_CIDR = "10.0.0.0/8"           # kube-proxy --cluster-cidr: src and dst are both pod networks
SVC_PORT, TARGET_PORT = 80, 8080
FRAME_LEN = 64
BURST = 256
FWD_FLOWS = 64                        # workload (a): 64 fixed flows (source ports)
NEW_SPORTS = 64_512                   # workload (b): source ports 1024.. per source address
WARM_SRC = int(ipaddress.IPv4Address("10.1.255.0"))  # warm-up flows' sources (never measured)
NEW_SRC = int(ipaddress.IPv4Address("10.1.1.0"))     # measured new flows: 10.1.1.0 + k, k < 64,000


DST_DROP = """table netdev dpb {
  counter to_target { }
  counter to_vip { }
  chain ingress {
    type filter hook ingress device "d0" priority 0; policy accept;
    meta protocol ip udp dport 8080 counter name to_target
    meta protocol ip udp dport 80 counter name to_vip
    meta protocol ip drop
  }
}
"""


def service_vip(i: int) -> str:
    return str(ipaddress.IPv4Address(SERVICE_BASE + 1 + i))


def endpoint_ips(i: int, n_endpoints: int) -> list[str]:
    return [str(ipaddress.IPv4Address(ENDPOINT_BASE + i * n_endpoints + j)) for j in range(n_endpoints)]


# ---------------------------------------------------------------------------------------------
# Topology

@dataclass
class Triangle:
    tag: str = field(default_factory=lambda: secrets.token_hex(3))

    def __post_init__(self):
        self.src, self.rtr, self.dst = (f"dpb{self.tag}-{r}" for r in ("src", "rtr", "dst"))
        self.macs: dict[str, str] = {}

    def up(self) -> "Triangle":
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        for ns in (self.src, self.rtr, self.dst):
            add_netns(ns)
        # Created inside rtr with the peer placed straight into its namespace: no host interface.
        ip(self.rtr, "link", "add", "r0", "type", "veth", "peer", "name", "s0", "netns", self.src)
        ip(self.rtr, "link", "add", "r1", "type", "veth", "peer", "name", "d0", "netns", self.dst)
        for ns, dev in ((self.src, "s0"), (self.rtr, "r0"), (self.rtr, "r1"), (self.dst, "d0")):
            no_offloads(ns, dev)
            ip(ns, "link", "set", dev, "up")
            self.macs[dev] = link_mac(ns, dev)
        for ns in (self.src, self.rtr, self.dst):
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6", 1)  # no DAD / RS noise on the wire
        ip(self.src, "addr", "add", f"{SRC_HOST}/16", "dev", "s0")
        ip(self.src, "route", "add", "default", "via", SRC_GW)
        ip(self.src, "neigh", "replace", SRC_GW, "lladdr", self.macs["r0"], "dev", "s0", "nud", "permanent")
        ip(self.dst, "addr", "add", f"{DST_HOST}/16", "dev", "d0")
        ip(self.dst, "route", "add", "local", TARGETS, "dev", "lo")
        ip(self.dst, "route", "add", "default", "via", DST_GW)
        ip(self.dst, "neigh", "replace", DST_GW, "lladdr", self.macs["r1"], "dev", "d0", "nud", "permanent")
        # Drop IPv4 at d0's ingress hook (after the rx counter, before IP): ARP still passes.
        _stdin(exec_argv(self.dst, ["nft", "-f", "-"]), DST_DROP)
        sysctl(self.rtr, "net.ipv4.ip_forward", 0)

    def kernel_router(self, rps: bool = False) -> None:
        """Mode `kernel`: rtr owns the gateway addresses and Linux forwards. With `rps`, r0's
        receive work is spread over every CPU (by flow hash) instead of staying on the CPU that
        sent the frame (on a veth that is the generator's)."""
        ip(self.rtr, "addr", "add", f"{SRC_GW}/16", "dev", "r0")
        ip(self.rtr, "addr", "add", f"{DST_GW}/16", "dev", "r1")
        sysctl(self.rtr, "net.ipv4.ip_forward", 1)
        if rps:
            mask = format((1 << os.cpu_count()) - 1, "x")
            run(exec_argv(self.rtr, ["sh", "-c", f"echo {mask} > /sys/class/net/r0/queues/rx-0/rps_cpus"]))

    def delivered(self) -> int:
        """Frames handed to dst so far (d0 rx = r1 tx on a veth)."""
        info = json.loads(ip(self.dst, "-s", "-j", "link", "show", "dev", "d0").stdout)
        return int(info[0]["stats64"]["rx"]["packets"])

    def dst_counters(self) -> dict:
        """Frames dst received by UDP port: `to_target` 8080 (translated by a Service DNAT),
        `to_vip` 80 (reached dst untranslated)."""
        out = json.loads(run(exec_argv(self.dst, ["nft", "-j", "list", "counters"])).stdout)
        return {o["counter"]["name"]: o["counter"]["packets"] for o in out["nftables"] if "counter" in o}

    def router_drops(self) -> dict:
        out = {}
        for dev in ("r0", "r1"):
            st = json.loads(ip(self.rtr, "-s", "-j", "link", "show", "dev", dev).stdout)[0]["stats64"]
            out[dev] = {"rx_dropped": st["rx"]["dropped"], "tx_dropped": st["tx"]["dropped"]}
        return out

    def down(self) -> None:
        for ns in (self.src, self.rtr, self.dst):
            kill_pids(netns_pids(ns), timeout=3)
        for ns in (self.src, self.rtr, self.dst):
            delete_netns(ns)


def _stdin(argv: list[str], text: str, timeout: float = 120) -> None:
    cp = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=timeout)
    if cp.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed (exit {cp.returncode}): {cp.stderr.strip()[-1500:]}")


# ---------------------------------------------------------------------------------------------
# Frames

def mac_bytes(mac: str) -> bytes:
    return bytes(int(b, 16) for b in mac.split(":"))


def udp_frames(dst_mac: str, src_mac: str, src_ip: int, dst_ip: int, sports: np.ndarray,
               dport: int) -> np.ndarray:
    """64-byte Ethernet/IPv4/UDP frames from one source address, one per source port. The IPv4
    checksum is the same for all of them (it does not cover ports); UDP checksum 0 (none)."""
    n = len(sports)
    f = np.zeros((n, FRAME_LEN), dtype=np.uint8)
    f[:, 0:6] = np.frombuffer(mac_bytes(dst_mac), np.uint8)
    f[:, 6:12] = np.frombuffer(mac_bytes(src_mac), np.uint8)
    hdr = bytearray(b"\x45\x00" + (FRAME_LEN - 14).to_bytes(2, "big") + b"\x00\x00\x40\x00\x40\x11\x00\x00"
                    + src_ip.to_bytes(4, "big") + dst_ip.to_bytes(4, "big"))
    acc = sum(int.from_bytes(hdr[i:i + 2], "big") for i in range(0, 20, 2))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    hdr[10:12] = (~acc & 0xFFFF).to_bytes(2, "big")
    f[:, 12:14] = (8, 0)
    f[:, 14:34] = np.frombuffer(bytes(hdr), np.uint8)
    f[:, 34:36] = np.asarray(sports, dtype=">u2").view(np.uint8).reshape(n, 2)
    f[:, 36:38] = np.frombuffer(dport.to_bytes(2, "big"), np.uint8)
    f[:, 38:40] = np.frombuffer((FRAME_LEN - 34).to_bytes(2, "big"), np.uint8)
    return f


def generate(ifname: str, dst_mac: str, mode: str, dst_ip: str, dport: int, seconds: float,
             src_base: int) -> dict:
    """Send as fast as AfPacketPort.tx goes for `seconds`. mode `fwd`: FWD_FLOWS fixed flows,
    one prebuilt burst sent over and over; mode `new`: every frame a flow not seen before
    (source port 1024.. then the next source address), bursts loaded from prebuilt arrays."""
    from dataplane.afpacket import AfPacketPort
    from dataplane.burst import VERDICT, Burst
    fwd = VERDICT["forward"]
    port = AfPacketPort(ifname)
    src_mac = link_mac_local(ifname)
    dst = int(ipaddress.IPv4Address(dst_ip))
    burst = Burst(BURST)
    sent = offered = 0
    if mode == "fwd":
        frames = udp_frames(dst_mac, src_mac, src_base, dst, 10_000 + np.arange(BURST) % FWD_FLOWS, dport)
        burst.load_array(frames)
        burst.send_all(0, fwd)
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for _ in range(64):
                sent += port.tx(burst, 0, 1 << fwd)
            offered += 64 * BURST
    elif mode == "new":
        sports = 1024 + np.arange(NEW_SPORTS)
        arr = udp_frames(dst_mac, src_mac, src_base, dst, sports, dport)
        started = time.perf_counter()
        deadline = started + seconds
        k = 0
        while time.perf_counter() < deadline:
            for start in range(0, NEW_SPORTS, BURST):
                burst.load_array(arr, start)
                burst.send_all(0, fwd)
                sent += port.tx(burst, 0, 1 << fwd)
                offered += len(burst)
                if start % (16 * BURST) == 0 and time.perf_counter() >= deadline:
                    break
            k += 1     # next source address: a fresh set of NEW_SPORTS flows
            arr[:, 26:30] = np.frombuffer((src_base + k).to_bytes(4, "big"), np.uint8)
            _fix_ip_checksum(arr)
    else:
        raise ValueError(mode)
    elapsed = time.perf_counter() - started
    port.close()
    return {"offered": offered, "sent": sent, "seconds": elapsed}


def _fix_ip_checksum(f: np.ndarray) -> None:
    """All rows share one IPv4 header: compute its checksum once, write it to every row."""
    hdr = bytearray(f[0, 14:34].tobytes())
    hdr[10:12] = b"\0\0"
    acc = sum(int.from_bytes(hdr[i:i + 2], "big") for i in range(0, 20, 2))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    f[:, 24:26] = np.frombuffer((~acc & 0xFFFF).to_bytes(2, "big"), np.uint8)


def link_mac_local(ifname: str) -> str:
    return Path(f"/sys/class/net/{ifname}/address").read_text().strip()


@dataclass
class GenResult:
    offered: int
    sent: int
    seconds: float
    delivered: int
    translated: int = 0    # of those, to an endpoint's targetPort (Service DNAT done)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds

    @property
    def offered_rate(self) -> float:
        return self.sent / self.seconds


GEN_CPU, ROUTER_CPU = (0, 1) if len(os.sched_getaffinity(0)) >= 2 and {0, 1} <= os.sched_getaffinity(0) \
    else (None, None)


def traffic(tri: Triangle, mode: str, dst_ip: str, dport: int, seconds: float, src_base: int,
            settle: float = 0.3) -> GenResult:
    """Run the generator in src for `seconds` (it stops by itself; killed after seconds + 20)
    and count what dst received meanwhile (plus `settle` for frames still in rings)."""
    before, before_nat = tri.delivered(), tri.dst_counters()["to_target"]
    argv = exec_argv(tri.src, [sys.executable, str(Path(__file__).resolve()), "gen", "--ifname", "s0",
                               "--dst-mac", tri.macs["r0"], "--mode", mode, "--dst", dst_ip,
                               "--dport", str(dport), "--seconds", str(seconds), "--src", str(src_base),
                               *(["--cpu", str(GEN_CPU)] if GEN_CPU is not None else [])])
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 20,
                        env={**os.environ, "PYTHONPATH": str(REPO)})
    if cp.returncode != 0:
        raise RuntimeError(f"generator failed: {cp.stderr.strip()[-2000:]}")
    time.sleep(settle)
    got = json.loads(cp.stdout.strip().splitlines()[-1])
    return GenResult(got["offered"], got["sent"], got["seconds"], tri.delivered() - before,
                     tri.dst_counters()["to_target"] - before_nat)


# ---------------------------------------------------------------------------------------------
# kube-proxy rules (iptables and nftables modes)

def _hash(*parts: str) -> str:
    """kube-proxy's chain-name hash: base32 of sha256, first 16 characters."""
    return base64.b32encode(hashlib.sha256("".join(parts).encode()).digest()).decode()[:16]


def iptables_rules(n_services: int, n_endpoints: int) -> str:
    """The nat table as kube-proxy's iptables mode writes it for n UDP ClusterIP Services
    (`default/svc-i:dns`, VIP:80 -> endpoints:8080), to be fed to iptables-restore."""
    chains = [":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
              ":KUBE-NODEPORTS - [0:0]"]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]
    svc_rules, sep_rules = [], []
    for i in range(n_services):
        name = f"default/svc-{i}:dns"
        vip = service_vip(i)
        svc = f"KUBE-SVC-{_hash(name, 'udp')}"
        chains.append(f":{svc} - [0:0]")
        rules.append(f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" -m udp -p udp '
                     f"-d {vip}/32 --dport {SVC_PORT} -j {svc}")
        svc_rules.append(f'-A {svc} -m comment --comment "{name} cluster IP" -m udp -p udp -d {vip}/32 '
                         f"--dport {SVC_PORT} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ")
        eps = endpoint_ips(i, n_endpoints)
        for j, ep in enumerate(eps):
            sep = f"KUBE-SEP-{_hash(name, 'udp', ep)}"
            chains.append(f":{sep} - [0:0]")
            left = len(eps) - j
            stat = (f"-m statistic --mode random --probability {1 / left:.10f} " if left > 1 else "")
            svc_rules.append(f'-A {svc} -m comment --comment "{name} -> {ep}:{TARGET_PORT}" {stat}-j {sep}')
            sep_rules.append(f'-A {sep} -m comment --comment {name} -s {ep}/32 -j KUBE-MARK-MASQ')
            sep_rules.append(f"-A {sep} -m comment --comment {name} -m udp -p udp "
                             f"-j DNAT --to-destination {ep}:{TARGET_PORT}")
    rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the '
                 'last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    return "\n".join(["*nat", *chains, *rules, *svc_rules, *sep_rules, "COMMIT", ""])


def nft_rules(n_services: int, n_endpoints: int) -> str:
    """kube-proxy's nftables mode, reduced to the path a ClusterIP packet takes: one verdict-map
    lookup on (daddr, protocol, dport), then the service chain's random endpoint choice."""
    out = ["table ip kube-proxy {",
           "  chain mark-for-masquerade {", "    meta mark set meta mark or 0x4000", "  }",
           "  chain masquerading {", "    meta mark & 0x4000 == 0 return",
           "    meta mark set meta mark ^ 0x4000", "    masquerade fully-random", "  }",
           "  chain nat-prerouting {", "    type nat hook prerouting priority dstnat; policy accept;",
           "    jump services", "  }",
           "  chain nat-postrouting {", "    type nat hook postrouting priority srcnat; policy accept;",
           "    jump masquerading", "  }"]
    elements = []
    for i in range(n_services):
        name = f"default/svc-{i}/udp/dns"
        vip = service_vip(i)
        svc = f"service-{_hash(name)[:8]}-default-svc-{i}-udp-dns"  # kube-proxy: .../svc-i/udp/dns
        eps = endpoint_ips(i, n_endpoints)
        ep_chains = [f"endpoint-{_hash(name, ep)[:8]}-default-svc-{i}-udp-dns__{ep}-{TARGET_PORT}" for ep in eps]
        vmap = ", ".join(f"{j} : goto {c}" for j, c in enumerate(ep_chains))
        out += [f"  chain {svc} {{", f"    ip daddr {vip} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
                f"    numgen random mod {len(eps)} vmap {{ {vmap} }}", "  }"]
        for ep, c in zip(eps, ep_chains):
            out += [f"  chain {c} {{", f"    ip saddr {ep} jump mark-for-masquerade",
                    f"    meta l4proto udp dnat to {ep}:{TARGET_PORT}", "  }"]
        elements.append(f"{vip} . udp . {SVC_PORT} : goto {svc}")
    out += ["  map service-ips {", "    type ipv4_addr . inet_proto . inet_service : verdict",
            f"    elements = {{ {', '.join(elements)} }}", "  }",
            "  chain services {", "    ip daddr . meta l4proto . th dport vmap @service-ips", "  }", "}"]
    return "\n".join(out) + "\n"


def load_rules(tri: Triangle, kind: str, text: str, workdir: Path) -> float:
    """iptables-restore or nft -f in rtr; returns the seconds it took."""
    path = workdir / ("rules.iptables" if kind == "iptables" else "rules.nft")
    path.write_text(text)
    argv = ["iptables-restore", str(path)] if kind == "iptables" else ["nft", "-f", str(path)]
    started = time.perf_counter()
    run(exec_argv(tri.rtr, argv), timeout=120)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Our dataplane

def dataplane_config(tri: Triangle, n_services: int, n_endpoints: int, conntrack_size: int) -> tuple[dict, dict]:
    """(DataplaneConfiguration, v1 List of Services and EndpointSlices) for rtr."""
    dp = {
        "apiVersion": "dataplane/v1alpha1", "kind": "DataplaneConfiguration", "nodeName": "rtr",
        "nodeIPs": [SRC_GW], "clusterCIDRs": [CLUSTER_CIDR], "conntrackSize": conntrack_size,
        "ports": [
            {"name": "r0", "ifname": "r0", "type": "afpacket", "mac": tri.macs["r0"], "addresses": [SRC_GW]},
            {"name": "r1", "ifname": "r1", "type": "afpacket", "mac": tri.macs["r1"], "addresses": [DST_GW]},
        ],
        "routes": [{"prefix": SRC_NET, "port": "r0"}, {"prefix": DST_NET, "port": "r1"}],
    }
    items = []
    for i in range(n_services):
        name = f"svc-{i}"
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                      "spec": {"type": "ClusterIP", "clusterIP": service_vip(i), "clusterIPs": [service_vip(i)],
                               "ipFamilies": ["IPv4"],
                               "ports": [{"name": "dns", "protocol": "UDP", "port": SVC_PORT,
                                          "targetPort": TARGET_PORT}]}})
        items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                      "metadata": {"name": f"{name}-abc", "namespace": "default",
                                   "labels": {"kubernetes.io/service-name": name}},
                      "addressType": "IPv4",
                      "endpoints": [{"addresses": [ep], "conditions": {"ready": True, "serving": True,
                                                                       "terminating": False}}
                                    for ep in endpoint_ips(i, n_endpoints)],
                      "ports": [{"name": "dns", "protocol": "UDP", "port": TARGET_PORT}]})
    return dp, {"apiVersion": "v1", "kind": "List", "items": items}


class Dataplane:
    """`dataplane run --config DIR --json --stats-file F` inside rtr, stopped with SIGTERM."""

    command = [sys.executable, "-m", "dataplane.cli"]

    def __init__(self, tri: Triangle, workdir: Path):
        self.tri, self.workdir = tri, workdir
        self.stats_file = workdir / "stats.json"
        self.proc: subprocess.Popen | None = None
        self.exit_counters: dict | None = None

    def write_config(self, n_services: int, n_endpoints: int, conntrack_size: int) -> None:
        cfg = self.workdir / "config"
        cfg.mkdir(exist_ok=True)
        dp, objects = dataplane_config(self.tri, n_services, n_endpoints, conntrack_size)
        (cfg / "00-dataplane.json").write_text(json.dumps(dp))
        (cfg / "10-services.json").write_text(json.dumps(objects))

    def start(self, timeout: float = 90) -> float:
        """Start it and wait until it forwards (it wrote its first stats file); returns the seconds."""
        argv = exec_argv(self.tri.rtr, [*self.command, "run", "--config",
                                        str(self.workdir / "config"), "--json", "--stats-file", str(self.stats_file)])
        self.out = open(self.workdir / "run.out", "w+")
        self.err = open(self.workdir / "run.err", "w+")
        started = time.perf_counter()
        pin = (lambda: os.sched_setaffinity(0, {ROUTER_CPU})) if ROUTER_CPU is not None else None
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL,
                                     cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                                     preexec_fn=pin)
        while not self.stats_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"dataplane run exited with {self.proc.returncode}: {self._tail()}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"dataplane run not ready after {timeout:.0f} s: {self._tail()}")
            time.sleep(0.05)
        return time.perf_counter() - started

    def _tail(self) -> str:
        self.err.flush()
        return (self.workdir / "run.err").read_text()[-1500:].strip()

    def stop(self) -> dict | None:
        """SIGTERM; the exit counters it printed with --json (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.flush()
        text = (self.workdir / "run.out").read_text().strip()
        self.out.close()
        self.err.close()
        self.proc = None
        try:
            self.exit_counters = json.loads(text.splitlines()[-1]) if text else None
        except json.JSONDecodeError:
            self.exit_counters = None
        return self.exit_counters


def dataplane_run_available() -> str | None:
    """None when `dataplane run` can start in this tree, else why not."""
    cp = subprocess.run([sys.executable, "-c", "import dataplane.worker, dataplane.cli"], capture_output=True,
                        text=True, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    if cp.returncode != 0:
        return cp.stderr.strip().splitlines()[-1] if cp.stderr.strip() else f"exit {cp.returncode}"
    return None


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="traffic generator (run inside the src namespace)")
    g.add_argument("--ifname", required=True)
    g.add_argument("--dst-mac", required=True)
    g.add_argument("--mode", choices=("fwd", "new"), required=True)
    g.add_argument("--dst", required=True)
    g.add_argument("--dport", type=int, default=9)
    g.add_argument("--seconds", type=float, default=3.0)
    g.add_argument("--src", type=int, default=int(ipaddress.IPv4Address(SRC_HOST)))
    g.add_argument("--cpu", type=int, help="pin the generator to this CPU")
    args = ap.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if not 0 < args.seconds <= 30:
        ap.error("--seconds must be in (0, 30]")
    print(json.dumps(generate(args.ifname, args.dst_mac, args.mode, args.dst, args.dport, args.seconds, args.src)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
