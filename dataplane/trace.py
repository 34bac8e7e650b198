"""Per-packet trace records (the `--trace` JSON lines). Slow path: only built when asked for."""
from __future__ import annotations

import json
from typing import IO, Sequence

from dataplane.burst import Burst

__all__ = ["PROTO_NAMES", "TraceWriter", "trace_record"]

PROTO_NAMES = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 51: "AH",
               58: "ICMPv6", 89: "OSPF", 132: "SCTP"}
_LEAVES = ("forward", "local")   # the packet itself goes on
_SENT = ("forward", "reject")     # a frame leaves a port: the packet, or the answer to it


def trace_record(burst: Burst, i: int, index: int, port_names: Sequence[str]) -> dict:
    """What happened to packet i of the burst; `out` is the packet as it leaves, after rewrites."""
    meta = burst.meta(i)
    verdict = meta["verdict"]
    out = None
    t = meta["t"]
    if verdict in _LEAVES and t["family"]:
        out = {"src": t["src"], "dst": t["dst"], "sport": t["sport"], "dport": t["dport"],
               "proto": PROTO_NAMES.get(t["proto"], str(t["proto"]))}
    port = port_names[meta["port_out"]] if verdict in _SENT else None
    return {"index": index, "verdict": verdict, "reason": meta["reason"], "port": port, "out": out}


class TraceWriter:
    """Writes one JSON object per input packet, in input order."""

    def __init__(self, stream: IO[str], port_names: Sequence[str]):
        self._stream = stream
        self._ports = tuple(port_names)
        self.index = 0

    def write(self, burst: Burst) -> None:
        for i in range(len(burst)):
            rec = trace_record(burst, i, self.index, self._ports)
            self._stream.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self.index += 1
