"""Parse + route over in-memory bursts, and `dataplane replay` end to end on a 1M-packet pcap.

Each benchmark has its pure-Python twin (bench/pyref.py) measured in the same run; the summary
lines give packets/s and the ratio. Run: .venv/bin/pytest bench/test_bench_pipeline.py
--benchmark-enable -s
"""
from __future__ import annotations

import random
import struct
import time

import numpy as np
import pytest

from dataplane.burst import COUNTERS, Burst
from dataplane.config import loads
from dataplane.replay import replay
from dataplane.tables import build_pipeline

import pyref

N_NODES = 5000          # host-gw: one /24 pod route per node, as flannel installs
BURST = 256
REPLAY_PACKETS = 1_000_000
BASELINE_PACKETS = 50_000


def _config():
    routes = "\n".join(
        f'  - {{prefix: 10.{64 + n // 256}.{n % 256}.0/24, port: eth0, via: 192.168.{n // 250}.'
        f'{n % 250 + 3}, mac: "02:00:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"}}'
        for n in range(N_NODES))
    return loads(f"""
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-a
nodeIPs: [192.168.0.2]
ports:
  - {{name: eth0, mac: "02:00:00:00:00:01"}}
routes:
  - {{prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1, mac: "02:00:00:00:00:fe"}}
{routes}
""")


def _udp4_frame(dst: int, sport: int) -> bytes:
    """A 64-byte Ethernet/IPv4/UDP frame (no FCS) with a valid header checksum."""
    payload = bytes(22)
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + 8 + len(payload), 0, 0, 64, 17, 0,
                               0x0AF40005, dst))
    acc = sum(struct.unpack("!10H", ip))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    struct.pack_into("!H", ip, 10, ~acc & 0xFFFF)
    udp = struct.pack("!HHHH", sport, 53, 8 + len(payload), 0)
    return bytes.fromhex("020000000001" "0a580af40005" "0800") + bytes(ip) + udp + payload


def _frames(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        node = rng.randrange(N_NODES)
        if i % 8 == 0:   # some traffic leaves through the default route
            dst = rng.getrandbits(32) & 0x7FFFFFFF | 0x01000000
        else:
            dst = (10 << 24) | ((64 + node // 256) << 16) | ((node % 256) << 8) | rng.randrange(1, 255)
        out.append(_udp4_frame(dst, 1024 + i % 60000))
    return out


@pytest.fixture(scope="module")
def config():
    return _config()


@pytest.fixture(scope="module")
def dp(config):
    return config.dataplane


def _report(benchmark, name, pps, baseline_pps):
    benchmark.extra_info.update(pps=round(pps), baseline_pps=round(baseline_pps),
                                ratio=round(pps / baseline_pps, 1))
    print(f"\n{name}: {pps / 1e6:.2f} Mpps, pure Python {baseline_pps / 1e3:.1f} kpps, "
          f"ratio {pps / baseline_pps:.0f}x")


def test_parse_route_burst(benchmark, dp):
    """Burst of 256 64-byte frames through parse -> route, reloaded each round."""
    pipeline = build_pipeline(dp)
    template = Burst(BURST)
    frames = _frames(BURST)
    template.extend(frames)
    burst = Burst(BURST)

    def run():
        burst.copy_from(template)
        pipeline.process(burst)

    benchmark.pedantic(run, rounds=2000, iterations=1, warmup_rounds=50)
    assert pipeline.counters.sum() > 0 and (burst.verdicts == 1).sum() == BURST
    pps = BURST / benchmark.stats.stats.min

    router = pyref.PyRouter(dp)
    started = time.perf_counter()
    for f in frames * 8:
        pyref.process(router, bytearray(f))
    baseline = BURST * 8 / (time.perf_counter() - started)
    _report(benchmark, "parse+route burst", pps, baseline)


@pytest.fixture(scope="module")
def big_pcap(tmp_path_factory):
    """1,000,000 64-byte frames, written with numpy (one record layout tiled)."""
    path = tmp_path_factory.mktemp("replay") / "in.pcap"
    frames = _frames(4096, seed=2)
    rec = np.zeros((REPLAY_PACKETS, 16 + 64), dtype=np.uint8)
    idx = np.arange(REPLAY_PACKETS)
    hdr = np.zeros((REPLAY_PACKETS, 4), dtype="<u4")
    hdr[:, 0] = 1_700_000_000 + idx // 1_000_000
    hdr[:, 1] = idx % 1_000_000
    hdr[:, 2] = hdr[:, 3] = 64
    rec[:, :16] = hdr.view(np.uint8).reshape(REPLAY_PACKETS, 16)
    rec[:, 16:] = np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(-1, 64)[idx % 4096]
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        f.write(rec.tobytes())
    return path


def test_replay_end_to_end(benchmark, config, dp, big_pcap, tmp_path):
    """`dataplane replay` on 1M packets including pcap read and write (the full node pipeline:
    conntrack and Service stages included, with no Services configured)."""
    out = tmp_path / "out.pcap"
    result = benchmark.pedantic(replay, args=(config, big_pcap, out), rounds=3, iterations=1)
    assert result.packets == REPLAY_PACKETS and result.error is None
    pps = REPLAY_PACKETS / benchmark.stats.stats.min

    subset = tmp_path / "subset.pcap"
    subset.write_bytes(big_pcap.read_bytes()[:24 + 80 * BASELINE_PACKETS])
    router = pyref.PyRouter(dp)
    started = time.perf_counter()
    n = pyref.replay(router, subset, tmp_path / "py-out.pcap")
    baseline = n / (time.perf_counter() - started)
    _report(benchmark, "replay 1M packets", pps, baseline)



def _vxlan_config(node_ip: str, routes: str):
    return loads(f"""
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-a
nodeIPs: [{node_ip}]
ports:
  - {{name: eth0, mac: "02:00:00:00:00:01"}}
routes:
  - {{prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1, mac: "02:00:00:00:00:fe"}}
  - {{prefix: 192.168.0.0/16, port: eth0, mac: "02:00:00:00:00:fd"}}
{routes}
""").dataplane


def _best_pps(pipeline, template, rounds=2000) -> float:
    burst = Burst(BURST)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        burst.copy_from(template)
        pipeline.process(burst)
        best = min(best, time.perf_counter() - started)
    return BURST / best


def _bench_burst(benchmark, pipeline, template) -> Burst:
    burst = Burst(BURST)

    def run():
        burst.copy_from(template)
        pipeline.process(burst)

    benchmark.pedantic(run, rounds=2000, iterations=1, warmup_rounds=50)
    return burst


def _encapsulated(frames) -> Burst:
    """The burst's frames as one node sends them to 192.168.0.3 over VXLAN."""
    node_a = build_pipeline(_vxlan_config(
        "192.168.0.2", "  - {prefix: 10.64.0.0/10, vxlan: {vni: 1, remote: 192.168.0.3}}"))
    burst = Burst(BURST)
    burst.extend(frames)
    node_a.process(burst)
    wrapped = Burst(BURST)
    wrapped.extend([burst.frame(i) for i in range(len(burst)) if burst.verdicts[i] == 1])
    return wrapped


def test_vxlan_encap_burst(benchmark, dp):
    """test_parse_route_burst's traffic with every node's pod CIDR behind a VXLAN tunnel instead
    of a host-gw route; baseline: the host-gw pipeline on the same burst, same run."""
    tunnels = "\n".join(
        f'  - {{prefix: 10.{64 + n // 256}.{n % 256}.0/24, vxlan: {{vni: 1, remote: 192.168.{n // 250}.'
        f'{n % 250 + 3}}}}}' for n in range(N_NODES))
    pipeline = build_pipeline(_vxlan_config("192.168.0.2", tunnels))
    template = Burst(BURST)
    template.extend(_frames(BURST))
    burst = _bench_burst(benchmark, pipeline, template)
    assert (burst.verdicts == 1).sum() == BURST
    assert pipeline.counters[COUNTERS.index("vxlan_encap")] > 0
    pps = BURST / benchmark.stats.stats.min
    hostgw = _best_pps(build_pipeline(dp), template)
    benchmark.extra_info.update(pps=round(pps), hostgw_pps=round(hostgw))
    print(f"\nvxlan encap burst: {pps / 1e6:.2f} Mpps, host-gw {hostgw / 1e6:.2f} Mpps "
          f"({pps / hostgw:.2f}x)")


def test_vxlan_decap_burst(benchmark):
    """Tunnelled frames to this node, unwrapped and routed to a pod port; baseline: the same
    inner frames routed without a tunnel, same run."""
    routes = ("  - {prefix: 10.64.0.0/10, port: eth0, mac: \"02:00:00:00:00:fc\"}\n"
              "  - {prefix: 10.0.0.0/8, vxlan: {vni: 1, remote: 192.168.0.2}}")
    pipeline = build_pipeline(_vxlan_config("192.168.0.3", routes))
    frames = [f for f in _frames(BURST * 2) if f[30] == 10][:BURST]   # to pods, not the default route
    template = _encapsulated(frames)
    burst = _bench_burst(benchmark, pipeline, template)
    assert len(template) == BURST and (burst.verdicts == 1).sum() == BURST
    assert pipeline.counters[COUNTERS.index("vxlan_decap")] > 0
    pps = BURST / benchmark.stats.stats.min
    plain = Burst(BURST)
    plain.extend(frames)
    hostgw = _best_pps(pipeline, plain)
    benchmark.extra_info.update(pps=round(pps), hostgw_pps=round(hostgw))
    print(f"\nvxlan decap burst: {pps / 1e6:.2f} Mpps, same frames untunnelled {hostgw / 1e6:.2f} Mpps "
          f"({pps / hostgw:.2f}x)")
