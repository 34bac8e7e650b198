# Longest-prefix match tables. Contract used by the route stage (ext/route.pyx):
# next hops are ints in [0, 2**24); -1 means "no route".
from libc.stdint cimport uint8_t, uint32_t, int32_t

cdef class LPM4:
    # (implementation fields are declared by the implementation)
    cdef int32_t lookup_c(self, uint32_t addr) noexcept nogil          # addr in host order
    cdef void lookup_bulk_c(self, const uint32_t *addrs, int32_t *out, uint32_t n) noexcept nogil

cdef class LPM6:
    cdef int32_t lookup_c(self, const uint8_t *addr) noexcept nogil    # 16 bytes, network order
    cdef void lookup_bulk_c(self, const uint8_t *addrs, int32_t *out, uint32_t n) noexcept nogil  # n*16 bytes
