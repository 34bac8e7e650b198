"""The sync loop without packets: object events in, tables changed with the pipeline parked,
in short steps; a big batch becomes one rebuild swapped in at once."""
from __future__ import annotations

import contextlib
import time

from dataplane import controlplane
from dataplane.config import loads
from dataplane.config.k8s import Endpoint, EndpointSlice, EndpointPort, Service, ServicePort
from dataplane.controlplane import ControlPlane
from dataplane.events import ObjectEvent
from dataplane.tables import NodeDataplane
import ipaddress

NODE = """
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-1
nodeIPs: [192.168.0.2]
clusterCIDRs: [10.244.0.0/16]
ports: [{name: eth0, mac: "02:00:00:00:00:01"}]
routes: [{prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1, mac: "02:00:00:00:00:fe"}]
"""


class Source:
    def __init__(self):
        self.ready = False

    def synced(self):
        return self.ready


class CountingPause:
    def __init__(self):
        self.pauses = 0
        self.inside = False

    @contextlib.contextmanager
    def __call__(self):
        assert not self.inside
        self.inside = True
        self.pauses += 1
        try:
            yield
        finally:
            self.inside = False


def svc(i):
    return Service("default", f"s{i}", cluster_ips=(ipaddress.ip_address(f"10.96.{i // 250}.{i % 250 + 1}"),),
                   ip_families=("IPv4",), ports=(ServicePort("", "UDP", 53, 5353),))


def eps(i, n=2):
    return EndpointSlice("default", f"s{i}-x", f"s{i}", "IPv4",
                         tuple(Endpoint((ipaddress.ip_address(f"10.244.{i // 200}.{i % 200 + j}"),)) for j in range(n)),
                         (EndpointPort("", "UDP", 5353),))


def ev(attr, obj, old=None):
    return ObjectEvent(attr, (obj.namespace, obj.name), old, obj)


def wait(check, timeout=10):
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


def start(n=10):
    node = NodeDataplane(loads(NODE))
    pause = CountingPause()
    cp = ControlPlane(node, pause)
    src = Source()
    cp.start([src])
    cp.submit([ev("services", svc(i)) for i in range(n)] + [ev("endpoint_slices", eps(i)) for i in range(n)])
    time.sleep(0.2)
    assert not cp.synced.is_set() and len(node.proxier.lb) == 0    # nothing before the sources listed
    src.ready = True
    cp.submit([])
    assert wait(cp.synced.is_set)
    return node, cp, pause


def test_first_sync_waits_for_every_source_then_builds_everything():
    node, cp, pause = start(10)
    try:
        assert len(node.proxier.lb) == 10 and cp.syncs == {"full": 1, "partial": 0}
        assert node.proxier.lb.select("10.96.0.1", 53, "UDP", "10.244.5.5")[0] == "OK"
        assert pause.pauses == 2    # the swap, then the flushes for Services that got endpoints
    finally:
        cp.stop()


def test_changes_are_applied_in_short_paused_steps():
    node, cp, pause = start(100)
    try:
        before = pause.pauses
        cp.submit([ev("endpoint_slices", eps(i, 3), eps(i)) for i in range(100)])
        assert wait(lambda: cp.syncs["partial"] == 4)           # 100 Services, 32 per pause
        assert pause.pauses - before == 4
        assert cp.syncs["full"] == 1
        got = {node.proxier.lb.select("10.96.0.1", 53, "UDP", "10.244.5.5", sport=p)[1] for p in range(1, 400)}
        assert got == {"10.244.0.0", "10.244.0.1", "10.244.0.2"}
    finally:
        cp.stop()


def test_a_huge_batch_is_one_rebuild(monkeypatch):
    monkeypatch.setattr(controlplane, "FULL_SYNC_THRESHOLD", 50)
    node, cp, pause = start(10)
    try:
        cp.submit([ev("services", svc(i)) for i in range(10, 200)] + [ev("endpoint_slices", eps(i)) for i in range(10, 200)])
        assert wait(lambda: cp.syncs["full"] == 2)
        assert len(node.proxier.lb) == 200 and cp.syncs["partial"] == 0
    finally:
        cp.stop()


def test_a_failing_sync_keeps_the_tables_and_retries_in_full(monkeypatch):
    node, cp, pause = start(5)
    try:
        calls = []
        real = node.sync

        def broken(*a, **k):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("boom")
            return real(*a, **k)
        monkeypatch.setattr(node, "sync", broken)
        cp.submit([ev("services", svc(7))])
        assert wait(lambda: cp.errors and "boom" in cp.errors[-1])
        assert len(node.proxier.lb) == 5                    # as it was
        cp.submit([ev("services", svc(8))])
        assert wait(lambda: len(node.proxier.lb) == 7)      # the retry rebuilt everything
    finally:
        cp.stop()


def test_chunks_keep_event_order_and_bound_services():
    events = [ev("services", svc(i % 5)) for i in range(20)]
    chunks = list(controlplane._chunks(events, 2))
    assert [e for c in chunks for e in c] == events
    assert all(len(controlplane._touched(c)) <= 2 for c in chunks)


def test_one_config_directory_for_every_node(tmp_path):
    """A DaemonSet's ConfigMap: one DataplaneConfiguration per node; --hostname-override picks."""
    from dataplane.config import load
    from dataplane.worker import select_node_config
    for name, mac in (("node-1", "02:00:00:00:00:01"), ("node-2", "02:00:00:00:00:02")):
        (tmp_path / f"dataplane-{name}.yaml").write_text(
            NODE.replace("nodeName: node-1", f"nodeName: {name}").replace('"02:00:00:00:00:01"', f'"{mac}"'))
    config = select_node_config(load(tmp_path, strict=False), "node-2", tmp_path)
    assert config.dataplane.node_name == "node-2" and config.dataplane.ports[0].mac == bytes.fromhex("020000000002")
    assert config.problems == ()
    import pytest
    with pytest.raises(ValueError, match="nodeName 'node-3'"):
        select_node_config(load(tmp_path, strict=False), "node-3", tmp_path)


def test_a_full_sync_flushes_udp_entries_of_services_that_got_endpoints():
    """Entries made towards a UDP ClusterIP while it had no endpoints are flushed by a full sync
    too, which builds its table without touching conntrack and flushes while parked."""
    node = NodeDataplane(loads(NODE))
    from dataplane.config.loader import Config
    base = dict(dataplane=node.dp, services=(svc(0),))
    node.apply(Config(**base))
    ct = node.conntrack
    orig = {"src": "10.244.7.7", "dst": "10.96.0.1", "sport": 5555, "dport": 53, "proto": 17}
    reply = {"src": "10.96.0.1", "dst": "192.168.0.2", "sport": 53, "dport": 5555, "proto": 17}
    assert ct.create(orig, reply) >= 0
    pause = CountingPause()
    result = node.apply(Config(**base, endpoint_slices=(eps(0),)), pause)
    assert result.flushed == 1 and len(ct) == 0 and pause.pauses == 2   # swap, then flushes


def test_a_conntrack_table_too_big_for_memory_is_a_config_error_naming_the_field():
    import pytest
    huge = NODE + "conntrackSize: 1073741824\n"
    with pytest.raises(ValueError, match="conntrackSize"):
        NodeDataplane(loads(huge))


def test_nat_exhaustion_is_reported_per_service_once_per_growth():
    from dataplane.worker import nat_exhaustion_growth
    seen = {}
    names = {7: "default/web:http"}
    assert nat_exhaustion_growth({7: 3, 0: 1}, names, seen) == [("default/web:http", 3),
                                                                  ("pod traffic leaving the cluster", 1)]
    assert nat_exhaustion_growth({7: 3, 0: 1}, names, seen) == []
    assert nat_exhaustion_growth({7: 5, None: 2}, names, seen) == [("default/web:http", 2), ("other Services", 2)]


def test_service_names_by_table_id():
    node = NodeDataplane(loads(NODE))
    from dataplane.config.loader import Config
    node.apply(Config(dataplane=node.dp, services=(svc(0),), endpoint_slices=(eps(0),)))
    names = node.proxier.service_names()
    assert list(names.values()) == ["default/s0:UDP"]


def test_check_as_one_node_of_a_shared_directory(tmp_path, capsys):
    from dataplane.cli import main
    for name in ("node-1", "node-2"):
        (tmp_path / f"{name}.yaml").write_text(NODE.replace("nodeName: node-1", f"nodeName: {name}"))
    assert main(["check", str(tmp_path)]) == 1                      # two for one node: a duplicate
    capsys.readouterr()
    assert main(["check", str(tmp_path), "--hostname-override", "node-2", "--json"]) == 0
    assert '"nodeName": "node-2"' in capsys.readouterr().out


def test_bind_address_flags_read_like_the_config_fields():
    import pytest
    from dataplane.cli import _parser
    args = _parser().parse_args(["run", "--config", "x", "--healthz-bind-address", "10.0.0.1",
                                 "--metrics-bind-address", ""])
    assert args.healthz_bind_address == "10.0.0.1:10256" and args.metrics_bind_address == ""
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--config", "x", "--metrics-bind-address", "localhost:x"])
