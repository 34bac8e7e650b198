"""Regenerates dataplane/demo/demo.pcap, the capture the quick-start demo replays.

Traffic as node-a (dataplane/demo/demo.yaml) would see it: pods talking across nodes, to the
internet and to the node, plus the malformed and expiring packets a real link also carries.
Run: .venv/bin/python scripts/make_demo_pcap.py
"""
import random
from pathlib import Path

from scapy.all import ARP, DNS, DNSQR, ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw, wrpcap

OUT = Path(__file__).resolve().parents[1] / "dataplane" / "demo" / "demo.pcap"
POD_A, POD_B = "10.244.0.10", "10.244.0.11"
REMOTE_POD = "10.244.1.20"
NODE = "02:00:00:00:00:01"


def frames(rng: random.Random):
    pod = Ether(src="0a:58:0a:f4:00:0a", dst=NODE)
    uplink = Ether(src="02:00:00:00:00:fe", dst=NODE)
    for i in range(300):  # pod -> pod on node-b: routed to node-b, source kept
        yield pod / IP(src=POD_A, dst=REMOTE_POD) / TCP(sport=40000 + i, dport=8080, flags="S")
    for i in range(200):  # node-b's pod -> local pod
        yield uplink / IP(src=REMOTE_POD, dst=POD_B) / TCP(sport=8080, dport=40000 + i, flags="SA")
    for i in range(200):  # pod -> internet DNS: leaves SNATed to the node IP
        yield pod / IP(src=POD_A, dst="1.1.1.1") / UDP(sport=50000 + i, dport=53) / DNS(
            qd=DNSQR(qname=f"svc{i}.example.com"))
    for i in range(100):  # client -> the node itself
        yield uplink / IP(src=f"192.168.0.{100 + i % 50}", dst="192.168.0.2") / TCP(
            sport=30000 + i, dport=22, flags="S")
    for i in range(100):  # IPv6 pod -> pod on node-b
        yield pod / IPv6(src="fd00:244::10", dst="fd00:244:1::20") / UDP(sport=5000 + i, dport=53)
    for i in range(50):  # tagged traffic on the uplink
        yield uplink / Dot1Q(vlan=100) / IP(src="8.8.8.8", dst=POD_A) / ICMP(id=i, seq=i)
    for i in range(20):  # traceroute probes that expire here
        yield pod / IP(src=POD_A, dst="9.9.9.9", ttl=1) / UDP(sport=33434 + i, dport=33434)
    for i in range(20):
        yield uplink / ARP(op=1, psrc="192.168.0.1", pdst="192.168.0.2")
    for i in range(100):  # pod -> Service web's ClusterIP: DNAT to a pod on either node
        yield pod / IP(src=POD_A, dst="10.96.0.10") / TCP(sport=42000 + i, dport=80, flags="S")
    for i in range(50):  # outside client -> NodePort: DNAT and masquerade
        yield uplink / IP(src=f"198.51.100.{1 + i}", dst="192.168.0.2") / TCP(
            sport=51000 + i, dport=30080, flags="S")
    for i in range(10):  # Service without endpoints: answered with a RST
        yield pod / IP(src=POD_A, dst="10.96.0.20") / TCP(sport=43000 + i, dport=80, flags="S")
    for i in range(10):  # malformed: header cut short, IHL < 5
        yield bytes(pod / IP(src=POD_A, dst=REMOTE_POD) / TCP())[: 14 + rng.randint(1, 30)]
        raw = bytearray(bytes(pod / IP(src=POD_A, dst=REMOTE_POD) / UDP()))
        raw[14] = 0x44
        yield bytes(raw)


def main():
    rng = random.Random(7)
    pkts = [Ether(f) if isinstance(f, bytes) else f for f in frames(rng)]
    rng.shuffle(pkts)
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i / 1000
    wrpcap(str(OUT), pkts)
    print(f"wrote {len(pkts)} packets to {OUT}")


if __name__ == "__main__":
    main()
