# TAP port: a /dev/net/tun file descriptor in IFF_TAP | IFF_NO_PI mode, one read()/write() per
# frame in nogil loops.
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from dataplane.includes.pkt cimport burst_t
from dataplane.port cimport Port

cdef class TapPort(Port):
    cdef readonly bint created      # we created the device (it goes away when we close it)
