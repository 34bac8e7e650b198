"""Parser throughput on in-memory bursts, against a pure-Python struct.unpack_from parser of the
same frames as the in-run baseline. Run: .venv/bin/pytest bench/test_bench_parse.py --benchmark-enable
"""
import struct
import time

import pytest
from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw

from dataplane.burst import Burst
from dataplane.parse import parse

N = 256
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def udp4_frames():
    return [bytes(ETH / IP(src=f"10.0.{i >> 8}.{i & 255}", dst="10.96.0.10")
                  / UDP(sport=1024 + i, dport=53) / Raw(b"\x00" * 22)) for i in range(N)]


def mixed_frames():
    out = []
    for i in range(N):
        k = i % 4
        if k == 0:
            p = ETH / IP(src="10.0.0.1", dst="10.96.0.10") / UDP(sport=1024 + i, dport=53)
        elif k == 1:
            p = ETH / IP(src="10.0.0.1", dst="10.96.0.11") / TCP(sport=1024 + i, dport=443)
        elif k == 2:
            p = ETH / IPv6(src="fd00::1", dst="fd00:96::10") / UDP(sport=1024 + i, dport=53)
        else:
            p = ETH / IPv6(src="fd00::1", dst="fd00:96::11") / TCP(sport=1024 + i, dport=80)
        out.append(bytes(p / Raw(b"\x00" * 10)))
    return out


def py_parse(frames):
    """Baseline: the same validation and tuple extraction, per packet in Python."""
    out = []
    unpack = struct.unpack_from
    for f in frames:
        (et,) = unpack("!H", f, 12)
        if et == 0x0800:
            vihl, tot, proto, src, dst = unpack("!BxH5xB2x4s4s", f, 14)
            hl = (vihl & 15) * 4
            if vihl >> 4 != 4 or hl < 20 or not hl <= tot <= len(f) - 14:
                out.append(None)
                continue
            l4, end = 14 + hl, 14 + tot
        elif et == 0x86DD:
            vtc, plen, proto, src, dst = unpack("!B3xHBx16s16s", f, 14)
            if vtc >> 4 != 6 or 40 + plen > len(f) - 14:
                out.append(None)
                continue
            l4, end = 54, 54 + plen
        else:
            out.append(None)
            continue
        if proto == 6:
            sport, dport, off = unpack("!HH8xB", f, l4)
            ok = end - l4 >= 20 and 20 <= (off >> 4) * 4 <= end - l4
        else:
            sport, dport, ulen = unpack("!HHH", f, l4)
            ok = 8 <= ulen <= end - l4
        out.append((src, dst, sport, dport, proto, hash((src, dst, sport, dport, proto))) if ok else None)
    return out


def py_rate(frames, rounds=20):
    t0 = time.perf_counter()
    for _ in range(rounds):
        py_parse(frames)
    return rounds * len(frames) / (time.perf_counter() - t0)


@pytest.mark.parametrize("kind", ["udp4_64B", "mixed_v4_v6_tcp_udp"])
def test_bench_parse_burst(benchmark, kind):
    frames = udp4_frames() if kind == "udp4_64B" else mixed_frames()
    if kind == "udp4_64B":
        assert {len(f) for f in frames} == {64}
    b = Burst()
    b.extend(frames)
    verdicts = b.verdicts
    counters = parse(b)

    def run():
        verdicts[:] = 0           # every round parses all 256 packets again
        parse(b, counters)

    benchmark(run)
    assert (b.verdicts == 0).all() and all(x is not None for x in py_parse(frames))
    pps = N / benchmark.stats.stats.min
    base = py_rate(frames)
    benchmark.extra_info.update(packets_per_s=round(pps), python_baseline_pps=round(base),
                                speedup=round(pps / base, 1))
    print(f"\nparse {kind}: {pps / 1e6:.1f} Mpps per core (best round of {N}), "
          f"pure-Python struct baseline {base / 1e6:.3f} Mpps, ratio {pps / base:.0f}x")
