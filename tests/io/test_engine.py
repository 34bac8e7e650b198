"""The forwarding engine over a real port: it forwards on its own thread without the GIL, and a
pause parks it between bursts (nothing moves while paused, everything queued goes after)."""
import socket
import threading
import time

import pytest
from scapy.all import IP, UDP, Ether

from dataplane.config import loads
from dataplane.engine import Engine
from dataplane.io import open_port
from dataplane.tables import NodeDataplane

from nstools import netns


def node_config(lab):
    return loads(f"""
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: dut
nodeIPs: [10.201.0.2]
ports: [{{name: {lab.dut_if}, mac: "{lab.dut_mac.hex(':')}"}}]
routes: [{{prefix: 10.202.0.0/16, port: {lab.dut_if}, mac: "{lab.peer_mac.hex(':')}"}}]
""")


@pytest.fixture
def engine(veth_lab):
    node = NodeDataplane(node_config(veth_lab))
    with netns(veth_lab.dut):
        port = open_port(node.dp.ports[0])
    eng = Engine(node.pipeline, [port])
    thread = threading.Thread(target=eng.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not eng.is_running and time.monotonic() < deadline:
        time.sleep(0.01)
    yield eng
    eng.stop()
    thread.join(5)
    assert not thread.is_alive()
    port.close()


def frames(lab, n):
    pkt = Ether(src=lab.peer_mac, dst=lab.dut_mac) / IP(src="10.201.0.1", dst="10.202.0.9", ttl=9) / UDP(dport=9)
    return [bytes(pkt)] * n


def peer(lab):
    sock = lab.peer_socket()
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)   # SO_RCVBUFFORCE: room for every frame sent back
    return sock


def count_back(sock, want, timeout=5.0):
    got = 0
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while got < want and time.monotonic() < deadline:
        try:
            data, addr = sock.recvfrom(2048)
        except socket.timeout:
            continue
        if addr[2] != socket.PACKET_OUTGOING and data[12:14] == b"\x08\x00" and data[30:34] == bytes([10, 202, 0, 9]):
            got += 1
    return got


def test_forwards_without_the_gil(engine, veth_lab):
    sock = peer(veth_lab)
    for f in frames(veth_lab, 50):
        sock.send(f)
    assert count_back(sock, 50) == 50
    assert engine.stats()["packets"] >= 50


def test_nothing_moves_while_paused_and_all_moves_after(engine, veth_lab):
    sock = peer(veth_lab)
    engine.pause()
    try:
        for f in frames(veth_lab, 20):
            sock.send(f)
        assert count_back(sock, 1, timeout=0.5) == 0        # parked: the frames wait in the ring
    finally:
        engine.resume()
    assert count_back(sock, 20) == 20
    st = engine.stats()
    assert st["pauses"] == 1 and st["pause_max_ns"] >= 400_000_000


def test_pauses_nest_on_one_thread_and_resume_must_match(engine):
    engine.pause()
    engine.pause()
    engine.resume()
    engine.resume()
    with pytest.raises(RuntimeError):
        engine.resume()
    with engine.paused():
        pass
    assert engine.stats()["pauses"] == 2


def test_many_pauses_under_traffic_lose_nothing(engine, veth_lab):
    sock = peer(veth_lab)
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            with engine.paused():
                pass
    t = threading.Thread(target=churn)
    t.start()
    try:
        for k, f in enumerate(frames(veth_lab, 500)):
            sock.send(f)
            if k % 25 == 0:
                time.sleep(0.01)     # spread the traffic over many pauses
        assert count_back(sock, 500) == 500
    finally:
        stop.set()
        t.join()
    assert engine.stats()["pauses"] > 10


def test_pause_without_a_running_loop_returns_at_once(veth_lab):
    node = NodeDataplane(node_config(veth_lab))
    with netns(veth_lab.dut):
        port = open_port(node.dp.ports[0])
    try:
        eng = Engine(node.pipeline, [port])
        started = time.monotonic()
        with eng.paused():
            pass
        assert time.monotonic() - started < 0.5
    finally:
        port.close()
