"""Service NAT end to end in memory: parse -> conntrack -> DNAT -> route -> rewrite.

10,000 ClusterIP Services x 10 endpoints; 1,000,000 TCP connections are opened (SYN, SYN/ACK,
ACK) and then data segments of all of them, in random order, are measured as 64-byte frames.
New connections per second are measured on the SYNs. The in-run baseline is the same pipeline in
pure Python (bench/pyref.py: PyServiceNode) on a subset of the flows.

Run: .venv/bin/python -m pytest bench/test_bench_services.py --benchmark-enable -s
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from dataplane.burst import COUNTERS, Burst
from dataplane.tables import NodeDataplane

import clusters
import pyref

N_SERVICES, N_ENDPOINTS = 10_000, 10
N_FLOWS = int(os.environ.get("BENCH_FLOWS", 1_000_000))
N_BASELINE = 20_000
BURST = 256
SYN, ACK, SYNACK, PSHACK = 0x02, 0x10, 0x12, 0x18


def tcp_frames(src, dst, sport, dport, flags) -> np.ndarray:
    """N 64-byte Ethernet/IPv4/TCP frames with valid IPv4 header checksums (TCP checksum 0:
    nothing on this path verifies it, and NAT updates it incrementally either way)."""
    n = len(src)
    f = np.zeros((n, 64), dtype=np.uint8)
    f[:, 0:6] = (2, 0, 0, 0, 0, 1)
    f[:, 6:12] = (2, 0, 0, 0, 0, 2)
    f[:, 12:14] = (8, 0)
    f[:, 14:24] = (0x45, 0, 0, 50, 0, 0, 0x40, 0, 64, 6)
    f[:, 26:30] = np.asarray(src, dtype=">u4").view(np.uint8).reshape(n, 4)
    f[:, 30:34] = np.asarray(dst, dtype=">u4").view(np.uint8).reshape(n, 4)
    f[:, 34:36] = np.asarray(sport, dtype=">u2").view(np.uint8).reshape(n, 2)
    f[:, 36:38] = np.asarray(dport, dtype=">u2").view(np.uint8).reshape(n, 2)
    f[:, 46] = 0x50
    f[:, 47] = flags
    f[:, 48:50] = (0xFF, 0xFF)
    _ip_checksums(f)
    return f


def _ip_checksums(f: np.ndarray) -> None:
    f[:, 24:26] = 0
    acc = np.ascontiguousarray(f[:, 14:34]).view(">u2").astype(np.uint32).sum(axis=1)
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = (acc & 0xFFFF) + (acc >> 16)
    f[:, 24:26] = (~acc & 0xFFFF).astype(">u2").view(np.uint8).reshape(-1, 2)


def answers(translated: np.ndarray, flags: int) -> np.ndarray:
    """The backends' answers to translated frames: addresses and ports swapped, fresh TTL."""
    f = translated.copy()
    f[:, 26:30], f[:, 30:34] = translated[:, 30:34], translated[:, 26:30]
    f[:, 34:36], f[:, 36:38] = translated[:, 36:38], translated[:, 34:36]
    f[:, 22] = 64
    f[:, 47] = flags
    _ip_checksums(f)
    return f


def again(frames: np.ndarray, flags: int) -> np.ndarray:
    f = frames.copy()
    f[:, 47] = flags
    return f


def clients(n: int, seed: int = 3):
    """n connections from pods (inside the cluster CIDR: no masquerade) to random Services."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    src = clusters.POD_BASE + 0x8000 + (i % 4096)           # 10.244.128.0 - 10.244.143.255
    sport = 1024 + i // 4096
    svc = rng.integers(0, N_SERVICES, n)
    dst = clusters.SERVICE_BASE + 1 + svc
    return src, dst, sport, np.full(n, 80)


def run(node: NodeDataplane, frames: np.ndarray, out: np.ndarray | None = None, port_in=0):
    """All frames through the pipeline in bursts; optionally keep what it made of them."""
    burst = Burst(BURST)
    pipeline = node.pipeline
    for start in range(0, len(frames), BURST):
        burst.load_array(frames, start, port_in)
        pipeline.process(burst, now_ns=1)
        if out is not None:
            burst.store_array(out, start)


def counters(node) -> dict:
    return dict(zip(COUNTERS, map(int, node.pipeline.counters)))


@pytest.fixture(scope="module")
def config():
    return clusters.node_config(N_SERVICES, N_ENDPOINTS)


@pytest.fixture(scope="module")
def syns():
    return tcp_frames(*clients(N_FLOWS), SYN)


@pytest.fixture(scope="module")
def baseline(config, syns):
    """Pure-Python pipeline on N_BASELINE flows: (new connections/s, established pps)."""
    node = pyref.PyServiceNode(config)
    frames = [bytearray(f.tobytes()) for f in syns[:N_BASELINE]]
    started = time.perf_counter()
    for f in frames:
        node.process(f)
    new_rate = N_BASELINE / (time.perf_counter() - started)
    replies = answers(np.frombuffer(b"".join(frames), np.uint8).reshape(-1, 64), SYNACK)
    for f in replies:
        node.process(bytearray(f.tobytes()))
    data = [bytearray(f.tobytes()) for f in again(syns[:N_BASELINE], PSHACK)]
    started = time.perf_counter()
    for f in data:
        node.process(f)
    return new_rate, N_BASELINE / (time.perf_counter() - started)


def report(benchmark, what, rate, base_rate, unit):
    benchmark.extra_info.update(rate=round(rate), baseline=round(base_rate),
                                ratio=round(rate / base_rate, 1))
    print(f"\n{what}: {rate / 1e6:.2f} M{unit}/s, pure Python {base_rate / 1e3:.1f} k{unit}/s, "
          f"ratio {rate / base_rate:.0f}x")


def test_new_connections(benchmark, config, syns, baseline):
    """SYNs to Services: conntrack miss, Service lookup, backend choice, entry creation, DNAT."""
    nodes = []

    def fresh():
        nodes.append(NodeDataplane(config))
        return (nodes[-1], syns), {}

    benchmark.pedantic(run, setup=fresh, rounds=2, iterations=1)
    c = counters(nodes[-1])
    assert c["ct_new"] == c["dnat"] == N_FLOWS and c["routed"] == N_FLOWS
    report(benchmark, f"new connections ({N_FLOWS:,} SYNs)", N_FLOWS / benchmark.stats.stats.min,
           baseline[0], "conn")


def test_established_flows(benchmark, config, syns, baseline):
    """Data segments of 1,000,000 established connections, in random order."""
    node = NodeDataplane(config)
    translated = np.empty_like(syns)
    run(node, syns, translated)
    run(node, answers(translated, SYNACK))
    run(node, again(syns, ACK))
    order = np.random.default_rng(5).permutation(N_FLOWS)
    data = np.ascontiguousarray(again(syns, PSHACK)[order])
    before = counters(node)
    benchmark.pedantic(run, args=(node, data), rounds=3, iterations=1)
    after = counters(node)
    assert after["ct_established"] - before["ct_established"] == 3 * N_FLOWS
    assert after["ct_new"] == N_FLOWS and len(node.conntrack) == N_FLOWS
    report(benchmark, f"established flows ({N_FLOWS:,} open)", N_FLOWS / benchmark.stats.stats.min,
           baseline[1], "pkt")
