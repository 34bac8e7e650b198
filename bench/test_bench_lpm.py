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

N_KEYS = 1_000_000
N_BASELINE_KEYS = 100_000            # pytricia is ~1 us per key: a subset keeps rounds short
RATES = {}                           # test name -> lookups/s, for the ratios


def global_v4(rng, n):
    """A global-table-like mix: ~60% /24, then /22, /23, /21, /20, /16 ..., ~2% /25-/32."""
    lens = np.array([8, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
                     25, 26, 27, 28, 29, 30, 31, 32])
    w = np.array([0.01, 0.05, 0.1, 0.2, 1.3, 0.7, 1.2, 2.5, 4.5, 5.0, 9.5, 10.0, 61.0,
                  0.4, 0.4, 0.3, 0.3, 0.3, 0.2, 0.1, 0.4])
    keys = np.zeros(0, np.uint64)
    while keys.size < n:
        d = rng.choice(lens, 2 * n, p=w / w.sum()).astype(np.uint64)
        a = rng.integers(1 << 24, 224 << 24, 2 * n, dtype=np.uint64)
        a &= ~((np.uint64(1) << (np.uint64(32) - d)) - np.uint64(1))
        keys = np.unique(np.concatenate([keys, (a << np.uint64(6)) | d]))
    keys = rng.permutation(keys)[:n]
    return (keys >> np.uint64(6)).astype(np.uint32), (keys & np.uint64(63)).astype(np.uint8)


def global_v6(rng, n):
    """Mostly /48 and /32../44 inside ~30k provider /32s, some /56-/64, /128 host routes and
    a few short aggregates."""
    firsts = np.concatenate([[0x2001], np.arange(0x2400, 0x2410), np.arange(0x2600, 0x2610),
                             np.arange(0x2800, 0x2804), np.arange(0x2A00, 0x2A10),
                             np.arange(0x2C0F, 0x2C10)]).astype(np.uint64)
    alloc = (rng.choice(firsts, 30000) << np.uint64(48)) | (
        rng.integers(0, 1 << 16, 30000, dtype=np.uint64) << np.uint64(32))
    lens = np.array([16, 20, 28, 29, 32, 36, 40, 44, 48, 56, 60, 64, 128])
    w = np.array([0.1, 0.2, 0.5, 1.5, 18, 3, 5, 6, 55, 3, 1, 4, 2.7])
    d = rng.choice(lens, n * 2, p=w / w.sum()).astype(np.uint64)
    hi = rng.choice(alloc, n * 2) | rng.integers(0, 1 << 32, n * 2, dtype=np.uint64)
    lo = np.where(d == 128, rng.integers(0, 1 << 63, n * 2, dtype=np.uint64), np.uint64(0))
    hi &= ~((np.uint64(1) << (np.uint64(64) - np.minimum(d, np.uint64(64)))) - np.uint64(1))
    rows = rng.permutation(np.unique(np.stack([hi, lo, d], axis=1), axis=0))[:n]
    addrs = np.ascontiguousarray(rows[:, :2]).astype(">u8").view(np.uint8).reshape(-1, 16)
    return addrs, rows[:, 2].astype(np.uint8)


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
