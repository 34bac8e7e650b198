"""Pure-Python reference of the parse -> route pipeline: the in-run baseline for the pipeline
and replay benchmarks. Same semantics on the traffic the benchmarks send (Ethernet, IPv4/IPv6,
TTL decrement with RFC 1624 checksum update, next-hop MAC rewrite), none of the speed."""
from __future__ import annotations

import ipaddress
import struct


class PyRouter:
    """Longest-prefix match as one dict per prefix length, searched longest first."""

    def __init__(self, dp):
        self.tables: dict[tuple[int, int], dict[int, tuple]] = {}
        for route in dp.routes:
            port = dp.ports[route.port_index]
            net = route.prefix
            entry = ("forward", route.port_index, route.mac, port.mac)
            self.tables.setdefault((net.version, net.prefixlen), {})[int(net.network_address)] = entry
        for addr in dp.node_ips:
            bits = 32 if addr.version == 4 else 128
            self.tables.setdefault((addr.version, bits), {})[int(addr)] = ("local",)
        self.order = {v: sorted((p for ver, p in self.tables if ver == v), reverse=True)
                      for v in (4, 6)}

    def lookup(self, version: int, addr: int):
        bits = 32 if version == 4 else 128
        for plen in self.order[version]:
            key = addr >> (bits - plen) << (bits - plen) if plen else 0
            hit = self.tables[(version, plen)].get(key)
            if hit:
                return hit
        return None


def process(router: PyRouter, frame: bytearray) -> tuple[str, int | None]:
    """Route one frame in place; returns (verdict, egress port)."""
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x0800:
        if len(frame) < 34 or frame[14] >> 4 != 4:
            return "drop", None
        hit = router.lookup(4, struct.unpack_from("!I", frame, 30)[0])
        ttl_off = 22
    elif ethertype == 0x86DD:
        if len(frame) < 54:
            return "drop", None
        hit = router.lookup(6, int.from_bytes(frame[38:54], "big"))
        ttl_off = 21
    else:
        return "drop", None
    if hit is None:
        return "drop", None
    if hit[0] == "local":
        return "local", None
    if frame[ttl_off] <= 1:
        return "drop", None
    _, port, dmac, smac = hit
    if ethertype == 0x0800:
        old = struct.unpack_from("!H", frame, 22)[0]
        frame[22] -= 1
        new = struct.unpack_from("!H", frame, 22)[0]
        check = struct.unpack_from("!H", frame, 24)[0]
        acc = (~check & 0xFFFF) + (~old & 0xFFFF) + new
        while acc >> 16:
            acc = (acc & 0xFFFF) + (acc >> 16)
        struct.pack_into("!H", frame, 24, ~acc & 0xFFFF)
    else:
        frame[21] -= 1
    if dmac is None:
        return "drop", None
    frame[0:6] = dmac
    frame[6:12] = smac
    return "forward", port


def read_pcap(path):
    """Yield (ts_sec, ts_frac, frame) from a little-endian classic pcap."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack_from("<IIII", data, pos)
        pos += 16
        yield sec, frac, data[pos:pos + caplen]
        pos += caplen


def replay(router: PyRouter, in_path, out_path) -> int:
    """The pure-Python equivalent of `dataplane replay`: read, route, write forwarded frames."""
    n = 0
    with open(out_path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for sec, frac, frame in read_pcap(in_path):
            buf = bytearray(frame)
            verdict, _ = process(router, buf)
            if verdict == "forward":
                out.write(struct.pack("<IIII", sec, frac, len(buf), len(buf)))
                out.write(buf)
            n += 1
    return n


def _fold(acc: int) -> int:
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


def _csum_replace(frame: bytearray, off: int, old: bytes, new: bytes) -> None:
    """RFC 1624 update of the checksum at `off` for a field changing from old to new."""
    acc = ~struct.unpack_from("!H", frame, off)[0] & 0xFFFF
    for k in range(0, len(old), 2):
        acc += (~int.from_bytes(old[k:k + 2], "big") & 0xFFFF) + int.from_bytes(new[k:k + 2], "big")
    struct.pack_into("!H", frame, off, ~_fold(acc) & 0xFFFF)


class PyServiceNode:
    """Pure-Python conntrack + Service DNAT in front of PyRouter, for IPv4 TCP/UDP: a dict of
    flows keyed by both directions' tuples, a dict of Service frontends, random backends."""

    def __init__(self, config, seed: int = 1):
        import random
        self.rng = random.Random(seed)
        self.router = PyRouter(config.dataplane)
        self.frontends: dict[tuple, list[tuple[bytes, int]]] = {}
        by_service = {(s.namespace, s.service_name): s for s in config.endpoint_slices}
        for svc in config.services:
            sl = by_service[(svc.namespace, svc.name)]
            for sp in svc.ports:
                port = next(p.port for p in sl.ports if p.name == sp.name)
                self.frontends[(svc.cluster_ips[0].packed, sp.port, 6)] = [
                    (e.addresses[0].packed, port) for e in sl.endpoints if e.ready]
        self.flows: dict[tuple, tuple] = {}

    def process(self, frame: bytearray) -> tuple[str, int | None]:
        if struct.unpack_from("!H", frame, 12)[0] == 0x0800 and frame[23] in (6, 17):
            ihl = (frame[14] & 0x0F) * 4
            l4 = 14 + ihl
            key = (bytes(frame[26:30]), bytes(frame[30:34]),
                   struct.unpack_from("!H", frame, l4)[0], struct.unpack_from("!H", frame, l4 + 2)[0],
                   frame[23])
            to = self.flows.get(key)
            if to is None:
                backends = self.frontends.get((key[1], key[3], key[4]))
                if backends:
                    addr, port = backends[self.rng.randrange(len(backends))]
                    reply = (addr, key[0], port, key[2], key[4])
                    to = (key[0], addr, key[2], port)
                    self.flows[key] = to
                    self.flows[reply] = (key[1], key[0], key[3], key[2])
            if to is not None:
                self._rewrite(frame, l4, key, to)
        return process(self.router, frame)

    @staticmethod
    def _rewrite(frame: bytearray, l4: int, key: tuple, to: tuple) -> None:
        check = l4 + (16 if key[4] == 6 else 6)
        for off, old, new in ((26, key[0], to[0]), (30, key[1], to[1])):
            if old != new:
                frame[off:off + 4] = new
                _csum_replace(frame, 24, old, new)
                _csum_replace(frame, check, old, new)
        for off, old, new in ((l4, key[2], to[2]), (l4 + 2, key[3], to[3])):
            if old != new:
                struct.pack_into("!H", frame, off, new)
                _csum_replace(frame, check, old.to_bytes(2, "big"), new.to_bytes(2, "big"))
