"""The API watch against an in-test API server, through the unmodified kubernetes client:
list + watch, pagination, selectors, bookmarks, 410 relists, outages and reconnects."""
from __future__ import annotations

import time

import pytest

from dataplane.k8s.client import TokenBucket, connect
from dataplane.k8s.informer import ApiSource
from fake_apiserver import FakeApiServer


def service(name, ip, port=80, labels=None, namespace="default"):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"clusterIP": ip, "ports": [{"port": port, "protocol": "TCP"}]}}


def eventually(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


class Collector:
    def __init__(self):
        self.events = []

    def __call__(self, events):
        self.events.extend(events)

    def current(self, attr="services"):
        state = {}
        for e in self.events:
            if e.attr == attr:
                if e.new is None:
                    state.pop(e.key, None)
                else:
                    state[e.key] = e.new
        return state


@pytest.fixture
def api(tmp_path):
    fake = FakeApiServer(bookmark_interval=0.2).start()
    path = tmp_path / "kubeconfig"
    path.write_text(fake.kubeconfig())
    fake.kubeconfig_path = str(path)
    yield fake
    fake.stop()


@pytest.fixture
def source(api):
    got = Collector()
    src = ApiSource(connect(api.kubeconfig_path, qps=0, burst=1), "node-1", got)
    src.got = got
    yield src
    src.stop()


def test_list_then_watch_adds_changes_and_deletes(api, source):
    api.put(service("a", "10.96.0.1"))
    source.start()
    assert eventually(source.synced)
    assert set(source.got.current()) == {("default", "a")}
    api.put(service("b", "10.96.0.2"))
    api.put(service("a", "10.96.0.1", port=8080))
    assert eventually(lambda: source.got.current().get(("default", "a"))
                      and source.got.current()[("default", "a")].ports[0].port == 8080)
    api.delete("Service", "default", "b")
    assert eventually(lambda: set(source.got.current()) == {("default", "a")})


def test_a_large_list_is_paged(api, source):
    for i in range(1200):
        api.put(service(f"s{i}", f"10.96.{i // 250}.{i % 250 + 1}"))
    source.start()
    assert eventually(source.synced)
    assert len(source.got.current()) == 1200
    pages = [r for r in api.requests if r.startswith("/api/v1/services") and "watch" not in r]
    assert len(pages) == 3 and "limit=500" in pages[0] and "continue=" in pages[1]


def test_kube_proxy_selectors_skip_other_proxies_and_headless(api, source):
    api.put(service("mine", "10.96.0.1"))
    api.put(service("other", "10.96.0.2", labels={"service.kubernetes.io/service-proxy-name": "cilium"}))
    api.put(service("hl", "10.96.0.3", labels={"service.kubernetes.io/headless": ""}))
    source.start()
    assert eventually(source.synced)
    assert set(source.got.current()) == {("default", "mine")}
    api.put(service("other2", "10.96.0.4", labels={"service.kubernetes.io/service-proxy-name": "x"}))
    api.put(service("mine2", "10.96.0.5"))
    assert eventually(lambda: ("default", "mine2") in source.got.current())
    assert ("default", "other2") not in source.got.current()


def test_only_this_nodes_node_is_watched(api, source):
    for name in ("node-1", "node-2"):
        api.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}})
    source.start()
    assert eventually(source.synced)
    assert set(source.got.current("nodes")) == {(None, "node-1")}


def test_bookmarks_move_the_resource_version_on(api, source):
    api.put(service("a", "10.96.0.1"))
    source.start()
    assert eventually(source.synced)
    reflector = source.reflectors[0]
    api.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-9"}, "spec": {}})  # not a Service
    target = str(api.rv)
    assert eventually(lambda: reflector.resource_version == target)


@pytest.mark.parametrize("as_event", [False, True], ids=["http-410", "error-event-410"])
def test_410_gone_relists_and_catches_up_with_deletions(api, source, as_event):
    api.put(service("a", "10.96.0.1"))
    api.put(service("b", "10.96.0.2"))
    source.start()
    assert eventually(source.synced)
    reflector = source.reflectors[0]
    api.stop()                       # an outage, during which history is compacted
    api.delete("Service", "default", "b")
    api.put(service("c", "10.96.0.3"))
    api.compact()
    api.watch_error_410 = as_event
    api.start()
    assert eventually(lambda: set(source.got.current()) == {("default", "a"), ("default", "c")}, 30)
    assert reflector.lists >= 2


def test_an_outage_keeps_the_state_and_the_watch_resumes_without_a_relist(api, source):
    api.put(service("a", "10.96.0.1"))
    source.start()
    assert eventually(source.synced)
    reflector = source.reflectors[0]
    api.stop()
    assert eventually(lambda: reflector.errors > 0, 15)
    assert set(source.got.current()) == {("default", "a")}   # nothing lost while away
    api.start()
    api.put(service("b", "10.96.0.2"))
    assert eventually(lambda: ("default", "b") in source.got.current(), 30)
    assert reflector.lists == 1                              # resumed from its resourceVersion


def test_a_dropped_watch_is_resumed(api, source):
    source.start()
    assert eventually(source.synced)
    api.drop_watches()
    api.put(service("late", "10.96.0.9"))
    assert eventually(lambda: ("default", "late") in source.got.current())


def test_an_invalid_object_is_reported_and_its_last_good_version_kept(api, source):
    api.put(service("a", "10.96.0.1"))
    source.start()
    assert eventually(source.synced)
    bad = service("a", "10.96.0.1")
    bad["spec"]["ports"][0]["port"] = 70000
    api.put(bad)
    api.put(service("b", "10.96.0.2"))
    assert eventually(lambda: ("default", "b") in source.got.current())
    assert source.got.current()[("default", "a")].ports[0].port == 80
    assert any("70000" in m or "port" in m for m in source.problems.values())


def test_a_server_without_service_cidrs_counts_as_none(api, tmp_path):
    fake = FakeApiServer(serve_service_cidrs=False).start()
    path = tmp_path / "kc2"
    path.write_text(fake.kubeconfig())
    src = ApiSource(connect(str(path), qps=0, burst=1), "node-1", Collector())
    try:
        src.start()
        assert eventually(src.synced)
        assert src.status()["servicecidrs"]["served"] is False
    finally:
        src.stop()
        fake.stop()


def test_token_bucket_spaces_requests_after_the_burst():
    now = [0.0]
    slept = []
    bucket = TokenBucket(qps=2, burst=3, clock=lambda: now[0], sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    for _ in range(5):
        bucket.wait()
    assert slept == pytest.approx([0.5, 0.5])


def test_connect_without_any_configuration_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match="no kubeconfig"):
        connect(None)
