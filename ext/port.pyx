"""The part of a live port every backend shares: polling, argument checks, the GIL boundary."""
from libc.stdint cimport uint16_t, uint32_t
from libc.string cimport strerror

from dataplane.burst cimport Burst
from dataplane.includes.pkt cimport burst_t

__all__ = ["Port"]


cdef class Port:
    def __cinit__(self, *args, **kwargs):
        self.fd = -1

    def fileno(self):
        self._open_check()
        return self.fd

    def rx(self, Burst burst not None, unsigned int port_in=0):
        """Clear `burst` and fill it with up to capacity received frames; 0 when none is pending."""
        cdef uint32_t n
        self._open_check()
        if port_in > 0xffff:
            raise ValueError(f"port_in {port_in} out of range")
        with nogil:
            n = self.rx_burst(&burst.b, <uint16_t>port_in)
        return n

    def tx(self, Burst burst not None, unsigned int port_index, unsigned int verdict_mask):
        """Send the frames whose verdict bit is in verdict_mask (1 << V_FORWARD | ...) and whose
        port_out is port_index; returns how many went out (the rest count as tx_errors)."""
        cdef uint32_t n
        self._open_check()
        if port_index > 0xffff:
            raise ValueError(f"port_index {port_index} out of range")
        with nogil:
            n = self.tx_burst(&burst.b, <uint16_t>port_index, verdict_mask)
        return n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"{type(self).__name__}({self.ifname!r}, ifindex={self.ifindex}, mtu={self.mtu})"

    cdef uint32_t rx_burst(self, burst_t *b, uint16_t port_in) noexcept nogil:
        b.n = 0
        return 0

    cdef uint32_t tx_burst(self, burst_t *b, uint16_t port_index, uint32_t verdict_mask) noexcept nogil:
        return 0

    cdef int _fail(self, int err, what) except -1:
        raise OSError(err, f"{self.ifname}: {what}: {strerror(err).decode()}")

    cdef int _open_check(self) except -1:
        if self.fd < 0:
            raise ValueError(f"{self.ifname}: port is closed")
        return 0
