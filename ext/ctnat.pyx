"""Conntrack + Service NAT stage (PREROUTING in netfilter terms): runs between parse and route.

Fast path: one bulk conntrack lookup per burst; a hit is rewritten to what its entry says (a
packet in direction ORIG leaves as invert(reply), one in direction REPLY as invert(orig)).
Slow path, a miss: Service frontend lookup and backend choice (dataplane.lb), masquerade / NAT
outgoing with a collision-free SNAT port, conntrack entry creation, rewrite. ICMP errors quoting
a tracked flow are reverse-translated (RELATED) once they pass nf_conntrack_inet_error's checks
(checksum, addressed to the quoted packet's source). Services without endpoints are answered
with a TCP RST or an ICMP port unreachable sent back out of the ingress port. TCP packets carry
their segment (sequence numbers, window, options) to conntrack's window tracking; packets it
finds INVALID are dropped, as kube-proxy's `ct state invalid drop` does. nat_exhausted drops are
counted per Service for the control plane.
"""
from libc.string cimport memcmp, memcpy, memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

from dataplane.includes.pkt cimport (
    burst_t, pkt_meta, pkt_tuple, pkt_drop, pkt_data, BURST_SIZE, V_PENDING, V_REJECT, L3_IP4,
    L3_IP6, PKT_F_L4, PKT_F_LATER_FRAG, PKT_F_ICMP_ERROR, PKT_F_INNER_L4, PKT_F_CSUM_PARTIAL,
    DROP_BAD_L4_CSUM,
    CNT_CT_NEW, CNT_CT_ESTABLISHED, CNT_CT_REPLY, CNT_CT_RELATED, CNT_DNAT, CNT_SNAT, CNT_REJECT,
    DROP_CT_FULL, DROP_NO_ENDPOINT, DROP_SRC_RANGE, DROP_NAT_EXHAUSTED, DROP_INVALID_STATE,
    DROP_TRUNCATED, DROP_SVC_NO_PORT, DROP_SVC_UNALLOCATED,
)
from dataplane.conntrack cimport (
    Conntrack, ct_entry, ct_tcp_seg, ct_tcp_seg_parse, CT_DIR_ORIG, CT_DIR_REPLY, CT_ESTABLISHED,
    CT_REPLY, CT_INVALID, CT_REOPEN, CT_ERR_FULL, CT_ERR_COLLISION, CT_F_DNAT, CT_F_SNAT,
)
from dataplane.csum cimport csum_add, csum_fold, pseudo6
from dataplane.lb cimport (LBTable, lb_backend, LB_OK, LB_REJECT, LB_DROP, LB_SRC_DENIED, LB_MASQ,
                           LB_VIP_NO_PORT, LB_VIP_UNALLOCATED)
from dataplane.nat cimport nat_rewrite, nat_rewrite_icmp_error, build_tcp_rst, build_icmp_unreach
from dataplane.parse cimport tuple_hash

__all__ = ["CtNat"]

cdef extern from *:
    """#define ctnat_prefetch(p) __builtin_prefetch((p), 1, 3)"""
    void ctnat_prefetch(const void *p) noexcept nogil

cdef enum:
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    IPPROTO_ICMPV6 = 58
    IPPROTO_SCTP = 132
    # SNAT ports come from the unprivileged range, as Linux masquerade does for ports >= 1024.
    SNAT_PORT_MIN = 1024
    SNAT_PORT_MAX = 65535
    SNAT_ATTEMPTS = 128       # bounded retries on collision, then nat_exhausted (Cilium: 128)
    SWEEP_BUDGET = 64         # entries examined per burst by the incremental expiry
    WIN_PREFETCH = 4          # packets between the window prefetch and its update


cdef class CtNat:
    def __cinit__(self, Conntrack ct not None, LBTable lb not None):
        self.ct = ct
        self.lb = lb

    def nat_exhausted(self):
        """nat_exhausted drops per Service: {service_id: count} (LBTable.service_key_id() names
        the Service port; 0 is pod traffic masqueraded on its way out of the cluster, None
        Services beyond the first EXH_SLOTS)."""
        out = {self.exh_ids[k]: self.exh_counts[k] for k in range(EXH_SLOTS) if self.exh_ids[k]}
        if self.exh_egress:
            out[0] = self.exh_egress
        if self.exh_other:
            out[None] = self.exh_other
        return out

    cdef void count_exhausted(self, uint32_t svc_id) noexcept nogil:
        cdef uint32_t k, j
        if svc_id == 0:
            self.exh_egress += 1
            return
        for k in range(EXH_SLOTS):
            j = (svc_id + k) % EXH_SLOTS
            if self.exh_ids[j] == svc_id or self.exh_ids[j] == 0:
                self.exh_ids[j] = svc_id
                self.exh_counts[j] += 1
                return
        self.exh_other += 1

    def set_lb(self, LBTable lb not None):
        """Switch to a new table generation; takes effect from the next burst."""
        self.lb = lb

    cdef void run(self, burst_t *b, uint64_t now_ns, uint64_t *cnt, uint64_t *drops) noexcept nogil:
        cdef pkt_tuple keys[BURST_SIZE]
        cdef const pkt_tuple *keyp[BURST_SIZE]
        cdef uint32_t hashes[BURST_SIZE]
        cdef uint32_t idx[BURST_SIZE]
        cdef int64_t hits[BURST_SIZE]
        cdef uint8_t dirs[BURST_SIZE]
        cdef uint32_t start, end, i, k, n
        cdef pkt_meta *m
        cdef bint dirty
        start = 0
        while start < b.n:
            end = start + BURST_SIZE if start + BURST_SIZE < b.n else b.n
            n = 0
            for i in range(start, end):
                m = &b.meta[i]
                if b.verdict[i] != V_PENDING or (m.l3 != L3_IP4 and m.l3 != L3_IP6):
                    continue
                if m.flags & PKT_F_ICMP_ERROR:
                    # The quoted packet is one we sent: its inverse is the key of the flow.
                    if not (m.flags & PKT_F_INNER_L4):
                        continue
                    tuple_invert(&keys[n], &m.inner)
                    hashes[n] = tuple_hash(&keys[n])
                elif (m.flags & PKT_F_L4) and not (m.flags & PKT_F_LATER_FRAG):
                    keys[n] = m.t
                    hashes[n] = m.hash
                else:
                    continue  # no ports to track (later fragments, non-echo ICMP, other L4)
                keyp[n] = &keys[n]
                idx[n] = i
                n += 1
            if n:
                self.ct.ct_lookup_bulk(keyp, hashes, hits, dirs, n)
                dirty = False
                for k in range(n):
                    # The TCP window (the entry's third line) is read by the update: ask for it
                    # a few packets ahead.
                    if k + WIN_PREFETCH < n and hits[k + WIN_PREFETCH] >= 0:
                        ctnat_prefetch(&self.ct.ent[hits[k + WIN_PREFETCH]].win)
                    if dirty:  # a create/delete earlier in this burst may have changed the answer
                        hits[k] = self.ct.ct_lookup(keyp[k], hashes[k], &dirs[k])
                    dirty |= self.one(b, idx[k], &keys[k], hashes[k], hits[k], dirs[k], now_ns,
                                      cnt, drops)
            start = end
        self.ct.ct_sweep(now_ns, SWEEP_BUDGET)

    cdef bint one(self, burst_t *b, uint32_t i, const pkt_tuple *key, uint32_t hash, int64_t hit,
                  uint8_t dir, uint64_t now_ns, uint64_t *cnt, uint64_t *drops) noexcept nogil:
        """Handle packet i; returns True when the conntrack table changed."""
        cdef pkt_meta *m = &b.meta[i]
        cdef int st
        cdef ct_tcp_seg seg
        cdef const ct_tcp_seg *segp = NULL
        if m.flags & PKT_F_ICMP_ERROR:
            if hit >= 0:
                self.related(b, i, hit, dir, cnt, drops)
            return False
        if m.t.proto == IPPROTO_TCP and ct_tcp_seg_parse(
                pkt_data(b, i) + m.l4_off, m.l3_len - (m.l4_off - m.l3_off), &seg):
            segp = &seg
        if hit >= 0:
            st = self.ct.ct_update(hit, dir, m.tcp_flags, m.l3_len, now_ns, segp)
            if st == CT_INVALID:
                pkt_drop(b, i, DROP_INVALID_STATE, drops)
                return True
            if st != CT_REOPEN:
                cnt[CNT_CT_ESTABLISHED if st == CT_ESTABLISHED else CNT_CT_REPLY] += 1
                self.translate(b, i, self.ct.ct_get(hit), dir, drops)
                return False
            # A SYN on a closed entry starts a new connection, possibly to a new backend.
        return self.new_flow(b, i, now_ns, segp, cnt, drops)

    cdef bint new_flow(self, burst_t *b, uint32_t i, uint64_t now_ns, const ct_tcp_seg *seg,
                       uint64_t *cnt, uint64_t *drops) noexcept nogil:
        cdef pkt_meta *m = &b.meta[i]
        cdef pkt_tuple reply
        cdef lb_backend be
        cdef uint32_t lb_flags = 0, svc_id = 0, backend_id = 0
        cdef uint8_t ct_flags
        cdef int64_t svc = -1, e
        cdef int r
        if m.t.proto == IPPROTO_TCP or m.t.proto == IPPROTO_UDP or m.t.proto == IPPROTO_SCTP:
            svc = self.lb.lookup_service(&m.t)
        if svc < 0:
            # nftables cluster-ips-check: a ClusterIP on a port it does not serve is rejected
            # (nft "reject": ICMP port unreachable for every protocol); an address of a
            # ServiceCIDR that no Service has is dropped.
            r = self.lb.check_service_ip(&m.t)
            if r == LB_VIP_NO_PORT:
                self.reject(b, i, cnt, drops, DROP_SVC_NO_PORT, False)
                return False
            if r == LB_VIP_UNALLOCATED:
                pkt_drop(b, i, DROP_SVC_UNALLOCATED, drops)
                return False
        reply.pad = 0
        reply.proto = m.t.proto
        reply.family = m.t.family
        if svc >= 0:
            r = self.lb.select_backend(svc, &m.t, m.hash, m.port_in, now_ns, &be, &lb_flags)
            if r == LB_REJECT:
                self.reject(b, i, cnt, drops, DROP_NO_ENDPOINT, True)
                return False
            if r != LB_OK:
                pkt_drop(b, i, DROP_SRC_RANGE if r == LB_SRC_DENIED else DROP_NO_ENDPOINT, drops)
                return False
            # Reply tuple: from the backend, to the client (or to the node when masqueraded).
            memcpy(reply.saddr, be.addr, 16)
            reply.sport = be.port
            memcpy(reply.daddr, m.t.saddr, 16)
            reply.dport = m.t.sport
            ct_flags = CT_F_DNAT
            svc_id = self.lb.service_id(svc)
            backend_id = be.id
            if lb_flags & LB_MASQ:
                memcpy(reply.daddr, self.lb.node_ip(m.t.family), 16)
                ct_flags |= CT_F_SNAT
        elif self.lb.nat_outgoing(&m.t):
            memcpy(reply.saddr, m.t.daddr, 16)
            reply.sport = m.t.dport
            memcpy(reply.daddr, self.lb.node_ip(m.t.family), 16)
            reply.dport = m.t.sport
            ct_flags = CT_F_SNAT
        else:
            return False  # routed as is: pod-to-pod and node traffic is neither NATed nor tracked
        if is_echo(m.t.proto):
            reply.sport = reply.dport  # the echo id stands in both port fields of the tuple
        e = self.create(b, i, &reply, ct_flags, svc_id, backend_id, now_ns, drops)
        if e < 0:
            return e != CT_ERR_FULL  # a full table changed nothing
        if self.ct.ct_update(e, CT_DIR_ORIG, m.tcp_flags, m.l3_len, now_ns, seg) == CT_INVALID:
            pkt_drop(b, i, DROP_INVALID_STATE, drops)
            return True
        cnt[CNT_CT_NEW] += 1
        ct_flags = self.ct.ct_get(e).flags
        if ct_flags & CT_F_DNAT:
            cnt[CNT_DNAT] += 1
        if ct_flags & CT_F_SNAT:
            cnt[CNT_SNAT] += 1
        self.translate(b, i, self.ct.ct_get(e), CT_DIR_ORIG, drops)
        return True

    cdef int64_t create(self, burst_t *b, uint32_t i, pkt_tuple *reply, uint8_t ct_flags,
                        uint32_t svc_id, uint32_t backend_id, uint64_t now_ns,
                        uint64_t *drops) noexcept nogil:
        """Insert the entry, moving the reply's destination port on a collision (nf_nat's
        get_unique_tuple): the first try keeps the client's port, later ones probe the
        unprivileged range from a hash-derived start. A DNAT-only entry whose reply tuple is
        taken gets its source port remapped too, as Linux's implicit null binding does."""
        cdef pkt_meta *m = &b.meta[i]
        cdef int64_t e
        cdef uint32_t attempt, span = SNAT_PORT_MAX - SNAT_PORT_MIN + 1
        cdef uint32_t start = m.hash % span
        for attempt in range(SNAT_ATTEMPTS):
            if attempt:
                reply.dport = <uint16_t>(SNAT_PORT_MIN + (start + attempt * 7919) % span)
                if is_echo(m.t.proto):
                    reply.sport = reply.dport
                ct_flags |= CT_F_SNAT
            e = self.ct.ct_create(&m.t, m.hash, reply, now_ns, svc_id, backend_id, ct_flags)
            if e >= 0:
                return e
            if e == CT_ERR_FULL:
                pkt_drop(b, i, DROP_CT_FULL, drops)
                return e
            if e != CT_ERR_COLLISION:
                break
        pkt_drop(b, i, DROP_NAT_EXHAUSTED, drops)
        self.count_exhausted(svc_id)
        return CT_ERR_COLLISION

    cdef void translate(self, burst_t *b, uint32_t i, ct_entry *e, uint8_t dir,
                        uint64_t *drops) noexcept nogil:
        cdef pkt_tuple to
        tuple_invert(&to, &e.reply if dir == CT_DIR_ORIG else &e.orig)
        if memcmp(&to, &b.meta[i].t, sizeof(pkt_tuple)) == 0:
            return  # nothing to rewrite: skip the checksum work entirely
        if nat_rewrite(b, i, &to) != 0:
            pkt_drop(b, i, DROP_TRUNCATED, drops)

    cdef void related(self, burst_t *b, uint32_t i, int64_t hit, uint8_t dir, uint64_t *cnt,
                      uint64_t *drops) noexcept nogil:
        """An ICMP error quoting a packet of flow `hit` that we sent in the direction opposite to
        `dir` (the quote's inverse matched `dir`'s tuple). The quote goes back to what that
        packet was before our translation, the error goes to that packet's real sender, and an
        error generated by the peer itself appears to come from the address the sender used."""
        cdef ct_entry *e = self.ct.ct_get(hit)
        cdef const pkt_tuple *this_t = &e.orig if dir == CT_DIR_ORIG else &e.reply
        cdef const pkt_tuple *other = &e.reply if dir == CT_DIR_ORIG else &e.orig
        cdef pkt_meta *m = &b.meta[i]
        cdef const uint32_t *outer_src = NULL
        cdef const uint8_t *p = pkt_data(b, i)
        cdef uint32_t n = m.l3_len - (m.l4_off - m.l3_off)
        cdef uint64_t acc
        # nf_conntrack_inet_error(): a valid ICMP checksum, and the error must be addressed to
        # the source of the packet it quotes, which is this direction's destination.
        if not m.flags & PKT_F_CSUM_PARTIAL:
            acc = csum_add(p + m.l4_off, n, 0 if m.l3 == L3_IP4
                           else pseudo6(p + m.l3_off, m.t.proto, n))
            if csum_fold(acc) != 0xffff:
                pkt_drop(b, i, DROP_BAD_L4_CSUM, drops)
                return
        if memcmp(m.t.daddr, this_t.daddr, 16) != 0:
            pkt_drop(b, i, DROP_INVALID_STATE, drops)
            return
        if memcmp(m.t.saddr, this_t.saddr, 16) == 0:
            outer_src = other.daddr
        if nat_rewrite_icmp_error(b, i, other, outer_src, other.saddr) != 0:
            pkt_drop(b, i, DROP_TRUNCATED, drops)
            return
        cnt[CNT_CT_RELATED] += 1

    cdef void reject(self, burst_t *b, uint32_t i, uint64_t *cnt, uint64_t *drops, uint8_t reason,
                     bint tcp_rst) noexcept nogil:
        """kube-proxy REJECTs traffic to a Service without endpoints (TCP RST when tcp_rst, else
        ICMP port unreachable); the answer goes straight back to the previous hop (the builders
        swap the Ethernet addresses). `reason` names why in the trace."""
        cdef int r
        if tcp_rst and b.meta[i].t.proto == IPPROTO_TCP:
            r = build_tcp_rst(b, i)
        else:
            r = build_icmp_unreach(b, i)
        if r != 0:  # never answer a RST or an ICMP error: drop instead
            pkt_drop(b, i, reason, drops)
            return
        b.verdict[i] = V_REJECT
        b.reason[i] = reason
        b.meta[i].port_out = b.meta[i].port_in
        cnt[CNT_REJECT] += 1


cdef inline void tuple_invert(pkt_tuple *out, const pkt_tuple *t) noexcept nogil:
    memcpy(out.saddr, t.daddr, 16)
    memcpy(out.daddr, t.saddr, 16)
    out.sport = t.dport
    out.dport = t.sport
    out.proto = t.proto
    out.family = t.family
    out.pad = 0


cdef inline bint is_echo(uint8_t proto) noexcept nogil:
    return proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6
