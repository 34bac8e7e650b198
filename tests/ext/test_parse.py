"""Parser stage on scapy-built frames: every protocol it understands, every malformed case it must
drop with a reason, and fuzzed frames that must never be read past their end."""
import random
import struct

import numpy as np
import pytest
from scapy.all import (
    ARP, ICMP, IP, SCTP, TCP, UDP, Dot1AD, Dot1Q, Ether, ICMPv6DestUnreach, ICMPv6EchoReply,
    ICMPv6EchoRequest, ICMPv6PacketTooBig, ICMPv6TimeExceeded, IPv6, IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Raw,
)

from dataplane.burst import COUNTERS, DROP_REASONS, Burst
from dataplane.parse import parse

F_L4, F_FRAG, F_LATER, F_ICMP_ERR, F_INNER_L4, F_OPTS, F_EXT = 1, 2, 4, 8, 0x10, 0x20, 0x40
E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
E_ARP = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x0806)
V4 = dict(src="10.1.2.3", dst="192.168.7.9")
V6 = dict(src="fd00::1", dst="2001:db8::77")


def parse_frames(frames, fill=None):
    """Parse frames in one burst. fill: byte value left in the slots behind each frame."""
    b = Burst(capacity=max(1, len(frames)))
    if fill is not None:
        b.extend([bytes([fill]) * b.max_frame] * len(frames))
        b.clear()
    b.extend(frames)
    cnt, drops = parse(b)
    return b, dict(zip(COUNTERS, cnt.tolist())), dict(zip(DROP_REASONS, drops.tolist()))


def metas_no_overread(frames):
    """Parse with zeros and with 0xff behind every frame: a parser reading past the end would
    not give identical results."""
    b0 = parse_frames(frames, 0x00)[0]
    b1 = parse_frames(frames, 0xFF)[0]
    m0 = [b0.meta(i) for i in range(len(b0))]
    assert m0 == [b1.meta(i) for i in range(len(b1))]
    return m0


def one(pkt):
    (m,) = metas_no_overread([bytes(pkt)])
    return m


def dropped(pkt):
    m = one(pkt)
    assert m["verdict"] == "drop"
    return m["reason"]


def ok(pkt):
    m = one(pkt)
    assert m["verdict"] == "pending", m["reason"]
    return m


# --- well-formed packets -------------------------------------------------------------------------

def test_ipv4_udp():
    m = ok(E / IP(ttl=33, **V4) / UDP(sport=1234, dport=53) / Raw(b"q" * 5))
    assert (m["l3"], m["ethertype"], m["l3_off"], m["l4_off"], m["l3_len"], m["ttl"]) == (
        1, 0x0800, 14, 34, 33, 33)
    assert m["t"] == {"src": "10.1.2.3", "dst": "192.168.7.9", "sport": 1234, "dport": 53,
                      "proto": 17, "family": 4}
    assert m["flags"] == F_L4 and m["hash"] != 0


def test_ethernet_padding_is_ignored():
    frame = bytes(E / IP(**V4) / UDP(sport=1, dport=2)).ljust(60, b"\x00")
    m = one(frame)
    assert m["verdict"] == "pending" and m["l3_len"] == 28 and m["len"] == 60


def test_ipv4_tcp_flags_and_ports():
    m = ok(E / IP(**V4) / TCP(sport=40000, dport=443, flags="SA", options=[("MSS", 1460)]))
    assert (m["t"]["sport"], m["t"]["dport"], m["t"]["proto"], m["tcp_flags"]) == (40000, 443, 6, 0x12)


def test_sctp_ports():
    m = ok(E / IP(**V4) / SCTP(sport=2905, dport=2906))
    assert (m["t"]["sport"], m["t"]["dport"], m["t"]["proto"], m["flags"]) == (2905, 2906, 132, F_L4)


def test_icmp_echo_identifier_in_both_ports():
    m = ok(E / IP(**V4) / ICMP(type=8, id=0x4242, seq=9))
    assert (m["icmp_type"], m["icmp_code"], m["t"]["sport"], m["t"]["dport"]) == (8, 0, 0x4242, 0x4242)
    m = ok(E / IP(**V4) / ICMP(type=0, id=7))
    assert m["t"]["sport"] == m["t"]["dport"] == 7


def test_icmp_other_has_no_ports():
    m = ok(E / IP(**V4) / ICMP(type=13, id=7))   # timestamp request
    assert (m["t"]["sport"], m["t"]["dport"], m["flags"] & F_ICMP_ERR) == (0, 0, 0)


ORIG_UDP = IP(src="192.168.7.9", dst="10.9.9.9", ttl=1) / UDP(sport=5353, dport=33434) / Raw(b"x" * 20)
ORIG_TCP = IP(src="192.168.7.9", dst="10.9.9.9") / TCP(sport=51000, dport=80)


@pytest.mark.parametrize("orig,proto,ports", [(ORIG_UDP, 17, (5353, 33434)), (ORIG_TCP, 6, (51000, 80))])
@pytest.mark.parametrize("quote", [None, 28], ids=["full", "8 bytes"])
@pytest.mark.parametrize("typ,code", [(3, 3), (11, 0), (12, 0), (4, 0), (5, 1)])
def test_icmp_error_quotes_inner_tuple(orig, proto, ports, quote, typ, code):
    q = bytes(orig)[:quote] if quote else bytes(orig)
    m = ok(E / IP(**V4) / ICMP(type=typ, code=code) / Raw(q))
    assert (m["icmp_type"], m["icmp_code"]) == (typ, code)
    assert m["flags"] == F_L4 | F_ICMP_ERR | F_INNER_L4
    assert m["inner"] == {"src": "192.168.7.9", "dst": "10.9.9.9", "sport": ports[0],
                          "dport": ports[1], "proto": proto, "family": 4}
    assert (m["inner_l3_off"], m["inner_l4_off"]) == (42, 62)


def test_icmp_error_quote_without_ports_or_header():
    m = ok(E / IP(**V4) / ICMP(type=3, code=1) / Raw(bytes(ORIG_TCP)[:22]))
    assert m["flags"] == F_L4 | F_ICMP_ERR and m["inner"]["proto"] == 6 and m["inner_l4_off"] == 0
    m = ok(E / IP(**V4) / ICMP(type=3, code=1) / Raw(bytes(ORIG_TCP)[:12]))
    assert m["flags"] == F_L4 and m["inner"]["family"] == 0      # not dropped, no inner tuple


def test_icmp_error_quoting_an_echo():
    m = ok(E / IP(**V4) / ICMP(type=11) / IP(src="10.0.0.1", dst="8.8.8.8") / ICMP(id=99))
    assert m["inner"]["proto"] == 1 and m["inner"]["sport"] == m["inner"]["dport"] == 99


def test_icmpv6_echo():
    m = ok(E / IPv6(**V6) / ICMPv6EchoRequest(id=0x1111, seq=1))
    assert (m["l3"], m["t"]["family"], m["t"]["proto"], m["icmp_type"]) == (2, 6, 58, 128)
    assert m["t"]["sport"] == m["t"]["dport"] == 0x1111
    assert m["t"]["src"] == "fd00::1" and m["t"]["dst"] == "2001:db8::77"
    assert ok(E / IPv6(**V6) / ICMPv6EchoReply(id=3))["t"]["sport"] == 3


ORIG6 = IPv6(src="2001:db8::77", dst="fd00::99") / UDP(sport=1000, dport=2000) / Raw(b"z" * 40)


@pytest.mark.parametrize("err,typ", [(ICMPv6DestUnreach(code=4), 1), (ICMPv6PacketTooBig(mtu=1280), 2),
                                     (ICMPv6TimeExceeded(), 3)])
@pytest.mark.parametrize("quote", [None, 48], ids=["full", "8 bytes"])
def test_icmpv6_errors(err, typ, quote):
    q = bytes(ORIG6)[:quote] if quote else bytes(ORIG6)
    m = ok(E / IPv6(**V6) / err / Raw(q))
    assert m["icmp_type"] == typ and m["flags"] == F_L4 | F_ICMP_ERR | F_INNER_L4
    assert m["inner"] == {"src": "2001:db8::77", "dst": "fd00::99", "sport": 1000, "dport": 2000,
                          "proto": 17, "family": 6}
    assert (m["inner_l3_off"], m["inner_l4_off"]) == (62, 102)


def test_icmpv6_error_quote_with_ext_headers():
    orig = IPv6(src="fd00::5", dst="fd00::6") / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(m=1, id=3) / TCP(sport=7, dport=8)
    m = ok(E / IPv6(**V6) / ICMPv6DestUnreach() / Raw(bytes(orig)))
    assert m["inner"]["proto"] == 6 and (m["inner"]["sport"], m["inner"]["dport"]) == (7, 8)
    later = IPv6(src="fd00::5", dst="fd00::6") / IPv6ExtHdrFragment(offset=10, nh=6) / Raw(b"a" * 16)
    m = ok(E / IPv6(**V6) / ICMPv6DestUnreach() / Raw(bytes(later)))
    assert m["flags"] == F_L4 | F_ICMP_ERR and m["inner"]["proto"] == 6
    # The quote's chain runs off the quote: the error stays, its inner tuple does not.
    m = ok(E / IPv6(**V6) / ICMPv6DestUnreach() / Raw(bytes(orig)[:44]))
    assert m["flags"] == F_L4 and m["inner"]["family"] == 0


def test_ipv6_extension_chain():
    pkt = (E / IPv6(**V6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["fd00::9"])
           / IPv6ExtHdrFragment(m=1, id=1) / IPv6ExtHdrDestOpt() / TCP(sport=5, dport=6))
    m = ok(pkt)
    assert m["flags"] == F_EXT | F_FRAG | F_L4 and m["frag_off"] == 0
    assert (m["t"]["proto"], m["t"]["sport"], m["t"]["dport"]) == (6, 5, 6)
    assert m["l4_off"] == 14 + 40 + 8 + 24 + 8 + 8


def test_ipv6_later_fragment_and_atomic_fragment():
    m = ok(E / IPv6(**V6) / IPv6ExtHdrFragment(offset=185, nh=17) / Raw(b"b" * 32))
    assert m["flags"] == F_EXT | F_FRAG | F_LATER and m["frag_off"] == 1480
    assert (m["t"]["proto"], m["t"]["sport"], m["l4_off"]) == (17, 0, 0)
    m = ok(E / IPv6(**V6) / IPv6ExtHdrFragment() / UDP(sport=1, dport=2))
    assert m["flags"] == F_EXT | F_L4                    # atomic fragment: a whole packet


def test_ipv6_unknown_next_header_is_the_l4_proto():
    m = ok(E / IPv6(nh=50, **V6) / Raw(b"\x00" * 16))    # ESP
    assert m["t"]["proto"] == 50 and m["flags"] == 0 and m["l4_off"] == 54


def test_vlan_and_qinq():
    m = ok(E / Dot1Q(vlan=165, prio=5) / IP(**V4) / UDP())
    assert (m["n_vlans"], m["vlan"][0] & 0xFFF, m["vlan"][0] >> 13, m["l3_off"]) == (1, 165, 5, 18)
    m = ok(E / Dot1AD(vlan=200) / Dot1Q(vlan=2001) / IPv6(**V6) / UDP())
    assert (m["n_vlans"], m["vlan"], m["ethertype"], m["l3_off"]) == (2, [200, 2001], 0x86DD, 22)
    m = ok(E / Dot1Q(vlan=118) / Dot1Q(vlan=10) / IP(**V4) / ICMP())
    assert m["vlan"] == [118, 10]
    assert dropped(E / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP() / UDP()) == "too_many_vlans"


def test_arp():
    m = ok(E / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))
    assert (m["l3"], m["ethertype"], m["t"]["family"]) == (3, 0x0806, 0)
    assert ok(E / Dot1AD(vlan=200) / Dot1Q(vlan=2001) / ARP())["l3"] == 3


def test_ipv4_options():
    m = ok(E / IP(options=b"\x94\x04\x00\x00", **V4) / TCP(sport=1, dport=2))
    assert m["flags"] == F_OPTS | F_L4 and m["l4_off"] == 38 and m["t"]["sport"] == 1


def test_ipv4_fragments():
    first = E / IP(flags="MF", id=9, **V4) / UDP(sport=7, dport=8, len=1000) / Raw(b"c" * 64)
    m = ok(first)      # the UDP length covers the whole datagram, not this fragment
    assert m["flags"] == F_FRAG | F_L4 and (m["t"]["sport"], m["frag_off"]) == (7, 0)
    m = ok(E / IP(frag=100, proto=17, id=9, **V4) / Raw(b"d" * 40))
    assert m["flags"] == F_FRAG | F_LATER and m["frag_off"] == 800
    assert (m["t"]["proto"], m["t"]["sport"], m["l4_off"]) == (17, 0, 0)


def test_counters_and_only_pending_packets():
    frames = [bytes(E / IP() / UDP()), bytes(E / Dot1Q() / IPv6() / UDP()), bytes(E / ARP()),
              bytes(E / IP(flags="MF") / UDP()), bytes(E / IP() / ICMP(type=3) / IP() / UDP()),
              bytes(E / IP(ihl=4) / UDP()), b"\x00" * 10, bytes(E / IP() / UDP())]
    b = Burst()
    b.extend(frames)
    b.verdicts[7] = 3                                     # decided by an earlier stage
    cnt, drops = parse(b)
    c = dict(zip(COUNTERS, cnt.tolist()))
    assert (c["rx"], c["ip4"], c["ip6"], c["arp"], c["vlan"], c["fragment"], c["icmp_error"]) == (
        7, 3, 1, 1, 1, 1, 1)
    d = dict(zip(DROP_REASONS, drops.tolist()))
    assert (d["bad_ihl"], d["truncated"], sum(d.values())) == (1, 1, 2)
    assert b.meta(7)["l3"] == 0 and b.reasons[7] == 0
    # Accumulating into caller arrays; a re-run only sees the still-pending packets.
    acc = (np.zeros_like(cnt), np.zeros_like(drops))
    parse(b, acc)
    parse(b, acc)
    assert acc[0][COUNTERS.index("rx")] == 10 and acc[1].sum() == 0


def test_reparse_is_idempotent_and_hash_tracks_tuple():
    b = Burst()
    b.extend([bytes(E / IP(**V4) / UDP(sport=1, dport=2)), bytes(E / IP(**V4) / UDP(sport=1, dport=2)),
              bytes(E / IP(**V4) / UDP(sport=1, dport=3)), bytes(E / IP(ttl=9, **V4) / UDP(sport=1, dport=2))])
    parse(b)
    before = [b.meta(i) for i in range(4)]
    b.verdicts[:] = 0
    parse(b)
    assert before == [b.meta(i) for i in range(4)]
    h = [m["hash"] for m in before]
    assert h[0] == h[1] == h[3] != h[2]


def test_wrong_counter_arrays_are_refused():
    with pytest.raises(ValueError):
        parse(Burst(), (np.zeros(3, np.uint64), np.zeros(3, np.uint64)))


# --- malformed ------------------------------------------------------------------------------------

@pytest.mark.parametrize("pkt,reason", [
    (E / IP(ihl=4) / UDP(), "bad_ihl"),
    (E / IP(version=5) / UDP(), "bad_version"),
    (E / IP(len=19) / UDP(), "bad_len"),
    (E / IP(len=100) / UDP(), "bad_len"),
    (E / IP(ihl=15) / UDP(), "truncated"),
    (E / IP() / TCP(dataofs=4), "bad_l4_len"),
    (E / IP() / TCP(dataofs=15), "bad_l4_len"),
    (E / IP(len=30) / TCP(), "bad_l4_len"),
    (E / IP() / UDP(len=7), "bad_l4_len"),
    (E / IP() / UDP(len=9), "bad_l4_len"),
    (E / IP(len=24) / UDP(), "bad_l4_len"),
    (E / IP() / SCTP() / Raw(b""), "ok"),
    (E / IP(len=28) / SCTP(), "bad_l4_len"),
    (E / IP(len=24) / ICMP(), "bad_l4_len"),
    (E / IPv6(version=4) / UDP(), "bad_version"),
    (E / IPv6(plen=100) / UDP(), "bad_len"),
    (E / IPv6(plen=0, nh=0) / Raw(b"\x11\x00\xc2\x04\x00\x01\x00\x00"), "bad_len"),   # jumbo
    (E / IPv6(plen=4) / IPv6ExtHdrHopByHop() / UDP(), "bad_ext_hdr"),
    (E / IPv6() / IPv6ExtHdrDestOpt(len=4) / UDP(), "bad_ext_hdr"),
    (E / IPv6() / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP(), "bad_ext_hdr"),
    (E / IPv6() / ICMPv6EchoRequest() / Raw(b""), "ok"),
    (E / IPv6(plen=4) / ICMPv6EchoRequest(), "bad_l4_len"),
    (Ether(type=0x88CC) / Raw(b"\x00" * 40), "bad_ethertype"),
    (Ether(type=0x8100) / Raw(b"\x00\x05"), "truncated"),
    (E_ARP / Raw(bytes(ARP())[:4] + b"\xc8\x04" + bytes(ARP())[6:]), "truncated"),   # hwlen 200
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed(pkt, reason):
    m = one(pkt)
    assert (m["reason"] or "ok") == reason


def test_runt_frames():
    for n in range(14):
        assert dropped(b"\x08" * n) == "truncated"


TRUNC_CASES = [
    E / IP(**V4) / TCP(options=[("MSS", 1460)]) / Raw(b"p" * 3),
    E / Dot1AD(vlan=2) / Dot1Q(vlan=3) / IPv6(**V6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(m=1) / UDP(),
    E / IP(**V4) / ICMP(type=3) / Raw(bytes(ORIG_TCP)),
    E / IPv6(**V6) / ICMPv6PacketTooBig() / Raw(bytes(ORIG6)),
    E / ARP(),
]


@pytest.mark.parametrize("pkt", TRUNC_CASES, ids=lambda p: p.summary())
def test_truncated_at_every_offset(pkt):
    frame = bytes(pkt)
    ms = metas_no_overread([frame[:k] for k in range(len(frame))])
    for k, m in enumerate(ms):
        assert m["verdict"] == "drop", k
        assert m["reason"] in ("truncated", "bad_len"), (k, m["reason"])
    assert one(frame)["verdict"] == "pending"


# --- fuzz -----------------------------------------------------------------------------------------

def _check_consistent(frames, ms):
    for f, m in zip(frames, ms):
        if m["verdict"] == "drop":
            assert m["reason"] is not None
            continue
        assert m["verdict"] == "pending" and m["reason"] is None
        assert m["l3_off"] + m["l3_len"] <= len(f)
        if m["flags"] & F_L4:
            assert m["l3_off"] < m["l4_off"] < m["l3_off"] + m["l3_len"]
        if m["flags"] & F_INNER_L4:
            assert m["inner_l3_off"] < m["inner_l4_off"] < len(f)


def test_random_frames_never_crash():
    rng = random.Random(1234)
    for _ in range(40):
        frames = []
        for _ in range(256):
            f = bytearray(rng.randbytes(rng.randrange(0, 200)))
            if len(f) >= 14 and rng.random() < 0.7:
                f[12:14] = struct.pack("!H", rng.choice([0x0800, 0x86DD, 0x8100, 0x88A8, 0x0806]))
                if len(f) > 14:
                    f[14] = (f[14] & 0x0F) | rng.choice([0x40, 0x60])
            frames.append(bytes(f))
        b, cnt, drops = parse_frames(frames)
        _check_consistent(frames, [b.meta(i) for i in range(len(b))])
        assert cnt["rx"] == 256
        assert sum(drops.values()) == int((b.verdicts == 3).sum())


def test_mutated_valid_frames_never_read_past_the_end():
    seeds = [bytes(p) for p in TRUNC_CASES] + [
        bytes(E / IPv6(**V6) / IPv6ExtHdrRouting(addresses=["fd00::9"]) / IPv6ExtHdrDestOpt() / UDP()),
        bytes(E / IP(flags="MF") / UDP() / Raw(b"r" * 30)),
        bytes(E / IP(**V4) / ICMP(type=11) / Raw(bytes(ORIG_UDP)[:28])),
        bytes(E / IPv6(**V6) / ICMPv6DestUnreach() / IPv6() / IPv6ExtHdrFragment() / TCP()),
    ]
    rng = random.Random(99)
    for _ in range(20):
        frames = []
        for _ in range(256):
            f = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                f[rng.randrange(len(f))] = rng.randrange(256)
            if rng.random() < 0.3:
                f = f[:rng.randrange(len(f) + 1)]
            frames.append(bytes(f))
        _check_consistent(frames, metas_no_overread(frames))


def test_sctp_chunk_types_reach_conntrack():
    """SCTP's state-changing chunks are summarised in tcp_flags (SCTP_F_* bits of pkt.pxd)."""
    from scapy.all import (SCTPChunkAbort, SCTPChunkCookieAck, SCTPChunkCookieEcho, SCTPChunkData,
                           SCTPChunkInit, SCTPChunkInitAck, SCTPChunkShutdown,
                           SCTPChunkShutdownAck, SCTPChunkShutdownComplete)
    from dataplane import conntrack as ct
    cases = [(SCTPChunkInit(), ct.SCTP_F_INIT), (SCTPChunkInitAck(), ct.SCTP_F_INIT_ACK),
             (SCTPChunkCookieEcho(), ct.SCTP_F_COOKIE_ECHO),
             (SCTPChunkCookieAck(), ct.SCTP_F_COOKIE_ACK),
             (SCTPChunkShutdown(), ct.SCTP_F_SHUTDOWN),
             (SCTPChunkShutdownAck(), ct.SCTP_F_SHUTDOWN_ACK),
             (SCTPChunkShutdownComplete(), ct.SCTP_F_SHUTDOWN_COMPLETE),
             (SCTPChunkAbort(), ct.SCTP_F_ABORT), (SCTPChunkData(data=b"x"), 0)]
    for chunk, bits in cases:
        assert ok(E / IP(**V4) / SCTP(sport=1, dport=2) / chunk)["tcp_flags"] == bits, chunk
    bundled = E / IP(**V4) / SCTP() / SCTPChunkCookieAck() / SCTPChunkData(data=b"abc")
    assert ok(bundled)["tcp_flags"] == ct.SCTP_F_COOKIE_ACK
    # A zero chunk length must end the walk, not loop on it.
    raw = bytearray(bytes(E / IP(**V4) / SCTP() / SCTPChunkInit()))
    raw[14 + 20 + 12 + 2:14 + 20 + 12 + 4] = b"\x00\x00"
    assert ok(Ether(bytes(raw)))["tcp_flags"] == ct.SCTP_F_INIT
