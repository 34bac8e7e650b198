# Neighbour discovery (ARP, RFC 826 / RFC 5227; IPv6 ND, RFC 4861) for ports the kernel has no
# addresses on: answer for the addresses the dataplane owns, resolve next-hop MACs, learn from
# what neighbours send. Linux neighbour-table semantics (net/core/neighbour.c, arp.c, ndisc.c).
#
# Addresses are network-order words as in pkt_tuple: IPv4 in word 0 (only word 0 is read), IPv6 in
# all four. Times are the caller's clock in ns (the pipeline passes the burst's time); states are
# derived from stored deadlines when read, so no timer runs. Single-threaded: one table per
# worker, control-plane calls between bursts.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from dataplane.includes.pkt cimport burst_t

# Entry states, Linux NUD_* names. REACHABLE and STALE entries are usable; STALE ones stay usable
# until `stale_s` after they went stale, then they are expired: unusable and reclaimed.
cpdef enum:
    NUD_NONE = 0               # free slot
    NUD_INCOMPLETE = 1         # solicited, no answer yet
    NUD_REACHABLE = 2          # confirmed within `reachable_s`
    NUD_STALE = 3              # unconfirmed but usable (learned unsolicited, or reachable expired)
    NUD_FAILED = 4             # MAX_PROBES solicitations unanswered (derived, never stored)
    NUD_PERMANENT = 5          # static entry (add_static): never learned over, never expires

cdef enum:
    NEIGH_MAX_PROBES = 3       # mcast_solicit: solicitations before INCOMPLETE becomes FAILED

ctypedef struct neigh_entry:
    uint32_t ip[4]             # key: network order, IPv4 in word 0, unused words zero
    uint64_t reach_until_ns    # REACHABLE before this time, STALE after
    uint64_t expire_ns         # unusable and reclaimable from this time (not PERMANENT)
    uint64_t probe_ns          # last solicitation sent (rate limit, FAILED)
    uint64_t updated_ns        # last MAC or state change (ARP locktime)
    uint16_t port              # key
    uint8_t family             # key: 4 or 6; 0 marks a free slot
    uint8_t state              # NUD_* as stored (FAILED is derived from INCOMPLETE)
    uint8_t mac[6]
    uint8_t probes             # solicitations sent since the entry went INCOMPLETE
    uint8_t used_stale         # resolve() used it while STALE: probe_stale() confirms it

# Open addressing with linear probing, a load factor <= 0.5, backward-shift deletion.
ctypedef struct neigh_table:
    neigh_entry *slots
    uint32_t mask              # slots - 1 (a power of two)
    uint32_t n                 # entries in use
    uint32_t cap               # most entries allowed

# Packets held while their next hop resolves (Linux's unresolved queue, arp_queue): released
# into the burst that brings the answer, dropped as no_neighbor when it does not come in time.
cdef enum:
    NQ_SLOTS = 256             # held packets, all neighbours together
    NQ_PER_NEIGH = 32          # held packets per neighbour
    NQ_FRAME = 2048            # longest frame held (bytes)

ctypedef struct nq_entry:
    uint64_t deadline_ns       # 0: free slot
    uint32_t ip[4]             # the neighbour (key_of form)
    uint16_t port
    uint16_t len
    uint16_t port_in
    uint8_t family

ctypedef struct neigh_stats:
    uint64_t created           # entries created by learning or solicit
    uint64_t expired           # expired entries reclaimed (lookup, gc)
    uint64_t full              # entries not created: table full even after a forced gc
    uint64_t rate_limited      # solicit() refused within retrans_ms of the last one
    uint64_t queue_full        # packets not held: hold queue full (overall or per neighbour)

cdef class Neighbours:
    cdef neigh_table nt        # neighbours
    cdef neigh_table own       # owned addresses (state PERMANENT): answered for on their port
    cdef neigh_stats st
    cdef uint16_t nports
    cdef uint8_t *macs         # 6 bytes per port
    cdef uint8_t *proxy        # per port: answer every ARP request / NS
    cdef uint32_t *src4        # per port: sender IP of our ARP requests (0.0.0.0: none owned)
    cdef uint32_t *src6        # 4 words per port: source of our NSs (first owned, else link-local)
    cdef uint8_t *src_set      # per port: bit 0 src4 / bit 1 src6 came from add_owned
    cdef uint64_t reachable_ns
    cdef uint64_t stale_ns
    cdef uint64_t retrans_ns
    cdef uint64_t next_forced_gc_ns  # a full table runs gc at most once per FORCED_GC interval
    cdef nq_entry *nq          # NQ_SLOTS held packets
    cdef uint8_t *nq_buf       # NQ_SLOTS * NQ_FRAME bytes
    cdef uint32_t nq_used

    # Stage over the pending packets of a burst, after parse. ARP requests and NSs answered become
    # the reply in place (V_FORWARD out of port_in, CNT_NEIGH_REPLY); ARP replies, gratuitous ARP
    # and NAs update the table and are consumed (V_LOCAL); invalid ND messages are dropped
    # (bad_csum, bad_l4_len) and unsupported ARP formats too (bad_len, not_ip). Everything else,
    # requests for addresses not ours included, stays pending.
    cdef void neigh_burst(self, burst_t *b, uint64_t now_ns, uint64_t *cnt, uint64_t *drops) noexcept nogil

    # 1 and the MAC in mac_out for a usable entry (REACHABLE, STALE, PERMANENT), else 0.
    cdef int resolve(self, uint16_t port, const uint32_t *ip, uint8_t family, uint64_t now_ns,
                     uint8_t *mac_out) noexcept nogil

    # Packet i becomes a solicitation for ip out of port (broadcast ARP request; or NS to the
    # solicited-node group with a source link-layer option), from the port's first owned address
    # of the family; with none owned an ARP probe (sender 0.0.0.0, RFC 5227: owners answer it)
    # or an NS from the port's EUI-64 link-local. The entry goes INCOMPLETE. 0: built (the caller
    # forwards it out of port and counts CNT_NEIGH_SOLICIT); -1: packet untouched, because of the
    # rate limit (one per neighbour per retrans_ms), a static entry, a full table, a bad port or
    # a slot too small.
    cdef int solicit(self, burst_t *b, uint32_t i, uint16_t port, const uint32_t *ip,
                     uint8_t family, uint64_t now_ns) noexcept nogil

    # Linux's DELAY/PROBE, simplified: append to the burst a unicast ARP request / NS to the cached
    # MAC of every entry used while STALE (at most one per retrans interval), ready to send out
    # of its port (V_FORWARD, port_out set), so neighbours in use are confirmed before they
    # expire instead of costing a burst to a broadcast re-resolution. Returns how many.
    cdef uint32_t probe_stale(self, burst_t *b, uint64_t now_ns) noexcept nogil
    cdef int _build_request(self, burst_t *b, uint32_t i, uint16_t port, const uint32_t *key,
                            uint8_t family, const uint8_t *unicast_mac) noexcept nogil

    # Hold a copy of packet i (finished but for its destination MAC) until ip on port resolves;
    # 0 held, -1 not (queue full for that neighbour or overall, or frame too long).
    cdef int enqueue(self, burst_t *b, uint32_t i, uint16_t port, const uint32_t *ip,
                     uint8_t family, uint64_t now_ns) noexcept nogil
    # Append the held packets whose neighbour resolved to the burst (V_FORWARD, port_out and
    # destination MAC set) while it has room; drop those held too long (no_neighbor).
    cdef void release(self, burst_t *b, uint64_t now_ns, uint64_t *cnt, uint64_t *drops) noexcept nogil

    # Reclaim expired entries; returns how many.
    cdef uint32_t neigh_gc(self, uint64_t now_ns) noexcept nogil

    # Internals (declared here because the class is).
    cdef void _arp_input(self, burst_t *b, uint32_t i, uint64_t now_ns, uint64_t *cnt,
                         uint64_t *drops) noexcept nogil
    cdef void _nd_input(self, burst_t *b, uint32_t i, uint64_t now_ns, uint64_t *cnt,
                        uint64_t *drops) noexcept nogil
    cdef bint _owns(self, uint16_t port, uint8_t family, const uint32_t *key) noexcept nogil
    cdef neigh_entry *_live(self, uint16_t port, uint8_t family, const uint32_t *key,
                            uint64_t now_ns) noexcept nogil
    cdef neigh_entry *_create(self, uint16_t port, uint8_t family, const uint32_t *key,
                              uint64_t now_ns) noexcept nogil
    cdef void _set(self, neigh_entry *e, const uint8_t *mac, uint8_t state,
                   uint64_t now_ns) noexcept nogil
    cdef bint _update(self, neigh_entry *e, const uint8_t *mac, uint8_t new, bint override,
                      uint64_t now_ns) noexcept nogil
    cdef bint _learn(self, uint16_t port, uint8_t family, const uint32_t *key, const uint8_t *mac,
                     uint64_t now_ns) noexcept nogil
    cdef bint _na_update(self, neigh_entry *e, const uint8_t *lla, uint8_t flags,
                         uint64_t now_ns) noexcept nogil
    cdef uint32_t _sweep(self, uint64_t now_ns, int port, bint flush) noexcept nogil
    cdef uint16_t _port(self, port) except? 0xffff
    cdef _set_source(self, uint16_t port, uint8_t family, const uint32_t *key)
