# VXLAN (RFC 7348) as flannel's vxlan backend uses it: Ethernet in UDP/IPv4 between node VTEPs.
# Encapsulation is a next-hop kind of the route stage; decapsulation is a stage of its own.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from dataplane.includes.pkt cimport burst_t

cdef enum:
    VXLAN_ENCAP_LEN = 50       # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8

# One remote VTEP as an encapsulating next hop sees it.
ctypedef struct vxlan_tunnel:
    uint32_t vni
    uint32_t local             # our VTEP address, network order
    uint32_t remote            # the remote VTEP's address, network order
    uint16_t port              # UDP destination port
    uint8_t inner_dmac[6]      # remote VTEP MAC: the inner frame's destination
    uint8_t inner_smac[6]      # our VTEP MAC: the inner frame's source

# Wrap frame i (inner Ethernet addresses set here) into outer IPv4/UDP/VXLAN headers in its
# headroom and make its meta describe the outer packet; the outer Ethernet addresses are left to
# the caller. False (frame untouched) when the headroom is short.
cdef bint vxlan_encap(burst_t *b, uint32_t i, const vxlan_tunnel *t) noexcept nogil

ctypedef struct vxlan_key:
    uint32_t vni
    uint16_t port

cdef class VxlanDecap:
    cdef uint32_t *local       # node IPv4 addresses (network order) that terminate tunnels
    cdef uint32_t n_local
    cdef vxlan_key *keys       # configured (port, VNI) pairs
    cdef uint32_t n_keys
    cdef void decap_burst(self, burst_t *b, uint64_t *cnt, uint64_t *drops) noexcept nogil
    cdef bint is_local(self, uint32_t addr) noexcept nogil
