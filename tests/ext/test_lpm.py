"""dataplane.lpm against a brute-force reference: randomized add/delete sequences, edge prefixes,
bulk/scalar agreement, error handling and the 1M (v4) / 200k (v6) route capacity targets."""
import ipaddress
import random

import numpy as np
import pytest
import pytricia

from dataplane.lpm import LPM4, LPM6, MAX_NEXTHOP
from dataplane.routegen import global_v4, global_v6


class Reference:
    """Longest match by scanning every depth that has routes, longest first."""

    def __init__(self, bits):
        self.bits = bits
        self.routes = {}                        # (network int, depth) -> nexthop

    def mask(self, depth):
        return ((1 << self.bits) - 1) ^ ((1 << (self.bits - depth)) - 1)

    def lookup(self, addr):
        for depth in sorted({d for _, d in self.routes}, reverse=True):
            nh = self.routes.get((addr & self.mask(depth), depth))
            if nh is not None:
                return nh
        return -1


def v6_keys(addrs):
    return np.frombuffer(b"".join(a.to_bytes(16, "big") for a in addrs), np.uint8).reshape(-1, 16)


def prefix_str(net, depth, bits):
    cls = ipaddress.IPv4Network if bits == 32 else ipaddress.IPv6Network
    return str(cls((net, depth)))


def make_table(bits, **kw):
    return LPM4(**kw) if bits == 32 else LPM6(**kw)


def check(table, ref, queries):
    bits = ref.bits
    expect = [ref.lookup(q) for q in queries]
    assert [table.lookup(q) for q in queries] == expect
    keys = np.array(queries, np.uint32) if bits == 32 else v6_keys(queries)
    assert table.lookup_bulk(keys).tolist() == expect
    assert len(table) == len(ref.routes)


def fresh_groups(bits, routes):
    """Group count of a table built from scratch: incremental deletes must collapse to it."""
    t = make_table(bits)
    for (net, depth), nh in routes.items():
        t.add(prefix_str(net, depth, bits), nh)
    return t.tbl8_used


def random_route(rng, bits, anchors):
    """Prefixes clustered around a few anchors so they nest, overlap and share tbl8 groups."""
    anchor = rng.choice(anchors)
    depth = rng.choice([0, 1, 8, 16] + list(range(bits - 16, bits + 1)) * 3
                       + list(range(17, bits + 1)))
    addr = anchor ^ rng.getrandbits(rng.randint(1, bits))
    ref_mask = ((1 << bits) - 1) ^ ((1 << (bits - depth)) - 1)
    return addr & ref_mask, depth


def queries_for(rng, bits, anchors, ref):
    qs = [rng.getrandbits(bits) for _ in range(50)]
    qs += [rng.choice(anchors) ^ rng.getrandbits(rng.randint(1, bits)) for _ in range(200)]
    for net, depth in rng.sample(sorted(ref.routes), min(100, len(ref.routes))):
        span = 1 << (bits - depth)
        qs += [net, net + span - 1, net + rng.randrange(span), (net + span) % (1 << bits),
               (net - 1) % (1 << bits)]
    return qs


@pytest.mark.parametrize("bits", [32, 128])
@pytest.mark.parametrize("seed", range(4))
def test_random_add_delete_matches_reference(bits, seed):
    rng = random.Random(seed * 1000 + bits)
    anchors = [rng.getrandbits(bits) for _ in range(3)] + [0, (1 << bits) - 1]
    table, ref = make_table(bits), Reference(bits)
    for step in range(1500):
        op = rng.random()
        if op < 0.55 or not ref.routes:
            net, depth = random_route(rng, bits, anchors)
            nh = rng.randrange(MAX_NEXTHOP + 1)
            table.add(prefix_str(net, depth, bits), nh)
            ref.routes[net, depth] = nh
        elif op < 0.70:                          # re-add replaces the nexthop
            key = rng.choice(list(ref.routes))
            ref.routes[key] = rng.randrange(1000)
            table.add(prefix_str(*key, bits), ref.routes[key])
        elif op < 0.97:
            key = rng.choice(list(ref.routes))
            del ref.routes[key]
            table.delete(prefix_str(*key, bits))
        else:
            net, depth = random_route(rng, bits, anchors)
            if (net, depth) not in ref.routes:
                with pytest.raises(KeyError):
                    table.delete(prefix_str(net, depth, bits))
        if step % 150 == 149:
            check(table, ref, queries_for(rng, bits, anchors, ref))
            assert table.tbl8_used == fresh_groups(bits, ref.routes)
    # Deleting everything leaves an empty table with every group recycled.
    for key in list(ref.routes):
        del ref.routes[key]
        table.delete(prefix_str(*key, bits))
    assert table.tbl8_used == 0 and len(table) == 0
    check(table, ref, queries_for(rng, bits, anchors, ref))


def test_v4_edges():
    t = LPM4()
    assert t.lookup("1.2.3.4") == -1
    t.add("0.0.0.0/0", 1)
    t.add("10.0.0.0/8", 2)
    t.add("10.1.0.0/16", 3)
    t.add("10.1.1.0/24", 4)
    t.add("10.1.1.128/25", 5)
    t.add("10.1.1.192/26", 6)
    t.add("10.1.1.200/32", 7)
    assert [t.lookup(a) for a in ("9.9.9.9", "10.9.9.9", "10.1.9.9", "10.1.1.1", "10.1.1.129",
                                  "10.1.1.193", "10.1.1.200", "10.1.1.201")] == [1, 2, 3, 4, 5, 6, 7, 6]
    assert t.tbl8_used == 1                      # /25, /26 and /32 share the /24's group
    t.delete("10.1.1.192/26")
    assert t.lookup("10.1.1.193") == 5 and t.lookup("10.1.1.200") == 7
    t.delete("10.1.1.128/25")
    t.delete("10.1.1.200/32")
    assert t.tbl8_used == 0                      # the group collapsed back into tbl24
    assert t.lookup("10.1.1.200") == 4
    t.delete("0.0.0.0/0")
    assert t.lookup("9.9.9.9") == -1
    t.add("255.255.255.255/32", MAX_NEXTHOP)
    assert t.lookup(0xFFFFFFFF) == MAX_NEXTHOP and t.lookup("255.255.255.254") == -1
    assert t.lookup(ipaddress.IPv4Address("10.1.1.1")) == 4
    t.add(ipaddress.IPv4Network("10.1.1.0/24"), 8)   # replaces
    assert t.lookup("10.1.1.1") == 8 and len(t) == 4
    t.clear()
    assert len(t) == 0 and t.tbl8_used == 0 and t.lookup("10.1.1.1") == -1
    t.add("10.1.1.0/24", 1)
    assert t.lookup("10.1.1.1") == 1


def test_v6_edges():
    t = LPM6()
    t.add("::/0", 1)
    t.add("2001:db8::/32", 2)
    t.add("2001:db8:1::/48", 3)
    t.add("2001:db8:1:2::/64", 4)
    t.add("2001:db8:1:2::1/128", 5)
    t.add("2001:db8:1:2::/127", 6)
    assert [t.lookup(a) for a in ("::1", "2001:db8:ff::", "2001:db8:1::", "2001:db8:1:2::5",
                                  "2001:db8:1:2::1", "2001:db8:1:2::")] == [1, 2, 3, 4, 5, 6]
    t.delete("2001:db8:1:2::1/128")
    t.delete("2001:db8:1:2::/127")
    assert t.lookup("2001:db8:1:2::1") == 4
    t.add("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", 9)
    assert t.lookup((1 << 128) - 1) == 9
    t.delete("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")
    t.delete("2001:db8:1:2::/64")
    t.delete("2001:db8:1::/48")
    t.delete("2001:db8::/32")
    assert t.tbl8_used == 0 and t.lookup("2001:db8:1:2::1") == 1
    t.clear()
    assert len(t) == 0 and t.lookup("::1") == -1


@pytest.mark.parametrize("cls,bad", [
    (LPM4, "10.0.0.1/8"), (LPM4, "10.0.0.0/33"), (LPM4, "nonsense"), (LPM4, "2001:db8::/32"),
    (LPM6, "2001:db8::1/32"), (LPM6, "2001:db8::/129"), (LPM6, "10.0.0.0/8"), (LPM6, ""),
])
def test_bad_prefix(cls, bad):
    t = cls()
    with pytest.raises(ValueError):
        t.add(bad, 1)
    with pytest.raises(ValueError):
        t.delete(bad)
    assert len(t) == 0


def test_bad_arguments():
    t = LPM4()
    t.add("10.0.0.0/8", 1)
    for nh in (-1, MAX_NEXTHOP + 1, 1 << 40, 1.0, "1", None):
        with pytest.raises(ValueError):
            t.add("10.0.0.0/8", nh)
    assert t.lookup("10.1.1.1") == 1
    with pytest.raises(KeyError):
        t.delete("11.0.0.0/8")
    with pytest.raises(TypeError):
        t.add(12, 1)
    with pytest.raises(ValueError):
        t.lookup(1 << 32)
    with pytest.raises(ValueError):
        t.lookup("::1")
    with pytest.raises(ValueError):
        LPM4(max_tbl8_groups=0)
    with pytest.raises(ValueError):
        LPM6().lookup(-1)
    t.add("10.0.0.0/8", np.uint16(7))            # numpy integers are ints too
    assert t.lookup("10.0.0.1") == 7


@pytest.mark.parametrize("keys", [
    np.zeros(4, np.int64), np.zeros(4, np.uint8), np.zeros((2, 2), np.uint32), [1, 2, 3],
])
def test_v4_bulk_rejects(keys):
    with pytest.raises(ValueError):
        LPM4().lookup_bulk(keys)


@pytest.mark.parametrize("keys", [
    np.zeros((4, 15), np.uint8), np.zeros(16, np.uint8), np.zeros((4, 16), np.int8),
    np.zeros((4, 2), np.uint64),
])
def test_v6_bulk_rejects(keys):
    with pytest.raises(ValueError):
        LPM6().lookup_bulk(keys)


def test_bulk_shapes_and_out():
    t = LPM4()
    t.add("10.0.0.0/8", 3)
    assert t.lookup_bulk(np.zeros(0, np.uint32)).shape == (0,)
    keys = np.array([0x0A000001, 1, 0x0A0000FF, 2, 0x0AFFFFFF, 3, 4], np.uint32)
    out = np.full(7, 99, np.int32)
    assert t.lookup_bulk(keys, out=out) is out
    assert out.tolist() == [3, -1, 3, -1, 3, -1, -1]
    assert t.lookup_bulk(keys[::2]).tolist() == [3, 3, 3, -1]   # non-contiguous view
    with pytest.raises(ValueError):
        t.lookup_bulk(keys, out=np.zeros(6, np.int32))
    six = LPM6()
    six.add("2001:db8::/32", 4)
    assert six.lookup_bulk(np.zeros((0, 16), np.uint8)).shape == (0,)
    assert six.lookup_bulk(v6_keys([0x20010DB8 << 96, 1])).tolist() == [4, -1]


def test_add_bulk_matches_add_and_validates():
    rng = np.random.default_rng(1)
    # Short prefixes rewrite millions of tbl24 entries each, so only a few of them.
    depths = np.concatenate([[0, 1, 4, 8, 8], rng.integers(12, 33, 2995)]).astype(np.uint8)
    addrs = (rng.integers(0, 1 << 32, 3000, dtype=np.uint64)
             & ~((np.uint64(1) << (np.uint64(32) - depths.astype(np.uint64))) - np.uint64(1)))
    addrs = addrs.astype(np.uint32)
    nhs = rng.integers(0, MAX_NEXTHOP + 1, 3000)
    bulk, one = LPM4(), LPM4()
    bulk.add_bulk(addrs, depths, nhs)
    for a, d, nh in zip(addrs.tolist(), depths.tolist(), nhs.tolist()):
        one.add(prefix_str(a, d, 32), nh)       # duplicates: the later one wins, as in bulk
    keys = rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32)
    assert len(bulk) == len(one)
    assert (bulk.lookup_bulk(keys) == one.lookup_bulk(keys)).all()

    t = LPM4()
    good = np.array([0x0A000000], np.uint32)
    for args in [(np.array([0x0A000001], np.uint32), [8], [1]),      # host bits
                 (good, [33], [1]), (good, [8], [-1]), (good, [8], [1 << 24]),
                 (good, [8, 8], [1]), (good.astype(np.int64), [8], [1]), (good, [8.0], [1])]:
        with pytest.raises(ValueError):
            t.add_bulk(*args)
    assert len(t) == 0 and t.lookup(0x0A000001) == -1

    six = LPM6()
    with pytest.raises(ValueError):
        six.add_bulk(v6_keys([(0x20010DB8 << 96) | 1]), [64], [1])
    with pytest.raises(ValueError):
        six.add_bulk(v6_keys([0]), [129], [1])
    six.add_bulk(v6_keys([0x20010DB8 << 96, 1]), [32, 128], [5, 6])
    assert six.lookup("2001:db8::9") == 5 and six.lookup("::1") == 6 and six.lookup("::2") == -1


def test_table_full_is_clean():
    t = LPM4(max_tbl8_groups=2)
    assert t.tbl8_capacity == 2
    t.add("10.0.0.0/25", 1)
    t.add("10.0.1.0/25", 2)
    t.add("10.0.1.128/26", 3)                    # same group as 10.0.1.0/25
    with pytest.raises(OverflowError):
        t.add("10.0.2.0/25", 3)
    assert len(t) == 3 and t.lookup("10.0.2.1") == -1
    keys = np.array([0x0A000200, 0x0A000300], np.uint32)
    with pytest.raises(OverflowError, match="after adding 0 of 2"):
        t.add_bulk(keys, [25, 24], [1, 1])
    t.delete("10.0.0.0/25")                      # frees a group for reuse
    t.add("10.0.2.0/25", 4)
    assert t.lookup("10.0.2.1") == 4 and t.lookup("10.0.0.1") == -1 and t.lookup("10.0.1.130") == 3

    six = LPM6(max_tbl8_groups=13)
    six.add("2001:db8::1/128", 1)                # a /128 walks 13 groups
    with pytest.raises(OverflowError):
        six.add("2001:db9::/128", 2)
    assert six.lookup("2001:db9::") == -1 and len(six) == 1


# ---------------------------------------------------------------------------------------------
# Capacity: realistic tables, sampled against pytricia.

def test_million_v4_routes():
    rng = np.random.default_rng(7)
    addrs, depths = global_v4(rng, 1_000_000)
    nhs = rng.integers(0, MAX_NEXTHOP + 1, addrs.size)
    t = LPM4()
    t.add_bulk(addrs, depths, nhs)
    assert len(t) == 1_000_000
    pyt = pytricia.PyTricia(32)
    for a, d, nh in zip(addrs.tolist(), depths.tolist(), nhs.tolist()):
        pyt.insert(a, d, nh)
    pick = rng.integers(0, addrs.size, 50_000)
    span = (np.uint64(1) << (np.uint64(32) - depths[pick].astype(np.uint64)))
    hits = (addrs[pick] + rng.integers(0, 1 << 32, pick.size, dtype=np.uint64) % span)
    keys = np.concatenate([hits.astype(np.uint32),
                           rng.integers(0, 1 << 32, 50_000, dtype=np.uint64).astype(np.uint32)])
    expect = [pyt.get(k, -1) for k in keys.tolist()]
    assert t.lookup_bulk(keys).tolist() == expect
    # Deleting a slice keeps the rest exact.
    for a, d in zip(addrs[:2000].tolist(), depths[:2000].tolist()):
        t.delete(prefix_str(a, d, 32))
        pyt.delete(prefix_str(a, d, 32))
    expect = [pyt.get(k, -1) for k in keys.tolist()]
    assert t.lookup_bulk(keys).tolist() == expect


def test_200k_v6_routes():
    rng = np.random.default_rng(8)
    addrs, depths = global_v6(rng, 200_000)
    nhs = rng.integers(0, MAX_NEXTHOP + 1, len(depths))
    t = LPM6()
    t.add_bulk(addrs, depths, nhs)
    assert len(t) == 200_000
    pyt = pytricia.PyTricia(128)
    raw = addrs.tobytes()
    for i, (d, nh) in enumerate(zip(depths.tolist(), nhs.tolist())):
        pyt.insert(raw[16 * i:16 * i + 16], d, nh)
    pick = rng.integers(0, len(depths), 30_000)
    keys = addrs[pick].copy()
    keys[:, 6:] |= rng.integers(0, 256, (pick.size, 10), dtype=np.uint8) * (
        np.arange(6, 16) * 8 >= depths[pick, None])   # random bits below each prefix
    keys = np.concatenate([keys, rng.integers(0, 256, (10_000, 16), dtype=np.uint8)])
    got = t.lookup_bulk(keys).tolist()
    expect = [pyt.get(bytes(k), -1) for k in keys]
    assert got == expect
    assert [t.lookup(int.from_bytes(bytes(k), "big")) for k in keys[:2000]] == expect[:2000]
