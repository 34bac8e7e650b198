# Small CIDR sets (cluster CIDRs, non-masquerade CIDRs, loadBalancerSourceRanges): a handful of
# prefixes, matched linearly with masks. Addresses are pkt_tuple words (network byte order).
from libc.stdint cimport uint8_t, uint32_t
from dataplane.includes.bytes cimport bswap32

ctypedef struct cidr_t:
    uint32_t addr[4]       # network order words, host bits zero
    uint32_t mask[4]       # network order words
    uint8_t family         # 4 or 6

cdef inline bint cidr_match(const cidr_t *c, const uint32_t *addr, uint8_t family) noexcept nogil:
    if c.family != family:
        return False
    if family == 4:
        return (addr[0] & c.mask[0]) == c.addr[0]
    return ((addr[0] & c.mask[0]) == c.addr[0] and (addr[1] & c.mask[1]) == c.addr[1]
            and (addr[2] & c.mask[2]) == c.addr[2] and (addr[3] & c.mask[3]) == c.addr[3])

cdef inline bint cidr_set_match(const cidr_t *set, uint32_t n, const uint32_t *addr,
                                uint8_t family) noexcept nogil:
    cdef uint32_t k
    for k in range(n):
        if cidr_match(&set[k], addr, family):
            return True
    return False
