# A live port as the worker sees it: a file descriptor to poll, and burst receive / transmit that
# each backend (AF_PACKET, TAP) implements in C. The Python methods live here once.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from dataplane.includes.pkt cimport burst_t, pkt_data
from dataplane.includes.sys_net cimport ETH_HLEN, l2_hdr_len


cdef inline bint tx_selected(burst_t *b, uint32_t i, uint16_t port_index,
                             uint32_t verdict_mask) noexcept nogil:
    """Frame i is for this port: its verdict is in the mask and its egress port is this one."""
    return (verdict_mask >> b.verdict[i] & 1) and b.meta[i].port_out == port_index


cdef inline bint tx_fits(const uint8_t *frame, uint32_t flen, int mtu) noexcept nogil:
    """An Ethernet frame whose payload fits the MTU (VLAN tags ride on top, as on the wire)."""
    return flen >= ETH_HLEN and flen <= <uint32_t>mtu + l2_hdr_len(frame, flen)

cdef class Port:
    cdef int fd                     # -1 once closed
    cdef readonly object ifname
    cdef readonly int ifindex
    cdef readonly int mtu
    cdef readonly bytes mac         # the interface's MAC (for a tap: the kernel side's)
    cdef uint64_t n_rx, n_tx, n_tx_errors, n_oversize

    # Fill the burst (cleared first) with received frames; returns how many.
    cdef uint32_t rx_burst(self, burst_t *b, uint16_t port_in) noexcept nogil
    # Send the frames whose verdict bit is in verdict_mask and whose port_out is port_index.
    cdef uint32_t tx_burst(self, burst_t *b, uint16_t port_index, uint32_t verdict_mask) noexcept nogil
    cdef int _fail(self, int err, what) except -1
    cdef int _open_check(self) except -1
