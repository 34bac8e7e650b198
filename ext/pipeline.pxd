from libc.stdint cimport uint64_t
from dataplane.includes.pkt cimport burst_t
from dataplane.route cimport Router
from dataplane.ctnat cimport CtNat
from dataplane.vxlan cimport VxlanDecap
from dataplane.ip_input cimport IpInput
from dataplane.dnsstage cimport DnsTable

cdef class Pipeline:
    cdef readonly Router router
    cdef readonly CtNat ctnat          # None: a pure router (no conntrack, no Services)
    cdef readonly VxlanDecap vxlan     # None: no VXLAN tunnels end here
    cdef readonly IpInput ip_input     # None: no input checks (checksum, martians, reverse path)
    cdef public DnsTable dns           # None: no DNS answers here; swapped whole between bursts
    cdef readonly object counters      # numpy uint64[CNT_N_COUNTERS], named by burst.COUNTERS
    cdef readonly object drops         # numpy uint64[DROP_N_REASONS], named by burst.DROP_REASONS
    cdef readonly object port_tx       # numpy uint64[n_ports]: frames sent per egress port
    cdef uint64_t *cnt
    cdef uint64_t *drp
    cdef uint64_t *tx
    cdef unsigned int n_ports
    cdef void run(self, burst_t *b, uint64_t now_ns) noexcept nogil
