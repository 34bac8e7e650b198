"""Configuration loading (issue 12 item 2): Services with their EndpointSlices from files,
against decoding the same file with the plain decoder (json.loads / yaml CSafeLoader) in the
same run; and the JSON duplicate-key check on one object with 50,000 keys.
Targets: 10k Services x 10 endpoints < 1 s, 100k < 10 s. Medians over rounds on both sides.

    .venv/bin/pytest bench/test_bench_config.py --benchmark-enable -s
"""
import json
import statistics
import time

import pytest
import yaml

from dataplane.config import load


def _objects(n: int) -> dict:
    items = []
    for i in range(n):
        name = f"svc-{i}"
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "bench"},
                      "spec": {"clusterIP": f"10.{96 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}",
                               "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                      "metadata": {"name": f"{name}-x7k2p", "namespace": "bench",
                                   "labels": {"kubernetes.io/service-name": name}},
                      "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                      "endpoints": [{"addresses": [f"10.{128 + (i >> 12)}.{(i >> 4) & 255}.{((i & 15) << 4) + k}"],
                                     "nodeName": f"node-{k}", "conditions": {"ready": True}} for k in range(10)]})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _median(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@pytest.mark.parametrize("n, fmt, rounds", [(10_000, "json", 3), (10_000, "yaml", 1), (100_000, "json", 1)])
def test_load_services(benchmark, tmp_path, n, fmt, rounds):
    path = tmp_path / f"cluster.{fmt}"
    doc = _objects(n)
    path.write_text(json.dumps(doc) if fmt == "json" else yaml.safe_dump(doc, default_flow_style=None, width=1000))
    config = benchmark.pedantic(load, args=(path,), kwargs={"strict": False}, rounds=rounds, iterations=1)
    assert len(config.services) == n and len(config.endpoint_slices) == n and not config.problems
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    decode = (lambda: json.loads(path.read_text())) if fmt == "json" else (
        lambda: yaml.load(path.read_text(), Loader=loader))
    base = _median(decode, rounds)
    ours = benchmark.stats.stats.median
    print(f"\nload {n} Services x 10 endpoints ({fmt}, {path.stat().st_size / 1e6:.0f} MB): {ours:.2f} s, "
          f"{2 * n / ours:,.0f} objects/s; plain decode {base:.2f} s; ratio {ours / base:.1f}x "
          f"(target < {1 if n == 10_000 else 10} s)")


def test_json_duplicate_key_check_is_linear(benchmark, tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({f"annotation-key-{i:05d}": "v" * 8 for i in range(50_000)}))
    config = benchmark.pedantic(load, args=(path,), kwargs={"strict": False}, rounds=5, iterations=1)
    assert config.problems        # decoded: no kind, reported as such
    base = _median(lambda: json.loads(path.read_text()), 5)
    ours = benchmark.stats.stats.median
    print(f"\nJSON object with 50,000 keys ({path.stat().st_size / 1e3:.0f} KB): {ours * 1e3:.0f} ms with the "
          f"duplicate-key check; plain json.loads {base * 1e3:.0f} ms; ratio {ours / base:.1f}x")
