"""Proxier control-plane cost: a full load of 10,000 Services x 10 endpoints (target < 1 s) and
one EndpointSlice change (target < 1 ms), each next to a pure-Python baseline measured in the
same run: building a plain dict-of-lists model of the same Services and endpoints.

    .venv/bin/pytest bench/test_bench_proxier.py --benchmark-enable -s
"""
import time
from dataclasses import replace

import pytest

from dataplane.proxier import Proxier

import clusters

N_SERVICES = 10_000
N_ENDPOINTS = 10
NODE = clusters.NODE


def _baseline_model(config):
    """What a naive proxier keeps: VIP:port -> list of (ip, port) of ready endpoints."""
    by_service = {}
    for s in config.endpoint_slices:
        by_service.setdefault((s.namespace, s.service_name), []).append(s)
    model = {}
    for svc in config.services:
        for sp in svc.ports:
            backends = []
            for sl in by_service.get((svc.namespace, svc.name), ()):
                for p in sl.ports:
                    if p.name == sp.name and p.protocol == sp.protocol:
                        backends += [(e.addresses[0], p.port) for e in sl.endpoints if e.ready]
            model[(svc.cluster_ips[0], sp.port, sp.protocol)] = backends
    return model


def _best(fn, rounds):
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.fixture(scope="module")
def cluster():
    return clusters.services(N_SERVICES, N_ENDPOINTS)


def test_full_load(benchmark, cluster):
    proxier = Proxier(NODE, ["192.168.0.10"], ["10.244.0.0/16"])
    result = benchmark.pedantic(proxier.apply, args=(cluster,), rounds=3, iterations=1)
    assert not result.errors and len(proxier.lb) == N_SERVICES
    assert proxier.lb.select("10.96.0.1", 80, "TCP", "10.244.200.1")[0] == "OK"
    baseline = _best(lambda: _baseline_model(cluster), 3)
    ours = benchmark.stats.stats.min
    print(f"\nfull load {N_SERVICES} Services x {N_ENDPOINTS} endpoints: proxier.apply {ours * 1e3:.0f} ms "
          f"(target < 1000 ms); pure-Python dict-of-lists model {baseline * 1e3:.0f} ms")


def test_endpoint_slice_change(benchmark, cluster):
    proxier = Proxier(NODE, ["192.168.0.10"], ["10.244.0.0/16"])
    proxier.apply(cluster)
    old = cluster.endpoint_slices[1234]
    variants = [replace(old, endpoints=old.endpoints[:k]) for k in (N_ENDPOINTS - 1, N_ENDPOINTS)]
    state = {"current": old, "n": 0}

    def change():
        new = variants[state["n"] % 2]
        state["n"] += 1
        proxier.on_endpoint_slice(state["current"], new)
        state["current"] = new
        return proxier.sync()

    result = benchmark.pedantic(change, rounds=200, iterations=1, warmup_rounds=5)
    assert result.endpoints_changed == {("default", "svc-1234")} and not result.services_changed
    model = _baseline_model(cluster)

    def baseline():
        new = variants[state["n"] % 2]
        state["n"] += 1
        model[(cluster.services[1234].cluster_ips[0], 80, "TCP")] = [
            (e.addresses[0], 8080) for e in new.endpoints if e.ready]

    base = _best(baseline, 200)
    ours = benchmark.stats.stats.median
    print(f"\none EndpointSlice change (on_endpoint_slice + sync): median {ours * 1e6:.0f} us (target < 1000 us); "
          f"pure-Python dict-of-lists update {base * 1e6:.1f} us")
