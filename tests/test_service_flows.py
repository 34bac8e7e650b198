"""Service packet flows through the compiled pipeline, kube-proxy style.

A cluster state (Kubernetes objects in API shape), then rows of source, destination and
protocol with the endpoint set the packet may reach and whether it is masqueraded; then the
reply direction, ICMP errors and endpoint changes under open flows. Packets are scapy-built, run
through parse -> conntrack/NAT -> route, and read back as `--trace` records and output frames.
"""
from __future__ import annotations

import ipaddress
import json

import pytest
from scapy.all import (ICMP, IP, SCTP, TCP, UDP, Ether, ICMPv6DestUnreach, IPv6, IPerror,
                       SCTPChunkInit, UDPerror)

from dataplane.burst import COUNTERS, DROP_REASONS, Burst
from dataplane.cli import main
from dataplane.config import loads
from dataplane.tables import NodeDataplane
from dataplane.trace import trace_record

NODE_IP, NODE_IP6 = "192.168.0.2", "fd00::2"
LOCAL_PODS = (ipaddress.ip_network("10.244.0.0/24"), ipaddress.ip_network("fd00:244::/64"))
NODE_MAC = "02:00:00:00:00:01"

DATAPLANE = f"""
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-a
nodeIPs: [{NODE_IP}, "{NODE_IP6}"]
clusterCIDRs: [10.244.0.0/16, "fd00:244::/48"]
ports:
  - {{name: eth0, mac: "{NODE_MAC}"}}
  - {{name: cni0, mac: "02:00:00:00:00:02"}}
routes:
  - {{prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1, mac: "02:00:00:00:00:fe"}}
  - {{prefix: "::/0", port: eth0, via: "fd00::1", mac: "02:00:00:00:00:fe"}}
  - {{prefix: 192.168.0.0/24, port: eth0, mac: "02:00:00:00:00:99"}}
  - {{prefix: 10.244.1.0/24, port: eth0, via: 192.168.0.3, mac: "02:00:00:00:01:01"}}
  - {{prefix: 10.244.0.0/24, port: cni0, mac: "0a:58:0a:f4:00:01"}}
  - {{prefix: "fd00:244::/64", port: cni0, mac: "0a:58:0a:f4:00:01"}}
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
hostnameOverride: node-a
clusterCIDR: 10.244.0.0/16,fd00:244::/48
"""


def service(name, spec, ingress=None):
    status = f"\nstatus: {{loadBalancer: {{ingress: [{{ip: {ingress}}}]}}}}" if ingress else ""
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {spec}{status}
"""


def slice_(name, svc, endpoints, ports, family="IPv4"):
    eps = ", ".join(
        f'{{addresses: ["{ip}"], nodeName: {node}, conditions: {{ready: {str(ready).lower()}, '
        f'serving: {str(serving).lower()}, terminating: {str(term).lower()}}}}}'
        for ip, node, ready, serving, term in endpoints)
    return f"""
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {svc}}}}}
addressType: {family}
endpoints: [{eps}]
ports: [{ports}]
"""


def ready(ip, node="node-a"):
    return (ip, node, True, True, False)


CLUSTER = DATAPLANE + "".join([
    service("web", "{clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: 8080}]}"),
    slice_("web-1", "web", [ready("10.244.0.10"), ready("10.244.1.20", "node-b")],
           "{name: http, port: 8080, protocol: TCP}"),
    service("dns", "{clusterIP: 10.96.0.53, ports: [{name: dns, port: 53, protocol: UDP, "
                   "targetPort: dns}, {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}]}"),
    slice_("dns-1", "dns", [ready("10.244.1.30", "node-b"), ready("10.244.1.31", "node-b")],
           "{name: dns, port: 5353, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}"),
    service("np", "{type: NodePort, clusterIP: 10.96.0.20, ports: [{port: 80, targetPort: 8080, "
                  "nodePort: 30080}]}"),
    slice_("np-1", "np", [ready("10.244.0.11"), ready("10.244.1.21", "node-b")],
           "{port: 8080, protocol: TCP}"),
    service("np-local", "{type: NodePort, clusterIP: 10.96.0.21, externalTrafficPolicy: Local, "
                        "ports: [{port: 80, targetPort: 8080, nodePort: 30081}]}"),
    slice_("np-local-1", "np-local", [ready("10.244.0.11"), ready("10.244.1.21", "node-b")],
           "{port: 8080, protocol: TCP}"),
    service("np-remote", "{type: NodePort, clusterIP: 10.96.0.22, externalTrafficPolicy: Local, "
                         "ports: [{port: 80, targetPort: 8080, nodePort: 30082}]}"),
    slice_("np-remote-1", "np-remote", [ready("10.244.1.21", "node-b")],
           "{port: 8080, protocol: TCP}"),
    service("lb", "{type: LoadBalancer, clusterIP: 10.96.0.30, loadBalancerSourceRanges: "
                  "[198.51.100.0/24], ports: [{port: 443, targetPort: 8443, nodePort: 30443}]}",
            ingress="203.0.113.10"),
    slice_("lb-1", "lb", [ready("10.244.1.22", "node-b")], "{port: 8443, protocol: TCP}"),
    service("ext", "{clusterIP: 10.96.0.40, externalIPs: [203.0.113.20], ports: [{port: 80, "
                   "targetPort: 8080}]}"),
    slice_("ext-1", "ext", [ready("10.244.0.10")], "{port: 8080, protocol: TCP}"),
    service("empty", "{clusterIP: 10.96.0.99, ports: [{name: tcp, port: 80}, {name: udp, "
                     "port: 80, protocol: UDP}]}"),
    service("v6", "{clusterIP: 'fd00:96::10', ipFamilies: [IPv6], ports: [{port: 80, "
                  "targetPort: 8080}]}"),
    slice_("v6-1", "v6", [ready("fd00:244::10")], "{port: 8080, protocol: TCP}", family="IPv6"),
    service("sctp", "{clusterIP: 10.96.0.70, ports: [{port: 3868, protocol: SCTP}]}"),
    slice_("sctp-1", "sctp", [ready("10.244.1.40", "node-b")], "{port: 3868, protocol: SCTP}"),
    service("self", "{clusterIP: 10.96.0.77, ports: [{port: 80, targetPort: 8080}]}"),
    slice_("self-1", "self", [ready("10.244.0.10")], "{port: 8080, protocol: TCP}"),
    service("sticky", "{clusterIP: 10.96.0.80, sessionAffinity: ClientIP, ports: [{port: 80, "
                      "targetPort: 8080}]}"),
    slice_("sticky-1", "sticky", [ready(f"10.244.1.{i}", "node-b") for i in range(50, 54)],
           "{port: 8080, protocol: TCP}"),
    service("itp", "{clusterIP: 10.96.0.90, internalTrafficPolicy: Local, ports: [{port: 80, "
                   "targetPort: 8080}]}"),
    slice_("itp-1", "itp", [ready("10.244.0.12"), ready("10.244.1.60", "node-b")],
           "{port: 8080, protocol: TCP}"),
    service("term", "{clusterIP: 10.96.0.91, ports: [{port: 80, targetPort: 8080}]}"),
    slice_("term-1", "term", [("10.244.1.70", "node-b", False, True, True),
                              ("10.244.1.71", "node-b", False, False, True)],
           "{port: 8080, protocol: TCP}"),
])


class Node:
    """The pipeline of node-a fed with scapy packets; results as trace records and frames."""

    def __init__(self, text=CLUSTER):
        self.dp = NodeDataplane(loads(text))
        self.index = 0

    def send(self, *pkts, port=None):
        """Packets arrive where their source lives: this node's pods behind cni0, the rest on
        eth0 (the input stage drops a local pod's address arriving on the uplink)."""
        if port is None:
            src = ipaddress.ip_address(pkts[0].src)
            port = "cni0" if any(src in n for n in LOCAL_PODS) else "eth0"
        burst = Burst(max(1, len(pkts)))
        burst.extend([bytes(Ether(src="02:00:00:00:00:aa", dst=NODE_MAC) / p) for p in pkts],
                     port_in=self.dp.port_names.index(port))
        self.dp.pipeline.process(burst, now_ns=self.index * 1_000_000)
        out = []
        for i in range(len(burst)):
            rec = trace_record(burst, i, self.index, self.dp.port_names)
            self.index += 1
            out.append((rec, Ether(burst.frame(i))))
        return out


def l4(proto, sport, dport):
    if proto == "TCP":
        return TCP(sport=sport, dport=dport, flags="S", seq=1000)
    if proto == "UDP":
        return UDP(sport=sport, dport=dport)
    return SCTP(sport=sport, dport=dport) / SCTPChunkInit(init_tag=sport)


def ip(src, dst):
    return IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)


# (what, source, destination, port, protocol, endpoints reachable, masqueraded, verdict/reason)
FLOWS = [
    ("pod to ClusterIP", "10.244.0.11", "10.96.0.10", 80, "TCP",
     {"10.244.0.10:8080", "10.244.1.20:8080"}, False, None),
    ("off-cluster source to ClusterIP", "192.168.0.50", "10.96.0.10", 80, "TCP",
     {"10.244.0.10:8080", "10.244.1.20:8080"}, True, None),
    ("named targetPort, UDP", "10.244.0.11", "10.96.0.53", 53, "UDP",
     {"10.244.1.30:5353", "10.244.1.31:5353"}, False, None),
    ("same port, TCP", "10.244.0.11", "10.96.0.53", 53, "TCP",
     {"10.244.1.30:53", "10.244.1.31:53"}, False, None),
    ("NodePort, Cluster policy", "198.51.100.7", NODE_IP, 30080, "TCP",
     {"10.244.0.11:8080", "10.244.1.21:8080"}, True, None),
    ("NodePort, Local policy", "198.51.100.7", NODE_IP, 30081, "TCP",
     {"10.244.0.11:8080"}, False, None),
    ("NodePort, Local policy, no local endpoint", "198.51.100.7", NODE_IP, 30082, "TCP",
     set(), False, ("drop", "no_endpoint")),
    ("LoadBalancer IP, allowed source", "198.51.100.7", "203.0.113.10", 443, "TCP",
     {"10.244.1.22:8443"}, True, None),
    ("LoadBalancer IP, source outside ranges", "192.0.2.9", "203.0.113.10", 443, "TCP",
     set(), False, ("drop", "src_range")),
    ("LoadBalancer NodePort", "192.0.2.9", NODE_IP, 30443, "TCP",
     {"10.244.1.22:8443"}, True, None),
    ("externalIP", "198.51.100.7", "203.0.113.20", 80, "TCP", {"10.244.0.10:8080"}, True, None),
    ("no endpoints, TCP", "10.244.0.11", "10.96.0.99", 80, "TCP", set(), False,
     ("reject", "no_endpoint")),
    ("no endpoints, UDP", "10.244.0.11", "10.96.0.99", 80, "UDP", set(), False,
     ("reject", "no_endpoint")),
    ("IPv6 ClusterIP", "fd00:244::11", "fd00:96::10", 80, "TCP", {"[fd00:244::10]:8080"}, False,
     None),
    ("SCTP", "10.244.0.11", "10.96.0.70", 3868, "SCTP", {"10.244.1.40:3868"}, False, None),
    ("hairpin", "10.244.0.10", "10.96.0.77", 80, "TCP", {"10.244.0.10:8080"}, True, None),
    ("internalTrafficPolicy Local", "10.244.0.11", "10.96.0.90", 80, "TCP",
     {"10.244.0.12:8080"}, False, None),
    ("only terminating endpoints: serving ones", "10.244.0.11", "10.96.0.91", 80, "TCP",
     {"10.244.1.70:8080"}, False, None),
    ("pod to pod: untouched", "10.244.0.11", "10.244.1.5", 80, "TCP", {"10.244.1.5:80"},
     False, None),
    ("pod to node network: untouched", "10.244.0.11", "192.168.0.50", 22, "TCP",
     {"192.168.0.50:22"}, False, None),
    # Not a Service port of a ClusterIP: nftables' cluster-ips-check rejects it.
    ("unknown port on a ClusterIP", "10.244.0.11", "10.96.0.10", 81, "TCP", set(), False,
     ("reject", "svc_no_port")),
    ("unknown protocol on a ClusterIP", "10.244.0.11", "10.96.0.10", 80, "UDP", set(), False,
     ("reject", "svc_no_port")),
    # Without ServiceCIDR objects an unallocated address is not checked: NAT outgoing.
    ("unallocated service address", "10.244.0.11", "10.96.0.111", 80, "TCP",
     {"10.96.0.111:80"}, True, None),
]


def endpoint(out):
    host = f"[{out['dst']}]" if ":" in out["dst"] else out["dst"]
    return f"{host}:{out['dport']}"


@pytest.mark.parametrize("what,src,dst,port,proto,endpoints,masq,outcome", FLOWS,
                         ids=[f[0] for f in FLOWS])
def test_service_flow(what, src, dst, port, proto, endpoints, masq, outcome):
    node = Node()
    results = node.send(*[ip(src, dst) / l4(proto, 20000 + k, port) for k in range(48)])
    for rec, frame in results:
        if outcome is not None:
            assert (rec["verdict"], rec["reason"]) == outcome, what
            continue
        assert rec["verdict"] == "forward", (what, rec)
        assert endpoint(rec["out"]) in endpoints, (what, rec)
        node_ip = NODE_IP6 if ":" in src else NODE_IP
        assert (rec["out"]["src"] == node_ip) is masq, (what, rec)
        if not masq:
            assert rec["out"]["sport"] == rec["index"] + 20000  # source port kept too
    reached = {endpoint(rec["out"]) for rec, _ in results if rec["out"]}
    assert reached == endpoints, what  # 48 new connections reach every endpoint


def test_nat_outgoing_leaves_with_the_node_ip():
    node = Node()
    (rec, frame), = node.send(IP(src="10.244.0.11", dst="8.8.8.8") / UDP(sport=5000, dport=53))
    assert rec["verdict"] == "forward" and rec["port"] == "eth0"
    assert (rec["out"]["src"], rec["out"]["dst"], rec["out"]["dport"]) == (NODE_IP, "8.8.8.8", 53)
    # The answer comes back to the node IP and is translated back to the pod.
    (back, frame), = node.send(IP(src="8.8.8.8", dst=NODE_IP) / UDP(sport=53,
                                                                   dport=rec["out"]["sport"]))
    assert back["out"] == {"src": "8.8.8.8", "dst": "10.244.0.11", "sport": 53, "dport": 5000,
                           "proto": "UDP"}
    assert back["port"] == "cni0"
    assert_checksums_valid(frame)


@pytest.mark.parametrize("src", ["10.244.0.11", "192.168.0.50"])
def test_reply_direction_is_reverse_translated(src):
    node = Node()
    (rec, frame), = node.send(IP(src=src, dst="10.96.0.10") / TCP(sport=33333, dport=80,
                                                                   flags="S", seq=7))
    out = rec["out"]
    reply = IP(src=out["dst"], dst=out["src"]) / TCP(sport=out["dport"], dport=out["sport"],
                                                     flags="SA", seq=100, ack=8)
    (back, frame), = node.send(reply, port="cni0" if out["dst"].startswith("10.244.0") else "eth0")
    assert back["verdict"] == "forward"
    assert back["out"] == {"src": "10.96.0.10", "dst": src, "sport": 80, "dport": 33333,
                           "proto": "TCP"}
    assert_checksums_valid(frame)
    # Established: the third packet keeps the same backend.
    (again, _), = node.send(IP(src=src, dst="10.96.0.10") / TCP(sport=33333, dport=80, flags="A",
                                                                 seq=8, ack=101))
    assert endpoint(again["out"]) == endpoint(out)
    counters = dict(zip(COUNTERS, map(int, node.dp.pipeline.counters)))
    assert counters["ct_new"] == 1 and counters["ct_reply"] == 1
    assert counters["ct_established"] == 1


def assert_checksums_valid(frame):
    raw = bytes(frame)
    rebuilt = Ether(raw)
    for layer in (IP, IPv6, TCP, UDP):
        if rebuilt.haslayer(layer) and hasattr(rebuilt[layer], "chksum"):
            fresh = rebuilt.copy()
            del fresh[layer].chksum
            assert Ether(bytes(fresh))[layer].chksum == rebuilt[layer].chksum, layer.__name__


def test_reject_answers_come_back_to_the_client():
    node = Node()
    (rst, frame), = node.send(IP(src="10.244.0.11", dst="10.96.0.99") / TCP(sport=4444, dport=80,
                                                                             flags="S", seq=41))
    assert rst["verdict"] == "reject" and rst["port"] == "cni0"    # back where the SYN came from
    assert frame[IP].src == "10.96.0.99" and frame[IP].dst == "10.244.0.11"
    assert frame[TCP].flags == "RA" and frame[TCP].ack == 42 and frame[TCP].dport == 4444
    (unreach, frame), = node.send(IP(src="10.244.0.11", dst="10.96.0.99") / UDP(sport=4444,
                                                                                 dport=80))
    assert unreach["verdict"] == "reject"
    assert frame[ICMP].type == 3 and frame[ICMP].code == 3
    assert frame[IPerror].dst == "10.96.0.99" and frame[UDPerror].sport == 4444
    assert_checksums_valid(frame)


def test_icmp_error_from_backend_is_translated_back():
    """The backend answers a UDP datagram with port unreachable: the client must see it come
    from the Service IP, quoting the datagram it sent (to the Service IP)."""
    node = Node()
    (rec, sent), = node.send(IP(src="192.168.0.50", dst="10.96.0.53") / UDP(sport=6000, dport=53))
    out = rec["out"]
    assert out["src"] == NODE_IP  # masqueraded: off-cluster client
    err = IP(src=out["dst"], dst=out["src"]) / ICMP(type=3, code=3) / bytes(sent[IP])[:28]
    (back, frame), = node.send(err)
    assert back["verdict"] == "forward" and back["port"] == "eth0"
    assert frame[IP].src == "10.96.0.53" and frame[IP].dst == "192.168.0.50"
    assert frame[IPerror].src == "192.168.0.50" and frame[IPerror].dst == "10.96.0.53"
    assert frame[UDPerror].sport == 6000 and frame[UDPerror].dport == 53
    assert_checksums_valid(frame)
    counters = dict(zip(COUNTERS, map(int, node.dp.pipeline.counters)))
    assert counters["ct_related"] == 1


def test_icmpv6_error_for_a_v6_service():
    node = Node()
    (rec, sent), = node.send(IPv6(src="fd00:244::11", dst="fd00:96::10") / TCP(sport=7000,
                                                                               dport=80))
    err = IPv6(src=rec["out"]["dst"], dst=rec["out"]["src"]) / ICMPv6DestUnreach(code=4) / \
        bytes(sent[IPv6])[:48]
    (back, frame), = node.send(err, port="cni0")
    assert back["verdict"] == "forward"
    assert frame[IPv6].src == "fd00:96::10" and frame[IPv6].dst == "fd00:244::11"


def test_session_affinity_keeps_a_client_on_one_endpoint():
    node = Node()
    results = node.send(*[IP(src="10.244.0.11", dst="10.96.0.80") / TCP(sport=30000 + k, dport=80)
                          for k in range(32)])
    assert len({endpoint(rec["out"]) for rec, _ in results}) == 1
    others = node.send(*[IP(src=f"10.244.0.{20 + k}", dst="10.96.0.80") / TCP(dport=80)
                         for k in range(64)])
    assert len({endpoint(rec["out"]) for rec, _ in others}) > 1


def test_endpoint_removed_under_open_flows():
    """TCP flows keep their backend; UDP flows to a removed endpoint are flushed and balanced
    again, so clients do not stick to a dead backend."""
    node = Node()
    tcp = node.send(*[IP(src="10.244.0.11", dst="10.96.0.53") / TCP(sport=40000 + k, dport=53)
                      for k in range(32)])
    udp = node.send(*[IP(src="10.244.0.11", dst="10.96.0.53") / UDP(sport=50000 + k, dport=53)
                      for k in range(32)])
    tcp_backend = {rec["index"]: endpoint(rec["out"]) for rec, _ in tcp}
    assert {e.split(":")[0] for e in tcp_backend.values()} == {"10.244.1.30", "10.244.1.31"}

    without = CLUSTER.replace(
        '{addresses: ["10.244.1.30"], nodeName: node-b, conditions: {ready: true, serving: true, '
        'terminating: false}}, ', "")
    assert without != CLUSTER
    node.dp.apply(loads(without))

    # SYN retransmits of the open connections (an ACK would be invalid in SYN_SENT).
    tcp_again = node.send(*[IP(src="10.244.0.11", dst="10.96.0.53") / TCP(sport=40000 + k,
                                                                            dport=53)
                            for k in range(32)])
    for k, (rec, _) in enumerate(tcp_again):
        assert endpoint(rec["out"]) == tcp_backend[tcp[k][0]["index"]]
    udp_again = node.send(*[IP(src="10.244.0.11", dst="10.96.0.53") / UDP(sport=50000 + k,
                                                                            dport=53)
                            for k in range(32)])
    assert {endpoint(rec["out"]) for rec, _ in udp_again} == {"10.244.1.31:5353"}
    assert any(endpoint(rec["out"]) == "10.244.1.30:5353" for rec, _ in udp)


def test_replay_cli_with_services(tmp_path, capsys):
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(CLUSTER)
    pkts = [Ether(dst=NODE_MAC) / IP(src="10.244.0.11", dst="10.96.0.10") / TCP(sport=1000 + k,
                                                                                dport=80)
            for k in range(10)]
    pkts.append(Ether(dst=NODE_MAC) / IP(src="10.244.0.11", dst="10.96.0.99") / TCP(dport=80))
    from scapy.all import wrpcap
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    code = main(["replay", "--config", str(cfg), str(tmp_path / "in.pcap"), "-o",
                 str(tmp_path / "out.pcap"), "--trace", str(tmp_path / "t.jsonl"), "--json",
                 "--in-port", "cni0"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["counters"]["dnat"] == 10 and summary["counters"]["reject"] == 1
    assert summary["counters"]["tx"] == 11
    records = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert records[-1]["verdict"] == "reject" and records[-1]["reason"] == "no_endpoint"
    assert {r["out"]["dport"] for r in records[:10]} == {8080}


def test_full_conntrack_early_drops_unreplied_then_refuses_new_flows():
    node = Node(CLUSTER.replace("clusterCIDRs:", "conntrackSize: 4\nclusterCIDRs:"))
    first = node.send(*[IP(src="10.244.0.11", dst="10.96.0.53") / UDP(sport=100 + k, dport=53)
                        for k in range(4)])
    assert all(rec["verdict"] == "forward" for rec, _ in first)
    # Full of unanswered flows: a new one evicts one of them, as Linux's early_drop does.
    (evict, _), = node.send(IP(src="10.244.0.11", dst="10.96.0.53") / UDP(sport=999, dport=53))
    assert evict["verdict"] == "forward"
    assert node.dp.conntrack.stats()["early_drops"] == 1
    # Answered and used again, every entry is ASSURED: nothing may be evicted any more.
    for e in node.dp.conntrack.entries():
        o, r = e["orig"], e["reply"]
        node.send(IP(src=r["src"], dst=r["dst"]) / UDP(sport=r["sport"], dport=r["dport"]))
        node.send(IP(src=o["src"], dst=o["dst"]) / UDP(sport=o["sport"], dport=o["dport"]))
    assert all("ASSURED" in e["flags"] for e in node.dp.conntrack.entries())
    (full, _), = node.send(IP(src="10.244.0.11", dst="10.96.0.53") / UDP(sport=998, dport=53))
    assert (full["verdict"], full["reason"]) == ("drop", "ct_full")
    kept = node.dp.conntrack.entries()[0]["orig"]
    (retry, _), = node.send(IP(src=kept["src"], dst=kept["dst"]) / UDP(sport=kept["sport"],
                                                                       dport=53))
    assert retry["verdict"] == "forward"


def test_maglev_keeps_most_flows_when_an_endpoint_goes():
    """With Maglev, a new connection's backend depends on the flow hash only: after removing one
    of the Service's endpoints, flows that were not on it almost all keep their backend (Maglev's
    disruption is minimal, not zero)."""
    text = CLUSTER.replace("clusterCIDRs:", "serviceLoadBalancing: maglev\nclusterCIDRs:")
    many = "".join([service("big", "{clusterIP: 10.96.0.200, ports: [{port: 80, targetPort: 8080}]}"),
                    slice_("big-1", "big", [ready(f"10.244.1.{100 + i}", "node-b") for i in range(8)],
                           "{port: 8080, protocol: TCP}")])
    probes = [IP(src="10.244.0.11", dst="10.96.0.200") / TCP(sport=20000 + k, dport=80)
              for k in range(400)]
    before = {rec["index"] % 400: endpoint(rec["out"]) for rec, _ in Node(text + many).send(*probes)}
    fewer = many.replace('{addresses: ["10.244.1.107"], nodeName: node-b, conditions: {ready: true, '
                         'serving: true, terminating: false}}', "").replace("}, ]", "}]")
    after = {rec["index"] % 400: endpoint(rec["out"]) for rec, _ in Node(text + fewer).send(*probes)}
    assert "10.244.1.107:8080" in before.values()
    assert "10.244.1.107:8080" not in after.values()
    stayed = [k for k in before if before[k] != "10.244.1.107:8080"]
    moved = [k for k in stayed if before[k] != after[k]]
    assert len(moved) <= len(stayed) // 10, (len(moved), len(stayed))


SERVICE_CIDR = """
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: kubernetes}
spec: {cidrs: [10.96.0.0/16, "fd00:96::/112"]}
"""


def test_cluster_ips_check_with_service_cidrs():
    """kube-proxy nftables: reject (ICMP port unreachable, TCP too) a ClusterIP's unserved
    port, drop an address of a ServiceCIDR that no Service has, leave other traffic alone."""
    node = Node(CLUSTER + SERVICE_CIDR)
    (rec, frame), = node.send(IP(src="10.244.0.11", dst="10.96.0.10") / TCP(sport=4444, dport=81, flags="S"))
    assert (rec["verdict"], rec["reason"], rec["port"]) == ("reject", "svc_no_port", "cni0")   # back where it came from
    assert frame[ICMP].type == 3 and frame[ICMP].code == 3 and frame[IP].src == "10.96.0.10"
    for dst in ("10.96.0.111", "fd00:96::99"):
        (rec, _), = node.send(ip("10.244.0.11" if ":" not in dst else "fd00:244::11", dst) / TCP(sport=4444, dport=80))
        assert (rec["verdict"], rec["reason"]) == ("drop", "svc_unallocated"), dst
    (rec, _), = node.send(IP(src="10.244.0.11", dst="10.97.0.1") / TCP(sport=4444, dport=80))
    assert rec["verdict"] == "forward"
    (rec, _), = node.send(IP(src="10.244.0.11", dst="10.96.0.10") / TCP(sport=4444, dport=80, flags="S"))
    assert rec["verdict"] == "forward" and rec["out"]["dport"] == 8080
    drops = dict(zip(DROP_REASONS, map(int, node.dp.pipeline.drops)))
    assert drops["svc_unallocated"] == 2
