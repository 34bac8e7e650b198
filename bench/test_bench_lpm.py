"""LPM lookup throughput on global-table-sized route sets, against pytricia on the same routes and
keys (pytricia is one Python call per key: that is the baseline a Python control plane has).

    .venv/bin/pytest bench/test_bench_lpm.py --benchmark-enable -s

Each test records lookups/s (and the ratio to its pytricia baseline) in benchmark.extra_info and
prints one summary line. Baselines run first so the ratio comes from the same run.
"""
import numpy as np
import pytest
import pytricia

from dataplane.lpm import LPM4, LPM6, MAX_NEXTHOP
from dataplane.routegen import global_v4, global_v6

N_KEYS = 1_000_000
N_BASELINE_KEYS = 100_000            # pytricia is ~1 us per key: a subset keeps rounds short
RATES = {}                           # test name -> lookups/s, for the ratios


@pytest.fixture(scope="module")
def v4():
    rng = np.random.default_rng(2024)
    addrs, depths = global_v4(rng, 1_000_000)
    nhs = rng.integers(0, MAX_NEXTHOP + 1, addrs.size)
    table = LPM4()
    table.add_bulk(addrs, depths, nhs)
    pyt = pytricia.PyTricia(32)
    for a, d, nh in zip(addrs.tolist(), depths.tolist(), nhs.tolist()):
        pyt.insert(a, d, nh)
    # Half the keys fall inside a random route, half are uniform over the address space.
    pick = rng.integers(0, addrs.size, N_KEYS // 2)
    span = np.uint64(1) << (np.uint64(32) - depths[pick].astype(np.uint64))
    hits = addrs[pick] + rng.integers(0, 1 << 32, pick.size, dtype=np.uint64) % span
    keys = rng.permutation(np.concatenate([
        hits.astype(np.uint32), rng.integers(0, 1 << 32, N_KEYS - pick.size, dtype=np.uint64)
        .astype(np.uint32)]))
    return dict(routes=(addrs, depths, nhs), table=table, pyt=pyt, keys=keys)


@pytest.fixture(scope="module")
def v6():
    rng = np.random.default_rng(2025)
    addrs, depths = global_v6(rng, 200_000)
    nhs = rng.integers(0, MAX_NEXTHOP + 1, len(depths))
    table = LPM6()
    table.add_bulk(addrs, depths, nhs)
    pyt = pytricia.PyTricia(128)
    raw = addrs.tobytes()
    for i, (d, nh) in enumerate(zip(depths.tolist(), nhs.tolist())):
        pyt.insert(raw[16 * i:16 * i + 16], d, nh)
    pick = rng.integers(0, len(depths), N_KEYS // 2)
    hits = addrs[pick].copy()
    below = (np.arange(16) * 8 >= depths[pick, None])          # whole bytes under the prefix
    hits |= rng.integers(0, 256, hits.shape, dtype=np.uint8) * below
    keys = rng.permutation(np.concatenate(
        [hits, rng.integers(0, 256, (N_KEYS - pick.size, 16), dtype=np.uint8)]))
    return dict(table=table, pyt=pyt, keys=np.ascontiguousarray(keys))


def record(benchmark, capsys, name, n, baseline=None):
    if benchmark.disabled:                   # plain test run: the bodies ran once, unmeasured
        return
    rate = n / benchmark.stats.stats.mean
    RATES[name] = rate
    benchmark.extra_info["lookups_per_s"] = rate
    line = f"{name}: {rate / 1e6:.2f} M lookups/s"
    if baseline in RATES:
        benchmark.extra_info["x_" + baseline] = rate / RATES[baseline]
        line += f" ({rate / RATES[baseline]:.0f}x {baseline})"
    with capsys.disabled():
        print("\n" + line)


def test_v4_pytricia_baseline(benchmark, capsys, v4):
    # Packed bytes are pytricia's fastest key form (ints and strings parse slower).
    raw = v4["keys"][:N_BASELINE_KEYS].astype(">u4").tobytes()
    keys = [raw[i:i + 4] for i in range(0, len(raw), 4)]
    get = v4["pyt"].get

    def run():
        return [get(k, -1) for k in keys]

    got = benchmark(run)
    assert got == v4["table"].lookup_bulk(v4["keys"][:N_BASELINE_KEYS]).tolist()
    record(benchmark, capsys, "pytricia_v4", len(keys))


def test_v4_lookup_bulk(benchmark, capsys, v4):
    keys, table = v4["keys"], v4["table"]
    out = np.empty(keys.size, np.int32)
    benchmark(table.lookup_bulk, keys, out)
    assert (out == table.lookup_bulk(keys)).all()
    record(benchmark, capsys, "LPM4.lookup_bulk", keys.size, "pytricia_v4")


def test_v4_build_1m_add_bulk(benchmark, capsys, v4):
    addrs, depths, nhs = v4["routes"]

    def build():
        t = LPM4()
        t.add_bulk(addrs, depths, nhs)
        return t

    t = benchmark.pedantic(build, rounds=3, iterations=1)
    assert len(t) == addrs.size
    if not benchmark.disabled:
        benchmark.extra_info["routes_per_s"] = addrs.size / benchmark.stats.stats.mean
        with capsys.disabled():
            print(f"\nLPM4.add_bulk 1M routes: {benchmark.stats.stats.mean:.3f} s")


def test_v6_pytricia_baseline(benchmark, capsys, v6):
    keys = [bytes(k) for k in v6["keys"][:N_BASELINE_KEYS]]
    get = v6["pyt"].get

    def run():
        return [get(k, -1) for k in keys]

    got = benchmark(run)
    assert got == v6["table"].lookup_bulk(v6["keys"][:N_BASELINE_KEYS]).tolist()
    record(benchmark, capsys, "pytricia_v6", len(keys))


def test_v6_lookup_bulk(benchmark, capsys, v6):
    keys, table = v6["keys"], v6["table"]
    out = np.empty(len(keys), np.int32)
    benchmark(table.lookup_bulk, keys, out)
    assert (out == table.lookup_bulk(keys)).all()
    record(benchmark, capsys, "LPM6.lookup_bulk", len(keys), "pytricia_v6")
