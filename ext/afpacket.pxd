# AF_PACKET port: TPACKET_V3 mmapped RX ring, sendmmsg TX. Other Cython modules (the worker) call
# the cdef entry points on &burst.b; Python code uses rx() / tx().
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from dataplane.includes.pkt cimport burst_t
from dataplane.port cimport Port
from dataplane.includes.sys_net cimport mmsghdr, iovec, tpacket_block_desc

cdef class AfPacketPort(Port):
    # RX ring: block_nr blocks of block_size bytes; the kernel hands a block over whole.
    cdef uint8_t *ring
    cdef size_t ring_size
    cdef uint32_t block_size
    cdef uint32_t block_nr
    # Cursor: the block being consumed, its next frame and how many frames it still holds.
    # A burst may end mid-block; the next rx() resumes here.
    cdef uint32_t cur_block
    cdef uint8_t *cur_frame
    cdef uint32_t cur_left
    # TX scratch, grown to the largest burst seen: one message of two iovecs per frame.
    cdef mmsghdr *msgs
    cdef iovec *iovs
    cdef uint32_t msgs_cap
    cdef uint64_t n_csum_fixed, n_rx_dropped

    cdef void _release_block(self, tpacket_block_desc *bd) noexcept nogil
    cdef bint _grow_tx(self, uint32_t n) noexcept nogil
    cdef void _release(self) noexcept
    cdef int _setopt(self, int name, int value, what) except -1
