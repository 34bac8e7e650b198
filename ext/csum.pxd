# Internet checksums (RFC 1071) and their incremental updates (RFC 1624), inline so route, NAT and
# ICMP generation pay no call overhead.
#
# Conventions: a checksum is the uint16 host-order value of the header field (what load_be16
# returns there). 16-bit field values (ports, ICMP ids) are host order; 32-bit and 128-bit
# addresses are passed as they sit in the packet and in pkt_tuple (network byte order).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from dataplane.includes.bytes cimport load_be16, load_be32, store_be16

cdef enum:
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    IPPROTO_ICMPV6 = 58


cdef inline uint64_t csum_add(const uint8_t *p, size_t n, uint64_t acc) noexcept nogil:
    """Add n bytes as big-endian 16-bit words to a running sum. 32-bit big-endian words are summed
    whole: 2**16 == 1 (mod 0xffff), so the fold gives the same result with half the adds. Only the
    last chunk of a multi-chunk sum may have an odd length (its tail byte is padded with zero)."""
    cdef size_t i = 0
    while i + 8 <= n:
        acc += <uint64_t>load_be32(p + i) + load_be32(p + i + 4)
        i += 8
    if i + 4 <= n:
        acc += load_be32(p + i)
        i += 4
    if i + 2 <= n:
        acc += load_be16(p + i)
        i += 2
    if i < n:
        acc += <uint32_t>p[i] << 8
    return acc


cdef inline uint16_t csum_fold(uint64_t acc) noexcept nogil:
    """One's-complement sum folded to 16 bits with end-around carries (not complemented)."""
    cdef uint64_t lo32 = 0xffffffffU
    acc = (acc & lo32) + (acc >> 32)
    acc = (acc & lo32) + (acc >> 32)
    acc = (acc & 0xffff) + (acc >> 16)
    acc = (acc & 0xffff) + (acc >> 16)
    return <uint16_t>acc


cdef inline uint16_t csum_buf(const uint8_t *p, size_t n) noexcept nogil:
    """Checksum of a buffer: complement of its one's-complement sum."""
    return <uint16_t>~csum_fold(csum_add(p, n, 0))


cdef inline uint16_t ip4_hdr_csum(const uint8_t *ip, size_t hlen) noexcept nogil:
    """Header checksum for an IPv4 header of hlen bytes, skipping the checksum field itself."""
    return <uint16_t>~csum_fold(csum_add(ip + 12, hlen - 12, csum_add(ip, 10, 0)))


cdef inline bint ip4_hdr_csum_ok(const uint8_t *ip, size_t hlen) noexcept nogil:
    """A correct header, checksum field included, sums to -0 (0xffff)."""
    return csum_fold(csum_add(ip, hlen, 0)) == 0xffff


cdef inline uint64_t pseudo4(const uint8_t *ip, uint8_t proto, uint32_t l4len) noexcept nogil:
    """IPv4 pseudo-header sum: addresses (ip + 12, 8 bytes), protocol, L4 length."""
    return csum_add(ip + 12, 8, 0) + proto + l4len


cdef inline uint64_t pseudo6(const uint8_t *ip6, uint8_t proto, uint32_t l4len) noexcept nogil:
    """IPv6 pseudo-header sum from the fixed header's addresses. With a routing header the
    destination must be the final one: build that sum with csum_add instead."""
    return csum_add(ip6 + 8, 32, 0) + proto + l4len


cdef inline size_t l4_check_off(uint8_t proto) noexcept nogil:
    """Offset of the checksum field in a TCP/UDP/ICMP/ICMPv6 header."""
    if proto == IPPROTO_TCP:
        return 16
    if proto == IPPROTO_UDP:
        return 6
    return 2


cdef inline uint16_t l4_csum(uint64_t pseudo, const uint8_t *l4, size_t n, uint8_t proto) noexcept nogil:
    """L4 checksum over n bytes plus a pseudo-header sum, as if the checksum field were zero:
    adding ~field cancels the field out, so the packet need not be modified first. A computed
    UDP checksum of 0 is sent as 0xffff, since 0 means "no checksum" (RFC 768)."""
    cdef uint16_t old = load_be16(l4 + l4_check_off(proto))
    cdef uint16_t c = <uint16_t>~csum_fold(csum_add(l4, n, pseudo) + <uint16_t>~old)
    if c == 0 and proto == IPPROTO_UDP:
        return 0xffff
    return c


cdef inline uint16_t ip4_l4_csum(const uint8_t *ip, const uint8_t *l4, size_t n, uint8_t proto) noexcept nogil:
    """TCP/UDP (pseudo-header) or ICMP (none) checksum of an IPv4 packet's n L4 bytes."""
    return l4_csum(0 if proto == IPPROTO_ICMP else pseudo4(ip, proto, <uint32_t>n), l4, n, proto)


cdef inline uint16_t ip6_l4_csum(const uint8_t *ip6, const uint8_t *l4, size_t n, uint8_t proto) noexcept nogil:
    """TCP/UDP/ICMPv6 checksum of an IPv6 packet's n L4 bytes (all use the pseudo-header)."""
    return l4_csum(pseudo6(ip6, proto, <uint32_t>n), l4, n, proto)


# RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): unlike eqn. 2 (HC - ~m - m') it never yields -0 (0xffff)
# where a full recomputation gives +0.
cdef inline uint16_t csum_update16(uint16_t check, uint16_t old, uint16_t new) noexcept nogil:
    return <uint16_t>~csum_fold(<uint64_t><uint16_t>~check + <uint16_t>~old + new)


cdef inline uint16_t csum_update32(uint16_t check, uint32_t old, uint32_t new) noexcept nogil:
    """old/new are host-order 32-bit values; ~old as one 32-bit word is ~hi:~lo, same fold."""
    return <uint16_t>~csum_fold(<uint64_t><uint16_t>~check + <uint32_t>~old + new)


cdef inline uint16_t csum_update128(uint16_t check, const uint8_t *old, const uint8_t *new) noexcept nogil:
    """old/new point at 16-byte IPv6 addresses."""
    cdef uint64_t acc = <uint16_t>~check
    cdef int k
    for k in range(0, 16, 4):
        acc += <uint32_t>~load_be32(old + k) + <uint64_t>load_be32(new + k)
    return <uint16_t>~csum_fold(acc)


# In-place helpers for rewrite stages: `check` points at the checksum field in the packet.
cdef inline void csum_replace2(uint8_t *check, uint16_t old, uint16_t new) noexcept nogil:
    store_be16(check, csum_update16(load_be16(check), old, new))


cdef inline void csum_replace4(uint8_t *check, uint32_t old, uint32_t new) noexcept nogil:
    """old/new: addresses in network byte order, as in pkt_tuple.saddr[0]."""
    store_be16(check, csum_update32(load_be16(check), load_be32(<uint8_t *>&old),
                                    load_be32(<uint8_t *>&new)))


cdef inline void csum_replace16(uint8_t *check, const uint8_t *old, const uint8_t *new) noexcept nogil:
    store_be16(check, csum_update128(load_be16(check), old, new))


# UDP: a zero field means the sender sent no checksum (IPv4), which must stay zero; an update that
# lands on 0 is sent as 0xffff (the same value in one's complement).
cdef inline void udp_csum_replace2(uint8_t *check, uint16_t old, uint16_t new) noexcept nogil:
    if load_be16(check) != 0:
        csum_replace2(check, old, new)
        if load_be16(check) == 0:
            store_be16(check, 0xffff)


cdef inline void udp_csum_replace4(uint8_t *check, uint32_t old, uint32_t new) noexcept nogil:
    if load_be16(check) != 0:
        csum_replace4(check, old, new)
        if load_be16(check) == 0:
            store_be16(check, 0xffff)


cdef inline void udp_csum_replace16(uint8_t *check, const uint8_t *old, const uint8_t *new) noexcept nogil:
    if load_be16(check) != 0:
        csum_replace16(check, old, new)
        if load_be16(check) == 0:
            store_be16(check, 0xffff)
