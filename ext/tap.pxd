# TAP port: a /dev/net/tun file descriptor in IFF_TAP | IFF_NO_PI mode, one read()/write() per
# frame in nogil loops.
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from dataplane.includes.pkt cimport burst_t

cdef class TapPort:
    cdef int fd
    cdef readonly object name
    cdef readonly int ifindex
    cdef readonly int mtu
    cdef readonly bytes mac         # the tap interface's MAC: the kernel side's
    cdef readonly bint created      # we created the device (it goes away when we close it)
    cdef uint64_t n_rx, n_tx, n_tx_errors, n_oversize

    cdef uint32_t rx_burst(self, burst_t *b, uint16_t port_in) noexcept nogil
    cdef uint32_t tx_burst(self, burst_t *b, uint16_t port_index, uint32_t verdict_mask) noexcept nogil
    cdef int _fail(self, int err, what) except -1
    cdef int _open_check(self) except -1
