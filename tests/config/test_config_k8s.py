"""Kubernetes objects: kubectl dumps, API validation rules, nil semantics, kube-proxy config."""
import ipaddress
import json
from pathlib import Path

import pytest
import yaml

from dataplane.config import ConfigError, load, loads

FIXTURE = Path(__file__).parent / "fixtures" / "kubectl-get-all.yaml"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "replay.yaml"
ip = ipaddress.ip_address


def svc(spec: dict, name="web", namespace="shop", status=None) -> str:
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    if status:
        obj["status"] = status
    return yaml.safe_dump(obj)


def base_spec(**kw) -> dict:
    return {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}], **kw}


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        loads(text)
    return [f"{p.kind} {p.name}: {p.path}: {p.message}" for p in exc.value.problems]


def one_problem(text: str) -> str:
    (p,) = problems(text)
    return p


# ---- kubectl get -o yaml ----

@pytest.fixture(scope="module")
def dump():
    return load(FIXTURE)


def test_kubectl_list_loads_as_is(dump):
    assert [f"{s.namespace}/{s.name}" for s in dump.services] == [
        "default/kubernetes", "shop/web", "shop/gateway", "shop/db", "shop/search"]
    assert [s.name for s in dump.endpoint_slices] == ["kubernetes", "web-8kq2p", "web-r7m4d", "gateway-5tq9w", "orphan"]
    assert [n.name for n in dump.nodes] == ["node-a", "node-b"]
    assert dump.problems == () and dump.warnings == ()


def test_dual_stack_nodeport_service(dump):
    web = dump.services[1]
    assert web.type == "NodePort" and web.ignored is None
    assert web.cluster_ips == (ip("10.96.120.7"), ip("fd00:10:96::7a1c"))
    assert web.ip_families == ("IPv4", "IPv6")
    (port,) = web.ports
    assert (port.name, port.protocol, port.port, port.target_port, port.node_port) == ("http", "TCP", 80, "http", 30080)
    assert web.session_affinity == "ClientIP" and web.session_affinity_timeout == 10800
    assert web.external_traffic_policy == "Local" and web.health_check_node_port is None
    assert [s.address_type for s in dump.endpoint_slices_for(web)] == ["IPv4", "IPv6"]


def test_load_balancer_service(dump):
    gw = dump.services[2]
    assert gw.external_ips == (ip("198.51.100.20"),)
    assert gw.load_balancer_ips == (ip("203.0.113.10"),)  # ipMode Proxy and hostname-only ingress left out
    assert gw.load_balancer_source_ranges == (ipaddress.ip_network("203.0.113.0/24"),)
    assert gw.internal_traffic_policy == "Local" and gw.allocate_load_balancer_node_ports
    assert [(p.protocol, p.node_port) for p in gw.ports] == [("TCP", 31443), ("UDP", 31443)]


def test_ignored_services_and_slices(dump):
    by_name = {s.name: s for s in dump.services}
    assert by_name["db"].headless and by_name["db"].ignored == "headless (clusterIP: None)"
    assert by_name["search"].ignored == "type ExternalName is served by DNS only"
    assert by_name["kubernetes"].ignored is None
    orphan = dump.endpoint_slices[-1]
    assert orphan.service_name is None and orphan.ignored == "no kubernetes.io/service-name label"
    described = {s["name"]: s for s in dump.describe()["endpointSlices"]}
    assert described["shop/orphan"]["ignored"] == "no kubernetes.io/service-name label"


def test_endpoint_condition_nil_semantics(dump):
    ready, terminating, not_ready = dump.endpoint_slices[1].endpoints
    assert (ready.ready, ready.serving, ready.terminating) == (True, True, False)
    assert ready.hint_zones == ("zone-a",) and ready.node_name == "node-a" and ready.zone == "zone-a"
    assert (terminating.ready, terminating.serving, terminating.terminating) == (False, True, True)
    assert (not_ready.ready, not_ready.serving, not_ready.terminating) == (False, False, False)  # serving nil = ready
    (empty_conditions,) = dump.endpoint_slices[-1].endpoints
    assert (empty_conditions.ready, empty_conditions.serving, empty_conditions.terminating) == (True, True, False)
    assert dump.endpoint_slices[3].endpoints == () and dump.endpoint_slices[3].ports == ()  # `endpoints: null`
    assert dump.endpoint_slices[-1].ports[0].name == "" and dump.endpoint_slices[-1].ports[0].protocol == "UDP"


def test_nodes(dump):
    a, b = dump.nodes
    assert a.pod_cidrs == (ipaddress.ip_network("10.244.0.0/24"), ipaddress.ip_network("fd00:10:244::/64"))
    assert a.internal_ips == (ip("192.168.0.2"), ip("fd00::2")) and a.hostname == "node-a" and a.zone == "zone-a"
    assert b.external_ips == (ip("203.0.113.3"),)


def test_describe_is_json_and_complete(dump):
    d = dump.describe()
    assert json.loads(json.dumps(d)) == d
    assert d["services"][1] == {
        "name": "shop/web", "type": "NodePort", "clusterIPs": ["10.96.120.7", "fd00:10:96::7a1c"],
        "ipFamilies": ["IPv4", "IPv6"],
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http", "nodePort": 30080}],
        "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster",
        "sessionAffinityTimeoutSeconds": 10800}
    assert d["nodes"][0]["podCIDRs"] == ["10.244.0.0/24", "fd00:10:244::/64"]


def test_json_list_and_typed_list(tmp_path):
    f = tmp_path / "dump.json"
    f.write_text(json.dumps(yaml.safe_load(FIXTURE.read_text())))
    assert len(load(f).services) == 5
    typed = {"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "1"},
             "items": [{"metadata": {"name": "a", "namespace": "x"}, "spec": base_spec()}]}
    assert loads(yaml.safe_dump(typed)).services[0].name == "a"


def test_unknown_kinds_are_skipped_with_warning():
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "x"}, "data": {"a": "b"}},
        yaml.safe_load(svc(base_spec()))]})
    cfg = loads(text + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n", source="all.yaml")
    assert len(cfg.services) == 1
    assert [str(w) for w in cfg.warnings] == [
        "all.yaml:3 [document 0]: ConfigMap x/cm: items[0]: skipped: v1 ConfigMap is not used by the dataplane",
        "all.yaml:22 [document 1]: Deployment d: skipped: apps/v1 Deployment is not used by the dataplane"]
    assert cfg.describe()["warnings"] == [str(w) for w in cfg.warnings]


def test_directory_mixes_our_config_and_kubectl_dump(tmp_path):
    (tmp_path / "10-node.yaml").write_text(EXAMPLE.read_text())
    (tmp_path / "20-cluster.yaml").write_text(FIXTURE.read_text())
    cfg = load(tmp_path)
    assert cfg.dataplane.node_name == "node-a" == cfg.node_name and len(cfg.services) == 5


# ---- Service validation ----

@pytest.mark.parametrize("spec, expected", [
    (base_spec(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 70000}]),
     "spec.ports[1].port: must be 1-65535, got 70000"),
    (base_spec(ports=[{"port": 80, "protocol": "ICMP"}]), "spec.ports[0].protocol: must be one of TCP, UDP, SCTP, got 'ICMP'"),
    (base_spec(clusterIP="10.96.0.300"), "spec.clusterIP: must be an IPv4 or IPv6 address, got '10.96.0.300'"),
    (base_spec(clusterIPs=["10.96.0.10", "bad"]), "spec.clusterIPs[1]: must be an IPv4 or IPv6 address"),
    (base_spec(clusterIPs=["10.96.0.11"]), "spec.clusterIPs[0]: must match spec.clusterIP '10.96.0.10'"),
    (base_spec(clusterIPs=["10.96.0.10", "10.96.0.11"]), "spec.clusterIPs: at most one IPv4 and one IPv6"),
    (base_spec(ipFamilies=["IPv6"]), "spec.clusterIPs[0]: 10.96.0.10 is not IPv6 as listed in spec.ipFamilies[0]"),
    (base_spec(ipFamilies=["IPv5"]), "spec.ipFamilies[0]: must be one of IPv4, IPv6"),
    (base_spec(type="NodePort", ports=[{"port": 80, "nodePort": 70000}]), "spec.ports[0].nodePort: must be 1-65535, got 70000"),
    (base_spec(ports=[{"port": 80, "nodePort": 30000}]), "spec.ports[0].nodePort: may not be used when type is ClusterIP"),
    (base_spec(ports=[{"name": "http", "port": 80}, {"name": "http", "port": 81}]),
     "spec.ports[1]: duplicate name 'http' (same as spec.ports[0])"),
    (base_spec(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]),
     "spec.ports[1]: duplicate port 80/TCP (same as spec.ports[0])"),
    (base_spec(type="NodePort", ports=[{"name": "a", "port": 80, "nodePort": 30001}, {"name": "b", "port": 81, "nodePort": 30001}]),
     "spec.ports[1]: duplicate nodePort 30001/TCP"),
    (base_spec(ports=[{"port": 80}, {"port": 81, "name": "b"}]), "spec.ports[0].name: required when the Service has more than one port"),
    (base_spec(ports=[{"port": 80, "targetPort": "HTTP_port"}]), "spec.ports[0].targetPort: must be a port number or an IANA service name"),
    (base_spec(ports=[{"port": 80, "targetPort": "8080"}]), "spec.ports[0].targetPort: must be a port number or an IANA service name"),
    (base_spec(ports=[{"port": 80, "targetPort": "a-very-long-port-name"}]), "spec.ports[0].targetPort: must be"),
    (base_spec(ports=[{"port": 80, "targetPort": 0x10000}]), "spec.ports[0].targetPort: must be 1-65535"),
    (base_spec(ports=[{"port": "80"}]), "spec.ports[0].port: must be an integer, got string '80'"),
    (base_spec(ports=[]), "spec.ports: at least one port is required"),
    (base_spec(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86401}}),
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be 1-86400, got 86401"),
    (base_spec(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}}),
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be 1-86400, got 0"),
    (base_spec(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10}}),
     "spec.sessionAffinityConfig.clientIP: must not be set when sessionAffinity is None"),
    (base_spec(sessionAffinity="Sticky"), "spec.sessionAffinity: must be one of None, ClientIP"),
    (base_spec(externalTrafficPolicy="Global"), "spec.externalTrafficPolicy: must be one of Cluster, Local"),
    (base_spec(internalTrafficPolicy="Node"), "spec.internalTrafficPolicy: must be one of Cluster, Local"),
    (base_spec(healthCheckNodePort=30500), "spec.healthCheckNodePort: only valid for type LoadBalancer"),
    (base_spec(loadBalancerSourceRanges=["10.0.0.0/8"]), "spec.loadBalancerSourceRanges: may only be used when type is LoadBalancer"),
    (base_spec(type="LoadBalancer", loadBalancerSourceRanges=["10.0.0.0"]), "spec.loadBalancerSourceRanges[0]: must be a CIDR"),
    (base_spec(externalIPs=["127.0.0.1"]), "spec.externalIPs[0]: must not be a loopback or link-local address"),
    (base_spec(externalIPs=["1.2.3.4", "1.2.3.4"]), "spec.externalIPs[1]: duplicate address 1.2.3.4"),
    (base_spec(type="Ingress"), "spec.type: must be one of ClusterIP, NodePort, LoadBalancer, ExternalName"),
    (base_spec(type="NodePort", clusterIP="None"), "spec.clusterIP: headless (None) is only valid for type ClusterIP"),
    (base_spec(type="ExternalName"), "spec.clusterIP: must not be set for type ExternalName"),
    ({"type": "ExternalName"}, "spec.externalName: required for type ExternalName"),
    (base_spec(publishNotReadyAddresses="yes"), "spec.publishNotReadyAddresses: must be a boolean, got string 'yes'"),
    (base_spec(clusterIp="10.96.0.1"), "spec.clusterIp: unknown field (did you mean 'clusterIP'?)"),
    (base_spec(ports=[{"port": 80, "hostPort": 80}]), "spec.ports[0].hostPort: unknown field"),
])
def test_service_validation(spec, expected):
    assert one_problem(svc(spec)).startswith(f"Service shop/web: {expected}")


def test_service_defaults_and_client_ip_default_timeout():
    s = loads(svc(base_spec(sessionAffinity="ClientIP"))).services[0]
    assert (s.type, s.session_affinity_timeout, s.ip_families) == ("ClusterIP", 10800, ("IPv4",))
    p = s.ports[0]
    assert (p.protocol, p.target_port, p.node_port) == ("TCP", 80, None)
    unallocated = loads(svc({"ports": [{"port": 80}]})).services[0]
    assert unallocated.ignored == "no cluster IP allocated (spec.clusterIP unset)"
    assert loads(svc(base_spec(), namespace=None)).services[0].namespace == "default"


def test_service_name_and_metadata_rules():
    assert one_problem(svc(base_spec(), name="1web")).startswith("Service shop/1web: metadata.name: must be a lowercase RFC 1035")
    assert one_problem(svc(base_spec(), namespace="Shop")).startswith("Service Shop/web: metadata.namespace:")
    text = svc(base_spec()).replace("metadata:", "metadata:\n  owner: me")
    assert one_problem(text) == "Service shop/web: metadata.owner: unknown field"
    assert one_problem("apiVersion: v1\nkind: Service\nspec: {}\n") == "Service None: metadata: required field is missing"


def test_invalid_object_is_dropped_others_load():
    text = svc(base_spec(), name="good") + "---\n" + svc(base_spec(ports=[{"port": 0}]), name="bad")
    cfg = loads(text, strict=False)
    assert [s.name for s in cfg.services] == ["good"]
    (p,) = cfg.problems
    assert (p.document, p.kind, p.name, p.path, p.line) == (1, "Service", "shop/bad", "spec.ports[0].port", 20)
    with pytest.raises(ConfigError):
        loads(text)


def test_duplicate_objects():
    text = svc(base_spec()) + "---\n" + svc(base_spec(clusterIP="10.96.0.11"))
    assert one_problem(text) == "Service shop/web: : duplicate object: already defined at <string> [document 0]"
    other_ns = svc(base_spec()) + "---\n" + svc(base_spec(clusterIP="10.96.0.11"), namespace="other")
    assert len(loads(other_ns).services) == 2


def test_unsupported_api_version_is_an_error():
    text = svc(base_spec()).replace("apiVersion: v1", "apiVersion: v2")
    assert one_problem(text) == "Service shop/web: apiVersion: unsupported apiVersion 'v2' for Service (use 'v1')"


# ---- EndpointSlice ----

def slice_(endpoints=None, ports=None, address_type="IPv4", labels=None, **extra) -> str:
    obj = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": address_type,
           "metadata": {"name": "web-abc", "namespace": "shop",
                        "labels": {"kubernetes.io/service-name": "web"} if labels is None else labels},
           "endpoints": endpoints if endpoints is not None else [{"addresses": ["10.244.0.5"]}],
           "ports": ports if ports is not None else [{"name": "http", "port": 8080}], **extra}
    return yaml.safe_dump(obj)


@pytest.mark.parametrize("text, expected", [
    (slice_(address_type="IPv5"), "addressType: must be one of IPv4, IPv6, FQDN"),
    (slice_(endpoints=[{"addresses": ["fd00::5"]}]), "endpoints[0].addresses[0]: must be an IPv4 address (addressType)"),
    (slice_(endpoints=[{"addresses": []}]), "endpoints[0].addresses: must list 1-100 addresses"),
    (slice_(endpoints=[{"addresses": ["10.0.0.1"], "conditions": {"ready": "true"}}]),
     "endpoints[0].conditions.ready: must be a boolean, got string 'true'"),
    (slice_(endpoints=[{"addresses": ["10.0.0.1"], "conditions": {"healthy": True}}]),
     "endpoints[0].conditions.healthy: unknown field"),
    (slice_(ports=[{"name": "http", "port": 70000}]), "ports[0].port: must be 1-65535, got 70000"),
    (slice_(ports=[{"name": "http", "port": 80, "protocol": "icmp"}]), "ports[0].protocol: must be one of TCP, UDP, SCTP"),
    (slice_(ports=[{"name": "http", "port": 80}, {"name": "http", "port": 81}]), "ports[1]: duplicate name 'http'"),
    (slice_(spec={}), "spec: unknown field"),
])
def test_endpoint_slice_validation(text, expected):
    assert one_problem(text).startswith(f"EndpointSlice shop/web-abc: {expected}")


def test_endpoint_slice_fqdn_and_all_ports():
    s = loads(slice_(address_type="FQDN", endpoints=[{"addresses": ["db.example.com"]}], ports=[{"name": ""}])).endpoint_slices[0]
    assert s.ignored == "addressType FQDN" and s.endpoints[0].addresses == ("db.example.com",)
    assert s.ports[0].port is None  # nil port: all ports


# ---- Node ----

def node(spec=None, status=None, name="node-a") -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                           "spec": spec or {}, "status": status or {}})


@pytest.mark.parametrize("text, expected", [
    (node({"podCIDR": "10.244.0.0/33"}), "spec.podCIDR: must be a CIDR"),
    (node({"podCIDRs": ["10.244.0.0/24", "10.245.0.0/24"]}), "spec.podCIDRs: at most one IPv4 and one IPv6 CIDR"),
    (node({"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.1.0/24"]}), "spec.podCIDRs[0]: must match spec.podCIDR"),
    (node(status={"addresses": [{"type": "InternalIP", "address": "node-a"}]}), "status.addresses[0].address: must be an IPv4 or IPv6"),
    (node(status={"addresses": [{"type": "PublicIP", "address": "1.2.3.4"}]}), "status.addresses[0].type: must be one of"),
    (node({"podCidr": "10.244.0.0/24"}), "spec.podCidr: unknown field (did you mean 'podCIDR'?)"),
])
def test_node_validation(text, expected):
    assert one_problem(text).startswith(f"Node node-a: {expected}")


def test_node_pod_cidr_host_bits_normalised_like_the_api():
    assert loads(node({"podCIDR": "10.244.0.1/24"})).nodes[0].pod_cidrs == (ipaddress.ip_network("10.244.0.0/24"),)


# ---- KubeProxyConfiguration ----

KPC = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
hostnameOverride: node-a
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
nodePortAddresses: [192.168.0.0/24]
bindAddress: 0.0.0.0
clientConnection: {kubeconfig: /var/lib/kube-proxy/kubeconfig.conf, qps: 5}
iptables: {masqueradeAll: true, masqueradeBit: 14, syncPeriod: 30s}
ipvs: {scheduler: rr, strictARP: false}
conntrack:
  maxPerCore: 65536
  min: 0
  tcpEstablishedTimeout: 24h0m0s
  tcpCloseWaitTimeout: 1h
  udpTimeout: 30s
  udpStreamTimeout: 2m30s
"""


def test_kube_proxy_configuration():
    kp = loads(KPC).kube_proxy
    assert kp.hostname_override == "node-a" and kp.mode == "ipvs" and kp.masquerade_all
    assert kp.cluster_cidrs == (ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("fd00:10:244::/56"))
    assert kp.node_port_addresses == (ipaddress.ip_network("192.168.0.0/24"),) and not kp.node_port_primary
    c = kp.conntrack
    assert (c.max_per_core, c.min, c.tcp_established_timeout, c.tcp_close_wait_timeout, c.udp_timeout,
            c.udp_stream_timeout) == (65536, 0, 86400, 3600, 30, 150)


def test_kube_proxy_defaults_and_primary():
    kp = loads("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
               "nodePortAddresses: [primary]\nconntrack: {udpTimeout: 0s}\n").kube_proxy
    assert kp.node_port_primary and kp.node_port_addresses == () and kp.cluster_cidrs == ()
    assert (kp.conntrack.max_per_core, kp.conntrack.tcp_established_timeout, kp.conntrack.udp_timeout) == (32768, 86400, None)


@pytest.mark.parametrize("old, new, expected", [
    ("mode: ipvs", "mode: userspace-ish", "mode: must be one of , iptables, ipvs, nftables, kernelspace"),
    ("tcpCloseWaitTimeout: 1h", "tcpCloseWaitTimeout: 1 hour", "conntrack.tcpCloseWaitTimeout: must be a duration"),
    ("udpTimeout: 30s", "udpTimeout: -30s", "conntrack.udpTimeout: must not be negative"),
    ("clusterCIDR: 10.244.0.0/16,fd00:10:244::/56", "clusterCIDR: '10.244.0.0/16,fd00:10:244::'",
     "clusterCIDR: must be a CIDR"),
    ("clusterCIDR: 10.244.0.0/16,fd00:10:244::/56", "clusterCIDR: 10.244.0.0/16,10.245.0.0/16",
     "clusterCIDR: at most one IPv4 and one IPv6 CIDR"),
    ("nodePortAddresses: [192.168.0.0/24]", "nodePortAddresses: [primary, 10.0.0.0/8]",
     "nodePortAddresses: \"primary\" must be the only entry"),
    ("maxPerCore: 65536", "maxPerCore: -1", "conntrack.maxPerCore: must be 0-1073741824, got -1"),
    ("min: 0", "min: 2147483647", "conntrack.min: must be 0-1073741824, got 2147483647"),
    ("masqueradeAll: true", "masqueradeAll: 1", "iptables.masqueradeAll: must be a boolean, got integer 1"),
])
def test_kube_proxy_validation(old, new, expected):
    assert one_problem(KPC.replace(old, new)).startswith(f"KubeProxyConfiguration None: {expected}")


def test_node_name_must_agree():
    with pytest.raises(ConfigError, match="hostnameOverride 'node-b' differs from DataplaneConfiguration nodeName 'node-a'"):
        loads(EXAMPLE.read_text() + "---\n" + KPC.replace("hostnameOverride: node-a", "hostnameOverride: node-b"))
    cfg = loads(EXAMPLE.read_text() + "---\n" + KPC)
    assert cfg.node_name == "node-a" and cfg.describe()["kubeProxy"]["nodePortAddresses"] == ["192.168.0.0/24"]
