"""Issue 12 reproducers through the whole pipeline: TCP window tracking against off-path RST and
FIN, early drop under a SYN flood, IPv4 header checksums before conntrack, ICMP errors validated
before they are related to a flow, martian and spoofed sources, strict reverse path on pod
ports, and per-Service SNAT port exhaustion."""
from __future__ import annotations

import random

import numpy as np
import pytest
from scapy.all import ICMP, IP, TCP, UDP, Ether, IPerror, IPv6, TCPerror

from dataplane import conntrack as ct
from dataplane.burst import Burst
from dataplane.config import loads
from dataplane.tables import NodeDataplane
from dataplane.trace import trace_record

from test_service_flows import DATAPLANE, NODE_IP, NODE_MAC

POD, BACKEND, VIP = "10.244.0.11", "10.244.1.20", "10.96.0.10"
S = 1_000_000_000

# The packet-flow table's node (tests/test_service_flows.py), with its own conntrack mode.
CONFIG = DATAPLANE.split("---\napiVersion: kubeproxy")[0] + """---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
hostnameOverride: node-a
clusterCIDR: 10.244.0.0/16
conntrack: {tcpBeLiberal: LIBERAL}
""" + f"""---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec: {{type: NodePort, clusterIP: {VIP}, ports: [{{port: 80, targetPort: 8080, nodePort: 30080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
endpoints: [{{addresses: ["{BACKEND}"], nodeName: node-b}}]
ports: [{{port: 8080, protocol: TCP}}]
"""


class Node:
    def __init__(self, liberal=False, conntrack_size=None):
        text = CONFIG.replace("LIBERAL", str(liberal).lower())
        if conntrack_size:
            text = text.replace("clusterCIDRs:", f"conntrackSize: {conntrack_size}\nclusterCIDRs:")
        self.dp = NodeDataplane(loads(text))
        self.now = 1000 * S

    def send(self, *pkts, port="eth0", raw=False):
        burst = Burst(max(1, len(pkts)))
        burst.extend([p if raw else bytes(Ether(src="02:00:00:00:00:aa", dst=NODE_MAC) / p)
                      for p in pkts], port_in=self.dp.port_names.index(port))
        self.now += S
        self.dp.pipeline.process(burst, now_ns=self.now)
        return [(trace_record(burst, i, i, self.dp.port_names), Ether(burst.frame(i)))
                for i in range(len(burst))]

    def one(self, pkt, port="eth0", raw=False):
        (rec, frame), = self.send(pkt, port=port, raw=raw)
        return rec, frame

    def entry(self):
        return self.dp.conntrack.lookup(POD, VIP, 40000, 80, 6)


def c2s(node, flags, seq, ack=0, payload=b"", **kw):
    """Client pod -> ClusterIP, from the pod port."""
    return node.one(IP(src=POD, dst=VIP) / TCP(sport=40000, dport=80, flags=flags, seq=seq,
                                                ack=ack, window=kw.pop("window", 64000), **kw)
                    / payload, port="cni0")


def s2c(node, flags, seq, ack=0, payload=b"", **kw):
    """Backend -> client (reply direction), from the uplink."""
    return node.one(IP(src=BACKEND, dst=POD) / TCP(sport=8080, dport=40000, flags=flags, seq=seq,
                                                    ack=ack, window=kw.pop("window", 64000), **kw)
                    / payload)


def established(node):
    """A connection through the Service with 100 bytes each way: client ISN 1000, server 5000."""
    assert c2s(node, "S", 1000)[0]["verdict"] == "forward"
    assert s2c(node, "SA", 5000, 1001)[0]["verdict"] == "forward"
    assert c2s(node, "A", 1001, 5001)[0]["verdict"] == "forward"
    assert c2s(node, "PA", 1001, 5001, b"x" * 100)[0]["verdict"] == "forward"
    assert s2c(node, "PA", 5001, 1101, b"y" * 100)[0]["verdict"] == "forward"
    assert c2s(node, "A", 1101, 5101)[0]["verdict"] == "forward"
    e = node.entry()
    assert e["state"] == "ESTABLISHED" and "ASSURED" in e["flags"]
    return e


# ---- item 3: window tracking ----------------------------------------------------------------

def test_off_path_rst_with_random_sequence_never_closes_the_connection():
    node = Node()
    before = established(node)
    rng = random.Random(12)
    for _ in range(200):
        seq = rng.randrange(1 << 32)
        if seq == 5101:
            continue
        rec, _ = s2c(node, "R", seq)
        assert (rec["verdict"], rec["reason"]) == ("drop", "invalid_state"), seq
    e = node.entry()
    assert e["state"] == "ESTABLISHED" and e["expires_ns"] >= before["expires_ns"]
    # The connection still works both ways, to the same backend.
    assert c2s(node, "PA", 1101, 5101, b"z")[1][IP].dst == BACKEND
    assert s2c(node, "A", 5101, 1102)[0]["verdict"] == "forward"


def test_spoofed_fin_outside_the_window_does_not_shorten_the_timeout():
    node = Node()
    established(node)
    expires = node.entry()["expires_ns"]
    rec, _ = s2c(node, "FA", 5101 + 2_000_000_000, 1101)
    assert (rec["verdict"], rec["reason"]) == ("drop", "invalid_state")
    e = node.entry()
    assert e["state"] == "ESTABLISHED" and e["expires_ns"] == expires   # still 24 h, not 120 s
    assert node.dp.conntrack.stats()["out_of_window"] == 1


def test_real_fin_and_real_rst_still_work():
    node = Node()
    established(node)
    assert s2c(node, "FA", 5101, 1101)[0]["verdict"] == "forward"
    assert node.entry()["state"] == "FIN_WAIT"
    assert c2s(node, "A", 1101, 5102)[0]["verdict"] == "forward"
    assert node.entry()["state"] == "CLOSE_WAIT"
    assert c2s(node, "R", 1101)[0]["verdict"] == "forward"         # exactly the expected seq
    assert node.entry()["state"] == "CLOSE"


def test_in_window_rst_that_is_not_exact_keeps_the_state_for_a_challenge_ack():
    node = Node()
    established(node)
    rec, _ = s2c(node, "R", 5101 + 500)        # inside the window, not the next sequence number
    assert rec["verdict"] == "forward"
    assert node.entry()["state"] == "ESTABLISHED"


def test_data_beyond_the_receivers_window_is_invalid():
    node = Node()
    established(node)
    rec, _ = c2s(node, "PA", 1101 + 10_000_000, 5101, b"late")
    assert (rec["verdict"], rec["reason"]) == ("drop", "invalid_state")


def test_tcp_be_liberal_restores_the_liberal_mode():
    node = Node(liberal=True)
    assert node.dp.conntrack.tcp_be_liberal
    established(node)
    assert c2s(node, "PA", 1101 + 10_000_000, 5101, b"late")[0]["verdict"] == "forward"
    # Even liberal, a RST below what the peer acknowledged is invalid (as in Linux).
    assert s2c(node, "R", (5101 - 1_000_000) % (1 << 32))[0]["reason"] == "invalid_state"


def test_window_scale_from_the_syn_options_widens_the_window():
    t = ct.Conntrack(16)
    i = t.create({"src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1, "dport": 2, "proto": 6},
                 {"src": "10.0.0.2", "dst": "10.0.0.1", "sport": 2, "dport": 1, "proto": 6})
    O, R = ct.CT_DIR_ORIG, ct.CT_DIR_REPLY
    assert t.update(i, O, ct.TCP_SYN, seq=100, win=1000, wscale=7) == ct.CT_ESTABLISHED
    assert t.update(i, R, ct.TCP_SYN | ct.TCP_ACK, seq=900, ack=101, win=1000,
                    wscale=7) == ct.CT_REPLY
    assert t.update(i, O, ct.TCP_ACK, seq=101, ack=901, win=1000) == ct.CT_ESTABLISHED
    assert t.update(i, R, ct.TCP_ACK, seq=901, ack=101, win=1000) == ct.CT_REPLY
    w = t.window(i)
    assert w[0]["td_scale"] == w[1]["td_scale"] == 7
    # 1000 << 7 = 128000 bytes of window: data 100 kB ahead is in it.
    assert t.update(i, O, ct.TCP_ACK, seq=101 + 100_000, ack=901, win=1000,
                    payload=1000) == ct.CT_ESTABLISHED
    # Without a scale option from both sides nothing is scaled: the same segment is invalid.
    j = t.create({"src": "10.0.0.1", "dst": "10.0.0.2", "sport": 3, "dport": 2, "proto": 6},
                 {"src": "10.0.0.2", "dst": "10.0.0.1", "sport": 2, "dport": 3, "proto": 6})
    t.update(j, O, ct.TCP_SYN, seq=100, win=1000, wscale=7)
    t.update(j, R, ct.TCP_SYN | ct.TCP_ACK, seq=900, ack=101, win=1000)
    t.update(j, O, ct.TCP_ACK, seq=101, ack=901, win=1000)
    t.update(j, R, ct.TCP_ACK, seq=901, ack=101, win=1000)
    assert t.window(j)[0]["td_scale"] == 0
    assert t.update(j, O, ct.TCP_ACK, seq=101 + 100_000, ack=901, win=1000,
                    payload=1000) == ct.CT_INVALID


def test_mid_stream_pick_up_starts_from_the_first_packet_liberally():
    """No SYN seen (loose pick-up): Linux takes the window from the first packet and keeps the
    window checks off for the connection, since the scale is unknown."""
    t = ct.Conntrack(16)
    o = {"src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1, "dport": 2, "proto": 6}
    i = t.create(o, {"src": "10.0.0.2", "dst": "10.0.0.1", "sport": 2, "dport": 1, "proto": 6})
    assert t.update(i, ct.CT_DIR_ORIG, ct.TCP_ACK, seq=7000, ack=3000, win=500,
                    payload=10) == ct.CT_ESTABLISHED
    w = t.window(i)
    assert w[0]["td_end"] == 7010 and w[0]["flags"] & ct.TCPW_LIBERAL
    assert t.update(i, ct.CT_DIR_REPLY, ct.TCP_ACK, seq=3000 + 10**8, ack=7010) == ct.CT_REPLY


def test_restored_connection_keeps_its_window(tmp_path):
    node = Node()
    established(node)
    path = tmp_path / "ct.state"
    assert node.dp.conntrack.save(path) == 1
    fresh = Node()
    assert fresh.dp.conntrack.restore(str(path), fresh.now) == 1
    assert s2c(fresh, "R", 5101 + 3_000_000_000)[0]["reason"] == "invalid_state"
    assert c2s(fresh, "PA", 1101, 5101, b"more")[0]["verdict"] == "forward"
    assert fresh.entry()["state"] == "ESTABLISHED"


# ---- item 4: a full table, bad header checksums, SNAT exhaustion ---------------------------

def test_spoofed_syn_flood_does_not_keep_the_table_full():
    node = Node(conntrack_size=256)
    rng = random.Random(4)
    flood = [IP(src=f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}", dst=NODE_IP)
             / TCP(sport=rng.randrange(1024, 65536), dport=30080, flags="S",
                   seq=rng.randrange(1 << 32)) for _ in range(2000)]
    for k in range(0, len(flood), 250):
        node.send(*flood[k:k + 250])
    assert len(node.dp.conntrack) == 256
    rec, frame = node.one(IP(src="203.0.113.5", dst=NODE_IP) / TCP(sport=5555, dport=30080,
                                                                   flags="S"))
    assert rec["verdict"] == "forward" and frame[IP].dst == BACKEND
    assert node.dp.conntrack.stats()["early_drops"] > 0


def test_syn_with_a_bad_ipv4_header_checksum_creates_no_entry():
    node = Node()
    pkt = IP(src="203.0.113.5", dst=NODE_IP, chksum=0x1234) / TCP(sport=5555, dport=30080,
                                                                   flags="S")
    rec, _ = node.one(pkt)
    assert (rec["verdict"], rec["reason"]) == ("drop", "bad_csum")
    assert len(node.dp.conntrack) == 0


def test_nat_port_exhaustion_is_counted_per_service():
    node = Node()
    t = node.dp.conntrack
    # Every masquerade port towards the backend is taken: replies BACKEND:8080 -> node:p.
    ports = np.arange(1024, 65536)
    orig = np.zeros(len(ports), dtype=ct.TUPLE_DTYPE)
    reply = np.zeros(len(ports), dtype=ct.TUPLE_DTYPE)
    orig["saddr"][:, 0] = 0x0A0A0000 + np.arange(len(orig))
    orig["daddr"][:, 0] = 0x0A000001
    orig["sport"], orig["dport"] = 1, 2
    reply["saddr"][:, 0] = int.from_bytes(bytes(map(int, BACKEND.split("."))), "big")
    reply["daddr"][:, 0] = int.from_bytes(bytes(map(int, NODE_IP.split("."))), "big")
    reply["sport"] = 8080
    reply["dport"] = ports          # 5555, the client's own port, among them
    for a in (orig, reply):
        a["proto"], a["family"] = 6, 4
    assert (t.create_many(orig, reply, now_ns=node.now) >= 0).all()
    rec, _ = node.one(IP(src="203.0.113.5", dst=NODE_IP) / TCP(sport=5555, dport=30080, flags="S"))
    assert (rec["verdict"], rec["reason"]) == ("drop", "nat_exhausted")
    svc = node.dp.proxier.lb.service_id_of(NODE_IP, 30080, 6)
    assert node.dp.ctnat.nat_exhausted() == {svc: 1}


# ---- item 6: ICMP errors ---------------------------------------------------------------------

def icmp_error_for_client_syn(node, outer_dst=NODE_IP, chksum=None):
    """An ICMP port unreachable from the backend's network quoting the (translated) SYN."""
    rec, frame = node.one(IP(src="203.0.113.5", dst=NODE_IP) / TCP(sport=5555, dport=30080,
                                                                   flags="S", seq=77))
    sent = frame[IP]
    err = IP(src="192.168.0.3", dst=outer_dst) / ICMP(type=3, code=3, chksum=chksum) / \
        IPerror(bytes(sent)[:28])
    return node.one(err)


def test_icmp_error_for_a_tracked_flow_is_related():
    rec, frame = icmp_error_for_client_syn(Node())
    assert rec["verdict"] == "forward" and frame[IP].dst == "203.0.113.5"
    assert frame[IPerror].src == "203.0.113.5" and frame[TCPerror].dport == 30080


def test_icmp_error_with_a_bad_checksum_is_dropped():
    rec, _ = icmp_error_for_client_syn(Node(), chksum=0xdead)
    assert (rec["verdict"], rec["reason"]) == ("drop", "bad_l4_csum")


def test_icmp_error_addressed_to_another_host_is_not_related():
    rec, _ = icmp_error_for_client_syn(Node(), outer_dst="192.168.0.77")
    assert (rec["verdict"], rec["reason"]) == ("drop", "invalid_state")


# ---- item 7: martian and spoofed sources, reverse path -------------------------------------

@pytest.mark.parametrize("src,port,reason", [
    ("127.0.0.1", "eth0", "martian_src"),
    ("0.1.2.3", "eth0", "martian_src"),
    ("255.255.255.255", "eth0", "martian_src"),
    ("224.0.0.5", "eth0", "martian_src"),
    ("240.0.0.1", "eth0", "martian_src"),
    ("127.0.0.1", "cni0", "martian_src"),
    (NODE_IP, "eth0", "spoofed_src"),
    (POD, "eth0", "spoofed_src"),            # a local pod's address from the uplink
    ("10.244.1.5", "cni0", "rpf"),           # a pod sending from an address not its own
    ("203.0.113.5", "cni0", "rpf"),
    ("::1", "eth0", "martian_src"),
    ("ff02::1", "eth0", "martian_src"),
    ("::ffff:10.0.0.1", "eth0", "martian_src"),
    ("fd00::2", "eth0", "spoofed_src"),
    ("fd00:244::11", "eth0", "spoofed_src"),
    ("fd00:244:0:1::5", "cni0", "rpf"),
])
def test_bad_sources_are_dropped_before_conntrack(src, port, reason):
    node = Node()
    assert node.dp.pipeline.ip_input.pod_ports == [1]       # cni0; eth0 has gateway routes
    dst = NODE_IP if ":" not in src else "fd00::2"
    l3 = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    rec, _ = node.one(l3 / TCP(sport=1234, dport=30080, flags="S"), port=port)
    assert (rec["verdict"], rec["reason"]) == ("drop", reason)
    assert len(node.dp.conntrack) == 0


@pytest.mark.parametrize("src,port", [
    (POD, "cni0"), ("fd00:244::11", "cni0"), ("203.0.113.5", "eth0"), ("10.244.1.5", "eth0"),
    ("fe80::1", "cni0"),
])
def test_good_sources_pass(src, port):
    node = Node()
    dst = "10.244.1.9" if ":" not in src else "fd00:244:0:1::9"
    l3 = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    rec, _ = node.one(l3 / UDP(sport=1234, dport=53), port=port)
    assert rec["reason"] not in ("martian_src", "spoofed_src", "rpf", "bad_csum"), rec


@pytest.mark.parametrize("sack_ok,verdict", [(True, "drop"), (False, "forward")])
def test_sack_blocks_count_only_when_both_sides_permitted_them(sack_ok, verdict):
    """tcp_sack(): with SACK permitted, a SACK edge beyond anything sent is an ACK over the
    upper bound (invalid); without it the option is not looked at."""
    node = Node()
    opts = [("SAckOK", b"")] if sack_ok else []
    assert c2s(node, "S", 1000, options=opts)[0]["verdict"] == "forward"
    assert s2c(node, "SA", 5000, 1001, options=opts)[0]["verdict"] == "forward"
    assert c2s(node, "A", 1001, 5001)[0]["verdict"] == "forward"
    assert c2s(node, "PA", 1001, 5001, b"x" * 100)[0]["verdict"] == "forward"
    assert s2c(node, "A", 5001, 1051, options=[("SAck", (1061, 1101))])[0]["verdict"] == "forward"
    rec, _ = s2c(node, "A", 5001, 1051, options=[("SAck", (1061, 900_000))])
    assert rec["verdict"] == verdict
