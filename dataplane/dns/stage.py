"""The fast path's DNS table: every hot answer of the zone (A, AAAA, SRV of names that have them)
packed once, the way the control plane packs it, for the stage in dataplane.dnsstage."""
from __future__ import annotations

from dataplane.dnsstage import DnsTable

from .wire import Query, pack_answer, strip_header_question
from .zone import Zone


def wire_name(name: str) -> bytes:
    """A lower-case absolute name in wire format."""
    out = b""
    for label in name.lower().rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


def hot_entries(zone: Zone):
    """(wire name, qtype, records, an, ns, ar) per hot answer, as the control plane packs it."""
    for name, qtype in zone.hot_names():
        ans = zone.resolve(name, qtype)
        if ans.rcode or not ans.answers or ans.external:
            continue
        key = wire_name(name)
        q = Query(b"", 0, 0, key, name, qtype, 1, False, 512, 0, False)
        rrs, an, ns, ar = strip_header_question(pack_answer(q, 0, ans.answers, ans.authority, ans.additional), len(key))
        if len(rrs) <= 65535:
            yield key, qtype, rrs, an, ns, ar


def compile_table(zone: Zone, addresses, port: int = 53) -> DnsTable:
    """A new table for the stage; the caller swaps it into the pipeline between bursts."""
    return DnsTable(hot_entries(zone), addresses, port)
