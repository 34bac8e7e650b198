# Cluster DNS in the fast path: hot queries (A, AAAA, SRV of names in the cluster zone) to the DNS
# Service are answered from precomputed wire-format records, in place, without the control plane.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from dataplane.includes.pkt cimport burst_t

cdef enum:
    DNS_MAX_UDP = 1232          # largest UDP answer (the control plane's wire.MAX_UDP)
    DNS_CLASSIC_UDP = 512       # without EDNS0

# One answer: the key (lower-case wire name + type) and the records that follow the question.
ctypedef struct dns_entry:
    uint64_t hash               # 0: free slot
    uint32_t key_off            # lower-case name (wire format) in the blob
    uint32_t rr_off             # answer, authority and additional records in the blob
    uint16_t key_len
    uint16_t qtype
    uint16_t rr_len
    uint16_t an                 # record counts of the three sections
    uint16_t ns
    uint16_t ar

# An immutable table built by the control plane (dataplane.dns.stage.compile_table); a new zone
# state is a new table, swapped into the pipeline between bursts.
cdef class DnsTable:
    cdef dns_entry *slots       # open addressing, load factor <= 0.5
    cdef uint32_t mask
    cdef uint8_t *blob
    cdef uint32_t *addr4        # DNS server addresses queried (network order), IPv4
    cdef uint32_t n4
    cdef uint8_t *addr6         # and IPv6, 16 bytes each
    cdef uint32_t n6
    cdef uint16_t port          # UDP port served (53)
    cdef readonly uint32_t size # entries

    # Stage over the pending packets, after parse and before conntrack: a UDP query to a served
    # address and port, with one question found in the table (and at most an OPT record, version
    # 0), becomes its answer in place: ID and question (letter case included) kept, records
    # copied, OPT added when the query had one (DO echoed), TC with no records when the answer
    # exceeds 512 bytes (or the EDNS size, at most DNS_MAX_UDP); Ethernet, IP and UDP addresses
    # swapped, lengths and checksums rewritten, sent back out of port_in (V_FORWARD,
    # CNT_DNS_ANSWER). Everything else, malformed queries included, stays pending.
    cdef void dns_burst(self, burst_t *b, uint64_t *cnt, uint64_t *drops) noexcept nogil
    cdef const dns_entry *find(self, const uint8_t *key, uint16_t key_len, uint16_t qtype) noexcept nogil
    cdef bint serves(self, const uint8_t *ip, uint8_t family) noexcept nogil
