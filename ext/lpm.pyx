"""Longest-prefix match for IPv4 (DIR-24-8, as DPDK rte_lpm) and IPv6 (the same 24-bit first
level followed by 8-bit tbl8 chains, as DPDK rte_lpm6: at most 14 loads).

Both tables share one engine keyed by 128-bit big-endian words (IPv4 uses the top 32 bits), so
add/delete/group recycling is written once. Readers (the route stage, nogil) may run while the
control plane writes: every entry is a single aligned 32-bit store, and a new tbl8 group is
filled completely before the store that links it in. A group freed by delete() is recycled by a
later add(); like DPDK without RCU, the writer must not outrun a reader that is still inside it.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, UINT32_MAX
from libc.stdlib cimport malloc, free
from libc.string cimport memset
cimport numpy as cnp
import ipaddress
import operator

import numpy as np

cnp.import_array()

__all__ = ["LPM4", "LPM6", "MAX_NEXTHOP"]

cdef extern from *:
    """
    #include <stdint.h>
    #include <sys/mman.h>
    #define LPM_EXT 0x80000000u  /* entry links to a tbl8 group */
    /* Into all cache levels: a non-temporal hint (0) measured 3x slower for the tbl24 walk. */
    static inline void lpm_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }
    /* Release: a reader that sees the new entry also sees the group it points to. */
    static inline void lpm_store(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void *lpm_mmap(size_t size) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    static inline void lpm_hugepage(void *p, size_t size) {
    #ifdef MADV_HUGEPAGE
        madvise(p, size, MADV_HUGEPAGE);
    #endif
    }
    /* Gives the pages back; the kernel zero-fills them on next touch. */
    static inline void lpm_zero(void *p, size_t size) { madvise(p, size, MADV_DONTNEED); }
    """
    const uint32_t EXT "LPM_EXT"
    void lpm_prefetch(const void *p) nogil
    void lpm_store(uint32_t *p, uint32_t v) nogil
    void *lpm_mmap(size_t size) nogil
    void lpm_hugepage(void *p, size_t size) nogil
    void lpm_zero(void *p, size_t size) nogil
    int munmap(void *p, size_t size) nogil

cdef enum:
    HUGE = 2 * 1024 * 1024
    CHUNK6 = 32            # v6 bulk: lookups walked level by level together (memory parallelism)
    PREFETCH4 = 64         # v4 bulk: keys ahead that tbl24 is prefetched (32..128 measured flat)

MAX_NEXTHOP = (1 << 24) - 1
MAX_GROUPS = 1 << 24


# ---------------------------------------------------------------------------------------------
# Memory

cdef int _map(lpm_region *m, size_t size) noexcept nogil:
    m.size = size + HUGE
    m.base = lpm_mmap(m.size)
    if m.base == NULL:
        return -1
    m.ptr = <void *>((<size_t>m.base + HUGE - 1) & ~(<size_t>HUGE - 1))
    lpm_hugepage(m.ptr, size)
    return 0


cdef void _unmap(lpm_region *m) noexcept nogil:
    if m.base != NULL:
        munmap(m.base, m.size)
        m.base = NULL


# ---------------------------------------------------------------------------------------------
# Keys: 128-bit big-endian (hi, lo); IPv4 sits in the top 32 bits of hi.

cdef inline uint32_t _byte(uint64_t hi, uint64_t lo, int k) noexcept nogil:
    if k < 8:
        return (hi >> (56 - 8 * k)) & 0xff
    return (lo >> (56 - 8 * (k - 8))) & 0xff


cdef inline uint64_t _mask64(int bits) noexcept nogil:
    """The top `bits` bits of a word set (bits clamped to [0, 64])."""
    if bits <= 0:
        return 0
    if bits >= 64:
        return <uint64_t>-1
    return (<uint64_t>-1) << (64 - bits)


cdef inline uint64_t _load_be64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | p[i]
    return v


# ---------------------------------------------------------------------------------------------
# Rules store

cdef inline size_t _hash(uint64_t hi, uint64_t lo, uint8_t depth) noexcept nogil:
    cdef uint64_t x = hi ^ (lo * 0x9E3779B97F4A7C15ULL) ^ (<uint64_t>depth * 0xC2B2AE3D27D4EB4FULL)
    x ^= x >> 33
    x *= 0xff51afd7ed558ccdULL
    x ^= x >> 33
    x *= 0xc4ceb9fe1a85ec53ULL
    x ^= x >> 33
    return <size_t>x


cdef lpm_rule *_rule_find(lpm_rules *r, uint64_t hi, uint64_t lo, int depth) noexcept nogil:
    cdef size_t mask = r.cap - 1
    cdef size_t i = _hash(hi, lo, depth) & mask
    cdef lpm_rule *s
    while True:
        s = &r.slots[i]
        if s.nexthop < 0:
            return NULL
        if s.hi == hi and s.lo == lo and s.depth == depth:
            return s
        i = (i + 1) & mask


cdef lpm_rule *_rule_slot(lpm_rules *r, uint64_t hi, uint64_t lo, int depth) noexcept nogil:
    """The slot holding the rule, or the empty slot where it belongs."""
    cdef size_t mask = r.cap - 1
    cdef size_t i = _hash(hi, lo, depth) & mask
    while r.slots[i].nexthop >= 0 and not (
            r.slots[i].hi == hi and r.slots[i].lo == lo and r.slots[i].depth == depth):
        i = (i + 1) & mask
    return &r.slots[i]


cdef int _rules_reserve(lpm_rules *r, size_t extra) noexcept nogil:
    """Make room for `extra` more rules (load factor <= 1/2); -1 if out of memory, r intact."""
    cdef size_t cap = r.cap if r.cap else 1024
    cdef size_t i
    cdef lpm_rule *old = r.slots
    cdef size_t old_cap = r.cap
    cdef lpm_rule *s
    while (r.n + extra) * 2 > cap:
        cap *= 2
    if cap == r.cap:
        return 0
    r.slots = <lpm_rule *>malloc(cap * sizeof(lpm_rule))
    if r.slots == NULL:
        r.slots = old
        return -1
    memset(r.slots, 0xff, cap * sizeof(lpm_rule))   # nexthop -1: empty
    r.cap = cap
    for i in range(old_cap):
        if old[i].nexthop >= 0:
            s = _rule_slot(r, old[i].hi, old[i].lo, old[i].depth)
            s[0] = old[i]
    free(old)
    return 0


cdef void _rule_delete(lpm_rules *r, lpm_rule *s) noexcept nogil:
    """Backward-shift deletion: keeps probe chains intact without tombstones."""
    cdef size_t mask = r.cap - 1
    cdef size_t i = s - r.slots
    cdef size_t j = i
    cdef size_t k
    r.per_depth[s.depth] -= 1
    r.n -= 1
    while True:
        j = (j + 1) & mask
        if r.slots[j].nexthop < 0:
            break
        k = _hash(r.slots[j].hi, r.slots[j].lo, r.slots[j].depth) & mask
        # Move j back into the hole at i unless its home k lies cyclically in (i, j].
        if (i <= j and (k <= i or k > j)) or (i > j and k <= i and k > j):
            r.slots[i] = r.slots[j]
            i = j
    r.slots[i].nexthop = -1


# ---------------------------------------------------------------------------------------------
# Trie engine. Level 0 is tbl24 (bits 0..23); level L >= 1 is a tbl8 group over bits
# 16+8L .. 23+8L, indexed by key byte L+2.

cdef inline uint32_t _level_end(int level) noexcept nogil:
    return 24 + 8 * level


cdef uint32_t _groups_free(lpm_trie *t) noexcept nogil:
    return t.n_free + (t.n_groups - t.next_group)


cdef uint32_t _groups_needed(lpm_trie *t, uint64_t hi, uint64_t lo, int depth) noexcept nogil:
    """How many tbl8 groups adding this prefix would allocate (checked before touching t)."""
    cdef int levels, level
    cdef uint32_t e
    if depth <= 24:
        return 0
    levels = (depth - 24 + 7) // 8
    e = t.tbl24[hi >> 40]
    for level in range(1, levels + 1):
        if not (e & EXT):
            return levels - level + 1
        e = t.tbl8[(<size_t>(e & ~EXT) << 8) | _byte(hi, lo, level + 2)]
    return 0


cdef uint32_t _group_alloc(lpm_trie *t, uint32_t fill, uint8_t depth) noexcept nogil:
    """A group with every entry = fill (what the entry it replaces resolved to)."""
    cdef uint32_t g
    cdef size_t i
    cdef uint32_t *ents
    if t.n_free:
        t.n_free -= 1
        g = t.free_groups[t.n_free]
    else:
        g = t.next_group
        t.next_group += 1
    t.used += 1
    ents = t.tbl8 + (<size_t>g << 8)
    for i in range(256):
        ents[i] = fill
    memset(t.dep8 + (<size_t>g << 8), depth, 256)
    return g


cdef void _cover(lpm_trie *t, uint32_t *ents, uint8_t *deps, size_t count,
                 int limit, uint32_t val, int vdepth) noexcept nogil:
    """Write (val, vdepth) over every entry in the range held by a route of depth <= limit,
    descending into groups: deeper routes keep their entries."""
    cdef size_t i
    cdef uint32_t e
    for i in range(count):
        e = ents[i]
        if e & EXT:
            _cover(t, t.tbl8 + (<size_t>(e & ~EXT) << 8), t.dep8 + (<size_t>(e & ~EXT) << 8),
                   256, limit, val, vdepth)
        elif deps[i] <= limit:
            deps[i] = vdepth
            lpm_store(&ents[i], val)


cdef bint _collapsible(lpm_trie *t, uint32_t g, int start) noexcept nogil:
    """True when every entry holds a route covering the whole group (depth <= start): they are
    then all the same route and the parent entry can hold it directly."""
    cdef uint32_t *ents = t.tbl8 + (<size_t>g << 8)
    cdef uint8_t *deps = t.dep8 + (<size_t>g << 8)
    cdef int i
    for i in range(256):
        if (ents[i] & EXT) or deps[i] > start:
            return False
    return True


cdef void _set(lpm_trie *t, uint64_t hi, uint64_t lo, int depth, uint32_t val, int vdepth,
               bint deleting, int level, uint32_t *ents, uint8_t *deps) noexcept nogil:
    """Apply the prefix (hi, lo)/depth at `level`: entries it owns (depth <= its own) become
    (val, vdepth). Adding passes its own nexthop and depth; deleting passes the covering route's.
    The caller has ensured enough free groups."""
    cdef uint32_t end = _level_end(level)
    cdef size_t idx = (hi >> 40) if level == 0 else _byte(hi, lo, level + 2)
    cdef uint32_t e, g
    if <uint32_t>depth <= end:
        _cover(t, ents + idx, deps + idx, (<size_t>1) << (end - depth), depth, val, vdepth)
        return
    e = ents[idx]
    if e & EXT:
        g = e & ~EXT
        _set(t, hi, lo, depth, val, vdepth, deleting, level + 1,
             t.tbl8 + (<size_t>g << 8), t.dep8 + (<size_t>g << 8))
        # Only a delete can leave a group without routes deeper than its parent entry.
        if deleting and _collapsible(t, g, end):
            deps[idx] = t.dep8[<size_t>g << 8]
            lpm_store(&ents[idx], t.tbl8[<size_t>g << 8])
            t.free_groups[t.n_free] = g
            t.n_free += 1
            t.used -= 1
    else:
        g = _group_alloc(t, e, deps[idx])
        _set(t, hi, lo, depth, val, vdepth, deleting, level + 1,
             t.tbl8 + (<size_t>g << 8), t.dep8 + (<size_t>g << 8))
        lpm_store(&ents[idx], EXT | g)       # publish only once the group is complete


# ---------------------------------------------------------------------------------------------
# Python boundary helpers

cdef int32_t _nexthop(object nexthop) except -1:
    try:
        nh = operator.index(nexthop)
    except TypeError:
        raise ValueError(f"nexthop must be an int, not {type(nexthop).__name__}") from None
    if not 0 <= nh <= MAX_NEXTHOP:
        raise ValueError(f"nexthop {nexthop!r} out of range [0, {MAX_NEXTHOP}]")
    return nh


def _network(prefix, int version):
    if isinstance(prefix, str):
        try:
            net = ipaddress.ip_network(prefix, strict=True)
        except ValueError as exc:
            raise ValueError(f"bad prefix {prefix!r}: {exc}") from None
    elif isinstance(prefix, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        net = prefix
    else:
        raise TypeError(f"prefix must be a str or ipaddress network, not {type(prefix).__name__}")
    if net.version != version:
        raise ValueError(f"{prefix!r} is not an IPv{version} prefix")
    return int(net.network_address), net.prefixlen


def _address(addr, int version):
    bits = 32 if version == 4 else 128
    if isinstance(addr, int):
        if not 0 <= addr < (1 << bits):
            raise ValueError(f"address {addr} out of range for IPv{version}")
        return addr
    if isinstance(addr, str):
        try:
            addr = ipaddress.ip_address(addr)
        except ValueError as exc:
            raise ValueError(f"bad address: {exc}") from None
    if isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        if addr.version != version:
            raise ValueError(f"{addr} is not an IPv{version} address")
        return int(addr)
    raise TypeError(f"address must be a str, int or ipaddress address, not {type(addr).__name__}")


def _int_array(a, name):
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a 1-D integer array")
    return a


def _bulk_routes(n, depths, nexthops, max_depth):
    """add_bulk's depths and next hops as checked integer arrays for n routes; (None, None) when
    there are none."""
    depths = _int_array(depths, "depths")
    nexthops = _int_array(nexthops, "nexthops")
    if depths.shape[0] != n or nexthops.shape[0] != n:
        raise ValueError("addrs, depths and nexthops must have the same length")
    if n == 0:
        return None, None
    if depths.min() < 0 or depths.max() > max_depth:
        raise ValueError(f"depths must be in [0, {max_depth}]")
    if nexthops.min() < 0 or nexthops.max() > MAX_NEXTHOP:
        raise ValueError(f"nexthops must be in [0, {MAX_NEXTHOP}]")
    return depths, nexthops


def _out_array(out, Py_ssize_t n):
    if out is None:
        return np.empty(n, dtype=np.int32)
    if not isinstance(out, np.ndarray) or out.dtype != np.int32 or out.shape != (n,) \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out must be a writable contiguous numpy.int32 array of shape ({n},)")
    return out


# ---------------------------------------------------------------------------------------------

cdef class _LPMBase:
    """Shared storage and add/delete; subclasses fix the key width and the lookup."""

    def __cinit__(self, *args, **kwargs):
        if type(self) is _LPMBase:
            raise TypeError("use LPM4 or LPM6")

    cdef _setup(self, max_tbl8_groups):
        if not 1 <= max_tbl8_groups <= MAX_GROUPS:
            raise ValueError(f"max_tbl8_groups must be in [1, {MAX_GROUPS}]")
        self.t.n_groups = max_tbl8_groups
        cdef size_t n8 = <size_t>max_tbl8_groups << 8
        if (_map(&self.t.m24, (<size_t>1 << 24) * 4) or _map(&self.t.md24, <size_t>1 << 24)
                or _map(&self.t.m8, n8 * 4) or _map(&self.t.md8, n8)):
            raise MemoryError("cannot map LPM tables")
        self.t.tbl24 = <uint32_t *>self.t.m24.ptr
        self.t.dep24 = <uint8_t *>self.t.md24.ptr
        self.t.tbl8 = <uint32_t *>self.t.m8.ptr
        self.t.dep8 = <uint8_t *>self.t.md8.ptr
        self.t.free_groups = <uint32_t *>malloc(max_tbl8_groups * sizeof(uint32_t))
        if self.t.free_groups == NULL or _rules_reserve(&self.r, 0):
            raise MemoryError()

    def __dealloc__(self):
        _unmap(&self.t.m24)
        _unmap(&self.t.md24)
        _unmap(&self.t.m8)
        _unmap(&self.t.md8)
        free(self.t.free_groups)
        free(self.r.slots)

    def __len__(self):
        return self.r.n

    @property
    def tbl8_used(self):
        """tbl8 groups in use (each 1 KiB of lookup table)."""
        return self.t.used

    @property
    def tbl8_capacity(self):
        return self.t.n_groups

    def clear(self):
        """Remove every route; the table memory goes back to the kernel."""
        lpm_zero(self.t.tbl24, (<size_t>1 << 24) * 4)
        lpm_zero(self.t.dep24, <size_t>1 << 24)
        lpm_zero(self.t.tbl8, (<size_t>self.t.next_group << 8) * 4)
        lpm_zero(self.t.dep8, <size_t>self.t.next_group << 8)
        self.t.next_group = self.t.n_free = self.t.used = 0
        memset(self.r.slots, 0xff, self.r.cap * sizeof(lpm_rule))
        memset(self.r.per_depth, 0, sizeof(self.r.per_depth))
        self.r.n = 0

    cdef void _insert(self, uint64_t hi, uint64_t lo, int depth, int32_t nexthop) noexcept nogil:
        """Add or replace a masked prefix. Caller guarantees a reserved rule slot and enough
        free groups (_groups_needed), so nothing here can fail half-way."""
        cdef lpm_rule *s = _rule_slot(&self.r, hi, lo, depth)
        if s.nexthop < 0:
            s.hi = hi
            s.lo = lo
            s.depth = depth
            self.r.n += 1
            self.r.per_depth[depth] += 1
        s.nexthop = nexthop
        _set(&self.t, hi, lo, depth, <uint32_t>nexthop + 1, depth, False, 0,
             self.t.tbl24, self.t.dep24)

    cdef int _remove(self, uint64_t hi, uint64_t lo, int depth) noexcept nogil:
        """Delete a masked prefix and restore the longest covering route; -1 if absent."""
        cdef lpm_rule *s = _rule_find(&self.r, hi, lo, depth)
        cdef lpm_rule *cover = NULL
        cdef int d
        if s == NULL:
            return -1
        _rule_delete(&self.r, s)
        for d in range(depth - 1, -1, -1):
            if self.r.per_depth[d]:
                cover = _rule_find(&self.r, hi & _mask64(d), lo & _mask64(d - 64), d)
                if cover != NULL:
                    break
        if cover != NULL:
            _set(&self.t, hi, lo, depth, <uint32_t>cover.nexthop + 1, d, True, 0,
                 self.t.tbl24, self.t.dep24)
        else:
            _set(&self.t, hi, lo, depth, 0, 0, True, 0, self.t.tbl24, self.t.dep24)
        return 0

    cdef _add_key(self, uint64_t hi, uint64_t lo, int depth, int32_t nexthop):
        if _groups_needed(&self.t, hi, lo, depth) > _groups_free(&self.t):
            raise OverflowError(f"LPM table full: all {self.t.n_groups} tbl8 groups in use")
        if _rules_reserve(&self.r, 1):
            raise MemoryError("cannot grow the LPM rules store")
        self._insert(hi, lo, depth, nexthop)

    cdef _add_keys(self, const uint64_t *hi, const uint64_t *lo, const uint8_t *depth,
                   const int32_t *nexthop, size_t n):
        """Bulk add of validated, masked keys (lo may be NULL for IPv4). Keeps the GIL: a
        second Python thread adding at the same time would be a second writer."""
        cdef size_t i = 0
        cdef uint64_t l = 0
        if _rules_reserve(&self.r, n):
            raise MemoryError("cannot grow the LPM rules store")
        while i < n:
            if lo != NULL:
                l = lo[i]
            if _groups_needed(&self.t, hi[i], l, depth[i]) > _groups_free(&self.t):
                break
            self._insert(hi[i], l, depth[i], nexthop[i])
            i += 1
        if i < n:
            raise OverflowError(f"LPM table full: all {self.t.n_groups} tbl8 groups in use "
                                f"after adding {i} of {n} routes (those stay added)")


cdef class LPM4(_LPMBase):
    """IPv4 longest-prefix match, DIR-24-8: one load for routes up to /24, two beyond.

    Holds 1M+ global-table routes with the default 65536 tbl8 groups (a /24 with any longer
    route inside takes one group). Reserves 160 MiB of address space (tables plus control-plane
    depths), backed only where touched.
    """

    def __cinit__(self, max_tbl8_groups=65536):
        self._setup(max_tbl8_groups)

    cdef int32_t lookup_c(self, uint32_t addr) noexcept nogil:
        cdef uint32_t e = self.t.tbl24[addr >> 8]
        if e & EXT:
            e = self.t.tbl8[(<size_t>(e & ~EXT) << 8) | (addr & 0xff)]
        return <int32_t>e - 1

    cdef void lookup_bulk_c(self, const uint32_t *addrs, int32_t *out, uint32_t n) noexcept nogil:
        cdef const uint32_t *t24 = self.t.tbl24
        cdef const uint32_t *t8 = self.t.tbl8
        cdef uint32_t i = 0
        cdef uint32_t e0, e1, e2, e3, a0, a1, a2, a3
        while i + 4 <= n:
            if i + PREFETCH4 + 4 <= n:
                lpm_prefetch(&t24[addrs[i + PREFETCH4] >> 8])
                lpm_prefetch(&t24[addrs[i + PREFETCH4 + 1] >> 8])
                lpm_prefetch(&t24[addrs[i + PREFETCH4 + 2] >> 8])
                lpm_prefetch(&t24[addrs[i + PREFETCH4 + 3] >> 8])
            a0 = addrs[i]
            a1 = addrs[i + 1]
            a2 = addrs[i + 2]
            a3 = addrs[i + 3]
            e0 = t24[a0 >> 8]
            e1 = t24[a1 >> 8]
            e2 = t24[a2 >> 8]
            e3 = t24[a3 >> 8]
            if (e0 | e1 | e2 | e3) & EXT:      # rare: some key has a route longer than /24
                if e0 & EXT:
                    e0 = t8[(<size_t>(e0 & ~EXT) << 8) | (a0 & 0xff)]
                if e1 & EXT:
                    e1 = t8[(<size_t>(e1 & ~EXT) << 8) | (a1 & 0xff)]
                if e2 & EXT:
                    e2 = t8[(<size_t>(e2 & ~EXT) << 8) | (a2 & 0xff)]
                if e3 & EXT:
                    e3 = t8[(<size_t>(e3 & ~EXT) << 8) | (a3 & 0xff)]
            out[i] = <int32_t>e0 - 1
            out[i + 1] = <int32_t>e1 - 1
            out[i + 2] = <int32_t>e2 - 1
            out[i + 3] = <int32_t>e3 - 1
            i += 4
        while i < n:
            out[i] = self.lookup_c(addrs[i])
            i += 1

    def add(self, prefix, nexthop):
        """Add "a.b.c.d/len" (or an IPv4Network) -> nexthop; re-adding replaces the nexthop."""
        addr, depth = _network(prefix, 4)
        self._add_key(<uint64_t>addr << 32, 0, depth, _nexthop(nexthop))

    def delete(self, prefix):
        """Remove a prefix (KeyError if absent); its range falls back to the covering route."""
        addr, depth = _network(prefix, 4)
        if self._remove(<uint64_t>addr << 32, 0, depth):
            raise KeyError(prefix)

    def lookup(self, addr):
        """Nexthop of the longest matching prefix, -1 if none. addr: str, int or IPv4Address."""
        return self.lookup_c(_address(addr, 4))

    def lookup_bulk(self, addrs, out=None):
        """Nexthops (int32, -1 = no route) for a 1-D numpy.uint32 array of host-order addresses.
        `out` (int32, same length) avoids an allocation per call."""
        if not isinstance(addrs, np.ndarray) or addrs.dtype != np.uint32 or addrs.ndim != 1:
            raise ValueError("addrs must be a 1-D numpy.uint32 array (host byte order)")
        if addrs.shape[0] > UINT32_MAX:
            raise ValueError("at most 2**32-1 addresses per call")
        cdef const uint32_t[::1] a = np.ascontiguousarray(addrs)
        result = _out_array(out, a.shape[0])
        cdef int32_t[::1] o = result
        cdef uint32_t n = a.shape[0]
        if n:
            with nogil:
                self.lookup_bulk_c(&a[0], &o[0], n)
        return result

    def add_bulk(self, addrs, depths, nexthops):
        """Add many routes at once: addrs (numpy.uint32, host order, host bits clear), depths
        (0..32) and nexthops (0..2**24-1), all 1-D of one length. Everything is validated
        before the table is touched; only running out of tbl8 groups can stop part-way."""
        if not isinstance(addrs, np.ndarray) or addrs.dtype != np.uint32 or addrs.ndim != 1:
            raise ValueError("addrs must be a 1-D numpy.uint32 array (host byte order)")
        depths, nexthops = _bulk_routes(addrs.shape[0], depths, nexthops, 32)
        if depths is None:
            return
        n = addrs.shape[0]
        hi = addrs.astype(np.uint64) << np.uint64(32)
        d = depths.astype(np.uint8)
        bad = np.flatnonzero(hi & ~_top_bits(d))
        if bad.size:
            i = bad[0]
            raise ValueError(f"route {i}: {ipaddress.IPv4Address(int(addrs[i]))}/{d[i]} "
                             "has host bits set")
        cdef const uint64_t[::1] h = hi
        cdef const uint8_t[::1] dv = d
        cdef const int32_t[::1] nv = nexthops.astype(np.int32)
        self._add_keys(&h[0], NULL, &dv[0], &nv[0], n)


def _top_bits(d):
    """uint64 words with the top d bits set (d: integer array, clamped to [0, 64])."""
    d = np.clip(d.astype(np.int64), 0, 64).astype(np.uint64)
    full = np.uint64(0xFFFFFFFFFFFFFFFF)
    # A shift by 64 is undefined, so the d == 0 case is selected separately.
    return np.where(d == 0, np.uint64(0), full << (np.uint64(64) - np.maximum(d, np.uint64(1))))


cdef class LPM6(_LPMBase):
    """IPv6 longest-prefix match: tbl24 on the first 3 bytes, then one tbl8 group per further
    byte (at most 14 loads; a /48 takes 4).

    The default 524288 tbl8 groups (720 MiB of address space reserved, backed only where
    touched) hold a 200k-route global-like table (~300k groups) with room to spare.
    """

    def __cinit__(self, max_tbl8_groups=1 << 19):
        self._setup(max_tbl8_groups)

    cdef int32_t lookup_c(self, const uint8_t *addr) noexcept nogil:
        cdef uint32_t e = self.t.tbl24[(<uint32_t>addr[0] << 16) | (<uint32_t>addr[1] << 8) | addr[2]]
        cdef int k = 3
        while e & EXT:    # never past byte 15: groups at the last level hold no links
            e = self.t.tbl8[(<size_t>(e & ~EXT) << 8) | addr[k]]
            k += 1
        return <int32_t>e - 1

    cdef void lookup_bulk_c(self, const uint8_t *addrs, int32_t *out, uint32_t n) noexcept nogil:
        # Walk a chunk level by level so its independent cache misses overlap.
        cdef const uint32_t *t24 = self.t.tbl24
        cdef const uint32_t *t8 = self.t.tbl8
        cdef uint32_t e[CHUNK6]
        cdef uint32_t base = 0, m, j, pending
        cdef const uint8_t *p
        cdef int k
        while base < n:
            m = n - base if n - base < CHUNK6 else CHUNK6
            p = addrs + <size_t>base * 16
            pending = 0
            for j in range(m):
                e[j] = t24[(<uint32_t>p[16 * j] << 16) | (<uint32_t>p[16 * j + 1] << 8) | p[16 * j + 2]]
                pending |= e[j]
            k = 3
            while pending & EXT:
                pending = 0
                for j in range(m):
                    if e[j] & EXT:
                        e[j] = t8[(<size_t>(e[j] & ~EXT) << 8) | p[16 * j + k]]
                        pending |= e[j]
                k += 1
            for j in range(m):
                out[base + j] = <int32_t>e[j] - 1
            base += m

    def add(self, prefix, nexthop):
        """Add "2001:db8::/32" (or an IPv6Network) -> nexthop; re-adding replaces the nexthop."""
        addr, depth = _network(prefix, 6)
        self._add_key(addr >> 64, addr & 0xFFFFFFFFFFFFFFFF, depth, _nexthop(nexthop))

    def delete(self, prefix):
        """Remove a prefix (KeyError if absent); its range falls back to the covering route."""
        addr, depth = _network(prefix, 6)
        if self._remove(addr >> 64, addr & 0xFFFFFFFFFFFFFFFF, depth):
            raise KeyError(prefix)

    def lookup(self, addr):
        """Nexthop of the longest matching prefix, -1 if none. addr: str, int or IPv6Address."""
        cdef bytes b = _address(addr, 6).to_bytes(16, "big")
        return self.lookup_c(<const uint8_t *><char *>b)

    def lookup_bulk(self, addrs, out=None):
        """Nexthops (int32, -1 = no route) for an (N, 16) numpy.uint8 array of addresses in
        network order. `out` (int32, length N) avoids an allocation per call."""
        _check_v6_keys(addrs)
        if addrs.shape[0] > UINT32_MAX:
            raise ValueError("at most 2**32-1 addresses per call")
        cdef const uint8_t[:, ::1] a = np.ascontiguousarray(addrs)
        result = _out_array(out, a.shape[0])
        cdef int32_t[::1] o = result
        cdef uint32_t n = a.shape[0]
        if n:
            with nogil:
                self.lookup_bulk_c(&a[0, 0], &o[0], n)
        return result

    def add_bulk(self, addrs, depths, nexthops):
        """Add many routes at once: addrs ((N, 16) numpy.uint8, network order, host bits
        clear), depths (0..128), nexthops (0..2**24-1). Everything is validated before the
        table is touched; only running out of tbl8 groups can stop part-way."""
        _check_v6_keys(addrs)
        depths, nexthops = _bulk_routes(addrs.shape[0], depths, nexthops, 128)
        if depths is None:
            return
        n = addrs.shape[0]
        words = np.ascontiguousarray(addrs).view(">u8").astype(np.uint64)   # (N, 2) hi, lo
        hi = np.ascontiguousarray(words[:, 0])
        lo = np.ascontiguousarray(words[:, 1])
        d = depths.astype(np.uint8)
        bad = np.flatnonzero((hi & ~_top_bits(d)) | (lo & ~_top_bits(d.astype(np.int16) - 64)))
        if bad.size:
            i = bad[0]
            raise ValueError(f"route {i}: {ipaddress.IPv6Address(bytes(addrs[i]))}/{d[i]} "
                             "has host bits set")
        cdef const uint64_t[::1] h = hi
        cdef const uint64_t[::1] l = lo
        cdef const uint8_t[::1] dv = d
        cdef const int32_t[::1] nv = nexthops.astype(np.int32)
        self._add_keys(&h[0], &l[0], &dv[0], &nv[0], n)


def _check_v6_keys(addrs):
    if not isinstance(addrs, np.ndarray) or addrs.dtype != np.uint8 or addrs.ndim != 2 \
            or addrs.shape[1] != 16:
        raise ValueError("addrs must be an (N, 16) numpy.uint8 array (network byte order)")
