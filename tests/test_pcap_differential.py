"""Differential test: the parser against scapy's dissection of every packet of the shared captures.

A packet we parse must agree with scapy on family, addresses, protocol, ports, VLAN ids, fragment
flags, ICMP type/code and the quoted tuple of ICMP errors. A packet we drop must be one whose scapy
view shows the defect behind our reason (short header, inconsistent length field, ...): a known-good
packet that we drop fails.
"""
import csv
import ipaddress
import struct
from pathlib import Path

import pytest
from scapy.all import (
    ARP, ICMP, IP, SCTP, TCP, UDP, Dot1AD, Dot1Q, Ether, ICMPerror, IPerror, IPerror6, IPv6,
    IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, TCPerror,
    UDPerror,
)
from scapy.layers.inet6 import _ICMPv6, _ICMPv6Error, ICMPv6EchoReply, ICMPv6EchoRequest
from scapy.utils import PcapNgReader, RawPcapReader

from dataplane.burst import Burst
from dataplane.parse import parse

PCAPS = Path(__file__).resolve().parents[1].parent / "shared" / "pcaps"
F_L4, F_FRAG, F_LATER, F_ICMP_ERR, F_INNER_L4 = 1, 2, 4, 8, 0x10
EXT6 = (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrFragment, IPv6ExtHdrDestOpt)
UNSUPPORTED_LINKTYPES = {226: "LINKTYPE_IPNET (Solaris) has no Ethernet mapping"}


def manifest():
    if not (PCAPS / "MANIFEST.tsv").exists():
        return []
    with open(PCAPS / "MANIFEST.tsv", newline="") as f:
        return [row["file"] for row in csv.DictReader(f, delimiter="\t")]


def read_frames(path):
    """(linktype, [raw frame bytes]). Some .pcap files are pcapng: sniff the magic."""
    if path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a":
        frames, lts = [], set()
        for pkt in PcapNgReader(str(path)):
            frames.append(bytes(pkt))
            lts.add(getattr(pkt, "linktype", 1) or 1)
        return (lts.pop() if len(lts) == 1 else 1), frames
    reader = RawPcapReader(str(path))
    return reader.linktype & 0xFFFF, [data for data, _ in reader]  # high bits: FCS length


def to_ethernet(linktype, frame):
    """Our pipeline takes Ethernet: give raw-IP and Linux SLL frames a synthetic header."""
    if linktype == 1:
        return frame
    if linktype == 101:            # raw IP: the version nibble picks the ethertype
        et = 0x86DD if frame and frame[0] >> 4 == 6 else 0x0800
        return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01" + struct.pack("!H", et) + frame
    if linktype == 113:            # Linux cooked: 16-byte header, protocol at offset 14
        return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01" + frame[14:16] + frame[16:]
    raise ValueError(linktype)


def ip_tuple(layer):
    if isinstance(layer, (IP, IPerror)):
        return 4, layer.src, layer.dst
    return 6, str(ipaddress.IPv6Address(layer.src)), str(ipaddress.IPv6Address(layer.dst))


def walk6(ip6):
    """(upper protocol, its layer or None, fragment layer or None, ext bytes, chain ok)."""
    nh, layer, frag, ext_len = ip6.nh, ip6.payload, None, 0
    while isinstance(layer, EXT6):
        ext_len += len(bytes(layer)) - len(bytes(layer.payload))
        if isinstance(layer, IPv6ExtHdrFragment):
            frag = layer
            if layer.offset:
                return layer.nh, None, frag, ext_len
        nh, layer = layer.nh, layer.payload
    return nh, layer, frag, ext_len


def icmp_echo_id(layer):
    if isinstance(layer, (ICMP, ICMPerror)) and layer.type in (0, 8):
        return layer.id
    if isinstance(layer, (ICMPv6EchoRequest, ICMPv6EchoReply)):
        return layer.id
    return None


def expected_ports(l4):
    if isinstance(l4, (TCP, UDP, SCTP, TCPerror, UDPerror)):
        return l4.sport, l4.dport
    echo = icmp_echo_id(l4)
    return (echo, echo) if echo is not None else (0, 0)


def check_parsed(pkt, m):
    got_vlans = [v & 0xFFF for v in m["vlan"][:m["n_vlans"]]]
    layer, seen = pkt.payload, []
    while isinstance(layer, (Dot1Q, Dot1AD)):
        seen.append(layer.vlan)
        layer = layer.payload
    assert got_vlans == seen
    if isinstance(layer, ARP):
        assert m["l3"] == 3
        return
    t = m["t"]
    assert (t["family"], t["src"], t["dst"]) == ip_tuple(layer)
    if isinstance(layer, IP):
        frag = bool(layer.flags.MF or layer.frag)
        later = layer.frag != 0
        assert (m["flags"] & F_FRAG != 0, m["flags"] & F_LATER != 0, m["frag_off"]) == (
            frag, later, layer.frag * 8)
        assert t["proto"] == layer.proto
        l4 = None if later else layer.payload
    else:
        proto, l4, fr, _ = walk6(layer)
        frag = fr is not None and bool(fr.offset or fr.m)
        assert (m["flags"] & F_FRAG != 0, m["frag_off"]) == (frag, fr.offset * 8 if frag else 0)
        assert t["proto"] == proto
    if l4 is None:
        assert (t["sport"], t["dport"], m["flags"] & F_L4) == (0, 0, 0)
        return
    assert (t["sport"], t["dport"]) == expected_ports(l4)
    assert bool(m["flags"] & F_L4) == isinstance(l4, (TCP, UDP, SCTP, ICMP, _ICMPv6))
    if isinstance(l4, (ICMP, _ICMPv6)):
        assert (m["icmp_type"], m["icmp_code"]) == tuple(bytes(l4)[:2])   # MLD has no `code`
    quoted = l4.payload if isinstance(l4, (ICMP, _ICMPv6Error)) else None
    if isinstance(quoted, (IPerror, IPerror6)) and (
            isinstance(l4, _ICMPv6Error) or l4.type in (3, 4, 5, 11, 12)):
        assert m["flags"] & F_ICMP_ERR
        i = m["inner"]
        assert (i["family"], i["src"], i["dst"]) == ip_tuple(quoted)
        inner_l4 = quoted.payload if isinstance(quoted, IPerror) else walk6(quoted)[1]
        want_l4 = isinstance(inner_l4, (TCPerror, UDPerror, SCTP, ICMPerror, _ICMPv6)) and (
            len(bytes(inner_l4)) >= (8 if isinstance(inner_l4, (ICMPerror, _ICMPv6)) else 4))
        assert bool(m["flags"] & F_INNER_L4) == want_l4
        if want_l4:
            assert (i["sport"], i["dport"]) == expected_ports(inner_l4)
    else:
        assert not m["flags"] & F_ICMP_ERR


def drop_justified(frame, pkt, reason):
    """Does scapy's view of the packet show the defect behind `reason`?"""
    layer, off, tags = pkt.payload, 14, 0
    if len(frame) < 14:
        return reason == "truncated"
    while isinstance(layer, (Dot1Q, Dot1AD)):
        layer, off, tags = layer.payload, off + 4, tags + 1
    avail = len(frame) - off
    if tags > 2:
        return reason == "too_many_vlans"
    if reason == "bad_ethertype":
        return not isinstance(layer, (IP, IPv6, ARP))
    if reason == "truncated":         # a header cut off by the frame (scapy: short layer / Raw)
        if isinstance(layer, IP):
            return avail < max(20, layer.ihl * 4)
        return avail < {IPv6: 40, ARP: 28}.get(type(layer), 1 << 30)
    if isinstance(layer, IP):
        room = layer.len - layer.ihl * 4
        if reason == "bad_version":
            return layer.version != 4
        if reason == "bad_ihl":
            return layer.ihl < 5
        if reason == "bad_len":
            return layer.len < layer.ihl * 4 or layer.len > avail
        l4 = layer.payload
    elif isinstance(layer, IPv6):
        if reason == "bad_version":
            return layer.version != 6
        if reason == "bad_len":
            return 40 + layer.plen > avail or (layer.plen == 0 and layer.nh == 0)
        proto, l4, _, ext_len = walk6(layer)
        room = layer.plen - ext_len
        if reason == "bad_ext_hdr":
            return room < 0 or not isinstance(l4, (TCP, UDP, SCTP, _ICMPv6)) and proto in (0, 43, 44, 60)
    else:
        return False
    if reason == "bad_l4_len":
        if isinstance(l4, TCP):
            return room < 20 or not 5 <= l4.dataofs <= room // 4
        if isinstance(l4, UDP):
            return room < 8 or not 8 <= l4.len <= room
        return room < {SCTP: 12}.get(type(l4), 8)
    return False


FILES = manifest()


@pytest.mark.skipif(not FILES, reason=f"no captures at {PCAPS}")
@pytest.mark.parametrize("name", FILES or ["none"])
def test_capture_against_scapy(name):
    linktype, raw = read_frames(PCAPS / name)
    if linktype in UNSUPPORTED_LINKTYPES:
        pytest.skip(f"linktype {linktype}: {UNSUPPORTED_LINKTYPES[linktype]}")
    frames = [to_ethernet(linktype, f) for f in raw]
    failures = []
    for start in range(0, len(frames), 256):
        chunk = frames[start:start + 256]
        # Loopback captures carry jumbo frames: size slots to fit (receive would count them oversize).
        b = Burst(slot_size=128 + max(2048, max(map(len, chunk))))
        b.extend(chunk)
        parse(b)
        for k, frame in enumerate(chunk):
            m, pkt = b.meta(k), Ether(frame)
            where = f"{name} #{start + k + 1}: {pkt.summary()}"
            if m["verdict"] == "drop":
                if not drop_justified(frame, pkt, m["reason"]):
                    failures.append(f"{where}: dropped as {m['reason']}, scapy sees no such defect")
                continue
            try:
                check_parsed(pkt, m)
            except AssertionError as e:
                failures.append(f"{where}: {e}")
    assert not failures, "\n".join(failures)
