"""AF_PACKET port rx / tx rates for 64-byte frames over a veth pair between two namespaces,
against plain Python AF_PACKET socket loops measured in the same run.

Run (root): .venv/bin/python -m pytest bench/test_bench_afpacket.py -s
Each figure is frames per second over a fixed wall-clock window; nothing asserts on timings.
RX: the peer floods with AfPacketPort.tx from a thread (same offered load for both receivers);
    ours drains the ring a burst at a time, the baseline calls recv_into() per frame.
TX: ours sends 256-frame bursts (one sendmmsg each), the baseline send()s one frame per call.
"""
import select
import socket
import threading
import time

import pytest

from dataplane.afpacket import AfPacketPort
from dataplane.burst import VERDICT, Burst
from tests.io.conftest import netns, veth_lab  # noqa: F401  (fixture)

SECONDS = 2.0
FRAME = 64
BURST = 256
FORWARD = 1 << VERDICT["forward"]


def frames(src: bytes, dst: bytes, n: int):
    """Ethernet/IPv4/UDP, 64 bytes, distinct source ports."""
    out = []
    for i in range(n):
        head = (dst + src + b"\x08\x00"
                + bytes.fromhex("4500003200004000401100000ac900010ac90002")
                + (1024 + i).to_bytes(2, "big") + bytes.fromhex("0035001e0000"))
        out.append(head + bytes(FRAME - len(head)))
    return out


def full_burst(src: bytes, dst: bytes) -> Burst:
    b = Burst(BURST)
    b.extend(frames(src, dst, BURST))
    b.send_all(0)
    return b


class Flood:
    """Peer-side sender thread: AfPacketPort.tx in a loop (the GIL is released inside)."""

    def __init__(self, lab):
        with netns(lab.peer):
            self.port = AfPacketPort(lab.peer_if, promisc=False)
        self.burst = full_burst(lab.peer_mac, lab.dut_mac)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.is_set():
            self.port.tx(self.burst, 0, FORWARD)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.port.close()


def report(what, ours, base):
    print(f"\n{what}: AfPacketPort {ours / 1e6:.3f} Mpps, Python socket loop {base / 1e6:.3f} Mpps,"
          f" ratio {ours / base:.1f}x")


def rx_ours(lab) -> float:
    with netns(lab.dut):
        port = AfPacketPort(lab.dut_if)
    burst = Burst(BURST)
    poller = select.poll()
    poller.register(port.fileno(), select.POLLIN)
    with port, Flood(lab):
        time.sleep(0.2)
        while port.rx(burst, 0):        # start from an empty ring
            pass
        total, t0 = 0, time.perf_counter()
        while (t := time.perf_counter()) - t0 < SECONDS:
            n = port.rx(burst, 0)
            if n:
                total += n
            else:
                poller.poll(1)
        drops = port.stats()["rx_dropped"]
    print(f"\n  ours: {total} frames in {t - t0:.2f}s, ring drops {drops}")
    return total / (t - t0)


def rx_baseline(lab) -> float:
    with netns(lab.dut):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((lab.dut_if, 0))
    s.settimeout(0.01)
    buf = bytearray(2048)
    with s, Flood(lab):
        time.sleep(0.2)
        total, t0 = 0, time.perf_counter()
        while (t := time.perf_counter()) - t0 < SECONDS:
            try:
                s.recv_into(buf)
                total += 1
            except TimeoutError:
                pass
    return total / (t - t0)


def tx_ours(lab) -> float:
    with netns(lab.dut):
        port = AfPacketPort(lab.dut_if, promisc=False)
    burst = full_burst(lab.dut_mac, lab.peer_mac)
    with port:
        total, t0 = 0, time.perf_counter()
        while (t := time.perf_counter()) - t0 < SECONDS:
            total += port.tx(burst, 0, FORWARD)
        errors = port.stats()["tx_errors"]
    print(f"\n  ours: {total} frames sent in {t - t0:.2f}s, tx errors {errors}")
    return total / (t - t0)


def tx_baseline(lab) -> float:
    with netns(lab.dut):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((lab.dut_if, 0))
    fs = frames(lab.dut_mac, lab.peer_mac, BURST)
    with s:
        total, t0 = 0, time.perf_counter()
        while (t := time.perf_counter()) - t0 < SECONDS:
            for f in fs:
                s.send(f)
            total += len(fs)
    return total / (t - t0)


def test_rx_rate(veth_lab, record_property):
    ours, base = rx_ours(veth_lab), rx_baseline(veth_lab)
    record_property("rx_pps", ours)
    record_property("rx_baseline_pps", base)
    report("rx 64B", ours, base)


def test_tx_rate(veth_lab, record_property):
    ours, base = tx_ours(veth_lab), tx_baseline(veth_lab)
    record_property("tx_pps", ours)
    record_property("tx_baseline_pps", base)
    report("tx 64B", ours, base)
