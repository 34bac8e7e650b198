"""The fast-path DNS stage against the control plane: for every hot name, in any letter case, with
and without EDNS0, over IPv4 and IPv6, the stage's answer is the control plane's answer byte for
byte; everything it should not answer stays pending; frames leave with valid checksums."""
import ipaddress
import random
from dataclasses import replace

import pytest
from scapy.all import IP, UDP, Dot1Q, Ether, IPv6, Raw, TCP
from scapy.layers.dns import DNS, DNSQR, DNSRROPT

from dataplane.burst import COUNTERS, Burst
from dataplane.config import loads
from dataplane.config.dataplane import DnsConfig
from dataplane.dns import DnsService
from dataplane.parse import parse
from dataplane.tables import NodeDataplane

DNS4, DNS6 = "10.96.0.10", "fd00:96::a"
CLIENT4, CLIENT6 = "10.244.1.9", "fd00:244:1::9"
CLIENT_MAC, NODE_MAC = "0a:00:00:00:00:09", "02:00:00:00:00:01"
ANSWERED = COUNTERS.index("dns_answer")
# Upstream for names outside the zone: loopback's discard port, where nothing listens (never the
# host's own resolvers).
LOOPBACK_DISCARD = ((ipaddress.ip_address("127.0.0.1"), 9),)


@pytest.fixture(scope="module")
def service(config):
    s = DnsService(replace(DnsConfig(), upstreams=LOOPBACK_DISCARD))
    s.load_config(config)
    return s


@pytest.fixture(scope="module")
def table(service):
    return service.compile_stage_table([DNS4, DNS6])


def query(name, qtype="A", edns=None, qid=0x4242, rd=1):
    return bytes(DNS(id=qid, rd=rd, qd=DNSQR(qname=name, qtype=qtype),
                     ar=[DNSRROPT(rclass=edns)] if edns is not None else []))


def frame(payload, family=4, dport=53, dst=None, vlan=None, sport=33333):
    l2 = Ether(src=CLIENT_MAC, dst=NODE_MAC)
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    l3 = IP(src=CLIENT4, dst=dst or DNS4) if family == 4 else IPv6(src=CLIENT6, dst=dst or DNS6)
    return bytes(l2 / l3 / UDP(sport=sport, dport=dport) / Raw(payload))


def run(table, *frames, port=3):
    b = Burst(len(frames))
    for f in frames:
        b.append(f, port_in=port)
    parse(b)
    cnt, _ = table.run(b)
    return b, int(cnt[ANSWERED])


def random_case(name, rng):
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


def check_reply(b, i, family=4, port=3):
    out = Ether(b.frame(i))
    assert b.meta(i)["verdict"] == "forward" and b.meta(i)["port_out"] == port
    assert out.src == NODE_MAC and out.dst == CLIENT_MAC
    l3 = out[IP] if family == 4 else out[IPv6]
    assert (l3.src, l3.dst) == ((DNS4, CLIENT4) if family == 4 else (DNS6, CLIENT6))
    assert (out[UDP].sport, out[UDP].dport) == (53, 33333)
    fixed = Ether(b.frame(i))   # scapy recomputes what we delete: the frame must already agree
    del fixed[UDP].chksum
    if family == 4:
        del fixed[IP].chksum
        assert Ether(bytes(fixed))[IP].chksum == out[IP].chksum
    assert Ether(bytes(fixed))[UDP].chksum == out[UDP].chksum
    assert len(b.frame(i)) == b.meta(i)["l4_off"] + out[UDP].len
    return bytes(out[UDP].payload)


def test_every_hot_answer_equals_the_control_plane(service, table):
    rng = random.Random(7)
    hot = sorted(service.zone.hot_names())
    assert len(table) == len(hot) > 20
    for name, qtype in hot:
        for family in (4, 6):
            for edns in (None, 1232, 512, 4096):
                q = query(random_case(name, rng) + ".", qtype, edns, qid=rng.randrange(65536), rd=rng.randrange(2))
                b, n = run(table, frame(q, family))
                assert n == 1, (name, qtype)
                assert check_reply(b, 0, family) == service.resolver.handle(q, udp=True), (name, qtype, edns)


def _headless(name, n):
    eps = "\n".join(f"  - {{addresses: [10.245.0.{i}]}}" for i in range(1, n + 1))
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {{clusterIP: None, ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
endpoints:
{eps}
---"""


@pytest.mark.parametrize("name,edns,tc", [
    ("mid", None, True), ("mid", 600, True), ("mid", 1232, False), ("mid", 4096, False),   # ~690 bytes
    ("big", None, True), ("big", 1232, True), ("big", 4096, True),                         # ~1,650 bytes
])
def test_truncation_matches_the_control_plane(name, edns, tc):
    service = DnsService(replace(DnsConfig(), upstreams=LOOPBACK_DISCARD))
    service.load_config(loads(_headless("mid", 40) + _headless("big", 100)))
    table = service.compile_stage_table([DNS4])
    q = query(name.upper() + ".default.svc.cluster.local.", "A", edns)
    b, n = run(table, frame(q))
    reply = check_reply(b, 0)
    assert reply == service.resolver.handle(q, udp=True)
    assert DNS(reply).tc == tc and DNS(reply).ancount == (0 if tc else {"mid": 40, "big": 100}[name])
    assert len(reply) <= max(512, min(edns or 512, 1232))


@pytest.mark.parametrize("what,make", [
    ("not the DNS service", lambda: frame(query("kubernetes.default.svc.cluster.local."), dst="10.96.0.11")),
    ("other port", lambda: frame(query("kubernetes.default.svc.cluster.local."), dport=5353)),
    ("name not in the table", lambda: frame(query("nope.default.svc.cluster.local."))),
    ("type not hot", lambda: frame(query("kubernetes.default.svc.cluster.local.", "TXT"))),
    ("NODATA", lambda: frame(query("kubernetes.default.svc.cluster.local.", "AAAA"))),
    ("upstream name", lambda: frame(query("www.example.org."))),
    ("a response", lambda: frame(bytes(DNS(id=1, qr=1, qd=DNSQR(qname="kubernetes.default.svc.cluster.local."))))),
    ("two questions", lambda: frame(bytes(DNS(id=1, qd=DNSQR(qname="kubernetes.default.svc.cluster.local.")
                                              / DNSQR(qname="kubernetes.default.svc.cluster.local."))))),
    ("class CH", lambda: frame(bytes(DNS(id=1, qd=DNSQR(qname="kubernetes.default.svc.cluster.local.", qclass=3))))),
    ("EDNS version 1", lambda: frame(bytes(DNS(id=1, qd=DNSQR(qname="kubernetes.default.svc.cluster.local."),
                                               ar=DNSRROPT(version=1))))),
    ("trailing bytes", lambda: frame(query("kubernetes.default.svc.cluster.local.") + b"\x00")),
    ("compressed question", lambda: frame(b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01")),
    ("header only", lambda: frame(b"\x00\x01\x01\x00\x00\x01" + bytes(6))),
    ("TCP", lambda: bytes(Ether(src=CLIENT_MAC, dst=NODE_MAC) / IP(src=CLIENT4, dst=DNS4) / TCP(dport=53)
                          / Raw(query("kubernetes.default.svc.cluster.local.")))),
    ("IPv4 options", lambda: bytes(Ether(src=CLIENT_MAC, dst=NODE_MAC) / IP(src=CLIENT4, dst=DNS4, options=b"\x01\x01\x01\x00")
                                   / UDP(dport=53) / Raw(query("kubernetes.default.svc.cluster.local.")))),
])
def test_left_pending(table, what, make):
    b, n = run(table, make())
    assert n == 0 and b.meta(0)["verdict"] == "pending"


def test_vlan_tag_kept(service, table):
    q = query("kubernetes.default.svc.cluster.local.")
    b, n = run(table, frame(q, vlan=42))
    assert n == 1 and Ether(b.frame(0))[Dot1Q].vlan == 42
    assert check_reply(b, 0) == service.resolver.handle(q, udp=True)


def test_mangled_queries_never_crash_and_answers_stay_right(service, table):
    """Bit flips and cuts of valid queries: whatever the stage answers is what the control plane
    answers for the same bytes; the rest stays pending."""
    rng = random.Random(11)
    base = [query("_https._tcp.kubernetes.default.svc.cluster.local.", "SRV", 1232),
            query("pet-0.headless.default.svc.cluster.local.", "AAAA")]
    answered = 0
    for _ in range(1500):
        q = bytearray(rng.choice(base))
        for _ in range(rng.randrange(1, 3)):
            q[rng.randrange(len(q))] ^= 1 << rng.randrange(8)
        if rng.random() < 0.2:
            q = q[:rng.randrange(len(q))]
        b, n = run(table, frame(bytes(q)))
        if n:
            answered += 1
            assert check_reply(b, 0) == service.resolver.handle(bytes(q), udp=True)
        else:
            assert b.meta(0)["verdict"] == "pending"
    assert answered > 0


def test_in_the_pipeline_with_a_swapped_table(service, config):
    node = NodeDataplane(loads(f"""
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-1
nodeIPs: [192.168.0.2]
ports:
  - {{name: eth0, mac: "02:00:00:00:00:aa"}}
  - {{name: pod1, mac: "{NODE_MAC}"}}
routes:
  - {{prefix: 10.244.1.9/32, port: pod1, mac: "{CLIENT_MAC}"}}
  - {{prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1, mac: "02:00:00:00:00:fe"}}
"""))
    assert node.pipeline.dns is None
    node.pipeline.dns = service.compile_stage_table([DNS4])
    q = query("kubernetes.default.svc.cluster.local.")
    b = Burst(2)
    b.append(frame(q), port_in=1)
    b.append(frame(query("www.example.org.")), port_in=1)
    node.pipeline.process(b, now_ns=1)
    assert b.meta(0)["verdict"] == "forward" and b.meta(0)["port_out"] == 1
    assert bytes(Ether(b.frame(0))[UDP].payload) == service.resolver.handle(q, udp=True)
    assert b.meta(1)["verdict"] != "forward" or b.meta(1)["port_out"] == 0     # on to the rest of the pipeline
    assert node.pipeline.counters[ANSWERED] == 1

    other = DnsService(replace(DnsConfig(), upstreams=LOOPBACK_DISCARD))    # a new zone state: a new table, swapped whole
    other.load_config(loads("""
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec: {clusterIP: 10.96.0.99, ports: [{name: https, port: 443}]}
"""))
    node.pipeline.dns = other.compile_stage_table([DNS4])
    b = Burst(1)
    b.append(frame(q), port_in=1)
    node.pipeline.process(b, now_ns=2)
    assert DNS(bytes(Ether(b.frame(0))[UDP].payload)).an[0].rdata == "10.96.0.99"
    node.pipeline.dns = None


def test_table_rejects_bad_entries():
    from dataplane.dnsstage import DnsTable
    with pytest.raises(ValueError):
        DnsTable([(b"\x03foo", 1, b"", 0, 0, 0)], [DNS4])           # not a terminated wire name
    with pytest.raises(ValueError):
        DnsTable([(b"\x03foo\x00", 1, b"", 0, 0, 0)] * 2, [DNS4])   # duplicate
    assert DnsTable([], [ipaddress.ip_address(DNS6)]).lookup(b"\x00", 1) is None


def test_recompiling_repacks_only_changed_services(config):
    from dataplane.dns import stage
    service = DnsService(replace(DnsConfig(), upstreams=LOOPBACK_DISCARD))
    service.load_config(config)
    first = service.compile_stage_table([DNS4])
    packed = []
    real = stage._entries
    stage._entries = lambda zone, names, snap: packed.append(names) or real(zone, names, snap)
    try:
        web = next(s for s in config.services if s.name == "kubernetes")
        moved = replace(web, cluster_ips=(ipaddress.ip_address("10.96.0.2"),))
        service.on_service(web, moved)
        second = service.compile_stage_table([DNS4])
    finally:
        stage._entries = real
    assert len(packed) == 1 and len(second) == len(first)
    q = query("kubernetes.default.svc.cluster.local.")
    for table, want in ((first, "10.96.0.1"), (second, "10.96.0.2")):   # the old table is untouched
        b, n = run(table, frame(q))
        assert n == 1 and DNS(check_reply(b, 0)).an[0].rdata == want
    assert check_reply(run(second, frame(q))[0], 0) == service.resolver.handle(q, udp=True)


def test_node_serves_the_dns_service_hot_in_the_stage_the_rest_through_nat(service, config):
    """The intended wiring inside `dataplane run`: kube-dns's endpoint is the node itself; hot
    queries are answered by the stage, the others are DNATed to the node's own server."""
    import dataclasses
    node_cfg = loads(f"""
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-1
nodeIPs: [192.168.0.2]
clusterCIDRs: [10.244.0.0/16]
localPort: host
ports:
  - {{name: eth0, mac: "02:00:00:00:00:aa"}}
  - {{name: pod1, mac: "{NODE_MAC}"}}
  - {{name: host, mac: "02:00:00:00:00:bb", type: tap, proxyARP: true}}
routes:
  - {{prefix: 10.244.1.9/32, port: pod1, mac: "{CLIENT_MAC}"}}
  - {{prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1, mac: "02:00:00:00:00:fe"}}
""")
    slices = service.node_endpoint_slices("node-1", ["192.168.0.2"])
    assert [(s.name, s.address_type, [p.name for p in s.ports]) for s in slices] == \
        [("kube-dns-node-local-ipv4", "IPv4", ["dns", "dns-tcp"])]
    node = NodeDataplane(dataclasses.replace(node_cfg, services=config.services,
                                             endpoint_slices=config.endpoint_slices + slices))
    node.pipeline.dns = service.compile_stage_table()          # the kube-dns cluster IP, 10.96.0.10
    hot, other = query("kubernetes.default.svc.cluster.local."), query("dns-version.cluster.local.", "TXT")
    b = Burst(2)
    b.append(frame(hot), port_in=1)
    b.append(frame(other, sport=33334), port_in=1)
    node.pipeline.process(b, now_ns=1)
    assert b.meta(0)["verdict"] == "forward" and check_reply(b, 0, port=1) == service.resolver.handle(hot, udp=True)
    assert b.meta(1)["t"]["dst"] == "192.168.0.2" and b.meta(1)["t"]["dport"] == 53   # to the node's server
    assert node.pipeline.counters[COUNTERS.index("dnat")] == 1
