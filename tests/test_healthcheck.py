"""kube-proxy's health servers over loopback, with real HTTP requests."""
import http.client
import json
import socket

import pytest

from dataplane.config import loads
from dataplane.config.k8s import Node
from dataplane.healthcheck import ProxyHealth, ServiceHealth, go_time


class Clock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self):
        return self.now


def get(port: int, path: str = "/healthz", host: str = "127.0.0.1", method: str = "GET"):
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read().decode()
    finally:
        conn.close()


@pytest.fixture
def proxy():
    clock = Clock()
    health = ProxyHealth("127.0.0.1:0", health_timeout_s=60, clock=clock)
    health.start()
    yield health, clock
    health.stop()


def test_go_time():
    assert go_time(None) == "0001-01-01 00:00:00 +0000 UTC"
    assert go_time(1_700_000_000.25) == "2023-11-14 22:13:20.25 +0000 UTC"


def test_healthy_at_start_and_answers_with_current_time(proxy):
    health, clock = proxy
    status, ctype, body = get(health.port)
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body) == {"lastUpdated": go_time(clock.now), "currentTime": go_time(clock.now),
                                "nodeEligible": True}
    status, _, body = get(health.port, "/livez")
    assert status == 200 and set(json.loads(body)) == {"lastUpdated", "currentTime"}
    assert get(health.port, "/metrics")[0] == 404
    assert get(health.port, method="HEAD")[0] == 200


def test_unhealthy_when_a_queued_update_waits_past_the_timeout(proxy):
    health, clock = proxy
    health.queued_update()
    clock.now += 3600
    assert get(health.port)[0] == 200                 # starting up: healthy until the first sync
    health.updated()
    synced = clock.now
    clock.now += 100
    health.queued_update()
    clock.now += 59
    assert get(health.port)[0] == 200                 # queued, not late yet
    health.queued_update()                             # keeps the oldest
    clock.now += 1
    status, _, body = get(health.port)
    assert status == 503 and json.loads(body)["lastUpdated"] == go_time(synced)
    assert get(health.port, "/livez")[0] == 503
    health.updated()
    assert get(health.port)[0] == 200


def test_node_eligibility_only_affects_healthz(proxy):
    health, _ = proxy
    health.sync_node(Node("n", taints=("ToBeDeletedByClusterAutoscaler",)))
    status, _, body = get(health.port)
    assert status == 503 and json.loads(body)["nodeEligible"] is False
    assert get(health.port, "/livez")[0] == 200
    health.sync_node(Node("n", taints=("node.kubernetes.io/unschedulable",)))
    assert get(health.port)[0] == 200
    health.sync_node(Node("n", deleting=True))
    assert get(health.port)[0] == 503
    health.sync_node(None)
    assert get(health.port)[0] == 503


def test_node_taints_and_deletion_are_parsed():
    (node,) = loads("apiVersion: v1\nkind: Node\nmetadata: {name: n, deletionTimestamp: '2025-01-01T00:00:00Z'}\n"
                    "spec: {taints: [{key: ToBeDeletedByClusterAutoscaler, value: '1700000000', effect: NoSchedule}]}\n"
                    ).nodes
    assert node.deleting and node.taints == ("ToBeDeletedByClusterAutoscaler",)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_service_health_counts_local_endpoints(proxy):
    health, clock = proxy
    services = ServiceHealth(["127.0.0.1"], proxy_health=health, hostname="node-a")
    port = free_port()
    try:
        assert services.sync_services({("shop", "edge"): port}) == []
        status, ctype, body = get(port, "/anything")
        assert (status, ctype) == (503, "application/json")
        assert json.loads(body) == {"service": {"namespace": "shop", "name": "edge"}, "localEndpoints": 0,
                                    "serviceProxyHealthy": True}
        services.sync_endpoints({("shop", "edge"): 2})
        status, _, body = get(port)
        assert status == 200 and json.loads(body)["localEndpoints"] == 2
        health.updated()
        health.queued_update()
        clock.now += 61
        status, _, body = get(port)                       # the proxy is stale: drain this node
        assert status == 503 and json.loads(body)["serviceProxyHealthy"] is False
        health.updated()
        services.sync_endpoints({})
        assert get(port)[0] == 503
        services.sync_services({})
        with pytest.raises(OSError):
            get(port)
    finally:
        services.stop()


def test_service_health_reports_a_busy_port_and_keeps_the_others():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    other = free_port()
    services = ServiceHealth(["127.0.0.1"], hostname="node-a")
    try:
        (err,) = services.sync_services({("a", "x"): busy.getsockname()[1], ("b", "y"): other})
        assert err.startswith('node node-a failed to start healthcheck "a/x" on port')
        assert services.ports() == {("b", "y"): other}
        services.sync_endpoints({("b", "y"): 1})
        assert get(other)[0] == 200
    finally:
        services.stop()
        busy.close()
