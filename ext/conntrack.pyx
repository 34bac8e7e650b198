"""Connection tracking table: Linux nf_conntrack semantics over flat, fixed-capacity memory.

Layout
  entries  ct_entry[capacity], 192 bytes each, 64-byte aligned; handed out from a bump pointer
           (hwm) and then a LIFO free list threaded through svc_id, so nothing is touched at start.
  slots    ct_slot[2**k], 8 bytes each, k the smallest with 2**k >= 4 * capacity: the table holds
           two keys per entry, so its load factor never exceeds 0.5 and linear probes stay short.
           The third cache line is the TCP window (only TCP updates touch it).
  Memory   192 + 32 = 224 bytes per entry for a power-of-two capacity (up to 256 otherwise):
           1M entries = 224 MiB. Pages are faulted in only as entries are used.

Full table: ct_create evicts an entry that is not ASSURED (or a TCP connection already closing)
from a hash-chosen run of EARLY_DROP_RANGE entries, as Linux's early_drop() does, so a flood of
unanswered SYNs cannot lock out new connections; only a table full of ASSURED entries refuses.

Open addressing with linear probing; a slot holds the key's full 32-bit hash, compared before the
40-byte tuple. Deletion shifts the rest of the probe run back (no tombstones), so long runs do not
build up under churn and lookups never scan dead slots. The hash is computed once by the parser
(meta.hash = tuple_hash(&meta.t)) and passed in, as with rte_hash's *_with_hash calls.

Time: create / update / sweep advance a table clock (the latest now_ns seen, so a stale timestamp
never moves it back); lookups judge expiry by it. The pipeline sweeps once per burst with the
burst's time, so the clock is at most one burst old.

Protocol trackers follow net/netfilter/nf_conntrack_proto_{tcp,udp,sctp}.c with these limits:
  TCP   the tcp_conntracks state table, tcp_valid_flags check, loose pick-up (tcp_loose=1),
        ignored packets (sIG) and the SYN/ACK resync, TIME_WAIT/CLOSE reopen, RFC 5961
        challenge-ACK in LAST_ACK, simultaneous open, and the timeout rules (RST -> close, SYN
        retransmits without a reply do not refresh, unreplied pick-ups and unacknowledged data
        capped at tcp_unacknowledged, ASSURED on the ACK after SYN_RECV or a reply to a
        pick-up). Window tracking is tcp_in_window(): per direction td_end / td_maxend /
        td_maxwin / td_maxack and the window scale and SACK-permitted options of the SYNs
        (ct_tcp_seg_parse reads them in the stage); a segment outside the window, or whose ACK
        acknowledges unsent data, is CT_INVALID, an overly delayed ACK is let through without
        touching the state. A RST closes the entry only at exactly the sequence number the peer
        acknowledged (or the end of this side's last segment); below it, it is invalid; inside
        the window but not exact, it passes and keeps the state, so the endpoint's RFC 5961
        challenge ACK can follow (Linux also applies the CLOSE timeout then; we keep the
        state's). Entries picked up mid-stream take the window from their first packet and stay
        liberal, as Linux's tcp_new() makes them; tcp_be_liberal (kube-proxy's tcpBeLiberal)
        accepts out-of-window segments everywhere. Not modelled: the retransmission counter
        (tcp_max_retrans) and NAT sequence offsets (our NAT never changes sequence numbers).
  UDP   unreplied timeout until a reply has been seen; a packet after that refreshes to
        udp_stream and sets ASSURED (Linux >= 5.x also waits 2 s from creation: not modelled).
  SCTP  the sctp_conntracks table from chunk bits (SCTP_F_*); no verification-tag checks and no
        HEARTBEAT-created secondary-path entries. ASSURED on reaching ESTABLISHED.
  ICMP / ICMPv6 echo (identifier in sport and dport) and other protocols: icmp / generic timeout.
"""
from libc.stdlib cimport calloc, free
from libc.string cimport memset, memcpy
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int8_t, int32_t, int64_t
cimport numpy as cnp
import ipaddress
import os
import secrets
import struct
import zlib

import numpy as np

from dataplane.includes.pkt cimport (
    pkt_tuple, BURST_SIZE, SCTP_F_INIT, SCTP_F_INIT_ACK, SCTP_F_COOKIE_ECHO, SCTP_F_COOKIE_ACK,
    SCTP_F_SHUTDOWN, SCTP_F_SHUTDOWN_ACK, SCTP_F_SHUTDOWN_COMPLETE, SCTP_F_ABORT,
)
from dataplane.parse cimport tuple_hash
from dataplane.includes.bytes cimport load_be16, load_be32

cnp.import_array()

__all__ = [
    "Conntrack", "DEFAULT_TIMEOUTS", "TUPLE_DTYPE", "hash_tuples", "StateFileError",
    "STATE_VERSION",
    "CT_DIR_ORIG", "CT_DIR_REPLY", "CT_ERR_FULL", "CT_ERR_COLLISION", "CT_ERR_EXISTS",
    "CT_NEW", "CT_ESTABLISHED", "CT_REPLY", "CT_RELATED", "CT_INVALID", "CT_REOPEN",
    "CT_F_SEEN_REPLY", "CT_F_ASSURED", "CT_F_DNAT", "CT_F_SNAT",
    "TCP_FIN", "TCP_SYN", "TCP_RST", "TCP_PSH", "TCP_ACK", "TCP_URG",
    "SCTP_F_INIT", "SCTP_F_INIT_ACK", "SCTP_F_COOKIE_ECHO", "SCTP_F_COOKIE_ACK",
    "SCTP_F_SHUTDOWN", "SCTP_F_SHUTDOWN_ACK", "SCTP_F_SHUTDOWN_COMPLETE", "SCTP_F_ABORT",
]

# The SCTP chunk bits live in pkt.pxd (the parser sets them); name them for Python callers too.
globals().update(
    SCTP_F_INIT=SCTP_F_INIT, SCTP_F_INIT_ACK=SCTP_F_INIT_ACK, SCTP_F_COOKIE_ECHO=SCTP_F_COOKIE_ECHO,
    SCTP_F_COOKIE_ACK=SCTP_F_COOKIE_ACK, SCTP_F_SHUTDOWN=SCTP_F_SHUTDOWN,
    SCTP_F_SHUTDOWN_ACK=SCTP_F_SHUTDOWN_ACK, SCTP_F_SHUTDOWN_COMPLETE=SCTP_F_SHUTDOWN_COMPLETE,
    SCTP_F_ABORT=SCTP_F_ABORT)

cdef extern from "stdlib.h" nogil:
    void *aligned_alloc(size_t alignment, size_t size)

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Keys are 40-byte tuples with a zeroed pad: compare them as five words. */
    static inline int ct_tuple_eq(const void *a, const void *b) {
        uint64_t x[5], y[5];
        memcpy(x, a, 40);
        memcpy(y, b, 40);
        return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
    }
    #define ct_prefetch(p) __builtin_prefetch((p), 0, 3)

    /* nf_conntrack_proto_tcp.c: tcp_conntracks[dir][flag class][state] (Linux 6.x). */
    enum { sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2, sIV, sIG };
    enum { TCP_SYN_SET, TCP_SYNACK_SET, TCP_FIN_SET, TCP_ACK_SET, TCP_RST_SET, TCP_NONE_SET };
    static const uint8_t ct_tcp_tbl[2][6][10] = {
      { /* ORIGINAL      sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2 */
        /* syn    */   { sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2 },
        /* synack */   { sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR },
        /* fin    */   { sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV },
        /* ack    */   { sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV },
        /* rst    */   { sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL },
        /* none   */   { sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV } },
      { /* REPLY         sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2 */
        /* syn    */   { sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2 },
        /* synack */   { sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR },
        /* fin    */   { sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV },
        /* ack    */   { sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG },
        /* rst    */   { sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL },
        /* none   */   { sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV } },
    };
    /* tcp_valid_flags: the SYN/ACK/FIN/RST/URG combinations (PSH ignored) tcp_error accepts. */
    #define CT_TCP_VALID_FLAGS ((1ULL << 0x02) | (1ULL << 0x22) | (1ULL << 0x12) | \\
                                (1ULL << 0x04) | (1ULL << 0x14) | (1ULL << 0x11) | \\
                                (1ULL << 0x31) | (1ULL << 0x10) | (1ULL << 0x30))

    /* nf_conntrack_proto_sctp.c: sctp_conntracks[dir][chunk][state], the rows of the chunks
     * in SCTP_F_* bit order, without the HEARTBEAT_SENT column. */
    enum { cNO, cCL, cCW, cCE, cES, cSS, cSR, cSA, cIV };
    static const uint8_t ct_sctp_tbl[2][8][8] = {
      { /* ORIGINAL         cNO  cCL  cCW  cCE  cES  cSS  cSR  cSA */
        /* init         */ { cCL, cCL, cCW, cCE, cES, cCL, cCL, cSA },
        /* init_ack     */ { cCL, cCL, cCW, cCE, cES, cSS, cSR, cSA },
        /* cookie_echo  */ { cCL, cCL, cCE, cCE, cES, cSS, cSR, cSA },
        /* cookie_ack   */ { cCL, cCL, cCW, cES, cES, cSS, cSR, cSA },
        /* shutdown     */ { cCL, cCL, cCW, cCE, cSS, cSS, cSR, cSA },
        /* shutdown_ack */ { cSA, cCL, cCW, cCE, cES, cSA, cSA, cSA },
        /* shutdown_comp*/ { cCL, cCL, cCW, cCE, cES, cSS, cSR, cCL },
        /* abort        */ { cCL, cCL, cCL, cCL, cCL, cCL, cCL, cCL } },
      { /* REPLY            cNO  cCL  cCW  cCE  cES  cSS  cSR  cSA */
        /* init         */ { cIV, cCL, cCW, cCE, cES, cSS, cSR, cSA },
        /* init_ack     */ { cIV, cCW, cCW, cCE, cES, cSS, cSR, cSA },
        /* cookie_echo  */ { cIV, cCL, cCE, cCE, cES, cSS, cSR, cSA },
        /* cookie_ack   */ { cIV, cCL, cCW, cES, cES, cSS, cSR, cSA },
        /* shutdown     */ { cIV, cCL, cCW, cCE, cSR, cSS, cSR, cSA },
        /* shutdown_ack */ { cIV, cCL, cCW, cCE, cES, cSA, cSA, cSA },
        /* shutdown_comp*/ { cIV, cCL, cCW, cCE, cES, cSS, cSR, cCL },
        /* abort        */ { cIV, cCL, cCL, cCL, cCL, cCL, cCL, cCL } },
    };
    """
    int ct_tuple_eq(const void *a, const void *b) nogil
    void ct_prefetch(const void *p) nogil
    const uint8_t ct_tcp_tbl[2][6][10]
    const uint64_t CT_TCP_VALID_FLAGS
    const uint8_t ct_sctp_tbl[2][8][8]
    enum:
        sSS, sSR, sES, sFW, sLA, sTW, sCL, sS2, sIV, sIG
        TCP_SYN_SET, TCP_SYNACK_SET, TCP_FIN_SET, TCP_ACK_SET, TCP_RST_SET, TCP_NONE_SET
        cIV

cdef enum:
    P_ICMP = 1
    P_TCP = 6
    P_UDP = 17
    P_ICMPV6 = 58
    P_SCTP = 132
    NO_FREE = 0xffffffff
    SECOND = 1000000000
    PREFETCH_DIST = 16          # keys between the prefetch stages of ct_lookup_bulk
    EARLY_DROP_RANGE = 64       # entries early_drop examines for a victim (Linux: 8 buckets)
    MAX_WSCALE = 14             # RFC 7323 2.3
    MIN_MAXACKWINDOW = 66000    # nf_conntrack's MAXACKWINDOW floor
    SEG_SACK = 0x80             # ct_tcp_seg.opts: sack comes from a SACK block
    # tcp_in_window() results
    WIN_ACCEPT = 0
    WIN_IGNORE = 1
    WIN_INVALID = 2

cpdef enum:
    TCP_FIN = 0x01
    TCP_SYN = 0x02
    TCP_RST = 0x04
    TCP_PSH = 0x08
    TCP_ACK = 0x10
    TCP_URG = 0x20

# Entry 192 bytes keeps each entry on three whole cache lines; tuples are compared as 40 bytes.
if sizeof(ct_entry) != 192 or sizeof(ct_tcp_win) != 64 or sizeof(pkt_tuple) != 40:
    raise ImportError(f"ct_entry is {sizeof(ct_entry)} bytes, expected 192")

MAX_CAPACITY = 1 << 30     # slot refs hold index * 2 + dir + 1 in 32 bits

# Linux nf_conntrack defaults, seconds. tcp_unacknowledged also caps an unreplied pick-up.
DEFAULT_TIMEOUTS = {
    "tcp_syn_sent": 120, "tcp_syn_recv": 60, "tcp_established": 432000, "tcp_fin_wait": 120,
    "tcp_close_wait": 60, "tcp_last_ack": 30, "tcp_time_wait": 120, "tcp_close": 10,
    "tcp_unacknowledged": 300, "udp": 30, "udp_stream": 120, "icmp": 30,
    "sctp_closed": 10, "sctp_cookie_wait": 3, "sctp_cookie_echoed": 3, "sctp_established": 210,
    "sctp_shutdown_sent": 3, "sctp_shutdown_recd": 3, "sctp_shutdown_ack_sent": 3,
    "generic": 600,
}
_TMO_INDEX = {
    "tcp_syn_sent": TMO_TCP_SYN_SENT, "tcp_syn_recv": TMO_TCP_SYN_RECV,
    "tcp_established": TMO_TCP_ESTABLISHED, "tcp_fin_wait": TMO_TCP_FIN_WAIT,
    "tcp_close_wait": TMO_TCP_CLOSE_WAIT, "tcp_last_ack": TMO_TCP_LAST_ACK,
    "tcp_time_wait": TMO_TCP_TIME_WAIT, "tcp_close": TMO_TCP_CLOSE,
    "tcp_unacknowledged": TMO_TCP_UNACK, "udp": TMO_UDP, "udp_stream": TMO_UDP_STREAM,
    "icmp": TMO_ICMP, "sctp_closed": TMO_SCTP_CLOSED, "sctp_cookie_wait": TMO_SCTP_COOKIE_WAIT,
    "sctp_cookie_echoed": TMO_SCTP_COOKIE_ECHOED, "sctp_established": TMO_SCTP_ESTABLISHED,
    "sctp_shutdown_sent": TMO_SCTP_SHUTDOWN_SENT, "sctp_shutdown_recd": TMO_SCTP_SHUTDOWN_RECD,
    "sctp_shutdown_ack_sent": TMO_SCTP_SHUTDOWN_ACK_SENT, "generic": TMO_GENERIC,
}
assert sorted(_TMO_INDEX) == sorted(DEFAULT_TIMEOUTS) and len(_TMO_INDEX) == TMO_MAX

# Timeout slot per TCP / SCTP state (NONE: the entry's initial timeout).
cdef uint8_t TCP_TMO[10]
TCP_TMO[:] = [TMO_TCP_SYN_SENT, TMO_TCP_SYN_SENT, TMO_TCP_SYN_RECV, TMO_TCP_ESTABLISHED,
              TMO_TCP_FIN_WAIT, TMO_TCP_CLOSE_WAIT, TMO_TCP_LAST_ACK, TMO_TCP_TIME_WAIT,
              TMO_TCP_CLOSE, TMO_TCP_SYN_SENT]
cdef uint8_t SCTP_TMO[8]
SCTP_TMO[:] = [TMO_SCTP_CLOSED, TMO_SCTP_CLOSED, TMO_SCTP_COOKIE_WAIT, TMO_SCTP_COOKIE_ECHOED,
               TMO_SCTP_ESTABLISHED, TMO_SCTP_SHUTDOWN_SENT, TMO_SCTP_SHUTDOWN_RECD,
               TMO_SCTP_SHUTDOWN_ACK_SENT]

TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
              "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")
SCTP_STATES = ("NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED",
               "SHUTDOWN_SENT", "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT")
OTHER_STATES = ("UNREPLIED", "REPLIED")
FLAG_NAMES = ("SEEN_REPLY", "ASSURED", "DNAT", "SNAT", "CLOSE_INIT", "SIM_OPEN", "CHALLENGE")

# numpy view of pkt_tuple, for batch calls (lookup_many, create_many, hash_tuples).
TUPLE_DTYPE = np.dtype([("saddr", ">u4", 4), ("daddr", ">u4", 4), ("sport", "<u2"),
                        ("dport", "<u2"), ("proto", "u1"), ("family", "u1"), ("pad", "<u2")])
assert TUPLE_DTYPE.itemsize == sizeof(pkt_tuple)


cdef inline bint seq_before(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) < 0


cdef inline bint seq_after(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(b - a) < 0


cdef bint ct_tcp_seg_parse(const uint8_t *th, uint32_t seglen, ct_tcp_seg *s) noexcept nogil:
    """tcp_options() / tcp_sack(): window scale and SACK-permitted from a SYN's options, the
    highest SACK right edge from any other segment's."""
    cdef uint32_t doff, k, n, edge, blk
    cdef uint8_t kind, flags
    if seglen < 20:
        return False
    doff = (th[12] >> 4) * 4u
    if doff < 20 or doff > seglen:
        return False
    flags = th[13]
    s.seq = load_be32(th + 4)
    s.ack = load_be32(th + 8)
    s.sack = s.ack
    s.win = load_be16(th + 14)
    s.end = s.seq + (seglen - doff) + (1 if flags & TCP_SYN else 0) + (1 if flags & TCP_FIN else 0)
    s.wscale = 0
    s.opts = 0
    k = 20
    while k < doff:
        kind = th[k]
        if kind == 0:
            break
        if kind == 1:
            k += 1
            continue
        if k + 1 >= doff:
            break
        n = th[k + 1]
        if n < 2 or k + n > doff:
            break
        if flags & TCP_SYN:
            if kind == 3 and n == 3:
                s.opts |= TCPW_WSCALE
                s.wscale = th[k + 2] if th[k + 2] <= MAX_WSCALE else MAX_WSCALE
            elif kind == 4 and n == 2:
                s.opts |= TCPW_SACK_PERM
        elif kind == 5 and n >= 10 and (n - 2) % 8 == 0:
            blk = 2
            while blk < n:
                edge = load_be32(th + k + blk + 4)
                if seq_after(edge, s.sack):
                    s.sack = edge
                blk += 8
            s.opts |= SEG_SACK
        k += n
    return True


cdef inline void _tcp_options(ct_tcp_side *side, const ct_tcp_seg *seg) noexcept nogil:
    side.td_scale = seg.wscale if seg.opts & TCPW_WSCALE else 0
    side.flags = (side.flags & ~(TCPW_WSCALE | TCPW_SACK_PERM)) | (seg.opts & (TCPW_WSCALE | TCPW_SACK_PERM))


cdef inline void _tcp_new(ct_tcp_win *w, uint8_t index, const ct_tcp_seg *seg) noexcept nogil:
    """tcp_new(): a SYN sets up the originator's side; a connection picked up mid-stream starts
    from this packet, with SACK assumed and the window checks off (the scale is unknown)."""
    cdef ct_tcp_side *s0 = &w.seen[0]
    memset(w, 0, sizeof(ct_tcp_win))
    s0.td_end = seg.end
    s0.td_maxwin = seg.win if seg.win else 1
    if index == TCP_SYN_SET:
        s0.td_maxend = seg.end
        _tcp_options(s0, seg)
    else:
        s0.td_maxend = seg.end + s0.td_maxwin
        s0.flags = w.seen[1].flags = TCPW_SACK_PERM | TCPW_LIBERAL


cdef inline void _acct(ct_entry *e, uint8_t dir, uint32_t nbytes) noexcept nogil:
    e.packets[dir] += 1
    e.bytes[dir] += nbytes


cdef inline uint8_t _tcp_class(uint8_t f) noexcept nogil:
    """get_conntrack_index(): RST beats SYN beats FIN beats ACK."""
    if f & TCP_RST:
        return TCP_RST_SET
    if f & TCP_SYN:
        return TCP_SYNACK_SET if f & TCP_ACK else TCP_SYN_SET
    if f & TCP_FIN:
        return TCP_FIN_SET
    if f & TCP_ACK:
        return TCP_ACK_SET
    return TCP_NONE_SET


class StateFileError(ValueError):
    """A conntrack state file that cannot be used at all (foreign, truncated, corrupted)."""


# State file: header (magic, version, entry and window record sizes, entry count, CRC-32 of
# the records), then count records of ct_entry + ct_tcp_win. Little-endian, this build's layout.
_STATE_MAGIC = b"DPCTSTAT"
_STATE_HEADER = struct.Struct("<8sHHHQI")
STATE_VERSION = 2


cdef bint _tuple_ok(const pkt_tuple *t) noexcept nogil:
    if t.pad != 0:
        return False
    if t.family == 4:
        return (t.saddr[1] | t.saddr[2] | t.saddr[3] | t.daddr[1] | t.daddr[2] | t.daddr[3]) == 0
    return t.family == 6


cdef bint _record_ok(const ct_entry *e, const ct_tcp_win *w) noexcept nogil:
    """Could save() have written this entry? Anything else is skipped on restore."""
    cdef uint8_t proto = e.orig.proto
    cdef int d
    if not (_tuple_ok(&e.orig) and _tuple_ok(&e.reply)) or e.reply.family != e.orig.family \
            or e.reply.proto != proto or e.flags & ~CT_F_ALL:
        return False
    if e.tcp_last >> 4 or (e.tcp_last & 7) > TCP_NONE_SET:
        return False
    if proto == P_TCP:
        if e.state >= TCP_CT_MAX or w.last_flags & ~TCPW_ALL or w.last_wscale > MAX_WSCALE:
            return False
        for d in range(2):
            if w.seen[d].td_scale > MAX_WSCALE or w.seen[d].flags & ~TCPW_ALL:
                return False
        return True
    if proto == P_SCTP:
        return e.state < SCTP_CT_MAX
    return e.state <= CT_REPLIED


cdef class Conntrack:
    """Connection tracking table of fixed capacity (see the module docstring for sizing)."""

    def __cinit__(self, capacity=1_048_576, timeouts=None, tcp_be_liberal=False):
        cdef uint64_t nslots = 1
        capacity = int(capacity)
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be in 1..{MAX_CAPACITY}, got {capacity}")
        merged = dict(DEFAULT_TIMEOUTS)
        for name, secs in (timeouts or {}).items():
            if name not in merged:
                raise ValueError(f"unknown conntrack timeout {name!r}; known: {sorted(merged)}")
            if not isinstance(secs, (int, float)) or isinstance(secs, bool) or not secs > 0:
                raise ValueError(f"timeout {name} must be a positive number of seconds, got {secs!r}")
            merged[name] = secs
        for name, secs in merged.items():
            self.tmo[<int>_TMO_INDEX[name]] = <uint64_t>(secs * SECOND)
        while nslots < 4 * <uint64_t>capacity:
            nslots <<= 1
        self.cap = capacity
        self.mask = <uint32_t>(nslots - 1)
        # calloc / aligned_alloc of this size map fresh zero pages: nothing is touched yet.
        self.slots = <ct_slot *>calloc(nslots, sizeof(ct_slot))
        self.ent = <ct_entry *>aligned_alloc(64, <size_t>capacity * sizeof(ct_entry))
        self.tcp_be_liberal = bool(tcp_be_liberal)
        if self.slots == NULL or self.ent == NULL:
            raise MemoryError(f"conntrack of {capacity} entries")
        self.free_head = NO_FREE

    def __dealloc__(self):
        free(self.slots)
        free(self.ent)

    # ---- fast path -------------------------------------------------------------------------

    cdef int64_t _find(self, const pkt_tuple *t, uint32_t hash, uint8_t *dir) noexcept nogil:
        cdef uint32_t j = hash & self.mask
        cdef uint32_t r
        cdef ct_entry *e
        while self.slots[j].ref != 0:
            if self.slots[j].sig == hash:
                r = self.slots[j].ref - 1
                e = &self.ent[r >> 1]
                if ct_tuple_eq(&e.reply if r & 1 else &e.orig, t):
                    if e.expires_ns <= self.now_ns:
                        self.st.expired += 1
                        self._free(r >> 1)
                        return -1
                    dir[0] = r & 1
                    return r >> 1
            j = (j + 1) & self.mask
        return -1

    cdef int64_t ct_lookup(self, const pkt_tuple *t, uint32_t hash, uint8_t *dir) noexcept nogil:
        return self._find(t, hash, dir)

    cdef void ct_lookup_bulk(self, const pkt_tuple **keys, const uint32_t *hashes, int64_t *out,
                             uint8_t *dirs, uint32_t n) noexcept nogil:
        # Software pipeline, PREFETCH_DIST keys apart: key i's home slot is requested, key
        # i - D's slot (now cached) names the entry (and its TCP window) to request, key i - 2D
        # is looked up.
        cdef uint32_t i, j
        cdef ct_slot *s
        cdef ct_entry *e
        for i in range(n + 2 * PREFETCH_DIST):
            if i < n:
                ct_prefetch(&self.slots[hashes[i] & self.mask])
            if PREFETCH_DIST <= i < n + PREFETCH_DIST:
                j = i - PREFETCH_DIST
                s = &self.slots[hashes[j] & self.mask]
                if s.ref != 0 and s.sig == hashes[j]:
                    e = &self.ent[(s.ref - 1) >> 1]
                    ct_prefetch(e)
                    ct_prefetch(<uint8_t *>e + 64)
                    ct_prefetch(<uint8_t *>e + 128)     # the TCP window, read by updates next
            if i >= 2 * PREFETCH_DIST:
                j = i - 2 * PREFETCH_DIST
                out[j] = self._find(keys[j], hashes[j], &dirs[j])

    cdef bint ct_tuple_in_use(self, const pkt_tuple *t, uint32_t hash) noexcept nogil:
        cdef uint8_t d
        return self._find(t, hash, &d) >= 0

    cdef ct_entry *ct_get(self, int64_t idx) noexcept nogil:
        if idx < 0 or idx >= self.hwm or self.ent[idx].state == CT_STATE_FREE:
            return NULL
        return &self.ent[idx]

    cdef void _insert(self, uint32_t hash, uint32_t ref) noexcept nogil:
        # Load <= 0.5 guarantees an empty slot down the run.
        cdef uint32_t j = hash & self.mask
        while self.slots[j].ref != 0:
            j = (j + 1) & self.mask
        self.slots[j].sig = hash
        self.slots[j].ref = ref

    cdef void _unlink(self, uint32_t hash, uint32_t ref) noexcept nogil:
        """Remove the slot holding ref, then shift later members of the run back into the hole:
        a member may fill hole i unless its home lies cyclically in (i, j]."""
        cdef uint32_t mask = self.mask
        cdef uint32_t i = hash & mask
        cdef uint32_t j, home
        while self.slots[i].ref != ref:
            if self.slots[i].ref == 0:
                return      # not linked: nothing to undo
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            if self.slots[j].ref == 0:
                break
            home = self.slots[j].sig & mask
            if ((j - home) & mask) >= ((j - i) & mask):
                self.slots[i] = self.slots[j]
                i = j
        self.slots[i].ref = 0
        self.slots[i].sig = 0

    cdef void _free(self, uint32_t idx) noexcept nogil:
        cdef ct_entry *e = &self.ent[idx]
        cdef uint32_t ref = (idx << 1) + 1
        self._unlink(tuple_hash(&e.orig), ref)
        self._unlink(tuple_hash(&e.reply), ref + 1)
        e.state = CT_STATE_FREE
        e.svc_id = self.free_head
        self.free_head = idx
        self.count -= 1

    cdef int64_t ct_create(self, const pkt_tuple *orig, uint32_t orig_hash,
                           const pkt_tuple *reply, uint64_t now_ns, uint32_t svc_id,
                           uint32_t backend_id, uint8_t flags) noexcept nogil:
        cdef uint32_t reply_hash = tuple_hash(reply)
        cdef uint32_t idx
        cdef uint8_t d
        cdef ct_entry *e
        cdef uint8_t proto = orig.proto
        if now_ns > self.now_ns:
            self.now_ns = now_ns
        if self._find(orig, orig_hash, &d) >= 0:
            return CT_ERR_EXISTS
        # orig == reply (ping to oneself) is one connection, not a collision.
        if not ct_tuple_eq(orig, reply) and self._find(reply, reply_hash, &d) >= 0:
            self.st.collisions += 1
            return CT_ERR_COLLISION
        if self.free_head != NO_FREE:
            idx = self.free_head
            self.free_head = self.ent[idx].svc_id
        elif self.hwm < self.cap:
            idx = self.hwm
            self.hwm += 1
        elif self._early_drop(orig_hash) >= 0:
            idx = self.free_head
            self.free_head = self.ent[idx].svc_id
        else:
            self.st.full_drops += 1
            return CT_ERR_FULL
        e = &self.ent[idx]
        memcpy(&e.orig, orig, sizeof(pkt_tuple))
        memcpy(&e.reply, reply, sizeof(pkt_tuple))
        e.bytes[0] = e.bytes[1] = 0
        e.packets[0] = e.packets[1] = 0
        e.svc_id = svc_id
        e.backend_id = backend_id
        e.state = 0             # TCP_CT_NONE / SCTP_CT_NONE / CT_UNREPLIED
        e.flags = flags & (CT_F_DNAT | CT_F_SNAT)
        e.tcp_last = TCP_NONE_SET
        memset(e.pad, 0, sizeof(e.pad))
        memset(&self.ent[idx].win, 0, sizeof(ct_tcp_win))    # saved with the entry: no stale bytes
        if proto == P_TCP:
            e.expires_ns = now_ns + self.tmo[<int>TMO_TCP_SYN_SENT]
        elif proto == P_UDP:
            e.expires_ns = now_ns + self.tmo[<int>TMO_UDP]
        elif proto == P_SCTP:
            e.expires_ns = now_ns + self.tmo[<int>TMO_SCTP_CLOSED]
        elif proto == P_ICMP or proto == P_ICMPV6:
            e.expires_ns = now_ns + self.tmo[<int>TMO_ICMP]
        else:
            e.expires_ns = now_ns + self.tmo[<int>TMO_GENERIC]
        # The orig key goes in first, so with orig == reply a lookup finds direction ORIG.
        self._insert(orig_hash, (idx << 1) + 1)
        self._insert(reply_hash, (idx << 1) + 2)
        self.count += 1
        self.st.created += 1
        return idx

    cdef int64_t _early_drop(self, uint32_t hash) noexcept nogil:
        """nf_conntrack's early_drop(): the table is full, so evict an entry that never became
        ASSURED (or a TCP connection already closing) from a hash-chosen run of entries, keeping
        established connections. Returns the freed index or -1."""
        cdef uint32_t k, i = hash % self.hwm
        cdef ct_entry *e
        for k in range(EARLY_DROP_RANGE if EARLY_DROP_RANGE < self.hwm else self.hwm):
            e = &self.ent[i]
            if e.state != CT_STATE_FREE and (
                    not e.flags & CT_F_ASSURED or e.expires_ns <= self.now_ns
                    or (e.orig.proto == P_TCP and TCP_CT_FIN_WAIT <= e.state <= TCP_CT_CLOSE)):
                self.st.early_drops += 1
                self._free(i)
                return i
            i = i + 1 if i + 1 < self.hwm else 0
        return -1

    cdef void ct_delete(self, int64_t idx) noexcept nogil:
        if self.ct_get(idx) != NULL:
            self.st.deleted += 1
            self._free(<uint32_t>idx)

    cdef int ct_update(self, int64_t idx, uint8_t dir, uint8_t tcp_flags, uint32_t nbytes,
                       uint64_t now_ns, const ct_tcp_seg *seg) noexcept nogil:
        cdef ct_entry *e = self.ct_get(idx)
        cdef uint8_t proto
        cdef uint8_t seen
        cdef int ret
        if e == NULL or dir > CT_DIR_REPLY:
            self.st.invalid += 1
            return CT_INVALID
        if now_ns > self.now_ns:
            self.now_ns = now_ns
        proto = e.orig.proto
        if proto == P_TCP:
            ret = self._tcp(e, <uint32_t>idx, dir, tcp_flags, nbytes, seg)
        elif proto == P_SCTP:
            ret = self._sctp(e, <uint32_t>idx, dir, tcp_flags, nbytes)
        else:
            # nf_conntrack_udp_packet: stream timeout once a reply has been seen before this
            # packet; ICMP and the generic tracker only refresh.
            seen = e.flags & CT_F_SEEN_REPLY
            if proto == P_UDP:
                if seen:
                    e.expires_ns = self.now_ns + self.tmo[<int>TMO_UDP_STREAM]
                    e.flags |= CT_F_ASSURED
                else:
                    e.expires_ns = self.now_ns + self.tmo[<int>TMO_UDP]
            elif proto == P_ICMP or proto == P_ICMPV6:
                e.expires_ns = self.now_ns + self.tmo[<int>TMO_ICMP]
            else:
                e.expires_ns = self.now_ns + self.tmo[<int>TMO_GENERIC]
            _acct(e, dir, nbytes)
            ret = CT_ESTABLISHED
        if ret == CT_ESTABLISHED:
            if dir == CT_DIR_REPLY:
                e.flags |= CT_F_SEEN_REPLY
                if proto != P_TCP and proto != P_SCTP:
                    e.state = CT_REPLIED
                return CT_REPLY
        elif ret == CT_INVALID:
            self.st.invalid += 1
        return ret

    cdef int _tcp(self, ct_entry *e, uint32_t idx, uint8_t dir, uint8_t tcp_flags,
                  uint32_t nbytes, const ct_tcp_seg *seg) noexcept nogil:
        """nf_conntrack_tcp_packet(). CT_ESTABLISHED = accepted. Without seg (a caller that has
        no segment) the window is neither checked nor updated."""
        cdef uint8_t old = e.state
        cdef uint8_t index = _tcp_class(tcp_flags)
        cdef uint8_t new = ct_tcp_tbl[dir][index][old]
        cdef uint8_t last_index = e.tcp_last & 7
        cdef uint8_t last_dir = e.tcp_last >> 3
        cdef ct_tcp_win *w = &self.ent[idx].win
        cdef ct_tcp_side *side
        cdef bint check_window = seg != NULL
        cdef int res
        cdef uint64_t timeout
        if not (CT_TCP_VALID_FLAGS >> (tcp_flags & 0x37)) & 1:
            new = sIV       # tcp_error(): an impossible flag combination
        if old == TCP_CT_NONE and new != sIV and seg != NULL:
            _tcp_new(w, index, seg)
        if new == sSS and old >= sTW:
            # Reopen from TIME_WAIT / CLOSE if the old connection closed (a FIN was seen) or was
            # reset by this side; otherwise the SYN may be stale and is only let through.
            if (e.flags & CT_F_CLOSE_INIT) or (last_dir == dir and last_index == TCP_RST_SET):
                self.st.deleted += 1
                self._free(idx)
                return CT_REOPEN
            new = sIG
        if new == sIG:
            if (index == TCP_SYNACK_SET and last_index == TCP_SYN_SET and last_dir != dir
                    and (seg == NULL or seg.ack == w.last_end)):
                # This SYN/ACK answers a SYN we ignored: the endpoints are in sync, we were not.
                # Take the sender's window from that SYN and start this side afresh.
                old = sSS
                new = sSR
                e.flags &= ~CT_F_CHALLENGE
                side = &w.seen[last_dir]
                side.td_end = side.td_maxend = w.last_end
                side.td_maxwin = w.last_win if w.last_win else 1
                side.td_scale = w.last_wscale
                side.flags = w.last_flags
                memset(&w.seen[dir], 0, sizeof(ct_tcp_side))
            else:
                e.tcp_last = index | (dir << 3)
                if seg != NULL:
                    w.last_end = seg.end
                    w.last_win = seg.win
                if index == TCP_SYN_SET and dir == CT_DIR_ORIG:
                    e.flags &= ~(CT_F_CHALLENGE | CT_F_SIM_OPEN)
                    if old == sLA:
                        e.flags |= CT_F_CHALLENGE
                    if seg != NULL:
                        w.last_flags = seg.opts & (TCPW_WSCALE | TCPW_SACK_PERM)
                        w.last_wscale = seg.wscale if seg.opts & TCPW_WSCALE else 0
                return CT_ESTABLISHED       # let through, state and timeout untouched
        elif new == sIV:
            if old == TCP_CT_NONE:
                self.st.deleted += 1
                self._free(idx)             # never confirmed: Linux drops the new conntrack
            return CT_INVALID
        elif new == sTW:
            if (old == sLA and index == TCP_ACK_SET and last_dir != dir
                    and last_index == TCP_SYN_SET and e.flags & CT_F_CHALLENGE):
                e.flags &= ~CT_F_CHALLENGE  # RFC 5961 challenge ACK, not the last ACK
                return CT_ESTABLISHED
        elif new == sS2:
            e.flags |= CT_F_SIM_OPEN
        elif new == sSR:
            if dir == CT_DIR_REPLY and index == TCP_ACK_SET and e.flags & CT_F_SIM_OPEN:
                new = sES
        elif new == sCL and index == TCP_RST_SET and seg != NULL:
            # A RST closes the entry only with the exact sequence number the peer expects (its
            # highest ACK), or as the tail of this side's last segment; one merely in the window
            # keeps the state (the endpoint answers it with a challenge ACK, RFC 5961) and one
            # below the peer's ACK is invalid: an off-path RST cannot close a connection.
            side = &w.seen[1 - dir]
            if side.flags & TCPW_MAXACK_SET:
                if not (old == sES and e.flags & CT_F_ASSURED):
                    if seg.seq == 0 or sFW <= old <= sCL:
                        check_window = False
                if check_window and seg.seq != side.td_maxack:
                    if seq_before(seg.seq, side.td_maxack):
                        self.st.out_of_window += 1
                        return CT_INVALID
                    if not (last_index == TCP_ACK_SET and last_dir == dir
                            and seg.seq == w.last_end):
                        new = old
            if (check_window and seg.ack == w.last_end and (
                    (e.flags & CT_F_SEEN_REPLY and last_index == TCP_SYN_SET)
                    or (not e.flags & CT_F_ASSURED and last_index == TCP_ACK_SET))):
                check_window = False        # RST answering a SYN or ACK we let through unchecked
        if check_window:
            res = self._tcp_in_window(w, old, dir, tcp_flags, seg)
            if res == WIN_IGNORE:
                return CT_ESTABLISHED       # let through, state and timeout untouched
            if res == WIN_INVALID:
                self.st.out_of_window += 1
                if old == TCP_CT_NONE:
                    self.st.deleted += 1
                    self._free(idx)
                return CT_INVALID
        if seg != NULL and index == TCP_ACK_SET:
            w.last_end = seg.end            # for a RST that ends this side's train of segments
        e.tcp_last = index | (dir << 3)
        e.state = new
        if old != new and new == sFW:
            e.flags |= CT_F_CLOSE_INIT
        timeout = self.tmo[<int>(TMO_TCP_CLOSE if index == TCP_RST_SET and new == sCL
                                 else TCP_TMO[new])]
        if ((w.seen[0].flags | w.seen[1].flags) & TCPW_DATA_UNACK
                and timeout > self.tmo[<int>TMO_TCP_UNACK]):
            timeout = self.tmo[<int>TMO_TCP_UNACK]
        _acct(e, dir, nbytes)
        if not e.flags & CT_F_SEEN_REPLY:
            if index == TCP_RST_SET:
                e.expires_ns = 0        # only answer a RST: gone at once (nf_ct_kill_acct)
                return CT_ESTABLISHED
            if index == TCP_SYN_SET and old == sSS:
                return CT_ESTABLISHED   # SYN retransmits must not keep a dead entry alive
            if new == sES and timeout > self.tmo[<int>TMO_TCP_UNACK]:
                timeout = self.tmo[<int>TMO_TCP_UNACK]  # unreplied loose pick-up
        elif not e.flags & CT_F_ASSURED and (old == sSR or old == sES) and new == sES:
            e.flags |= CT_F_ASSURED
        e.expires_ns = self.now_ns + timeout
        return CT_ESTABLISHED

    cdef int _tcp_in_window(self, ct_tcp_win *w, uint8_t old, uint8_t dir, uint8_t tcp_flags,
                            const ct_tcp_seg *seg) noexcept nogil:
        """tcp_in_window(): is the segment inside what the receiver can accept, and does its ACK
        acknowledge data that was sent? Updates both sides' windows on success."""
        cdef ct_tcp_side *sender = &w.seen[dir]
        cdef ct_tcp_side *receiver = &w.seen[1 - dir]
        cdef uint32_t seq = seg.seq, ack = seg.ack, end = seg.end, win = seg.win
        cdef uint32_t sack = seg.sack if receiver.flags & TCPW_SACK_PERM else seg.ack
        cdef uint32_t swin, overshot, maxackwin
        cdef bint syn = tcp_flags & TCP_SYN, has_ack = tcp_flags & TCP_ACK
        cdef bint rst = tcp_flags & TCP_RST, seq_ok
        cdef bint liberal = self.tcp_be_liberal or sender.flags & TCPW_LIBERAL
        if sender.td_maxwin == 0:
            if syn:
                # SYN/ACK answering the SYN, or the reply side's SYN in a simultaneous open.
                sender.td_end = sender.td_maxend = end
                sender.td_maxwin = win if win else 1
                _tcp_options(sender, seg)
                if not (sender.flags & receiver.flags & TCPW_WSCALE):
                    sender.td_scale = receiver.td_scale = 0
                if not has_ack:
                    return WIN_ACCEPT
            else:
                # Mid-stream: the history is lost, start from this packet.
                sender.td_end = end
                swin = win << sender.td_scale
                sender.td_maxwin = swin if swin else 1
                sender.td_maxend = end + sender.td_maxwin
                if receiver.td_maxwin == 0:
                    receiver.td_end = receiver.td_maxend = sack
                elif sack == receiver.td_end + 1:
                    receiver.td_end += 1    # likely the answer to a keepalive
        elif syn and seq_after(end, sender.td_end) and (
                (old == TCP_CT_SYN_SENT and dir == CT_DIR_ORIG)
                or (old == TCP_CT_SYN_RECV and dir == CT_DIR_REPLY)):
            # RFC 793: a reinitialised TCP may reuse the connection with higher sequence numbers.
            sender.td_end = sender.td_maxend = end
            sender.td_maxwin = win if win else 1
            _tcp_options(sender, seg)
        if not has_ack or (rst and ack == 0):
            ack = sack = receiver.td_end     # no ACK (or a broken stack's RST|ACK with ack 0)
        if seq == end and (not rst or (seq == 0 and old == TCP_CT_SYN_SENT)):
            seq = end = sender.td_end        # no data: only the ACK is checked; RSTs by seq
        maxackwin = sender.td_maxwin if sender.td_maxwin > MIN_MAXACKWINDOW else MIN_MAXACKWINDOW
        seq_ok = seq_before(seq, sender.td_maxend + 1)
        if not seq_ok:
            # Some stacks send a little more than the window allowed: tolerate up to a window.
            overshot = end - sender.td_maxend + 1
            if (receiver.td_maxwin and seq_after(end, sender.td_end - receiver.td_maxwin - 1)
                    and seq_after(sack, receiver.td_end - maxackwin - 1)
                    and overshot <= receiver.td_maxwin and seq_before(sack, receiver.td_end + 1)):
                sender.td_maxend += overshot
                seq_ok = True
        if (not seq_ok or not seq_after(end, sender.td_end - receiver.td_maxwin - 1)
                or not seq_before(sack, receiver.td_end + 1)):
            return WIN_ACCEPT if liberal else WIN_INVALID
        if not seq_after(sack, receiver.td_end - maxackwin - 1):
            return WIN_ACCEPT if liberal else WIN_IGNORE    # an overly delayed ACK
        if not syn:
            win <<= sender.td_scale
        swin = win + (sack - ack)
        if sender.td_maxwin < swin:
            sender.td_maxwin = swin
        if seq_after(end, sender.td_end):
            sender.td_end = end
            sender.flags |= TCPW_DATA_UNACK
        if has_ack:
            if not sender.flags & TCPW_MAXACK_SET:
                sender.td_maxack = ack
                sender.flags |= TCPW_MAXACK_SET
            elif seq_after(ack, sender.td_maxack):
                sender.td_maxack = ack
        if receiver.td_maxwin != 0 and seq_after(end, sender.td_maxend):
            receiver.td_maxwin += end - sender.td_maxend
        if seq_after(sack + win, receiver.td_maxend - 1):
            receiver.td_maxend = sack + win
            if win == 0:
                receiver.td_maxend += 1
        if ack == receiver.td_end:
            receiver.flags &= ~TCPW_DATA_UNACK
        return WIN_ACCEPT

    cdef int _sctp(self, ct_entry *e, uint32_t idx, uint8_t dir, uint8_t chunks,
                   uint32_t nbytes) noexcept nogil:
        """nf_conntrack_sctp_packet() over the chunk bits. CT_ESTABLISHED = accepted."""
        cdef uint8_t old = e.state
        cdef uint8_t cur = old
        cdef uint8_t new
        cdef bint ignore = False
        cdef int k
        if old == SCTP_CT_NONE and (chunks == 0 or chunks & (SCTP_F_ABORT | SCTP_F_COOKIE_ACK
                                                           | SCTP_F_SHUTDOWN_COMPLETE)):
            # sctp_new(): only a control chunk starts an entry, and never an out-of-the-blue
            # ABORT, SHUTDOWN_COMPLETE or COOKIE_ACK.
            self.st.deleted += 1
            self._free(idx)
            return CT_INVALID
        for k in range(8):
            if not chunks & (1 << k):
                continue
            new = ct_sctp_tbl[dir][k][cur]
            if new == cIV:
                if old == SCTP_CT_NONE:
                    self.st.deleted += 1
                    self._free(idx)
                return CT_INVALID
            if k == 0 and new == SCTP_CT_CLOSED and cur == SCTP_CT_CLOSED and old != SCTP_CT_NONE:
                ignore = True           # INIT retransmit: do not refresh (port reuse by NAT)
            if new != cur and new == SCTP_CT_ESTABLISHED:
                e.flags |= CT_F_ASSURED
            cur = new
        e.state = cur
        if not ignore:
            e.expires_ns = self.now_ns + self.tmo[<int>SCTP_TMO[cur]]
            _acct(e, dir, nbytes)
        return CT_ESTABLISHED

    cdef uint32_t ct_sweep(self, uint64_t now_ns, uint32_t budget) noexcept nogil:
        cdef uint32_t freed = 0
        cdef uint32_t i
        cdef ct_entry *e
        if now_ns > self.now_ns:
            self.now_ns = now_ns
        if budget > self.hwm:
            budget = self.hwm
        while budget:
            budget -= 1
            i = self.cursor
            self.cursor = i + 1 if i + 1 < self.hwm else 0
            e = &self.ent[i]
            if e.state != CT_STATE_FREE and e.expires_ns <= self.now_ns:
                self.st.expired += 1
                self._free(i)
                freed += 1
        return freed

    cdef uint32_t _flush(self, const uint32_t *addr, uint8_t family, uint16_t port,
                         uint8_t proto) noexcept nogil:
        cdef uint32_t i, n = 0
        cdef ct_entry *e
        for i in range(self.hwm):
            e = &self.ent[i]
            if (e.state != CT_STATE_FREE and e.orig.proto == proto and e.reply.family == family
                    and e.reply.sport == port and e.reply.saddr[0] == addr[0]
                    and e.reply.saddr[1] == addr[1] and e.reply.saddr[2] == addr[2]
                    and e.reply.saddr[3] == addr[3]):
                self._free(i)
                n += 1
        self.st.deleted += n
        return n

    # ---- Python API: control plane, tests, batch calls -------------------------------------

    def __len__(self):
        return self.count

    @property
    def capacity(self):
        return self.cap

    @property
    def timeouts(self):
        """Effective timeouts in seconds, by sysctl-style name."""
        return {name: self.tmo[<int>i] / <double>SECOND for name, i in _TMO_INDEX.items()}

    @property
    def memory_bytes(self):
        """Bytes reserved for entries and slots (resident only as entries get used)."""
        return self.cap * sizeof(ct_entry) + (<uint64_t>self.mask + 1) * sizeof(ct_slot)

    def stats(self):
        return dict(self.st)

    def lookup(self, src, dst, sport, dport, proto, now_ns=None):
        """Entry of the tuple as a dict (with "index" and "dir"), or None. now_ns advances the
        table clock first."""
        cdef pkt_tuple t
        cdef uint8_t d = 0
        cdef int64_t idx
        _fill_tuple(&t, {"src": src, "dst": dst, "sport": sport, "dport": dport, "proto": proto})
        if now_ns is not None and <uint64_t>now_ns > self.now_ns:
            self.now_ns = now_ns
        idx = self._find(&t, tuple_hash(&t), &d)
        if idx < 0:
            return None
        res = self._entry_dict(<uint32_t>idx)
        res["dir"] = d
        return res

    def create(self, orig, reply, uint64_t now_ns=0, uint32_t svc_id=0, uint32_t backend_id=0,
               uint8_t flags=0):
        """orig / reply: dicts with src, dst, sport, dport, proto. Returns the index or CT_ERR_*."""
        cdef pkt_tuple o, r
        _fill_tuple(&o, orig)
        _fill_tuple(&r, reply)
        if o.proto != r.proto or o.family != r.family:
            raise ValueError("orig and reply must have the same protocol and family")
        return self.ct_create(&o, tuple_hash(&o), &r, now_ns, svc_id, backend_id, flags)

    def tuple_in_use(self, t):
        """Is the tuple (dict) a live key in either direction?"""
        cdef pkt_tuple k
        _fill_tuple(&k, t)
        return self.ct_tuple_in_use(&k, tuple_hash(&k))

    def update(self, int64_t index, uint8_t dir, uint8_t tcp_flags=0, uint32_t nbytes=0,
               uint64_t now_ns=0, seq=None, uint32_t ack=0, uint16_t win=65535,
               uint32_t payload=0, wscale=None, bint sack_perm=False):
        """Returns CT_ESTABLISHED / CT_REPLY / CT_INVALID / CT_REOPEN. A TCP packet with `seq`
        (and ack, win, payload bytes, SYN options wscale / sack_perm) goes through window
        tracking; without it the window is not looked at."""
        cdef ct_tcp_seg seg
        self._check(index)
        if dir > CT_DIR_REPLY:
            raise ValueError(f"dir must be CT_DIR_ORIG (0) or CT_DIR_REPLY (1), got {dir}")
        if seq is None:
            return self.ct_update(index, dir, tcp_flags, nbytes, now_ns, NULL)
        seg.seq = seq
        seg.ack = seg.sack = ack
        seg.win = win
        seg.end = seg.seq + payload + (1 if tcp_flags & TCP_SYN else 0) + \
            (1 if tcp_flags & TCP_FIN else 0)
        seg.opts = (TCPW_SACK_PERM if sack_perm else 0) | (TCPW_WSCALE if wscale is not None else 0)
        seg.wscale = min(wscale, MAX_WSCALE) if wscale is not None else 0
        return self.ct_update(index, dir, tcp_flags, nbytes, now_ns, &seg)

    def window(self, int64_t index):
        """TCP window tracking state of an entry: per direction td_end, td_maxend, td_maxwin,
        td_maxack, td_scale and flags (TCPW_*)."""
        self._check(index)
        cdef ct_tcp_win *w = &self.ent[index].win
        return [{"td_end": w.seen[d].td_end, "td_maxend": w.seen[d].td_maxend,
                 "td_maxwin": w.seen[d].td_maxwin, "td_maxack": w.seen[d].td_maxack,
                 "td_scale": w.seen[d].td_scale, "flags": w.seen[d].flags} for d in range(2)]

    def delete(self, int64_t index):
        self._check(index)
        self.ct_delete(index)

    def entry(self, int64_t index):
        self._check(index)
        return self._entry_dict(<uint32_t>index)

    def entries(self):
        """Every entry not yet freed (expired ones until reclaimed), as dicts."""
        return [self._entry_dict(i) for i in range(self.hwm)
                if self.ent[i].state != CT_STATE_FREE]

    def entries_range(self, uint32_t start, uint32_t count):
        """(entries of slots [start, start + count) as dicts, the next start or None at the
        end): lets a reader walk a live table in short steps between bursts."""
        cdef uint32_t stop = min(self.hwm, start + count)
        out = [self._entry_dict(i) for i in range(start, stop) if self.ent[i].state != CT_STATE_FREE]
        return out, (stop if stop < self.hwm else None)

    def sweep(self, uint64_t now_ns, uint32_t budget):
        return self.ct_sweep(now_ns, budget)

    def flush(self, backend_ip, int port, int proto):
        """Delete every entry of `proto` whose replies come from backend_ip:port (the endpoint
        went away: UDP and SCTP clients must not stick to it). Scans all entries; returns how
        many were deleted."""
        cdef pkt_tuple t
        _fill_tuple(&t, {"src": backend_ip, "dst": backend_ip, "sport": port, "dport": 0,
                         "proto": proto})
        return self._flush(t.saddr, t.family, t.sport, t.proto)

    def flush_destination(self, dst_ip, int port, int proto):
        """Delete every entry of `proto` whose original direction went to dst_ip:port (kube-proxy
        clears a UDP Service's frontends when it gets its first endpoints: datagrams tracked
        while it had none must meet the new DNAT). Scans all entries; returns how many."""
        cdef pkt_tuple t
        cdef uint32_t i, n = 0
        cdef ct_entry *e
        _fill_tuple(&t, {"src": dst_ip, "dst": dst_ip, "sport": 0, "dport": port, "proto": proto})
        for i in range(self.hwm):
            e = &self.ent[i]
            if (e.state != CT_STATE_FREE and e.orig.proto == t.proto and e.orig.family == t.family
                    and e.orig.dport == t.dport and e.orig.daddr[0] == t.daddr[0] and e.orig.daddr[1] == t.daddr[1]
                    and e.orig.daddr[2] == t.daddr[2] and e.orig.daddr[3] == t.daddr[3]):
                self._free(i)
                n += 1
        self.st.deleted += n
        return n

    def save(self, path):
        """Write the live entries to `path` so a restarted dataplane can reload them and
        established connections survive the restart. Returns how many were written.

        The file (format STATE_VERSION: header with record count and CRC-32, then the entries
        with their TCP windows) holds every flow's addresses, so it is created 0600 under a
        fresh name in the same directory (O_EXCL | O_NOFOLLOW: a planted file or symlink is
        never written through) and renamed over `path` once complete."""
        cdef uint32_t i, n = 0
        parts = []
        for i in range(self.hwm):
            if self.ent[i].state != CT_STATE_FREE and self.ent[i].expires_ns > self.now_ns:
                parts.append((<char *>&self.ent[i])[:sizeof(ct_entry)])
                n += 1
        body = b"".join(parts)
        header = _STATE_HEADER.pack(_STATE_MAGIC, STATE_VERSION,
                                    sizeof(ct_entry) - sizeof(ct_tcp_win), sizeof(ct_tcp_win), n,
                                    zlib.crc32(body))
        path = os.fspath(path)
        folder, name = os.path.split(os.path.abspath(path))
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)     # whatever the umask
                f.write(header)
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return n

    def restore(self, path, uint64_t now_ns):
        """Load entries written by save(); returns how many were loaded, and leaves the details
        in `restore_report`: {"loaded", "expired", "invalid", "conflict"} (entries past their
        timeout, entries that fail validation, entries that no longer fit or clash with entries
        already here). Every entry is validated (families, protocols, state, flags, window) before
        it is used, and none expires later than the longest timeout from now. A file that is not a state file of this version,
        truncated, or fails its checksum raises StateFileError (a ValueError) naming the
        file and the problem; nothing is loaded then."""
        cdef const uint8_t[::1] data
        cdef const ct_entry *rec
        cdef const ct_tcp_win *rw
        cdef ct_entry *e
        cdef int64_t idx
        cdef size_t off, size = sizeof(ct_entry)
        cdef uint64_t count, k, max_tmo = 0
        cdef uint32_t n = 0, expired = 0, invalid = 0, conflict = 0
        for k in range(TMO_MAX):
            max_tmo = max(max_tmo, self.tmo[k])
        with open(path, "rb") as f:
            raw = f.read()
        hdr = _STATE_HEADER.size
        if len(raw) < hdr or raw[:len(_STATE_MAGIC)] != _STATE_MAGIC:
            raise StateFileError(f"{path}: not a conntrack state file")
        magic, version, esize, wsize, count, crc = _STATE_HEADER.unpack_from(raw)
        if (version != STATE_VERSION or esize != sizeof(ct_entry) - sizeof(ct_tcp_win)
                or wsize != sizeof(ct_tcp_win)):
            raise StateFileError(f"{path}: conntrack state file version {version} with "
                                 f"{esize}+{wsize}-byte entries; this build reads version "
                                 f"{STATE_VERSION} with {sizeof(ct_entry) - sizeof(ct_tcp_win)}+"
                                 f"{sizeof(ct_tcp_win)}")
        if len(raw) != hdr + count * size:
            raise StateFileError(f"{path}: truncated or padded: {count} entries need "
                                 f"{hdr + count * size} bytes, the file has {len(raw)}")
        if zlib.crc32(memoryview(raw)[hdr:]) != crc:
            raise StateFileError(f"{path}: checksum mismatch (corrupted state file)")
        data = raw
        off = hdr
        for k in range(count):
            rec = <const ct_entry *>&data[off]
            rw = &rec.win
            off += size
            if not _record_ok(rec, rw):
                invalid += 1
                continue
            if rec.expires_ns <= now_ns:
                expired += 1
                continue
            idx = self.ct_create(&rec.orig, tuple_hash(&rec.orig), &rec.reply, now_ns,
                                 rec.svc_id, rec.backend_id, rec.flags)
            if idx < 0:
                conflict += 1
                continue
            e = &self.ent[idx]
            e.state = rec.state
            e.flags = rec.flags
            e.tcp_last = rec.tcp_last
            # Never later than the longest timeout from now: a garbage stamp must not pin it.
            e.expires_ns = rec.expires_ns if rec.expires_ns - now_ns <= max_tmo else now_ns + max_tmo
            e.bytes[0], e.bytes[1] = rec.bytes[0], rec.bytes[1]
            e.packets[0], e.packets[1] = rec.packets[0], rec.packets[1]
            memcpy(&e.win, rw, sizeof(ct_tcp_win))
            n += 1
        self.restore_report = {"loaded": n, "expired": expired, "invalid": invalid,
                               "conflict": conflict}
        return n

    def flush_all(self):
        """Delete every entry; returns how many there were."""
        cdef uint32_t i, n = self.count
        for i in range(self.hwm):
            if self.ent[i].state != CT_STATE_FREE:
                self._free(i)
        self.st.deleted += n
        self.hwm = 0
        self.cursor = 0
        self.free_head = NO_FREE
        return n

    def lookup_many(self, keys, hashes=None):
        """Bulk lookup of a TUPLE_DTYPE array in bursts of BURST_SIZE. hashes (uint32) default
        to hash_tuples(keys). Returns (index int64 array, -1 = miss; dir uint8 array)."""
        cdef const uint8_t[:, ::1] kv = _tuple_bytes(keys)
        cdef const uint32_t[::1] hv = hash_tuples(keys) if hashes is None else \
            np.ascontiguousarray(hashes, dtype=np.uint32)
        cdef Py_ssize_t n = kv.shape[0]
        if hv.shape[0] != n:
            raise ValueError("keys and hashes differ in length")
        out = np.empty(n, dtype=np.int64)
        dirs = np.zeros(n, dtype=np.uint8)
        cdef int64_t[::1] ov = out
        cdef uint8_t[::1] dv = dirs
        cdef const pkt_tuple *ptrs[BURST_SIZE]
        cdef Py_ssize_t base = 0
        cdef uint32_t m, i
        if n == 0:
            return out, dirs
        with nogil:
            while base < n:
                m = <uint32_t>min(<Py_ssize_t>BURST_SIZE, n - base)
                for i in range(m):
                    ptrs[i] = <const pkt_tuple *>&kv[base + i, 0]
                self.ct_lookup_bulk(ptrs, &hv[base], &ov[base], &dv[base], m)
                base += m
        return out, dirs

    def create_many(self, orig, reply, uint64_t now_ns=0, uint32_t svc_id=0,
                    uint32_t backend_id=0, uint8_t flags=0):
        """create() for arrays of TUPLE_DTYPE; returns the int64 results (index or CT_ERR_*)."""
        cdef const uint8_t[:, ::1] ov = _tuple_bytes(orig)
        cdef const uint8_t[:, ::1] rv = _tuple_bytes(reply)
        cdef const uint32_t[::1] hv = hash_tuples(orig)
        cdef Py_ssize_t i, n = ov.shape[0]
        if rv.shape[0] != n:
            raise ValueError("orig and reply differ in length")
        res = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] resv = res
        with nogil:
            for i in range(n):
                resv[i] = self.ct_create(<const pkt_tuple *>&ov[i, 0], hv[i],
                                      <const pkt_tuple *>&rv[i, 0], now_ns, svc_id, backend_id,
                                      flags)
        return res

    def update_many(self, indices, uint8_t dir, uint8_t tcp_flags=0, uint32_t nbytes=0,
                    uint64_t now_ns=0):
        """update() for an array of indices (bad ones count as CT_INVALID); returns the results."""
        cdef const int64_t[::1] iv = np.ascontiguousarray(indices, dtype=np.int64)
        res = np.empty(iv.shape[0], dtype=np.int8)
        cdef int8_t[::1] rv = res
        cdef Py_ssize_t i
        with nogil:
            for i in range(iv.shape[0]):
                rv[i] = <int8_t>self.ct_update(iv[i], dir, tcp_flags, nbytes, now_ns, NULL)
        return res

    def delete_many(self, indices):
        """delete() for an array of indices (free or out-of-range ones are skipped)."""
        cdef const int64_t[::1] iv = np.ascontiguousarray(indices, dtype=np.int64)
        cdef Py_ssize_t i
        with nogil:
            for i in range(iv.shape[0]):
                self.ct_delete(iv[i])

    cdef _check(self, int64_t index):
        if self.ct_get(index) == NULL:
            raise IndexError(f"no conntrack entry at index {index}")

    cdef dict _entry_dict(self, uint32_t i):
        cdef ct_entry *e = &self.ent[i]
        proto = e.orig.proto
        names = TCP_STATES if proto == P_TCP else SCTP_STATES if proto == P_SCTP else OTHER_STATES
        return {
            "index": i,
            "orig": _tuple_dict(&e.orig),
            "reply": _tuple_dict(&e.reply),
            "proto": proto,
            "state": names[e.state] if e.state < len(names) else f"?{e.state}",
            "flags": [n for b, n in enumerate(FLAG_NAMES) if e.flags & (1 << b)],
            "expires_ns": e.expires_ns,
            "svc_id": e.svc_id,
            "backend_id": e.backend_id,
            "packets": (e.packets[0], e.packets[1]),
            "bytes": (e.bytes[0], e.bytes[1]),
        }


def hash_tuples(keys):
    """tuple_hash of every row of a TUPLE_DTYPE array, as uint32."""
    cdef const uint8_t[:, ::1] kv = _tuple_bytes(keys)
    out = np.empty(kv.shape[0], dtype=np.uint32)
    cdef uint32_t[::1] ov = out
    cdef Py_ssize_t i
    with nogil:
        for i in range(kv.shape[0]):
            ov[i] = tuple_hash(<const pkt_tuple *>&kv[i, 0])
    return out


cdef object _tuple_bytes(keys):
    arr = np.ascontiguousarray(keys)
    if arr.dtype != TUPLE_DTYPE or arr.ndim != 1:
        raise TypeError(f"expected a 1-d array of TUPLE_DTYPE (big-endian addresses), got {arr.dtype}")
    if (arr["pad"] != 0).any():
        raise ValueError("tuple pad must be 0")
    return arr.view(np.uint8).reshape(-1, sizeof(pkt_tuple))


cdef void _fill_tuple(pkt_tuple *t, d) except *:
    memset(t, 0, sizeof(pkt_tuple))
    src = ipaddress.ip_address(d["src"])
    dst = ipaddress.ip_address(d["dst"])
    if src.version != dst.version:
        raise ValueError(f"mixed address families: {d['src']} {d['dst']}")
    cdef bytes s = src.packed
    cdef bytes a = dst.packed
    memcpy(t.saddr, <char *>s, len(s))
    memcpy(t.daddr, <char *>a, len(a))
    t.sport = d.get("sport", 0)
    t.dport = d.get("dport", 0)
    t.proto = d["proto"]
    t.family = src.version


cdef object _tuple_dict(const pkt_tuple *t):
    n = 4 if t.family == 4 else 16
    return {"src": str(ipaddress.ip_address((<const char *>t.saddr)[:n])),
            "dst": str(ipaddress.ip_address((<const char *>t.daddr)[:n])),
            "sport": t.sport, "dport": t.dport, "proto": t.proto, "family": t.family}
