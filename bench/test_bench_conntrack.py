"""Conntrack with 1,000,000 established flows: bulk lookups (bursts of 256 keys, random order,
both directions) and create+delete churn, against a Python dict keyed by the same flows' tuples as
the in-run baseline. Run: .venv/bin/pytest bench/test_bench_conntrack.py --benchmark-enable
"""
import numpy as np
import pytest

from dataplane import conntrack as ct

N = 1_000_000
CAPACITY = 1 << 21          # 2M entries: the table is about half full, as a sized node's would be
CHURN = 100_000
S = 1_000_000_000
T0 = 1_000 * S


def flows(n, seed):
    """n distinct NATed TCP flows: client -> VIP:80, replies from a backend to the node's port."""
    rng = np.random.default_rng(seed)
    client = rng.choice(1 << 24, size=n, replace=False).astype(np.uint32)
    orig = np.zeros(n, dtype=ct.TUPLE_DTYPE)
    orig["saddr"][:, 0] = 0x0A000000 | client                # 10.x.y.z
    orig["daddr"][:, 0] = 0x0A60000A                         # 10.96.0.10
    orig["sport"] = rng.integers(1024, 65536, size=n)
    orig["dport"] = 80
    reply = np.zeros(n, dtype=ct.TUPLE_DTYPE)
    reply["saddr"][:, 0] = 0x0B000000 | client                # one backend per client: unique
    reply["daddr"][:, 0] = 0x0A000009                        # node 10.0.0.9
    reply["sport"] = 8080
    reply["dport"] = orig["sport"]
    for a in (orig, reply):
        a["proto"] = 6
        a["family"] = 4
    return orig, reply


def as_keys(a):
    """The dict baseline's keys: the same tuples as Python tuples."""
    return list(zip(a["saddr"][:, 0].tolist(), a["daddr"][:, 0].tolist(), a["sport"].tolist(),
                    a["dport"].tolist(), a["proto"].tolist()))


@pytest.fixture(scope="module")
def table():
    orig, reply = flows(N, 1)
    t = ct.Conntrack(CAPACITY)
    idx = t.create_many(orig, reply, now_ns=T0)
    assert (idx >= 0).all()
    t.update_many(idx, ct.CT_DIR_ORIG, ct.TCP_SYN, 60, T0)
    t.update_many(idx, ct.CT_DIR_REPLY, ct.TCP_SYN | ct.TCP_ACK, 60, T0)
    t.update_many(idx, ct.CT_DIR_ORIG, ct.TCP_ACK, 52, T0)
    rng = np.random.default_rng(2)
    pick = rng.permutation(2 * N)                   # both directions, random order
    keys = np.empty(2 * N, dtype=ct.TUPLE_DTYPE)    # (np.concatenate would byte-swap the addresses)
    keys[:N], keys[N:] = orig, reply
    keys = keys[pick]
    want = np.concatenate([idx, idx])[pick]
    baseline = dict(zip(as_keys(orig), idx.tolist()))
    baseline.update(zip(as_keys(reply), idx.tolist()))
    return t, keys, ct.hash_tuples(keys), want, baseline, as_keys(keys)


def test_bulk_lookup_established(benchmark, table):
    t, keys, hashes, want, _, _ = table
    got, _ = t.lookup_many(keys, hashes)
    assert (got == want).all()
    benchmark.pedantic(t.lookup_many, args=(keys, hashes), rounds=5, iterations=1)
    rate = len(keys) / benchmark.stats.stats.mean
    benchmark.extra_info["lookups_per_s"] = rate
    _report("conntrack bulk lookup", rate, "lookups/s")


def test_dict_baseline_lookup(benchmark, table):
    _, _, _, want, baseline, pykeys = table

    def run():
        get = baseline.get
        return [get(k, -1) for k in pykeys]

    assert run()[:1000] == want[:1000].tolist()
    benchmark.pedantic(run, rounds=5, iterations=1)
    rate = len(pykeys) / benchmark.stats.stats.mean
    benchmark.extra_info["lookups_per_s"] = rate
    _report("python dict lookup", rate, "lookups/s")


def test_create_delete_churn(benchmark, table):
    """Create then delete CHURN fresh flows in a table holding N: slot runs must not degrade."""
    t, _, _, _, _, _ = table
    orig, reply = flows(CHURN, 3)
    orig["dport"] = 443                             # disjoint from the resident flows
    reply["sport"] = 8443
    before = len(t)

    def run():
        idx = t.create_many(orig, reply, now_ns=T0)
        t.delete_many(idx)
        return idx

    assert (run() >= 0).all()
    benchmark.pedantic(run, rounds=5, iterations=1)
    assert len(t) == before
    rate = CHURN / benchmark.stats.stats.mean
    benchmark.extra_info["create_delete_per_s"] = rate
    _report("conntrack create+delete", rate, "pairs/s")


def test_dict_baseline_churn(benchmark):
    orig, reply = flows(CHURN, 3)
    ok, rk = as_keys(orig), as_keys(reply)
    d = {}

    def run():
        for i, (o, r) in enumerate(zip(ok, rk)):
            d[o] = i
            d[r] = i
        for o, r in zip(ok, rk):
            del d[o]
            del d[r]

    benchmark.pedantic(run, rounds=5, iterations=1)
    rate = CHURN / benchmark.stats.stats.mean
    benchmark.extra_info["create_delete_per_s"] = rate
    _report("python dict insert+delete", rate, "pairs/s")


_RATES = {}


def _report(name, rate, unit):
    _RATES[name] = rate
    print(f"\n{name}: {rate / 1e6:.2f} M {unit}")
    pairs = [("conntrack bulk lookup", "python dict lookup"),
             ("conntrack create+delete", "python dict insert+delete")]
    for ours, base in pairs:
        if name in (ours, base) and ours in _RATES and base in _RATES:
            print(f"{ours} / {base}: {_RATES[ours] / _RATES[base]:.1f}x")
