"""Live ports: AF_PACKET on existing interfaces, TAP devices into the node's stack.

Both classes have one shape (fileno, rx, tx, stats, close, mac, ifindex, mtu), so the worker loop
does not care which it drives.
"""
from __future__ import annotations

from dataplane.afpacket import AfPacketPort
from dataplane.tap import TapPort

__all__ = ["AfPacketPort", "TapPort", "open_port"]


def open_port(port, index: int = 0, *, workers: int = 1):
    """Open the backend a config `Port` names. `index` is the calling worker's number out of
    `workers`: with several, each worker opens its own AF_PACKET socket on the interface and the
    kernel spreads flows over them (PACKET_FANOUT hash; the group id is the interface's ifindex,
    unique within its namespace)."""
    if not 0 <= index < workers:
        raise ValueError(f"worker index {index} out of range for {workers} workers")
    ifname = port.ifname or port.name
    if port.type == "tap":
        if workers > 1:
            raise ValueError(f"port {port.name!r}: a tap has one queue, so one worker only")
        return TapPort(ifname)
    if port.type != "afpacket":
        raise ValueError(f"port {port.name!r}: unknown type {port.type!r}")
    if workers == 1:
        return AfPacketPort(ifname)
    import socket
    return AfPacketPort(ifname, fanout_group=socket.if_nametoindex(ifname) & 0xffff)
