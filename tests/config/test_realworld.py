"""Manifests as others write them: what is applied, what is skipped with a warning, what is
a problem. One bad object never stops the rest (load(strict=False)); `check` exits 1."""
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dataplane.config import load

CORPUS = Path(__file__).parent / "fixtures" / "realworld"


@pytest.fixture(scope="module")
def corpus():
    return load(CORPUS, strict=False)


def messages(problems, name):
    return [p.message for p in problems if Path(p.source).name == name]


@pytest.mark.parametrize("name, expected", [
    ("knative-service.yaml", ["skipped: serving.knative.dev/v1 Service is not used by the dataplane"]),
    ("calico.yaml", ["skipped: projectcalico.org/v3 Node is not used by the dataplane",
                     "skipped: projectcalico.org/v3 IPPool is not used by the dataplane"]),
    ("istio-virtualservice.yaml", ["skipped: networking.istio.io/v1beta1 VirtualService is not used by the dataplane"]),
    ("helm-chart.yaml", ["skipped: apps/v1 Deployment is not used by the dataplane"]),
    ("kube-proxy-configmap.yaml", ["skipped: v1 ConfigMap is not used by the dataplane"]),
])
def test_other_groups_and_kinds_are_skipped_with_a_warning(corpus, name, expected):
    assert messages(corpus.warnings, name) == expected
    assert messages(corpus.problems, name) == []


def test_kubeadm_kube_proxy_config_starts_with_warnings(corpus):
    assert sorted(p.path for p in corpus.warnings if p.kind == "KubeProxyConfiguration") == [
        "conntrack.max", "resourceContainer", "udpIdleTimeout"]
    kp = corpus.kube_proxy
    # kubeadm writes zeros for "unset": kube-proxy's defaults apply.
    assert kp.client_connection.kubeconfig == "/var/lib/kube-proxy/kubeconfig.conf"
    assert (kp.client_connection.qps, kp.client_connection.burst, kp.config_sync_period) == (5, 10, 900)
    assert (kp.sync_period, kp.min_sync_period, kp.healthz_bind_address) == (30, 1, "0.0.0.0:10256")
    assert kp.cluster_cidrs == (ipaddress.ip_network("10.244.0.0/16"),) and kp.node_port_primary


def test_modern_service_fields_are_accepted(corpus):
    services = {f"{s.namespace}/{s.name}": s for s in corpus.services}
    assert set(services) == {"apps/podinfo", "shop/api", "shop/edge"}
    api, edge = services["shop/api"], services["shop/edge"]
    assert api.cluster_ips == (ipaddress.ip_address("10.96.7.7"), ipaddress.ip_address("fd00:10:96::707"))
    assert edge.health_check_node_port == 32001 and edge.load_balancer_ips == (ipaddress.ip_address("203.0.113.50"),)
    assert [p.target_port for p in services["apps/podinfo"].ports] == ["http", "grpc"]


def test_endpoint_slice_hints(corpus):
    (s,) = corpus.endpoint_slices
    assert [(e.hint_zones, e.hint_nodes) for e in s.endpoints] == [(("zone-a",), ()), (("zone-b",), ("node-b",))]


def test_service_cidr(corpus):
    (c,) = corpus.service_cidrs
    assert (c.name, [str(n) for n in c.cidrs]) == ("kubernetes", ["10.96.0.0/16", "fd00:10:96::/112"])


def test_problems_are_reported_and_skipped(corpus):
    assert [(Path(p.source).name, p.kind, p.name, p.path, p.message) for p in corpus.problems] == [
        ("endpointslice-v1beta1.yaml", "EndpointSlice", "shop/legacy-abc12", "apiVersion",
         "unsupported apiVersion 'discovery.k8s.io/v1beta1' for EndpointSlice (use 'discovery.k8s.io/v1')"),
        ("staging-api-copy.yaml", "Service", "staging/api-copy", "spec.clusterIPs[0]",
         "cluster IP 10.96.7.7 is already allocated to Service shop/api")]


def test_check_prints_everything_and_exits_1(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dataplane.cli", "check", "--json", str(CORPUS)],
                         capture_output=True, text=True)
    assert run.returncode == 1
    summary = json.loads(run.stdout)
    assert len(summary["services"]) == 3 and len(summary["problems"]) == 2
    assert "already allocated to Service shop/api" in run.stderr
    good = tmp_path / "good.yaml"
    good.write_text((CORPUS / "helm-chart.yaml").read_text())
    assert subprocess.run([sys.executable, "-m", "dataplane.cli", "check", str(good)],
                          capture_output=True).returncode == 0
