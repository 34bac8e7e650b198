"""Proxier semantics from kube-proxy's configuration and topology: health check inputs,
ServiceCIDRs, topology hints, detect-local, UDP flushes when a Service gets endpoints."""
from dataclasses import replace
from ipaddress import ip_address, ip_network

import pytest

from dataplane.config import loads
from dataplane.proxier import Proxier
from tests.test_proxier import CLUSTER, NODE_CONFIG, ep, eps, flow, port, svc


def test_health_check_inputs():
    p = Proxier.from_config(loads(CLUSTER))
    assert p.health_check_services() == {("default", "lbl"): 32000}
    assert p.local_ready_endpoints() == {("default", "lbl"): 1}
    assert p.health_check_addresses() == ["192.168.0.10", "fd00::10"]


KPC = "---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
SERVICE_CIDR = ("---\napiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\n"
                "spec: {cidrs: [10.96.0.0/16, 'fd00:96::/112']}\n")


# ---- ServiceCIDRs: kube-proxy nftables' cluster-ips-check ----

def test_cluster_ip_on_an_unserved_port_is_rejected_always():
    p = Proxier.from_config(loads(CLUSTER))
    assert p.lb.check("10.96.0.10", 81, "TCP") == "NO_PORT"
    assert p.lb.check("10.96.0.10", 80, "UDP") == "NO_PORT"     # web serves 80/TCP and 53/UDP only
    assert p.lb.check("10.96.0.200", 80, "TCP") == "NONE"        # no ServiceCIDR: no drop check
    assert p.lb.check("198.51.100.2", 81, "TCP") == "NONE"       # an externalIP is not a ClusterIP


def test_unallocated_service_cidr_addresses_are_dropped():
    p = Proxier.from_config(loads(CLUSTER + SERVICE_CIDR))
    assert p.lb.check("10.96.0.200", 80, "TCP") == "UNALLOCATED"
    assert p.lb.check("fd00:96::99", 80, "TCP") == "UNALLOCATED"
    assert p.lb.check("10.97.0.1", 80, "TCP") == "NONE"
    assert p.lb.check("10.96.0.10", 81, "TCP") == "NO_PORT"


def test_service_cidr_and_service_events():
    config = loads(CLUSTER)
    p = Proxier.from_config(config)
    (sc,) = loads(SERVICE_CIDR).service_cidrs
    assert p.on_service_cidr(None, sc)
    p.sync()
    assert p.lb.check("10.96.0.200", 80, "TCP") == "UNALLOCATED"
    web = next(s for s in config.services if s.name == "web")
    p.on_service(web, None)
    p.sync()
    assert p.lb.check("10.96.0.10", 81, "TCP") == "UNALLOCATED"   # the ClusterIP is free again
    p.on_service(None, web)
    p.sync()
    assert p.lb.check("10.96.0.10", 81, "TCP") == "NO_PORT"
    p.on_service_cidr(sc, None)
    p.sync()
    assert p.lb.check("10.96.0.200", 80, "TCP") == "NONE"


def test_many_cluster_ips_grow_and_shrink_the_set():
    text = NODE_CONFIG + "".join(svc(f"s{i}", {"clusterIP": f"10.96.{i // 250}.{i % 250 + 1}",
                                               "ports": [{"port": 80}]}) for i in range(3000))
    config = loads(text)
    p = Proxier.from_config(config)
    assert all(p.lb.check(f"10.96.{i // 250}.{i % 250 + 1}", 81, "TCP") == "NO_PORT" for i in range(3000))
    for s in config.services[::2]:
        p.on_service(s, None)
    p.sync()
    assert [p.lb.check(f"10.96.{i // 250}.{i % 250 + 1}", 81, "TCP") for i in range(6)] == ["NONE", "NO_PORT"] * 3
    assert sum(p.lb.check(f"10.96.{i // 250}.{i % 250 + 1}", 81, "TCP") == "NO_PORT" for i in range(3000)) == 1500


# ---- topology.go ----

def hinted(ip, node, zones=(), nodes=(), ready=True):
    e = ep(ip, node, ready=ready)
    e["hints"] = {"forZones": [{"name": z} for z in zones], "forNodes": [{"name": n} for n in nodes]}
    return e


NODE_A = ("---\napiVersion: v1\nkind: Node\nmetadata: {name: node-a, labels: {topology.kubernetes.io/zone: zone-a}}\n")


def topo(endpoints, extra=""):
    text = (NODE_CONFIG + NODE_A + extra + svc("t", {"clusterIP": "10.96.5.1", "ports": [{"port": 80}],
                                                     "trafficDistribution": "PreferClose"})
            + eps("t-1", "t", endpoints, [port("", 80)]))
    return flow(Proxier.from_config(loads(text)), "10.244.9.9", "10.96.5.1", 80)[0]


@pytest.mark.parametrize("endpoints, expected", [
    # Zone hints, one for this zone: only those.
    ([hinted("10.244.1.1", "node-a", ["zone-a"]), hinted("10.244.2.1", "node-b", ["zone-b"])], ["10.244.1.1:80"]),
    # One ready endpoint without hints: hints ignored.
    ([hinted("10.244.1.1", "node-a", ["zone-a"]), ep("10.244.2.1", "node-b")], ["10.244.1.1:80", "10.244.2.1:80"]),
    # No hint for this zone: ignored.
    ([hinted("10.244.1.1", "node-c", ["zone-c"]), hinted("10.244.2.1", "node-b", ["zone-b"])],
     ["10.244.1.1:80", "10.244.2.1:80"]),
    # A not-ready endpoint without hints does not count.
    ([hinted("10.244.1.1", "node-a", ["zone-a"]), hinted("10.244.2.1", "node-b", ["zone-b"]),
      ep("10.244.3.1", "node-c", ready=False)], ["10.244.1.1:80"]),
    # Node hints win over zone hints (PreferSameNode).
    ([hinted("10.244.1.1", "node-a", ["zone-a"], ["node-a"]), hinted("10.244.1.2", "node-x", ["zone-a"], ["node-x"]),
      hinted("10.244.2.1", "node-b", ["zone-b"], ["node-b"])], ["10.244.1.1:80"]),
    # Node hints, none for this node: zone hints decide.
    ([hinted("10.244.1.2", "node-x", ["zone-a"], ["node-x"]), hinted("10.244.2.1", "node-b", ["zone-b"], ["node-b"])],
     ["10.244.1.2:80"]),
])
def test_topology_hints(endpoints, expected):
    assert topo(endpoints) == expected


def test_same_node_hints_off_by_feature_gate():
    endpoints = [hinted("10.244.1.1", "node-a", ["zone-a"], ["node-a"]),
                 hinted("10.244.1.2", "node-x", ["zone-a"], ["node-x"])]
    assert topo(endpoints, KPC + "featureGates: {PreferSameTrafficDistribution: false}\n") == [
        "10.244.1.1:80", "10.244.1.2:80"]


def test_node_zone_change_re_categorizes():
    text = (NODE_CONFIG + NODE_A + svc("t", {"clusterIP": "10.96.5.1", "ports": [{"port": 80}]})
            + eps("t-1", "t", [hinted("10.244.1.1", "node-a", ["zone-a"]), hinted("10.244.2.1", "node-b", ["zone-b"])],
                  [port("", 80)]))
    config = loads(text)
    p = Proxier.from_config(config)
    assert flow(p, "10.244.9.9", "10.96.5.1", 80)[0] == ["10.244.1.1:80"]
    node = config.nodes[0]
    assert p.on_node(node, type(node)(node.name, zone="zone-b"))
    assert not p.on_node(None, type(node)("node-b", zone="zone-a"))   # not this node
    p.sync()
    assert flow(p, "10.244.9.9", "10.96.5.1", 80)[0] == ["10.244.2.1:80"]


# ---- detectLocalMode ----

def masq(p, src, port_in=0):
    return p.lb.select("10.96.0.10", 80, "TCP", src, port_in=port_in)[3]


def test_detect_local_cluster_cidr_default():
    p = Proxier.from_config(loads(CLUSTER))
    assert not masq(p, "10.244.9.9") and masq(p, "192.168.0.50")


def test_detect_local_node_cidr_follows_the_node():
    node = ("---\napiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nspec: {podCIDR: 10.244.1.0/24}\n")
    config = loads(CLUSTER + node + KPC + "detectLocalMode: NodeCIDR\n")
    p = Proxier.from_config(config)
    assert not masq(p, "10.244.1.9") and masq(p, "10.244.9.9")
    # Nat-outgoing still uses the cluster CIDRs.
    assert not p.lb.nat_outgoing_of("10.244.9.9", "10.244.1.1") and p.lb.nat_outgoing_of("10.244.9.9", "8.8.8.8")
    old = config.nodes[0]
    p.on_node(old, replace(old, pod_cidrs=(ip_network("10.244.9.0/24"),)))
    p.sync()
    assert masq(p, "10.244.1.9") and not masq(p, "10.244.9.9")


def test_detect_local_node_cidr_without_node_is_no_detector():
    p = Proxier.from_config(loads(CLUSTER + KPC + "detectLocalMode: NodeCIDR\n"))
    assert not masq(p, "192.168.0.50")      # kube-proxy's no-op detector: no off-cluster masquerade


@pytest.mark.parametrize("mode", ["detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cni0}\n",
                                  "detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: cni}\n"])
def test_detect_local_by_interface(mode):
    text = CLUSTER.replace('ports: [{name: eth0, mac: "02:00:00:00:00:01"}]',
                           'ports: [{name: eth0, mac: "02:00:00:00:00:01"}, {name: pods, ifname: cni0, '
                           'mac: "02:00:00:00:00:02"}]')
    p = Proxier.from_config(loads(text + KPC + mode))
    assert masq(p, "10.244.9.9", port_in=0)          # a pod address, but in on the uplink
    assert not masq(p, "192.168.0.50", port_in=1)    # any source in through the bridge is local


# ---- newly active UDP Services ----

class Conntrack:
    def __init__(self):
        self.destinations = []

    def flush(self, ip, port, proto):
        return 0

    def flush_destination(self, ip, port, proto):
        self.destinations.append((ip, port, proto))
        return 1


def test_udp_service_getting_endpoints_flushes_its_frontends():
    text = (NODE_CONFIG + svc("u", {"type": "NodePort", "clusterIP": "10.96.7.1", "externalIPs": ["198.51.100.9"],
                                    "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                                              {"name": "tcp", "port": 53, "protocol": "TCP", "nodePort": 30054}]}))
    slices = eps("u-1", "u", [ep("10.244.2.1")], [port("dns", 53, "UDP"), port("tcp", 53, "TCP")])
    ct = Conntrack()
    p = Proxier.from_config(loads(text), conntrack=ct)
    assert ct.destinations == []                      # no endpoints: nothing to flush
    (s,) = loads(slices).endpoint_slices
    p.on_endpoint_slice(None, s)
    result = p.sync()
    assert sorted(ct.destinations) == [("10.96.7.1", 53, 17), ("192.168.0.10", 30053, 17), ("198.51.100.9", 53, 17)]
    assert result.flushed == 3 and [k[2] for k in result.newly_active] == ["dns"]
    ct.destinations.clear()
    more = replace(s, endpoints=s.endpoints + (replace(s.endpoints[0], addresses=(ip_address("10.244.2.2"),)),))
    p.on_endpoint_slice(s, more)
    p.sync()
    assert ct.destinations == []                      # some -> more: nothing
