"""pcap read / write throughput against pure-Python readers of the same file.

Run: .venv/bin/pytest bench/test_bench_pcap.py --benchmark-enable
Figures land in the benchmark table (seconds per 1M packets) and in extra_info / the printed
lines as packets per second and ratios to the baselines. Nothing here asserts on timings.
"""
import struct
import time

import numpy as np
import pytest

from dataplane.burst import Burst
from dataplane.pcap import PcapReader, PcapWriter

N = 1_000_000
N_BASELINE = 100_000        # the pure-Python readers get a subset; their rate is scaled up
FRAME = 64
BURST = 256
RECORD = np.dtype([("sec", "<u4"), ("frac", "<u4"), ("caplen", "<u4"), ("len", "<u4"),
                   ("data", "u1", FRAME)])


def make_pcap(path, n):
    """n 64-byte Ethernet/IPv4/UDP frames with distinct ports and timestamps, built in numpy."""
    rec = np.zeros(n, RECORD)
    i = np.arange(n, dtype=np.uint64)
    rec["sec"] = 1_700_000_000 + i // 1_000_000
    rec["frac"] = i % 1_000_000
    rec["caplen"] = rec["len"] = FRAME
    template = bytes.fromhex(
        "020000000002" "020000000001" "0800"                 # Ethernet
        "45000032000040004011" "0000" "0a000001" "0a000002"  # IPv4, 50 bytes total
        "1f4000350016" "0000") + bytes(FRAME - 42)           # UDP 8000 -> 53
    rec["data"][:] = np.frombuffer(template, np.uint8)
    ports = (1024 + i % 60000).astype(">u2").view(np.uint8).reshape(n, 2)
    rec["data"][:, 34:36] = ports                            # vary the UDP source port
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    with open(path, "wb") as f:
        f.write(header)
        f.write(rec.tobytes())
    return path


@pytest.fixture(scope="module")
def pcap_1m(tmp_path_factory):
    return make_pcap(tmp_path_factory.mktemp("bench") / "1m.pcap", N)


@pytest.fixture(scope="module")
def pcap_100k(tmp_path_factory):
    return make_pcap(tmp_path_factory.mktemp("bench") / "100k.pcap", N_BASELINE)


def read_ours(path):
    burst = Burst(BURST)
    total = 0
    with PcapReader(path) as r:
        while n := r.fill(burst):
            total += n
    return total


def read_struct(path):
    """dpkt-style pure Python: unpack each record header and slice out the frame."""
    hdr = struct.Struct("<IIII")
    frames = 0
    with open(path, "rb") as f:
        data = f.read()
    pos = 24
    while pos < len(data):
        sec, frac, caplen, length = hdr.unpack_from(data, pos)
        pos += 16
        # What any reader must hand on per record: the frame and its timestamp.
        frame = data[pos:pos + caplen]  # noqa: F841
        ts_ns = sec * 1_000_000_000 + frac * 1000  # noqa: F841
        pos += caplen
        frames += 1
    return frames


def read_scapy(path):
    from scapy.utils import RawPcapReader
    with RawPcapReader(str(path)) as r:
        return sum(1 for _ in r)


def write_struct(path, frames):
    hdr = struct.Struct("<IIII")
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, frame in enumerate(frames):
            f.write(hdr.pack(1_700_000_000, i, len(frame), len(frame)))
            f.write(frame)


def write_scapy(path, frames):
    from scapy.utils import RawPcapWriter
    with RawPcapWriter(str(path), linktype=1) as w:
        for i, frame in enumerate(frames):
            w.write_packet(frame, sec=1_700_000_000, usec=i)


def best_rate(fn, *args, n, repeat=3):
    """Packets per second of fn(*args) over `n` packets, best of `repeat` runs."""
    best = min(_timed(fn, *args) for _ in range(repeat))
    return n / best


def _timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def report(benchmark, name, n, baselines):
    if benchmark.disabled:
        return
    pps = n / benchmark.stats.stats.median
    benchmark.extra_info["pps"] = round(pps)
    line = f"{name}: {pps / 1e6:.2f} Mpps median, {n / benchmark.stats.stats.min / 1e6:.2f} best"
    for base, rate in baselines.items():
        benchmark.extra_info[f"x_{base}"] = round(pps / rate, 1)
        line += f", {pps / rate:.1f}x {base} ({rate / 1e6:.3f} Mpps)"
    print("\n" + line)


def test_read(benchmark, pcap_1m, pcap_100k):
    assert benchmark.pedantic(read_ours, (pcap_1m,), rounds=5, iterations=1) == N
    if not benchmark.disabled:
        baselines = {"struct": best_rate(read_struct, pcap_100k, n=N_BASELINE),
                     "scapy RawPcapReader": best_rate(read_scapy, pcap_100k, n=N_BASELINE, repeat=1)}
        report(benchmark, "read 64B", N, baselines)


def test_write(benchmark, pcap_1m, pcap_100k, tmp_path):
    burst = Burst(BURST)
    with PcapReader(pcap_1m) as r:
        assert r.fill(burst) == BURST
    out = tmp_path / "out.pcap"

    def write_ours():
        with PcapWriter(out) as w:
            for _ in range(N // BURST):
                w.write(burst)
            return w.packets_written

    assert benchmark.pedantic(write_ours, rounds=5, iterations=1) == N // BURST * BURST
    assert out.stat().st_size == 24 + (N // BURST * BURST) * (16 + FRAME)
    if not benchmark.disabled:
        frames = burst.frames() * (N_BASELINE // BURST)
        baselines = {"struct": best_rate(write_struct, tmp_path / "s.pcap", frames, n=len(frames)),
                     "scapy RawPcapWriter": best_rate(write_scapy, tmp_path / "y.pcap", frames,
                                                      n=len(frames), repeat=1)}
        report(benchmark, "write 64B", N // BURST * BURST, baselines)


def test_read_write(benchmark, pcap_1m, tmp_path):
    """Replay's file I/O alone: every burst read is written straight back out."""
    out = tmp_path / "copy.pcap"

    def copy():
        burst = Burst(BURST)
        with PcapReader(pcap_1m) as r, PcapWriter(out) as w:
            while r.fill(burst):
                w.write(burst)
            return w.packets_written

    assert benchmark.pedantic(copy, rounds=3, iterations=1) == N
    assert out.read_bytes() == pcap_1m.read_bytes()
    report(benchmark, "read+write 64B", N, {})
