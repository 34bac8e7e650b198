"""Route stage: longest-prefix match on the destination, then local delivery or forwarding.

Forwarding decrements the TTL / hop limit (IPv4 checksum fixed incrementally, RFC 1624),
rewrites the Ethernet addresses to the next hop's and records the egress port. A VXLAN next hop
first wraps the packet for a remote VTEP (ext/vxlan.pyx), then forwards the outer packet through
the route to that VTEP, looked up once when the table is built (routes change only at restart).
Next hops live in a flat table indexed by the LPM result; index 0 is reserved for "this node" so
the node's own addresses are plain host routes in the same LPM.
"""
import ipaddress

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t

from dataplane.includes.pkt cimport (
    burst_t, pkt_meta, pkt_data, pkt_drop, BURST_SIZE, V_PENDING, V_FORWARD, V_LOCAL, V_DROP,
    L3_IP4, L3_IP6, L3_ARP, CNT_ROUTED, CNT_LOCAL, CNT_NEIGH_SOLICIT, CNT_NEIGH_QUEUED, DROP_NOT_IP,
    DROP_NEIGH_QUEUED,
    DROP_NO_ROUTE, DROP_TTL_EXPIRED, DROP_NO_NEIGHBOR, DROP_BAD_ETHERTYPE, DROP_BAD_CSUM,
    DROP_OVERSIZE, CNT_VXLAN_ENCAP,
)
from dataplane.includes.bytes cimport bswap32, load_be16
from dataplane.csum cimport csum_replace2, ip4_hdr_csum_ok
from dataplane.lpm cimport LPM4, LPM6
from dataplane.neigh cimport Neighbours
from dataplane.vxlan cimport vxlan_encap

__all__ = ["Router", "NH_LOCAL"]

NH_LOCAL = NH_ID_LOCAL


cdef class Router:
    """Next-hop table plus the two LPMs; `add_nexthop` returns the id to store in the LPM."""

    def __cinit__(self, LPM4 lpm4 not None, LPM6 lpm6 not None, uint32_t max_nexthops=65536):
        self.lpm4 = lpm4
        self.lpm6 = lpm6
        self.cap = max_nexthops
        self.nh = <nexthop_t *>PyMem_Calloc(max_nexthops, sizeof(nexthop_t))
        if self.nh == NULL:
            raise MemoryError()
        self.nh[NH_ID_LOCAL].kind = NH_KIND_LOCAL
        self.n = 1

    def __dealloc__(self):
        PyMem_Free(self.nh)

    def add_nexthop(self, unsigned int port, bytes src_mac not None, dst_mac=None, via=None):
        """Register a forwarding next hop and return its id. Without dst_mac the MAC of `via`
        (or, for an on-link route, of the packet's destination) comes from the neighbour table."""
        if self.n >= self.cap:
            raise OverflowError(f"next-hop table full ({self.cap} entries)")
        if len(src_mac) != 6 or (dst_mac is not None and len(dst_mac) != 6):
            raise ValueError("MAC addresses are 6 bytes")
        cdef nexthop_t *e = &self.nh[self.n]
        memset(e, 0, sizeof(nexthop_t))
        e.kind = NH_KIND_FORWARD
        e.port = <uint16_t>port
        memcpy(e.smac, <const char *>src_mac, 6)
        e.has_mac = dst_mac is not None
        if dst_mac is not None:
            memcpy(e.dmac, <const char *>dst_mac, 6)
        if via is not None:
            packed = ipaddress.ip_address(via).packed
            e.family = 4 if len(packed) == 4 else 6
            memcpy(e.via, <const char *>packed, len(packed))
        self.n += 1
        return self.n - 1

    def add_vxlan_nexthop(self, unsigned int vni, local, remote, unsigned int port,
                          bytes remote_mac not None, bytes local_mac not None):
        """Register a next hop that encapsulates towards the VTEP `remote` (our VTEP: `local`)
        and return its id; `resolve_underlay` must run once every route is in the LPM."""
        if self.n >= self.cap:
            raise OverflowError(f"next-hop table full ({self.cap} entries)")
        if len(remote_mac) != 6 or len(local_mac) != 6:
            raise ValueError("MAC addresses are 6 bytes")
        cdef bytes local4 = ipaddress.IPv4Address(local).packed
        cdef bytes remote4 = ipaddress.IPv4Address(remote).packed
        cdef nexthop_t *e = &self.nh[self.n]
        memset(e, 0, sizeof(nexthop_t))
        e.kind = NH_KIND_VXLAN
        e.underlay = -1
        e.tun.vni = vni
        e.tun.port = <uint16_t>port
        memcpy(&e.tun.local, <const char *>local4, 4)
        memcpy(&e.tun.remote, <const char *>remote4, 4)
        memcpy(e.tun.inner_dmac, <const char *>remote_mac, 6)
        memcpy(e.tun.inner_smac, <const char *>local_mac, 6)
        self.n += 1
        return self.n - 1

    def resolve_underlay(self):
        """Point every VXLAN next hop at the forwarding next hop that reaches its remote VTEP.
        ValueError names a remote with no such route (none, local, or through a tunnel)."""
        cdef uint32_t k
        cdef int32_t u
        for k in range(self.n):
            if self.nh[k].kind != NH_KIND_VXLAN:
                continue
            u = self.lpm4.lookup_c(bswap32(self.nh[k].tun.remote))
            if u < 0 or self.nh[u].kind != NH_KIND_FORWARD:
                remote = ipaddress.IPv4Address(bswap32(self.nh[k].tun.remote))
                raise ValueError(f"VXLAN remote {remote} needs a route of its own (not local, not "
                                 "through a tunnel)")
            self.nh[k].underlay = u

    def set_local(self, unsigned int port, bytes kernel_mac not None, bytes port_mac not None):
        """Deliver packets for this node out of `port` (a tap into the node's stack), addressed
        to the kernel side's MAC; without this they are left to the stack that shares the NIC."""
        if len(kernel_mac) != 6 or len(port_mac) != 6:
            raise ValueError("MAC addresses are 6 bytes")
        cdef nexthop_t *e = &self.nh[NH_ID_LOCAL]
        e.port = <uint16_t>port
        e.has_mac = True
        memcpy(e.dmac, <const char *>kernel_mac, 6)
        memcpy(e.smac, <const char *>port_mac, 6)

    def set_neighbours(self, Neighbours neigh):
        self.neigh = neigh

    def __len__(self):
        return self.n

    cdef void route_burst(self, burst_t *b, uint64_t now_ns, uint64_t *cnt, uint64_t *drops) noexcept nogil:
        # Gather destinations per family, look them up in bulk, then apply: lookups of a whole
        # burst overlap their cache misses instead of paying them one packet at a time.
        cdef uint32_t addr4[BURST_SIZE]
        cdef uint8_t addr6[BURST_SIZE * 16]
        cdef uint32_t idx4[BURST_SIZE]
        cdef uint32_t idx6[BURST_SIZE]
        cdef int32_t nh4[BURST_SIZE]
        cdef int32_t nh6[BURST_SIZE]
        cdef uint32_t start, end, i, k, n4, n6
        cdef pkt_meta *m
        start = 0
        while start < b.n:
            end = start + BURST_SIZE if start + BURST_SIZE < b.n else b.n
            n4 = 0
            n6 = 0
            for i in range(start, end):
                if b.verdict[i] != V_PENDING:
                    continue
                m = &b.meta[i]
                if m.l3 == L3_IP4:
                    addr4[n4] = bswap32(m.t.daddr[0])
                    idx4[n4] = i
                    n4 += 1
                elif m.l3 == L3_IP6:
                    memcpy(&addr6[n6 * 16], m.t.daddr, 16)
                    idx6[n6] = i
                    n6 += 1
                elif m.l3 == L3_ARP and self.neigh is not None:
                    # The neighbour stage took what is ours; other hosts' ARP ends here.
                    pkt_drop(b, i, DROP_NOT_IP, drops)
                elif m.l3 == L3_ARP:
                    # Replay / shared NIC: the node's stack sees ARP on the interface itself.
                    b.verdict[i] = V_LOCAL
                    cnt[CNT_LOCAL] += 1
                else:
                    pkt_drop(b, i, DROP_BAD_ETHERTYPE, drops)
            if n4:
                self.lpm4.lookup_bulk_c(addr4, nh4, n4)
                for k in range(n4):
                    if is_host_only4(addr4[k]):
                        nh4[k] = NH_ID_LOCAL
                    self.apply(b, idx4[k], nh4[k], now_ns, cnt, drops)
            if n6:
                self.lpm6.lookup_bulk_c(addr6, nh6, n6)
                for k in range(n6):
                    if is_host_only6(&addr6[k * 16]):
                        nh6[k] = NH_ID_LOCAL
                    self.apply(b, idx6[k], nh6[k], now_ns, cnt, drops)
            start = end

    cdef inline void apply(self, burst_t *b, uint32_t i, int32_t nh, uint64_t now_ns,
                           uint64_t *cnt, uint64_t *drops) noexcept nogil:
        cdef pkt_meta *m = &b.meta[i]
        cdef uint8_t *frame
        cdef uint8_t *ip
        cdef uint8_t mac[6]
        cdef bint wrapped = False
        cdef nexthop_t *e
        if nh < 0 or <uint32_t>nh >= self.n:
            pkt_drop(b, i, DROP_NO_ROUTE, drops)
            return
        frame = pkt_data(b, i)
        ip = frame + m.l3_off
        # RFC 1812 5.2.2 / Linux ip_rcv: a corrupt IPv4 header is neither forwarded nor delivered.
        if m.l3 == L3_IP4 and not ip4_hdr_csum_ok(ip, (ip[0] & 0x0F) * 4):
            pkt_drop(b, i, DROP_BAD_CSUM, drops)
            return
        e = &self.nh[nh]
        if e.kind == NH_KIND_LOCAL:
            b.verdict[i] = V_LOCAL
            cnt[CNT_LOCAL] += 1
            if e.has_mac:  # a local port (tap) is configured
                memcpy(frame, e.dmac, 6)
                memcpy(frame + 6, e.smac, 6)
                m.port_out = e.port
            return
        if m.ttl <= 1:
            pkt_drop(b, i, DROP_TTL_EXPIRED, drops)
            return
        if e.kind == NH_KIND_VXLAN:
            if e.underlay < 0:      # resolve_underlay() has not run
                pkt_drop(b, i, DROP_NO_ROUTE, drops)
                return
            ttl_decrement(ip, m)
            if not vxlan_encap(b, i, &e.tun):
                pkt_drop(b, i, DROP_OVERSIZE, drops)
                return
            cnt[CNT_VXLAN_ENCAP] += 1
            wrapped = True
            frame = pkt_data(b, i)
            e = &self.nh[e.underlay]
        if not wrapped:  # an encapsulated packet's TTL was decremented before wrapping
            ttl_decrement(ip, m)
        # Finished but for the destination MAC, so a packet held for its neighbour is ready.
        memcpy(frame + 6, e.smac, 6)
        if e.has_mac:
            memcpy(frame, e.dmac, 6)
        elif self.next_hop_mac(b, i, e, now_ns, mac, cnt, drops):
            memcpy(frame, mac, 6)
        else:
            return
        m.port_out = e.port
        b.verdict[i] = V_FORWARD
        cnt[CNT_ROUTED] += 1


    cdef bint next_hop_mac(self, burst_t *b, uint32_t i, nexthop_t *e, uint64_t now_ns,
                           uint8_t *mac, uint64_t *cnt, uint64_t *drops) noexcept nogil:
        """The next hop's MAC from the neighbour table. On a miss the packet is held until the
        neighbour answers (Linux's unresolved queue) and its slot becomes the ARP request /
        neighbour solicitation, at most one per neighbour per retrans interval."""
        cdef pkt_meta *m = &b.meta[i]
        cdef const uint32_t *target = &m.t.daddr[0]
        cdef bint held
        if e.family:
            target = &e.via[0]
        if self.neigh is None:
            pkt_drop(b, i, DROP_NO_NEIGHBOR, drops)
            return False
        if self.neigh.resolve(e.port, target, m.t.family, now_ns, mac):
            return True
        held = self.neigh.enqueue(b, i, e.port, target, m.t.family, now_ns) == 0
        if held:
            cnt[CNT_NEIGH_QUEUED] += 1
            b.reason[i] = DROP_NEIGH_QUEUED
        else:
            drops[DROP_NO_NEIGHBOR] += 1
            b.reason[i] = DROP_NO_NEIGHBOR
        if self.neigh.solicit(b, i, e.port, target, m.t.family, now_ns) == 0:
            b.verdict[i] = V_FORWARD
            m.port_out = e.port
            cnt[CNT_NEIGH_SOLICIT] += 1
        else:
            b.verdict[i] = V_DROP  # the slot is spent either way: held copy or counted drop
        return False


cdef inline bint is_host_only4(uint32_t a) noexcept nogil:
    # Multicast, limited broadcast and link-local never leave through a router (RFC 1812 5.3.7):
    # they go to the node's stack, which consumes or ignores them.
    return (a >> 28) == 0xE or a == 0xFFFFFFFFU or (a >> 16) == 0xA9FE


cdef inline bint is_host_only6(const uint8_t *a) noexcept nogil:
    # ff00::/8 multicast and fe80::/10 link-local are not forwarded (RFC 4291 2.5.6).
    return a[0] == 0xFF or (a[0] == 0xFE and (a[1] & 0xC0) == 0x80)


cdef inline void ttl_decrement(uint8_t *ip, pkt_meta *m) noexcept nogil:
    cdef uint16_t old_word
    if m.l3 == L3_IP4:
        # TTL shares a 16-bit word with the protocol: patch that word in the checksum.
        old_word = load_be16(ip + 8)
        ip[8] -= 1
        csum_replace2(ip + 10, old_word, load_be16(ip + 8))
    else:
        ip[7] -= 1
    m.ttl -= 1
