"""dataplane.lb on hand-built tables: frontend lookup, kube-proxy selection semantics (policies,
source ranges, masquerade), backend choice (uniform PRNG, Maglev, ClientIP affinity) and
transactional updates."""
import random
from collections import Counter

import pytest

from dataplane.lb import DEFAULT_MAGLEV_M, FE_EXTERNAL, FE_LOCAL, LBTable

NODE = "192.168.0.10"
POD_CIDR = "10.244.0.0/16"
POD = "10.244.9.9"          # a pod on some node
OUTSIDE = "203.0.113.7"     # a client outside the cluster
VIP = "10.96.0.10"
LB_IP = "198.51.100.1"
EXT_IP = "198.51.100.2"

BACKENDS = [("10.244.1.1", 8080, 1), ("10.244.2.2", 8080, 2), ("10.244.3.3", 8080, 3)]
LOCAL = [BACKENDS[0]]


def table(**kw):
    kw.setdefault("node_ips", [NODE, "fd00::10"])
    kw.setdefault("cluster_cidrs", [POD_CIDR, "fd10::/64"])
    kw.setdefault("seed", 7)
    return LBTable(**kw)


def service(t, key="svc", cluster=BACKENDS, local=LOCAL, ext_flags=FE_EXTERNAL, int_flags=0, ranges=(), **kw):
    t.set_service(key, [(VIP, 80, "TCP", int_flags, ()),
                        (EXT_IP, 80, "TCP", ext_flags, ()),
                        (LB_IP, 80, "TCP", ext_flags, ranges),
                        (NODE, 30080, "TCP", ext_flags, ())], cluster, local, **kw)


def chosen(t, dst, port, src, n=300, proto="TCP"):
    """(results, backend set, masquerade set) over n connections with different source ports."""
    out = [t.select(dst, port, proto, src, sport=1024 + i) for i in range(n)]
    return ({r[0] for r in out}, {r[1] for r in out if r[1]}, {r[3] for r in out})


ALL = {b[0] for b in BACKENDS}


def test_lookup():
    t = table()
    service(t)
    assert len(t) == 4
    for dst, port in ((VIP, 80), (EXT_IP, 80), (LB_IP, 80), (NODE, 30080)):
        assert t.lookup(dst, port, "TCP") >= 0
    assert t.lookup(VIP, 80, "UDP") == -1
    assert t.lookup(VIP, 81, "TCP") == -1
    assert t.lookup("10.96.0.11", 80, "TCP") == -1
    assert t.select(VIP, 81, "TCP", POD)[0] == "NO_SERVICE"
    ids = {t.service_id_of(d, p, "TCP") for d, p in ((VIP, 80), (LB_IP, 80), (NODE, 30080))}
    assert len(ids) == 1 and ids.pop() == t.service_key_id("svc") > 0


def test_ipv6_and_protocols():
    t = table()
    t.set_service("v6", [("fd00:96::10", 53, "UDP", 0, ())], [("fd10::5", 5353, 9)])
    t.set_service("sctp", [(VIP, 9000, "SCTP", 0, ())], [("10.244.1.1", 9001)])
    assert t.select("fd00:96::10", 53, "UDP", "fd10::7") == ("OK", "fd10::5", 5353, False)
    assert t.select("fd00:96::10", 53, "TCP", "fd10::7")[0] == "NO_SERVICE"
    assert t.select(VIP, 9000, 132, POD) == ("OK", "10.244.1.1", 9001, False)
    assert t.node_ip_of(4) == NODE and t.node_ip_of(6) == "fd00::10"
    with pytest.raises(ValueError, match="IPv6"):
        t.set_service("bad", [("fd00:96::11", 53, "UDP", 0, ())], [("10.244.1.1", 53)])
    assert "bad" not in t


def test_uniform_choice():
    t = table()
    backends = [(f"10.244.{i}.1", 80) for i in range(5)]
    t.set_service("u", [(VIP, 80, "TCP", 0, ())], backends)
    n = 5000
    counts = Counter(t.select(VIP, 80, "TCP", POD, sport=1 + i % 65000)[1] for i in range(n))
    assert set(counts) == {b[0] for b in backends}
    assert max(counts.values()) <= 2 * n / len(backends)


def test_no_endpoints_rejects_everywhere():
    t = table()
    service(t, cluster=[], local=[], ext_flags=FE_EXTERNAL | FE_LOCAL)
    for dst, port in ((VIP, 80), (EXT_IP, 80), (LB_IP, 80), (NODE, 30080)):
        assert t.select(dst, port, "TCP", OUTSIDE)[0] == "REJECT"
    assert t.stats()["reject"] == 4


def test_masquerade_matrix():
    t = table()
    service(t)
    # ClusterIP: only off-cluster sources are masqueraded (local detector = cluster CIDR).
    assert chosen(t, VIP, 80, POD) == ({"OK"}, ALL, {False})
    assert chosen(t, VIP, 80, OUTSIDE) == ({"OK"}, ALL, {True})
    assert chosen(t, VIP, 80, NODE) == ({"OK"}, ALL, {True})
    # eTP Cluster external destinations: every source, pods included.
    for dst, port in ((EXT_IP, 80), (LB_IP, 80), (NODE, 30080)):
        assert chosen(t, dst, port, POD) == ({"OK"}, ALL, {True})
        assert chosen(t, dst, port, OUTSIDE) == ({"OK"}, ALL, {True})


def test_masquerade_all_and_unknown_cluster_cidr():
    t = table(masquerade_all=True)
    service(t)
    assert chosen(t, VIP, 80, POD)[2] == {True}
    t = table(cluster_cidrs=[])
    service(t)
    assert chosen(t, VIP, 80, OUTSIDE)[2] == {False}      # no local detector: no off-cluster rule
    assert chosen(t, LB_IP, 80, OUTSIDE)[2] == {True}
    assert not t.nat_outgoing_of(POD, "8.8.8.8")


def test_hairpin():
    t = table()
    service(t, cluster=[BACKENDS[0]])
    assert t.select(VIP, 80, "TCP", BACKENDS[0][0]) == ("OK", BACKENDS[0][0], 8080, True)
    assert t.select(VIP, 80, "TCP", BACKENDS[1][0]) == ("OK", BACKENDS[0][0], 8080, False)


def test_external_traffic_policy_local():
    t = table()
    service(t, ext_flags=FE_EXTERNAL | FE_LOCAL)
    for dst, port in ((EXT_IP, 80), (LB_IP, 80), (NODE, 30080)):
        # From outside: local endpoints only, client IP preserved.
        assert chosen(t, dst, port, OUTSIDE) == ({"OK"}, {LOCAL[0][0]}, {False})
        # Pods short-circuit to the cluster-wide set without masquerade.
        assert chosen(t, dst, port, POD) == ({"OK"}, ALL, {False})
        # The node itself: cluster-wide set, masqueraded ("fib saddr type local").
        assert chosen(t, dst, port, NODE) == ({"OK"}, ALL, {True})
    assert chosen(t, VIP, 80, POD) == ({"OK"}, ALL, {False})   # ClusterIP is untouched by eTP


def test_external_traffic_policy_local_without_local_endpoints():
    t = table()
    service(t, local=[], ext_flags=FE_EXTERNAL | FE_LOCAL)
    assert t.select(LB_IP, 80, "TCP", OUTSIDE)[0] == "DROP"
    assert t.select(NODE, 30080, "TCP", OUTSIDE)[0] == "DROP"
    assert chosen(t, LB_IP, 80, POD) == ({"OK"}, ALL, {False})
    assert chosen(t, NODE, 30080, NODE) == ({"OK"}, ALL, {True})
    # Without a known cluster CIDR there is no pod short-circuit.
    t = table(cluster_cidrs=[])
    service(t, local=[], ext_flags=FE_EXTERNAL | FE_LOCAL)
    assert t.select(LB_IP, 80, "TCP", POD)[0] == "DROP"


def test_internal_traffic_policy_local():
    t = table()
    service(t, int_flags=FE_LOCAL)
    assert chosen(t, VIP, 80, POD) == ({"OK"}, {LOCAL[0][0]}, {False})
    assert chosen(t, EXT_IP, 80, OUTSIDE)[1] == ALL        # external destinations keep eTP Cluster
    service(t, local=[], int_flags=FE_LOCAL)
    assert t.select(VIP, 80, "TCP", POD)[0] == "DROP"
    assert t.stats()["drop"] == 1


def test_source_ranges():
    t = table()
    service(t, ranges=["203.0.113.0/24", "fd99::/64"])
    assert t.select(LB_IP, 80, "TCP", OUTSIDE)[0] == "OK"
    assert t.select(LB_IP, 80, "TCP", "192.0.2.1")[0] == "SRC_DENIED"
    assert t.select(LB_IP, 80, "TCP", POD)[0] == "SRC_DENIED"   # pods are not exempt
    # Only the VIP frontend is firewalled (kube-proxy: NodePorts ignore the ranges).
    assert t.select(NODE, 30080, "TCP", "192.0.2.1")[0] == "OK"
    assert t.select(EXT_IP, 80, "TCP", "192.0.2.1")[0] == "OK"
    # The firewall runs before the no-endpoints reject.
    service(t, cluster=[], local=[], ranges=["203.0.113.0/24"])
    assert t.select(LB_IP, 80, "TCP", "192.0.2.1")[0] == "SRC_DENIED"
    assert t.select(LB_IP, 80, "TCP", OUTSIDE)[0] == "REJECT"
    assert t.stats()["src_denied"] == 3


def _maglev_map(backends, keys, m=DEFAULT_MAGLEV_M):
    t = table(maglev_m=m)
    t.set_service("m", [(VIP, 80, "TCP", 0, ())], backends, maglev=True)
    return [t.select(VIP, 80, "TCP", POD, hash=h)[1] for h in keys]


def test_maglev_balance_and_stability():
    backends = [(f"10.244.{i}.{i + 1}", 8080) for i in range(10)]
    keys = random.Random(1).sample(range(2**32), 20000)
    before = _maglev_map(backends, keys)
    share = Counter(before)
    assert len(share) == 10
    assert max(share.values()) / min(share.values()) < 1.2

    # Deterministic: the same set gives the same table in a new generation.
    assert _maglev_map(list(reversed(backends)), keys) == before

    removed = backends[3][0]
    after = _maglev_map(backends[:3] + backends[4:], keys)
    moved = sum(a != b for a, b in zip(before, after)) / len(keys)
    lost = share[removed] / len(keys)
    assert lost - 0.01 <= moved <= lost + 0.05
    # Keys whose backend stayed are (nearly all) left alone.
    kept = [(a, b) for a, b in zip(before, after) if a != removed]
    assert sum(a != b for a, b in kept) / len(kept) <= 0.05

    grown = _maglev_map(backends + [("10.244.10.11", 8080)], keys)
    moved = sum(a != b for a, b in zip(before, grown)) / len(keys)
    assert moved <= 1 / 11 + 0.05


def test_maglev_table_size_must_be_prime():
    with pytest.raises(ValueError, match="prime"):
        LBTable(maglev_m=16384)
    assert len(set(_maglev_map(BACKENDS, range(2000), m=251))) == 3


def test_affinity_reuse_and_expiry():
    t = table()
    sec = 1_000_000_000
    t.set_service("a", [(VIP, 80, "TCP", 0, ()), (NODE, 30080, "TCP", FE_EXTERNAL, ())], BACKENDS,
                  affinity_timeout=10, maglev=True)
    hashes = range(0, 2**32, 2**32 // 64)
    first = t.select(VIP, 80, "TCP", POD, hash=0, now_ns=1 * sec)[1]
    # Same client: same backend for any flow, through any frontend of the Service port.
    assert {t.select(VIP, 80, "TCP", POD, hash=h, now_ns=2 * sec)[1] for h in hashes} == {first}
    assert t.select(NODE, 30080, "TCP", POD, hash=12345, now_ns=3 * sec)[1] == first
    # Each connection refreshes the entry: still sticky 9 s after the last one.
    assert t.select(VIP, 80, "TCP", POD, hash=7, now_ns=12 * sec)[1] == first
    # Expired: the flow hash decides again.
    free = {t.select(VIP, 80, "TCP", POD, hash=h, now_ns=100 * sec + i * 11 * sec)[1] for i, h in enumerate(hashes)}
    assert len(free) > 1
    # Another client is independent.
    assert len({t.select(VIP, 80, "TCP", f"10.244.7.{i}", hash=(i * 2654435761) % 2**32)[1] for i in range(1, 60)}) > 1
    assert t.stats()["affinity_hits"] >= 66


def test_affinity_follows_usable_set():
    t = table()
    t.set_service("a", [(VIP, 80, "TCP", 0, ())], BACKENDS, affinity_timeout=60)
    first = t.select(VIP, 80, "TCP", POD)[1]
    t.update_endpoints("a", [b for b in BACKENDS if b[0] != first])
    second = t.select(VIP, 80, "TCP", POD)[1]
    assert second != first
    t.update_endpoints("a", BACKENDS)
    assert {t.select(VIP, 80, "TCP", POD, sport=2000 + i)[1] for i in range(50)} == {second}


def test_affinity_table_full_falls_back():
    t = table(affinity_capacity=8)
    t.set_service("a", [(VIP, 80, "TCP", 0, ())], BACKENDS, affinity_timeout=60)
    results = [t.select(VIP, 80, "TCP", f"10.244.5.{i}")[0] for i in range(1, 40)]
    assert set(results) == {"OK"}
    assert t.stats()["affinity_full"] == 39 - 8


def test_update_endpoints_in_place():
    t = table()
    service(t)
    sid = t.service_key_id("svc")
    t.update_endpoints("svc", [("10.244.9.1", 9090)], [])
    assert chosen(t, VIP, 80, POD)[1] == {"10.244.9.1"}
    assert t.service_key_id("svc") == sid and len(t) == 4
    t.update_endpoints("svc", [], [])
    assert t.select(VIP, 80, "TCP", POD)[0] == "REJECT"
    with pytest.raises(KeyError):
        t.update_endpoints("nope", [])
    with pytest.raises(ValueError):
        t.update_endpoints("svc", [("fd10::1", 80)])
    assert t.select(VIP, 80, "TCP", POD)[0] == "REJECT"      # the failed update changed nothing


def test_replace_and_conflicts_keep_state():
    t = table()
    service(t)
    t.set_service("other", [("10.96.0.11", 80, "TCP", 0, ())], BACKENDS)
    sid = t.service_key_id("svc")
    with pytest.raises(ValueError, match="another Service"):
        t.set_service("svc", [("10.96.0.11", 80, "TCP", 0, ())], BACKENDS)
    with pytest.raises(ValueError, match="twice"):
        t.set_service("svc", [(VIP, 80, "TCP", 0, ()), (VIP, 80, "TCP", 0, ())], BACKENDS)
    with pytest.raises(ValueError, match="port"):
        t.set_service("svc", [(VIP, 0, "TCP", 0, ())], BACKENDS)
    assert len(t) == 5 and chosen(t, LB_IP, 80, POD)[0] == {"OK"}
    # Replacing moves the frontends; the id stays.
    t.set_service("svc", [("10.96.0.12", 80, "TCP", 0, ())], BACKENDS)
    assert t.lookup(VIP, 80, "TCP") == -1 and t.lookup("10.96.0.12", 80, "TCP") >= 0
    assert t.service_key_id("svc") == sid and len(t) == 2
    t.remove_service("svc")
    assert len(t) == 1 and "svc" not in t
    with pytest.raises(KeyError):
        t.remove_service("svc")


def test_many_services_grow_and_delete():
    t = table(capacity=1)
    n = 3000
    for i in range(n):
        t.set_service(i, [(f"10.96.{i // 256}.{i % 256}", 80, "TCP", 0, ()),
                          (NODE, 30000 + i, "UDP", FE_EXTERNAL, ())], [(f"10.244.{i // 256}.{i % 256}", 80)])
    for i in range(0, n, 2):
        t.remove_service(i)
    assert len(t) == n
    for i in range(n):
        hit = t.lookup(f"10.96.{i // 256}.{i % 256}", 80, "TCP") >= 0
        assert hit == (i % 2 == 1)
        assert (t.lookup(NODE, 30000 + i, "UDP") >= 0) == (i % 2 == 1)
    assert t.select("10.96.0.1", 80, "TCP", POD)[1] == "10.244.0.1"


def test_nat_outgoing():
    t = table(non_masquerade_cidrs=[POD_CIDR, "192.168.0.0/24"])
    assert t.nat_outgoing_of(POD, "8.8.8.8")
    assert not t.nat_outgoing_of(POD, "10.244.1.1")          # pod to pod
    assert not t.nat_outgoing_of(POD, "192.168.0.20")        # the node network
    assert not t.nat_outgoing_of(OUTSIDE, "8.8.8.8")         # not from a pod
    assert t.nat_outgoing_of("fd10::5", "2001:db8::1")


# ---- cluster-ips-check and the local traffic detector ----

def test_check_service_ip():
    t = table(service_cidrs=["10.96.0.0/16"])
    service(t)
    assert t.check(VIP, 81, "TCP") == "NO_PORT" and t.check(VIP, 80, "UDP") == "NO_PORT"
    assert t.check(EXT_IP, 81, "TCP") == "NONE" and t.check(NODE, 1, "TCP") == "NONE"
    assert t.check("10.96.9.9", 80, "TCP") == "UNALLOCATED"
    t.set_service("other", [(VIP, 443, "TCP", 0, ())], BACKENDS)     # one ClusterIP, two ports
    t.remove_service("svc")
    assert t.check(VIP, 81, "TCP") == "NO_PORT"
    t.remove_service("other")
    assert t.check(VIP, 81, "TCP") == "UNALLOCATED"
    t.set_service_cidrs([])
    assert t.check(VIP, 81, "TCP") == "NONE"


def test_local_detector_by_cidr_and_by_port():
    t = table(local_cidrs=["10.244.1.0/24"])        # NodeCIDR: this node's pods only
    service(t)
    assert not t.select(VIP, 80, "TCP", "10.244.1.9")[3] and t.select(VIP, 80, "TCP", POD)[3]
    assert t.nat_outgoing_of(POD, "8.8.8.8")        # NAT outgoing keeps the cluster CIDRs
    t.set_local_cidrs(["10.244.9.0/24"])
    assert t.select(VIP, 80, "TCP", "10.244.1.9")[3] and not t.select(VIP, 80, "TCP", POD)[3]
    t = table(local_ports=[False, True])
    service(t)
    assert t.select(VIP, 80, "TCP", OUTSIDE, port_in=0)[3] and not t.select(VIP, 80, "TCP", OUTSIDE, port_in=1)[3]
    assert t.select(VIP, 80, "TCP", POD, port_in=7)[3]   # an unknown port is not local
    with pytest.raises(ValueError):
        t.set_local_cidrs([POD_CIDR])
    t = table(local_cidrs=[])                        # no detector: no off-cluster masquerade
    service(t)
    assert not t.select(VIP, 80, "TCP", OUTSIDE)[3]
