"""Checksums against scapy: full computations, and incremental (RFC 1624) updates after the header
rewrites NAT performs, compared with scapy recomputing the rewritten packet from scratch."""
import ipaddress
import random

import pytest
from scapy.all import ICMP, IP, TCP, UDP, ICMPv6EchoRequest, IPv6, Raw
from scapy.utils import checksum as scapy_checksum

from dataplane import csum

V4 = ["10.0.0.1", "192.168.1.77", "255.255.255.255", "0.0.0.0", "172.16.254.3"]
V6 = ["fd00::1", "2001:db8::dead:beef", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1"]
PAYLOADS = [b"", b"x", b"ab", b"odd", b"\xff" * 7, bytes(range(61)), bytes(range(256)) * 3]


def a4(s):
    return ipaddress.IPv4Address(s).packed


def a6(s):
    return ipaddress.IPv6Address(s).packed


def l4_v4(proto, payload, **kw):
    if proto == "tcp":
        return TCP(sport=kw.get("sport", 1234), dport=kw.get("dport", 80), flags="PA") / Raw(payload)
    if proto == "udp":
        return UDP(sport=kw.get("sport", 1234), dport=kw.get("dport", 53)) / Raw(payload)
    return ICMP(type=8, id=kw.get("sport", 1234), seq=7) / Raw(payload)


def l4_v6(proto, payload, **kw):
    if proto == "icmp":
        return ICMPv6EchoRequest(id=kw.get("sport", 1234), seq=7, data=payload)
    return l4_v4(proto, payload, **kw)


L4_OFF = {"tcp": 16, "udp": 6, "icmp": 2}


@pytest.mark.parametrize("data", PAYLOADS + [b"\x00\x01\xf2", b"\xff\xff" * 5], ids=len)
def test_buffer_checksum_matches_scapy(data):
    assert csum.checksum(data) == scapy_checksum(data)


@pytest.mark.parametrize("opts", [b"", b"\x01\x01\x01\x00", b"\x94\x04\x00\x00" * 2])
def test_ip4_header(opts):
    raw = bytes(IP(src="10.1.2.3", dst="8.8.8.8", ttl=17, options=opts) / UDP())
    hlen = (raw[0] & 0xF) * 4
    assert csum.ip4_header(raw) == IP(raw).chksum
    assert csum.ip4_header_ok(raw[:hlen])
    broken = bytearray(raw)
    broken[8] ^= 1
    assert not csum.ip4_header_ok(bytes(broken[:hlen]))


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=len)
def test_l4_ip4_matches_scapy(proto, payload):
    raw = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / l4_v4(proto, payload))
    expected = int.from_bytes(raw[20 + L4_OFF[proto]:22 + L4_OFF[proto]], "big")
    assert csum.l4_ip4(raw) == expected


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=len)
def test_l4_ip6_matches_scapy(proto, payload):
    raw = bytes(IPv6(src="fd00::1", dst="2001:db8::2") / l4_v6(proto, payload))
    expected = int.from_bytes(raw[40 + L4_OFF[proto]:42 + L4_OFF[proto]], "big")
    assert csum.l4_ip6(raw) == expected


def _udp_zero_payload(src, dst):
    """A 2-byte payload making the UDP checksum of src->dst compute to 0 (sent as 0xffff)."""
    raw = bytes(IP(src=src, dst=dst) / UDP(sport=1, dport=2) / Raw(b"\x00\x00"))
    return raw[26:28]     # with a zero payload word, the checksum is exactly the word needed


def test_udp_computed_zero_is_sent_as_ffff():
    payload = _udp_zero_payload("10.0.0.1", "10.0.0.2")
    raw = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / Raw(payload))
    assert raw[26:28] == b"\xff\xff"            # scapy applies RFC 768 too
    assert csum.l4_ip4(raw) == 0xFFFF


def test_rfc1624_minus_zero_corner_case():
    # RFC 1624 section 4: eqn. 2 gives 0xffff here, a full recomputation (and eqn. 3) gives 0.
    assert csum.update16(0xDD2F, 0x5555, 0x3285) == 0x0000


def test_rfc1624_corner_on_a_real_header():
    """A TTL change after which the header sums to -0: the update must give 0 like scapy does."""
    def header(ttl, ident):
        return bytes(IP(src="10.0.0.1", dst="10.0.0.2", ttl=ttl, id=ident) / UDP())[:20]

    # The checksum is 0 when the header words sum to 0xffff; choose id so that happens at TTL 1.
    ident = IP(header(1, 0)).chksum
    assert IP(header(1, ident)).chksum == 0
    raw = bytearray(header(64, ident))
    old_word = int.from_bytes(raw[8:10], "big")
    raw[8] = 1
    csum.replace2(raw, 10, old_word, int.from_bytes(raw[8:10], "big"))
    assert bytes(raw) == header(1, ident)
    assert raw[10:12] == b"\x00\x00"


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
@pytest.mark.parametrize("payload", [b"", b"q", bytes(range(99))], ids=len)
def test_ip4_nat_rewrite_matches_scapy(proto, payload):
    rng = random.Random(f"v4{proto}{len(payload)}")
    for _ in range(20):
        src, dst, nsrc, ndst = (rng.choice(V4) for _ in range(4))
        sport, dport, nsport, ndport = (rng.randrange(65536) for _ in range(4))
        raw = bytearray(bytes(IP(src=src, dst=dst) / l4_v4(proto, payload, sport=sport, dport=dport)))
        ck = 20 + L4_OFF[proto]
        udp = proto == "udp"
        # SNAT + DNAT: addresses are in the IP header and (TCP/UDP) the pseudo-header.
        raw[12:16], raw[16:20] = a4(nsrc), a4(ndst)
        csum.replace4(raw, 10, a4(src), a4(nsrc))
        csum.replace4(raw, 10, a4(dst), a4(ndst))
        if proto != "icmp":
            csum.replace4(raw, ck, a4(src), a4(nsrc), udp)
            csum.replace4(raw, ck, a4(dst), a4(ndst), udp)
            raw[20:22], raw[22:24] = nsport.to_bytes(2, "big"), ndport.to_bytes(2, "big")
            csum.replace2(raw, ck, sport, nsport, udp)
            csum.replace2(raw, ck, dport, ndport, udp)
        else:                                   # ICMP echo: NAT rewrites the identifier
            raw[24:26] = nsport.to_bytes(2, "big")
            csum.replace2(raw, ck, sport, nsport)
            nsport = ndport = nsport
        want = bytes(IP(src=nsrc, dst=ndst) / l4_v4(proto, payload, sport=nsport, dport=ndport))
        assert bytes(raw) == want


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
@pytest.mark.parametrize("payload", [b"", b"q", bytes(range(99))], ids=len)
def test_ip6_nat_rewrite_matches_scapy(proto, payload):
    rng = random.Random(f"v6{proto}{len(payload)}")
    for _ in range(20):
        src, dst, nsrc, ndst = (rng.choice(V6) for _ in range(4))
        sport, nsport = rng.randrange(65536), rng.randrange(65536)
        raw = bytearray(bytes(IPv6(src=src, dst=dst) / l4_v6(proto, payload, sport=sport)))
        ck = 40 + L4_OFF[proto]
        udp = proto == "udp"
        # ICMPv6 has a pseudo-header too: every address change reaches its checksum.
        raw[8:24], raw[24:40] = a6(nsrc), a6(ndst)
        csum.replace16(raw, ck, a6(src), a6(nsrc), udp)
        csum.replace16(raw, ck, a6(dst), a6(ndst), udp)
        port_off = 44 if proto == "icmp" else 40
        raw[port_off:port_off + 2] = nsport.to_bytes(2, "big")
        csum.replace2(raw, ck, sport, nsport, udp)
        want = bytes(IPv6(src=nsrc, dst=ndst) / l4_v6(proto, payload, sport=nsport))
        assert bytes(raw) == want


def test_update32_and_update128_match_recompute():
    raw = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / Raw(b"abc"))
    old = IP(raw)[UDP].chksum
    new = IP(bytes(IP(src="10.9.8.7", dst="10.0.0.2") / UDP() / Raw(b"abc")))[UDP].chksum
    assert csum.update32(old, int(ipaddress.IPv4Address("10.0.0.1")),
                         int(ipaddress.IPv4Address("10.9.8.7"))) == new
    raw6 = bytes(IPv6(src="fd00::1", dst="fd00::2") / TCP())
    old6 = IPv6(raw6)[TCP].chksum
    new6 = IPv6(bytes(IPv6(src="2001:db8::9", dst="fd00::2") / TCP()))[TCP].chksum
    assert csum.update128(old6, a6("fd00::1"), a6("2001:db8::9")) == new6


def test_udp_zero_checksum_means_none_and_stays_zero():
    raw = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(chksum=0) / Raw(b"data")))
    csum.replace4(raw, 26, a4("10.0.0.1"), a4("10.7.7.7"), True)
    csum.replace2(raw, 26, 53, 5353, True)
    assert raw[26:28] == b"\x00\x00"


def test_udp_incremental_update_landing_on_zero_is_ffff():
    payload = _udp_zero_payload("10.0.0.9", "10.0.0.2")
    raw = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / Raw(payload)))
    raw[12:16] = a4("10.0.0.9")
    csum.replace4(raw, 26, a4("10.0.0.1"), a4("10.0.0.9"), True)
    assert raw[26:28] == b"\xff\xff"
    want = bytes(IP(src="10.0.0.9", dst="10.0.0.2") / UDP(sport=1, dport=2) / Raw(payload))
    assert bytes(raw[20:]) == want[20:]


def test_check_offsets():
    assert [csum.check_offset(p) for p in (6, 17, 1, 58)] == [16, 6, 2, 2]


def test_short_buffers_are_refused():
    with pytest.raises(ValueError):
        csum.replace2(bytearray(3), 2, 0, 1)
    with pytest.raises(ValueError):
        csum.update128(0, b"\x00" * 15, b"\x00" * 16)
    with pytest.raises(ValueError):
        csum.l4_ip4(bytes(IP() / UDP())[:25])
