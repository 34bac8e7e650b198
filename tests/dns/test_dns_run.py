"""Cluster DNS inside `dataplane run`: the hot queries answered by the fast-path stage straight
from the burst, the cluster DNS Service's endpoint replaced by the node's own server."""
from __future__ import annotations

import socket
import textwrap
import time

import dns.message
import dns.rdatatype
import pytest
from scapy.all import IP, UDP, Ether

from dataplane.control import request
from nstools import TAP_NODE_MAC, TAP_PEER_MAC, tap_node, tap_node_config

NODE_MAC, PEER_MAC = TAP_NODE_MAC, TAP_PEER_MAC
CONFIG = tap_node_config("dns: {}\n") + "---\n" + textwrap.dedent("""\
    apiVersion: v1
    kind: Service
    metadata: {name: kube-dns, namespace: kube-system}
    spec:
      clusterIP: 10.96.0.10
      ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {name: kube-dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: kube-dns}}
    addressType: IPv4
    ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
    endpoints: [{addresses: [10.244.9.9]}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: default}
    spec: {clusterIP: 10.96.0.20, ports: [{port: 80}]}
    """)


@pytest.fixture
def node(tmp_path):
    with tap_node(tmp_path, CONFIG, local_ips=["192.168.0.2"]) as (ns, sock, raw, _):
        raw.settimeout(0.2)
        yield ns, sock, raw


def ask(raw, name, rdtype="A", sport=40000):
    query = dns.message.make_query(name, rdtype)
    raw.send(bytes(Ether(src=PEER_MAC, dst=NODE_MAC) / IP(src="10.244.1.5", dst="10.96.0.10")
                   / UDP(sport=sport, dport=53) / query.to_wire()))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            data, addr = raw.recvfrom(4096)
        except socket.timeout:
            continue
        frame = Ether(data)
        if addr[2] != socket.PACKET_OUTGOING and UDP in frame and frame[UDP].sport == 53 \
                and frame[UDP].dport == sport:
            return frame, dns.message.from_wire(bytes(frame[UDP].payload))
    return None, None


def test_hot_queries_are_answered_by_the_stage(node):
    _, sock, raw = node
    frame, answer = ask(raw, "WEB.default.svc.cluster.local.")
    assert answer is not None and answer.rcode() == 0
    assert frame[IP].src == "10.96.0.10" and frame[IP].dst == "10.244.1.5"
    assert [r.to_text() for rr in answer.answer for r in rr] == ["10.96.0.20"]
    assert answer.question[0].name.to_text() == "WEB.default.svc.cluster.local."   # the asker's case
    stats = request(sock, {"cmd": "stats"})
    assert stats["counters"]["dns_answer"] >= 1 and stats["counters"]["dnat"] == 0


def test_the_dns_service_is_pointed_at_the_node_itself(node):
    _, sock, _ = node
    services = {(s["namespace"], s["name"]): s for s in request(sock, {"cmd": "services"})}
    endpoints = {(fe["protocol"], e["ip"], e["port"]) for fe in services[("kube-system", "kube-dns")]["frontends"]
                 for e in fe["endpoints"]}
    assert endpoints == {("UDP", "192.168.0.2", 53), ("TCP", "192.168.0.2", 53)}
