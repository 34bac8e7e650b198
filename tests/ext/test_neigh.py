"""Neighbour discovery against scapy: ARP replies and NAs built in place must be the frames scapy
builds (or dissects with valid checksums), learning must follow Linux / RFC 4861 7.2.5, and the
table must honour its timeouts and capacity. Times are explicit ns values, never the clock."""
import ipaddress

import pytest
from scapy.all import (
    ARP, Dot1Q, Ether, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr, IP, IPv6, UDP, Raw, in6_getnsma, in6_getnsmac, inet_pton, socket,
)

from dataplane.burst import COUNTERS, DROP_REASONS, Burst
from dataplane.neigh import Neighbours
from dataplane.parse import parse

S = 1_000_000_000
MAC0, MAC1 = "02:00:00:00:00:01", "02:00:00:00:00:02"        # port 0 (pods), port 1 (proxy)
PEER, PEER2 = "0a:00:00:00:00:0a", "0a:00:00:00:00:0b"
OWN4, PEER4, OTHER4 = "10.244.1.1", "10.244.1.5", "10.244.1.9"
OWN6, PEER6, OTHER6 = "fd00:244:1::1", "fd00:244:1::5", "fd00:244:1::9"
LL0 = "fe80::ff:fe00:1"                                         # EUI-64 of MAC0
BCAST = "ff:ff:ff:ff:ff:ff"


def mac(s):
    return bytes.fromhex(s.replace(":", ""))


def table(**kw):
    nb = Neighbours([mac(MAC0), mac(MAC1)], **kw)
    nb.add_owned(0, OWN4)
    nb.add_owned(0, OWN6)
    nb.set_proxy(1, True)
    return nb


def run(nb, *pkts, port=0, now=0, slot_size=None):
    b = Burst(capacity=len(pkts)) if slot_size is None else Burst(len(pkts), slot_size)
    b.extend((bytes(p) for p in pkts), port_in=port)
    parse(b)
    assert all(b.meta(i)["verdict"] == "pending" for i in range(len(b)))
    cnt, drops = nb.run(b, now)
    return (b, {k: v for k, v in zip(COUNTERS, cnt.tolist()) if v},
            {k: v for k, v in zip(DROP_REASONS, drops.tolist()) if v})


def state(nb, port, ip, now=0):
    ip = ipaddress.ip_address(ip)
    for e in nb.entries(now):
        if e["port"] == port and e["ip"] == ip:
            return e["state"], e["mac"]
    return None


def arp_req(tip, sip=PEER4, src=PEER, dst=BCAST):
    return Ether(src=src, dst=dst) / ARP(op=1, hwsrc=src, psrc=sip, hwdst="00:00:00:00:00:00",
                                         pdst=tip)


def arp_rep(sip, hwsrc, dst=MAC0, tip=OWN4):
    return Ether(src=hwsrc, dst=dst) / ARP(op=2, hwsrc=hwsrc, psrc=sip, hwdst=dst, pdst=tip)


def ns(target, src=PEER6, hlim=255, lla=PEER, dst=None):
    dst = dst or socket.inet_ntop(socket.AF_INET6, in6_getnsma(inet_pton(socket.AF_INET6, target)))
    p = (Ether(src=PEER, dst=in6_getnsmac(inet_pton(socket.AF_INET6, dst)))
         / IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NS(tgt=target))
    return p / ICMPv6NDOptSrcLLAddr(lladdr=lla) if lla else p


def na(target, lla, s=1, o=1, dst=OWN6):
    return (Ether(src=lla, dst=MAC0) / IPv6(src=target, dst=dst, hlim=255)
            / ICMPv6ND_NA(tgt=target, R=0, S=s, O=o) / ICMPv6NDOptDstLLAddr(lladdr=lla))


def icmp6_ok(pkt):
    """The checksum scapy computes for the dissected packet equals the one on the wire."""
    icmp = pkt[IPv6].payload
    wire = icmp.cksum
    icmp.cksum = None
    return IPv6(bytes(pkt[IPv6])).payload.cksum == wire


# --- ARP --------------------------------------------------------------------------------------

@pytest.mark.parametrize("l2", ["plain", "vlan+padding"])
def test_arp_request_for_owned_address_is_answered_in_place(l2):
    nb = table()
    req = arp_req(OWN4)
    if l2 != "plain":
        req = Ether(src=PEER, dst=BCAST) / Dot1Q(vlan=7) / req[ARP] / (b"\xaa" * 18)
    b, cnt, drops = run(nb, req)
    m = b.meta(0)
    assert (m["verdict"], m["port_out"]) == ("forward", 0)
    want = Ether(src=MAC0, dst=PEER) / ARP(op=2, hwsrc=MAC0, psrc=OWN4, hwdst=PEER, pdst=PEER4)
    if l2 != "plain":
        want = Ether(src=MAC0, dst=PEER) / Dot1Q(vlan=7) / want[ARP]
    assert b.frame(0) == bytes(want)
    assert cnt == {"neigh_reply": 1, "neigh_learn": 1} and not drops
    assert state(nb, 0, PEER4) == ("STALE", mac(PEER))              # neigh_event_ns
    assert nb.lookup(0, PEER4, 0) == mac(PEER)


def test_arp_request_for_other_address_stays_pending():
    nb = table()
    req = arp_req(OTHER4)
    b, cnt, _ = run(nb, req, arp_req(OWN4, src=PEER2, sip=OTHER4), port=0)
    assert b.meta(0)["verdict"] == "pending" and b.frame(0) == bytes(req)
    assert state(nb, 0, PEER4) is None                  # not addressed to us: nothing learned
    # The owned address is per port: port 1 does not own OWN4, but it is a proxy port.
    b, _, _ = run(Neighbours([mac(MAC0), mac(MAC1)]), arp_req(OWN4))
    assert b.meta(0)["verdict"] == "pending"


def test_proxy_port_answers_anything_but_probes_and_announcements():
    nb = table()
    b, cnt, _ = run(nb, arp_req("192.168.0.77", sip="192.168.0.10"),
                    arp_req("192.168.0.78", sip="0.0.0.0"),           # RFC 5227 probe
                    arp_req("192.168.0.10", sip="192.168.0.10"),      # announcement / GARP
                    port=1)
    assert [b.meta(i)["verdict"] for i in range(3)] == ["forward", "pending", "local"]
    rep = Ether(b.frame(0))
    assert (rep.dst, rep.src, rep[ARP].op, rep[ARP].hwsrc, rep[ARP].psrc, rep[ARP].hwdst,
            rep[ARP].pdst) == (PEER, MAC1, 2, MAC1, "192.168.0.77", PEER, "192.168.0.10")
    assert b.meta(0)["port_out"] == 1 and cnt["neigh_reply"] == 1
    assert state(nb, 1, "192.168.0.10") == ("STALE", mac(PEER))


def test_probe_for_owned_address_is_defended_without_learning():
    nb = table()
    b, _, _ = run(nb, arp_req(OWN4, sip="0.0.0.0"))
    rep = Ether(b.frame(0))
    assert b.meta(0)["verdict"] == "forward"
    assert (rep.dst, rep[ARP].op, rep[ARP].psrc, rep[ARP].pdst, rep[ARP].hwdst) == (
        PEER, 2, OWN4, "0.0.0.0", PEER)
    assert nb.entries(0) == []


def test_gratuitous_arp_updates_existing_entry_only():
    nb = table()
    run(nb, arp_req(OWN4), now=0)                                   # learn PEER4 -> PEER
    garp = arp_req(PEER4, sip=PEER4, src=PEER2)
    unknown = arp_req(OTHER4, sip=OTHER4, src=PEER2)
    b, cnt, _ = run(nb, garp, unknown, now=S // 2)                  # within the locktime too
    assert [b.meta(i)["verdict"] for i in range(2)] == ["local", "local"]
    assert state(nb, 0, PEER4, S // 2) == ("STALE", mac(PEER2))
    assert state(nb, 0, OTHER4, S // 2) is None                     # arp_accept=0
    assert cnt["neigh_learn"] == 1 and cnt["local"] == 2


def test_arp_reply_resolves_solicited_entry_and_is_consumed():
    nb = table()
    b, _, _ = run(nb, Ether(src=PEER, dst=MAC0) / IP(src=OWN4, dst=OTHER4) / UDP())
    assert nb.solicit_packet(b, 0, 0, OTHER4, 0) == 0
    assert state(nb, 0, OTHER4) == ("INCOMPLETE", bytes(6))
    assert nb.lookup(0, OTHER4, 0) is None
    b, cnt, _ = run(nb, arp_rep(OTHER4, PEER2), now=S // 10)
    assert b.meta(0)["verdict"] == "local" and cnt["neigh_learn"] == 1
    assert state(nb, 0, OTHER4, S // 10) == ("REACHABLE", mac(PEER2))
    # Within the 1 s locktime a second answer with another MAC loses (a proxy answering late).
    run(nb, arp_rep(OTHER4, PEER), now=S // 5)
    assert nb.lookup(0, OTHER4, S // 5) == mac(PEER2)
    # After it, a reply overrides; a broadcast reply only makes the entry STALE.
    run(nb, arp_rep(OTHER4, PEER, dst=BCAST), now=2 * S)
    assert state(nb, 0, OTHER4, 2 * S) == ("STALE", mac(PEER))


def test_unsupported_arp_is_dropped():
    nb = table()
    bad_hlen = bytes(arp_req(OWN4))[:18] + b"\x08" + bytes(arp_req(OWN4))[19:] + bytes(4)
    b, _, drops = run(nb, Ether(src=PEER, dst=BCAST) / ARP(op=3, psrc=PEER4, pdst=OWN4),
                      arp_req("224.0.0.1"), bad_hlen)
    assert [b.meta(i)["reason"] for i in range(3)] == ["not_ip", "not_ip", "bad_len"]


def test_static_entries_are_not_learned_over_and_survive_flush():
    nb = table()
    nb.add_static(0, PEER4, mac(PEER2))
    run(nb, arp_req(OWN4), arp_req(PEER4, sip=PEER4), now=10 * S)
    assert state(nb, 0, PEER4, 1000 * S) == ("PERMANENT", mac(PEER2))
    run(nb, arp_req(OWN4, sip=OTHER4))
    assert nb.flush() == 1 and nb.lookup(0, PEER4, 0) == mac(PEER2)
    assert nb.delete(0, PEER4) and nb.lookup(0, PEER4, 0) is None


# --- IPv6 ND ----------------------------------------------------------------------------------

def test_ns_for_owned_address_becomes_na():
    nb = table()
    b, cnt, drops = run(nb, ns(OWN6))
    m = b.meta(0)
    assert (m["verdict"], m["port_out"], m["ttl"], m["icmp_type"]) == ("forward", 0, 255, 136)
    p = Ether(b.frame(0))
    assert (p.dst, p.src, p[IPv6].src, p[IPv6].dst, p[IPv6].hlim) == (PEER, MAC0, OWN6, PEER6, 255)
    a = p[ICMPv6ND_NA]
    assert (a.R, a.S, a.O, a.tgt, a[ICMPv6NDOptDstLLAddr].lladdr) == (1, 1, 1, OWN6, MAC0)
    assert icmp6_ok(p) and len(b.frame(0)) == 14 + 72
    assert m["t"]["src"] == OWN6 and m["t"]["dst"] == PEER6
    assert cnt["neigh_reply"] == 1 and cnt["neigh_learn"] == 1 and not drops
    assert state(nb, 0, PEER6) == ("STALE", mac(PEER))
    # Without a source link-layer option the NA goes back to the frame's source; nothing learned.
    nb = table()
    b, _, _ = run(nb, ns(OWN6, lla=None))
    assert Ether(b.frame(0)).dst == PEER and nb.entries(0) == []


def test_ns_for_link_local_and_small_slot():
    nb = table()
    # A slot too short behind the frame for the longer NA: the frame moves into the headroom.
    req = ns(LL0, src="fe80::5", lla=None)
    b, _, _ = run(nb, req, slot_size=128 + len(bytes(req)))
    p = Ether(b.frame(0))
    assert b.meta(0)["verdict"] == "forward" and b.meta(0)["data_off"] < 128
    assert p[IPv6].src == LL0 and p[ICMPv6ND_NA].tgt == LL0 and icmp6_ok(p)


def test_dad_ns_is_answered_to_all_nodes():
    nb = table()
    b, _, _ = run(nb, ns(OWN6, src="::", lla=None))
    p = Ether(b.frame(0))
    assert (p.dst, p[IPv6].dst, p[IPv6].src) == ("33:33:00:00:00:01", "ff02::1", OWN6)
    assert (p[ICMPv6ND_NA].S, p[ICMPv6ND_NA].O) == (0, 1) and icmp6_ok(p)
    assert nb.entries(0) == []


def test_proxy_ns_answered_without_override_but_not_dad():
    nb = table()
    b, _, _ = run(nb, ns("2001:db8::1", src="2001:db8::2"), ns("2001:db8::3", src="::", lla=None),
                  port=1)
    assert [b.meta(i)["verdict"] for i in range(2)] == ["forward", "pending"]
    p = Ether(b.frame(0))
    assert (p[ICMPv6ND_NA].S, p[ICMPv6ND_NA].O, p[ICMPv6ND_NA].tgt) == (1, 0, "2001:db8::1")
    assert p[IPv6].src == "fe80::ff:fe00:2" and p.src == MAC1 and icmp6_ok(p)


def test_ns_for_other_address_stays_pending():
    nb = table()
    req = ns(OTHER6)
    b, _, _ = run(nb, req)
    assert b.meta(0)["verdict"] == "pending" and b.frame(0) == bytes(req) and nb.entries(0) == []


def _corrupt_csum(p):
    raw = bytearray(bytes(p))
    raw[14 + 40 + 2] ^= 0xff
    return bytes(raw)


@pytest.mark.parametrize("pkt,reason", [
    (ns(OWN6, hlim=64), "bad_l4_len"),                              # forwarded from off-link
    (_corrupt_csum(ns(OWN6)), "bad_csum"),
    (ns(OWN6, src="::"), "bad_l4_len"),                             # DAD with an SLLA option
    (ns(OWN6, src="::", lla=None, dst="ff02::1"), "bad_l4_len"),    # DAD not to solicited-node
    (ns("ff02::1"), "bad_l4_len"),                                  # multicast target
    (ns(OWN6, lla=None) / Raw(b"\x01\x00" + bytes(6)), "bad_l4_len"),    # option length 0
    (Ether(src=PEER, dst=MAC0) / IPv6(src=PEER6, dst=OWN6, hlim=255)
     / ICMPv6ND_NS(tgt=OWN6, code=1), "bad_l4_len"),
    (na(PEER6, PEER, dst="ff02::1"), "bad_l4_len"),                 # multicast NA with S set
])
def test_invalid_nd_is_dropped(pkt, reason):
    nb = table()
    b, _, drops = run(nb, pkt)
    assert b.meta(0)["reason"] == reason and drops == {reason: 1}


def test_na_updates_per_rfc4861():
    nb = table()
    b, _, _ = run(nb, Ether() / IPv6(src=OWN6, dst=PEER6) / ICMPv6EchoRequest())
    assert nb.solicit_packet(b, 0, 0, PEER6, 0) == 0
    b, cnt, _ = run(nb, na(PEER6, PEER, s=1), now=1)
    assert b.meta(0)["verdict"] == "local" and cnt["neigh_learn"] == 1
    assert state(nb, 0, PEER6, 1) == ("REACHABLE", mac(PEER))
    run(nb, na(PEER6, PEER2, s=0, o=0), now=2)                      # O=0, other MAC: doubt it
    assert state(nb, 0, PEER6, 2) == ("STALE", mac(PEER))
    run(nb, na(PEER6, PEER2, s=1, o=1), now=3)
    assert state(nb, 0, PEER6, 3) == ("REACHABLE", mac(PEER2))
    b, cnt, _ = run(nb, na(OTHER6, PEER), now=4)                    # unknown: not learned
    assert b.meta(0)["verdict"] == "local" and "neigh_learn" not in cnt
    assert state(nb, 0, OTHER6, 4) is None


# --- solicit ----------------------------------------------------------------------------------

def _ip_packet(fam, l2=None):
    l2 = l2 or Ether(src=PEER, dst=MAC0)
    if fam == 4:
        return l2 / IP(src="10.0.0.1", dst="192.168.1.1") / UDP()
    return l2 / IPv6(src="fd00::7", dst="2001:db8::1") / UDP()


@pytest.mark.parametrize("owned", [True, False])
def test_solicit_builds_arp_request(owned):
    nb = table() if owned else Neighbours([mac(MAC0)])
    b, _, _ = run(nb, _ip_packet(4, Ether(src=PEER, dst=MAC0) / Dot1Q(vlan=5)))
    assert nb.solicit_packet(b, 0, 0, PEER4, 0) == 0
    p = Ether(b.frame(0))
    assert (p.dst, p.src, p[Dot1Q].vlan, p[ARP].op, p[ARP].hwsrc, p[ARP].psrc, p[ARP].hwdst,
            p[ARP].pdst) == (BCAST, MAC0, 5, 1, MAC0, OWN4 if owned else "0.0.0.0",
                             "00:00:00:00:00:00", PEER4)
    m = b.meta(0)
    assert (m["l3"], m["len"], m["t"]["family"], m["n_vlans"]) == (3, 18 + 28, 0, 1)


@pytest.mark.parametrize("owned", [True, False])
def test_solicit_builds_ns(owned):
    nb = table() if owned else Neighbours([mac(MAC0)])
    b, _, _ = run(nb, _ip_packet(6))
    assert nb.solicit_packet(b, 0, 0, "2001:db8::abcd:1234", 0) == 0
    p = Ether(b.frame(0))
    assert (p.dst, p.src, p[IPv6].dst, p[IPv6].src, p[IPv6].hlim) == (
        "33:33:ff:cd:12:34", MAC0, "ff02::1:ffcd:1234", OWN6 if owned else LL0, 255)
    assert p[ICMPv6ND_NS].tgt == "2001:db8::abcd:1234"
    assert p[ICMPv6NDOptSrcLLAddr].lladdr == MAC0 and icmp6_ok(p)
    # The frame parses as the NS it is, and this stage leaves our own multicast NS alone.
    b2, _, _ = run(nb, p)
    assert b2.meta(0)["verdict"] == "pending" and b2.meta(0)["icmp_type"] == 135


def test_solicit_rate_limit_and_failed():
    nb = table()
    b, _, _ = run(nb, *[_ip_packet(4)] * 6)
    times = [0, S // 2, S, 2 * S, 3 * S, 4 * S]
    assert [nb.solicit_packet(b, i, 0, PEER4, t) for i, t in enumerate(times)] == [
        0, -1, 0, 0, 0, 0]
    assert nb.stats()["rate_limited"] == 1
    assert b.meta(1)["verdict"] == "pending" and b.meta(1)["l3"] == 1   # refused: untouched
    # Three unanswered: FAILED once the third retransmission time passes; a new round restarts.
    nb = table()
    for t in (0, S, 2 * S):
        assert nb.solicit_packet(b, 0, 0, PEER4, t) == 0
    assert state(nb, 0, PEER4, 2 * S + 1)[0] == "INCOMPLETE"
    assert state(nb, 0, PEER4, 3 * S)[0] == "FAILED"
    assert nb.lookup(0, PEER4, 3 * S) is None
    assert nb.solicit_packet(b, 0, 0, PEER4, 3 * S) == 0
    assert state(nb, 0, PEER4, 3 * S)[0] == "INCOMPLETE"
    # Static neighbours are never solicited.
    nb.add_static(0, OTHER4, mac(PEER))
    assert nb.solicit_packet(b, 1, 0, OTHER4, 0) == -1


# --- timeouts and capacity --------------------------------------------------------------------

def test_resolve_timeouts():
    nb = table(reachable_s=30, stale_s=60)
    b, _, _ = run(nb, _ip_packet(4))
    nb.solicit_packet(b, 0, 0, PEER4, 0)
    run(nb, arp_rep(PEER4, PEER), now=0)
    assert state(nb, 0, PEER4, 30 * S - 1) == ("REACHABLE", mac(PEER))
    assert state(nb, 0, PEER4, 30 * S) == ("STALE", mac(PEER))
    assert nb.lookup(0, PEER4, 89 * S) == mac(PEER)                 # stale is still usable
    assert nb.lookup(0, PEER4, 90 * S) is None                      # expired: reclaimed
    assert nb.stats()["expired"] == 1 and nb.entries(0) == []
    # A learned (STALE) entry expires stale_s after it was learned; gc reclaims it.
    run(nb, arp_req(OWN4, sip=OTHER4), now=100 * S)
    assert nb.gc(159 * S) == 0 and nb.gc(160 * S) == 1


def test_table_full():
    nb = table(capacity=2)
    reqs = [arp_req(OWN4, sip=f"10.244.1.{k}", src=f"0a:00:00:00:01:{k:02x}") for k in (5, 6, 7)]
    b, cnt, _ = run(nb, *reqs, now=0)
    assert [b.meta(i)["verdict"] for i in range(3)] == ["forward"] * 3   # still answered
    assert cnt["neigh_learn"] == 2 and nb.stats()["full"] == 1 and nb.stats()["entries"] == 2
    assert state(nb, 0, "10.244.1.7") is None
    b, _, _ = run(nb, _ip_packet(4))
    assert nb.solicit_packet(b, 0, 0, OTHER4, 0) == -1                   # no entry to rate-limit
    # Once entries expire, a full table collects them (forced gc) and learns again.
    run(nb, reqs[2], now=61 * S)
    assert state(nb, 0, "10.244.1.7", 61 * S)[0] == "STALE" and nb.stats()["expired"] == 2


def test_owned_addresses_and_sources():
    nb = Neighbours([mac(MAC0)])
    nb.add_owned(0, "10.0.0.1")
    nb.add_owned(0, "10.0.0.2")
    assert nb.remove_owned(0, "10.0.0.1") and not nb.remove_owned(0, "10.0.0.1")
    b, _, _ = run(nb, _ip_packet(4), arp_req("10.0.0.1"))
    assert b.meta(1)["verdict"] == "pending"
    nb.solicit_packet(b, 0, 0, PEER4, 0)
    assert Ether(b.frame(0))[ARP].psrc == "10.0.0.2"
    with pytest.raises(ValueError):
        nb.add_owned(1, "10.0.0.3")


def test_results_do_not_depend_on_bytes_behind_the_frame():
    """Replies and verdicts are the same with zeros or ones behind every frame in its slot."""
    frames = [bytes(arp_req(OWN4)), bytes(ns(OWN6)), bytes(ns(OWN6, src="::", lla=None)),
              bytes(na(PEER6, PEER)), bytes(ns(OWN6, lla=None) / Raw(b"\x01\x02" + bytes(6)))]   # option past the end
    outs = []
    for fill in (0x00, 0xFF):
        nb = table()
        b = Burst(capacity=len(frames))
        b.extend([bytes([fill]) * b.max_frame] * len(frames))
        b.clear()
        b.extend(frames)
        parse(b)
        nb.run(b, 0)
        outs.append([(b.meta(i)["verdict"], b.meta(i)["reason"], b.frame(i))
                     for i in range(len(b))])
    assert outs[0] == outs[1] and outs[0][-1][1] == "bad_l4_len"
