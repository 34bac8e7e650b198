"""Service load-balancing tables: frontend (address, port, protocol) -> lb_service -> lb_group
(the Service port's cluster and node-local endpoint sets) -> lb_backend.

The fast path (select_backend) implements kube-proxy's nftables rules for a new connection
(pkg/proxy/nftables/proxier.go syncProxyRules): the firewall (loadBalancerSourceRanges) check,
no-endpoint reject/drop, the "external destinations" chain with its eTP=Local short-circuits,
the ClusterIP masquerade rules, session affinity and the per-endpoint hairpin masquerade.
Which endpoints are usable (ready, else serving+terminating) is decided by the proxier before
the sets reach this table (pkg/proxy/topology.go CategorizeEndpoints).

Memory is flat C arrays. The control plane runs on the stage's thread between bursts, so an
update builds the new arrays completely, swaps pointers and frees the old ones; a failed update
raises before anything is swapped.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, memcpy
import ipaddress
import os

from dataplane.includes.pkt cimport pkt_tuple
from dataplane.includes.cidr cimport cidr_t, cidr_set_match
from dataplane.includes.bytes cimport store_be32
from dataplane.parse cimport tuple_hash

__all__ = ["LBTable", "FE_EXTERNAL", "FE_LOCAL", "RESULTS", "DEFAULT_MAGLEV_M"]

FE_EXTERNAL = LB_FE_EXTERNAL
FE_LOCAL = LB_FE_LOCAL
RESULTS = ("OK", "REJECT", "DROP", "SRC_DENIED")
VIP_RESULTS = ("NONE", "NO_PORT", "UNALLOCATED")
DEFAULT_MAGLEV_M = 16381           # prime; Cilium's default table size
_PROTOS = {"TCP": 6, "UDP": 17, "SCTP": 132}

cdef enum:
    AFF_PROBE = 8                  # affinity slots examined per client before giving up ("full")
    NO_ENTRY = 0xFFFF


# ---------------------------------------------------------------------------------------------
# Hashing

cdef inline uint64_t _mix(uint64_t x) noexcept nogil:
    """splitmix64 finaliser: every input bit affects every output bit."""
    x ^= x >> 30
    x *= 0xbf58476d1ce4e5b9ULL
    x ^= x >> 27
    x *= 0x94d049bb133111ebULL
    x ^= x >> 31
    return x


cdef inline uint64_t _hash_words(const uint32_t *a, uint64_t extra) noexcept nogil:
    cdef uint64_t h = _mix(extra ^ ((<uint64_t>a[0] << 32) | a[1]))
    return _mix(h ^ ((<uint64_t>a[2] << 32) | a[3]))


cdef inline bint _addr_eq(const uint32_t *a, const uint32_t *b) noexcept nogil:
    return a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]


cdef inline uint64_t _fe_hash(const uint32_t *addr, uint16_t port, uint8_t proto, uint8_t family) noexcept nogil:
    return _hash_words(addr, (<uint64_t>port << 16) | (<uint64_t>proto << 8) | family)


# ---------------------------------------------------------------------------------------------
# Maglev (Eisenbud et al., NSDI 2016, section 3.4): each backend's preference list is the
# permutation offset + j*skip (mod M) of its name; backends take turns claiming their next
# preferred free slot until all M slots are taken. M prime makes every list a full permutation.
# Backends arrive sorted by name, so the table depends only on the set.

cdef int _maglev_fill(uint16_t *entry, const lb_backend *be, uint32_t n, uint32_t m) noexcept nogil:
    cdef uint32_t *cur = <uint32_t *>malloc(2 * n * sizeof(uint32_t))
    cdef uint32_t *skip
    cdef uint32_t i, c, filled = 0
    cdef uint64_t key
    if cur == NULL:
        return -1
    skip = cur + n
    for i in range(n):
        key = (<uint64_t>be[i].port << 8) | be[i].family
        cur[i] = <uint32_t>(_hash_words(be[i].addr, key ^ 0x6d61676c65763031ULL) % m)
        skip[i] = <uint32_t>(_hash_words(be[i].addr, key ^ 0x736b69702d6c6576ULL) % (m - 1)) + 1
    for c in range(m):
        entry[c] = NO_ENTRY
    while True:
        for i in range(n):
            c = cur[i]
            while entry[c] != NO_ENTRY:
                c += skip[i]
                if c >= m:
                    c -= m
            entry[c] = <uint16_t>i
            c += skip[i]
            cur[i] = c - m if c >= m else c
            filled += 1
            if filled == m:
                free(cur)
                return 0


cdef void _set_free(lb_set *s) noexcept nogil:
    free(s.be)
    free(s.maglev)
    s.be = NULL
    s.maglev = NULL
    s.n = 0


# ---------------------------------------------------------------------------------------------
# Python values -> C

cdef inline object _ip(object a):
    return a if isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else ipaddress.ip_address(a)


cdef uint8_t _addr(object a, uint32_t *out) except 0:
    """Address (str or ipaddress object) -> network order words; returns the family."""
    cdef bytes packed = _ip(a).packed
    memset(out, 0, 16)
    memcpy(out, PyBytes_AS_STRING(packed), PyBytes_GET_SIZE(packed))
    return 4 if PyBytes_GET_SIZE(packed) == 4 else 6


cdef object _addr_str(const uint32_t *a, uint8_t family):
    cdef bytes raw = (<const char *>a)[:4 if family == 4 else 16]
    return str(ipaddress.ip_address(raw))


cdef int _proto(object p) except -1:
    if isinstance(p, str):
        if p.upper() not in _PROTOS:
            raise ValueError(f"unknown protocol {p!r} (TCP, UDP or SCTP)")
        return _PROTOS[p.upper()]
    if not 0 < p < 256:
        raise ValueError(f"protocol number out of range: {p!r}")
    return p


cdef int _port(object p) except -1:
    if not 0 < p < 65536:
        raise ValueError(f"port out of range: {p!r}")
    return p


cdef cidr_t *_cidrs(object nets, uint32_t *n) except? NULL:
    """Networks (str or ipaddress objects) -> malloc'd cidr_t array (NULL when empty)."""
    nets = [n_ if isinstance(n_, (ipaddress.IPv4Network, ipaddress.IPv6Network))
            else ipaddress.ip_network(n_, strict=False) for n_ in nets]
    n[0] = len(nets)
    if not nets:
        return NULL
    cdef cidr_t *out = <cidr_t *>calloc(len(nets), sizeof(cidr_t))
    if out == NULL:
        raise MemoryError()
    cdef uint32_t i
    for i, net in enumerate(nets):
        out[i].family = _addr(net.network_address, out[i].addr)
        _addr(net.netmask, out[i].mask)
    return out


cdef int _prime(uint64_t m) noexcept:
    cdef uint64_t d = 2
    if m < 2:
        return 0
    while d * d <= m:
        if m % d == 0:
            return 0
        d += 1
    return 1


cdef class LBTable:
    """Service frontends and their endpoint sets.

    LBTable(node_ips=(), cluster_cidrs=(), non_masquerade_cidrs=None, masquerade_all=False,
            maglev_m=16381, affinity_capacity=65536, capacity=1024, seed=None,
            local_cidrs=None, local_ports=None, service_cidrs=())

    node_ips: this node's addresses (SNAT source: the first of each family; traffic from any of
    them is "locally originated"). cluster_cidrs: the pod networks (NAT outgoing).
    non_masquerade_cidrs: destinations NAT-outgoing never SNATs to (None: the cluster CIDRs).
    The local traffic detector (kube-proxy's detectLocalMode) decides the off-cluster ClusterIP
    masquerade and the eTP=Local pod short-circuit: local_cidrs are the sources that count as
    local (None: cluster_cidrs; ClusterCIDR or NodeCIDR mode; a family without one has no
    detector), or local_ports, one flag per port index, marks the ports whose traffic is local
    (BridgeInterface / InterfaceNamePrefix). service_cidrs: see set_service_cidrs().
    """

    def __cinit__(self, node_ips=(), cluster_cidrs=(), non_masquerade_cidrs=None, masquerade_all=False,
                  maglev_m=DEFAULT_MAGLEV_M, affinity_capacity=65536, capacity=1024, seed=None,
                  local_cidrs=None, local_ports=None, service_cidrs=()):
        cdef uint32_t i, size = 16
        cdef uint32_t words[4]
        cdef uint8_t fam
        self._groups = {}
        self._fes = {}
        self._vip_refs = {}
        self._free_svcs = []
        self._free_groups = []
        if not _prime(maglev_m) or maglev_m > 1 << 24:
            raise ValueError(f"maglev_m must be a prime below 2**24, got {maglev_m!r}")
        if affinity_capacity < AFF_PROBE or affinity_capacity & (affinity_capacity - 1):
            raise ValueError(f"affinity_capacity must be a power of two >= {AFF_PROBE}, got {affinity_capacity!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity!r}")
        self.maglev_m = maglev_m
        self.masquerade_all = bool(masquerade_all)
        self.next_id = 1
        self.rng = <uint64_t>int.from_bytes(os.urandom(8), "little") if seed is None else <uint64_t>(seed & (2**64 - 1))
        self.rng = _mix(self.rng) | 1
        self.cluster = _cidrs(cluster_cidrs, &self.n_cluster)
        self.nonmasq = _cidrs(cluster_cidrs if non_masquerade_cidrs is None else non_masquerade_cidrs,
                              &self.n_nonmasq)
        for i in range(self.n_cluster):
            self.cluster_known[0 if self.cluster[i].family == 4 else 1] = True
        if local_ports is not None:
            self.n_local_ports = len(local_ports)
            self.local_ports = <uint8_t *>calloc(max(1, self.n_local_ports), 1)
            if self.local_ports == NULL:
                raise MemoryError()
            for i in range(self.n_local_ports):
                self.local_ports[i] = bool(local_ports[i])
            self.local_known[0] = self.local_known[1] = True
        else:
            self.localnet = _cidrs(cluster_cidrs if local_cidrs is None else local_cidrs, &self.n_localnet)
            for i in range(self.n_localnet):
                self.local_known[0 if self.localnet[i].family == 4 else 1] = True
        self.set_service_cidrs(service_cidrs)
        self._vip_reserve(capacity)
        node_ips = [_ip(a) for a in node_ips]
        self.node_addrs = _cidrs([ipaddress.ip_network(a) for a in node_ips], &self.n_node_addrs)
        for a in reversed(node_ips):        # the first address of each family wins
            fam = _addr(a, words)
            if fam == 4:
                memcpy(self.node4, words, 16)
            else:
                memcpy(self.node6, words, 16)
        self.aff = <lb_affinity *>calloc(affinity_capacity, sizeof(lb_affinity))
        self.aff_mask = affinity_capacity - 1
        while size < 2 * capacity:
            size <<= 1
        self.svcs = <lb_service *>calloc(capacity, sizeof(lb_service))
        self.groups = <lb_group *>calloc(capacity, sizeof(lb_group))
        self.fe_slots = <int32_t *>malloc(size * sizeof(int32_t))
        if self.aff == NULL or self.svcs == NULL or self.groups == NULL or self.fe_slots == NULL:
            raise MemoryError()
        self.cap_svcs = self.cap_groups = capacity
        self.fe_mask = size - 1
        memset(self.fe_slots, 0xff, size * sizeof(int32_t))
        self._free_svcs = list(range(capacity - 1, -1, -1))
        self._free_groups = list(range(capacity - 1, -1, -1))
        for i in range(capacity):
            self.svcs[i].group = -1

    def __dealloc__(self):
        cdef uint32_t i
        if self.groups != NULL:
            for i in range(self.cap_groups):
                _set_free(&self.groups[i].cluster)
                _set_free(&self.groups[i].local)
        if self.svcs != NULL:
            for i in range(self.cap_svcs):
                free(self.svcs[i].src)
        free(self.svcs)
        free(self.groups)
        free(self.fe_slots)
        free(self.aff)
        free(self.cluster)
        free(self.localnet)
        free(self.local_ports)
        free(self.vips)
        free(self.svc_cidrs)
        free(self.nonmasq)
        free(self.node_addrs)

    # -----------------------------------------------------------------------------------------
    # Fast path (nogil)

    cdef int64_t lookup_service(self, const pkt_tuple *t) noexcept nogil:
        cdef uint32_t i = <uint32_t>_fe_hash(t.daddr, t.dport, t.proto, t.family) & self.fe_mask
        cdef int32_t s
        cdef lb_service *fe
        while True:
            s = self.fe_slots[i]
            if s < 0:
                return -1
            fe = &self.svcs[s]
            if (fe.port == t.dport and fe.proto == t.proto and fe.family == t.family
                    and _addr_eq(fe.addr, t.daddr)):
                return s
            i = (i + 1) & self.fe_mask

    cdef uint32_t _random(self, uint32_t n) noexcept nogil:
        """Uniform in [0, n): xorshift64* and Lemire's multiply-shift reduction."""
        cdef uint64_t x = self.rng
        x ^= x >> 12
        x ^= x << 25
        x ^= x >> 27
        self.rng = x
        return <uint32_t>(((x * 0x2545F4914F6CDD1DULL) >> 32) * n >> 32)

    cdef uint32_t _pick(self, const lb_set *s, uint32_t hash) noexcept nogil:
        if s.maglev != NULL:
            return s.maglev[hash % self.maglev_m]
        return self._random(s.n)

    cdef uint32_t _pick_affinity(self, const lb_group *g, const lb_set *s, const pkt_tuple *t,
                                 uint32_t hash, uint64_t now_ns) noexcept nogil:
        """kube-proxy ClientIP affinity: a client keeps the endpoint it last used for this
        Service port while that endpoint is in the set being chosen from and the entry is
        younger than the timeout; each new connection refreshes it (nftables `update @set`)."""
        cdef uint32_t base = <uint32_t>_hash_words(t.saddr, (<uint64_t>g.id << 8) | t.family)
        cdef uint32_t k, i
        cdef lb_affinity *e
        cdef lb_affinity *slot = NULL
        cdef lb_affinity *stale = NULL
        for k in range(AFF_PROBE):
            e = &self.aff[(base + k) & self.aff_mask]
            if e.svc_id == g.id and e.family == t.family and _addr_eq(e.client, t.saddr):
                slot = e
                break
            if stale == NULL and (e.svc_id == 0 or e.expires_ns <= now_ns):
                stale = e
        if slot != NULL and slot.expires_ns > now_ns:
            for i in range(s.n):
                if s.be[i].port == slot.be_port and _addr_eq(s.be[i].addr, slot.be_addr):
                    slot.expires_ns = now_ns + g.affinity_ns
                    self.st_affinity_hits += 1
                    return i
        i = self._pick(s, hash)
        if slot == NULL:
            slot = stale
        if slot == NULL:
            self.st_affinity_full += 1
            return i
        slot.svc_id = g.id
        slot.family = t.family
        memcpy(slot.client, t.saddr, 16)
        memcpy(slot.be_addr, s.be[i].addr, 16)
        slot.be_port = s.be[i].port
        slot.expires_ns = now_ns + g.affinity_ns
        return i

    cdef bint _src_local(self, const pkt_tuple *t, uint16_t port_in) noexcept nogil:
        """kube-proxy's LocalTrafficDetector.IsLocal for the packet's source."""
        if self.local_ports != NULL:
            return port_in < self.n_local_ports and self.local_ports[port_in]
        return cidr_set_match(self.localnet, self.n_localnet, t.saddr, t.family)

    cdef bint _local_known(self, uint8_t family) noexcept nogil:
        return self.local_known[0 if family == 4 else 1]

    cdef int64_t _vip_find(self, const uint32_t *addr, uint8_t family) noexcept nogil:
        cdef uint32_t i = <uint32_t>_fe_hash(addr, 0, 0, family) & self.vip_mask
        while self.vips[i].family:
            if self.vips[i].family == family and _addr_eq(self.vips[i].addr, addr):
                return i
            i = (i + 1) & self.vip_mask
        return -1

    cdef int check_service_ip(self, const pkt_tuple *t) noexcept nogil:
        # nftables: "ip daddr @cluster-ips reject", then "ip daddr { service CIDRs } drop".
        if self.n_vips and self._vip_find(t.daddr, t.family) >= 0:
            return LB_VIP_NO_PORT
        if cidr_set_match(self.svc_cidrs, self.n_svc_cidrs, t.daddr, t.family):
            return LB_VIP_UNALLOCATED
        return LB_VIP_NONE

    cdef int select_backend(self, int64_t svc, const pkt_tuple *t, uint32_t hash, uint16_t port_in,
                            uint64_t now_ns, lb_backend *backend, uint32_t *flags) noexcept nogil:
        cdef lb_service *fe = &self.svcs[svc]
        cdef lb_group *g = &self.groups[fe.group]
        cdef const lb_set *s
        cdef uint32_t masq = 0, i
        flags[0] = 0
        # The firewall chain runs before DNAT and whether or not there are endpoints.
        if fe.n_src and not cidr_set_match(fe.src, fe.n_src, t.saddr, t.family):
            self.st_denied += 1
            return LB_SRC_DENIED
        # No usable endpoint anywhere: every frontend rejects.
        if g.cluster.n == 0:
            self.st_reject += 1
            return LB_REJECT
        if fe.flags & LB_FE_EXTERNAL:
            if not fe.flags & LB_FE_LOCAL:
                # "masquerade traffic for external destinations": all of it, pods included.
                masq = LB_MASQ
                s = &g.cluster
            elif self._local_known(t.family) and self._src_local(t, port_in):
                # "short-circuit pod traffic": pods reach external VIPs through the cluster set,
                # as if they went out to the load balancer and came back.
                s = &g.cluster
            elif cidr_set_match(self.node_addrs, self.n_node_addrs, t.saddr, t.family):
                # "masquerade local traffic" + "short-circuit local traffic" (fib saddr type local).
                masq = LB_MASQ
                s = &g.cluster
            else:
                s = &g.local
        else:
            # ClusterIP: masqueradeAll, else non-local sources when the local detector is implemented.
            if self.masquerade_all or (self._local_known(t.family) and not self._src_local(t, port_in)):
                masq = LB_MASQ
            s = &g.local if fe.flags & LB_FE_LOCAL else &g.cluster
        if s.n == 0:
            # Local policy without a local endpoint while others exist elsewhere: drop.
            self.st_drop += 1
            return LB_DROP
        if g.flags & LB_G_AFFINITY:
            i = self._pick_affinity(g, s, t, hash, now_ns)
        else:
            i = self._pick(s, hash)
        backend[0] = s.be[i]
        # Endpoint chain: "ip saddr <endpoint> jump mark-for-masquerade" (hairpin).
        if _addr_eq(backend.addr, t.saddr):
            masq = LB_MASQ
        flags[0] = masq
        return LB_OK

    cdef uint32_t service_id(self, int64_t svc) noexcept nogil:
        return self.groups[self.svcs[svc].group].id

    cdef bint nat_outgoing(self, const pkt_tuple *t) noexcept nogil:
        return (cidr_set_match(self.cluster, self.n_cluster, t.saddr, t.family)
                and not cidr_set_match(self.cluster, self.n_cluster, t.daddr, t.family)
                and not cidr_set_match(self.nonmasq, self.n_nonmasq, t.daddr, t.family))

    cdef const uint32_t *node_ip(self, uint8_t family) noexcept nogil:
        if family == 4:
            return self.node4
        return self.node6

    # -----------------------------------------------------------------------------------------
    # Control plane

    cdef int _build_set(self, object backends, uint8_t family, bint maglev, lb_set *out) except -1:
        """Python (address, port[, id]) tuples -> a fresh lb_set in *out (sorted by name for
        Maglev). An address is a str, an ipaddress object or an int (of `family`)."""
        cdef uint32_t n = len(backends), i
        cdef bytes raw
        cdef lb_backend *be
        out.be = NULL
        out.maglev = NULL
        out.n = 0
        if n == 0:
            return 0
        if maglev and (n > NO_ENTRY - 1 or n > self.maglev_m):
            raise ValueError(f"{n} backends exceed the Maglev table (at most {min(NO_ENTRY - 1, self.maglev_m)})")
        be = <lb_backend *>calloc(n, sizeof(lb_backend))
        if be == NULL:
            raise MemoryError()
        out.be = be
        for i, b in enumerate(sorted(backends) if maglev else backends):
            a = b[0]
            if type(a) is int and family == 4 and 0 <= a < 1 << 32:
                store_be32(<uint8_t *>be[i].addr, a)
            elif type(a) is int and family == 6 and 0 <= a < 1 << 128:
                raw = a.to_bytes(16, "big")
                memcpy(be[i].addr, PyBytes_AS_STRING(raw), 16)
            elif type(a) is int or _addr(a, be[i].addr) != family:
                _set_free(out)
                raise ValueError(f"backend {a!r} is not an IPv{family} address like its frontends")
            be[i].family = family
            be[i].port = _port(b[1])
            be[i].id = b[2] if len(b) > 2 else 0
        out.n = n
        if maglev:
            out.maglev = <uint16_t *>malloc(self.maglev_m * sizeof(uint16_t))
            if out.maglev == NULL or _maglev_fill(out.maglev, be, n, self.maglev_m) < 0:
                _set_free(out)
                raise MemoryError()
        return 0

    cdef _grow(self, uint32_t need_svcs, uint32_t need_groups):
        """Make room; on failure the tables are untouched (realloc keeps the old block)."""
        cdef uint32_t cap, i, size, slot
        cdef void *p
        cdef int32_t *slots
        cdef lb_service *fe
        if need_svcs > self.cap_svcs:
            cap = max(need_svcs, 2 * self.cap_svcs)
            p = realloc(self.svcs, cap * sizeof(lb_service))
            if p == NULL:
                raise MemoryError()
            self.svcs = <lb_service *>p
            memset(&self.svcs[self.cap_svcs], 0, (cap - self.cap_svcs) * sizeof(lb_service))
            for i in range(self.cap_svcs, cap):
                self.svcs[i].group = -1
            self._free_svcs[:0] = range(cap - 1, self.cap_svcs - 1, -1)
            self.cap_svcs = cap
        if need_groups > self.cap_groups:
            cap = max(need_groups, 2 * self.cap_groups)
            p = realloc(self.groups, cap * sizeof(lb_group))
            if p == NULL:
                raise MemoryError()
            self.groups = <lb_group *>p
            memset(&self.groups[self.cap_groups], 0, (cap - self.cap_groups) * sizeof(lb_group))
            self._free_groups[:0] = range(cap - 1, self.cap_groups - 1, -1)
            self.cap_groups = cap
        size = self.fe_mask + 1
        if 2 * need_svcs <= size:
            return
        while size < 2 * need_svcs:
            size <<= 1
        slots = <int32_t *>malloc(size * sizeof(int32_t))
        if slots == NULL:
            raise MemoryError()
        memset(slots, 0xff, size * sizeof(int32_t))
        for i in range(self.fe_mask + 1):
            if self.fe_slots[i] >= 0:
                fe = &self.svcs[self.fe_slots[i]]
                slot = <uint32_t>_fe_hash(fe.addr, fe.port, fe.proto, fe.family) & (size - 1)
                while slots[slot] >= 0:
                    slot = (slot + 1) & (size - 1)
                slots[slot] = self.fe_slots[i]
        free(self.fe_slots)
        self.fe_slots = slots
        self.fe_mask = size - 1

    cdef void _fe_insert(self, int32_t s) noexcept nogil:
        cdef lb_service *fe = &self.svcs[s]
        cdef uint32_t i = <uint32_t>_fe_hash(fe.addr, fe.port, fe.proto, fe.family) & self.fe_mask
        while self.fe_slots[i] >= 0:
            i = (i + 1) & self.fe_mask
        self.fe_slots[i] = s
        self.n_frontends += 1

    cdef void _fe_delete(self, int32_t s) noexcept nogil:
        """Linear probing delete with backward shift: no tombstones, lookups stay short."""
        cdef lb_service *fe = &self.svcs[s]
        cdef uint32_t i = <uint32_t>_fe_hash(fe.addr, fe.port, fe.proto, fe.family) & self.fe_mask
        cdef uint32_t j, home
        while self.fe_slots[i] != s:
            i = (i + 1) & self.fe_mask
        j = i
        while True:
            j = (j + 1) & self.fe_mask
            if self.fe_slots[j] < 0:
                break
            fe = &self.svcs[self.fe_slots[j]]
            home = <uint32_t>_fe_hash(fe.addr, fe.port, fe.proto, fe.family) & self.fe_mask
            # Move j back to the hole at i unless its home lies cyclically in (i, j].
            if (j > i and (home <= i or home > j)) or (j < i and home <= i and home > j):
                self.fe_slots[i] = self.fe_slots[j]
                i = j
        self.fe_slots[i] = -1
        self.n_frontends -= 1

    cdef _vip_reserve(self, uint32_t need):
        """Room for `need` ClusterIPs at load <= 1/2 (rehashing live entries into a new array)."""
        cdef uint32_t size = 0, new_size = 16, i, j
        cdef lb_vip *table
        if self.vips != NULL:
            size = self.vip_mask + 1
        if 2 * need <= size:
            return
        while new_size < 2 * need:
            new_size <<= 1
        table = <lb_vip *>calloc(new_size, sizeof(lb_vip))
        if table == NULL:
            raise MemoryError()
        for i in range(size):
            if self.vips[i].family:
                j = <uint32_t>_fe_hash(self.vips[i].addr, 0, 0, self.vips[i].family) & (new_size - 1)
                while table[j].family:
                    j = (j + 1) & (new_size - 1)
                table[j] = self.vips[i]
        free(self.vips)
        self.vips = table
        self.vip_mask = new_size - 1

    cdef _vip_ref(self, const lb_service *fe, int delta):
        """Count a ClusterIP frontend in or out of the cluster-ips set (room reserved before)."""
        cdef uint32_t i, j, home
        cdef long n
        cdef object key
        if fe.flags & LB_FE_EXTERNAL:
            return
        key = (fe.family, (<const char *>fe.addr)[:16])
        n = <long>self._vip_refs.get(key, 0) + delta
        if n:
            self._vip_refs[key] = n
        else:
            del self._vip_refs[key]
        if delta > 0 and n == 1:
            i = <uint32_t>_fe_hash(fe.addr, 0, 0, fe.family) & self.vip_mask
            while self.vips[i].family:
                i = (i + 1) & self.vip_mask
            memcpy(self.vips[i].addr, fe.addr, 16)
            self.vips[i].family = fe.family
            self.n_vips += 1
        elif n == 0:
            # Linear probing delete with backward shift, as _fe_delete.
            i = <uint32_t>self._vip_find(fe.addr, fe.family)
            j = i
            while True:
                j = (j + 1) & self.vip_mask
                if not self.vips[j].family:
                    break
                home = <uint32_t>_fe_hash(self.vips[j].addr, 0, 0, self.vips[j].family) & self.vip_mask
                if (j > i and (home <= i or home > j)) or (j < i and home <= i and home > j):
                    self.vips[i] = self.vips[j]
                    i = j
            memset(&self.vips[i], 0, sizeof(lb_vip))
            self.n_vips -= 1

    def set_service_cidrs(self, cidrs):
        """The ServiceCIDRs (networks): new connections to an address inside them that no
        Service has are dropped. Empty: no such check (kube-proxy without ServiceCIDRs)."""
        cdef uint32_t n = 0
        cdef cidr_t *new = _cidrs(list(cidrs), &n)
        free(self.svc_cidrs)
        self.svc_cidrs = new
        self.n_svc_cidrs = n

    def set_local_cidrs(self, cidrs):
        """Replace the local detector's source CIDRs (NodeCIDR mode: the Node's podCIDRs
        changed). ValueError when the table detects local traffic by interface."""
        cdef uint32_t n = 0, i
        cdef cidr_t *new
        if self.local_ports != NULL:
            raise ValueError("this table detects local traffic by ingress port, not by CIDR")
        new = _cidrs(list(cidrs), &n)
        free(self.localnet)
        self.localnet = new
        self.n_localnet = n
        self.local_known[0] = self.local_known[1] = False
        for i in range(n):
            self.local_known[0 if new[i].family == 4 else 1] = True

    cdef _drop_frontends(self, int32_t gi):
        for s in self._fes.pop(gi, ()):
            self._vip_ref(&self.svcs[s], -1)
            self._fe_delete(s)
            free(self.svcs[s].src)
            memset(&self.svcs[s], 0, sizeof(lb_service))
            self.svcs[s].group = -1
            self._free_svcs.append(s)

    def set_service(self, key, frontends, cluster=(), local=(), *, affinity_timeout=0, maglev=False):
        """Add or replace one Service port of one family.

        key: any hashable naming the Service port (the proxier uses (namespace, name, port
        name, protocol, family)); service_id() stays the same when a key is replaced.
        frontends: (address, port, protocol, flags, source_ranges) tuples; flags of FE_EXTERNAL
        and FE_LOCAL; source_ranges (networks) restrict who may connect (empty: everyone).
        cluster, local: the usable endpoint sets as (address, port[, id]) tuples.
        affinity_timeout: seconds of ClientIP affinity (0: none). maglev: consistent hashing.
        Raises ValueError (a frontend taken by another key, mixed families, bad values) or
        MemoryError, leaving the table as it was.
        """
        cdef lb_service *tmp
        cdef lb_set cset, lset
        cdef uint32_t n = len(frontends), i, j
        cdef int32_t gi = self._groups.get(key, -1)
        cdef lb_group *g
        cdef int64_t s
        cdef pkt_tuple t
        cdef uint8_t family = 0
        if n == 0:
            raise ValueError(f"{key!r}: a Service port needs at least one frontend")
        if affinity_timeout < 0:
            raise ValueError(f"{key!r}: negative affinity timeout")
        tmp = <lb_service *>calloc(n, sizeof(lb_service))
        if tmp == NULL:
            raise MemoryError()
        memset(&cset, 0, sizeof(lb_set))
        memset(&lset, 0, sizeof(lset))
        try:
            for i, (addr, port, proto, fflags, ranges) in enumerate(frontends):
                tmp[i].family = _addr(addr, tmp[i].addr)
                if family and tmp[i].family != family:
                    raise ValueError(f"{key!r}: frontends of both IP families (one table entry per family)")
                family = tmp[i].family
                tmp[i].port = _port(port)
                tmp[i].proto = _proto(proto)
                tmp[i].flags = fflags & (LB_FE_EXTERNAL | LB_FE_LOCAL)
                tmp[i].src = _cidrs([r for r in ranges if _ip_version(r) == family], &tmp[i].n_src)
                memcpy(t.daddr, tmp[i].addr, 16)
                t.dport = tmp[i].port
                t.proto = tmp[i].proto
                t.family = tmp[i].family
                s = self.lookup_service(&t)
                if s >= 0 and self.svcs[s].group != gi:
                    raise ValueError(f"{key!r}: frontend {addr}:{port}/{proto} already belongs to another Service")
                for j in range(i):
                    if (tmp[j].port == tmp[i].port and tmp[j].proto == tmp[i].proto
                            and _addr_eq(tmp[j].addr, tmp[i].addr)):
                        raise ValueError(f"{key!r}: frontend {addr}:{port}/{proto} listed twice")
            self._build_set(cluster, family, maglev, &cset)
            self._build_set(local, family, maglev, &lset)
            old = len(self._fes.get(gi, ()))
            self._grow(self.n_frontends - old + n, len(self._groups) + 1)
            self._vip_reserve(len(self._vip_refs) + n)
        except BaseException:
            for i in range(n):
                free(tmp[i].src)
            free(tmp)
            _set_free(&cset)
            _set_free(&lset)
            raise
        # Commit: nothing below can fail.
        if gi < 0:
            gi = self._free_groups.pop()
            self._groups[key] = gi
            self.groups[gi].id = self.next_id
            self.next_id += 1
        else:
            self._drop_frontends(gi)
            _set_free(&self.groups[gi].cluster)
            _set_free(&self.groups[gi].local)
        g = &self.groups[gi]
        g.cluster = cset
        g.local = lset
        g.flags = (LB_G_AFFINITY if affinity_timeout else 0) | (LB_G_MAGLEV if maglev else 0)
        g.affinity_ns = <uint64_t>affinity_timeout * 1000000000ULL
        g.n_frontends = n
        fes = []
        for i in range(n):
            s = self._free_svcs.pop()
            self.svcs[s] = tmp[i]
            self.svcs[s].group = gi
            self._fe_insert(<int32_t>s)
            self._vip_ref(&self.svcs[s], 1)
            fes.append(s)
        self._fes[gi] = fes
        free(tmp)

    def update_endpoints(self, key, cluster=(), local=()):
        """Replace the endpoint sets of an existing Service port in place (EndpointSlice
        change): only this port's arrays are rebuilt, then swapped in."""
        cdef lb_set cset, lset
        cdef int32_t gi = self._groups.get(key, -1)
        cdef lb_group *g
        if gi < 0:
            raise KeyError(key)
        g = &self.groups[gi]
        family = self.svcs[self._fes[gi][0]].family
        maglev = bool(g.flags & LB_G_MAGLEV)
        self._build_set(cluster, family, maglev, &cset)
        try:
            self._build_set(local, family, maglev, &lset)
        except BaseException:
            _set_free(&cset)
            raise
        _set_free(&g.cluster)
        _set_free(&g.local)
        g.cluster = cset
        g.local = lset

    def remove_service(self, key):
        """Remove a Service port and all its frontends (KeyError if unknown)."""
        cdef int32_t gi = self._groups.pop(key)
        self._drop_frontends(gi)
        _set_free(&self.groups[gi].cluster)
        _set_free(&self.groups[gi].local)
        memset(&self.groups[gi], 0, sizeof(lb_group))
        self._free_groups.append(gi)

    def __contains__(self, key):
        return key in self._groups

    def keys(self):
        return list(self._groups)

    def __len__(self):
        """Number of frontends (service entries)."""
        return self.n_frontends

    def service_key_id(self, key):
        """service_id() of a Service port."""
        return self.groups[self._groups[key]].id

    # -----------------------------------------------------------------------------------------
    # Test hooks: the nogil API driven from Python

    cdef _tuple(self, pkt_tuple *t, dst, dport, proto, src, sport):
        memset(t, 0, sizeof(pkt_tuple))
        t.family = _addr(dst, t.daddr)
        if _addr(src, t.saddr) != t.family:
            raise ValueError("source and destination of different families")
        t.dport = _port(dport)
        t.sport = _port(sport)
        t.proto = _proto(proto)

    def lookup(self, dst, port, proto):
        """Frontend index for (destination, port, protocol), or -1."""
        cdef pkt_tuple t
        self._tuple(&t, dst, port, proto, dst, 1)
        return self.lookup_service(&t)

    def check(self, dst, port, proto, src=None):
        """check_service_ip for a new connection that matched no frontend: one of VIP_RESULTS."""
        cdef pkt_tuple t
        self._tuple(&t, dst, port, proto, dst if src is None else src, 1)
        return VIP_RESULTS[self.check_service_ip(&t)]

    def select(self, dst, port, proto, src, sport=40000, hash=None, now_ns=0, port_in=0):
        """(result, backend address, backend port, masquerade) for a new connection received
        on port index port_in; result is one of RESULTS or "NO_SERVICE". `hash` defaults to
        the tuple's flow hash."""
        cdef pkt_tuple t
        cdef lb_backend be
        cdef uint32_t flags = 0
        cdef int64_t s
        cdef int rc
        self._tuple(&t, dst, port, proto, src, sport)
        s = self.lookup_service(&t)
        if s < 0:
            return ("NO_SERVICE", None, None, False)
        rc = self.select_backend(s, &t, tuple_hash(&t) if hash is None else <uint32_t>hash, port_in, now_ns,
                                 &be, &flags)
        if rc != LB_OK:
            return (RESULTS[rc], None, None, False)
        return ("OK", _addr_str(be.addr, be.family), be.port, bool(flags & LB_MASQ))

    def service_id_of(self, dst, port, proto):
        cdef int64_t s = self.lookup(dst, port, proto)
        return None if s < 0 else self.service_id(s)

    def nat_outgoing_of(self, src, dst, proto="TCP"):
        cdef pkt_tuple t
        self._tuple(&t, dst, 1, proto, src, 1)
        return bool(self.nat_outgoing(&t))

    def node_ip_of(self, family):
        cdef const uint32_t *a = self.node_ip(family)
        if not (a[0] | a[1] | a[2] | a[3]):
            return None
        return _addr_str(a, family)

    def stats(self):
        return {"frontends": self.n_frontends, "services": len(self._groups),
                "affinity_hits": self.st_affinity_hits, "affinity_full": self.st_affinity_full,
                "reject": self.st_reject, "drop": self.st_drop, "src_denied": self.st_denied}


cdef int _ip_version(object net) except -1:
    if isinstance(net, str):
        return 6 if ":" in net else 4
    return net.version
