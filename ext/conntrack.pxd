# Connection tracking table (nf_conntrack + nf_nat model). One entry per connection holds the
# `orig` tuple (as the initiator sent it, before NAT) and the `reply` tuple (as replies arrive,
# after NAT). Both are keys of one open-addressing hash table, so a packet in either direction
# finds its entry with one lookup. A packet in direction ORIG leaves as invert(reply), one in
# direction REPLY as invert(orig); the NAT stage derives that from the entry. See conntrack.pyx.
#
# Names follow Cilium's conntrack.h (ct_lookup, ct_create, ...); the plain names (lookup, create,
# update, entries, ...) are the Python API for tests and the control plane.
#
# Single-threaded: one table per worker, no locks. Entry indices are stable for an entry's life;
# only delete / sweep / a reclaim of an expired entry frees one (LIFO reuse afterwards).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from dataplane.includes.pkt cimport (
    pkt_tuple, SCTP_F_INIT, SCTP_F_INIT_ACK, SCTP_F_COOKIE_ECHO, SCTP_F_COOKIE_ACK, SCTP_F_SHUTDOWN,
    SCTP_F_SHUTDOWN_ACK, SCTP_F_SHUTDOWN_COMPLETE, SCTP_F_ABORT,
)

# cpdef enums are also module-level ints of dataplane.conntrack.
cpdef enum:
    CT_DIR_ORIG = 0
    CT_DIR_REPLY = 1

# ct_create() errors (an index is >= 0).
cpdef enum:
    CT_ERR_FULL = -1          # no free entry (stats full_drops)
    CT_ERR_COLLISION = -2     # reply tuple taken by another entry: pick another NAT port
    CT_ERR_EXISTS = -3        # orig tuple already tracked: the caller should have looked it up

# ct_update() results, Cilium's vocabulary. CT_NEW / CT_RELATED are for the pipeline (lookup miss,
# ICMP error quoting a tracked flow); ct_update() itself returns the other four.
cpdef enum:
    CT_NEW = 0
    CT_ESTABLISHED = 1        # accepted, direction ORIG
    CT_REPLY = 2              # accepted, direction REPLY
    CT_RELATED = 3
    CT_INVALID = 4            # does not fit the state machine: count and drop the packet
    CT_REOPEN = 5             # SYN on a closed TCP entry: entry deleted, handle as a new flow

# ct_entry.flags. DNAT / SNAT are the creator's; the rest belong to the table.
cpdef enum:
    CT_F_SEEN_REPLY = 0x01    # a packet was accepted in direction REPLY
    CT_F_ASSURED = 0x02       # two-way traffic beyond the handshake (never early-dropped by Linux)
    CT_F_DNAT = 0x04
    CT_F_SNAT = 0x08
    CT_F_CLOSE_INIT = 0x10    # TCP: a FIN started the close (allows reopen from TIME_WAIT/CLOSE)
    CT_F_SIM_OPEN = 0x20      # TCP: simultaneous open seen (SYN_SENT2)
    CT_F_CHALLENGE = 0x40     # TCP: SYN ignored in LAST_ACK, an ACK may be an RFC 5961 challenge
    CT_F_ALL = 0x7f

# ct_entry.state: one enum per protocol. TCP follows nf_conntrack_proto_tcp.c.
cdef enum:
    TCP_CT_NONE = 0
    TCP_CT_SYN_SENT = 1
    TCP_CT_SYN_RECV = 2
    TCP_CT_ESTABLISHED = 3
    TCP_CT_FIN_WAIT = 4
    TCP_CT_CLOSE_WAIT = 5
    TCP_CT_LAST_ACK = 6
    TCP_CT_TIME_WAIT = 7
    TCP_CT_CLOSE = 8
    TCP_CT_SYN_SENT2 = 9
    TCP_CT_MAX = 10

# SCTP follows nf_conntrack_proto_sctp.c (without HEARTBEAT_SENT: see SCTP_F_*).
cdef enum:
    SCTP_CT_NONE = 0
    SCTP_CT_CLOSED = 1
    SCTP_CT_COOKIE_WAIT = 2
    SCTP_CT_COOKIE_ECHOED = 3
    SCTP_CT_ESTABLISHED = 4
    SCTP_CT_SHUTDOWN_SENT = 5
    SCTP_CT_SHUTDOWN_RECD = 6
    SCTP_CT_SHUTDOWN_ACK_SENT = 7
    SCTP_CT_MAX = 8

# UDP, ICMP echo and other protocols: only whether a reply was seen.
cdef enum:
    CT_UNREPLIED = 0
    CT_REPLIED = 1

cdef enum:
    CT_STATE_FREE = 0xff      # entry slot is on the free list

# Timeout slots (Conntrack.tmo, ns); the Python names are the nf_conntrack sysctl suffixes.
cdef enum ct_tmo_t:
    TMO_TCP_SYN_SENT, TMO_TCP_SYN_RECV, TMO_TCP_ESTABLISHED, TMO_TCP_FIN_WAIT,
    TMO_TCP_CLOSE_WAIT, TMO_TCP_LAST_ACK, TMO_TCP_TIME_WAIT, TMO_TCP_CLOSE,
    TMO_TCP_UNACK, TMO_UDP, TMO_UDP_STREAM, TMO_ICMP,
    TMO_SCTP_CLOSED, TMO_SCTP_COOKIE_WAIT, TMO_SCTP_COOKIE_ECHOED, TMO_SCTP_ESTABLISHED,
    TMO_SCTP_SHUTDOWN_SENT, TMO_SCTP_SHUTDOWN_RECD, TMO_SCTP_SHUTDOWN_ACK_SENT,
    TMO_GENERIC, TMO_MAX

# TCP window tracking, nf_conntrack's ip_ct_tcp_state per direction (td_* as in Linux). Kept in
# the entry's third cache line.
cpdef enum:
    TCPW_WSCALE = 0x01        # the side sent a window scale option on its SYN
    TCPW_SACK_PERM = 0x02     # the side sent SACK-permitted
    TCPW_MAXACK_SET = 0x04    # td_maxack is valid
    TCPW_DATA_UNACK = 0x08    # the side has sent data its peer has not acknowledged
    TCPW_LIBERAL = 0x10       # window checks off for this side (picked up mid-stream)
    TCPW_ALL = 0x1f

ctypedef struct ct_tcp_side:
    uint32_t td_end           # highest seq + len sent
    uint32_t td_maxend        # highest ack + window the peer allowed
    uint32_t td_maxwin        # largest window the side advertised; 0 = side not seen yet
    uint32_t td_maxack        # highest ack the side sent (TCPW_MAXACK_SET)
    uint8_t td_scale          # window scale the side announced
    uint8_t flags             # TCPW_*
    uint8_t pad[2]

# 64 bytes, one cache line, touched by TCP updates only.
ctypedef struct ct_tcp_win:
    ct_tcp_side seen[2]       # per direction CT_DIR_*
    uint32_t last_end         # seq + len of the last packet let through (ignored SYN, RST train)
    uint32_t last_win         # window of the last ignored SYN
    uint8_t last_wscale       # its window scale option and TCPW_WSCALE / TCPW_SACK_PERM
    uint8_t last_flags
    uint8_t pad[14]

# 192 bytes, three cache lines: a lookup touches the key tuples and expires_ns only (the first
# two), a TCP update the window too. Keeping the window in the entry rather than in an array of
# its own saves a TLB miss and a DRAM row per packet.
ctypedef struct ct_entry:
    pkt_tuple orig            # as the initiator sent it (before NAT)
    pkt_tuple reply           # as replies arrive (after NAT)
    uint64_t expires_ns       # dead once the table clock reaches it; 0 = killed
    uint64_t bytes[2]         # per direction (CT_DIR_*)
    uint32_t packets[2]       # per direction; wraps at 2**32 like an interface Counter32
    uint32_t svc_id           # creator's opaque ids; svc_id links the free list while free
    uint32_t backend_id
    uint8_t state             # TCP_CT_* / SCTP_CT_* / CT_(UN)REPLIED by orig.proto; CT_STATE_FREE
    uint8_t flags             # CT_F_*
    uint8_t tcp_last          # TCP: flag class | dir << 3 of the last packet seen by the tracker
    uint8_t pad[5]
    ct_tcp_win win            # TCP window tracking (zero for other protocols)

# The TCP header fields the tracker needs, read by ct_tcp_seg_parse() from the packet.
ctypedef struct ct_tcp_seg:
    uint32_t seq
    uint32_t ack
    uint32_t sack             # highest SACK right edge, or ack
    uint32_t end              # seq + payload length + SYN + FIN
    uint16_t win              # raw (unscaled) window field
    uint8_t wscale            # window scale option value (SYN), capped at 14
    uint8_t opts              # TCPW_WSCALE / TCPW_SACK_PERM options seen; 0x80: sack is from SACK

# Read a TCP segment's fields; `th` points at the TCP header, `seglen` bytes of header + payload
# follow (the parser checked the data offset fits). False if the header does not fit.
cdef bint ct_tcp_seg_parse(const uint8_t *th, uint32_t seglen, ct_tcp_seg *s) noexcept nogil

# Hash slot: the key's 32-bit hash and ref = (index << 1 | dir) + 1, 0 meaning empty.
ctypedef struct ct_slot:
    uint32_t sig
    uint32_t ref

ctypedef struct ct_stats:
    uint64_t created
    uint64_t deleted          # ct_delete(), flush, TCP reopen, a rejected first packet
    uint64_t expired          # reclaimed by sweep or by a lookup that found the entry expired
    uint64_t full_drops       # ct_create() found no free entry
    uint64_t collisions       # ct_create() found the reply tuple taken
    uint64_t invalid          # ct_update() returned CT_INVALID
    uint64_t early_drops      # unreplied entries evicted by ct_create() to make room
    uint64_t out_of_window    # TCP packets outside the window (counted in invalid as well)


cdef class Conntrack:
    cdef ct_entry *ent         # entries
    cdef readonly bint tcp_be_liberal   # nf_conntrack_tcp_be_liberal: no window checks
    cdef readonly dict restore_report   # what the last restore() loaded and skipped
    cdef ct_slot *slots
    cdef uint32_t mask        # slot count - 1 (a power of two >= 4 * capacity)
    cdef uint32_t cap
    cdef uint32_t hwm         # entries [0, hwm) have been handed out at least once
    cdef uint32_t free_head   # free list through svc_id, 0xffffffff = empty
    cdef uint32_t count       # live entries (expired ones included until reclaimed)
    cdef uint32_t cursor      # sweep position in [0, hwm)
    cdef uint64_t now_ns      # table clock: latest time passed to create/update/sweep
    cdef uint64_t tmo[<int>TMO_MAX]
    cdef ct_stats st

    # Entry index of t, or -1; *dir = CT_DIR_ORIG / CT_DIR_REPLY. `hash` = tuple_hash(t) (the
    # parser's meta.hash). An entry expired by the table clock counts as absent and is reclaimed.
    cdef int64_t ct_lookup(self, const pkt_tuple *t, uint32_t hash, uint8_t *dir) noexcept nogil
    # ct_lookup() for n keys with slot and entry prefetches pipelined ahead. Results stay valid
    # until the next ct_create / ct_delete / ct_sweep, or a ct_update returning CT_REOPEN or
    # CT_INVALID: re-look up a burst's later packets of a flow after any of those.
    cdef void ct_lookup_bulk(self, const pkt_tuple **keys, const uint32_t *hashes, int64_t *out,
                             uint8_t *dirs, uint32_t n) noexcept nogil
    # New entry in its protocol's initial state (TCP/SCTP NONE), expiring after the protocol's
    # initial timeout; the caller then passes the packet to ct_update(idx, CT_DIR_ORIG, ...).
    # flags: CT_F_DNAT / CT_F_SNAT (others ignored). Returns the index or CT_ERR_*.
    cdef int64_t ct_create(self, const pkt_tuple *orig, uint32_t orig_hash,
                           const pkt_tuple *reply, uint64_t now_ns, uint32_t svc_id,
                           uint32_t backend_id, uint8_t flags) noexcept nogil
    # Is t a live key (either direction of any entry)? For SNAT port allocation.
    cdef bint ct_tuple_in_use(self, const pkt_tuple *t, uint32_t hash) noexcept nogil
    # The entry, or NULL for an index that is out of range or free.
    cdef ct_entry *ct_get(self, int64_t idx) noexcept nogil
    # Run one packet through the entry's state machine (tcp_flags: TCP flags byte, or SCTP_F_*
    # for SCTP, ignored otherwise; nbytes: L3 length; seg: the TCP segment for window tracking,
    # NULL to skip it for this packet). Returns CT_ESTABLISHED / CT_REPLY
    # (accepted), CT_INVALID or CT_REOPEN. A CT_INVALID on an entry that never accepted a packet
    # deletes it, as Linux discards an unconfirmed conntrack. A RST before any reply is accepted
    # and expires the entry at once (still readable via ct_get for this packet's rewrite).
    cdef int ct_update(self, int64_t idx, uint8_t dir, uint8_t tcp_flags, uint32_t nbytes,
                       uint64_t now_ns, const ct_tcp_seg *seg) noexcept nogil
    cdef void ct_delete(self, int64_t idx) noexcept nogil
    # Examine up to `budget` entries from a wrapping cursor, freeing expired ones; returns how many.
    cdef uint32_t ct_sweep(self, uint64_t now_ns, uint32_t budget) noexcept nogil

    cdef int64_t _find(self, const pkt_tuple *t, uint32_t hash, uint8_t *dir) noexcept nogil
    cdef void _insert(self, uint32_t hash, uint32_t ref) noexcept nogil
    cdef void _unlink(self, uint32_t hash, uint32_t ref) noexcept nogil
    cdef void _free(self, uint32_t idx) noexcept nogil
    cdef int _tcp(self, ct_entry *e, uint32_t idx, uint8_t dir, uint8_t tcp_flags,
                  uint32_t nbytes, const ct_tcp_seg *seg) noexcept nogil
    cdef int _tcp_in_window(self, ct_tcp_win *w, uint8_t old, uint8_t dir, uint8_t tcp_flags,
                            const ct_tcp_seg *seg) noexcept nogil
    cdef int64_t _early_drop(self, uint32_t hash) noexcept nogil
    cdef int _sctp(self, ct_entry *e, uint32_t idx, uint8_t dir, uint8_t chunks,
                   uint32_t nbytes) noexcept nogil
    cdef uint32_t _flush(self, const uint32_t *addr, uint8_t family, uint16_t port,
                         uint8_t proto) noexcept nogil
    cdef _check(self, int64_t index)
    cdef dict _entry_dict(self, uint32_t i)
