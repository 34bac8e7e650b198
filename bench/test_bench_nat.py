"""NAT rewrite throughput: DNAT (destination address + port) of a burst of 256 64-byte TCP/IPv4
frames, against the same rewrite in pure Python with full checksum recomputation (struct).

Run: .venv/bin/pytest bench/test_bench_nat.py --benchmark-enable
Each call alternates the burst between two backends so every rewrite changes both fields. Figures
land in the benchmark table and in extra_info / the printed line as packets per second and the
ratio to the baseline. Nothing here asserts on timings.
"""
import ipaddress
import struct
import time

from scapy.all import IP, TCP, Ether, Raw

from dataplane import nat
from dataplane.burst import Burst
from dataplane.parse import parse

BURST = 256
REPS = 50                   # burst rewrites per backend per benchmark call
BACKENDS = (("10.244.1.5", 8080), ("10.244.2.7", 8443))
N = REPS * len(BACKENDS) * BURST


def make_frames():
    frames = [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                    IP(src=f"10.0.{i // 250}.{i % 250 + 1}", dst="10.96.0.10") /
                    TCP(sport=1024 + i, dport=80, flags="A") / Raw(b"0123456789"))
              for i in range(BURST)]
    assert {len(f) for f in frames} == {64}
    return frames


def _csum(data):
    if len(data) & 1:
        data += b"\0"
    acc = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return ~acc & 0xFFFF


def py_dnat(f, daddr, dport):
    """DNAT one Ethernet/IPv4/TCP frame in place, both checksums recomputed from scratch."""
    if f[12:14] != b"\x08\x00" or f[23] != 6:
        return False
    ihl = (f[14] & 0xF) * 4
    tot = struct.unpack_from("!H", f, 16)[0]
    l4 = 14 + ihl
    f[30:34] = daddr
    struct.pack_into("!H", f, l4 + 2, dport)
    struct.pack_into("!H", f, 24, 0)
    struct.pack_into("!H", f, 24, _csum(bytes(f[14:l4])))
    struct.pack_into("!H", f, l4 + 16, 0)
    seg = bytes(f[l4:14 + tot])
    struct.pack_into("!H", f, l4 + 16, _csum(bytes(f[26:34]) + struct.pack("!HH", 6, len(seg)) + seg))
    return True


def dnat_ours(burst):
    done = 0
    for _ in range(REPS):
        for dst, port in BACKENDS:
            done += nat.rewrite_all(burst, dst=dst, dport=port)
    return done


def dnat_python(frames, reps):
    backends = [(ipaddress.ip_address(d).packed, p) for d, p in BACKENDS]
    done = 0
    for _ in range(reps):
        for daddr, port in backends:
            for f in frames:
                done += py_dnat(f, daddr, port)
    return done


def test_dnat_rewrite(benchmark):
    frames = make_frames()
    burst = Burst(BURST)
    burst.extend(frames)
    parse(burst)
    assert benchmark.pedantic(dnat_ours, (burst,), rounds=20, iterations=1, warmup_rounds=1) == N
    # The baseline must produce the same bytes (it ends on the same backend).
    ref = [bytearray(f) for f in frames]
    assert dnat_python(ref, 1) == len(BACKENDS) * BURST
    assert burst.frames() == [bytes(f) for f in ref]
    if benchmark.disabled:
        return
    best = min(_timed(dnat_python, ref, 1) for _ in range(5))
    base = len(BACKENDS) * BURST / best
    pps = N / benchmark.stats.stats.median
    benchmark.extra_info.update(pps=round(pps), baseline_pps=round(base), ratio=round(pps / base, 1))
    print(f"\nDNAT 64B TCP/IPv4: {pps / 1e6:.2f} Mpps median "
          f"({N / benchmark.stats.stats.min / 1e6:.2f} best), {pps / base:.0f}x pure Python "
          f"full recomputation ({base / 1e6:.3f} Mpps)")


def _timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t
