"""Live-port fixtures: throwaway network namespaces joined by a veth pair.

Every namespace is named dpt-<random hex> and deleted at teardown whatever happened, which also
destroys the interfaces in it. Tests run the port inside a namespace by entering it on the test's
thread (setns) only while the socket or tap is created: a socket stays in the namespace it was
created in.
"""
from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

import pytest

from nstools import del_netns, ip, netns, new_netns, quiet_netns, require_netns  # noqa: F401 (re-exported)


@dataclass
class VethLab:
    """Namespace `peer` holds interface `peer_if`; namespace `dut` holds `dut_if`, the port
    under test. Addresses: peer 10.201.0.1/24; the DUT side has none (nothing in the dut
    namespace's stack answers), and the peer has a static neighbour 10.201.0.2 -> dut MAC."""
    peer: str
    dut: str
    peer_if: str = "vpeer"
    dut_if: str = "vdut"
    peer_ip: str = "10.201.0.1"
    dut_ip: str = "10.201.0.2"
    peer_mac: bytes = b""
    dut_mac: bytes = b""

    def peer_socket(self) -> socket.socket:
        """A raw AF_PACKET socket on the peer interface (sends frames as given, receives all)."""
        with netns(self.peer):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((self.peer_if, 0))
        return s

    def udp_socket(self) -> socket.socket:
        with netns(self.peer):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((self.peer_ip, 0))
        return s


def _mac(ifname: str, ns: str) -> bytes:
    return bytes.fromhex(ip("cat", f"/sys/class/net/{ifname}/address", ns=ns).strip().replace(":", ""))


@pytest.fixture
def veth_lab():
    require_netns()
    lab = VethLab(new_netns(), "")
    try:
        lab.dut = new_netns()
        for ns in (lab.peer, lab.dut):
            quiet_netns(ns)
        ip("ip", "link", "add", lab.peer_if, "netns", lab.peer, "type", "veth",
           "peer", "name", lab.dut_if, "netns", lab.dut)
        ip("ip", "link", "set", lab.peer_if, "up", ns=lab.peer)
        ip("ip", "link", "set", lab.dut_if, "up", ns=lab.dut)
        ip("ip", "addr", "add", f"{lab.peer_ip}/24", "dev", lab.peer_if, ns=lab.peer)
        lab.peer_mac = _mac(lab.peer_if, lab.peer)
        lab.dut_mac = _mac(lab.dut_if, lab.dut)
        ip("ip", "neigh", "replace", lab.dut_ip, "lladdr", lab.dut_mac.hex(":"),
           "dev", lab.peer_if, "nud", "permanent", ns=lab.peer)
        yield lab
    finally:
        for ns in (lab.peer, lab.dut):
            if ns:
                del_netns(ns)


@pytest.fixture
def netns_one():
    """A single quiet namespace (for tap tests)."""
    require_netns()
    name = new_netns()
    try:
        quiet_netns(name)
        yield name
    finally:
        del_netns(name)


def rx_frames(port, burst, want: int, timeout: float = 5.0, match=None) -> list[bytes]:
    """Poll `port` until `want` frames (passing `match`) arrived or `timeout` passed."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(port.fileno(), select.POLLIN)
    while len(got) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        n = port.rx(burst, 0)
        if n == 0:
            poller.poll(min(left, 0.05) * 1000)
            continue
        got.extend(f for f in burst.frames() if match is None or match(f))
    return got
