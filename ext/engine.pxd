# The forwarding engine: the loop that moves bursts from ports through the pipeline and out
# again, on its own thread, without the GIL. The control plane never runs on this thread; it
# parks the loop between two bursts (pause/resume) for the microseconds a table swap takes.
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from dataplane.includes.pkt cimport burst_t, pkt_tuple
from dataplane.burst cimport Burst
from dataplane.pipeline cimport Pipeline

# One monitor event (`dataplane monitor`): a packet as it left the pipeline.
ctypedef struct mon_event:
    uint64_t ts_ns
    pkt_tuple t              # after any NAT rewrite
    uint16_t port_in
    uint16_t port_out
    uint16_t len
    uint8_t verdict
    uint8_t reason
    uint8_t tcp_flags
    uint8_t pad[3]

# Which packets the monitor copies (all zero fields: any).
ctypedef struct mon_filter:
    uint8_t drops_only
    uint8_t proto
    uint8_t family           # family of addr, 0: any address
    uint16_t port            # either side, 0: any
    uint32_t addr[4]         # either side

cdef class Engine:
    cdef readonly Pipeline pipeline
    cdef Burst burst
    cdef Burst probes
    cdef list _ports                 # the Port objects, kept alive for the borrowed pointers
    cdef PyObject **port_ptr         # borrowed: the nogil loop calls their burst methods
    cdef uint8_t *port_dead          # set by the loop when a port's interface went away
    cdef uint8_t *port_used          # scratch: the ports a burst addresses
    cdef uint32_t n_ports
    cdef int epfd
    cdef int wakefd
    # Handshake words, only touched through dp_load / dp_store.
    cdef int running
    cdef int stop_req
    cdef int pause_req
    cdef int parked
    cdef object _pause_lock
    cdef int depth                   # pause() nesting on the holding thread
    cdef uint64_t _pause_t0
    cdef object trace                # TraceWriter or None (the loop takes the GIL per burst)
    cdef uint64_t probe_interval_ns
    # Monitor ring: single producer (the loop), single consumer (the control plane).
    cdef mon_event *mon
    cdef uint32_t mon_mask
    cdef uint32_t mon_head           # written by the loop
    cdef uint32_t mon_tail           # written by the reader
    cdef int mon_on
    cdef mon_filter mf
    # Statistics (read racily by the control plane; each word is written by one thread).
    cdef readonly uint64_t bursts
    cdef readonly uint64_t packets
    cdef readonly uint64_t pauses
    cdef readonly uint64_t pause_max_ns
    cdef readonly uint64_t pause_total_ns
    cdef readonly uint64_t mon_lost

    cdef void loop(self) noexcept nogil
    cdef void quiesce(self) noexcept nogil
    cdef void drain(self, uint32_t index) noexcept nogil
    cdef void transmit(self, burst_t *b) noexcept nogil
    cdef void monitor(self, burst_t *b) noexcept nogil
    cdef void probe(self, uint64_t t) noexcept nogil
