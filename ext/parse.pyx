"""Parser stage: the first stage of the pipeline, run over every pending packet of a burst.

It validates L2/L3/L4 headers and fills pkt_meta: VLAN tags, offsets, lengths, flags, the flow
tuple, the ICMP error's quoted tuple and the flow hash. Every read is bounded by the frame
(meta.len) and, past the IP header, by the IP length; a packet that fails a check is dropped with
the reason. Event counters are bumped only for packets that pass, so rx = passed + parser drops.

IPv4 header checksums are not verified here. Linux drops them in ip_rcv and RFC 1812 makes routers
verify them, but a capture taken on a sender with checksum offload (most replay pcaps) carries
unfilled checksums, and local delivery never needs them. Verification belongs to the stage that
forwards and rewrites the header (csum.ip4_hdr_csum_ok, next to its TTL update); that stage needs a
drop reason for it (requested: DROP_BAD_CSUM "bad_csum").
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset

from dataplane.includes.pkt cimport (
    burst_t, pkt_meta, pkt_tuple, pkt_data, pkt_drop, V_PENDING, L3_IP4, L3_IP6, L3_ARP,
    PKT_F_L4, PKT_F_FRAGMENT, PKT_F_LATER_FRAG, PKT_F_ICMP_ERROR, PKT_F_INNER_L4,
    PKT_F_IP_OPTIONS, PKT_F_IP6_EXT, PKT_F_OVERSIZE, PKT_F_RX_MASK, DROP_NONE, DROP_TRUNCATED,
    DROP_OVERSIZE, DROP_BAD_ETHERTYPE, SCTP_F_INIT, SCTP_F_INIT_ACK, SCTP_F_COOKIE_ECHO,
    SCTP_F_COOKIE_ACK, SCTP_F_SHUTDOWN, SCTP_F_SHUTDOWN_ACK, SCTP_F_SHUTDOWN_COMPLETE, SCTP_F_ABORT,
    DROP_BAD_VERSION, DROP_BAD_IHL, DROP_BAD_LEN, DROP_BAD_L4_LEN, DROP_BAD_EXT_HDR,
    DROP_TOO_MANY_VLANS, CNT_RX, CNT_IP4, CNT_IP6, CNT_ARP, CNT_VLAN,
    CNT_FRAGMENT, CNT_ICMP_ERROR,
)
from dataplane.includes.bytes cimport load_be16, load_u32
from dataplane.burst cimport Burst
from dataplane.burst import stage_counters

__all__ = ["parse"]

# tuple_hash reads the tuple as five 8-byte words.
if sizeof(pkt_tuple) != 40:
    raise ImportError(f"pkt_tuple is {sizeof(pkt_tuple)} bytes, tuple_hash expects 40")

cdef enum:
    ETH_HLEN = 14
    ETH_P_IP = 0x0800
    ETH_P_ARP = 0x0806
    ETH_P_8021Q = 0x8100
    ETH_P_8021AD = 0x88a8
    ETH_P_IPV6 = 0x86dd
    MAX_VLANS = 2
    P_HOPOPTS = 0
    P_ICMP = 1
    P_TCP = 6
    P_UDP = 17
    P_ROUTING = 43
    P_FRAGMENT = 44
    P_ICMPV6 = 58
    P_DSTOPTS = 60
    P_SCTP = 132


cdef void parse_burst(burst_t *b, uint64_t *cnt, uint64_t *drops) noexcept nogil:
    cdef uint32_t i
    cdef pkt_meta *m
    cdef uint8_t why
    for i in range(b.n):
        if b.verdict[i] != V_PENDING:
            continue
        m = &b.meta[i]
        cnt[<int>CNT_RX] += 1
        why = parse_one(b, i)
        if why != DROP_NONE:
            pkt_drop(b, i, why, drops)
            continue
        cnt[<int>CNT_VLAN] += m.n_vlans != 0
        cnt[<int>CNT_IP4] += m.l3 == L3_IP4
        cnt[<int>CNT_IP6] += m.l3 == L3_IP6
        cnt[<int>CNT_ARP] += m.l3 == L3_ARP
        cnt[<int>CNT_FRAGMENT] += (m.flags & PKT_F_FRAGMENT) != 0
        cnt[<int>CNT_ICMP_ERROR] += (m.flags & PKT_F_ICMP_ERROR) != 0


cdef uint8_t parse_one(burst_t *b, uint32_t i) noexcept nogil:
    cdef pkt_meta *m = &b.meta[i]
    cdef uint8_t why
    # Clear what this stage owns (l3_off..icmp_code, hash, tuples) so a re-parse starts clean;
    # slot, length, port, timestamp and the receive path's flags are not ours.
    cdef uint16_t rx_flags = m.flags & PKT_F_RX_MASK
    memset(&m.l3_off, 0, <char *>&m.nexthop - <char *>&m.l3_off)
    memset(&m.hash, 0, <char *>(m + 1) - <char *>&m.hash)
    m.flags = rx_flags
    if rx_flags & PKT_F_OVERSIZE:
        return DROP_OVERSIZE
    why = parse_pkt(pkt_data(b, i), m)
    if why == DROP_NONE:
        m.hash = tuple_hash(&m.t)
    return why


cdef inline uint8_t parse_pkt(const uint8_t *p, pkt_meta *m) noexcept nogil:
    cdef uint32_t n = m.len
    cdef uint32_t off = ETH_HLEN
    cdef uint16_t et
    if n < ETH_HLEN:
        return DROP_TRUNCATED
    et = load_be16(p + 12)
    while et == ETH_P_8021Q or et == ETH_P_8021AD:
        if m.n_vlans == MAX_VLANS:
            return DROP_TOO_MANY_VLANS
        if off + 4 > n:
            return DROP_TRUNCATED
        m.vlan[m.n_vlans] = load_be16(p + off)
        m.n_vlans += 1
        et = load_be16(p + off + 2)
        off += 4
    m.ethertype = et
    m.l3_off = off
    if et == ETH_P_IP:
        return parse_ip4(p, off, n, m)
    if et == ETH_P_IPV6:
        return parse_ip6(p, off, n, m)
    if et == ETH_P_ARP:
        # 8 fixed bytes, then sender and target hardware + protocol addresses (hlen, plen each).
        if off + 8 > n or off + 8 + 2 * (<uint32_t>p[off + 4] + p[off + 5]) > n:
            return DROP_TRUNCATED
        m.l3 = L3_ARP
        return DROP_NONE
    return DROP_BAD_ETHERTYPE


cdef inline uint8_t parse_ip4(const uint8_t *p, uint32_t off, uint32_t n, pkt_meta *m) noexcept nogil:
    cdef const uint8_t *ip = p + off
    cdef uint32_t avail = n - off
    cdef uint32_t hl, tot
    cdef uint16_t fo
    if avail < 20:
        return DROP_TRUNCATED
    if ip[0] >> 4 != 4:
        return DROP_BAD_VERSION
    hl = (ip[0] & 0xf) << 2
    if hl < 20:
        return DROP_BAD_IHL
    if hl > avail:
        return DROP_TRUNCATED
    # Bytes past the total length are Ethernet padding: ignored, l3_len excludes them.
    tot = load_be16(ip + 2)
    if tot < hl or tot > avail:
        return DROP_BAD_LEN
    m.l3 = L3_IP4
    m.l3_len = <uint16_t>tot
    m.ttl = ip[8]
    m.t.family = 4
    m.t.proto = ip[9]
    m.t.saddr[0] = load_u32(ip + 12)
    m.t.daddr[0] = load_u32(ip + 16)
    if hl > 20:
        m.flags |= PKT_F_IP_OPTIONS
    fo = load_be16(ip + 6)
    if fo & 0x3fff:                       # MF or a fragment offset
        m.flags |= PKT_F_FRAGMENT
        m.frag_off = <uint16_t>((fo & 0x1fff) << 3)
        if m.frag_off:
            m.flags |= PKT_F_LATER_FRAG   # mid-datagram bytes: no L4 header here
            return DROP_NONE
    return parse_l4(p, off + hl, off + tot, m)


cdef inline uint8_t parse_ip6(const uint8_t *p, uint32_t off, uint32_t n, pkt_meta *m) noexcept nogil:
    cdef const uint8_t *ip = p + off
    cdef uint32_t plen, l4
    cdef uint8_t nh
    cdef int k
    cdef uint8_t why
    if n - off < 40:
        return DROP_TRUNCATED
    if ip[0] >> 4 != 6:
        return DROP_BAD_VERSION
    plen = load_be16(ip + 4)
    nh = ip[6]
    # Payload length 0 behind hop-by-hop is a jumbogram (RFC 2675): never on an Ethernet frame.
    if (plen == 0 and nh == P_HOPOPTS) or 40 + plen > n - off:
        return DROP_BAD_LEN
    m.l3 = L3_IP6
    m.l3_len = <uint16_t>(40 + plen)
    m.ttl = ip[7]
    m.t.family = 6
    for k in range(4):
        m.t.saddr[k] = load_u32(ip + 8 + 4 * k)
        m.t.daddr[k] = load_u32(ip + 24 + 4 * k)
    l4 = off + 40
    why = ip6_walk(p, &l4, off + 40 + plen, &nh, &m.flags, &m.frag_off)
    if why != DROP_NONE:
        return why
    m.t.proto = nh
    if m.flags & PKT_F_LATER_FRAG:
        return DROP_NONE
    return parse_l4(p, l4, off + 40 + plen, m)


cdef inline uint8_t ip6_walk(const uint8_t *p, uint32_t *poff, uint32_t end, uint8_t *pnh,
                             uint16_t *flags, uint16_t *frag_off) noexcept nogil:
    """Skip the extension headers starting at *poff (type *pnh), staying below end. On success
    *pnh / *poff are the upper-layer protocol and its offset; a non-first fragment stops the walk
    at the fragment header, since what follows is mid-datagram. Unknown types (AH, ESP, No Next
    Header, ...) count as the upper layer."""
    cdef uint32_t off = poff[0]
    cdef uint8_t nh = pnh[0]
    cdef uint16_t fo
    cdef bint first = True
    while True:
        if nh == P_HOPOPTS:
            if not first:
                return DROP_BAD_EXT_HDR   # RFC 8200 4.1: only right after the fixed header
        elif nh != P_ROUTING and nh != P_DSTOPTS and nh != P_FRAGMENT:
            break
        if off + 8 > end:                 # every extension header is at least 8 bytes
            return DROP_BAD_EXT_HDR
        flags[0] |= PKT_F_IP6_EXT
        if nh == P_FRAGMENT:
            fo = load_be16(p + off + 2)
            nh = p[off]
            off += 8
            # An atomic fragment (offset 0, M clear, RFC 6946) is a whole packet.
            if fo & 0xfff9:
                flags[0] |= PKT_F_FRAGMENT
                frag_off[0] = fo & 0xfff8
                if frag_off[0]:
                    flags[0] |= PKT_F_LATER_FRAG
                    break
        else:
            fo = (<uint16_t>p[off + 1] + 1) << 3
            if off + fo > end:
                return DROP_BAD_EXT_HDR
            nh = p[off]
            off += fo
        first = False
    poff[0] = off
    pnh[0] = nh
    return DROP_NONE


cdef inline uint8_t parse_l4(const uint8_t *p, uint32_t off, uint32_t end, pkt_meta *m) noexcept nogil:
    """Transport header at off, bounded by the IP payload end (callers ensure off <= end)."""
    cdef const uint8_t *l4 = p + off
    cdef uint32_t room = end - off
    cdef uint8_t proto = m.t.proto
    cdef uint32_t hl
    m.l4_off = off
    if proto == P_TCP:
        if room < 20:
            return DROP_BAD_L4_LEN
        hl = (l4[12] >> 4) << 2
        if hl < 20 or hl > room:
            return DROP_BAD_L4_LEN
        m.tcp_flags = l4[13]
    elif proto == P_UDP:
        if room < 8:
            return DROP_BAD_L4_LEN
        hl = load_be16(l4 + 4)
        # A first fragment holds only part of the datagram that the UDP length covers.
        if hl < 8 or (hl > room and not (m.flags & PKT_F_FRAGMENT)):
            return DROP_BAD_L4_LEN
    elif proto == P_SCTP:
        if room < 12:                     # common header: ports, verification tag, CRC32c
            return DROP_BAD_L4_LEN
        m.tcp_flags = sctp_chunk_bits(l4, room)
    elif (proto == P_ICMP and m.t.family == 4) or (proto == P_ICMPV6 and m.t.family == 6):
        return parse_icmp(p, off, end, m)
    else:
        return DROP_NONE                  # other protocols: a tuple without ports
    m.t.sport = load_be16(l4)
    m.t.dport = load_be16(l4 + 2)
    m.flags |= PKT_F_L4
    return DROP_NONE


# Chunk type -> SCTP_F_* bit for the types that move the association's state (RFC 9260 3.2).
cdef uint8_t SCTP_CHUNK_BIT[15]
SCTP_CHUNK_BIT[:] = [0, SCTP_F_INIT, SCTP_F_INIT_ACK, 0, 0, 0, SCTP_F_ABORT, SCTP_F_SHUTDOWN,
                     SCTP_F_SHUTDOWN_ACK, 0, SCTP_F_COOKIE_ECHO, SCTP_F_COOKIE_ACK, 0, 0,
                     SCTP_F_SHUTDOWN_COMPLETE]


cdef inline uint8_t sctp_chunk_bits(const uint8_t *sctp, uint32_t room) noexcept nogil:
    """The state-changing chunk types present (SCTP_F_*), for conntrack's SCTP tracker. Chunks
    are walked as far as the bytes present allow; a chunk length below 4 ends the walk (RFC 9260
    3.2: a malformed chunk must not make the walk loop)."""
    cdef uint32_t off = 12, clen
    cdef uint8_t bits = 0, typ
    while off + 4 <= room:
        typ = sctp[off]
        if typ < sizeof(SCTP_CHUNK_BIT):
            bits |= SCTP_CHUNK_BIT[typ]
        clen = load_be16(sctp + off + 2)
        if clen < 4:
            break
        off += (clen + 3) & ~3U
    return bits


cdef inline bint icmp_is_echo(uint8_t family, uint8_t typ) noexcept nogil:
    if family == 4:
        return typ == 8 or typ == 0
    return typ == 128 or typ == 129


cdef inline uint8_t parse_icmp(const uint8_t *p, uint32_t off, uint32_t end, pkt_meta *m) noexcept nogil:
    cdef const uint8_t *ic = p + off
    cdef uint8_t typ
    if end - off < 8:                     # every ICMP / ICMPv6 message has an 8-byte header
        return DROP_BAD_L4_LEN
    typ = ic[0]
    m.icmp_type = typ
    m.icmp_code = ic[1]
    m.flags |= PKT_F_L4
    if icmp_is_echo(m.t.family, typ):
        m.t.sport = m.t.dport = load_be16(ic + 4)   # the identifier stands in for ports
    elif ((m.t.family == 4 and (typ == 3 or typ == 4 or typ == 5 or typ == 11 or typ == 12))
          or (m.t.family == 6 and 1 <= typ <= 4)):
        parse_quote(p, off + 8, end, m)
    return DROP_NONE


cdef inline void parse_quote(const uint8_t *p, uint32_t off, uint32_t end, pkt_meta *m) noexcept nogil:
    """The packet an ICMP error quotes, into m.inner. Quotes are routinely cut short (RFC 792 asks
    for 8 bytes of L4 only), so a short quote leaves fields unset rather than dropping the error:
    no complete IP header, no PKT_F_ICMP_ERROR; no ports, no PKT_F_INNER_L4. Never reads past end."""
    cdef const uint8_t *ip = p + off
    cdef uint32_t room = end - off
    cdef uint32_t l4 = off
    cdef uint32_t hl
    cdef uint16_t xflags = 0, xfrag = 0
    cdef uint8_t proto
    cdef int k
    cdef pkt_tuple *t = &m.inner
    if m.t.family == 4:
        if room < 20 or ip[0] >> 4 != 4:
            return
        hl = (ip[0] & 0xf) << 2
        if hl < 20 or hl > room:
            return
        proto = ip[9]
        t.saddr[0] = load_u32(ip + 12)
        t.daddr[0] = load_u32(ip + 16)
        if load_be16(ip + 6) & 0x1fff:
            xflags = PKT_F_LATER_FRAG
        l4 += hl
    else:
        if room < 40 or ip[0] >> 4 != 6:
            return
        proto = ip[6]
        l4 += 40
        if ip6_walk(p, &l4, end, &proto, &xflags, &xfrag) != DROP_NONE:
            return
        for k in range(4):
            t.saddr[k] = load_u32(ip + 8 + 4 * k)
            t.daddr[k] = load_u32(ip + 24 + 4 * k)
    t.proto = proto
    t.family = m.t.family
    m.inner_l3_off = <uint16_t>off
    m.flags |= PKT_F_ICMP_ERROR
    if xflags & PKT_F_LATER_FRAG:
        return
    room = end - l4
    if proto == P_TCP or proto == P_UDP or proto == P_SCTP:
        if room < 4:
            return
        t.sport = load_be16(p + l4)
        t.dport = load_be16(p + l4 + 2)
    elif (proto == P_ICMP and t.family == 4) or (proto == P_ICMPV6 and t.family == 6):
        if room < 8:
            return
        if icmp_is_echo(t.family, p[l4]):
            t.sport = t.dport = load_be16(p + l4 + 4)
    else:
        return
    m.inner_l4_off = <uint16_t>l4
    m.flags |= PKT_F_INNER_L4


def parse(Burst burst, counters=None):
    """Run the parser stage over the burst's pending packets (tests, tools).

    Returns (counters, drops): uint64 arrays indexed like burst.COUNTERS and burst.DROP_REASONS.
    Pass counters=(counters, drops) to accumulate into existing arrays instead."""
    counters = stage_counters(counters)
    cdef uint64_t[::1] cnt = counters[0]
    cdef uint64_t[::1] drops = counters[1]
    with nogil:
        parse_burst(&burst.b, &cnt[0], &drops[0])
    return counters
