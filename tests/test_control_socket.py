"""The control socket of a running `dataplane run` and the commands that use it: services,
conntrack list/flush with conntrack-style filters, stats, monitor. The node runs in a private
namespace with one tap port; the test plays the network through the tap's kernel side."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from scapy.all import IP, UDP, Ether

from dataplane.control import request
from nstools import TAP_NODE_MAC, TAP_PEER_MAC, tap_node, tap_node_config

NODE_MAC, PEER_MAC = TAP_NODE_MAC, TAP_PEER_MAC
CONFIG = tap_node_config("") + "---\n" + textwrap.dedent("""\
    apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: default}
    spec: {clusterIP: 10.96.0.10, ports: [{name: dns, port: 53, protocol: UDP, targetPort: 5353}]}
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
    addressType: IPv4
    ports: [{name: dns, port: 5353, protocol: UDP}]
    endpoints: [{addresses: [10.244.1.5]}]
    """)


def dp(*args, sock):
    out = subprocess.run([sys.executable, "-m", "dataplane.cli", *args, "--socket", str(sock)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def node(tmp_path):
    with tap_node(tmp_path, CONFIG, "--json", "--conntrack-file", str(tmp_path / "ct.state")) as running:
        yield running


def client(raw, sport):
    raw.send(bytes(Ether(src=PEER_MAC, dst=NODE_MAC) / IP(src="192.168.0.50", dst="10.96.0.10")
                   / UDP(sport=sport, dport=53) / b"q"))


def wait_for(check, timeout=10):
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_socket_is_private(node):
    _, sock, _, _ = node
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600


def test_services_json(node):
    _, sock, _, _ = node
    services = json.loads(dp("services", "-o", "json", sock=sock))
    assert services == [{"namespace": "default", "name": "web", "frontends": [
        {"ip": "10.96.0.10", "port": 53, "protocol": "UDP", "portName": "dns", "kind": "ClusterIP",
         "endpoints": [{"ip": "10.244.1.5", "port": 5353}]}]}]
    assert "10.96.0.10:53/UDP" in dp("services", sock=sock)


def test_conntrack_list_and_flush_with_filters(node):
    _, sock, raw, _ = node
    for sport in (1001, 1002, 1003):
        client(raw, sport)
    listed = wait_for(lambda: len(request(sock, {"cmd": "conntrack.list"})) == 3 and
                      json.loads(dp("conntrack", "list", "-o", "json", sock=sock)))
    assert listed and {e["orig"]["sport"] for e in listed} == {1001, 1002, 1003}
    assert all(e["reply"]["src"] == "10.244.1.5" and e["reply"]["sport"] == 5353 for e in listed)
    one = json.loads(dp("conntrack", "list", "-o", "json", "--sport", "1002", sock=sock))
    assert [e["orig"]["sport"] for e in one] == [1002]
    assert json.loads(dp("conntrack", "list", "-o", "json", "-p", "tcp", sock=sock)) == []
    by_service = json.loads(dp("conntrack", "list", "-o", "json", "--service", "default/web", sock=sock))
    assert len(by_service) == 3
    assert json.loads(dp("conntrack", "list", "-o", "json", "--service", "default/other", sock=sock)) == []
    assert "1 connection(s) deleted" in dp("conntrack", "flush", "--sport", "1001", sock=sock)
    left = json.loads(dp("conntrack", "list", "-o", "json", "--dst", "10.96.0.10", sock=sock))
    assert {e["orig"]["sport"] for e in left} == {1002, 1003}


def test_stats_and_monitor(node):
    _, sock, raw, _ = node
    mon = subprocess.Popen([sys.executable, "-m", "dataplane.cli", "monitor", "--socket", str(sock), "-o", "json",
                            "-p", "udp", "--ip", "10.244.1.5", "-n", "2"], stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    client(raw, 2001)
    client(raw, 2002)
    out, _ = mon.communicate(timeout=20)
    events = [json.loads(chunk) for chunk in out.replace("}\n{", "}\x00{").split("\x00") if chunk.strip()]
    assert [(e["verdict"], e["dst"], e["dport"], e["in"], e["out"]) for e in events] == \
        [("forward", "10.244.1.5", 5353, "tap0", "tap0")] * 2
    stats = json.loads(dp("stats", "-o", "json", sock=sock))
    assert stats["counters"]["dnat"] >= 2 and stats["conntrack"] >= 2


def test_unknown_command_and_no_server(node, tmp_path):
    _, sock, _, _ = node
    from dataplane.control import ControlError
    with pytest.raises(ControlError, match="unknown command"):
        request(sock, {"cmd": "reboot"})
    out = subprocess.run([sys.executable, "-m", "dataplane.cli", "services", "--socket", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no dataplane answering" in out.stderr


def test_sighup_resyncs_and_the_node_keeps_running(node):
    _, sock, _, proc = node
    before = request(sock, {"cmd": "stats"})["syncs"]["full"]
    os.kill(proc.pid, signal.SIGHUP)
    assert wait_for(lambda: request(sock, {"cmd": "stats"})["syncs"]["full"] == before + 1)
    assert proc.poll() is None


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGQUIT])
def test_terminating_signals_stop_cleanly_with_counters_and_conntrack_saved(node, tmp_path, sig):
    _, sock, raw, proc = node
    client(raw, 3001)
    assert wait_for(lambda: request(sock, {"cmd": "stats"})["conntrack"] == 1)
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["conntrack"] == 1
    state = tmp_path / "ct.state"
    assert state.exists() and stat.S_IMODE(os.stat(state).st_mode) == 0o600
