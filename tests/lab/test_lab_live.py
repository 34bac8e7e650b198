"""The live dataplane under change, with real sockets across the lab: an endpoint removed while
a client loops, a dataplane restarted under idle connections, 1,000 concurrent connections
through a ClusterIP."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dataplane.lab import LabSpec, apply, restart, up
from dataplane.lab.demo import probe, start_servers
from dataplane.lab.netns import exec_argv
from dataplane.lab.topology import dataplane_run_available

pytestmark = pytest.mark.skipif(not dataplane_run_available(),
                                reason="`dataplane run --help` fails in this tree")


def in_pod(state, pod: str, script: str, *args, **popen) -> subprocess.Popen:
    ns = next(p["netns"] for p in state["pods"] if p["name"] == pod)
    argv = exec_argv(ns, [sys.executable, "-c", textwrap.dedent(script), *map(str, args)])
    return subprocess.Popen(argv, text=True, stdout=subprocess.PIPE, **popen)


UDP_LOOP = """
    import json, socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.3)
    s.connect(("10.96.0.53", 53))      # one socket: one conntrack entry, one backend
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        t = time.monotonic()
        try:
            s.send(b"x")
            print(json.dumps({"t": t, "server": s.recv(100).split()[0].decode()}), flush=True)
        except OSError as exc:
            print(json.dumps({"t": t, "error": type(exc).__name__}), flush=True)
        time.sleep(0.1)
"""


def test_endpoint_removed_while_a_udp_client_loops(lab_name):
    """The client's backend goes away: its conntrack entry is flushed and the very same socket
    is balanced onto the remaining endpoint; the loop never hangs."""
    state = up(LabSpec(name=lab_name))
    start_servers(state)
    client = in_pod(state, "pod-1-1", UDP_LOOP, 10)
    first = json.loads(client.stdout.readline())
    while "server" not in first:
        first = json.loads(client.stdout.readline())
    backend = first["server"]
    gone_ip = {"pod-1-2": "10.244.1.11", "pod-2-2": "10.244.2.11"}[backend]
    removed_at = time.monotonic()
    for node in state["nodes"]:
        services = Path(node["configDir"]) / "10-services.yaml"
        head, sep, tail = services.read_text().partition("name: echo-udp-1,")
        line = f"  - {{addresses: [{gone_ip}], nodeName: node-{gone_ip.split('.')[2]}, " \
               f"conditions: {{ready: true}}}}\n"
        assert sep and line in tail
        tmp = services.with_suffix(".tmp")  # what an API watch would deliver, written atomically
        tmp.write_text(head + sep + tail.replace(line, "", 1))
        tmp.replace(services)
    out, _ = client.communicate(timeout=30)
    later = [json.loads(x) for x in out.splitlines()]
    settled = [r for r in later if r["t"] > removed_at + 3]
    assert settled and all(r.get("server") not in (None, backend) for r in settled), later[-5:]
    assert client.returncode == 0


TCP_SESSIONS = """
    import socket, sys
    conns = [socket.create_connection(("10.96.0.60", 9000), timeout=5) for _ in range(8)]
    for line in sys.stdin:
        answers = []
        for c in conns:
            try:
                c.sendall(line.encode())
                answers.append(c.recv(100).decode().strip())
            except OSError as exc:
                answers.append(type(exc).__name__)
        print(" ".join(answers), flush=True)
"""

ECHO_SERVER = """
    import socket, threading
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 9000))
    srv.listen(16)
    print("listening", flush=True)

    def echo(conn):
        while data := conn.recv(100):
            conn.sendall(data)

    while True:
        threading.Thread(target=echo, args=(srv.accept()[0],), daemon=True).start()
"""

ECHO_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: echo-tcp, namespace: default}
spec: {clusterIP: 10.96.0.60, ports: [{name: echo, port: 9000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-tcp-1, namespace: default, labels: {kubernetes.io/service-name: echo-tcp}}
addressType: IPv4
ports: [{name: echo, port: 9000, protocol: TCP}]
endpoints:
  - {addresses: [10.244.1.10], nodeName: node-1, conditions: {ready: true}}
  - {addresses: [10.244.1.11], nodeName: node-1, conditions: {ready: true}}
  - {addresses: [10.244.2.10], nodeName: node-2, conditions: {ready: true}}
  - {addresses: [10.244.2.11], nodeName: node-2, conditions: {ready: true}}
"""


def test_idle_connections_survive_a_dataplane_restart(lab_name, tmp_path):
    """Eight TCP connections through a ClusterIP with four endpoints, idle while the client
    node's dataplane restarts: its conntrack table is saved and reloaded, so every next segment
    reaches the same backend (a fresh backend choice would break 3 in 4 of them)."""
    state = up(LabSpec(name=lab_name))
    (tmp_path / "echo.yaml").write_text(ECHO_SERVICE)
    apply(lab_name, tmp_path / "echo.yaml")
    procs = [in_pod(state, pod, ECHO_SERVER)
             for pod in ("pod-1-1", "pod-1-2", "pod-2-1", "pod-2-2")]
    try:
        assert all(p.stdout.readline().strip() == "listening" for p in procs)
        time.sleep(1.5)  # the dataplanes re-read their configuration once a second
        client = in_pod(state, "pod-1-1", TCP_SESSIONS, stdin=subprocess.PIPE)
        procs.append(client)
        client.stdin.write("before\n")
        client.stdin.flush()
        assert client.stdout.readline().split() == ["before"] * 8
        restart(lab_name, "node-1")
        client.stdin.write("after\n")
        client.stdin.flush()
        assert client.stdout.readline().split() == ["after"] * 8
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


MANY_CONNECTIONS = """
    import resource, selectors, socket, sys, time
    n = int(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 64)), hard))
    sel = selectors.DefaultSelector()
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("10.96.0.10", 80))
        sel.register(s, selectors.EVENT_READ, b"")
    done, servers, errors, deadline = 0, set(), {}, time.monotonic() + 60
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            try:
                data = key.data + key.fileobj.recv(256)
            except OSError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                data = b""
            if not data or data.endswith(b"\\n"):
                if data.endswith(b"\\n"):
                    done += 1
                    servers.add(data.split()[0].decode())
                sel.unregister(key.fileobj)
                key.fileobj.close()
            else:
                sel.modify(key.fileobj, selectors.EVENT_READ, data)
    errors["unfinished"] = len(sel.get_map())
    print(done, " ".join(sorted(servers)), file=sys.stdout)
    print(errors, file=sys.stderr)
"""


def test_a_thousand_concurrent_connections_through_a_cluster_ip(lab_name):
    state = up(LabSpec(name=lab_name))
    start_servers(state)
    client = in_pod(state, "pod-1-1", MANY_CONNECTIONS, 1000, stderr=subprocess.PIPE)
    out, err = client.communicate(timeout=120)
    done, *servers = out.split()
    assert int(done) == 1000, err
    assert set(servers) == {"pod-1-1", "pod-1-2", "pod-2-1", "pod-2-2"}


def test_a_deleted_pod_does_not_take_its_node_down(lab_name):
    """The pod's veth vanishes under a running dataplane: that port is dropped, the rest of the
    node keeps forwarding (no crash, no busy loop on the dead socket)."""
    state = up(LabSpec(name=lab_name))
    start_servers(state)
    node2 = next(n for n in state["nodes"] if n["name"] == "node-2")
    # What a CNI does when the pod goes: its veth is deleted.
    subprocess.run(["ip", "-n", node2["netns"], "link", "del", "pod2"], check=True)
    time.sleep(1.5)
    answer = probe(state["pods"][0]["netns"], "tcp", "10.244.2.10", 8080, retry_for=5)[-1]
    assert answer["ok"] and answer["server"] == "pod-2-1"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = json.loads(Path(node2["stats"]).read_text())
        if stats["port_errors"]:
            break
        time.sleep(0.2)
    assert stats["port_errors"] == ["pod2"]


def test_a_bad_file_in_the_config_dir_keeps_the_running_state(lab_name):
    """A broken object dropped next to the good ones is reported by the running dataplane;
    the Services it already had keep working."""
    state = up(LabSpec(name=lab_name))
    start_servers(state)
    node1 = next(n for n in state["nodes"] if n["name"] == "node-1")
    (Path(node1["configDir"]) / "60-broken.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: broken, namespace: default}\n"
        "spec: {clusterIP: 10.96.0.66, ports: [{port: 70000}]}\n")
    deadline = time.monotonic() + 10
    errors = []
    while not errors and time.monotonic() < deadline:
        time.sleep(0.5)
        errors = json.loads(Path(node1["stats"]).read_text())["reload_errors"]
    assert errors and "spec.ports[0].port" in errors[0]
    answer = probe(state["pods"][0]["netns"], "tcp", "10.96.0.10", 80, retry_for=5)[-1]
    assert answer["ok"]
