"""Input checks stage (VPP's ip4-input / ip6-input), run after the parser and neighbour stage
and before conntrack, so nothing that Linux would refuse at ip_rcv / ip_route_input can create a
conntrack entry or be NATed to a pod.

  bad_csum     IPv4 header checksum wrong (ip_rcv_core). Checked here for every IPv4 packet: a SYN
               with a broken header must not take a conntrack entry.
  martian_src  sources no host may send from, on any port (ip_route_input_slow,
               ip6_rcv_core): IPv4 0.0.0.0/8 (0.0.0.0 only to 255.255.255.255, the DHCP case),
               127.0.0.0/8, multicast 224/4, class E 240/4 and 255.255.255.255; IPv6 ::1, ::
               (only to multicast, duplicate address detection), multicast ff00::/8 and
               IPv4-mapped ::ffff:0:0/96.
  spoofed_src  a source of this node arriving from outside: a node IP on any port but the local
               port, a local pod's address on any port but that pod's.
  rpf          strict reverse path on pod ports: a pod may only send from its own addresses.

Which ports are pod ports, and which addresses are local pods', comes from the routes: a port
whose routes are all on-link and inside the cluster CIDRs is a pod port, and those routes are its
pods' addresses (a port with a gateway route, or any route outside the cluster CIDRs, is an
uplink). The source's longest-prefix match in the router's own tables gives the route a reply
would take, so the check is Linux's strict rp_filter restricted to pod ports. IPv6 link-local
sources (fe80::/10, neighbour discovery) are scoped to the link and skip the address checks.
"""
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t

from dataplane.includes.pkt cimport (
    burst_t, pkt_meta, pkt_data, pkt_drop, V_PENDING, L3_IP4, L3_IP6, PORT_NONE, DROP_BAD_CSUM,
    DROP_MARTIAN_SRC, DROP_SPOOFED_SRC, DROP_RPF,
)
from dataplane.includes.bytes cimport bswap32
from dataplane.csum cimport ip4_hdr_csum_ok
from dataplane.route cimport Router, NH_ID_LOCAL

__all__ = ["IpInput"]


cdef enum:
    SRC6_OK = 0
    SRC6_MARTIAN = 1
    SRC6_LINK = 2       # link-local: valid, but only meaningful on its link


cdef inline uint8_t _ip6_src_class(const uint32_t *s, const uint32_t *d) noexcept nogil:
    cdef uint32_t w0 = bswap32(s[0])
    if w0 == 0 and s[1] == 0:
        if s[2] == 0 and (s[3] == 0 or bswap32(s[3]) == 1):
            # :: may only be used for duplicate address detection (to a multicast group); ::1
            # never leaves a host.
            return SRC6_OK if s[3] == 0 and (bswap32(d[0]) >> 24) == 0xff else SRC6_MARTIAN
        if bswap32(s[2]) == 0xffff:
            return SRC6_MARTIAN         # IPv4-mapped
    if (w0 >> 24) == 0xff:
        return SRC6_MARTIAN             # multicast
    if (w0 >> 22) == (0xfe80 >> 6):
        return SRC6_LINK
    return SRC6_OK


cdef class IpInput:
    def __cinit__(self, Router router not None, unsigned int n_ports, pod_routes=(),
                  local_port=None):
        """pod_routes: (prefix, port index) of the on-link routes to pods; local_port: index of
        the port the node's own traffic enters by (None: node IPs never arrive as sources)."""
        cdef int32_t nh
        self.router = router
        self.n_ports = n_ports
        self.n_nh = router.cap
        self.local_port = PORT_NONE if local_port is None else local_port
        self.nh_pod_port = <int16_t *>PyMem_Calloc(self.n_nh, sizeof(int16_t))
        self.pod_port = <uint8_t *>PyMem_Calloc(max(n_ports, 1), 1)
        if self.nh_pod_port == NULL or self.pod_port == NULL:
            raise MemoryError()
        for k in range(self.n_nh):
            self.nh_pod_port[k] = -1
        for prefix, port in pod_routes:
            if not 0 <= port < n_ports:
                raise ValueError(f"pod route {prefix}: no port {port}")
            lpm = router.lpm4 if prefix.version == 4 else router.lpm6
            nh = lpm.lookup(prefix.network_address)
            if 0 <= nh < <int32_t>self.n_nh and nh != NH_ID_LOCAL:
                self.nh_pod_port[nh] = port
            self.pod_port[port] = 1

    def __dealloc__(self):
        PyMem_Free(self.nh_pod_port)
        PyMem_Free(self.pod_port)

    @classmethod
    def from_config(cls, dp, Router router not None):
        """The stage for a DataplaneConfiguration and the router built from it."""
        routes_of = {}
        for r in dp.routes:
            if r.port_index is not None:
                routes_of.setdefault(r.port_index, []).append(r)
        pod_routes = []
        for port, routes in routes_of.items():
            if dp.ports[port].name == dp.local_port or not dp.cluster_cidrs:
                continue
            if all(r.via is None and r.vxlan is None and any(
                    r.prefix.version == c.version and r.prefix.subnet_of(c)
                    for c in dp.cluster_cidrs) for r in routes):
                pod_routes += [(r.prefix, port) for r in routes]
        local = next((p.index for p in dp.ports if p.name == dp.local_port), None)
        return cls(router, len(dp.ports), pod_routes, local)

    @property
    def pod_ports(self):
        return [i for i in range(self.n_ports) if self.pod_port[i]]

    cdef void input_burst(self, burst_t *b, uint64_t *cnt, uint64_t *drops) noexcept nogil:
        cdef uint32_t i, s, d
        cdef pkt_meta *m
        cdef const uint8_t *ip
        cdef int32_t nh
        cdef int16_t owner
        cdef uint8_t why
        for i in range(b.n):
            m = &b.meta[i]
            if b.verdict[i] != V_PENDING:
                continue
            if m.l3 == L3_IP4:
                ip = pkt_data(b, i) + m.l3_off
                if not ip4_hdr_csum_ok(ip, (ip[0] & 0x0F) * 4):
                    pkt_drop(b, i, DROP_BAD_CSUM, drops)
                    continue
                s = bswap32(m.t.saddr[0])
                d = bswap32(m.t.daddr[0])
                if ((s >> 24) == 0 and not (s == 0 and d == 0xffffffffu)) or (s >> 24) == 127 \
                        or s >= 0xe0000000u:
                    pkt_drop(b, i, DROP_MARTIAN_SRC, drops)
                    continue
                if s == 0:
                    continue        # DHCP-style broadcast: nothing to check it against
                nh = self.router.lpm4.lookup_c(s)
            elif m.l3 == L3_IP6:
                why = _ip6_src_class(m.t.saddr, m.t.daddr)
                if why == SRC6_MARTIAN:
                    pkt_drop(b, i, DROP_MARTIAN_SRC, drops)
                    continue
                if why == SRC6_LINK:
                    continue
                nh = self.router.lpm6.lookup_c(<const uint8_t *>m.t.saddr)
            else:
                continue
            if nh == NH_ID_LOCAL:
                if m.port_in != self.local_port:
                    pkt_drop(b, i, DROP_SPOOFED_SRC, drops)
                continue
            owner = self.nh_pod_port[nh] if 0 <= nh < <int32_t>self.n_nh else -1
            if m.port_in < self.n_ports and self.pod_port[m.port_in]:
                if owner != m.port_in:
                    pkt_drop(b, i, DROP_RPF, drops)
            elif owner >= 0:
                pkt_drop(b, i, DROP_SPOOFED_SRC, drops)
