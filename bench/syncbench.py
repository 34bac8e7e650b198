"""Paced probe traffic for the hitless-sync benchmark (bench/test_bench_sync.py).

    python bench/syncbench.py send --ifname s0 --dst-mac M --vip 10.96.0.1 --rate 20000 --seconds 10
    python bench/syncbench.py recv --ifname d0 --seconds 11 --endpoints 10.2.160.0,10.2.160.1

The sender emits UDP frames to the Service VIP at a fixed rate (bursts every millisecond), each
carrying a sequence number and its send time, over 16 flows; it reports its own longest pause
between bursts. The receiver reads every frame arriving at dst with its kernel receive timestamp
(SO_TIMESTAMPNS: scheduling of the receiver does not matter) and reports what a sync could have
done to them: sequence numbers lost, frames that arrived untranslated (still to the VIP) or at an
address that is not an endpoint, the longest gap between two arrivals, and the delay from send
to arrival (p50, p99, max). A router parked for 5 ms shows as 5 ms more delay for the frames
that waited in its ring, whatever the sender's own pacing did; a stalled sender only shows as
a gap.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
FLOWS = 16
SPORT_BASE = 20_000
SRC_IP = "10.1.0.2"


def send(ifname: str, dst_mac: str, vip: str, dport: int, rate: int, seconds: float, cpu: int | None) -> dict:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    src_mac = bytes.fromhex(open(f"/sys/class/net/{ifname}/address").read().strip().replace(":", ""))
    eth = bytes.fromhex(dst_mac.replace(":", "")) + src_mac + b"\x08\x00"
    src, dst = ipaddress.IPv4Address(SRC_IP).packed, ipaddress.IPv4Address(vip).packed
    per_ms = max(1, rate // 1000)
    seq = 0
    gap_max = 0
    start = time.perf_counter_ns()
    deadline = start + int(seconds * 1e9)
    tick = start
    last = start
    while tick < deadline:
        for _ in range(per_ms):
            payload = struct.pack("!QQ", seq, time.time_ns())
            udp = struct.pack("!HHHH", SPORT_BASE + seq % FLOWS, dport, 8 + len(payload), 0) + payload
            ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst))
            acc = sum(struct.unpack("!10H", ip))
            acc = (acc & 0xFFFF) + (acc >> 16)
            ip[10:12] = struct.pack("!H", ~acc & 0xFFFF)
            s.send(eth + bytes(ip) + udp)
            seq += 1
        now = time.perf_counter_ns()
        gap_max = max(gap_max, now - last)
        last = now
        tick += 1_000_000
        if tick > now:
            time.sleep((tick - now) / 1e9)
    return {"sent": seq, "seconds": (time.perf_counter_ns() - start) / 1e9, "sender_gap_max_ms": gap_max / 1e6}


def recv(ifname: str, seconds: float, endpoints: set[str], target_port: int) -> dict:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((ifname, 0))
    s.settimeout(0.2)
    seen: set[int] = set()
    untranslated = wrong_endpoint = duplicates = 0
    times: list[int] = []
    delays: list[int] = []       # send -> kernel receive at dst: the time spent in the router
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            frame, anc, _, addr = s.recvmsg(2048, socket.CMSG_SPACE(16))
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING or len(frame) < 50 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        if frame[26:30] != ipaddress.IPv4Address(SRC_IP).packed:
            continue
        sport, dport = struct.unpack("!HH", frame[34:38])
        if not SPORT_BASE <= sport < SPORT_BASE + FLOWS:
            continue
        seq, sent_ns = struct.unpack("!QQ", frame[42:58])
        ts = next((struct.unpack("qq", data[:16]) for level, kind, data in anc
                   if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
        arrived = ts[0] * 1_000_000_000 + ts[1] if ts else time.time_ns()
        times.append(arrived)
        delays.append(arrived - sent_ns)
        if seq in seen:
            duplicates += 1
        seen.add(seq)
        dst = str(ipaddress.IPv4Address(frame[30:34]))
        if dport != target_port:
            untranslated += 1
        elif endpoints and dst not in endpoints:
            wrong_endpoint += 1
    times.sort()
    delays.sort()
    gaps = [b - a for a, b in zip(times, times[1:])]
    top = sorted(gaps)[-5:]
    return {"received": len(times), "unique": len(seen), "max_seq": max(seen) if seen else -1,
            "untranslated": untranslated, "wrong_endpoint": wrong_endpoint, "duplicates": duplicates,
            "gap_max_ms": (top[-1] / 1e6) if top else None, "gap_top5_ms": [g / 1e6 for g in top],
            "delay_p50_ms": delays[len(delays) // 2] / 1e6 if delays else None,
            "delay_p99_ms": delays[int(0.99 * len(delays))] / 1e6 if delays else None,
            "delay_max_ms": delays[-1] / 1e6 if delays else None,
            "lost": (max(seen) + 1 - len(seen)) if seen else 0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("send")
    a.add_argument("--ifname", required=True)
    a.add_argument("--dst-mac", required=True)
    a.add_argument("--vip", required=True)
    a.add_argument("--dport", type=int, default=80)
    a.add_argument("--rate", type=int, default=20_000)
    a.add_argument("--seconds", type=float, default=10)
    a.add_argument("--cpu", type=int)
    b = sub.add_parser("recv")
    b.add_argument("--ifname", required=True)
    b.add_argument("--seconds", type=float, default=11)
    b.add_argument("--endpoints", default="")
    b.add_argument("--target-port", type=int, default=8080)
    args = ap.parse_args(argv)
    if args.cmd == "send":
        if not 0 < args.seconds <= 120 or not 0 < args.rate <= 200_000:
            ap.error("--seconds in (0, 120], --rate in (0, 200000]")
        out = send(args.ifname, args.dst_mac, args.vip, args.dport, args.rate, args.seconds, args.cpu)
    else:
        out = recv(args.ifname, args.seconds, set(filter(None, args.endpoints.split(","))), args.target_port)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
