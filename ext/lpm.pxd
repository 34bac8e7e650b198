# Longest-prefix match tables. Contract used by the route stage (ext/route.pyx):
# next hops are ints in [0, 2**24); -1 means "no route".
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t

# One anonymous mapping (2 MiB aligned so THP can back it with huge pages).
ctypedef struct lpm_region:
    void *base               # what mmap returned, for munmap
    size_t size              # mapped length
    void *ptr                # aligned start

# DIR-24-8 generalised to 128 bits: tbl24 indexed by the first 24 bits, then chains of 256-entry
# tbl8 groups, one per further byte. Entry: bit 31 set -> group index in bits 0..30; otherwise
# nexthop + 1 (0 = no route), so a lookup ends with `entry - 1`. The depth of the route an entry
# holds is only needed by add/delete and lives in parallel uint8 arrays, off the lookup path.
ctypedef struct lpm_trie:
    uint32_t *tbl24
    uint8_t *dep24
    uint32_t *tbl8           # n_groups * 256 entries
    uint8_t *dep8
    uint32_t *free_groups    # stack of recycled group indices
    uint32_t n_free
    uint32_t n_groups        # capacity
    uint32_t next_group      # groups [0, next_group) have been handed out at least once
    uint32_t used            # groups in use
    lpm_region m24, md24, m8, md8

# Rules store: open addressing (linear probing, backward-shift delete) keyed by
# (masked prefix as two big-endian words, depth). It is the source of truth that delete()
# consults to find the covering prefix whose entries must be restored.
ctypedef struct lpm_rule:
    uint64_t hi
    uint64_t lo
    int32_t nexthop          # -1 marks an empty slot
    uint8_t depth

ctypedef struct lpm_rules:
    lpm_rule *slots
    size_t cap               # power of two
    size_t n
    uint32_t per_depth[129]  # lets the covering-prefix search skip empty depths

cdef class _LPMBase:
    cdef lpm_trie t
    cdef lpm_rules r
    cdef _setup(self, max_tbl8_groups)
    cdef void _insert(self, uint64_t hi, uint64_t lo, int depth, int32_t nexthop) noexcept nogil
    cdef int _remove(self, uint64_t hi, uint64_t lo, int depth) noexcept nogil
    cdef _add_key(self, uint64_t hi, uint64_t lo, int depth, int32_t nexthop)
    cdef _add_keys(self, const uint64_t *hi, const uint64_t *lo, const uint8_t *depth,
                   const int32_t *nexthop, size_t n)

cdef class LPM4(_LPMBase):
    cdef int32_t lookup_c(self, uint32_t addr) noexcept nogil          # addr in host order
    cdef void lookup_bulk_c(self, const uint32_t *addrs, int32_t *out, uint32_t n) noexcept nogil

cdef class LPM6(_LPMBase):
    cdef int32_t lookup_c(self, const uint8_t *addr) noexcept nogil    # 16 bytes, network order
    cdef void lookup_bulk_c(self, const uint8_t *addrs, int32_t *out, uint32_t n) noexcept nogil  # n*16 bytes
