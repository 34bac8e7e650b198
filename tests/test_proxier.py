"""Packet-flow tables in kube-proxy's style (pkg/proxy/nftables/proxier_test.go): a cluster as
Kubernetes YAML, loaded through dataplane.config, programmed by the Proxier; then rows of
source -> destination:port/protocol with the expected endpoint set and masquerade, or the
reject/drop verdict. Plus the change trackers and conntrack flushing."""
import json
from dataclasses import replace
from ipaddress import ip_address

import pytest

from dataplane.config import loads
from dataplane.proxier import ChangeTracker, Proxier

NODE_CONFIG = """
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-a
nodeIPs: [192.168.0.10, "fd00::10"]
clusterCIDRs: [10.244.0.0/16, "fd10::/64"]
ports: [{name: eth0, mac: "02:00:00:00:00:01"}]
routes: [{prefix: 192.168.0.0/24, port: eth0}, {prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1}]
"""


def svc(name, spec, status=None, ns="default"):
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}
    if status:
        doc["status"] = status
    return "---\n" + json.dumps(doc) + "\n"


def eps(name, service, endpoints, ports, address_type="IPv4", ns="default"):
    doc = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
           "addressType": address_type, "ports": ports, "endpoints": endpoints}
    return "---\n" + json.dumps(doc) + "\n"


def ep(ip, node="node-b", ready=True, serving=None, terminating=None):
    conditions = {"ready": ready}
    if serving is not None:
        conditions["serving"] = serving
    if terminating is not None:
        conditions["terminating"] = terminating
    return {"addresses": [ip], "nodeName": node, "conditions": conditions}


def port(name, number, protocol="TCP"):
    return {"name": name, "port": number, "protocol": protocol}


CLUSTER = NODE_CONFIG + (
    # ClusterIP with a named targetPort, two ports, endpoints merged from two slices.
    svc("web", {"clusterIP": "10.96.0.10", "ports": [
        {"name": "http", "port": 80, "targetPort": "web"},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]})
    + eps("web-1", "web", [ep("10.244.1.5", "node-a"), ep("10.244.2.5")], [port("http", 8080), port("dns", 5353, "UDP")])
    + eps("web-2", "web", [ep("10.244.2.5"), ep("10.244.3.5", "node-c")], [port("http", 8080), port("dns", 5353, "UDP")])
    # NodePort, eTP Cluster.
    + svc("np", {"type": "NodePort", "clusterIP": "10.96.0.20",
                 "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]})
    + eps("np-1", "np", [ep("10.244.1.6", "node-a"), ep("10.244.2.6")], [port("", 8080)])
    # LoadBalancer, eTP Local, source ranges.
    + svc("lbl", {"type": "LoadBalancer", "clusterIP": "10.96.0.30", "externalTrafficPolicy": "Local",
                  "healthCheckNodePort": 32000, "loadBalancerSourceRanges": ["203.0.113.0/24"],
                  "ports": [{"port": 443, "targetPort": 8443, "nodePort": 30443}]},
          {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}})
    + eps("lbl-1", "lbl", [ep("10.244.1.7", "node-a"), ep("10.244.2.7")], [port("", 8443)])
    # LoadBalancer, eTP Local, no endpoint on this node; no node ports allocated.
    + svc("lbr", {"type": "LoadBalancer", "clusterIP": "10.96.0.31", "externalTrafficPolicy": "Local",
                  "allocateLoadBalancerNodePorts": False, "ports": [{"port": 443}]},
          {"loadBalancer": {"ingress": [{"ip": "198.51.100.3"}, {"ip": "198.51.100.4", "ipMode": "Proxy"}]}})
    + eps("lbr-1", "lbr", [ep("10.244.2.8"), ep("10.244.3.8", "node-c")], [port("", 443)])
    # externalIPs on a ClusterIP Service.
    + svc("ext", {"clusterIP": "10.96.0.40", "externalIPs": ["198.51.100.2"], "ports": [{"port": 8000}]})
    + eps("ext-1", "ext", [ep("10.244.2.9")], [port("", 8000)])
    # internalTrafficPolicy Local, with and without a local endpoint.
    + svc("itp", {"clusterIP": "10.96.0.50", "internalTrafficPolicy": "Local", "ports": [{"port": 80}]})
    + eps("itp-1", "itp", [ep("10.244.1.10", "node-a"), ep("10.244.2.10")], [port("", 80)])
    + svc("itp-none", {"clusterIP": "10.96.0.51", "internalTrafficPolicy": "Local", "ports": [{"port": 80}]})
    + eps("itp-none-1", "itp-none", [ep("10.244.2.11")], [port("", 80)])
    # ClientIP session affinity.
    + svc("sticky", {"clusterIP": "10.96.0.52", "sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "ports": [{"port": 80}]})
    + eps("sticky-1", "sticky", [ep(f"10.244.2.{i}") for i in range(20, 25)], [port("", 80)])
    # Only terminating endpoints: the serving ones are used.
    + svc("term", {"clusterIP": "10.96.0.53", "ports": [{"port": 80}]})
    + eps("term-1", "term", [ep("10.244.2.30", ready=False, serving=True, terminating=True),
                             ep("10.244.2.31", ready=False, serving=False, terminating=True),
                             ep("10.244.2.32", ready=False)], [port("", 80)])
    # Ready beats terminating.
    + svc("mixed", {"clusterIP": "10.96.0.54", "ports": [{"port": 80}]})
    + eps("mixed-1", "mixed", [ep("10.244.2.40", ready=False, serving=True, terminating=True),
                               ep("10.244.2.41")], [port("", 80)])
    # No endpoints at all; a slice whose port protocol does not match; an FQDN slice.
    + svc("empty", {"clusterIP": "10.96.0.55", "type": "NodePort",
                    "ports": [{"port": 80, "nodePort": 30055}]})
    + svc("proto", {"clusterIP": "10.96.0.56", "ports": [{"name": "q", "port": 53, "protocol": "UDP"}]})
    + eps("proto-1", "proto", [ep("10.244.2.50")], [port("q", 53, "TCP")])
    + svc("fqdn", {"clusterIP": "10.96.0.57", "ports": [{"port": 80}]})
    + eps("fqdn-1", "fqdn", [{"addresses": ["db.example.com"]}], [port("", 80)], address_type="FQDN")
    # Skipped Services.
    + svc("headless", {"clusterIP": "None", "ports": [{"port": 80}]})
    + eps("headless-1", "headless", [ep("10.244.2.60")], [port("", 80)])
    + svc("extname", {"type": "ExternalName", "externalName": "example.com"})
    # Dual-stack, each family its own endpoints.
    + svc("dual", {"clusterIPs": ["10.96.0.60", "fd00:96::60"], "ipFamilies": ["IPv4", "IPv6"],
                   "ipFamilyPolicy": "RequireDualStack", "type": "NodePort",
                   "ports": [{"port": 80, "nodePort": 30060}]})
    + eps("dual-4", "dual", [ep("10.244.2.70")], [port("", 8080)])
    + eps("dual-6", "dual", [ep("fd10::70")], [port("", 8080)], address_type="IPv6")
    # SCTP.
    + svc("sctp", {"clusterIP": "10.96.0.61", "ports": [{"port": 9000, "protocol": "SCTP"}]})
    + eps("sctp-1", "sctp", [ep("10.244.2.80")], [port("", 9001, "SCTP")])
    # Same name, other namespace: must not see default/web's slices.
    + svc("web", {"clusterIP": "10.96.1.10", "ports": [{"name": "http", "port": 80}]}, ns="other")
    + eps("web-x", "web", [ep("10.244.4.5")], [port("http", 8080)], ns="other")
)

POD = "10.244.9.9"            # a pod on another node
OUTSIDE = "203.0.113.7"       # an external client inside the LB source ranges
STRANGER = "192.0.2.50"       # an external client outside them
NODE_IP = "192.168.0.10"


def flow(proxier, src, dst, port, proto="TCP", n=200):
    """What kube-proxy's tests print for a flow: sorted endpoint list and masquerade, or the
    verdict."""
    results = [proxier.lb.select(dst, port, proto, src, sport=1024 + i) for i in range(n)]
    verdicts = {r[0] for r in results}
    assert len(verdicts) == 1, results
    verdict = verdicts.pop()
    if verdict != "OK":
        return verdict
    masq = {r[3] for r in results}
    assert len(masq) == 1
    return sorted({f"[{r[1]}]:{r[2]}" if ":" in r[1] else f"{r[1]}:{r[2]}" for r in results}), masq.pop()


@pytest.fixture(scope="module")
def proxier():
    return Proxier.from_config(loads(CLUSTER), seed=3)


WEB = ["10.244.1.5:8080", "10.244.2.5:8080", "10.244.3.5:8080"]

FLOWS = [
    # ClusterIP: pods are not masqueraded, off-cluster and node sources are.
    ("clusterIP from pod", POD, "10.96.0.10", 80, "TCP", (WEB, False)),
    ("clusterIP from outside", OUTSIDE, "10.96.0.10", 80, "TCP", (WEB, True)),
    ("clusterIP from node", NODE_IP, "10.96.0.10", 80, "TCP", (WEB, True)),
    ("clusterIP UDP port", POD, "10.96.0.10", 53, "UDP",
     (["10.244.1.5:5353", "10.244.2.5:5353", "10.244.3.5:5353"], False)),
    ("clusterIP wrong protocol", POD, "10.96.0.10", 53, "TCP", "NO_SERVICE"),
    ("clusterIP wrong port", POD, "10.96.0.10", 81, "TCP", "NO_SERVICE"),
    ("hairpin", "10.244.2.9", "10.96.0.40", 8000, "TCP", (["10.244.2.9:8000"], True)),
    # NodePort eTP Cluster: always masqueraded.
    ("nodePort from outside", OUTSIDE, NODE_IP, 30080, "TCP", (["10.244.1.6:8080", "10.244.2.6:8080"], True)),
    ("nodePort from pod", POD, NODE_IP, 30080, "TCP", (["10.244.1.6:8080", "10.244.2.6:8080"], True)),
    ("nodePort clusterIP", POD, "10.96.0.20", 80, "TCP", (["10.244.1.6:8080", "10.244.2.6:8080"], False)),
    ("nodePort other address", OUTSIDE, "192.168.0.11", 30080, "TCP", "NO_SERVICE"),
    # LoadBalancer eTP Local with source ranges.
    ("LB from allowed source", OUTSIDE, "198.51.100.1", 443, "TCP", (["10.244.1.7:8443"], False)),
    ("LB from other source", STRANGER, "198.51.100.1", 443, "TCP", "SRC_DENIED"),
    ("LB nodePort ignores ranges", STRANGER, NODE_IP, 30443, "TCP", (["10.244.1.7:8443"], False)),
    ("LB from pod: firewalled", POD, "198.51.100.1", 443, "TCP", "SRC_DENIED"),
    ("LB nodePort from pod: short-circuit", POD, NODE_IP, 30443, "TCP",
     (["10.244.1.7:8443", "10.244.2.7:8443"], False)),
    ("LB nodePort from node: masquerade", NODE_IP, NODE_IP, 30443, "TCP",
     (["10.244.1.7:8443", "10.244.2.7:8443"], True)),
    ("LB clusterIP", POD, "10.96.0.30", 443, "TCP", (["10.244.1.7:8443", "10.244.2.7:8443"], False)),
    # eTP Local without a local endpoint: outside dropped, pods short-circuited.
    ("LB no local endpoint", OUTSIDE, "198.51.100.3", 443, "TCP", "DROP"),
    ("LB no local endpoint from pod", POD, "198.51.100.3", 443, "TCP",
     (["10.244.2.8:443", "10.244.3.8:443"], False)),
    ("LB ipMode Proxy not captured", OUTSIDE, "198.51.100.4", 443, "TCP", "NO_SERVICE"),
    ("LB without node ports", OUTSIDE, NODE_IP, 443, "TCP", "NO_SERVICE"),
    # externalIPs (eTP Cluster: masqueraded).
    ("externalIP", OUTSIDE, "198.51.100.2", 8000, "TCP", (["10.244.2.9:8000"], True)),
    # internalTrafficPolicy Local.
    ("iTP Local", POD, "10.96.0.50", 80, "TCP", (["10.244.1.10:80"], False)),
    ("iTP Local, no local endpoint", POD, "10.96.0.51", 80, "TCP", "DROP"),
    # Endpoint conditions.
    ("terminating fallback", POD, "10.96.0.53", 80, "TCP", (["10.244.2.30:80"], False)),
    ("ready preferred", POD, "10.96.0.54", 80, "TCP", (["10.244.2.41:80"], False)),
    # No endpoints: reject on every frontend.
    ("no endpoints", POD, "10.96.0.55", 80, "TCP", "REJECT"),
    ("no endpoints nodePort", OUTSIDE, NODE_IP, 30055, "TCP", "REJECT"),
    ("protocol mismatch", POD, "10.96.0.56", 53, "UDP", "REJECT"),
    ("FQDN slice ignored", POD, "10.96.0.57", 80, "TCP", "REJECT"),
    # Dual-stack.
    ("dual v4", POD, "10.96.0.60", 80, "TCP", (["10.244.2.70:8080"], False)),
    ("dual v6", "fd10::9", "fd00:96::60", 80, "TCP", (["[fd10::70]:8080"], False)),
    ("dual v6 nodePort", "2001:db8::1", "fd00::10", 30060, "TCP", (["[fd10::70]:8080"], True)),
    ("dual v6 from outside", "2001:db8::1", "fd00:96::60", 80, "TCP", (["[fd10::70]:8080"], True)),
    # SCTP.
    ("SCTP", POD, "10.96.0.61", 9000, "SCTP", (["10.244.2.80:9001"], False)),
    # Namespaces keep same-named Services apart.
    ("other namespace", POD, "10.96.1.10", 80, "TCP", (["10.244.4.5:8080"], False)),
]


@pytest.mark.parametrize("src,dst,port,proto,expected", [f[1:] for f in FLOWS], ids=[f[0] for f in FLOWS])
def test_flows(proxier, src, dst, port, proto, expected):
    assert flow(proxier, src, dst, port, proto) == expected


def test_skipped_services(proxier):
    keys = {k[:2] for k in proxier.lb.keys()}
    assert ("default", "headless") not in keys and ("default", "extname") not in keys
    # 16 programmed Services; web has two ports, dual-stack is one entry per family.
    assert len(proxier.lb.keys()) == 18


def test_session_affinity(proxier):
    first = {proxier.lb.select("10.96.0.52", 80, "TCP", POD, sport=1024 + i)[1] for i in range(50)}
    assert len(first) == 1
    others = {proxier.lb.select("10.96.0.52", 80, "TCP", f"10.244.8.{i}")[1] for i in range(1, 80)}
    assert len(others) > 1


def test_node_port_addresses():
    kube_proxy = ("---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                  "nodePortAddresses: [192.168.0.0/24]\n")
    text = CLUSTER.replace('nodeIPs: [192.168.0.10, "fd00::10"]', 'nodeIPs: [192.168.0.10, 172.16.0.10, "fd00::10"]')
    p = Proxier.from_config(loads(text + kube_proxy))
    assert flow(p, OUTSIDE, NODE_IP, 30080)[0] == ["10.244.1.6:8080", "10.244.2.6:8080"]
    assert flow(p, OUTSIDE, "172.16.0.10", 30080) == "NO_SERVICE"
    assert flow(p, "2001:db8::1", "fd00::10", 30060)[0] == ["[fd10::70]:8080"]   # no v6 CIDR: all v6 IPs
    p = Proxier.from_config(loads(text + kube_proxy.replace("[192.168.0.0/24]", "[primary]")))
    assert flow(p, OUTSIDE, NODE_IP, 30080)[0] == ["10.244.1.6:8080", "10.244.2.6:8080"]
    assert flow(p, OUTSIDE, "172.16.0.10", 30080) == "NO_SERVICE"
    # Unset: the nftables-mode default, the primary IP of each family only.
    p = Proxier.from_config(loads(text))
    assert flow(p, OUTSIDE, NODE_IP, 30080)[0] == ["10.244.1.6:8080", "10.244.2.6:8080"]
    assert flow(p, "2001:db8::1", "fd00::10", 30060)[0] == ["[fd10::70]:8080"]
    assert flow(p, OUTSIDE, "172.16.0.10", 30080) == "NO_SERVICE"
    p = Proxier.from_config(loads(text + kube_proxy.replace("[192.168.0.0/24]", "[0.0.0.0/0, '::/0']")))
    assert flow(p, OUTSIDE, "172.16.0.10", 30080)[0] == ["10.244.1.6:8080", "10.244.2.6:8080"]


def test_masquerade_all():
    kube_proxy = ("---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                  "iptables: {masqueradeAll: true}\n")
    p = Proxier.from_config(loads(CLUSTER + kube_proxy))
    assert flow(p, POD, "10.96.0.10", 80) == (WEB, True)
    # masqueradeAll only adds the ClusterIP rule; eTP Local keeps the client address.
    assert flow(p, OUTSIDE, "198.51.100.1", 443) == (["10.244.1.7:8443"], False)


def test_nat_outgoing_uses_node_networks(proxier):
    assert proxier.lb.nat_outgoing_of(POD, "8.8.8.8")
    assert not proxier.lb.nat_outgoing_of(POD, "192.168.0.20")   # on-link route of the node
    assert not proxier.lb.nat_outgoing_of(POD, "10.244.3.3")
    assert proxier.lb.node_ip_of(4) == NODE_IP


def test_source_range_allows_node_through_vip():
    text = CLUSTER.replace('"loadBalancerSourceRanges": ["203.0.113.0/24"]',
                           '"loadBalancerSourceRanges": ["203.0.113.0/24", "192.168.0.0/24"]')
    p = Proxier.from_config(loads(text))
    # The node IP is in the ranges, so the VIP itself is an allowed source (looped-back traffic).
    assert flow(p, "198.51.100.1", "198.51.100.1", 443) == (["10.244.1.7:8443"], False)
    assert flow(p, STRANGER, "198.51.100.1", 443) == "SRC_DENIED"
    text = CLUSTER.replace('"loadBalancerSourceRanges": ["203.0.113.0/24"]',
                           '"loadBalancerSourceRanges": ["203.0.113.0/24", "0.0.0.0/0"]')
    assert flow(Proxier.from_config(loads(text)), STRANGER, "198.51.100.1", 443) == (["10.244.1.7:8443"], False)


def test_topology_hints():
    text = (NODE_CONFIG
            + "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-a, labels: {topology.kubernetes.io/zone: z1}}\n"
            + svc("t", {"clusterIP": "10.96.0.70", "ports": [{"port": 80}]})
            + eps("t-1", "t", [dict(ep("10.244.2.1"), hints={"forZones": [{"name": "z1"}]}),
                               dict(ep("10.244.3.1"), hints={"forZones": [{"name": "z2"}]})], [port("", 80)]))
    assert flow(Proxier.from_config(loads(text)), POD, "10.96.0.70", 80) == (["10.244.2.1:80"], False)
    # One endpoint without hints: topology is ignored.
    text = text.replace(', "hints": {"forZones": [{"name": "z2"}]}', "")
    assert flow(Proxier.from_config(loads(text)), POD, "10.96.0.70", 80)[0] == ["10.244.2.1:80", "10.244.3.1:80"]


# ---- change tracking ----

class FakeConntrack:
    def __init__(self):
        self.calls = []
        self.destinations = []

    def flush(self, ip, port, proto):
        self.calls.append((ip, port, proto))
        return 1

    def flush_destination(self, ip, port, proto):
        self.destinations.append((ip, port, proto))
        return 0


@pytest.fixture
def live():
    config = loads(CLUSTER)
    ct = FakeConntrack()
    p = Proxier.from_config(config, conntrack=ct, seed=5)
    services = {(s.namespace, s.name): s for s in config.services}
    slices = {(s.namespace, s.name): s for s in config.endpoint_slices}
    return p, ct, services, slices


def test_tracker_drops_noop_changes():
    t = ChangeTracker()
    assert not t.update("k", "a", "a")
    assert t.update("k", "a", "b")
    assert not t.update("k", "b", "a")       # back where it started
    assert not t.pending()
    assert t.update("k", None, "x") and t.update("k", "x", "y")
    assert t.take() == {"k": [None, "y"]}


def test_noop_update_changes_nothing(live):
    p, ct, services, slices = live
    table = p.lb
    svc = services[("default", "web")]
    assert not p.on_service(svc, svc)
    assert not p.on_endpoint_slice(slices[("default", "web-1")], slices[("default", "web-1")])
    result = p.sync()
    assert not (result.services_changed or result.endpoints_changed or result.stale_endpoints or ct.calls)
    assert p.lb is table


def test_slice_change_touches_only_its_service(live):
    p, ct, services, slices = live
    web_id = p.lb.service_id_of("10.96.0.10", 80, "TCP")
    np_id = p.lb.service_id_of("10.96.0.20", 80, "TCP")
    old = slices[("default", "np-1")]
    new = replace(old, endpoints=old.endpoints[:1])
    assert p.on_endpoint_slice(old, new)
    result = p.sync()
    assert result.endpoints_changed == {("default", "np")} and not result.services_changed
    assert flow(p, OUTSIDE, NODE_IP, 30080) == (["10.244.1.6:8080"], True)
    assert p.lb.service_id_of("10.96.0.20", 80, "TCP") == np_id
    assert p.lb.service_id_of("10.96.0.10", 80, "TCP") == web_id
    assert result.stale_endpoints == [("10.244.2.6", 8080, "TCP")]
    assert ct.calls == []                     # TCP is never flushed


def test_endpoint_removal_flushes_udp_and_sctp_only(live):
    p, ct, services, slices = live
    old = slices[("default", "web-2")]
    new = replace(old, endpoints=old.endpoints[:1])          # 10.244.3.5 goes away
    p.on_endpoint_slice(old, new)
    result = p.sync()
    assert sorted(result.stale_endpoints) == [("10.244.3.5", 5353, "UDP"), ("10.244.3.5", 8080, "TCP")]
    assert ct.calls == [("10.244.3.5", 5353, 17)]
    assert result.flushed == 1
    # 10.244.2.5 is still published by web-1: removing it from web-2 flushes nothing.
    ct.calls.clear()
    p.on_endpoint_slice(new, replace(new, endpoints=()))
    result = p.sync()
    assert not result.stale_endpoints and not ct.calls
    # SCTP Service deleted: its endpoint is flushed.
    p.on_service(services[("default", "sctp")], None)
    result = p.sync()
    assert result.services_changed == {("default", "sctp")}
    assert ct.calls == [("10.244.2.80", 9001, 132)]
    assert flow(p, POD, "10.96.0.61", 9000, "SCTP") == "NO_SERVICE"


def test_endpoint_not_serving_is_stale(live):
    p, ct, services, slices = live
    old = slices[("default", "web-1")]
    eps_ = (replace(old.endpoints[0], ready=False, serving=False, terminating=True),) + old.endpoints[1:]
    p.on_endpoint_slice(old, replace(old, endpoints=eps_))
    p.sync()
    assert ct.calls == [("10.244.1.5", 5353, 17)]
    assert flow(p, POD, "10.96.0.10", 80)[0] == ["10.244.2.5:8080", "10.244.3.5:8080"]


def test_service_change_and_new_slice(live):
    p, ct, services, slices = live
    old = services[("default", "empty")]
    new_slice = replace(slices[("default", "np-1")], name="empty-1", service_name="empty")
    p.on_endpoint_slice(None, new_slice)
    result = p.sync()
    assert result.endpoints_changed == {("default", "empty")}
    assert flow(p, POD, "10.96.0.55", 80)[0] == ["10.244.1.6:8080", "10.244.2.6:8080"]
    p.on_service(old, replace(old, external_traffic_policy="Local"))
    result = p.sync()
    assert result.services_changed == {("default", "empty")}
    assert flow(p, OUTSIDE, NODE_IP, 30055) == (["10.244.1.6:8080"], False)
    # Slice label moved to another Service: both are touched.
    p.on_endpoint_slice(new_slice, replace(new_slice, service_name="itp-none"))
    result = p.sync()
    assert result.endpoints_changed == {("default", "empty"), ("default", "itp-none")}
    assert flow(p, POD, "10.96.0.55", 80) == "REJECT"
    assert flow(p, POD, "10.96.0.51", 80) == (["10.244.1.6:8080"], False)


def test_new_service_and_conflicting_frontend(live):
    p, ct, services, slices = live
    web, ext = services[("default", "web")], services[("default", "ext")]
    clash = replace(web, name="clash", cluster_ips=(ip_address("10.96.0.99"),),
                    external_ips=(ip_address("198.51.100.2"),), ports=(replace(web.ports[0], port=8000),))
    p.on_service(None, clash)
    result = p.sync()
    assert result.services_changed == {("default", "clash")}
    assert any("198.51.100.2:8000/TCP is already used by default/ext" in w for w in result.warnings)
    assert flow(p, OUTSIDE, "198.51.100.2", 8000) == (["10.244.2.9:8000"], True)   # first owner kept
    assert flow(p, POD, "10.96.0.99", 8000) == "REJECT"                          # no slices for clash
    # When ext lets go of the address, clash gets it in the same sync.
    p.on_service(ext, None)
    result = p.sync()
    assert result.services_changed == {("default", "ext"), ("default", "clash")}
    assert flow(p, OUTSIDE, "198.51.100.2", 8000) == "REJECT"


def test_apply_swaps_generation_and_flushes(live):
    p, ct, services, slices = live
    first = p.lb
    result = p.apply(loads(CLUSTER.replace("10.244.3.5", "10.244.3.55")))
    assert p.lb is not first
    assert sorted(result.stale_endpoints) == [("10.244.3.5", 5353, "UDP"), ("10.244.3.5", 8080, "TCP")]
    assert ct.calls == [("10.244.3.5", 5353, 17)]
    assert flow(p, POD, "10.96.0.10", 80)[0] == ["10.244.1.5:8080", "10.244.2.5:8080", "10.244.3.55:8080"]
    assert flow(p, POD, "10.96.0.20", 80)[0] == ["10.244.1.6:8080", "10.244.2.6:8080"]
