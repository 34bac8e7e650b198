"""Conntrack table: lookups in both directions, the protocol trackers against Linux
nf_conntrack's transition tables and timeout rules, expiry, capacity limits, flushes, and a
randomized differential test against a dict model."""
import random

import numpy as np
import pytest

from dataplane import conntrack as ct
from dataplane.conntrack import (
    CT_DIR_ORIG as ORIG, CT_DIR_REPLY as REPLY, CT_ESTABLISHED, CT_REPLY, CT_INVALID, CT_REOPEN,
    CT_ERR_FULL, CT_ERR_COLLISION, CT_ERR_EXISTS, CT_F_DNAT, CT_F_SNAT,
    TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST, TCP_PSH,
    SCTP_F_INIT, SCTP_F_INIT_ACK, SCTP_F_COOKIE_ECHO, SCTP_F_COOKIE_ACK, SCTP_F_SHUTDOWN,
    SCTP_F_SHUTDOWN_ACK, SCTP_F_SHUTDOWN_COMPLETE, SCTP_F_ABORT,
)

S = 1_000_000_000
T0 = 1_000 * S
SYNACK = TCP_SYN | TCP_ACK
FINACK = TCP_FIN | TCP_ACK
TCP, UDP, ICMP, SCTP = 6, 17, 1, 132


def tup(src, dst, sport, dport, proto):
    return {"src": src, "dst": dst, "sport": sport, "dport": dport, "proto": proto}


def inv(t):
    return tup(t["dst"], t["src"], t["dport"], t["sport"], t["proto"])


def nat_flow(proto=TCP, cport=40000, backend="10.244.1.5", bport=8080, node_port=61000):
    """Client -> VIP:80, DNATed to backend:bport and SNATed to node:node_port."""
    orig = tup("10.0.0.1", "10.96.0.10", cport, 80, proto)
    reply = tup(backend, "10.0.0.9", bport, node_port, proto)
    return orig, reply


def find(t, d, now_ns=None):
    return t.lookup(d["src"], d["dst"], d["sport"], d["dport"], d["proto"], now_ns=now_ns)


def new_tcp(t, now=T0, **kw):
    orig, reply = nat_flow(TCP, **kw)
    i = t.create(orig, reply, now_ns=now)
    assert i >= 0
    return i, orig, reply


def handshake(t, i, now=T0):
    assert t.update(i, ORIG, TCP_SYN, 60, now) == CT_ESTABLISHED
    assert t.update(i, REPLY, SYNACK, 60, now + 1) == CT_REPLY
    assert t.update(i, ORIG, TCP_ACK, 52, now + 2) == CT_ESTABLISHED


def state(t, i):
    return t.entry(i)["state"]


# ---- table basics ----------------------------------------------------------------------------

def test_create_and_lookup_both_directions():
    t = ct.Conntrack(1024)
    orig, reply = nat_flow(UDP)
    i = t.create(orig, reply, now_ns=T0, svc_id=7, backend_id=9, flags=CT_F_DNAT | CT_F_SNAT)
    assert i >= 0 and len(t) == 1
    a, b = find(t, orig), find(t, reply)
    assert a["index"] == b["index"] == i
    assert (a["dir"], b["dir"]) == (ORIG, REPLY)
    assert a["orig"] == {**orig, "family": 4} and a["reply"] == {**reply, "family": 4}
    assert (a["svc_id"], a["backend_id"]) == (7, 9)
    assert a["flags"] == ["DNAT", "SNAT"]
    # The un-NATed inverse of orig is not a key: replies arrive NATed.
    assert find(t, inv(orig)) is None
    assert t.tuple_in_use(reply) and t.tuple_in_use(orig) and not t.tuple_in_use(inv(orig))


def test_creator_flags_are_limited_to_nat_bits():
    t = ct.Conntrack(16)
    i = t.create(*nat_flow(UDP), now_ns=T0, flags=0xff)
    assert t.entry(i)["flags"] == ["DNAT", "SNAT"]


def test_ipv6_flow():
    t = ct.Conntrack(16)
    orig = tup("fd00::1", "fd00:96::10", 5000, 443, TCP)
    reply = tup("fd00:244::7", "fd00::1", 8443, 5000, TCP)
    i = t.create(orig, reply, now_ns=T0)
    assert find(t, reply)["index"] == i and find(t, reply)["reply"]["family"] == 6


def test_counters_per_direction():
    t = ct.Conntrack(16)
    i, _, _ = new_tcp(t)
    handshake(t, i)
    t.update(i, ORIG, TCP_PSH | TCP_ACK, 1000, T0 + 3)
    t.update(i, REPLY, TCP_ACK, 40, T0 + 4)
    e = t.entry(i)
    assert e["packets"] == (3, 2) and e["bytes"] == (60 + 52 + 1000, 60 + 40)


def test_full_table_returns_full_and_existing_entries_still_work():
    """A table full of ASSURED entries has nothing to early-drop: the new flow is refused."""
    t = ct.Conntrack(4)
    idx = [t.create(*nat_flow(UDP, cport=1000 + k, node_port=2000 + k), now_ns=T0)
           for k in range(4)]
    assert all(i >= 0 for i in idx)
    for i in idx:
        t.update(i, ORIG, 0, 10, T0)
        t.update(i, REPLY, 0, 10, T0)
        t.update(i, ORIG, 0, 10, T0)
        assert "ASSURED" in t.entry(i)["flags"]
    extra = nat_flow(UDP, cport=5000, node_port=6000)
    assert t.create(*extra, now_ns=T0) == CT_ERR_FULL
    assert t.stats()["full_drops"] == 1 and t.stats()["early_drops"] == 0
    assert find(t, extra[0]) is None
    for k, i in enumerate(idx):
        orig, reply = nat_flow(UDP, cport=1000 + k, node_port=2000 + k)
        assert find(t, orig)["index"] == i and find(t, reply)["index"] == i
        assert t.update(i, REPLY, 0, 10, T0 + 1) == CT_REPLY
    t.delete(idx[2])
    assert t.create(*extra, now_ns=T0) == idx[2]      # freed entry reused


def test_reply_collision_and_existing_orig():
    t = ct.Conntrack(16)
    orig, reply = nat_flow(TCP)
    i = t.create(orig, reply, now_ns=T0)
    other, _ = nat_flow(TCP, cport=40001)
    assert t.create(other, reply, now_ns=T0) == CT_ERR_COLLISION
    assert t.stats()["collisions"] == 1 and len(t) == 1
    assert t.create(orig, tup("10.244.1.5", "10.0.0.9", 8080, 61001, TCP), now_ns=T0) \
        == CT_ERR_EXISTS
    # A NAT port retry with a free reply tuple succeeds.
    j = t.create(other, tup("10.244.1.5", "10.0.0.9", 8080, 61001, TCP), now_ns=T0)
    assert j >= 0 and j != i


def test_delete_removes_both_keys():
    t = ct.Conntrack(16)
    orig, reply = nat_flow(UDP)
    i = t.create(orig, reply, now_ns=T0)
    t.delete(i)
    assert find(t, orig) is None and find(t, reply) is None and len(t) == 0
    assert t.stats()["deleted"] == 1
    with pytest.raises(IndexError):
        t.delete(i)
    with pytest.raises(IndexError):
        t.update(12345, ORIG)
    with pytest.raises(IndexError):
        t.entry(-1)


def test_bad_arguments():
    with pytest.raises(ValueError):
        ct.Conntrack(0)
    with pytest.raises(ValueError):
        ct.Conntrack(16, timeouts={"tcp_establised": 10})
    with pytest.raises(ValueError):
        ct.Conntrack(16, timeouts={"udp": 0})
    with pytest.raises(ValueError):
        ct.Conntrack(16, timeouts={"udp": "30"})
    t = ct.Conntrack(16)
    with pytest.raises(ValueError):
        t.create(tup("10.0.0.1", "fd00::1", 1, 2, UDP), tup("10.0.0.2", "10.0.0.1", 2, 1, UDP))
    with pytest.raises(ValueError):
        t.create(tup("10.0.0.1", "10.0.0.2", 1, 2, UDP), tup("10.0.0.2", "10.0.0.1", 2, 1, TCP))
    with pytest.raises(OverflowError):
        t.create(tup("10.0.0.1", "10.0.0.2", 70000, 2, UDP), tup("10.0.0.2", "10.0.0.1", 2, 1, UDP))
    i = t.create(*nat_flow(UDP), now_ns=T0)
    with pytest.raises(ValueError):
        t.update(i, 2)


def test_timeouts_defaults_and_overrides():
    t = ct.Conntrack(16, timeouts={"tcp_established": 86400, "udp_stream": 90.5})
    assert t.timeouts["tcp_established"] == 86400 and t.timeouts["udp_stream"] == 90.5
    assert t.timeouts["tcp_close_wait"] == 60 and ct.DEFAULT_TIMEOUTS["tcp_established"] == 432000
    i, _, _ = new_tcp(t)
    handshake(t, i)
    assert t.entry(i)["expires_ns"] == T0 + 2 + 86400 * S


def test_capacity_16m_allocates_without_filling():
    t = ct.Conntrack(16_777_216)
    assert t.capacity == 16_777_216 and len(t) == 0
    assert t.memory_bytes <= 224 * t.capacity     # 192-byte entries + two 8-byte slots each
    orig, reply = nat_flow(TCP)
    i = t.create(orig, reply, now_ns=T0)
    assert find(t, reply)["index"] == i


# ---- TCP -------------------------------------------------------------------------------------

def test_tcp_handshake_data_and_fin_close():
    tm = ct.DEFAULT_TIMEOUTS
    t = ct.Conntrack(16)
    i, orig, reply = new_tcp(t)
    assert state(t, i) == "NONE"
    assert t.update(i, ORIG, TCP_SYN, 60, T0) == CT_ESTABLISHED
    assert state(t, i) == "SYN_SENT" and t.entry(i)["expires_ns"] == T0 + tm["tcp_syn_sent"] * S
    # A SYN retransmit before any reply does not refresh the timeout.
    assert t.update(i, ORIG, TCP_SYN, 60, T0 + S) == CT_ESTABLISHED
    assert t.entry(i)["expires_ns"] == T0 + tm["tcp_syn_sent"] * S
    assert t.update(i, REPLY, SYNACK, 60, T0 + 2 * S) == CT_REPLY
    e = t.entry(i)
    assert e["state"] == "SYN_RECV" and e["flags"] == ["SEEN_REPLY"]
    assert e["expires_ns"] == T0 + 2 * S + tm["tcp_syn_recv"] * S
    assert t.update(i, ORIG, TCP_ACK, 52, T0 + 3 * S) == CT_ESTABLISHED
    e = t.entry(i)
    assert e["state"] == "ESTABLISHED" and "ASSURED" in e["flags"]
    assert e["expires_ns"] == T0 + 3 * S + tm["tcp_established"] * S
    assert t.update(i, REPLY, TCP_PSH | TCP_ACK, 500, T0 + 4 * S) == CT_REPLY
    steps = [(ORIG, FINACK, "FIN_WAIT", "tcp_fin_wait"),
             (REPLY, TCP_ACK, "CLOSE_WAIT", "tcp_close_wait"),
             (REPLY, FINACK, "LAST_ACK", "tcp_last_ack"),
             (ORIG, TCP_ACK, "TIME_WAIT", "tcp_time_wait")]
    for k, (d, flags, st, tmo) in enumerate(steps):
        now = T0 + (10 + k) * S
        assert t.update(i, d, flags, 40, now) in (CT_ESTABLISHED, CT_REPLY)
        assert state(t, i) == st and t.entry(i)["expires_ns"] == now + tm[tmo] * S
    assert "CLOSE_INIT" in t.entry(i)["flags"]


def test_tcp_time_wait_reopen():
    t = ct.Conntrack(16)
    i, orig, reply = new_tcp(t)
    handshake(t, i)
    for d, f in [(ORIG, FINACK), (REPLY, FINACK), (ORIG, TCP_ACK)]:
        t.update(i, d, f, 40, T0 + 5)
    assert state(t, i) == "TIME_WAIT"
    assert t.update(i, ORIG, TCP_SYN, 60, T0 + 6) == CT_REOPEN
    assert find(t, orig) is None and find(t, reply) is None and len(t) == 0
    # The caller starts over with a new entry for the same tuple.
    j = t.create(orig, reply, now_ns=T0 + 6)
    assert t.update(j, ORIG, TCP_SYN, 60, T0 + 6) == CT_ESTABLISHED
    assert state(t, j) == "SYN_SENT"


def test_tcp_rst_closes_and_reopen_after_own_rst():
    t = ct.Conntrack(16)
    i, orig, _ = new_tcp(t)
    handshake(t, i)
    assert t.update(i, ORIG, TCP_RST | TCP_ACK, 40, T0 + 5) == CT_ESTABLISHED
    assert state(t, i) == "CLOSE"
    assert t.entry(i)["expires_ns"] == T0 + 5 + ct.DEFAULT_TIMEOUTS["tcp_close"] * S
    # The side that reset may open again at once.
    assert t.update(i, ORIG, TCP_SYN, 60, T0 + 6) == CT_REOPEN
    assert find(t, orig) is None


def test_tcp_syn_after_peer_rst_is_ignored_then_resynced():
    """CLOSE by the server's RST and no FIN: a client SYN is let through without a state change
    (sIG); the server's SYN/ACK answering it brings the entry back in sync."""
    t = ct.Conntrack(16)
    i, _, _ = new_tcp(t)
    handshake(t, i)
    assert t.update(i, REPLY, TCP_RST, 40, T0 + 5) == CT_REPLY
    exp = t.entry(i)["expires_ns"]
    assert t.update(i, ORIG, TCP_SYN, 60, T0 + 6) == CT_ESTABLISHED
    assert state(t, i) == "CLOSE" and t.entry(i)["expires_ns"] == exp
    assert t.update(i, REPLY, SYNACK, 60, T0 + 7) == CT_REPLY
    assert state(t, i) == "SYN_RECV"
    assert t.update(i, ORIG, TCP_ACK, 40, T0 + 8) == CT_ESTABLISHED
    assert state(t, i) == "ESTABLISHED"


def test_tcp_rst_without_reply_kills_entry():
    t = ct.Conntrack(16)
    i, orig, _ = new_tcp(t)
    t.update(i, ORIG, TCP_SYN, 60, T0)
    assert t.update(i, REPLY, TCP_RST | TCP_ACK, 40, T0 + 1) == CT_REPLY
    assert t.entry(i)["packets"] == (1, 1)      # still readable for this packet's rewrite
    assert find(t, orig) is None                # but gone for the next one
    assert t.stats()["expired"] == 1 and len(t) == 0


@pytest.mark.parametrize("d,flags", [
    (ORIG, SYNACK),          # client cannot send SYN then SYN/ACK
    (ORIG, TCP_ACK),         # no SYN/ACK seen yet
    (ORIG, FINACK),          # must wait for the SYN/ACK
    (REPLY, FINACK),
    (ORIG, TCP_SYN | TCP_FIN),   # tcp_valid_flags
    (ORIG, 0),
    (ORIG, TCP_PSH),
])
def test_tcp_invalid_in_syn_sent(d, flags):
    t = ct.Conntrack(16)
    i, _, _ = new_tcp(t)
    t.update(i, ORIG, TCP_SYN, 60, T0)
    before = t.entry(i)
    assert t.update(i, d, flags, 40, T0 + 1) == CT_INVALID
    after = t.entry(i)
    assert after["state"] == "SYN_SENT" and after["expires_ns"] == before["expires_ns"]
    assert after["packets"] == before["packets"]
    assert t.stats()["invalid"] == 1


def test_tcp_invalid_first_packet_deletes_new_entry():
    t = ct.Conntrack(16)
    for k, flags in enumerate([FINACK, TCP_RST, SYNACK, TCP_FIN]):
        i, orig, _ = new_tcp(t, cport=100 + k)
        assert t.update(i, ORIG, flags, 40, T0) == CT_INVALID
        assert find(t, orig) is None
    assert len(t) == 0 and t.stats()["invalid"] == 4


def test_tcp_invalid_in_established_keeps_state():
    t = ct.Conntrack(16)
    i, _, _ = new_tcp(t)
    handshake(t, i)
    assert t.update(i, ORIG, SYNACK, 60, T0 + 5) == CT_INVALID
    assert t.update(i, REPLY, TCP_SYN, 60, T0 + 5) == CT_INVALID
    assert state(t, i) == "ESTABLISHED"


def test_tcp_loose_pickup():
    tm = ct.DEFAULT_TIMEOUTS
    t = ct.Conntrack(16)
    i, _, _ = new_tcp(t)
    assert t.update(i, ORIG, TCP_PSH | TCP_ACK, 100, T0) == CT_ESTABLISHED
    e = t.entry(i)
    assert e["state"] == "ESTABLISHED" and "ASSURED" not in e["flags"]
    assert e["expires_ns"] == T0 + tm["tcp_unacknowledged"] * S
    # The first reply is judged before it marks the entry replied: still capped.
    assert t.update(i, REPLY, TCP_ACK, 40, T0 + S) == CT_REPLY
    assert t.entry(i)["expires_ns"] == T0 + S + tm["tcp_unacknowledged"] * S
    assert t.update(i, ORIG, TCP_ACK, 40, T0 + 2 * S) == CT_ESTABLISHED
    e = t.entry(i)
    assert "ASSURED" in e["flags"] and e["expires_ns"] == T0 + 2 * S + tm["tcp_established"] * S


def test_tcp_simultaneous_open():
    t = ct.Conntrack(16)
    i, _, _ = new_tcp(t)
    t.update(i, ORIG, TCP_SYN, 60, T0)
    assert t.update(i, REPLY, TCP_SYN, 60, T0 + 1) == CT_REPLY
    assert state(t, i) == "SYN_SENT2"
    assert t.update(i, ORIG, SYNACK, 60, T0 + 2) == CT_ESTABLISHED
    assert state(t, i) == "SYN_RECV"
    assert t.update(i, REPLY, TCP_ACK, 40, T0 + 3) == CT_REPLY
    assert state(t, i) == "ESTABLISHED"


def test_tcp_challenge_ack_in_last_ack():
    """RFC 5961: a SYN in LAST_ACK draws a challenge ACK that must not count as the last ACK."""
    t = ct.Conntrack(16)
    i, _, _ = new_tcp(t)
    handshake(t, i)
    t.update(i, REPLY, FINACK, 40, T0 + 5)
    t.update(i, ORIG, FINACK, 40, T0 + 6)
    assert state(t, i) == "LAST_ACK"
    assert t.update(i, ORIG, TCP_SYN, 60, T0 + 7) == CT_ESTABLISHED      # ignored
    assert t.update(i, REPLY, TCP_ACK, 40, T0 + 8) == CT_REPLY           # the challenge ACK
    assert state(t, i) == "LAST_ACK"
    assert t.update(i, REPLY, TCP_ACK, 40, T0 + 9) == CT_REPLY           # the real last ACK
    assert state(t, i) == "TIME_WAIT"


# ---- UDP / ICMP / SCTP / other ----------------------------------------------------------------

def test_udp_unreplied_then_assured_stream():
    tm = ct.DEFAULT_TIMEOUTS
    t = ct.Conntrack(16)
    orig, reply = nat_flow(UDP)
    i = t.create(orig, reply, now_ns=T0)
    assert t.update(i, ORIG, 0, 80, T0) == CT_ESTABLISHED
    e = t.entry(i)
    assert e["state"] == "UNREPLIED" and e["expires_ns"] == T0 + tm["udp"] * S
    assert t.update(i, REPLY, 0, 120, T0 + S) == CT_REPLY
    e = t.entry(i)
    # A single request/response (DNS) stays short-lived and unassured, as in Linux.
    assert e["state"] == "REPLIED" and e["flags"] == ["SEEN_REPLY"]
    assert e["expires_ns"] == T0 + S + tm["udp"] * S
    assert t.update(i, ORIG, 0, 80, T0 + 2 * S) == CT_ESTABLISHED
    e = t.entry(i)
    assert "ASSURED" in e["flags"] and e["expires_ns"] == T0 + 2 * S + tm["udp_stream"] * S


def test_icmp_echo_keyed_by_identifier():
    t = ct.Conntrack(16)
    req = tup("10.0.0.1", "10.0.0.2", 0x1234, 0x1234, ICMP)
    i = t.create(req, inv(req), now_ns=T0)
    assert t.update(i, ORIG, 0, 84, T0) == CT_ESTABLISHED
    r = find(t, inv(req))
    assert r["index"] == i and r["dir"] == REPLY
    assert find(t, tup("10.0.0.2", "10.0.0.1", 0x1235, 0x1235, ICMP)) is None
    assert t.update(i, REPLY, 0, 84, T0 + S) == CT_REPLY
    assert t.entry(i)["expires_ns"] == T0 + S + ct.DEFAULT_TIMEOUTS["icmp"] * S


def test_ping_to_self_orig_equals_reply():
    t = ct.Conntrack(16)
    req = tup("10.0.0.1", "10.0.0.1", 7, 7, ICMP)
    i = t.create(req, req, now_ns=T0)
    assert i >= 0 and find(t, req)["dir"] == ORIG
    t.delete(i)
    assert find(t, req) is None and len(t) == 0
    assert t.create(req, req, now_ns=T0) >= 0


def test_generic_protocol_timeout():
    t = ct.Conntrack(16)
    gre = tup("10.0.0.1", "10.0.0.2", 0, 0, 47)
    i = t.create(gre, inv(gre), now_ns=T0)
    assert t.update(i, ORIG, 0, 100, T0) == CT_ESTABLISHED
    assert t.entry(i)["expires_ns"] == T0 + ct.DEFAULT_TIMEOUTS["generic"] * S
    assert t.entry(i)["state"] == "UNREPLIED"


def test_sctp_association_lifecycle():
    tm = ct.DEFAULT_TIMEOUTS
    t = ct.Conntrack(16)
    orig, reply = nat_flow(SCTP)
    i = t.create(orig, reply, now_ns=T0)
    steps = [(ORIG, SCTP_F_INIT, "CLOSED", "sctp_closed"),
             (REPLY, SCTP_F_INIT_ACK, "COOKIE_WAIT", "sctp_cookie_wait"),
             (ORIG, SCTP_F_COOKIE_ECHO, "COOKIE_ECHOED", "sctp_cookie_echoed"),
             (REPLY, SCTP_F_COOKIE_ACK, "ESTABLISHED", "sctp_established"),
             (ORIG, 0, "ESTABLISHED", "sctp_established"),             # DATA
             (ORIG, SCTP_F_SHUTDOWN, "SHUTDOWN_SENT", "sctp_shutdown_sent"),
             (REPLY, SCTP_F_SHUTDOWN_ACK, "SHUTDOWN_ACK_SENT", "sctp_shutdown_ack_sent"),
             (ORIG, SCTP_F_SHUTDOWN_COMPLETE, "CLOSED", "sctp_closed")]
    for k, (d, chunks, st, tmo) in enumerate(steps):
        now = T0 + k * S
        assert t.update(i, d, chunks, 100, now) == (CT_REPLY if d else CT_ESTABLISHED)
        e = t.entry(i)
        assert e["state"] == st and e["expires_ns"] == now + tm[tmo] * S
        assert ("ASSURED" in e["flags"]) == (k >= 3)


def test_sctp_init_retransmit_does_not_refresh_and_abort_closes():
    t = ct.Conntrack(16)
    orig, reply = nat_flow(SCTP)
    i = t.create(orig, reply, now_ns=T0)
    t.update(i, ORIG, SCTP_F_INIT, 100, T0)
    exp = t.entry(i)["expires_ns"]
    assert t.update(i, ORIG, SCTP_F_INIT, 100, T0 + S) == CT_ESTABLISHED
    assert t.entry(i)["expires_ns"] == exp
    t.update(i, REPLY, SCTP_F_INIT_ACK, 100, T0 + 2 * S)
    assert t.update(i, REPLY, SCTP_F_ABORT, 100, T0 + 3 * S) == CT_REPLY
    assert state(t, i) == "CLOSED"


@pytest.mark.parametrize("d,chunks", [
    (ORIG, 0), (ORIG, SCTP_F_ABORT), (ORIG, SCTP_F_COOKIE_ACK), (ORIG, SCTP_F_SHUTDOWN_COMPLETE),
    (REPLY, SCTP_F_INIT),
])
def test_sctp_invalid_first_packet_deletes_new_entry(d, chunks):
    t = ct.Conntrack(16)
    orig, reply = nat_flow(SCTP)
    i = t.create(orig, reply, now_ns=T0)
    assert t.update(i, d, chunks, 100, T0) == CT_INVALID
    assert find(t, orig) is None and len(t) == 0


# ---- expiry ----------------------------------------------------------------------------------

def test_sweep_expires_only_after_timeout():
    t = ct.Conntrack(64, timeouts={"udp": 30})
    for k in range(10):
        i = t.create(*nat_flow(UDP, cport=k, node_port=k), now_ns=T0)
        t.update(i, ORIG, 0, 10, T0)
    assert t.sweep(T0 + 30 * S - 1, 1000) == 0 and len(t) == 10
    assert t.sweep(T0 + 30 * S, 1000) == 10 and len(t) == 0
    assert t.stats()["expired"] == 10


def test_sweep_visits_at_most_budget_entries():
    t = ct.Conntrack(64)
    for k in [*range(0, 20, 2), *range(1, 20, 2)]:
        born = T0 + (k % 2) * 10 * S                     # odd ones come later
        i = t.create(*nat_flow(UDP, cport=k, node_port=k), now_ns=born)
        t.update(i, ORIG, 0, 10, born)
    now = T0 + 31 * S
    freed = []
    for _ in range(7):
        n = t.sweep(now, 3)
        assert n <= 3
        freed.append(n)
    # 21 visits from a wrapping cursor cover all 20 entries: exactly the 10 expired ones go.
    assert sum(freed) == 10 and len(t) == 10
    assert all(e["orig"]["sport"] % 2 == 1 for e in t.entries())
    assert t.sweep(now, 0) == 0


def test_lookup_reclaims_expired_entry():
    t = ct.Conntrack(16)
    orig, reply = nat_flow(UDP)
    i = t.create(orig, reply, now_ns=T0)
    t.update(i, ORIG, 0, 10, T0)
    assert find(t, reply, now_ns=T0 + 29 * S) is not None
    assert find(t, reply, now_ns=T0 + 30 * S) is None
    assert len(t) == 0 and t.stats()["expired"] == 1
    # An expired reply tuple is free for a new NAT mapping.
    assert not t.tuple_in_use(reply)
    assert t.create(orig, reply, now_ns=T0 + 30 * S) >= 0


def test_clock_never_moves_back():
    t = ct.Conntrack(16)
    orig, reply = nat_flow(UDP)
    i = t.create(orig, reply, now_ns=T0)
    t.update(i, ORIG, 0, 10, T0)
    t.sweep(T0 + 31 * S, 0)                       # advances the clock only
    t.sweep(T0, 0)
    assert find(t, orig) is None


# ---- flush -----------------------------------------------------------------------------------

def test_flush_backend_removes_only_matching_protocol_entries():
    t = ct.Conntrack(64)
    B = "10.244.1.5"
    keep, gone = [], []
    for k in range(3):
        gone.append(t.create(*nat_flow(UDP, cport=100 + k, backend=B, bport=53, node_port=100 + k),
                             now_ns=T0))
    keep.append(t.create(*nat_flow(UDP, cport=200, backend=B, bport=54, node_port=200), now_ns=T0))
    keep.append(t.create(*nat_flow(UDP, cport=201, backend="10.244.1.6", bport=53,
                                   node_port=201), now_ns=T0))
    keep.append(t.create(*nat_flow(TCP, cport=202, backend=B, bport=53, node_port=202), now_ns=T0))
    sctp = t.create(*nat_flow(SCTP, cport=203, backend=B, bport=53, node_port=203), now_ns=T0)
    assert t.flush(B, 53, UDP) == 3
    left = {e["index"] for e in t.entries()}
    assert left == set(keep) | {sctp}
    assert t.flush(B, 53, SCTP) == 1
    assert {e["index"] for e in t.entries()} == set(keep)
    assert t.flush(B, 53, UDP) == 0
    assert t.stats()["deleted"] == 4


def test_flush_ipv6_backend_and_flush_all():
    t = ct.Conntrack(16)
    orig = tup("fd00::1", "fd00:96::10", 5000, 53, UDP)
    t.create(orig, tup("fd00:244::7", "fd00::1", 5353, 5000, UDP), now_ns=T0)
    t.create(*nat_flow(UDP), now_ns=T0)
    assert t.flush("fd00:244::7", 5353, UDP) == 1 and len(t) == 1
    assert t.flush_all() == 1 and len(t) == 0 and t.entries() == []
    assert t.create(*nat_flow(UDP), now_ns=T0) == 0


# ---- batch API -------------------------------------------------------------------------------

def tuple_array(rows):
    a = np.zeros(len(rows), dtype=ct.TUPLE_DTYPE)
    for k, (s, d, sp, dp, p) in enumerate(rows):
        a[k]["saddr"][0] = s
        a[k]["daddr"][0] = d
        a[k]["sport"], a[k]["dport"], a[k]["proto"], a[k]["family"] = sp, dp, p, 4
    return a


def test_batch_create_lookup_update_delete():
    t = ct.Conntrack(4096)
    n = 1000
    orig = tuple_array([(0x0A000001, 0x0A60000A, 1024 + k, 80, TCP) for k in range(n)])
    reply = tuple_array([(0x0AF40105, 0x0A000009, 8080, 1024 + k, TCP) for k in range(n)])
    idx = t.create_many(orig, reply, now_ns=T0)
    assert (idx >= 0).all() and len(set(idx.tolist())) == n
    assert (t.update_many(idx, ORIG, TCP_SYN, 60, T0) == CT_ESTABLISHED).all()
    got, dirs = t.lookup_many(reply)
    assert (got == idx).all() and (dirs == REPLY).all()
    assert find(t, tup("10.244.1.5", "10.0.0.9", 8080, 1024 + 7, TCP))["index"] == idx[7]
    t.delete_many(idx[::2])
    got, _ = t.lookup_many(orig)
    assert (got[::2] == -1).all() and (got[1::2] == idx[1::2]).all()
    assert (ct.hash_tuples(orig[:3]) == ct.hash_tuples(orig[:3].copy())).all()


# ---- differential test -----------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_randomized_against_dict_model(seed):
    """Interleaved create / delete / expiry / lookup at full load (two keys per entry, load 0.5
    when every entry is used) must agree with a dict model: backward-shift deletion keeps every
    remaining key reachable."""
    rng = random.Random(seed)
    cap = 256
    t = ct.Conntrack(cap, timeouts={"udp": 100, "udp_stream": 100})
    now = T0
    # Tuples drawn from a small pool so creates collide on orig and reply keys.
    clients = [tup(f"10.0.{c >> 8}.{c & 255}", "10.96.0.10", 1000 + c % 50, 53, UDP)
               for c in range(1500)]
    replies = [tup("10.244.0.9", "10.0.0.9", 53, 20000 + p, UDP) for p in range(1500)]
    model = {}                      # index -> [orig, reply, expires_ns, seen_reply, assured]

    def key(d):
        return (d["src"], d["dst"], d["sport"], d["dport"])

    def live_keys():
        out = {}
        for i, (o, r, *_) in model.items():
            out[key(o)] = (i, ORIG)
            out[key(r)] = (i, REPLY)
        return out

    def reclaim_if_expired(d):
        for i, (o, r, exp, *_) in list(model.items()):
            if key(d) in (key(o), key(r)) and exp <= now:
                del model[i]

    for step in range(6000):
        op = rng.random()
        now += rng.randrange(0, S // 4)
        if op < 0.55:
            o, r = rng.choice(clients), rng.choice(replies)
            reclaim_if_expired(o)
            keys = live_keys()
            if key(o) in keys:
                want = CT_ERR_EXISTS
            else:
                reclaim_if_expired(r)
                keys = live_keys()
                want = CT_ERR_COLLISION if key(r) in keys else \
                    CT_ERR_FULL if len(model) == cap else None
            got = t.create(o, r, now_ns=now)
            if want == CT_ERR_FULL and got >= 0:
                # early_drop: the victim's index is freed and reused at once; only an entry
                # that is not ASSURED (or already expired) may be the victim.
                assert got in model and (not model[got][4] or model[got][2] <= now), step
                del model[got]
                want = None
            if want is None:
                assert got >= 0 and got not in model
                model[got] = [o, r, now + 100 * S, False, False]
            else:
                assert got == want, (step, got, want)
        elif op < 0.63 and model:
            i = rng.choice(list(model))
            t.delete(i)
            del model[i]
        elif op < 0.8 and model:
            i = rng.choice(list(model))
            d = rng.choice([ORIG, REPLY])
            t.update(i, d, 0, 10, now)
            model[i][2] = now + 100 * S
            model[i][4] = model[i][4] or model[i][3]     # UDP: ASSURED once a reply was seen
            model[i][3] = model[i][3] or d == REPLY
        elif op < 0.82:
            t.sweep(now, cap)                    # full pass: every expired entry goes
            for i in [i for i, m in model.items() if m[2] <= now]:
                del model[i]
        else:
            d = rng.choice(clients + replies)
            reclaim_if_expired(d)
            r = find(t, d, now_ns=now)
            want = live_keys().get(key(d))
            assert (None if r is None else (r["index"], r["dir"])) == want, step
        if step % 500 == 0 or step == 5999:
            for i, (o, r, exp, *_) in list(model.items()):
                if exp > now:
                    assert find(t, o)["index"] == i and find(t, r)["dir"] == REPLY
            assert len(t) == len(model)
    s = t.stats()
    assert s["created"] == s["deleted"] + s["expired"] + s["early_drops"] + len(t)
    assert s["early_drops"] > 0 and s["expired"] > 0 and s["collisions"] > 0   # load reached


def test_save_and_restore_keep_established_connections(tmp_path):
    """A restarted dataplane reloads its table: the connection is still ESTABLISHED, in both
    directions, with its NAT tuples, flags and expiry; expired entries stay behind."""
    t = ct.Conntrack(64)
    i, orig, reply = new_tcp(t)
    handshake(t, i)
    before = t.entry(i)
    j = t.create(*nat_flow(UDP, cport=5353), now_ns=T0)
    assert t.update(j, ORIG, 0, 40, T0) == CT_ESTABLISHED
    path = tmp_path / "ct.state"
    assert t.save(path) == 2
    fresh = ct.Conntrack(64)
    udp_timeout = ct.DEFAULT_TIMEOUTS["udp"] * 1_000_000_000
    assert fresh.restore(path, now_ns=T0 + udp_timeout + 10) == 1   # the UDP flow has expired
    got = find(fresh, orig)
    assert got is not None and got["state"] == "ESTABLISHED"
    assert find(fresh, reply) is not None
    after = fresh.entry(got["index"]) if "index" in got else got
    for key in ("orig", "reply", "flags", "expires_ns"):
        assert after[key] == before[key], key
    (tmp_path / "bad").write_bytes(b"not a state file")
    with pytest.raises(ValueError):
        fresh.restore(tmp_path / "bad", now_ns=T0)
