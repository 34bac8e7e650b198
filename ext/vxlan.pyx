"""VXLAN (RFC 7348) encapsulation and the decapsulation stage, with flannel's conventions: one
VNI per cluster, VTEP MACs configured statically (no flooding, no learning), UDP checksum 0.

Decapsulation runs right after the parser: a UDP datagram to one of the node's addresses on a
configured VXLAN port carrying a configured VNI loses its outer headers in place (data_off moves
forward) and the inner frame is parsed again, so conntrack, NAT and routing see it as a frame
received on the same port. Anything else sent to a VXLAN port is dropped as bad_vxlan, as
Linux's vxlan_rcv drops it (unknown VNI, I flag clear, datagram too short for a frame).
"""
import ipaddress

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from dataplane.includes.pkt cimport (
    burst_t, pkt_meta, pkt_data, pkt_drop, V_PENDING, L3_IP4, PKT_F_L4, PKT_F_FRAGMENT,
    PKT_F_RX_MASK, DROP_NONE, DROP_BAD_VXLAN, DROP_BAD_CSUM, CNT_VXLAN_DECAP,
)
from dataplane.includes.bytes cimport load_be16, load_be32, store_be16, store_be32
from dataplane.csum cimport IPPROTO_UDP, ip4_hdr_csum, ip4_hdr_csum_ok
from dataplane.parse cimport parse_one

__all__ = ["VxlanDecap"]

cdef enum:
    ETH_HLEN = 14
    IP4_HLEN = 20
    UDP_HLEN = 8
    VXLAN_HLEN = 8
    VXLAN_F_I = 0x08           # "VNI present": the one flag RFC 7348 defines
    OUTER_TTL = 64             # Linux's default for tunnels without a ttl setting
    SPORT_MIN = 49152          # RFC 7348 5: source port from the inner flow, in the dynamic range
    SPORT_RANGE = 16384


cdef bint vxlan_encap(burst_t *b, uint32_t i, const vxlan_tunnel *t) noexcept nogil:
    cdef pkt_meta *m = &b.meta[i]
    cdef uint8_t *p
    cdef uint8_t *ip
    cdef uint8_t *udp
    cdef uint16_t sport
    cdef uint32_t inner_len = m.len
    if m.data_off < VXLAN_ENCAP_LEN:
        return False
    p = pkt_data(b, i)
    memcpy(p, t.inner_dmac, 6)
    memcpy(p + 6, t.inner_smac, 6)
    m.data_off -= VXLAN_ENCAP_LEN
    p -= VXLAN_ENCAP_LEN
    store_be16(p + 12, 0x0800)
    ip = p + ETH_HLEN
    ip[0] = 0x45
    ip[1] = 0
    store_be16(ip + 2, <uint16_t>(IP4_HLEN + UDP_HLEN + VXLAN_HLEN + inner_len))
    store_be16(ip + 4, 0)
    store_be16(ip + 6, 0x4000)  # DF: flannel's MTU (1450 inside) keeps frames whole, as Linux does
    ip[8] = OUTER_TTL
    ip[9] = IPPROTO_UDP
    memcpy(ip + 12, &t.local, 4)
    memcpy(ip + 16, &t.remote, 4)
    store_be16(ip + 10, 0)
    store_be16(ip + 10, ip4_hdr_csum(ip, IP4_HLEN))
    # Linux udp_flow_src_port: scale the hash into the range rather than masking it.
    sport = <uint16_t>(SPORT_MIN + ((<uint64_t>m.hash * SPORT_RANGE) >> 32))
    udp = ip + IP4_HLEN
    store_be16(udp, sport)
    store_be16(udp + 2, t.port)
    store_be16(udp + 4, <uint16_t>(UDP_HLEN + VXLAN_HLEN + inner_len))
    store_be16(udp + 6, 0)      # RFC 7348 5: SHOULD be zero over IPv4; Linux's default
    store_be32(udp + 8, <uint32_t>VXLAN_F_I << 24)
    store_be32(udp + 12, t.vni << 8)
    # The meta now describes the outer packet (traces, the neighbour lookup, tx accounting).
    m.len = <uint16_t>(inner_len + VXLAN_ENCAP_LEN)
    m.l3_off = ETH_HLEN
    m.l4_off = ETH_HLEN + IP4_HLEN
    m.l3_len = <uint16_t>(m.len - ETH_HLEN)
    m.ethertype = 0x0800
    m.n_vlans = 0
    m.frag_off = 0
    m.inner_l3_off = 0
    m.inner_l4_off = 0
    m.l3 = L3_IP4
    m.ttl = OUTER_TTL
    m.tcp_flags = 0
    m.icmp_type = 0
    m.icmp_code = 0
    m.flags = (m.flags & PKT_F_RX_MASK) | PKT_F_L4
    memset(&m.t, 0, sizeof(m.t))
    memset(&m.inner, 0, sizeof(m.inner))
    m.t.family = 4
    m.t.proto = IPPROTO_UDP
    m.t.saddr[0] = t.local
    m.t.daddr[0] = t.remote
    m.t.sport = sport
    m.t.dport = t.port
    return True


cdef class VxlanDecap:
    """The decapsulation stage's tables: the node's IPv4 addresses and the (port, VNI) pairs of
    the configured tunnels. Both are a handful of entries, scanned linearly."""

    def __cinit__(self, local_ips, tunnels):
        """local_ips: the node's addresses (IPv4 ones are used); tunnels: (port, vni) pairs."""
        local = [ipaddress.ip_address(a).packed for a in local_ips]
        local = [a for a in local if len(a) == 4]
        keys = sorted(set((int(port), int(vni)) for port, vni in tunnels))
        for port, vni in keys:
            if not (1 <= port <= 65535 and 0 <= vni < 1 << 24):
                raise ValueError(f"bad VXLAN port {port} / VNI {vni}")
        self.local = <uint32_t *>PyMem_Malloc(max(len(local), 1) * sizeof(uint32_t))
        self.keys = <vxlan_key *>PyMem_Malloc(max(len(keys), 1) * sizeof(vxlan_key))
        if self.local == NULL or self.keys == NULL:
            raise MemoryError()
        for k, a in enumerate(local):
            memcpy(&self.local[k], <const char *>a, 4)
        for k, (port, vni) in enumerate(keys):
            self.keys[k].port = port
            self.keys[k].vni = vni
        self.n_local = len(local)
        self.n_keys = len(keys)

    def __dealloc__(self):
        PyMem_Free(self.local)
        PyMem_Free(self.keys)

    cdef void decap_burst(self, burst_t *b, uint64_t *cnt, uint64_t *drops) noexcept nogil:
        cdef uint32_t i, k, vni, udp_len, inner_off
        cdef uint8_t why
        cdef bint port_hit, vni_hit
        cdef pkt_meta *m
        cdef const uint8_t *p
        cdef const uint8_t *vx
        for i in range(b.n):
            m = &b.meta[i]
            if (b.verdict[i] != V_PENDING or m.l3 != L3_IP4 or m.t.proto != IPPROTO_UDP
                    or (m.flags & (PKT_F_L4 | PKT_F_FRAGMENT)) != PKT_F_L4):
                continue
            port_hit = False
            for k in range(self.n_keys):
                port_hit |= self.keys[k].port == m.t.dport
            if not port_hit or not self.is_local(m.t.daddr[0]):
                continue
            p = pkt_data(b, i)
            # ip_rcv checks the header before the UDP socket ever sees it.
            if not ip4_hdr_csum_ok(p + m.l3_off, m.l4_off - m.l3_off):
                pkt_drop(b, i, DROP_BAD_CSUM, drops)
                continue
            udp_len = load_be16(p + m.l4_off + 4)   # the parser bounded it by the IP payload
            if udp_len < UDP_HLEN + VXLAN_HLEN + ETH_HLEN:
                pkt_drop(b, i, DROP_BAD_VXLAN, drops)
                continue
            vx = p + m.l4_off + UDP_HLEN
            vni = load_be32(vx + 4) >> 8
            vni_hit = False
            for k in range(self.n_keys):
                vni_hit |= self.keys[k].port == m.t.dport and self.keys[k].vni == vni
            if not (vx[0] & VXLAN_F_I) or not vni_hit:
                pkt_drop(b, i, DROP_BAD_VXLAN, drops)
                continue
            inner_off = m.l4_off + UDP_HLEN + VXLAN_HLEN
            m.data_off = <uint16_t>(m.data_off + inner_off)
            m.len = <uint16_t>(udp_len - UDP_HLEN - VXLAN_HLEN)
            why = parse_one(b, i)
            if why != DROP_NONE:
                pkt_drop(b, i, why, drops)
                continue
            cnt[CNT_VXLAN_DECAP] += 1

    cdef inline bint is_local(self, uint32_t addr) noexcept nogil:
        cdef uint32_t k
        for k in range(self.n_local):
            if self.local[k] == addr:
                return True
        return False

