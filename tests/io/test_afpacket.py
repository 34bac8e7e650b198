"""AfPacketPort over a veth pair between two throwaway namespaces: real frames from the peer's
raw sockets and stack, checked byte for byte and with scapy."""
import errno
import socket
import struct
import threading
import time

import pytest

from dataplane.afpacket import AfPacketPort
from dataplane.burst import VERDICT, Burst
from dataplane.io import open_port

from conftest import ip, netns, rx_frames

scapy_all = pytest.importorskip("scapy.all")
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether  # noqa: E402

ETH_TEST = 0x88B5        # IEEE local experimental ethertype: our frames, nothing else's
FORWARD = 1 << VERDICT["forward"]


def test_frame(src: bytes, dst: bytes, seq: int, size: int = 64) -> bytes:
    head = dst + src + struct.pack("!HI", ETH_TEST, seq)
    return head + bytes((seq + i) & 0xFF for i in range(size - len(head)))


test_frame.__test__ = False   # a helper, not a test


def is_test(frame: bytes) -> bool:
    return frame[12:14] == struct.pack("!H", ETH_TEST)


def seq_of(frame: bytes) -> int:
    return struct.unpack_from("!I", frame, 14)[0]


@pytest.fixture
def port(veth_lab):
    with netns(veth_lab.dut):
        p = AfPacketPort(veth_lab.dut_if)
    with p:
        yield p


def test_identity(port, veth_lab):
    assert port.mac == veth_lab.dut_mac
    assert port.mtu == 1500
    assert port.ifindex > 0
    assert port.fileno() >= 0
    assert port.rx(Burst(8), 0) == 0      # nothing pending: returns at once


def test_rx_byte_exact(port, veth_lab):
    sizes = [60, 64, 65, 128, 511, 1000, 1514]
    sent = [test_frame(veth_lab.peer_mac, veth_lab.dut_mac, i, n) for i, n in enumerate(sizes)]
    before = time.time_ns()
    with veth_lab.peer_socket() as s:
        for f in sent:
            s.send(f)
    burst = Burst(64)
    got, metas = [], []
    deadline = time.monotonic() + 5
    while len(got) < len(sent) and time.monotonic() < deadline:
        if port.rx(burst, 7):
            for i in range(len(burst)):
                if is_test(burst.frame(i)):
                    got.append(burst.frame(i))
                    metas.append(burst.meta(i))
        else:
            time.sleep(0.01)
    assert got == sent
    for m, f in zip(metas, sent):
        assert m["len"] == len(f) and m["port_in"] == 7 and m["verdict"] == "pending"
        assert m["flags"] == 0 and m["nexthop"] == -1
        assert before - 10**9 <= m["ts_ns"] <= time.time_ns()
    assert port.stats()["rx"] >= len(sent)


def test_rx_resumes_partly_consumed_block(port, veth_lab):
    """Bursts smaller than what one ring block holds: each rx() continues where the last one
    stopped, nothing repeated, nothing skipped."""
    sent = [test_frame(veth_lab.peer_mac, veth_lab.dut_mac, i) for i in range(50)]
    with veth_lab.peer_socket() as s:
        for f in sent:
            s.send(f)
    got = rx_frames(port, Burst(3), len(sent), match=is_test)
    assert got == sent


def test_tx_reaches_peer_and_is_not_received_back(port, veth_lab):
    frames = [test_frame(veth_lab.dut_mac, veth_lab.peer_mac, 1000 + i, 64 + i) for i in range(20)]
    burst = Burst(32)
    burst.extend(frames)
    burst.send_all(0)
    burst.verdicts[3] = VERDICT["drop"]              # not in the mask: stays home
    burst.verdicts[4] = VERDICT["reject"]            # in the mask below
    with veth_lab.peer_socket() as s:
        s.settimeout(2)
        assert port.tx(burst, 1, FORWARD) == 0       # every frame's port_out is 0
        assert port.tx(burst, 0, FORWARD | 1 << VERDICT["reject"]) == 19
        want = [f for i, f in enumerate(frames) if i != 3]
        seen = []
        while len(seen) < len(want):
            f = s.recv(4096)
            if is_test(f):
                seen.append(f)
    assert seen == want
    assert rx_frames(port, Burst(64), 1, timeout=0.5, match=is_test) == []
    st = port.stats()
    assert st["tx"] == 19 and st["tx_errors"] == 0


def test_tx_longer_than_mtu_is_an_error_not_a_send(port, veth_lab):
    burst = Burst(4, slot_size=4096 + 128)
    burst.append(test_frame(veth_lab.dut_mac, veth_lab.peer_mac, 1, 1514))   # MTU + 14: fine
    burst.append(test_frame(veth_lab.dut_mac, veth_lab.peer_mac, 2, 1515))
    tagged = test_frame(veth_lab.dut_mac, veth_lab.peer_mac, 3, 1518)
    burst.append(tagged[:12] + b"\x81\x00\x00\x05" + tagged[12:-4])           # 1500 + 18: fine
    burst.append(b"\x00" * 10)                                                # not even Ethernet
    burst.send_all(0)
    assert port.tx(burst, 0, FORWARD) == 2
    st = port.stats()
    assert st["tx"] == 2 and st["tx_errors"] == 2


def udp_sum_ok(frame: bytes) -> bool:
    pkt = Ether(frame)
    check = pkt[UDP].chksum
    del pkt[UDP].chksum
    return check != 0 and Ether(bytes(pkt))[UDP].chksum == check


def test_checksum_offload_completed_on_rx(port, veth_lab):
    features = ip("ethtool", "-k", veth_lab.peer_if, ns=veth_lab.peer)
    assert "tx-checksum-ip-generic: on" in features    # the peer leaves checksums to "the NIC"
    with veth_lab.udp_socket() as u:
        for n in (1, 100, 1000):           # 1: a 43-byte frame, the field at its very end
            u.sendto(bytes(i & 0xFF for i in range(n)), (veth_lab.dut_ip, 9999))
    udp = rx_frames(port, Burst(16), 3, match=lambda f: UDP in Ether(f))
    assert len(udp) == 3
    assert all(udp_sum_ok(f) for f in udp)
    # TCP too: a SYN from a connect() nobody answers.
    with netns(veth_lab.peer):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with t:
        t.setblocking(False)
        assert t.connect_ex((veth_lab.dut_ip, 80)) == errno.EINPROGRESS
        syn = rx_frames(port, Burst(16), 1, match=lambda f: TCP in Ether(f))
    assert syn
    pkt = Ether(syn[0])
    check = pkt[TCP].chksum
    del pkt[TCP].chksum
    assert Ether(bytes(pkt))[TCP].chksum == check
    assert port.stats()["csum_fixed"] >= 4


def test_vlan_tags_are_put_back(port, veth_lab):
    base = Ether(src=veth_lab.peer_mac, dst=veth_lab.dut_mac)
    sent = [bytes(base / Dot1Q(vlan=100, prio=5) / IP(src="10.9.0.1", dst="10.9.0.2") / UDP() / b"one"),
            bytes(base / Dot1Q(vlan=0, prio=3) / IP(src="10.9.0.1", dst="10.9.0.2") / UDP() / b"prio"),
            bytes(base / Dot1AD(vlan=7) / Dot1Q(vlan=200) / IP(src="10.9.0.1", dst="10.9.0.2") / UDP())]
    sent = [f + bytes(max(0, 60 - len(f))) for f in sent]
    with veth_lab.peer_socket() as s:
        for f in sent:
            s.send(f)
    got = rx_frames(port, Burst(16), 3, match=lambda f: f[12:14] in (b"\x81\x00", b"\x88\xa8"))
    assert got == sent


def test_oversize_frames_are_flagged_and_counted(veth_lab):
    ip("ip", "link", "set", veth_lab.peer_if, "mtu", "9000", ns=veth_lab.peer)
    ip("ip", "link", "set", veth_lab.dut_if, "mtu", "9000", ns=veth_lab.dut)
    with netns(veth_lab.dut):
        port = AfPacketPort(veth_lab.dut_if)
    with port, veth_lab.peer_socket() as s:
        assert port.mtu == 9000
        s.send(test_frame(veth_lab.peer_mac, veth_lab.dut_mac, 1, 5000))
        s.send(test_frame(veth_lab.peer_mac, veth_lab.dut_mac, 2, 100))
        burst = Burst(8)                        # 2048-byte slots
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            got += [burst.meta(i) for i in range(port.rx(burst, 0))
                    if burst.meta(i)["len"] == 0 or is_test(burst.frame(i))]
            time.sleep(0.01)
        assert [(m["len"], m["flags"]) for m in got] == [(0, 0x0100), (100, 0)]
        assert port.stats()["oversize"] == 1


def test_many_frames_without_loss(port, veth_lab):
    total = 10_000
    sock = veth_lab.peer_socket()

    def send():
        with sock:
            for i in range(total):
                sock.send(test_frame(veth_lab.peer_mac, veth_lab.dut_mac, i))
                if i % 500 == 499:
                    time.sleep(0.002)      # a modest rate: the ring is not what is tested here

    sender = threading.Thread(target=send)
    sender.start()
    try:
        got = rx_frames(port, Burst(256), total, timeout=30, match=is_test)
    finally:
        sender.join()
    assert [seq_of(f) for f in got] == list(range(total))
    assert port.stats()["rx_dropped"] == 0


def test_ring_overflow_is_counted(veth_lab):
    with netns(veth_lab.dut):
        port = AfPacketPort(veth_lab.dut_if, frames=16, block_size=4096)   # 8 blocks of 4 KiB
    total = 3000
    with port, veth_lab.peer_socket() as s:
        for i in range(total):
            s.send(test_frame(veth_lab.peer_mac, veth_lab.dut_mac, i))
        time.sleep(0.1)             # let the last blocks retire
        got = rx_frames(port, Burst(256), total, timeout=0.5, match=is_test)
        st = port.stats()
    assert 0 < len(got) < total
    assert st["rx_dropped"] > 0
    assert len(got) + st["rx_dropped"] <= total
    seqs = [seq_of(f) for f in got]
    assert seqs == sorted(set(seqs))       # what did arrive is whole and in order


def test_fanout_spreads_flows_without_duplicates(veth_lab):
    with netns(veth_lab.dut):
        ports = [AfPacketPort(veth_lab.dut_if, fanout_group=4242) for _ in range(2)]
    total = 400
    base = Ether(src=veth_lab.peer_mac, dst=veth_lab.dut_mac)
    try:
        frames = [bytes(base / IP(src="10.9.0.1", dst="10.9.0.2", id=i)
                        / UDP(sport=1000 + i % 64, dport=53) / b"fanout") for i in range(total)]
        with veth_lab.peer_socket() as s:
            for f in frames:
                s.send(f)
        ids = [[], []]
        deadline = time.monotonic() + 5
        burst = Burst(256)
        while sum(map(len, ids)) < total and time.monotonic() < deadline:
            for k, p in enumerate(ports):
                for i in range(p.rx(burst, k)):
                    f = burst.frame(i)
                    if f.endswith(b"fanout"):
                        ids[k].append(Ether(f)[IP].id)
            time.sleep(0.005)
    finally:
        for p in ports:
            p.close()
    assert ids[0] and ids[1]
    assert sorted(ids[0] + ids[1]) == list(range(total))
    assert all(p.stats()["rx_dropped"] == 0 for p in ports)


def test_bad_conditions_are_clear_errors(veth_lab):
    with netns(veth_lab.dut):
        with pytest.raises(OSError, match="no such interface") as e:
            AfPacketPort("dpt-missing0")
        assert e.value.errno == errno.ENODEV
        with pytest.raises(ValueError, match="power of two"):
            AfPacketPort(veth_lab.dut_if, block_size=5000)
        with pytest.raises(ValueError, match="exceeds"):
            AfPacketPort(veth_lab.dut_if, frames=1 << 24)
        port = AfPacketPort(veth_lab.dut_if)
    port.close()
    port.close()
    with pytest.raises(ValueError, match="closed"):
        port.rx(Burst(4), 0)
    with pytest.raises(ValueError, match="closed"):
        port.fileno()


def test_open_port_from_config(veth_lab):
    from dataplane.config.dataplane import Port
    cfg = Port(name="uplink", mac=b"\x02" * 6, index=0, ifname=veth_lab.dut_if)
    with netns(veth_lab.dut):
        with open_port(cfg) as p:
            assert isinstance(p, AfPacketPort) and p.ifname == veth_lab.dut_if
        workers = [open_port(cfg, i, workers=2) for i in range(2)]
    for p in workers:
        p.close()
    with pytest.raises(ValueError):
        open_port(cfg, 2, workers=2)


def test_gso_super_frames_are_oversize_not_crashes(port, veth_lab):
    """A TCP stream from a peer with TSO on: its segments cross the veth as 64 KiB GSO frames."""
    ip("ip", "addr", "add", f"{veth_lab.dut_ip}/24", "dev", veth_lab.dut_if, ns=veth_lab.dut)
    with netns(veth_lab.dut):
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with netns(veth_lab.peer):
        csock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with lsock, csock:
        lsock.bind((veth_lab.dut_ip, 5001))
        lsock.listen()
        csock.settimeout(5)
        csock.connect((veth_lab.dut_ip, 5001))
        conn, _ = lsock.accept()
        with conn:
            csock.sendall(bytes(256 * 1024))
            conn.settimeout(5)
            received = 0
            while received < 256 * 1024:
                received += len(conn.recv(1 << 20))
        burst = Burst(256)
        metas = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not any(m["flags"] & 0x0100 for m in metas):
            metas += [burst.meta(i) for i in range(port.rx(burst, 0))]
            time.sleep(0.01)
    big = [m for m in metas if m["flags"] & 0x0100]
    assert big and all(m["len"] == 0 for m in big)
    assert port.stats()["oversize"] >= len(big)
