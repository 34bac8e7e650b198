# pcap / pcapng file I/O straight into bursts. Other Cython modules (replay) drive the cdef
# entry points; Python code uses fill() / write().
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from dataplane.includes.pkt cimport burst_t

# One capture interface: classic pcap has one (the global header), pcapng one per IDB.
ctypedef struct pcap_iface:
    uint32_t linktype
    uint32_t snaplen
    uint64_t ts_mul          # power-of-10 resolution: ts_ns = ts * ts_mul / ts_div + ts_off_ns
    uint64_t ts_div
    uint8_t ts_shift         # power-of-2 resolution 2^-ts_shift (0: use ts_mul / ts_div)
    int64_t ts_off_ns        # if_tsoffset, in ns

cdef class PcapReader:
    cdef readonly object path
    cdef const uint8_t *data     # the whole file, mmapped read-only
    cdef size_t size
    cdef size_t pos              # next record / block to read
    cdef bint ng                 # pcapng (else classic pcap)
    cdef bint swap               # file (pcapng: current section) is in the other byte order
    cdef uint32_t frac_mul       # classic: ns per tick of the fractional timestamp (1000 or 1)
    cdef pcap_iface *ifaces      # classic: exactly 1; pcapng: IDBs of the current section
    cdef uint32_t n_ifaces
    cdef uint32_t ifaces_cap
    cdef int64_t first_linktype  # of the file's first interface; -1 until one is seen
    cdef bint first_nsec
    cdef readonly uint64_t packets_read
    cdef readonly uint64_t oversize     # records larger than a slot (delivered empty, flagged)
    cdef readonly uint64_t over_snaplen # records whose captured length exceeds their snaplen
    # Where the last read stopped on bad input; pos stays on the bad record, so the next fill
    # meets the same error again (that is how a partial burst is returned before raising).
    cdef int err
    cdef size_t err_off
    cdef uint64_t err_val

    cdef Py_ssize_t fill_burst(self, burst_t *b, uint16_t port_in) except -1
    cdef int _open(self) except -1
    cdef int _raise(self) except -1
    cdef int _fill_pcap(self, burst_t *b, uint16_t port_in) noexcept nogil
    cdef int _fill_ng(self, burst_t *b, uint32_t cap, uint16_t port_in) noexcept nogil
    cdef int _idb(self, const uint8_t *body, uint32_t body_len, size_t off) noexcept nogil
    cdef int _fail(self, int err, size_t off, uint64_t val) noexcept nogil
    cdef int _grow_ifaces(self) noexcept nogil

cdef class PcapWriter:
    cdef readonly object path
    cdef int fd
    cdef bint ng
    cdef bint nsec
    cdef uint32_t snaplen
    cdef uint8_t *buf            # records of one burst, written with one write()
    cdef size_t buf_cap
    cdef readonly uint64_t packets_written

    # Writes the frames whose verdict bit is set in verdict_mask (1 << V_FORWARD | ...).
    cdef Py_ssize_t write_burst(self, burst_t *b, uint32_t verdict_mask) except -1
    cdef size_t _put(self, uint8_t *p, const uint8_t *frame, uint32_t length,
                     uint64_t ts_ns) noexcept nogil
    cdef int _reserve(self, size_t need) except -1
    cdef int _flush(self, size_t length) except -1
