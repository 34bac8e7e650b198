"""KubeProxyConfiguration decoded as kube-proxy's loadConfig does: strict, then lenient."""
import ipaddress

import pytest

from dataplane.config import ConfigError, loads
from dataplane.config.k8s import ClientConnection, KubeProxyConfig

HEAD = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"


def kpc(body: str = ""):
    cfg = loads(HEAD + body, strict=False)
    return cfg.kube_proxy, [f"{w.path}: {w.message}" for w in cfg.warnings], [f"{p.path}: {p.message}" for p in cfg.problems]


def test_defaults_are_kube_proxys():
    kp, warnings, problems = kpc()
    assert warnings == problems == []
    assert kp == KubeProxyConfig()
    assert kp.client_connection == ClientConnection(None, 5.0, 10, "application/vnd.kubernetes.protobuf", "")
    assert (kp.config_sync_period, kp.sync_period, kp.min_sync_period) == (900, 30, None)
    assert (kp.healthz_bind_address, kp.metrics_bind_address) == ("0.0.0.0:10256", "127.0.0.1:10249")
    assert kp.detect_local_mode == "ClusterCIDR" and not kp.bind_address_hard_fail
    assert kp.node_port_primary and kp.node_port_addresses == ()   # nftables-mode default


@pytest.mark.parametrize("body, field", [
    ("udpIdleTimeout: 250ms\n", "udpIdleTimeout"),                     # removed in 1.26, kubeadm/kind still write it
    ("resourceContainer: /kube-proxy\n", "resourceContainer"),        # removed in 1.16
    ("conntrack: {max: null, maxPerCore: 0}\n", "conntrack.max"),     # removed in 1.10
    ("bindAdress: 0.0.0.0\n", "bindAdress"),
])
def test_unknown_fields_fall_back_to_lenient_decoding(body, field):
    kp, warnings, problems = kpc(body + "hostnameOverride: node-a\n")
    assert problems == [] and kp.hostname_override == "node-a"
    (w,) = warnings
    assert w.startswith(f"{field}: unknown field") and "lenient decoding" in w


def test_lenient_decoding_still_fails_on_type_errors():
    kp, warnings, problems = kpc("udpIdleTimeout: 250ms\nconntrack: {maxPerCore: lots}\n")
    assert kp is None and "conntrack.maxPerCore: must be an integer, got string 'lots'" in problems
    with pytest.raises(ConfigError):
        loads(HEAD + "featureGates: ''\n")   # an old config writing featureGates as a string


def test_fields_the_live_node_uses():
    kp, _, problems = kpc("""\
mode: nftables
clientConnection: {kubeconfig: /var/lib/kube-proxy/kubeconfig.conf, qps: 20.5, burst: 40, contentType: application/json}
configSyncPeriod: 5m
nftables: {syncPeriod: 10s, minSyncPeriod: 2s}
iptables: {syncPeriod: 1h}
healthzBindAddress: 10.0.0.1
metricsBindAddress: "[::1]:9999"
bindAddressHardFail: true
detectLocalMode: InterfaceNamePrefix
detectLocal: {interfaceNamePrefix: veth}
logging: {verbosity: 4, format: json}
featureGates: {NFTablesProxyMode: true}
""")
    assert problems == []
    assert kp.client_connection == ClientConnection("/var/lib/kube-proxy/kubeconfig.conf", 20.5, 40, "application/json", "")
    assert (kp.config_sync_period, kp.sync_period, kp.min_sync_period) == (300, 10, 2)
    assert (kp.healthz_bind_address, kp.metrics_bind_address) == ("10.0.0.1:10256", "[::1]:9999")
    assert kp.bind_address_hard_fail and kp.detect_local_mode == "InterfaceNamePrefix"
    assert kp.detect_local.interface_name_prefix == "veth"
    assert (kp.logging.verbosity, kp.logging.format) == (4, "json")
    assert kp.feature_gates == (("NFTablesProxyMode", True),)


def test_detect_local_cluster_cidrs_come_from_cluster_cidr():
    kp, _, _ = kpc("clusterCIDR: 10.244.0.0/16\ndetectLocalMode: ClusterCIDR\n")
    assert kp.detect_local.cluster_cidrs == (ipaddress.ip_network("10.244.0.0/16"),)


@pytest.mark.parametrize("body, expected", [
    ("healthzBindAddress: 'localhost:10256'\n", "healthzBindAddress: must be an IPv4 or IPv6 address"),
    ("metricsBindAddress: '127.0.0.1:0'\n", "metricsBindAddress: must be IP:port with a port of 1-65535"),
    ("configSyncPeriod: -1s\n", "configSyncPeriod: must not be negative"),
    ("iptables: {syncPeriod: -30s}\n", "iptables.syncPeriod: must not be negative"),
    ("clientConnection: {qps: -1}\n", "clientConnection.qps: must not be negative"),
    ("iptables: {syncPeriod: 1s, minSyncPeriod: 5s}\n", "iptables.minSyncPeriod: must be less than or equal to syncPeriod"),
    ("detectLocalMode: BridgeInterface\n", "detectLocal.bridgeInterface: required when detectLocalMode is BridgeInterface"),
    ("detectLocalMode: PodCIDR\n", "detectLocalMode: must be one of ClusterCIDR, NodeCIDR"),
    ("clientConnection: {qps: fast}\n", "clientConnection.qps: must be a number"),
    ("clientConnection: {burst: -1}\n", "clientConnection.burst: must be 0-2147483647"),
])
def test_validation_like_kube_proxy(body, expected):
    kp, _, problems = kpc(body)
    assert kp is None and len(problems) == 1 and problems[0].startswith(expected), problems
