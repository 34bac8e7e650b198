"""Answering one DNS message: the cluster zone, PTRs of cluster addresses, and every other name
forwarded to upstream resolvers through a small cache (what CoreDNS's forward and cache plugins
do in a cluster's default Corefile)."""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
import time
from collections import OrderedDict

from dnslib import QTYPE, RR, DNSRecord

from .wire import (RCODE_BADVERS, RCODE_REFUSED, RCODE_SERVFAIL, BadQuery, Query, answer_from_records, error,
                   finish, header_error, pack_answer, packed_records, parse_query, set_tc)
from .zone import HOT_TYPES, Zone

CLASS_IN, CLASS_ANY = 1, 255
CACHE_MAX_TTL = 3600          # CoreDNS cache: success and denial capped at an hour
UPSTREAM_TIMEOUT = 2.0
HOT_ANSWERS = 100_000         # packed zone answers kept (all dropped when full: rebuilt on demand)


def system_upstreams(path: str = "/etc/resolv.conf") -> tuple[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int], ...]:
    """The nameservers of a resolv.conf (CoreDNS's `forward . /etc/resolv.conf`)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        out.append((ipaddress.ip_address(parts[1].split("%")[0]), 53))
                    except ValueError:
                        continue
    except OSError:
        pass
    return tuple(out)


class Cache:
    """Answers from upstream by (name, type, class, DO), for their smallest TTL (negative answers:
    the SOA's, RFC 2308), capped at CACHE_MAX_TTL; least recently used entries go first."""

    def __init__(self, size: int = 10000):
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key, now: float):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= now:
                self.misses += 1
                if entry is not None:
                    del self._entries[key]
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key, msg: DNSRecord, now: float) -> None:
        rcode = msg.header.rcode
        if rcode not in (0, 3) or msg.header.tc:
            return
        records = [rr for rr in msg.rr + msg.auth if rr.rtype != 41]
        if rcode == 3 or not msg.rr:
            soas = [rr for rr in msg.auth if rr.rtype == QTYPE.SOA]
            if not soas:
                return
            ttl = min(soas[0].ttl, soas[0].rdata.times[-1])
        else:
            ttl = min(rr.ttl for rr in records)
        ttl = min(ttl, CACHE_MAX_TTL)
        if ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (now + ttl, now, msg)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def _aged(rrs, elapsed: int) -> list[RR]:
    return [RR(rr.rname, rr.rtype, rr.rclass, max(0, rr.ttl - elapsed), rr.rdata) for rr in rrs if rr.rtype != 41]


class Resolver:
    def __init__(self, zone: Zone, upstreams=(), cache_size: int = 10000, timeout: float = UPSTREAM_TIMEOUT):
        self.zone = zone
        self.upstreams = tuple((str(a), p) for a, p in upstreams)
        self.cache = Cache(cache_size)
        self.timeout = timeout
        self._hot: dict = {}      # (name, qtype) -> (ServiceNames, packed records, an, ns, ar)

    def handle(self, data: bytes, udp: bool) -> bytes | None:
        """The response to one message (None: nothing to send back)."""
        try:
            q = parse_query(data)
        except BadQuery as e:
            return None if e.rcode is None else header_error(data, e.rcode)
        return self.answer(q, udp)

    def answer(self, q: Query, udp: bool) -> bytes:
        wire = self.local(q, udp)
        return wire if wire is not None else self.forward(q, udp)

    def local(self, q: Query, udp: bool, chase: bool = True) -> bytes | None:
        """The answer when this server is authoritative for the name; None: ask upstream (or,
        with chase False, an ExternalName whose target must be looked up upstream)."""
        if q.edns and q.edns_version > 0:
            return error(q, RCODE_BADVERS)
        zone = self.zone
        snap = zone.snapshot     # one state for the whole answer
        if not zone.in_zone(q.qname) and q.qname not in snap.ptrs:
            return None
        if q.qclass not in (CLASS_IN, CLASS_ANY):
            return error(q, RCODE_REFUSED)
        if q.qclass == CLASS_IN and q.qtype in HOT_TYPES:
            wire = self._hot_answer(q, snap)
            if wire is not None:
                return finish(q, wire, udp)
        ans = zone.resolve(q.qname, q.qtype, snap)
        answers = ans.answers
        if ans.external is not None and q.qtype != QTYPE.CNAME:
            if not chase:
                return None
            chased = self.lookup(ans.external, q.qtype, udp=False)
            if chased is not None:
                answers += tuple(chased.rr)
        return finish(q, pack_answer(q, ans.rcode, answers, ans.authority, ans.additional), udp)

    def _hot_answer(self, q: Query, snap) -> bytes | None:
        """A Service's A, AAAA or SRV answer from its records packed once (as the fast path has
        them), valid while the Service's names are unchanged."""
        owner = self.zone.owner(q.qname, snap)
        if owner is None or not owner.names[q.qname].get(q.qtype):
            return None
        key = (q.qname, q.qtype)
        hit = self._hot.get(key)
        if hit is None or hit[0] is not owner:
            ans = self.zone.resolve(q.qname, q.qtype, snap)
            hit = (owner, *packed_records(q.qname, q.qtype, ans.answers, ans.authority, ans.additional))
            if len(self._hot) >= HOT_ANSWERS:
                self._hot.clear()
            self._hot[key] = hit
        return answer_from_records(q, *hit[1:])

    def forward(self, q: Query, udp: bool) -> bytes:
        if q.edns and q.edns_version > 0:
            return error(q, RCODE_BADVERS)
        msg = self._cached(q.qname, q.qtype, q.qclass, q.do, q.data, udp)
        if msg is None:
            return error(q, RCODE_SERVFAIL)
        if msg.header.tc:   # a partial answer: the client must not take it as whole
            return finish(q, set_tc(pack_answer(q, msg.header.rcode, aa=False)), udp)
        return finish(q, pack_answer(q, msg.header.rcode, msg.rr, msg.auth, msg.ar, aa=False), udp)

    def lookup(self, name: str, qtype: int, udp: bool = True) -> DNSRecord | None:
        """Resolve a name upstream (ExternalName targets), through the cache."""
        query = DNSRecord.question(name + ".", QTYPE.get(qtype, str(qtype)))
        return self._cached(name.lower().rstrip("."), qtype, CLASS_IN, False, query.pack(), udp)

    def _cached(self, name: str, qtype: int, qclass: int, do: bool, data: bytes, udp: bool) -> DNSRecord | None:
        key = (name, qtype, qclass, do)
        now = time.monotonic()
        hit = self.cache.get(key, now)
        if hit is not None:
            _, stored, msg = hit
            elapsed = int(now - stored)
            out = DNSRecord(msg.header)
            out.rr, out.auth, out.ar = _aged(msg.rr, elapsed), _aged(msg.auth, elapsed), _aged(msg.ar, elapsed)
            return out
        msg = self._ask(data, name, udp)
        if msg is not None:
            msg.ar = [rr for rr in msg.ar if rr.rtype != 41]
            self.cache.put(key, msg, now)
        return msg

    def _ask(self, data: bytes, name: str, udp: bool) -> DNSRecord | None:
        """The first usable upstream response: over UDP, or TCP when truncated and the client
        itself came over TCP (a UDP client gets the TC bit and retries over TCP itself)."""
        qid = struct.unpack("!H", os.urandom(2))[0]
        query = struct.pack("!H", qid) + data[2:]
        for host, port in self.upstreams:
            try:
                reply = _udp_exchange(query, host, port, self.timeout)
                if reply is not None and reply[2] & 0x02 and not udp:
                    reply = _tcp_exchange(query, host, port, self.timeout)
            except OSError:
                continue
            if reply is None or len(reply) < 12 or struct.unpack_from("!H", reply)[0] != qid:
                continue
            try:
                msg = DNSRecord.parse(reply)
            except Exception:  # a malformed upstream answer: try the next one
                continue
            # The question must be ours; some servers leave it out of a truncated answer.
            if (str(msg.q.qname).lower().rstrip(".") != name) if msg.questions else not msg.header.tc:
                continue
            if msg.header.rcode == 2:
                continue    # SERVFAIL: another upstream may do better
            return msg
        return None


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _udp_exchange(query: bytes, host: str, port: int, timeout: float) -> bytes | None:
    with socket.socket(_family(host), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(query)
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = s.recv(65535)
            except socket.timeout:
                return None
            if reply[:2] == query[:2]:
                return reply
            s.settimeout(max(0.01, deadline - time.monotonic()))


def _tcp_exchange(query: bytes, host: str, port: int, timeout: float) -> bytes | None:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack("!H", len(query)) + query)
        return recv_message(s)


def recv_message(s: socket.socket) -> bytes | None:
    """One length-prefixed message from a TCP stream (RFC 1035 4.2.2); None at end of stream."""
    head = _recv_exact(s, 2)
    if head is None:
        return None
    return _recv_exact(s, struct.unpack("!H", head)[0])


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
