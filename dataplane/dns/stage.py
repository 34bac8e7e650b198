"""The fast path's DNS table: every hot answer of the zone (A, AAAA, SRV of names that have them)
packed once, the way the control plane packs it, for the stage in dataplane.dnsstage."""
from __future__ import annotations

from dataplane.dnsstage import DnsTable

from .wire import packed_records, wire_name
from .zone import HOT_TYPES, ServiceNames, Snapshot, Zone


def _entries(zone: Zone, names: ServiceNames, snap: Snapshot) -> list[tuple]:
    """(wire name, qtype, records, an, ns, ar) per hot answer of one Service. Its answers and
    their additional records only involve the Service's own names, so they stay valid for as
    long as its ServiceNames object does."""
    out = []
    for name, recs in names.names.items():
        for qtype in HOT_TYPES:
            if not recs.get(qtype):
                continue
            ans = zone.resolve(name, qtype, snap)
            rrs, an, ns, ar = packed_records(name, qtype, ans.answers, ans.authority, ans.additional)
            if len(rrs) <= 65535:
                out.append((wire_name(name), qtype, rrs, an, ns, ar))
    return out


class TableCompiler:
    """Builds DnsTables from a zone, repacking only the Services that changed since the last one."""

    def __init__(self, zone: Zone):
        self.zone = zone
        self._packed: dict[tuple[str, str], tuple[ServiceNames, list[tuple]]] = {}

    def compile(self, addresses, port: int = 53) -> DnsTable:
        """A new table for the stage; the caller swaps it into the pipeline between bursts."""
        snap = self.zone.snapshot
        packed = {}
        for key, names in snap.services.items():
            hit = self._packed.get(key)
            packed[key] = hit if hit is not None and hit[0] is names else (names, _entries(self.zone, names, snap))
        self._packed = packed
        return DnsTable((e for _, entries in packed.values() for e in entries), addresses, port)
