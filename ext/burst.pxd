from libc.stdint cimport uint8_t, uint32_t
from dataplane.includes.pkt cimport burst_t

cdef class Burst:
    cdef burst_t b           # stages take &burst.b and run without the GIL
    cdef _view(self, uint8_t *p)
    cdef _check(self, uint32_t i)
