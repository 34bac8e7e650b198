"""NAT rewrites and reject frames against scapy: every rewritten frame must equal the frame scapy
builds from scratch for the new tuple (checksums computed by scapy), every built reply must parse
in scapy with valid checksums, and the metadata left behind must match a fresh parse."""
import ipaddress
import itertools
import struct

import pytest
from scapy.all import (
    ICMP, IP, SCTP, TCP, UDP, Dot1AD, Dot1Q, Ether, ICMPv6DestUnreach, ICMPv6EchoReply,
    ICMPv6EchoRequest, ICMPv6TimeExceeded, IPOption_Router_Alert, IPv6, IPv6ExtHdrFragment, Raw,
    SCTPChunkData, fragment, fragment6,
)
from scapy.layers.sctp import crc32c as scapy_crc32c

from dataplane import nat
from dataplane.burst import Burst
from dataplane.parse import parse

F_L4, F_FRAG, F_LATER, F_ICMP_ERR, F_INNER_L4 = 1, 2, 4, 8, 0x10
MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"
ADDR = {4: ("10.0.0.1", "10.96.0.10", "10.244.1.5", "192.168.9.9"),
        6: ("fd00::1", "fd00:96::10", "fd00:244:1::5", "2001:db8::99")}   # src, dst, new src, new dst
PAYLOAD = bytes(range(7, 7 + 37))
KINDS = ("tcp", "udp", "sctp", "echo", "echo_reply")


def load(*pkts):
    b = Burst(capacity=len(pkts))
    b.extend(bytes(p) for p in pkts)
    parse(b)
    assert all(b.meta(i)["verdict"] == "pending" for i in range(len(b)))
    return b


def ip_layer(fam, src, dst, **kw):
    return IP(src=src, dst=dst, id=77, **kw) if fam == 4 else IPv6(src=src, dst=dst, **kw)


def l4_layer(fam, kind, sport, dport, payload=PAYLOAD):
    if kind == "tcp":
        return TCP(sport=sport, dport=dport, seq=123456, ack=654321, flags="PA") / Raw(payload)
    if kind == "udp":
        return UDP(sport=sport, dport=dport) / Raw(payload)
    if kind == "sctp":
        return SCTP(sport=sport, dport=dport, tag=0xABCDEF01) / SCTPChunkData(data=payload)
    echo = {(4, "echo"): lambda: ICMP(type=8, id=sport, seq=5),
            (4, "echo_reply"): lambda: ICMP(type=0, id=sport, seq=5),
            (6, "echo"): lambda: ICMPv6EchoRequest(id=sport, seq=5),
            (6, "echo_reply"): lambda: ICMPv6EchoReply(id=sport, seq=5)}[(fam, kind)]()
    return echo / Raw(payload)


def frame(fam, kind, src, dst, sport, dport, l2=None, **ipkw):
    return (l2 or Ether(src=MAC_A, dst=MAC_B)) / ip_layer(fam, src, dst, **ipkw) / l4_layer(
        fam, kind, sport, dport)


def tuple_of(m):
    t = m["t"]
    return t["src"], t["dst"], t["sport"], t["dport"]


def norm(addr):
    return str(ipaddress.ip_address(addr))


# --- nat_rewrite --------------------------------------------------------------------------

def field_sets(kind):
    """Every combination of the fields to rewrite; echo has one identifier, set through sport."""
    names = ("src", "dst", "sport") if kind.startswith("echo") else ("src", "dst", "sport", "dport")
    return [c for n in range(len(names) + 1) for c in itertools.combinations(names, n)]


@pytest.mark.parametrize("fam", [4, 6])
@pytest.mark.parametrize("kind,fields", [(k, f) for k in KINDS for f in field_sets(k)],
                         ids=lambda v: v if isinstance(v, str) else "+".join(v) or "none")
def test_rewrite_matches_scapy(fam, kind, fields):
    src, dst, nsrc, ndst = ADDR[fam]
    echo = kind.startswith("echo")
    sport, dport = (4242, 4242) if echo else (40000, 80)
    new = dict(src=nsrc if "src" in fields else src, dst=ndst if "dst" in fields else dst,
               sport=5151 if "sport" in fields else sport,
               dport=8080 if "dport" in fields else dport)
    if echo:
        new["dport"] = new["sport"]
    b = load(frame(fam, kind, src, dst, sport, dport))
    assert nat.rewrite(b, 0, **new) == 0
    assert b.frame(0) == bytes(frame(fam, kind, **new))
    assert tuple_of(b.meta(0)) == (norm(new["src"]), norm(new["dst"]), new["sport"], new["dport"])


@pytest.mark.parametrize("fam", [4, 6])
def test_rewrite_vlan_and_options(fam):
    src, dst, nsrc, ndst = ADDR[fam]
    ipkw = dict(options=[IPOption_Router_Alert()]) if fam == 4 else {}
    for l2 in (Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=42),
               Ether(src=MAC_A, dst=MAC_B) / Dot1AD(vlan=7) / Dot1Q(vlan=42)):
        for kind in ("tcp", "udp"):
            b = load(frame(fam, kind, src, dst, 1000, 53, l2=l2.copy(), **ipkw))
            assert nat.rewrite(b, 0, src=nsrc, dst=ndst, sport=2000, dport=5353) == 0
            assert b.frame(0) == bytes(frame(fam, kind, nsrc, ndst, 2000, 5353, l2=l2.copy(), **ipkw))


def test_udp4_zero_checksum_stays_zero():
    src, dst, nsrc, ndst = ADDR[4]
    pkt = frame(4, "udp", src, dst, 1000, 53)
    pkt[UDP].chksum = 0
    b = load(pkt)
    assert nat.rewrite(b, 0, src=nsrc, dst=ndst, sport=1, dport=2) == 0
    want = frame(4, "udp", nsrc, ndst, 1, 2)
    want[UDP].chksum = 0
    assert b.frame(0) == bytes(want)


@pytest.mark.parametrize("fam", [4, 6])
def test_udp_update_to_zero_is_sent_as_ffff(fam):
    """RFC 768: a computed 0 is transmitted as all ones; pick the port that makes the sum 0."""
    src, dst, _, _ = ADDR[fam]
    zero_port = Ether(bytes(frame(fam, "udp", src, dst, 1000, 0)))[UDP].chksum
    b = load(frame(fam, "udp", src, dst, 1000, 53))
    assert nat.rewrite(b, 0, dport=zero_port) == 0
    assert b.frame(0) == bytes(frame(fam, "udp", src, dst, 1000, zero_port))
    assert Ether(b.frame(0))[UDP].chksum == 0xFFFF


def test_csum_partial_follows_addresses_only():
    """Offloaded: the field holds the pseudo-header sum; ports are the NIC's business."""
    src, dst, _, ndst = ADDR[4]

    def pseudo(s, d, n):
        acc = sum(struct.unpack("!4H", ipaddress.ip_address(s).packed + ipaddress.ip_address(d).packed))
        acc += 6 + n
        while acc >> 16:
            acc = (acc & 0xFFFF) + (acc >> 16)
        return acc

    pkt = frame(4, "tcp", src, dst, 40000, 80)
    n = len(pkt[TCP])
    pkt[TCP].chksum = pseudo(src, dst, n)
    b = load(pkt)
    assert nat.rewrite(b, 0, dst=ndst, dport=8080, csum_partial=True) == 0
    out = Ether(b.frame(0))
    assert out[TCP].chksum == pseudo(src, ndst, n) and out[TCP].dport == 8080
    rebuilt = out.copy()
    del rebuilt[IP].chksum
    assert out[IP].dst == ndst and Ether(bytes(rebuilt))[IP].chksum == out[IP].chksum


@pytest.mark.parametrize("fam", [4, 6])
@pytest.mark.parametrize("kind", ["tcp", "udp", "sctp"])
def test_fragments(fam, kind):
    """First fragment: the L4 delta is right for the whole datagram; later ones: addresses only."""
    src, dst, nsrc, ndst = ADDR[fam]

    def frags(s, d, sp, dp):
        big = l4_layer(fam, kind, sp, dp, payload=bytes(range(256)) * 4)
        if fam == 4:
            return [Ether(src=MAC_A, dst=MAC_B) / f
                    for f in fragment(IP(src=s, dst=d, id=9) / big, fragsize=400)]
        return [Ether(src=MAC_A, dst=MAC_B) / f for f in fragment6(
            IPv6(src=s, dst=d) / IPv6ExtHdrFragment(id=9) / big, 500)]

    before = frags(src, dst, 40000, 80)
    assert len(before) >= 3
    b = load(*before)
    assert b.meta(0)["flags"] & (F_FRAG | F_LATER) == F_FRAG
    assert all(b.meta(i)["flags"] & F_LATER for i in range(1, len(b)))
    if kind == "sctp":
        # CRC32c needs the whole packet: a port change on a first fragment is refused untouched.
        assert nat.rewrite(b, 0, dport=8080) == -1 and b.frame(0) == bytes(before[0])
        after = frags(nsrc, ndst, 40000, 80)
        ports = {}
    else:
        after = frags(nsrc, ndst, 40000, 8080)
        ports = dict(dport=8080)
    for i in range(len(b)):
        assert nat.rewrite(b, i, src=nsrc, dst=ndst, **(ports if i == 0 else {})) == 0
        assert b.frame(i) == bytes(after[i]), i


def test_refuses_non_ip():
    src, dst, _, _ = ADDR[4]
    b = load(frame(4, "tcp", src, dst, 1, 2),
             Ether(src=MAC_A, dst=MAC_B, type=0x0806) / bytes.fromhex("0001080006040001") / bytes(20))
    with pytest.raises(ValueError):
        nat.rewrite(b, 0, src="fd00::1")        # the hook refuses a family change
    before = b.frame(1)
    assert nat.rewrite(b, 1, dport=5) == -1      # ARP: no IP header to rewrite
    assert b.frame(1) == before


# --- nat_rewrite_icmp_error ---------------------------------------------------------------

def icmp_err(fam, inner, quote_len=None, outer_src=None, outer_dst=None, typ=None):
    """An ICMP error from outer_src (default: inner dst) to outer_dst (default: inner src) quoting
    the first quote_len bytes of the inner IP packet, checksums all computed by scapy."""
    raw = bytes(inner)[:quote_len]
    isrc, idst = inner.src, inner.dst
    if fam == 4:
        return Ether(src=MAC_A, dst=MAC_B) / IP(src=outer_src or idst, dst=outer_dst or isrc, id=3) / \
            ICMP(type=typ if typ is not None else 3, code=3) / Raw(raw)
    return Ether(src=MAC_A, dst=MAC_B) / IPv6(src=outer_src or idst, dst=outer_dst or isrc) / \
        ICMPv6DestUnreach(code=4) / Raw(raw)


ICMP_ERR_CASES = [
    # (family, inner kind, quote length): UDP quoted whole, TCP cut at 8 L4 bytes (checksum out
    # of the quote), TCP quoted whole, SCTP whole (CRC recomputed), echo request (id rewritten).
    (4, "udp", None), (4, "tcp", 28), (4, "tcp", None), (4, "sctp", None), (4, "echo", None),
    (6, "udp", None), (6, "tcp", 48), (6, "tcp", None), (6, "sctp", None), (6, "echo", None),
    (4, "udp", 24), (4, "udp", 26),      # UDP checksum just outside / just inside the quote
]


@pytest.mark.parametrize("fam,kind,qlen", ICMP_ERR_CASES)
def test_icmp_error_reverse_translation(fam, kind, qlen):
    """Client -> VIP:53 was DNATed to pod:5353 (and SNATed to the node); the pod's error quotes
    the translated packet and must reach the client as if the VIP had answered."""
    client, vip, pod, node = ADDR[fam][0], ADDR[fam][1], ADDR[fam][2], ADDR[fam][3]
    echo = kind == "echo"
    c_port, vip_port, node_port, pod_port = (77, 77, 99, 99) if echo else (40000, 53, 61000, 5353)
    seen = ip_layer(fam, node, pod) / l4_layer(fam, kind, node_port, pod_port)
    sent = ip_layer(fam, client, vip) / l4_layer(fam, kind, c_port, vip_port)
    b = load(icmp_err(fam, seen, qlen))
    m = b.meta(0)
    assert m["flags"] & F_ICMP_ERR and m["flags"] & F_INNER_L4
    assert nat.rewrite_icmp_error(b, 0, inner_src=client, inner_dst=vip, inner_sport=c_port,
                                  inner_dport=vip_port, outer_src=vip, outer_dst=client) == 0
    expect = icmp_err(fam, sent, qlen, outer_src=vip, outer_dst=client)
    assert b.frame(0) == bytes(expect)
    m = b.meta(0)
    assert (m["t"]["src"], m["t"]["dst"]) == (norm(vip), norm(client))
    assert tuple_of({"t": m["inner"]}) == (norm(client), norm(vip), c_port, vip_port)


def test_icmp_error_keeps_outer_when_null():
    client, vip, pod, node = ADDR[4]
    seen = IP(src=node, dst=pod, id=77) / UDP(sport=61000, dport=5353) / Raw(PAYLOAD)
    sent = IP(src=client, dst=pod, id=77) / UDP(sport=40000, dport=5353) / Raw(PAYLOAD)
    b = load(icmp_err(4, seen, outer_dst=node))
    assert nat.rewrite_icmp_error(b, 0, inner_src=client, inner_sport=40000) == 0
    assert b.frame(0) == bytes(icmp_err(4, sent, outer_src=pod, outer_dst=node))


def test_icmp_error_refuses_non_errors():
    src, dst, _, _ = ADDR[4]
    b = load(frame(4, "udp", src, dst, 1, 2))
    before = b.frame(0)
    assert nat.rewrite_icmp_error(b, 0, inner_sport=5, outer_src=dst) == -1
    assert b.frame(0) == before


# --- TCP RST ------------------------------------------------------------------------------

RST_CASES = [
    # flags, payload, seq, ack -> expected (flags, seq, ack)
    ("S", b"", 1000, 0, ("RA", 0, 1001)),
    ("S", b"hello", 1000, 0, ("RA", 0, 1006)),       # SYN with data: SEG.LEN = 1 + 5
    ("A", b"", 5000, 777, ("R", 777, 0)),
    ("PA", b"data!", 5000, 777, ("R", 777, 0)),
    ("F", b"xyz", 0xFFFFFFFE, 0, ("RA", 0, 2)),       # FIN counts 1; seq wraps mod 2**32
    ("FA", b"", 9, 10, ("R", 10, 0)),
]


def fresh_meta(b, i):
    """Metadata a parse of the frame as it is now gives (hash excluded: NAT keeps it)."""
    c = Burst(capacity=1)
    c.append(b.frame(i))
    parse(c)
    want, got = c.meta(0), b.meta(i)
    for d in (want, got):
        d.pop("hash"), d.pop("data_off")
    return want, got


@pytest.mark.parametrize("fam", [4, 6])
@pytest.mark.parametrize("flags,payload,seq,ack,expect", RST_CASES)
def test_tcp_rst(fam, flags, payload, seq, ack, expect):
    src, dst, _, _ = ADDR[fam]
    ipkw = dict(options=[IPOption_Router_Alert()], ttl=5) if fam == 4 else dict(hlim=5)
    pkt = Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=3) / ip_layer(fam, src, dst, **ipkw) / TCP(
        sport=40000, dport=80, flags=flags, seq=seq, ack=ack,
        options=[("MSS", 1460)]) / Raw(payload)
    b = load(pkt)
    assert nat.tcp_rst(b, 0) == 0
    out = Ether(b.frame(0))
    rflags, rseq, rack = expect
    ipl = out[IP] if fam == 4 else out[IPv6]
    assert (out.src, out.dst, out[Dot1Q].vlan) == (MAC_B, MAC_A, 3)
    assert (ipl.src, ipl.dst) == (norm(dst), norm(src))
    assert (ipl.ttl if fam == 4 else ipl.hlim) == 64
    t = out[TCP]
    assert (t.sport, t.dport, str(t.flags), t.seq, t.ack) == (80, 40000, rflags, rseq, rack)
    assert (t.dataofs, t.window, t.options, bytes(t.payload)) == (5, 0, [], b"")
    rebuilt = out.copy()
    del rebuilt[TCP].chksum
    if fam == 4:
        del rebuilt[IP].chksum, rebuilt[IP].len
        assert out[IP].ihl == 5 and out[IP].flags == "DF"
    else:
        del rebuilt[IPv6].plen
    assert bytes(Ether(bytes(rebuilt))) == b.frame(0)
    assert len(b.frame(0)) == 18 + (40 if fam == 4 else 60)
    want, got = fresh_meta(b, 0)
    assert got == want


def test_tcp_rst_refusals():
    src, dst, _, _ = ADDR[4]
    pkts = [Ether() / IP(src=src, dst=dst) / TCP(flags="R"),
            Ether() / IP(src=src, dst=dst) / UDP(),
            fragment(IP(src=src, dst=dst) / TCP(flags="S") / Raw(bytes(600)), 200)[0]]
    pkts[2] = Ether() / pkts[2]
    b = load(*pkts)
    for i in range(len(b)):
        before = b.frame(i)
        assert nat.tcp_rst(b, i) == -1 and b.frame(i) == before


# --- ICMP errors built --------------------------------------------------------------------

def expected_error(fam, orig, typ, code, src=None):
    """The error scapy builds for orig (an Ether frame), quoting its IP packet within the limits."""
    ipl = orig[IP] if fam == 4 else orig[IPv6]
    quote = bytes(ipl)[:(576 - 28) if fam == 4 else (1280 - 48)]
    l2 = Ether(src=orig.dst, dst=orig.src)
    if orig.haslayer(Dot1Q):
        l2 = l2 / Dot1Q(vlan=orig[Dot1Q].vlan)
    if fam == 4:
        return l2 / IP(src=src or ipl.dst, dst=ipl.src, ttl=64, tos=0xC0, id=0, flags=0) / \
            ICMP(type=typ, code=code) / Raw(quote)
    err = ICMPv6DestUnreach(code=code) if typ == 1 else ICMPv6TimeExceeded(code=code)
    return l2 / IPv6(src=src or ipl.dst, dst=ipl.src, hlim=64) / err / Raw(quote)


@pytest.mark.parametrize("fam", [4, 6])
@pytest.mark.parametrize("size", [0, 100, 540, 549, 1500 - 28 - 8])
@pytest.mark.parametrize("vlan", [False, True])
def test_icmp_unreach(fam, size, vlan):
    src, dst, _, _ = ADDR[fam]
    l2 = Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=9) if vlan else Ether(src=MAC_A, dst=MAC_B)
    orig = l2 / ip_layer(fam, src, dst) / UDP(sport=40000, dport=53) / Raw((bytes(range(256)) * 6)[:size])
    orig = Ether(bytes(orig))
    b = load(orig)
    assert nat.icmp_unreach(b, 0) == 0
    typ, code = (3, 3) if fam == 4 else (1, 4)
    assert b.frame(0) == bytes(expected_error(fam, orig, typ, code))
    m = b.meta(0)
    assert m["flags"] == F_L4 | F_ICMP_ERR | F_INNER_L4
    assert tuple_of({"t": m["inner"]}) == (norm(src), norm(dst), 40000, 53)
    want, got = fresh_meta(b, 0)
    assert got == want


@pytest.mark.parametrize("fam", [4, 6])
def test_icmp_time_exceeded(fam):
    src, dst, router, _ = ADDR[fam]
    orig = Ether(bytes(frame(fam, "tcp", src, dst, 40000, 80)))
    b = load(orig)
    assert nat.icmp_time_exceeded(b, 0, router) == 0
    typ = 11 if fam == 4 else 3
    assert b.frame(0) == bytes(expected_error(fam, orig, typ, 0, src=router))
    want, got = fresh_meta(b, 0)
    assert got == want


def test_ethernet_padding_not_quoted():
    src, dst, _, _ = ADDR[4]
    orig = Ether(src=MAC_A, dst=MAC_B) / IP(src=src, dst=dst) / UDP(sport=1, dport=2)
    b = load(bytes(orig) + b"\xee" * 18)          # padded to the 60-byte minimum
    assert nat.icmp_unreach(b, 0) == 0
    assert b.frame(0) == bytes(expected_error(4, orig, 3, 3))


def test_no_icmp_error_about_errors_fragments_or_multicast():
    src, dst, _, _ = ADDR[4]
    s6, d6, _, _ = ADDR[6]
    E = Ether(src=MAC_A, dst=MAC_B)
    inner = IP(src=dst, dst=src) / UDP(sport=53, dport=40000)
    later4 = fragment(IP(src=src, dst=dst) / UDP() / Raw(bytes(600)), 200)[1]
    later6 = fragment6(IPv6(src=s6, dst=d6) / IPv6ExtHdrFragment() / UDP() / Raw(bytes(1200)), 500)[1]
    refused = [
        E / IP(src=src, dst=dst) / ICMP(type=3, code=3) / inner,          # an ICMP error
        E / IP(src=src, dst=dst) / ICMP(type=11) / inner,
        E / IP(src=src, dst=dst) / ICMP(type=42),                          # unknown: as an error
        E / later4,
        E / IP(src=src, dst="224.0.0.5") / UDP(),
        E / IP(src=src, dst="255.255.255.255") / UDP(),
        E / IP(src="0.0.0.0", dst=dst) / UDP(),
        E / IP(src="127.0.0.1", dst=dst) / UDP(),
        Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / IP(src=src, dst=dst) / UDP(),
        Ether(src=MAC_A, dst="01:00:5e:00:00:05") / IP(src=src, dst=dst) / UDP(),
        E / IPv6(src=s6, dst=d6) / ICMPv6DestUnreach() / IPv6(src=d6, dst=s6) / UDP(),
        E / IPv6(src=s6, dst=d6) / ICMPv6TimeExceeded() / IPv6(src=d6, dst=s6) / UDP(),
        E / later6,
        E / IPv6(src=s6, dst="ff02::1") / UDP(),
        E / IPv6(src="::", dst=d6) / UDP(),
    ]
    b = load(*refused)
    for i in range(len(b)):
        before = (b.frame(i), b.meta(i))
        assert nat.icmp_unreach(b, i) == -1, i
        assert nat.icmp_time_exceeded(b, i, dst if i < 10 else d6) == -1, i
        assert (b.frame(i), b.meta(i)) == before
    allowed = load(E / IP(src=src, dst=dst) / ICMP(type=8) / Raw(b"ping"),
                   E / IPv6(src=s6, dst=d6) / ICMPv6EchoRequest())
    assert nat.icmp_unreach(allowed, 0) == 0 and nat.icmp_unreach(allowed, 1) == 0


@pytest.mark.parametrize("fam", [4, 6])
def test_slot_bounds_max_frames(fam):
    """Max-size frames in neighbouring slots: building an error writes only inside its own slot,
    in the headroom in front of the quote, or moves the quote back when the headroom is gone."""
    src, dst, _, _ = ADDR[fam]
    b = Burst(capacity=3)
    size = b.max_frame - 14 - (20 if fam == 4 else 40) - 8
    orig = Ether(bytes(Ether(src=MAC_A, dst=MAC_B) / ip_layer(fam, src, dst) /
                       UDP(sport=40000, dport=53) / Raw(b"\xab" * size)))
    assert len(orig) == b.max_frame
    b.extend([bytes(orig)] * 3)
    parse(b)
    nat._move(b, 2, 10)                          # headroom used up by an earlier stage
    slots = [nat._slot(b, i) for i in range(3)]
    assert nat.icmp_unreach(b, 1) == 0 and nat.icmp_unreach(b, 2) == 0
    expect = bytes(expected_error(fam, orig, 3 if fam == 4 else 1, 3 if fam == 4 else 4))
    assert b.frame(1) == expect and b.frame(2) == expect
    assert nat._slot(b, 0) == slots[0]
    m1, m2 = b.meta(1), b.meta(2)
    grow = 28 if fam == 4 else 48
    assert m1["data_off"] == 128 - grow and m2["data_off"] == 0
    # Slot 1: everything past the new frame is the old frame's tail, untouched.
    assert nat._slot(b, 1)[m1["data_off"] + m1["len"]:] == slots[1][m1["data_off"] + m1["len"]:]
    assert nat._slot(b, 1)[:m1["data_off"]] == slots[1][:m1["data_off"]]


# --- SCTP CRC32c --------------------------------------------------------------------------

def test_crc32c_matches_scapy():
    for n in (0, 1, 7, 8, 9, 63, 1500):
        data = bytes((i * 37 + n) & 0xFF for i in range(n))
        assert struct.pack("<I", nat.sctp_crc32c(data)) == struct.pack(">I", scapy_crc32c(data))


def test_never_reads_past_the_frame():
    """Each operation on the same frames with 0x00 and with 0xff behind them in the slot: a read
    past the frame end would show up as a difference."""
    s4, d4, n4, _ = ADDR[4]
    s6, d6, n6, _ = ADDR[6]
    cases = [
        (frame(4, "tcp", s4, d4, 1, 2), lambda b, i: nat.rewrite(b, i, dst=n4, dport=9)),
        (frame(6, "udp", s6, d6, 1, 2), lambda b, i: nat.rewrite(b, i, src=n6, sport=9)),
        (frame(4, "sctp", s4, d4, 1, 2), lambda b, i: nat.rewrite(b, i, dport=9)),
        (frame(6, "echo", s6, d6, 7, 7), lambda b, i: nat.rewrite(b, i, sport=9, dport=9)),
        (icmp_err(4, IP(src=s4, dst=d4) / TCP(sport=1, dport=2), 28),
         lambda b, i: nat.rewrite_icmp_error(b, i, inner_dst=n4, inner_dport=9, outer_src=n4)),
        (icmp_err(6, IPv6(src=s6, dst=d6) / SCTP(sport=1, dport=2)),
         lambda b, i: nat.rewrite_icmp_error(b, i, inner_dst=n6, inner_dport=9, outer_src=n6)),
        (frame(4, "tcp", s4, d4, 1, 2), nat.tcp_rst),
        (frame(6, "tcp", s6, d6, 1, 2), nat.tcp_rst),
        (frame(4, "udp", s4, d4, 1, 2), nat.icmp_unreach),
        (frame(6, "udp", s6, d6, 1, 2), nat.icmp_unreach),
    ]
    results = []
    for fill in (0x00, 0xFF):
        b = Burst(capacity=len(cases))
        b.extend([bytes([fill]) * b.max_frame] * len(cases))
        b.clear()
        b.extend(bytes(pkt) for pkt, _ in cases)
        parse(b)
        assert [op(b, i) for i, (_, op) in enumerate(cases)] == [0] * len(cases)
        results.append([(b.frame(i), b.meta(i)) for i in range(len(b))])
    assert results[0] == results[1]
