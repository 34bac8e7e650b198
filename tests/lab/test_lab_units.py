"""Lab pieces that need no namespaces: the address plan, generated node configuration, errors."""
from __future__ import annotations

import io
import ipaddress

import pytest
import yaml

from dataplane.config import loads
from dataplane.lab import LabError, LabSpec, apply, ipam
from dataplane.lab.demo import print_counters
from dataplane.lab.topology import DEFAULT_SERVICES, _node_objects


def test_pod_cidrs_are_distinct_and_inside_the_cluster_cidr():
    cidrs = ipam.pod_cidrs(50)
    assert [str(c) for c in cidrs[:2]] == ["10.244.1.0/24", "10.244.2.0/24"]
    assert all(c.subnet_of(ipam.CLUSTER_CIDR) for c in cidrs)
    assert all(not a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1:])
    with pytest.raises(ValueError, match="no room"):
        ipam.pod_cidrs(300)


def test_documented_addresses():
    cidr = ipaddress.ip_network("10.244.2.0/24")
    assert (str(ipam.node_ip(1)), str(ipam.pod_gateway(cidr)), str(ipam.pod_ip(cidr, 2))) == \
        ("192.168.0.2", "10.244.2.1", "10.244.2.11")


@pytest.mark.parametrize("spec, message", [
    (LabSpec(overlay="gre"), "--overlay must be none or vxlan"),
    (LabSpec(name="Bad.Name"), "lab name"),
    (LabSpec(nodes=0), "--nodes"),
    (LabSpec(dataplane="dpdk"), "--dataplane"),
])
def test_spec_errors(spec, message):
    with pytest.raises(LabError, match=message):
        spec.validate()


def _state(overlay="none"):
    nodes = [{"name": f"node-{k}", "ip": str(ipam.node_ip(k)), "podCIDR": f"10.244.{k}.0/24",
              "podGateway": f"10.244.{k}.1", "macs": {"eth0": "02:00:00:00:0%d:01" % k,
                                                      "host": "02:00:00:00:0%d:02" % k,
                                                      "pod1": "02:00:00:00:0%d:03" % k}} for k in (1, 2)]
    pods = [{"name": f"pod-{k}-1", "node": f"node-{k}", "ip": f"10.244.{k}.10", "port": "pod1"} for k in (1, 2)]
    return {"clusterCIDR": "10.244.0.0/16", "overlay": overlay, "nodes": nodes, "pods": pods}


def test_generated_node_configuration_loads_with_the_example_services():
    state = _state()
    text = yaml.safe_dump_all(_node_objects(state, state["nodes"][0])) + "---\n" + DEFAULT_SERVICES.read_text()
    config = loads(text)
    dp = config.dataplane
    assert dp.node_name == "node-1" and dp.local_port == "host"
    ports = {p.name: p for p in dp.ports}
    assert ports["host"].type == "tap" and ports["host"].proxy_arp
    assert [str(a) for a in ports["pod1"].addresses] == ["10.244.1.1"]
    assert [str(a) for a in ports["eth0"].addresses] == ["192.168.0.2"]
    routes = {str(r.prefix): r for r in dp.routes}
    assert routes["10.244.1.10/32"].port == "pod1" and routes["10.244.1.10/32"].mac is None
    assert str(routes["10.244.2.0/24"].via) == "192.168.0.3"
    assert str(routes["0.0.0.0/0"].via) == "192.168.0.1"
    assert config.kube_proxy.hostname_override == "node-1"
    assert {s.name for s in config.services} == {"web", "web-nodeport", "web-local", "echo-udp", "empty", "kube-dns"}


def test_vxlan_overlay_replaces_host_gw_routes():
    state = _state("vxlan")
    dp = loads(yaml.safe_dump_all(_node_objects(state, state["nodes"][0]))).dataplane
    other = next(r for r in dp.routes if str(r.prefix) == "10.244.2.0/24")
    assert (other.port, other.via, other.vxlan.vni, str(other.vxlan.remote), other.vxlan.port) == \
        (None, None, 1, "192.168.0.3", 4789)


def test_apply_rejects_invalid_objects_with_the_loaders_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
                   "spec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}\n")
    with pytest.raises(LabError, match=r"bad\.yaml.*spec\.clusterIP"):
        apply("nosuchlab", bad)


def test_apply_rejects_node_objects(tmp_path):
    f = tmp_path / "kp.yaml"
    f.write_text("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                 "hostnameOverride: x\n")
    with pytest.raises(LabError, match="may only hold Kubernetes objects"):
        apply("nosuchlab", f)


def test_counter_table_shows_the_overlay_only_when_used():
    def header(stats):
        out = io.StringIO()
        print_counters(stats, out)
        return out.getvalue().splitlines()[0].split()
    assert "vxlan_encap" not in header({"node-1": {"counters": {"rx": 3}}})
    used = header({"node-1": {"counters": {"rx": 3, "vxlan_encap": 2, "vxlan_decap": 1}}})
    assert used[-3:] == ["vxlan_encap", "vxlan_decap", "drops"]
