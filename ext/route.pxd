from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t
from dataplane.includes.pkt cimport burst_t
from dataplane.lpm cimport LPM4, LPM6
from dataplane.neigh cimport Neighbours
from dataplane.vxlan cimport vxlan_tunnel

cdef enum:
    NH_ID_LOCAL = 0        # next-hop id reserved for "this node" (host routes of node IPs)
    NH_KIND_LOCAL = 0
    NH_KIND_FORWARD = 1
    NH_KIND_VXLAN = 2      # encapsulate towards a remote VTEP, then forward through `underlay`

ctypedef struct nexthop_t:
    uint8_t kind
    uint8_t has_mac        # 0: resolve through the neighbour table (or drop: no_neighbor)
    uint16_t port          # egress port index
    uint8_t dmac[6]        # next hop's MAC
    uint8_t smac[6]        # egress port's MAC
    uint32_t via[4]        # gateway address (network order words); family 0: on-link route,
    uint8_t family         # the packet's own destination is the neighbour to resolve
    int32_t underlay       # VXLAN: the FORWARD next hop towards tun.remote (fixed at build)
    vxlan_tunnel tun       # VXLAN: the tunnel's headers

cdef class Router:
    cdef readonly LPM4 lpm4
    cdef readonly LPM6 lpm6
    cdef readonly Neighbours neigh  # None: next hops without a MAC are dropped (replay)
    cdef nexthop_t *nh     # flat table indexed by the LPM result
    cdef uint32_t n        # entries in use (entry 0 is "this node")
    cdef uint32_t cap
    cdef void route_burst(self, burst_t *b, uint64_t now_ns, uint64_t *cnt, uint64_t *drops) noexcept nogil
    cdef void apply(self, burst_t *b, uint32_t i, int32_t nh, uint64_t now_ns, uint64_t *cnt,
                    uint64_t *drops) noexcept nogil
    cdef bint next_hop_mac(self, burst_t *b, uint32_t i, nexthop_t *e, uint64_t now_ns,
                           uint8_t *mac, uint64_t *cnt, uint64_t *drops) noexcept nogil
