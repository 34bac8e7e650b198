"""`dataplane run` against an API server, as a new user would run it: in a private network
namespace, with a kubeconfig, driven through the watch and checked through the control socket,
the metrics endpoint and its exit counters."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from dataplane.control import ControlError, request
from fake_apiserver import FakeApiServer
from nstools import del_netns, netns, new_netns, quiet_netns, require_netns

NODE = "node-1"


def service(name, ip, port=80, node_port=None):
    spec = {"clusterIP": ip, "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}]}
    if node_port:
        spec["type"] = "NodePort"
        spec["ports"][0]["nodePort"] = node_port
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def slice_(svc, *ips, node=NODE):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{svc}-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": node} for ip in ips]}


def eventually(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except ControlError:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


class Node:
    def __init__(self, tmp_path, ns, api):
        self.ns, self.api = ns, api
        self.socket = tmp_path / "ctl.sock"
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "node.yaml").write_text(textwrap.dedent(f"""\
            apiVersion: dataplane/v1alpha1
            kind: DataplaneConfiguration
            nodeName: {NODE}
            nodeIPs: [192.168.0.2]
            clusterCIDRs: [10.244.0.0/16]
            ports:
              - {{name: tap0, type: tap, mac: "02:00:00:00:00:01"}}
            routes:
              - {{prefix: 0.0.0.0/0, port: tap0, via: 192.168.0.1, mac: "02:00:00:00:00:fe"}}
            ---
            apiVersion: kubeproxy.config.k8s.io/v1alpha1
            kind: KubeProxyConfiguration
            metricsBindAddress: 127.0.0.1:10249
            healthzBindAddress: 127.0.0.1:10256
            """))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig())
        self.log = open(tmp_path / "run.log", "w+")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "dataplane.cli", "run", "--config", str(conf),
             "--kubeconfig", str(kubeconfig), "--control-socket", str(self.socket), "--json"],
            stdout=subprocess.PIPE, stderr=self.log, text=True)

    def services(self):
        return {(s["namespace"], s["name"]): s for s in request(self.socket, {"cmd": "services"})}

    def get(self, url):
        with netns(self.ns):
            return urllib.request.urlopen(url, timeout=5).read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        self.log.seek(0)
        return out

    def logs(self):
        self.log.seek(0)
        return self.log.read()


@pytest.fixture
def node(tmp_path):
    require_netns()
    ns = new_netns()
    api = None
    n = None
    try:
        quiet_netns(ns)
        subprocess.run(["ip", "-n", ns, "addr", "add", "192.168.0.2/32", "dev", "lo"], check=True)
        with netns(ns):
            api = FakeApiServer("127.0.0.1", 6443, bookmark_interval=0.5).start()
        api.put(service("web", "10.96.0.10"))
        api.put(slice_("web", "10.244.1.5"))
        api.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}, "spec": {}})
        n = Node(tmp_path, ns, api)
        assert eventually(lambda: n.services()), n.logs()
        yield n
    finally:
        if n is not None:
            n.stop()
        if api is not None:
            api.stop()
        del_netns(ns)


def test_services_come_from_the_watch(node):
    api = node.api
    web = node.services()[("default", "web")]
    assert web["frontends"][0]["ip"] == "10.96.0.10"
    assert web["frontends"][0]["endpoints"] == [{"ip": "10.244.1.5", "port": 8080}]
    # Added, changed, deleted through the watch.
    api.put(service("api", "10.96.0.11", node_port=30080))
    api.put(slice_("api", "10.244.1.6", "10.244.2.7"))
    got = eventually(lambda: ("default", "api") in node.services() and node.services())
    kinds = {(fe["kind"], fe["ip"], fe["port"]) for fe in got[("default", "api")]["frontends"]}
    assert kinds == {("ClusterIP", "10.96.0.11", 80), ("NodePort", "192.168.0.2", 30080)}
    api.put(slice_("web", "10.244.1.5", "10.244.1.9"))
    assert eventually(lambda: len(node.services()[("default", "web")]["frontends"][0]["endpoints"]) == 2)
    api.delete("Service", "default", "api")
    assert eventually(lambda: ("default", "api") not in node.services())


def test_relist_after_410_and_an_outage(node):
    api = node.api
    api.put(service("gone", "10.96.0.12"))
    assert eventually(lambda: ("default", "gone") in node.services())
    api.stop()                                    # the API server goes away...
    time.sleep(1.0)
    assert ("default", "web") in node.services()  # ...and the node keeps its tables
    api.delete("Service", "default", "gone")      # meanwhile: changes, history compacted
    api.put(service("new", "10.96.0.13"))
    api.compact()
    with netns(node.ns):
        api.start()
    assert eventually(lambda: set(node.services()) == {("default", "web"), ("default", "new")}, 40), node.logs()
    status = request(node.socket, {"cmd": "status"})
    assert status["sources"][0]["services"]["lists"] >= 2


def test_healthz_livez_and_health_check_node_ports(node):
    for path in ("/healthz", "/livez"):
        body = json.loads(node.get(f"http://127.0.0.1:10256{path}"))
        assert {"lastUpdated", "currentTime"} <= set(body)
    assert json.loads(node.get("http://127.0.0.1:10256/healthz"))["nodeEligible"] is True
    lb = service("lb", "10.96.0.20")
    lb["spec"].update(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=32000)
    lb["spec"]["ports"][0]["nodePort"] = 30020
    node.api.put(lb)
    node.api.put(slice_("lb", "10.244.1.7"))
    body = eventually(lambda: _get_ok(node, "http://192.168.0.2:32000/"))
    assert body and json.loads(body)["localEndpoints"] == 1
    node.api.put(slice_("lb", "10.244.2.8", node="node-2"))    # no endpoint left on this node
    assert eventually(lambda: _status(node, "http://192.168.0.2:32000/") == 503)


def _get_ok(node, url):
    try:
        return node.get(url)
    except OSError:
        return None


def _status(node, url):
    try:
        node.get(url)
        return 200
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_metrics_and_exit_counters(node):
    text = node.get("http://127.0.0.1:10249/metrics")
    for name in ("kubeproxy_sync_proxy_rules_duration_seconds_bucket", "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                 "kubeproxy_sync_proxy_rules_service_changes_total", "kubeproxy_sync_proxy_rules_endpoint_changes_total",
                 "dataplane_drops_total", "dataplane_conntrack_entries", "dataplane_port_packets_total"):
        assert name in text, name
    summary = json.loads(node.stop())
    assert summary["syncs"]["full"] >= 1 and summary["port_errors"] == []
