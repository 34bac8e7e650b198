"""DNS messages on the wire: reading queries and writing responses (RFC 1035, EDNS0 RFC 6891).

Responses are packed by dnslib with the question name lower-cased, then the query's own name
bytes are put back in its place: they have the same length, so every compression pointer stays
valid, the question echoes the client's letter case (RFC 4343; resolvers using 0x20 check it)
and so does every owner name that points at it. The fast-path stage builds its answers the same
way, which makes both byte-for-byte equal.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from dnslib import DNSQuestion, DNSRecord

MAX_UDP = 1232          # largest UDP answer we send (DNS flag day 2020: no IP fragmentation)
CLASSIC_UDP = 512       # without EDNS0 (RFC 1035 4.2.1)
OPT = 41
RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_NOTIMP, RCODE_REFUSED, RCODE_BADVERS = 1, 2, 3, 4, 5, 16


class BadQuery(ValueError):
    """Not a query we can answer: rcode says how to refuse it (None: drop it silently)."""

    def __init__(self, message: str, rcode: int | None):
        super().__init__(message)
        self.rcode = rcode


@dataclass(frozen=True)
class Query:
    data: bytes              # the message as received
    id: int
    flags: int               # header flags word
    qname_wire: bytes        # the question's name as sent (letter case included)
    qname: str               # lower-case, without the final dot
    qtype: int
    qclass: int
    edns: bool               # an OPT record came with it
    edns_size: int           # its UDP payload size (512 without EDNS)
    edns_version: int
    do: bool                 # DNSSEC OK bit, copied to the answer (RFC 3225)

    @property
    def rd(self) -> bool:
        return bool(self.flags & 0x0100)

    def limit(self, udp: bool) -> int:
        """Largest answer this client takes over UDP (any size over TCP)."""
        if not udp:
            return 65535
        return max(CLASSIC_UDP, min(self.edns_size, MAX_UDP)) if self.edns else CLASSIC_UDP


def read_name(data: bytes, off: int) -> int:
    """End of an uncompressed name at off (questions never use compression)."""
    total = 0
    while True:
        if off >= len(data):
            raise BadQuery("name runs past the end", RCODE_FORMERR)
        n = data[off]
        if n & 0xC0:
            raise BadQuery("compressed or extended label in the question", RCODE_FORMERR)
        off += 1 + n
        total += 1 + n
        if total > 255:
            raise BadQuery("name longer than 255 bytes", RCODE_FORMERR)
        if n == 0:
            return off


def parse_query(data: bytes) -> Query:
    if len(data) < 12:
        raise BadQuery("shorter than a header", None)
    qid, flags, qd, an, ns, ar = struct.unpack_from("!6H", data)
    if flags & 0x8000:
        raise BadQuery("a response, not a query", None)
    if (flags >> 11) & 0xF:
        raise BadQuery("opcode not QUERY", RCODE_NOTIMP)
    if qd != 1:
        raise BadQuery("not exactly one question", RCODE_FORMERR)
    end = read_name(data, 12)
    if end + 4 > len(data):
        raise BadQuery("question cut off", RCODE_FORMERR)
    qtype, qclass = struct.unpack_from("!HH", data, end)
    wire = data[12:end]
    labels, off = [], 0
    while wire[off]:
        labels.append(wire[off + 1:off + 1 + wire[off]])
        off += 1 + wire[off]
    try:
        qname = b".".join(labels).decode("ascii").lower()
    except UnicodeDecodeError:
        qname = b".".join(labels).decode("latin-1").lower()
    edns, size, version, do = False, CLASSIC_UDP, 0, False
    if ar:
        try:
            msg = DNSRecord.parse(data)
        except Exception as e:  # dnslib raises several types on bad records
            raise BadQuery(f"bad record: {e}", RCODE_FORMERR) from None
        opts = [rr for rr in msg.ar if rr.rtype == OPT]
        if len(opts) > 1:
            raise BadQuery("more than one OPT record", RCODE_FORMERR)
        if opts:
            edns, size = True, opts[0].rclass
            version, do = (opts[0].ttl >> 16) & 0xFF, bool(opts[0].ttl & 0x8000)
    return Query(data, qid, flags, wire, qname, qtype, qclass, edns, size, version, do)


def opt_record(q: Query, ext_rcode: int = 0) -> bytes:
    """Our OPT record: root name, our payload size, the extended rcode, version 0, DO echoed."""
    return struct.pack("!BHHBBHH", 0, OPT, MAX_UDP, ext_rcode >> 4, 0, 0x8000 if q.do else 0, 0)


def response_flags(q: Query, rcode: int, aa: bool) -> int:
    """QR, opcode 0, AA when authoritative, RD and CD copied, RA (we recurse for other names)."""
    return 0x8000 | (0x0400 if aa else 0) | (q.flags & 0x0110) | 0x0080 | (rcode & 0xF)


def pack_answer(q: Query, rcode: int, answers=(), authority=(), additional=(), aa: bool = True) -> bytes:
    """A response as dnslib packs it for the lower-cased question, with the query's name bytes
    put back and no OPT record yet (finish() adds it and enforces the size)."""
    msg = DNSRecord(q=None)
    msg.add_question(DNSQuestion(q.qname + ".", q.qtype, q.qclass))
    msg.rr, msg.auth, msg.ar = list(answers), list(authority), list(additional)
    wire = bytearray(msg.pack())
    struct.pack_into("!HH", wire, 0, q.id, response_flags(q, rcode, aa))
    wire[12:12 + len(q.qname_wire)] = q.qname_wire
    return bytes(wire)


def error(q: Query, rcode: int) -> bytes:
    """Header and question only, with rcode (FORMERR, SERVFAIL, NOTIMP, REFUSED, BADVERS)."""
    return finish(q, pack_answer(q, rcode & 0xF, aa=False), udp=False, ext_rcode=rcode)


def header_error(data: bytes, rcode: int) -> bytes:
    """A reply to a query we could not read past its header: the header alone."""
    qid, flags = struct.unpack_from("!HH", data)
    return struct.pack("!6H", qid, 0x8000 | (flags & 0x7900) | rcode, 0, 0, 0, 0)


def set_tc(wire: bytes) -> bytes:
    return wire[:2] + struct.pack("!H", struct.unpack_from("!H", wire, 2)[0] | 0x0200) + wire[4:]


def finish(q: Query, wire: bytes, udp: bool, ext_rcode: int = 0) -> bytes:
    """Add the OPT record when the query had one, and truncate to the client's size over UDP:
    header and question with TC set, so the client asks again over TCP (RFC 7766)."""
    opt = opt_record(q, ext_rcode) if q.edns else b""
    if len(wire) + len(opt) > q.limit(udp):
        head = bytearray(set_tc(wire[:12 + len(q.qname_wire) + 4]))
        struct.pack_into("!4H", head, 4, 1, 0, 0, 0)
        wire = bytes(head)
    if opt:
        ar = struct.unpack_from("!H", wire, 10)[0]
        wire = wire[:10] + struct.pack("!H", ar + 1) + wire[12:] + opt
    return wire


def wire_name(name: str) -> bytes:
    """A lower-case absolute name in wire format."""
    out = b""
    for label in name.lower().rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


def packed_records(name: str, qtype: int, answers=(), authority=(), additional=()) -> tuple[bytes, int, int, int]:
    """A positive answer's records packed after the lower-cased question (compression pointers
    into it stay valid for the same name in any case) and their counts (an, ns, ar): what the
    fast path stores, and what the control plane reuses for hot names."""
    key = wire_name(name)
    q = Query(b"", 0, 0, key, name, qtype, 1, False, CLASSIC_UDP, 0, False)
    wire = pack_answer(q, 0, answers, authority, additional)
    an, ns, ar = struct.unpack_from("!3H", wire, 6)
    return wire[12 + len(key) + 4:], an, ns, ar


def answer_from_records(q: Query, records: bytes, an: int, ns: int, ar: int) -> bytes:
    """The response to q from packed_records() of its name and type: as pack_answer() would
    write it, without packing anything."""
    return (struct.pack("!6H", q.id, response_flags(q, 0, True), 1, an, ns, ar) + q.qname_wire
            + struct.pack("!HH", q.qtype, q.qclass) + records)

