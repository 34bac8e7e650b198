from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t
from dataplane.includes.pkt cimport burst_t
from dataplane.route cimport Router

# ip4-input / ip6-input: what Linux checks before a packet reaches conntrack (ip_rcv_core's
# header checksum, ip_route_input_slow's martian sources) plus strict reverse-path for pod ports.
cdef class IpInput:
    cdef readonly Router router       # its LPMs say where a source address lives
    cdef int16_t *nh_pod_port         # per next-hop id: the pod port of an on-link pod route, -1
    cdef uint32_t n_nh
    cdef uint8_t *pod_port            # per port index: 1 = a pod port (strict reverse path)
    cdef uint32_t n_ports
    cdef uint16_t local_port          # the node's own traffic enters here (PORT_NONE: no such port)
    cdef void input_burst(self, burst_t *b, uint64_t *cnt, uint64_t *drops) noexcept nogil
