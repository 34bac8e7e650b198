"""Service NAT: rewrite a packet to the tuple conntrack chose, reverse-translate ICMP errors about
NATed flows, and build the frames kube-proxy's REJECT sends (TCP RST, ICMP unreachable), plus the
route stage's time exceeded.

Rewrites follow Linux nf_nat (nf_nat_ipv4_manip_pkt, {tcp,udp,sctp,icmp}_manip_pkt,
nf_nat_icmp_reply_translation): RFC 1624 checksum updates for exactly the fields that changed,
UDP's "no checksum" zero kept, SCTP's CRC32c recomputed. A quoted packet inside an ICMP error is
rewritten the same way, except that its L4 checksum is only touched when the quote reaches it,
and every word changed inside the quote is also folded into the ICMP checksum that covers it.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memmove, memcmp, memset

from dataplane.includes.pkt cimport (
    burst_t, pkt_meta, pkt_tuple, pkt_data, L3_IP4, L3_IP6, PKT_F_L4, PKT_F_FRAGMENT,
    PKT_F_LATER_FRAG, PKT_F_ICMP_ERROR, PKT_F_INNER_L4, PKT_F_CSUM_PARTIAL,
)
from dataplane.includes.bytes cimport (
    load_be16, load_be32, load_u32, store_be16, store_be32, store_u32,
)
from dataplane.csum cimport (
    IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, csum_update32, csum_update128,
    csum_replace2, csum_replace4, csum_replace16, udp_csum_replace2, udp_csum_replace4,
    udp_csum_replace16, ip4_hdr_csum, ip4_l4_csum, ip6_l4_csum,
)
from dataplane.burst cimport Burst

import ipaddress

__all__ = ["rewrite", "rewrite_all", "rewrite_icmp_error", "tcp_rst", "icmp_unreach",
           "icmp_time_exceeded", "sctp_crc32c"]

cdef extern from *:
    """
    #ifndef DATAPLANE_CRC32C
    #define DATAPLANE_CRC32C
    #include <stdint.h>
    #include <string.h>
    #if defined(__SSE4_2__)
    #include <nmmintrin.h>
    static void dp_crc32c_init(void) {}
    static uint32_t dp_crc32c(uint32_t crc, const uint8_t *p, size_t n) {
        uint64_t w;
        for (; n >= 8; p += 8, n -= 8) { memcpy(&w, p, 8); crc = (uint32_t)_mm_crc32_u64(crc, w); }
        for (; n; p++, n--) crc = _mm_crc32_u8(crc, *p);
        return crc;
    }
    #else
    /* Reflected Castagnoli polynomial, one table lookup per byte. */
    static uint32_t dp_crc32c_table[256];
    static void dp_crc32c_init(void) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
            dp_crc32c_table[i] = c;
        }
    }
    static uint32_t dp_crc32c(uint32_t crc, const uint8_t *p, size_t n) {
        for (; n; p++, n--) crc = (crc >> 8) ^ dp_crc32c_table[(crc ^ *p) & 0xff];
        return crc;
    }
    #endif
    #endif
    """
    void dp_crc32c_init() nogil
    uint32_t dp_crc32c(uint32_t crc, const uint8_t *p, size_t n) nogil

dp_crc32c_init()

cdef enum:
    IPPROTO_SCTP = 132
    ETH_HLEN = 14
    MAX_L2 = 22                # Ethernet + two VLAN tags, as the parser accepts
    TTL_DEFAULT = 64
    TH_FIN = 0x01
    TH_SYN = 0x02
    TH_RST = 0x04
    TH_ACK = 0x10
    IP4_ERR_MAX = 576          # RFC 1812 4.3.2.3: an ICMP error datagram is at most 576 bytes
    IP6_ERR_MAX = 1280         # RFC 4443 2.4(c): the IPv6 minimum MTU

# How a field change reaches an L4 checksum.
cdef enum:
    CK_NONE = 0                # not covered (or nothing to update)
    CK_FULL = 1                # a complete checksum: RFC 1624 update
    CK_UDP = 2                 # UDP: 0 means "none sent" and stays 0
    CK_PARTIAL = 3             # left for the NIC: the field holds the pseudo-header sum itself

cdef enum:
    PORTS_NONE = 0
    PORTS_L4 = 1               # TCP/UDP/SCTP: source port at 0, destination port at 2
    PORTS_ECHO = 2             # ICMP/ICMPv6 echo: identifier at 4

# One IP packet to rewrite: the outer packet, or the one an ICMP error quotes.
ctypedef struct manip_t:
    uint8_t *ip                # IP header
    uint8_t *l4                # transport header; NULL when absent (later fragment, cut quote)
    uint8_t *ck                # L4 checksum field; NULL when absent or outside the quote
    uint8_t *cover             # ICMP error checksum over this quoted packet, else NULL
    uint8_t family
    uint8_t ports              # PORTS_*
    uint8_t ck_addr            # CK_* for address changes (pseudo-header)
    uint8_t ck_port            # CK_* for port / identifier changes


# --- field stores that keep the enclosing ICMP checksum (cover) valid -----------------------

cdef inline void follow(uint8_t *cover, uint16_t before, const uint8_t *field) noexcept nogil:
    """A 16-bit field inside the quote went from `before` to its current value."""
    cdef uint16_t now = load_be16(field)
    if cover != NULL and now != before:
        csum_replace2(cover, before, now)


cdef inline void put16(uint8_t *p, uint16_t v, uint8_t *cover) noexcept nogil:
    if cover != NULL:
        csum_replace2(cover, load_be16(p), v)
    store_be16(p, v)


cdef inline void put32(uint8_t *p, uint32_t v, uint8_t *cover) noexcept nogil:
    """v in network byte order."""
    if cover != NULL:
        csum_replace4(cover, load_u32(p), v)
    store_u32(p, v)


cdef inline void put128(uint8_t *p, const uint8_t *v, uint8_t *cover) noexcept nogil:
    if cover != NULL:
        csum_replace16(cover, p, v)
    memcpy(p, v, 16)


# --- one packet's rewrite ---------------------------------------------------------------------

cdef inline void ck_addr4(const manip_t *x, uint32_t old, uint32_t new) noexcept nogil:
    cdef uint16_t before
    if x.ck_addr == CK_NONE:
        return
    before = load_be16(x.ck)
    if x.ck_addr == CK_FULL:
        csum_replace4(x.ck, old, new)
    elif x.ck_addr == CK_UDP:
        udp_csum_replace4(x.ck, old, new)
    else:
        store_be16(x.ck, <uint16_t>~csum_update32(<uint16_t>~before, load_be32(<uint8_t *>&old),
                                                   load_be32(<uint8_t *>&new)))
    follow(x.cover, before, x.ck)


cdef inline void ck_addr16(const manip_t *x, const uint8_t *old, const uint8_t *new) noexcept nogil:
    cdef uint16_t before
    if x.ck_addr == CK_NONE:
        return
    before = load_be16(x.ck)
    if x.ck_addr == CK_FULL:
        csum_replace16(x.ck, old, new)
    elif x.ck_addr == CK_UDP:
        udp_csum_replace16(x.ck, old, new)
    else:
        store_be16(x.ck, <uint16_t>~csum_update128(<uint16_t>~before, old, new))
    follow(x.cover, before, x.ck)


cdef inline void manip_addr4(const manip_t *x, uint8_t *field, const uint32_t *new) noexcept nogil:
    """IPv4 address at field becomes new[0] (NULL: keep), header and L4 checksums following."""
    cdef uint32_t old
    cdef uint16_t before
    if new == NULL:
        return
    old = load_u32(field)
    if old == new[0]:
        return
    before = load_be16(x.ip + 10)
    csum_replace4(x.ip + 10, old, new[0])
    follow(x.cover, before, x.ip + 10)
    ck_addr4(x, old, new[0])
    put32(field, new[0], x.cover)


cdef inline void manip_addr6(const manip_t *x, uint8_t *field, const uint32_t *new) noexcept nogil:
    if new == NULL or memcmp(field, new, 16) == 0:
        return
    ck_addr16(x, field, <const uint8_t *>new)
    put128(field, <const uint8_t *>new, x.cover)


cdef inline bint manip_port(const manip_t *x, uint8_t *field, uint16_t new) noexcept nogil:
    cdef uint16_t old = load_be16(field)
    cdef uint16_t before
    if old == new:
        return False
    if x.ck_port == CK_FULL or x.ck_port == CK_UDP:
        before = load_be16(x.ck)
        if x.ck_port == CK_FULL:
            csum_replace2(x.ck, old, new)
        else:
            udp_csum_replace2(x.ck, old, new)
        follow(x.cover, before, x.ck)
    put16(field, new, x.cover)
    return True


cdef bint manip_apply(const manip_t *x, const pkt_tuple *to) noexcept nogil:
    """Rewrite addresses and ports / echo id to `to`; True if a port or id changed."""
    cdef bint moved = False
    if x.family == 4:
        manip_addr4(x, x.ip + 12, to.saddr)
        manip_addr4(x, x.ip + 16, to.daddr)
    else:
        manip_addr6(x, x.ip + 8, to.saddr)
        manip_addr6(x, x.ip + 24, to.daddr)
    if x.ports == PORTS_L4:
        moved = manip_port(x, x.l4, to.sport)
        moved = manip_port(x, x.l4 + 2, to.dport) or moved
    elif x.ports == PORTS_ECHO:
        moved = manip_port(x, x.l4 + 4, to.sport)
    return moved


cdef inline bint icmp_echo(uint8_t family, uint8_t typ) noexcept nogil:
    if family == 4:
        return typ == 8 or typ == 0
    return typ == 128 or typ == 129


cdef inline bint manip_l4(manip_t *x, uint8_t *l4, uint32_t room, uint8_t proto) noexcept nogil:
    """Point x at the transport header l4 with `room` bytes up to the packet or quote end. False
    for a header too short to hold its ports or echo id; the checksum stays NULL when the field is
    past `room` (a quote that stops at 8 bytes of TCP)."""
    x.l4 = l4
    if proto == IPPROTO_TCP or proto == IPPROTO_UDP or proto == IPPROTO_SCTP:
        if room < 4:
            return False
        x.ports = PORTS_L4
        if proto == IPPROTO_TCP and room >= 18:
            x.ck = l4 + 16
            x.ck_addr = x.ck_port = CK_FULL
        elif proto == IPPROTO_UDP and room >= 8:
            x.ck = l4 + 6
            x.ck_addr = x.ck_port = CK_UDP
        return True
    if (proto == IPPROTO_ICMP and x.family == 4) or (proto == IPPROTO_ICMPV6 and x.family == 6):
        if room < 8:
            return False
        if icmp_echo(x.family, l4[0]):
            x.ports = PORTS_ECHO
        x.ck = l4 + 2
        x.ck_addr = CK_FULL if x.family == 6 else CK_NONE   # ICMPv4 has no pseudo-header
        x.ck_port = CK_FULL
        return True
    x.l4 = NULL                   # other protocols: addresses only
    return True


cdef inline void sctp_crc_fill(uint8_t *sh, size_t n) noexcept nogil:
    """CRC32c of the n-byte SCTP packet at sh with the field zeroed (RFC 9260 6.8, Appendix A),
    stored least significant byte first as Linux's sctp_compute_cksum does."""
    cdef uint32_t crc
    store_u32(sh + 8, 0)
    crc = ~dp_crc32c(0xffffffffU, sh, n)
    sh[8] = <uint8_t>crc
    sh[9] = <uint8_t>(crc >> 8)
    sh[10] = <uint8_t>(crc >> 16)
    sh[11] = <uint8_t>(crc >> 24)


cdef int nat_rewrite(burst_t *b, uint32_t i, const pkt_tuple *to) noexcept nogil:
    cdef pkt_meta *m = &b.meta[i]
    cdef uint8_t *p = pkt_data(b, i)
    cdef uint32_t end = <uint32_t>m.l3_off + m.l3_len
    cdef uint32_t hl = 20 if m.t.family == 4 else 40
    cdef uint8_t proto = m.t.proto
    cdef bint partial = (m.flags & PKT_F_CSUM_PARTIAL) != 0
    cdef bint sctp_crc = False
    cdef manip_t x
    if (to.family != m.t.family or to.proto != proto or end > m.len or m.l3_len < hl
            or not ((m.l3 == L3_IP4 and hl == 20) or (m.l3 == L3_IP6 and m.t.family == 6))):
        return -1
    memset(&x, 0, sizeof(x))
    x.ip = p + m.l3_off
    x.family = m.t.family
    if not (m.flags & PKT_F_LATER_FRAG):
        if m.l4_off < m.l3_off + hl or m.l4_off > end:
            return -1
        if not manip_l4(&x, p + m.l4_off, end - m.l4_off, proto):
            return -1
        if x.l4 != NULL:
            # The parser vouches for complete headers with PKT_F_L4; nothing less is rewritten.
            if not (m.flags & PKT_F_L4) or (
                    (proto == IPPROTO_TCP or proto == IPPROTO_UDP) and x.ck == NULL):
                return -1
            if partial and (proto == IPPROTO_TCP or proto == IPPROTO_UDP):
                x.ck_addr = CK_PARTIAL
                x.ck_port = CK_NONE
            elif proto == IPPROTO_SCTP and not partial and (
                    load_be16(x.l4) != to.sport or load_be16(x.l4 + 2) != to.dport):
                # CRC32c covers the whole SCTP packet (not the addresses): only a port change
                # needs it, and a fragment does not hold the rest of the packet.
                if m.flags & PKT_F_FRAGMENT or end - m.l4_off < 12:
                    return -1
                sctp_crc = True
    manip_apply(&x, to)
    if sctp_crc:
        sctp_crc_fill(x.l4, end - m.l4_off)
    m.t = to[0]
    return 0


cdef int nat_rewrite_icmp_error(burst_t *b, uint32_t i, const pkt_tuple *inner_to,
                                const uint32_t *outer_src, const uint32_t *outer_dst) noexcept nogil:
    cdef pkt_meta *m = &b.meta[i]
    cdef uint8_t *p = pkt_data(b, i)
    cdef uint32_t end = <uint32_t>m.l3_off + m.l3_len
    cdef uint8_t fam = m.t.family
    cdef uint32_t hl = 20 if fam == 4 else 40
    cdef uint32_t l4 = m.inner_l4_off
    cdef uint32_t inner_end = 0, old_crc
    cdef uint8_t *icmp
    cdef manip_t x, y
    if (not (m.flags & PKT_F_ICMP_ERROR) or end > m.len or inner_to.family != fam
            or m.inner.family != fam or inner_to.proto != m.inner.proto
            or not ((m.l3 == L3_IP4 and fam == 4 and m.t.proto == IPPROTO_ICMP)
                    or (m.l3 == L3_IP6 and fam == 6 and m.t.proto == IPPROTO_ICMPV6))
            or m.l4_off < m.l3_off + hl or m.inner_l3_off < m.l4_off + 8
            or m.inner_l3_off + hl > end):
        return -1
    icmp = p + m.l4_off
    memset(&x, 0, sizeof(x))
    x.ip = p + m.inner_l3_off
    x.family = fam
    x.cover = icmp + 2
    if m.flags & PKT_F_INNER_L4:
        if l4 < m.inner_l3_off + hl or l4 > end:
            return -1
        if not manip_l4(&x, p + l4, end - l4, inner_to.proto):
            return -1
        if inner_to.proto == IPPROTO_SCTP:
            # Only a quote of the whole, unfragmented SCTP packet lets its CRC be recomputed.
            if fam == 4 and not (load_be16(x.ip + 6) & 0x3fff):
                inner_end = m.inner_l3_off + load_be16(x.ip + 2)
            elif fam == 6 and l4 == <uint32_t>m.inner_l3_off + 40:
                inner_end = m.inner_l3_off + 40 + load_be16(x.ip + 4)
            if inner_end > end or inner_end < l4 + 12:
                inner_end = 0
    if manip_apply(&x, inner_to) and inner_end:
        old_crc = load_u32(x.l4 + 8)
        sctp_crc_fill(x.l4, inner_end - l4)
        csum_replace4(x.cover, old_crc, load_u32(x.l4 + 8))
    # Outer addresses: the ICMPv6 checksum covers them through its pseudo-header.
    memset(&y, 0, sizeof(y))
    y.ip = p + m.l3_off
    y.family = fam
    y.ck = icmp + 2
    y.ck_addr = CK_FULL if fam == 6 else CK_NONE
    if fam == 4:
        manip_addr4(&y, y.ip + 12, outer_src)
        manip_addr4(&y, y.ip + 16, outer_dst)
    else:
        manip_addr6(&y, y.ip + 8, outer_src)
        manip_addr6(&y, y.ip + 24, outer_dst)
    if outer_src != NULL:
        memcpy(m.t.saddr, outer_src, 4 if fam == 4 else 16)
    if outer_dst != NULL:
        memcpy(m.t.daddr, outer_dst, 4 if fam == 4 else 16)
    m.inner = inner_to[0]
    return 0


# --- reject frames ----------------------------------------------------------------------------

cdef inline void eth_swap(uint8_t *dst, const uint8_t *l2, uint32_t l2len) noexcept nogil:
    """Write the reply's L2 header at dst from the saved request header l2 (dst may overlap it
    only if l2 was copied first): MAC addresses swapped, VLAN tags and EtherType kept."""
    cdef uint8_t mac[6]
    memcpy(mac, l2, 6)
    memmove(dst + 12, l2 + 12, l2len - 12)
    memmove(dst, l2 + 6, 6)
    memcpy(dst + 6, mac, 6)


cdef int build_tcp_rst(burst_t *b, uint32_t i) noexcept nogil:
    cdef pkt_meta *m = &b.meta[i]
    cdef uint8_t *p = pkt_data(b, i)
    cdef uint8_t *ip = p + m.l3_off
    cdef uint8_t *th
    cdef uint32_t end = <uint32_t>m.l3_off + m.l3_len
    cdef uint32_t l4 = m.l4_off, doff, seg_len, seq, ack
    cdef uint32_t hl = 20 if m.t.family == 4 else 40
    cdef uint16_t sport, dport
    cdef uint8_t fl, rst_flags
    cdef uint32_t src[4]
    cdef uint32_t dst[4]
    if (m.t.proto != IPPROTO_TCP or not (m.flags & PKT_F_L4) or m.flags & PKT_F_FRAGMENT
            or not ((m.l3 == L3_IP4 and hl == 20) or (m.l3 == L3_IP6 and m.t.family == 6))
            or m.l3_off < ETH_HLEN or end > m.len or l4 < m.l3_off + hl or l4 + 20 > end):
        return -1
    th = p + l4
    fl = th[13]
    doff = (th[12] >> 4) << 2
    if fl & TH_RST or doff < 20 or l4 + doff > end:   # never answer a RST (RFC 9293 3.10.7.1)
        return -1
    # Everything the reply needs, read before the shorter headers overwrite the request.
    sport = load_be16(th)
    dport = load_be16(th + 2)
    seq = load_be32(th + 4)
    ack = load_be32(th + 8)
    seg_len = end - l4 - doff + ((fl & TH_SYN) != 0) + ((fl & TH_FIN) != 0)
    if fl & TH_ACK:
        seq = ack                 # <SEQ=SEG.ACK><CTL=RST>
        ack = 0
        rst_flags = TH_RST
    else:                         # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
        ack = seq + seg_len
        seq = 0
        rst_flags = TH_RST | TH_ACK
    eth_swap(p, p, m.l3_off)
    memset(src, 0, sizeof(src))
    memset(dst, 0, sizeof(dst))
    if hl == 20:
        src[0] = load_u32(ip + 16)
        dst[0] = load_u32(ip + 12)
        ip[0] = 0x45
        ip[1] = 0
        store_be16(ip + 2, 40)
        store_be32(ip + 4, 0x4000)            # id 0, DF, as Linux's nf_reject_iphdr_put
        ip[8] = TTL_DEFAULT
        ip[9] = IPPROTO_TCP
        store_u32(ip + 12, src[0])
        store_u32(ip + 16, dst[0])
        store_be16(ip + 10, ip4_hdr_csum(ip, 20))
    else:
        memcpy(src, ip + 24, 16)
        memcpy(dst, ip + 8, 16)
        store_be32(ip, 0x60000000)
        store_be16(ip + 4, 20)
        ip[6] = IPPROTO_TCP
        ip[7] = TTL_DEFAULT
        memcpy(ip + 8, src, 16)
        memcpy(ip + 24, dst, 16)
    th = ip + hl
    store_be16(th, dport)
    store_be16(th + 2, sport)
    store_be32(th + 4, seq)
    store_be32(th + 8, ack)
    th[12] = 0x50
    th[13] = rst_flags
    store_be32(th + 14, 0)                    # window 0, checksum 0
    store_be16(th + 18, 0)
    if hl == 20:
        store_be16(th + 16, ip4_l4_csum(ip, th, 20, IPPROTO_TCP))
    else:
        store_be16(th + 16, ip6_l4_csum(ip, th, 20, IPPROTO_TCP))
    m.len = <uint16_t>(m.l3_off + hl + 20)
    m.l3_len = <uint16_t>(hl + 20)
    m.l4_off = <uint16_t>(m.l3_off + hl)
    m.flags = PKT_F_L4
    m.ttl = TTL_DEFAULT
    m.tcp_flags = rst_flags
    m.frag_off = 0
    m.icmp_type = m.icmp_code = 0
    m.inner_l3_off = m.inner_l4_off = 0
    memset(&m.inner, 0, sizeof(pkt_tuple))
    memcpy(m.t.saddr, src, 16)
    memcpy(m.t.daddr, dst, 16)
    m.t.sport = dport
    m.t.dport = sport
    return 0


cdef inline bint icmp_error_allowed(const uint8_t *p, const pkt_meta *m, uint32_t end) noexcept nogil:
    """RFC 1122 3.2.2 / RFC 1812 4.3.2.7 / RFC 4443 2.4(e): no error about an ICMP error, a
    non-first fragment, a link-layer or IP multicast/broadcast, or a source that is not one host.
    (A subnet-directed broadcast is not known here; the route stage drops those.)"""
    cdef const uint8_t *ip = p + m.l3_off
    cdef uint32_t s, d
    cdef uint8_t typ
    if p[0] & 1 or m.flags & PKT_F_LATER_FRAG:
        return False
    if m.t.family == 4:
        s = load_be32(ip + 12)
        d = load_be32(ip + 16)
        if d >> 28 == 0xe or d == 0xffffffffU:
            return False
        if s == 0 or s >> 24 == 127 or s >> 28 >= 0xe:   # zero, loopback, multicast, class E
            return False
        if m.t.proto == IPPROTO_ICMP:
            if m.l4_off == 0 or m.l4_off >= end:
                return False
            typ = p[m.l4_off]
            # Only known queries and replies: anything else counts as an error, as in Linux.
            return typ == 0 or typ == 8 or typ == 9 or typ == 10 or 13 <= typ <= 18
        return True
    if ip[24] == 0xff or ip[8] == 0xff:
        return False
    if load_u32(ip + 8) == 0 and load_u32(ip + 12) == 0 and load_u32(ip + 16) == 0 and (
            load_be32(ip + 20) <= 1):                   # :: and ::1
        return False
    if m.t.proto == IPPROTO_ICMPV6:
        return m.l4_off != 0 and m.l4_off < end and p[m.l4_off] >= 128
    return True


cdef int icmp_error_build(burst_t *b, uint32_t i, uint8_t typ, uint8_t code,
                          const uint32_t *src) noexcept nogil:
    """Turn packet i into an ICMP error of typ/code quoting it, sent from src (NULL: from the
    packet's destination) to the packet's source."""
    cdef pkt_meta *m = &b.meta[i]
    cdef uint8_t *slot = b.buf + <size_t>i * b.slot_size
    cdef uint8_t *p = slot + m.data_off
    cdef uint8_t *ip = p + m.l3_off
    cdef uint8_t *ic
    cdef uint32_t l2 = m.l3_off
    cdef uint32_t end = l2 + m.l3_len
    cdef bint v4 = m.t.family == 4
    cdef uint32_t hl = 20 if v4 else 40
    cdef uint32_t alen = 4 if v4 else 16
    cdef uint32_t grow = hl + 8
    cdef uint32_t qlen, qmin, new_off, qpos, l4rel
    cdef uint8_t l2hdr[MAX_L2]
    cdef uint32_t osrc[4]
    cdef uint32_t odst[4]
    cdef pkt_tuple inner = m.t
    cdef uint16_t oflags = m.flags
    cdef uint16_t ol4 = m.l4_off
    if (not ((m.l3 == L3_IP4 and v4) or (m.l3 == L3_IP6 and m.t.family == 6))
            or l2 < ETH_HLEN or l2 > MAX_L2 or end > m.len or m.l3_len < hl
            or not icmp_error_allowed(p, m, end)):
        return -1
    qlen = m.l3_len
    if qlen > (IP4_ERR_MAX if v4 else IP6_ERR_MAX) - grow:
        qlen = (IP4_ERR_MAX if v4 else IP6_ERR_MAX) - grow
    # Grow into the headroom so the quote stays where it is; short of headroom, move it back.
    new_off = m.data_off - grow if m.data_off >= grow else 0
    qpos = new_off + l2 + grow
    if qpos >= b.slot_size:
        return -1
    if qpos + qlen > b.slot_size:
        qlen = b.slot_size - qpos
    qmin = (((ip[0] & 0xf) << 2) if v4 else 40) + 8      # RFC 792: IP header + 64 bits at least
    if qlen < qmin and qlen < m.l3_len:
        return -1
    memcpy(l2hdr, p, l2)
    memset(osrc, 0, sizeof(osrc))
    memset(odst, 0, sizeof(odst))
    memcpy(osrc, ip + (12 if v4 else 8), alen)
    memcpy(odst, ip + (16 if v4 else 24), alen)
    if slot + qpos != ip:
        memmove(slot + qpos, ip, qlen)
    p = slot + new_off
    eth_swap(p, l2hdr, l2)
    ip = p + l2
    ic = ip + hl
    if v4:
        ip[0] = 0x45
        ip[1] = 0xc0                          # precedence Internet Control (RFC 1812 4.3.2.5)
        store_be16(ip + 2, <uint16_t>(grow + qlen))
        store_be32(ip + 4, 0)                 # id 0, no DF: 576 bytes pass any path
        ip[8] = TTL_DEFAULT
        ip[9] = IPPROTO_ICMP
        memcpy(ip + 12, src if src != NULL else odst, 4)
        memcpy(ip + 16, osrc, 4)
        store_be16(ip + 10, ip4_hdr_csum(ip, 20))
    else:
        store_be32(ip, 0x60000000)
        store_be16(ip + 4, <uint16_t>(8 + qlen))
        ip[6] = IPPROTO_ICMPV6
        ip[7] = TTL_DEFAULT
        memcpy(ip + 8, src if src != NULL else odst, 16)
        memcpy(ip + 24, osrc, 16)
    ic[0] = typ
    ic[1] = code
    store_be16(ic + 2, 0)
    store_be32(ic + 4, 0)                     # unused (no RFC 4884 length)
    if v4:
        store_be16(ic + 2, ip4_l4_csum(ip, ic, 8 + qlen, IPPROTO_ICMP))
    else:
        store_be16(ic + 2, ip6_l4_csum(ip, ic, 8 + qlen, IPPROTO_ICMPV6))
    # Metadata as the parser would give it for the new frame.
    m.data_off = <uint16_t>new_off
    m.len = <uint16_t>(l2 + grow + qlen)
    m.l3_len = <uint16_t>(grow + qlen)
    m.l4_off = <uint16_t>(l2 + hl)
    m.inner_l3_off = <uint16_t>(l2 + grow)
    m.inner_l4_off = 0
    m.flags = PKT_F_L4 | PKT_F_ICMP_ERROR
    m.ttl = TTL_DEFAULT
    m.frag_off = 0
    m.tcp_flags = 0
    m.icmp_type = typ
    m.icmp_code = code
    if oflags & PKT_F_L4 and ol4 > l2:
        l4rel = ol4 - l2
        if l4rel + (8 if inner.proto == IPPROTO_ICMP or inner.proto == IPPROTO_ICMPV6 else 4) <= qlen:
            m.inner_l4_off = <uint16_t>(m.inner_l3_off + l4rel)
            m.flags |= PKT_F_INNER_L4
    if not (m.flags & PKT_F_INNER_L4):
        inner.sport = inner.dport = 0
    m.inner = inner
    memset(&m.t, 0, sizeof(pkt_tuple))
    m.t.family = inner.family
    m.t.proto = IPPROTO_ICMP if v4 else IPPROTO_ICMPV6
    memcpy(m.t.saddr, ip + (12 if v4 else 8), alen)
    memcpy(m.t.daddr, osrc, alen)
    return 0


cdef int build_icmp_unreach(burst_t *b, uint32_t i) noexcept nogil:
    if b.meta[i].t.family == 4:
        return icmp_error_build(b, i, 3, 3, NULL)
    return icmp_error_build(b, i, 1, 4, NULL)


cdef int build_icmp_time_exceeded(burst_t *b, uint32_t i, const uint32_t *src_addr) noexcept nogil:
    if b.meta[i].t.family == 4:
        return icmp_error_build(b, i, 11, 0, src_addr)
    return icmp_error_build(b, i, 3, 0, src_addr)


# --- test and tool hooks ----------------------------------------------------------------------

cdef _set_addr(uint32_t *w, object addr, uint8_t family):
    packed = ipaddress.ip_address(addr).packed
    if len(packed) != (4 if family == 4 else 16):
        raise ValueError(f"{addr} is not an IPv{family} address")
    memset(w, 0, 16)
    memcpy(w, <const char *>packed, len(packed))


cdef pkt_tuple _target(const pkt_tuple *t, src, dst, sport, dport) except *:
    """t with the given fields replaced (None: keep)."""
    cdef pkt_tuple to = t[0]
    if src is not None:
        _set_addr(to.saddr, src, t.family)
    if dst is not None:
        _set_addr(to.daddr, dst, t.family)
    if sport is not None:
        to.sport = sport
    if dport is not None:
        to.dport = dport
    return to


def rewrite(Burst burst, uint32_t i, src=None, dst=None, sport=None, dport=None,
            bint csum_partial=False):
    """nat_rewrite packet i to its parsed tuple with the given fields replaced. Returns 0 / -1.
    csum_partial marks the packet PKT_F_CSUM_PARTIAL first, as an offloading receive path would."""
    burst._check(i)
    cdef pkt_tuple to = _target(&burst.b.meta[i].t, src, dst, sport, dport)
    if csum_partial:
        burst.b.meta[i].flags |= PKT_F_CSUM_PARTIAL
    return nat_rewrite(&burst.b, i, &to)


def rewrite_all(Burst burst, dst=None, dport=None):
    """DNAT every packet of the burst (same family as packet 0) in one nogil loop; returns how
    many were rewritten. For benchmarks: the per-packet cost without Python in between."""
    cdef uint32_t i, done = 0
    cdef pkt_tuple to
    cdef uint32_t daddr[4]
    cdef bint set_dst = dst is not None, set_dport = dport is not None
    cdef uint16_t port = dport if set_dport else 0
    if burst.b.n == 0:
        return 0
    if set_dst:
        _set_addr(daddr, dst, burst.b.meta[0].t.family)
    with nogil:
        for i in range(burst.b.n):
            to = burst.b.meta[i].t
            if set_dst:
                memcpy(to.daddr, daddr, 16)
            if set_dport:
                to.dport = port
            done += nat_rewrite(&burst.b, i, &to) == 0
    return done


def rewrite_icmp_error(Burst burst, uint32_t i, inner_src=None, inner_dst=None, inner_sport=None,
                       inner_dport=None, outer_src=None, outer_dst=None):
    """nat_rewrite_icmp_error on packet i: the quoted tuple with fields replaced, and the outer
    addresses (None: keep). Returns 0 / -1."""
    burst._check(i)
    cdef pkt_meta *m = &burst.b.meta[i]
    cdef pkt_tuple to = _target(&m.inner, inner_src, inner_dst, inner_sport, inner_dport)
    cdef uint32_t osrc[4]
    cdef uint32_t odst[4]
    cdef uint32_t *ps = NULL
    cdef uint32_t *pd = NULL
    if outer_src is not None:
        _set_addr(osrc, outer_src, m.t.family)
        ps = osrc
    if outer_dst is not None:
        _set_addr(odst, outer_dst, m.t.family)
        pd = odst
    return nat_rewrite_icmp_error(&burst.b, i, &to, ps, pd)


def tcp_rst(Burst burst, uint32_t i):
    burst._check(i)
    return build_tcp_rst(&burst.b, i)


def icmp_unreach(Burst burst, uint32_t i):
    burst._check(i)
    return build_icmp_unreach(&burst.b, i)


def icmp_time_exceeded(Burst burst, uint32_t i, src):
    burst._check(i)
    cdef uint32_t a[4]
    _set_addr(a, src, burst.b.meta[i].t.family)
    return build_icmp_time_exceeded(&burst.b, i, a)


def sctp_crc32c(const uint8_t[::1] data):
    """CRC32c (Castagnoli) of a buffer, as SCTP uses it before storing (tests)."""
    return ~dp_crc32c(0xffffffffU, &data[0] if data.shape[0] else NULL, data.shape[0]) & 0xffffffff


def _slot(Burst burst, uint32_t i):
    """The whole slot of packet i, headroom included (tests: nothing written outside the frame)."""
    burst._check(i)
    return (<char *>burst.b.buf + <size_t>i * burst.b.slot_size)[:burst.b.slot_size]


def _move(Burst burst, uint32_t i, uint16_t data_off):
    """Move frame i to data_off in its slot, as a stage that used the headroom would leave it."""
    burst._check(i)
    cdef pkt_meta *m = &burst.b.meta[i]
    if <uint32_t>data_off + m.len > burst.b.slot_size:
        raise ValueError("frame would not fit")
    cdef uint8_t *slot = burst.b.buf + <size_t>i * burst.b.slot_size
    memmove(slot + data_off, slot + m.data_off, m.len)
    m.data_off = data_off
