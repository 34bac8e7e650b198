from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from dataplane.includes.pkt cimport burst_t, pkt_tuple
from dataplane.conntrack cimport Conntrack, ct_entry, ct_tcp_seg
from dataplane.lb cimport LBTable

cdef enum:
    EXH_SLOTS = 256           # Services whose nat_exhausted drops are counted apart (then "other")

cdef class CtNat:
    cdef readonly Conntrack ct
    cdef readonly LBTable lb
    cdef uint32_t exh_ids[EXH_SLOTS]     # nat_exhausted drops per Service (open addressing by id)
    cdef uint64_t exh_counts[EXH_SLOTS]
    cdef uint64_t exh_egress         # ... of masqueraded pod egress (no Service)
    cdef uint64_t exh_other          # ... of Services beyond the table
    cdef void count_exhausted(self, uint32_t svc_id) noexcept nogil
    cdef void run(self, burst_t *b, uint64_t now_ns, uint64_t *cnt, uint64_t *drops) noexcept nogil
    cdef bint one(self, burst_t *b, uint32_t i, const pkt_tuple *key, uint32_t hash, int64_t hit,
                  uint8_t dir, uint64_t now_ns, uint64_t *cnt, uint64_t *drops) noexcept nogil
    cdef bint new_flow(self, burst_t *b, uint32_t i, uint64_t now_ns, const ct_tcp_seg *seg,
                       uint64_t *cnt, uint64_t *drops) noexcept nogil
    cdef int64_t create(self, burst_t *b, uint32_t i, pkt_tuple *reply, uint8_t ct_flags,
                        uint32_t svc_id, uint32_t backend_id, uint64_t now_ns,
                        uint64_t *drops) noexcept nogil
    cdef void translate(self, burst_t *b, uint32_t i, ct_entry *e, uint8_t dir,
                        uint64_t *drops) noexcept nogil
    cdef void related(self, burst_t *b, uint32_t i, int64_t hit, uint8_t dir, uint64_t *cnt,
                      uint64_t *drops) noexcept nogil
    cdef void reject(self, burst_t *b, uint32_t i, uint64_t *cnt, uint64_t *drops, uint8_t reason,
                     bint tcp_rst) noexcept nogil
