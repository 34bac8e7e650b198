"""Pods and Namespaces as kubectl prints them, the `dns:` section, and `dataplane dns` itself."""
import ipaddress
import os
import signal
import subprocess
import sys
import textwrap

import dns.message
import dns.query
import dns.rcode
import pytest

from dataplane.cli import main
from dataplane.config import ConfigError, loads

# Upstream for names outside the zone: loopback's discard port, where nothing listens (never the
# host's own resolvers).
LOOPBACK_DISCARD = ((ipaddress.ip_address("127.0.0.1"), 9),)

KUBECTL_POD = """
apiVersion: v1
kind: Pod
metadata:
  annotations: {kubectl.kubernetes.io/restartedAt: "2024-05-01T10:00:00Z"}
  creationTimestamp: "2024-05-01T10:00:01Z"
  generateName: web-7d4b9c8f5d-
  labels: {app: web, pod-template-hash: 7d4b9c8f5d}
  name: web-7d4b9c8f5d-x2x9q
  namespace: shop
  ownerReferences:
  - {apiVersion: apps/v1, blockOwnerDeletion: true, controller: true, kind: ReplicaSet, name: web-7d4b9c8f5d, uid: 4a}
  resourceVersion: "1234"
  uid: 0b6c4c1e-1f0e-4b8e-9a52-2b5c3c6e7f80
spec:
  affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: []}}
  containers:
  - name: web
    image: nginx:1.27
    imagePullPolicy: IfNotPresent
    ports:
    - {containerPort: 8080, name: http, protocol: TCP}
    - {containerPort: 9090, name: metrics}
    resources: {limits: {memory: 128Mi}, requests: {cpu: 100m}}
    readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 5}
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
    volumeMounts: [{mountPath: /var/run/secrets/kubernetes.io/serviceaccount, name: kube-api-access, readOnly: true}]
  - name: sidecar
    image: envoy
    ports: [{containerPort: 15001, protocol: UDP}]
  dnsPolicy: ClusterFirst
  enableServiceLinks: true
  hostname: web-0
  subdomain: web
  nodeName: node-2
  preemptionPolicy: PreemptLowerPriority
  priority: 0
  restartPolicy: Always
  schedulerName: default-scheduler
  securityContext: {runAsNonRoot: true}
  serviceAccountName: default
  terminationGracePeriodSeconds: 30
  tolerations: [{effect: NoExecute, key: node.kubernetes.io/not-ready, operator: Exists, tolerationSeconds: 300}]
  topologySpreadConstraints: []
  volumes: [{name: kube-api-access, projected: {defaultMode: 420, sources: []}}]
  someFieldFromAFutureRelease: {x: 1}
status:
  conditions: [{lastProbeTime: null, lastTransitionTime: "2024-05-01T10:00:05Z", status: "True", type: Ready}]
  containerStatuses: [{name: web, ready: true, restartCount: 0, started: true, state: {running: {}}}]
  hostIP: 192.168.0.3
  hostIPs: [{ip: 192.168.0.3}]
  phase: Running
  podIP: 10.244.2.7
  podIPs: [{ip: 10.244.2.7}, {ip: "fd00:244:2::7"}]
  qosClass: Burstable
  startTime: "2024-05-01T10:00:01Z"
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {kubernetes.io/metadata.name: shop, team: a}
  creationTimestamp: "2024-05-01T09:00:00Z"
spec: {finalizers: [kubernetes]}
status: {phase: Active}
"""


def test_kubectl_pod_and_namespace_load():
    cfg = loads(KUBECTL_POD)
    (pod,), (ns,) = cfg.pods, cfg.namespaces
    assert (pod.namespace, pod.name, pod.node_name, pod.phase) == ("shop", "web-7d4b9c8f5d-x2x9q", "node-2", "Running")
    assert pod.labels == {"app": "web", "pod-template-hash": "7d4b9c8f5d"}
    assert pod.ips == (ipaddress.ip_address("10.244.2.7"), ipaddress.ip_address("fd00:244:2::7"))
    assert [(p.name, p.port, p.protocol) for p in pod.ports] == [("http", 8080, "TCP"), ("metrics", 9090, "TCP"),
                                                                 ("", 15001, "UDP")]
    assert (pod.hostname, pod.subdomain, pod.host_network) == ("web-0", "web", False)
    assert (ns.name, ns.labels["team"], ns.phase) == ("shop", "a", "Active")
    assert cfg.describe()["pods"][0]["podIPs"] == ["10.244.2.7", "fd00:244:2::7"]


def test_pending_pod_without_ip_and_legacy_pod_ip():
    cfg = loads("""
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: default}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: q, namespace: default}
spec: {containers: [{name: c, image: x}], hostNetwork: true}
status: {podIP: 192.168.0.2, phase: Succeeded}
""")
    p, q = cfg.pods
    assert (p.ips, p.phase, p.node_name) == ((), "Pending", None)
    assert q.ips == (ipaddress.ip_address("192.168.0.2"),) and q.host_network and q.terminal


@pytest.mark.parametrize("bad,path", [
    ("status: {podIP: 10.0.0.300}", "status.podIP"),
    ("status: {phase: Exploded}", "status.phase"),
    ("spec: {containers: [{name: c, ports: [{containerPort: 70000}]}]}", "spec.containers[0].ports[0].containerPort"),
    ("spec: {containers: [{name: c, ports: [{containerPort: 80, protocol: ICMP}]}]}", "spec.containers[0].ports[0].protocol"),
])
def test_bad_pod_is_reported_with_its_field_and_skipped(bad, path):
    text = f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: default}}\n{bad}\n---\n" + KUBECTL_POD
    with pytest.raises(ConfigError) as e:
        loads(text)
    assert path in str(e.value)
    cfg = loads(text, strict=False)
    assert [p.name for p in cfg.pods] == ["web-7d4b9c8f5d-x2x9q"]


def test_dns_section():
    base = """
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: n
ports: [{name: eth0, mac: "02:00:00:00:00:01"}]
"""
    assert loads(base).dataplane.dns is None
    dns_cfg = loads(base + textwrap.dedent("""
        dns:
          clusterDomain: Example.Test.
          pods: verified
          endpointPodNames: true
          ttl: 30
          upstreams: [192.0.2.53, "192.0.2.54:5353", "[2001:db8::53]:53"]
          serverIPs: [10.96.0.10]
          service: kube-system/coredns
        """)).dataplane.dns
    assert (dns_cfg.cluster_domain, dns_cfg.pods, dns_cfg.endpoint_pod_names, dns_cfg.ttl) == \
        ("example.test", "verified", True, 30)
    assert [(str(a), p) for a, p in dns_cfg.upstreams] == [("192.0.2.53", 53), ("192.0.2.54", 5353), ("2001:db8::53", 53)]
    assert dns_cfg.service == "kube-system/coredns"
    for bad, field in (("pods: maybe", "dns.pods"), ("ttl: -1", "dns.ttl"), ("upstreams: [nowhere]", "dns.upstreams[0]"),
                       ("service: kube-dns", "dns.service"), ("zone: x", "dns.zone")):
        with pytest.raises(ConfigError) as e:
            loads(base + "dns:\n  " + bad + "\n")
        assert field in str(e.value)


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["dns", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--listen", "--cluster-domain", "--pods", "--endpoint-pod-names", "--ttl", "--upstream",
                 "--server-ip"):
        assert flag in out


def test_bad_arguments_are_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["dns", "--config", str(tmp_path), "--listen", "nowhere:53"])
    assert e.value.code == 2 and "must be an IPv4 or IPv6 address" in capsys.readouterr().err
    assert main(["dns", "--config", str(tmp_path / "missing.yaml"), "--listen", "127.0.0.1:0"]) == 2


def test_standalone_command_serves_udp_and_tcp_and_reloads(tmp_path):
    objects = tmp_path / "objects.yaml"
    objects.write_text(KUBECTL_POD + """---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.5.5, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: broken, namespace: shop}
spec: {clusterIP: 10.96.5.6}
""")
    proc = subprocess.Popen([sys.executable, "-m", "dataplane.cli", "dns", "--config", str(objects), "--listen",
                             "127.0.0.1:0", "--cluster-domain", "k8s.test", "--pods", "verified", "--ttl", "9",
                             "--upstream", "127.0.0.1:9"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    try:
        line = proc.stdout.readline()
        assert "serving k8s.test on 127.0.0.1:" in line, line + proc.stderr.read()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        for send in (dns.query.udp, dns.query.tcp):
            r = send(dns.message.make_query("web.shop.svc.k8s.test", "A"), "127.0.0.1", port=port, timeout=3)
            assert r.answer[0].ttl == 9 and r.answer[0][0].to_text() == "10.96.5.5"
            r = send(dns.message.make_query("10-244-2-7.shop.pod.k8s.test", "A"), "127.0.0.1", port=port, timeout=3)
            assert r.answer[0][0].to_text() == "10.244.2.7"
        r = dns.query.udp(dns.message.make_query("broken.shop.svc.k8s.test", "A"), "127.0.0.1", port=port, timeout=3)
        assert r.rcode() == dns.rcode.NXDOMAIN      # the bad object was skipped, the rest served
        objects.write_text(objects.read_text().replace("10.96.5.5", "10.96.5.7"))
        assert "reloaded" in proc.stdout.readline()
        r = dns.query.udp(dns.message.make_query("web.shop.svc.k8s.test", "A"), "127.0.0.1", port=port, timeout=3)
        assert r.answer[0][0].to_text() == "10.96.5.7"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "skipped" in err and "shop/broken" in err


def test_wildcard_listener_answers_from_the_address_asked():
    """Bound to 0.0.0.0, each answer leaves from the address its query went to (dnspython, like
    glibc, rejects an answer from another address)."""
    from dataplane.config.dataplane import DnsConfig
    from dataplane.dns import DnsService
    service = DnsService(DnsConfig(upstreams=LOOPBACK_DISCARD))
    service.load_config(loads(KUBECTL_POD))
    _, port = service.start(("0.0.0.0", 0))
    try:
        for dst in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            r = dns.query.udp(dns.message.make_query("dns-version.cluster.local", "TXT"), dst, port=port, timeout=3)
            assert r.answer[0][0].to_text() == '"1.1.0"'
            r = dns.query.udp(dns.message.make_query("nothing.example.", "A"), dst, port=port, timeout=3)
            assert r.rcode() == dns.rcode.SERVFAIL      # from the forwarding pool too (no upstream)
    finally:
        service.stop()


def test_this_server_is_never_its_own_upstream(capsys):
    from dataplane.config.dataplane import DnsConfig
    from dataplane.dns import DnsService
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:   # a free port, named as upstream
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    me = (ipaddress.ip_address("127.0.0.1"), port)
    service = DnsService(DnsConfig(upstreams=(me,) + LOOPBACK_DISCARD))
    service.start(("127.0.0.1", port))
    try:
        assert service.resolver.upstreams == (("127.0.0.1", 9),)
        assert "that is this server" in capsys.readouterr().err
        r = dns.query.udp(dns.message.make_query("nothing.example.", "A"), "127.0.0.1", port=port, timeout=3)
        assert r.rcode() == dns.rcode.SERVFAIL
    finally:
        service.stop()
