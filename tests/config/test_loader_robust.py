"""Loader robustness: kinds by API group, nothing raises with strict=False, API-server
allocation conflicts, impossible addresses, big and deep inputs."""
import json

import pytest
import yaml

from dataplane.config import ConfigError, loads


def svc(name, spec, namespace="shop"):
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
                           "spec": spec}) + "---\n"


@pytest.mark.parametrize("api, kind, problem", [
    ("example.com/v1", "EndpointSlice", False),        # a CRD named like a core kind
    ("projectcalico.org/v3", "Node", False),
    ("networking.k8s.io/v1", "Ingress", False),        # our group, a kind we do not read
    ("v1", "ConfigMap", False),
    ("discovery.k8s.io/v1beta1", "EndpointSlice", True),
    ("networking.k8s.io/v1alpha1", "ServiceCIDR", True),
    ("v2", "Node", True),
    ("kubeproxy.config.k8s.io/v1alpha2", "KubeProxyConfiguration", True),
])
def test_kinds_are_matched_by_group(api, kind, problem):
    cfg = loads(yaml.safe_dump({"apiVersion": api, "kind": kind, "metadata": {"name": "x"}}), strict=False)
    assert (len(cfg.problems), len(cfg.warnings)) == ((1, 0) if problem else (0, 1))


@pytest.mark.parametrize("text", [
    "[" * 100000 + "]" * 100000,
    "a: " + "[" * 100000,
    '{"kind": "List", "apiVersion": "v1", "items": 5}',
    "- 1\n- 2\n",
    "kind: ServiceList\napiVersion: v1\nitems: [1, {metadata: 7}]\n",
    "\x00\x01",
])
def test_bad_input_is_a_problem_never_an_exception(text):
    for source in ("x.yaml", "x.json"):
        cfg = loads(text, source, strict=False)
        assert cfg.problems


def test_deep_json_is_a_clear_error():
    with pytest.raises(ConfigError, match="nested too deeply"):
        loads("[" * 100000 + "]" * 100000, "deep.json")


def test_json_duplicate_keys_linear():
    big = "{" + ",".join(f'"k{i}": {i}' for i in range(50000)) + "}"
    assert loads(big, "big.json", strict=False).problems   # not an object kind, but decoded (no 34 s)
    with pytest.raises(ConfigError, match="duplicate key 'k7'"):
        loads(big[:-1] + ', "k7": 1}', "big.json")


def test_cluster_ip_and_node_port_first_one_wins():
    text = (svc("a", {"type": "NodePort", "clusterIP": "10.96.0.1", "ports": [{"port": 80, "nodePort": 30080}]})
            + svc("b", {"clusterIP": "10.96.0.1", "ports": [{"port": 81}]})
            + svc("c", {"type": "NodePort", "clusterIP": "10.96.0.3",
                        "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30080}]})
            + svc("d", {"type": "NodePort", "clusterIP": "10.96.0.4", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053}]}))
    cfg = loads(text, strict=False)
    assert [s.name for s in cfg.services] == ["a", "d"]    # one Service may reuse its own node port
    assert [(p.name, p.path, p.message) for p in cfg.problems] == [
        ("shop/b", "spec.clusterIPs[0]", "cluster IP 10.96.0.1 is already allocated to Service shop/a"),
        ("shop/c", "spec.ports[0].nodePort", "node port 30080 is already allocated to Service shop/a")]


@pytest.mark.parametrize("ip", ["0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", "::", "ff02::1"])
def test_impossible_cluster_ips(ip):
    cfg = loads(svc("a", {"clusterIP": ip, "ports": [{"port": 80}]}), strict=False)
    assert cfg.services == () and cfg.problems[0].path == "spec.clusterIP"
