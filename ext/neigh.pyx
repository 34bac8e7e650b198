"""Neighbour discovery: ARP (RFC 826, RFC 5227) and IPv6 ND (RFC 4861) for ports that only the
dataplane has addresses on, as VPP's ip-neighbor and arp/ip6-nd nodes do.

What arrives (neigh_burst), following Linux arp_process / ndisc_recv_ns / ndisc_recv_na:
  ARP request for an owned address, or any address on a proxy port: answered in place, and the
  requester learned STALE (neigh_event_ns). Proxy ports do not answer ARP probes (sender
  0.0.0.0: a host checking that an address is free, RFC 5227 2.1.1) nor announcements (sender
  == target); owned addresses answer probes, which defends them (Linux replies to the prober).
  ARP reply / gratuitous ARP: updates an existing entry only (arp_accept=0): REACHABLE for a reply
  unicast to the port's MAC, else STALE; a different MAC replaces the entry's only after the
  1 s locktime (the first answer wins over proxies) or from a gratuitous ARP. Consumed.
  Other ARP requests: refresh an existing entry the same way and stay pending.
  NS (validated per RFC 4861 7.1.1, hop limit 255 so it cannot come from off-link) for an owned
  address, or any unicast target on a proxy port except DAD: answered with an NA in place, the
  solicitor learned STALE from its source link-layer option. DAD probes (source ::) for owned
  addresses get the NA on ff02::1 without the Solicited flag (7.2.4). NAs (7.1.2) update an
  existing entry per 7.2.5 (Override, Solicited) and are consumed. Each port also owns its EUI-64
  link-local address, as every IPv6 interface has one (RFC 4291 2.1).
  Our NAs carry the Router flag (the dataplane forwards) and Override except as a proxy (7.2.8).

Table: open addressing over neigh_entry slots (see neigh.pxd), keyed by (port, family, address),
no timers: REACHABLE until reach_until_ns, then STALE (usable) until expire_ns, then expired
(unusable, reclaimed by a lookup that meets it or by gc). INCOMPLETE entries turn FAILED after
NEIGH_MAX_PROBES unanswered solicitations and expire stale_s after the last one. A full table runs
a forced gc at most every 5 s (Linux neigh_forced_gc) and otherwise refuses new entries.

Left to Linux's DELAY/PROBE: a STALE entry in use is not re-confirmed with unicast probes; it
expires and the next packet re-resolves it with a broadcast.
"""
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memmove, memset, memcmp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
import ipaddress

from dataplane.includes.pkt cimport (
    burst_t, pkt_meta, pkt_data, pkt_drop, pkt_reset, V_PENDING, V_FORWARD, V_LOCAL, L3_ARP,
    L3_IP6, PKT_F_L4, PKT_F_FRAGMENT, DROP_BAD_LEN, DROP_NOT_IP, DROP_BAD_L4_LEN, DROP_BAD_CSUM,
    CNT_NEIGH_REPLY, CNT_NEIGH_LEARN, CNT_NEIGH_RELEASED, CNT_LOCAL, DROP_NO_NEIGHBOR,
)
from dataplane.includes.bytes cimport load_be16, load_be32, load_u32, store_be16, store_be32, store_u32
from dataplane.csum cimport IPPROTO_ICMPV6, ip6_l4_csum
from dataplane.parse cimport tuple_hash
from dataplane.burst cimport Burst
from dataplane.burst import stage_counters

__all__ = ["Neighbours", "NUD_INCOMPLETE", "NUD_REACHABLE", "NUD_STALE", "NUD_FAILED",
           "NUD_PERMANENT", "STATES"]

STATES = {NUD_INCOMPLETE: "INCOMPLETE", NUD_REACHABLE: "REACHABLE", NUD_STALE: "STALE",
          NUD_FAILED: "FAILED", NUD_PERMANENT: "PERMANENT"}

cdef enum:
    ETH_HLEN = 14
    ETH_P_IP = 0x0800
    ETH_P_ARP = 0x0806
    ETH_P_IPV6 = 0x86dd
    ARPHRD_ETHER = 1
    ARPOP_REQUEST = 1
    ARPOP_REPLY = 2
    ARP_LEN = 28               # Ethernet/IPv4 ARP packet
    ND_NS = 135
    ND_NA = 136
    ND_LEN = 72                # IPv6 header + NS/NA (24) + one link-layer option (8)
    ND_OPT_SLLA = 1
    ND_OPT_TLLA = 2
    NA_F_ROUTER = 0x80
    NA_F_SOLICITED = 0x40
    NA_F_OVERRIDE = 0x20
    HOP_LIMIT_ND = 255

cdef uint64_t ARP_LOCKTIME_NS = 1_000_000_000      # neigh locktime: 1 s
cdef uint64_t FORCED_GC_NS = 5_000_000_000         # neigh_forced_gc: at most every 5 s
cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15

# ff02::1:ff00:0/104, the solicited-node prefix (RFC 4291 2.7.1), and ff02::1.
cdef uint8_t SOLICITED_NODE[13]
SOLICITED_NODE[:] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]
cdef uint8_t ALL_NODES[16]
ALL_NODES[:] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]
cdef uint8_t ALL_NODES_MAC[6]
ALL_NODES_MAC[:] = [0x33, 0x33, 0, 0, 0, 0x01]


# --- table ------------------------------------------------------------------------------------

cdef inline uint32_t key_hash(uint16_t port, uint8_t family, const uint32_t *ip) noexcept nogil:
    cdef uint64_t h = ((<uint64_t>port << 8) | family) * GOLDEN
    cdef int k
    for k in range(4):
        h = (h ^ ip[k]) * GOLDEN
        h ^= h >> 32
    return <uint32_t>h


cdef inline void key_of(uint32_t *key, const uint32_t *ip, uint8_t family) noexcept nogil:
    """A full 4-word key from a caller's address: IPv4 callers may pass a single word."""
    if family == 4:
        key[0] = ip[0]
        key[1] = key[2] = key[3] = 0
    else:
        memcpy(key, ip, 16)


cdef int tbl_init(neigh_table *t, uint32_t cap) except -1:
    cdef uint64_t nslots = 2
    while nslots < 2 * <uint64_t>cap:
        nslots <<= 1
    t.slots = <neigh_entry *>calloc(nslots, sizeof(neigh_entry))
    if t.slots == NULL:
        raise MemoryError()
    t.mask = <uint32_t>(nslots - 1)
    t.n = 0
    t.cap = cap
    return 0


cdef neigh_entry *tbl_find(neigh_table *t, uint16_t port, uint8_t family,
                           const uint32_t *ip) noexcept nogil:
    cdef uint32_t j = key_hash(port, family, ip) & t.mask
    cdef neigh_entry *e
    while True:
        e = &t.slots[j]
        if e.family == 0:
            return NULL
        if (e.family == family and e.port == port and e.ip[0] == ip[0] and e.ip[1] == ip[1]
                and e.ip[2] == ip[2] and e.ip[3] == ip[3]):
            return e
        j = (j + 1) & t.mask


cdef neigh_entry *tbl_add(neigh_table *t, uint16_t port, uint8_t family,
                          const uint32_t *ip) noexcept nogil:
    """A zeroed entry for a key known to be absent; NULL when the table holds cap entries."""
    cdef uint32_t j = key_hash(port, family, ip) & t.mask
    cdef neigh_entry *e
    if t.n >= t.cap:
        return NULL
    while t.slots[j].family != 0:
        j = (j + 1) & t.mask
    e = &t.slots[j]
    memset(e, 0, sizeof(neigh_entry))
    memcpy(e.ip, ip, 16)
    e.port = port
    e.family = family
    t.n += 1
    return e


cdef void tbl_del(neigh_table *t, neigh_entry *e) noexcept nogil:
    """Free e's slot and shift the rest of its probe run back, so no tombstones build up."""
    cdef uint32_t mask = t.mask
    cdef uint32_t i = <uint32_t>(e - t.slots)
    cdef uint32_t j = i
    cdef uint32_t home
    cdef neigh_entry *f
    while True:
        j = (j + 1) & mask
        f = &t.slots[j]
        if f.family == 0:
            break
        home = key_hash(f.port, f.family, f.ip) & mask
        # f may fill the hole only if the hole lies on its probe path: home not in (i, j].
        if (home <= i or home > j) if i < j else (home <= i and home > j):
            t.slots[i] = f[0]
            i = j
    t.slots[i].family = 0
    t.n -= 1


cdef inline uint8_t nud_state(const neigh_entry *e, uint64_t now, uint64_t retrans) noexcept nogil:
    """The state at `now` (NUD_NONE: expired)."""
    if e.state == NUD_PERMANENT:
        return NUD_PERMANENT
    if now >= e.expire_ns:
        return NUD_NONE
    if e.state == NUD_INCOMPLETE:
        if e.probes >= NEIGH_MAX_PROBES and now >= e.probe_ns + retrans:
            return NUD_FAILED
        return NUD_INCOMPLETE
    if e.state == NUD_REACHABLE and now < e.reach_until_ns:
        return NUD_REACHABLE
    return NUD_STALE


cdef inline bint is_usable(uint8_t state) noexcept nogil:
    return state == NUD_REACHABLE or state == NUD_STALE or state == NUD_PERMANENT


# --- frames -----------------------------------------------------------------------------------

cdef inline uint8_t *frame_room(burst_t *b, uint32_t i, uint32_t need) noexcept nogil:
    """Packet i's frame start with `need` bytes of slot behind it, its L2 header (l3_off bytes)
    moved back into the headroom when the slot's tail is too short. NULL if the slot is smaller."""
    cdef pkt_meta *m = &b.meta[i]
    cdef uint8_t *slot = b.buf + <size_t>i * b.slot_size
    cdef uint32_t off
    if need > b.slot_size:
        return NULL
    if <uint32_t>m.data_off + need > b.slot_size:
        off = b.slot_size - need
        memmove(slot + off, slot + m.data_off, m.l3_off)
        m.data_off = <uint16_t>off
    return slot + m.data_off


cdef inline void meta_reset(pkt_meta *m, uint8_t l3, uint16_t ethertype) noexcept nogil:
    """Clear what the parser fills (as parse_burst does) for a frame built here; the L2 header
    and its VLAN tags are kept."""
    cdef uint16_t vlan0 = m.vlan[0], vlan1 = m.vlan[1]
    cdef uint8_t n_vlans = m.n_vlans
    memset(&m.l4_off, 0, <char *>&m.nexthop - <char *>&m.l4_off)
    memset(&m.hash, 0, <char *>(m + 1) - <char *>&m.hash)
    m.vlan[0] = vlan0
    m.vlan[1] = vlan1
    m.n_vlans = n_vlans
    m.l3 = l3
    m.ethertype = ethertype


cdef void nd_build(burst_t *b, uint32_t i, uint8_t *p, const uint8_t *dst_mac,
                   const uint8_t *src_mac, const uint8_t *src, const uint8_t *dst, uint8_t typ,
                   uint8_t na_flags, const uint8_t *target) noexcept nogil:
    """Write an NS or NA with one link-layer option (SLLA / TLLA = src_mac) after the L2 header
    at p (ND_LEN bytes of room checked by the caller). No argument may point into the frame."""
    cdef pkt_meta *m = &b.meta[i]
    cdef uint8_t *ip = p + m.l3_off
    cdef uint8_t *ic = ip + 40
    memcpy(p, dst_mac, 6)
    memcpy(p + 6, src_mac, 6)
    store_be16(p + m.l3_off - 2, ETH_P_IPV6)
    store_be32(ip, 0x60000000)
    store_be16(ip + 4, ND_LEN - 40)
    ip[6] = IPPROTO_ICMPV6
    ip[7] = HOP_LIMIT_ND
    memcpy(ip + 8, src, 16)
    memcpy(ip + 24, dst, 16)
    ic[0] = typ
    ic[1] = 0
    store_be16(ic + 2, 0)
    store_be32(ic + 4, <uint32_t>na_flags << 24)
    memcpy(ic + 8, target, 16)
    ic[24] = ND_OPT_SLLA if typ == ND_NS else ND_OPT_TLLA
    ic[25] = 1                                   # 8 bytes
    memcpy(ic + 26, src_mac, 6)
    store_be16(ic + 2, ip6_l4_csum(ip, ic, ND_LEN - 40, IPPROTO_ICMPV6))
    meta_reset(m, L3_IP6, ETH_P_IPV6)
    m.len = <uint16_t>(m.l3_off + ND_LEN)
    m.l3_len = ND_LEN
    m.l4_off = <uint16_t>(m.l3_off + 40)
    m.flags = PKT_F_L4
    m.ttl = HOP_LIMIT_ND
    m.icmp_type = typ
    m.t.family = 6
    m.t.proto = IPPROTO_ICMPV6
    memcpy(m.t.saddr, src, 16)
    memcpy(m.t.daddr, dst, 16)
    m.hash = tuple_hash(&m.t)


cdef inline bint is_solicited_node_of(const uint8_t *dst, const uint8_t *target) noexcept nogil:
    return memcmp(dst, SOLICITED_NODE, 13) == 0 and memcmp(dst + 13, target + 13, 3) == 0


cdef inline bint is_unspecified6(const uint8_t *a) noexcept nogil:
    return (load_u32(a) | load_u32(a + 4) | load_u32(a + 8) | load_u32(a + 12)) == 0


cdef class Neighbours:
    """Neighbour table, owned addresses and proxy flags for `len(port_macs)` ports."""

    def __cinit__(self, port_macs, uint32_t capacity=65536, double reachable_s=30,
                  double stale_s=60, double retrans_ms=1000, uint32_t max_owned=16384):
        cdef uint16_t port
        cdef uint32_t ll[4]
        cdef neigh_entry *e
        macs = [bytes(mac) for mac in port_macs]
        if not 0 < len(macs) <= 0xffff or any(len(mac) != 6 for mac in macs):
            raise ValueError("need 1..65535 ports with 6-byte MACs")
        if not 0 < capacity <= 1 << 30 or max_owned > 1 << 30:
            raise ValueError("capacity must be 1..2**30 and max_owned at most 2**30")
        if reachable_s <= 0 or stale_s <= 0 or retrans_ms <= 0:
            raise ValueError("timeouts must be positive")
        self.nports = len(macs)
        tbl_init(&self.nt, capacity)
        tbl_init(&self.own, max_owned + self.nports)      # plus one link-local per port
        self.macs = <uint8_t *>calloc(self.nports, 6)
        self.proxy = <uint8_t *>calloc(self.nports, 1)
        self.src4 = <uint32_t *>calloc(self.nports, 4)
        self.src6 = <uint32_t *>calloc(self.nports, 16)
        self.src_set = <uint8_t *>calloc(self.nports, 1)
        self.nq = <nq_entry *>calloc(NQ_SLOTS, sizeof(nq_entry))
        self.nq_buf = <uint8_t *>calloc(NQ_SLOTS, NQ_FRAME)
        if not (self.macs and self.proxy and self.src4 and self.src6 and self.src_set and self.nq
                and self.nq_buf):
            raise MemoryError()
        self.reachable_ns = <uint64_t>(reachable_s * 1e9)
        self.stale_ns = <uint64_t>(stale_s * 1e9)
        self.retrans_ns = <uint64_t>(retrans_ms * 1e6)
        for port, mac in enumerate(macs):
            memcpy(self.macs + 6 * port, <const char *>mac, 6)
            lladdr = _link_local(self.macs + 6 * port)
            memcpy(ll, <const char *>lladdr, 16)
            e = tbl_find(&self.own, port, 6, ll)
            if e == NULL:
                tbl_add(&self.own, port, 6, ll).state = NUD_PERMANENT
            memcpy(&self.src6[4 * port], ll, 16)

    def __dealloc__(self):
        free(self.nt.slots)
        free(self.own.slots)
        free(self.macs)
        free(self.proxy)
        free(self.src4)
        free(self.src6)
        free(self.src_set)
        free(self.nq)
        free(self.nq_buf)

    # --- fast path ----------------------------------------------------------------------------

    cdef int resolve(self, uint16_t port, const uint32_t *ip, uint8_t family, uint64_t now_ns,
                     uint8_t *mac_out) noexcept nogil:
        cdef uint32_t key[4]
        cdef neigh_entry *e
        cdef uint8_t state
        key_of(key, ip, family)
        e = self._live(port, family, key, now_ns)
        if e == NULL:
            return 0
        state = nud_state(e, now_ns, self.retrans_ns)
        if not is_usable(state):
            return 0
        if state == NUD_STALE:
            e.used_stale = 1
        memcpy(mac_out, e.mac, 6)
        return 1

    cdef int solicit(self, burst_t *b, uint32_t i, uint16_t port, const uint32_t *ip,
                     uint8_t family, uint64_t now_ns) noexcept nogil:
        cdef uint32_t key[4]
        cdef neigh_entry *e
        cdef pkt_meta *m
        cdef uint8_t state
        if (port >= self.nports or (family != 4 and family != 6) or i >= b.n
                or b.meta[i].l3_off < ETH_HLEN):
            return -1
        m = &b.meta[i]
        if <uint32_t>m.l3_off + (ARP_LEN if family == 4 else ND_LEN) > b.slot_size:
            return -1
        key_of(key, ip, family)
        e = self._live(port, family, key, now_ns)
        if e != NULL:
            if e.state == NUD_PERMANENT:
                return -1
            if e.probes and now_ns < e.probe_ns + self.retrans_ns:
                self.st.rate_limited += 1
                return -1
        else:
            e = self._create(port, family, key, now_ns)
            if e == NULL:
                return -1
        if self._build_request(b, i, port, key, family, NULL) != 0:
            return -1
        state = nud_state(e, now_ns, self.retrans_ns)
        if not is_usable(state):
            # A new round after FAILED starts counting again, as __neigh_event_send does.
            if e.state != NUD_INCOMPLETE or state == NUD_FAILED:
                e.probes = 0
            e.state = NUD_INCOMPLETE
            e.expire_ns = now_ns + self.stale_ns
        if e.probes < 255:
            e.probes += 1
        e.probe_ns = now_ns
        return 0

    cdef int _build_request(self, burst_t *b, uint32_t i, uint16_t port, const uint32_t *key,
                            uint8_t family, const uint8_t *unicast_mac) noexcept nogil:
        """Packet i becomes an ARP request / NS for key out of port: broadcast / to the
        solicited-node group, or, with unicast_mac, a unicast probe to that MAC (Linux
        arp_solicit / ndisc_solicit in PROBE state). -1 if the slot is too small."""
        cdef uint32_t dst[4]
        cdef uint8_t dst_mac[6]
        cdef pkt_meta *m = &b.meta[i]
        cdef uint8_t *p
        cdef uint8_t *a
        cdef const uint8_t *mac = self.macs + 6 * port
        if family == 4:
            p = frame_room(b, i, m.l3_off + ARP_LEN)
            if p == NULL:
                return -1
            if unicast_mac != NULL:
                memcpy(p, unicast_mac, 6)
            else:
                memset(p, 0xff, 6)                  # broadcast
            memcpy(p + 6, mac, 6)
            store_be16(p + m.l3_off - 2, ETH_P_ARP)
            a = p + m.l3_off
            store_be16(a, ARPHRD_ETHER)
            store_be16(a + 2, ETH_P_IP)
            a[4] = 6
            a[5] = 4
            store_be16(a + 6, ARPOP_REQUEST)
            memcpy(a + 8, mac, 6)
            store_u32(a + 14, self.src4[port])      # 0.0.0.0 without an owned address: a probe
            memset(a + 18, 0, 6)
            store_u32(a + 24, key[0])
            meta_reset(m, L3_ARP, ETH_P_ARP)
            m.len = <uint16_t>(m.l3_off + ARP_LEN)
            m.hash = tuple_hash(&m.t)
        else:
            p = frame_room(b, i, m.l3_off + ND_LEN)
            if p == NULL:
                return -1
            if unicast_mac != NULL:
                memcpy(dst, key, 16)
                memcpy(dst_mac, unicast_mac, 6)
            else:
                memcpy(dst, SOLICITED_NODE, 13)
                memcpy(<uint8_t *>dst + 13, <uint8_t *>key + 13, 3)
                dst_mac[0] = dst_mac[1] = 0x33           # RFC 2464 7: 33:33 + low 32 bits
                memcpy(dst_mac + 2, <uint8_t *>dst + 12, 4)
            nd_build(b, i, p, dst_mac, mac, <uint8_t *>&self.src6[4 * port], <uint8_t *>dst,
                     ND_NS, 0, <uint8_t *>key)
        return 0

    cdef int enqueue(self, burst_t *b, uint32_t i, uint16_t port, const uint32_t *ip,
                     uint8_t family, uint64_t now_ns) noexcept nogil:
        cdef uint32_t key[4]
        cdef uint32_t k, same = 0, free_slot = NQ_SLOTS
        cdef nq_entry *q
        cdef uint16_t length = b.meta[i].len
        if length > NQ_FRAME:
            return -1
        key_of(key, ip, family)
        for k in range(NQ_SLOTS):
            q = &self.nq[k]
            if q.deadline_ns == 0:
                if free_slot == NQ_SLOTS:
                    free_slot = k
            elif q.port == port and q.family == family and memcmp(q.ip, key, 16) == 0:
                same += 1
        if free_slot == NQ_SLOTS or same >= NQ_PER_NEIGH:
            self.st.queue_full += 1
            return -1
        q = &self.nq[free_slot]
        memcpy(q.ip, key, 16)
        q.port = port
        q.family = family
        q.len = length
        q.port_in = b.meta[i].port_in
        # As long as Linux lets a neighbour stay INCOMPLETE: its probes, one retrans apart.
        q.deadline_ns = now_ns + NEIGH_MAX_PROBES * self.retrans_ns
        memcpy(self.nq_buf + <size_t>free_slot * NQ_FRAME, pkt_data(b, i), length)
        self.nq_used += 1
        return 0

    cdef void release(self, burst_t *b, uint64_t now_ns, uint64_t *cnt, uint64_t *drops) noexcept nogil:
        cdef uint32_t k, j
        cdef nq_entry *q
        cdef uint8_t mac[6]
        cdef uint8_t *frame
        for k in range(NQ_SLOTS):
            if self.nq_used == 0:
                return
            q = &self.nq[k]
            if q.deadline_ns == 0:
                continue
            if now_ns >= q.deadline_ns:
                drops[DROP_NO_NEIGHBOR] += 1
            elif b.n < b.cap and self.resolve(q.port, q.ip, q.family, now_ns, mac):
                j = b.n
                pkt_reset(b, j, q.len, q.port_in)
                frame = pkt_data(b, j)
                memcpy(frame, self.nq_buf + <size_t>k * NQ_FRAME, q.len)
                memcpy(frame, mac, 6)
                b.verdict[j] = V_FORWARD
                b.meta[j].port_out = q.port
                b.n = j + 1
                cnt[CNT_NEIGH_RELEASED] += 1
            else:
                continue
            q.deadline_ns = 0
            self.nq_used -= 1

    cdef uint32_t probe_stale(self, burst_t *b, uint64_t now_ns) noexcept nogil:
        cdef uint32_t k, i, n = 0
        cdef neigh_entry *e
        for k in range(self.nt.mask + 1):
            if b.n >= b.cap:
                break
            e = &self.nt.slots[k]
            if (e.family == 0 or not e.used_stale or now_ns < e.probe_ns + self.retrans_ns
                    or nud_state(e, now_ns, self.retrans_ns) != NUD_STALE):
                continue
            i = b.n
            pkt_reset(b, i, 0, e.port)
            b.meta[i].l3_off = ETH_HLEN
            if self._build_request(b, i, e.port, e.ip, e.family, e.mac) != 0:
                break
            b.verdict[i] = V_FORWARD
            b.meta[i].port_out = e.port
            b.n = i + 1
            e.probe_ns = now_ns
            e.used_stale = 0
            n += 1
        return n

    cdef void neigh_burst(self, burst_t *b, uint64_t now_ns, uint64_t *cnt,
                          uint64_t *drops) noexcept nogil:
        cdef uint32_t i
        cdef pkt_meta *m
        for i in range(b.n):
            if b.verdict[i] != V_PENDING:
                continue
            m = &b.meta[i]
            if m.port_in >= self.nports:
                continue
            if m.l3 == L3_ARP:
                self._arp_input(b, i, now_ns, cnt, drops)
            elif (m.l3 == L3_IP6 and m.t.proto == IPPROTO_ICMPV6 and m.flags & PKT_F_L4
                    and (m.icmp_type == ND_NS or m.icmp_type == ND_NA)):
                self._nd_input(b, i, now_ns, cnt, drops)
        if self.nq_used:  # answers learned above free the packets waiting for them
            self.release(b, now_ns, cnt, drops)

    cdef void _arp_input(self, burst_t *b, uint32_t i, uint64_t now_ns, uint64_t *cnt,
                         uint64_t *drops) noexcept nogil:
        cdef pkt_meta *m = &b.meta[i]
        cdef uint8_t *p = pkt_data(b, i)
        cdef uint8_t *a = p + m.l3_off
        cdef uint16_t port = m.port_in
        cdef const uint8_t *mac = self.macs + 6 * port
        cdef uint32_t sip[4]
        cdef uint32_t tip[4]
        cdef uint8_t sha[6]
        cdef uint16_t op
        cdef uint32_t t
        cdef bint garp
        cdef neigh_entry *e
        # The parser checked that 8 + 2 * (hlen + plen) bytes are present.
        if a[4] != 6 or a[5] != 4:                   # arp_rcv: the device's hlen, IPv4's plen
            pkt_drop(b, i, DROP_BAD_LEN, drops)
            return
        op = load_be16(a + 6)
        memcpy(sha, a + 8, 6)
        memset(sip, 0, sizeof(sip))
        memset(tip, 0, sizeof(tip))
        sip[0] = load_u32(a + 14)
        tip[0] = load_u32(a + 24)
        t = load_be32(a + 24)
        # arp_process: Ethernet/IPv4 requests and replies only; nothing asks for a multicast or
        # loopback address, and a multicast sender address is forged.
        if (load_be16(a) != ARPHRD_ETHER or load_be16(a + 2) != ETH_P_IP
                or (op != ARPOP_REQUEST and op != ARPOP_REPLY)
                or t >> 28 == 0xe or t >> 24 == 127 or sha[0] & 1):
            pkt_drop(b, i, DROP_NOT_IP, drops)
            return
        garp = sip[0] == tip[0]
        if op == ARPOP_REQUEST and not garp and (
                self._owns(port, 4, tip)
                or (self.proxy[port] and sip[0] != 0 and tip[0] != 0)):
            if sip[0] != 0 and self._learn(port, 4, sip, sha, now_ns):
                cnt[<int>CNT_NEIGH_LEARN] += 1
            # The reply in place: target <- requester, sender <- us (RFC 826 "swap" step).
            memcpy(a + 18, sha, 6)
            store_u32(a + 24, sip[0])
            memcpy(a + 8, mac, 6)
            store_u32(a + 14, tip[0])
            store_be16(a + 6, ARPOP_REPLY)
            memcpy(p, sha, 6)
            memcpy(p + 6, mac, 6)
            m.len = <uint16_t>(m.l3_off + ARP_LEN)    # the requester's padding is not echoed
            m.port_out = port
            b.verdict[i] = V_FORWARD
            cnt[<int>CNT_NEIGH_REPLY] += 1
            return
        if sip[0] != 0:
            e = self._live(port, 4, sip, now_ns)
            if e != NULL and self._update(
                    e, sha,
                    NUD_REACHABLE if op == ARPOP_REPLY and memcmp(p, mac, 6) == 0 else NUD_STALE,
                    garp or now_ns >= e.updated_ns + ARP_LOCKTIME_NS, now_ns):
                cnt[<int>CNT_NEIGH_LEARN] += 1
        if op == ARPOP_REPLY or garp:
            b.verdict[i] = V_LOCAL
            cnt[<int>CNT_LOCAL] += 1

    cdef void _nd_input(self, burst_t *b, uint32_t i, uint64_t now_ns, uint64_t *cnt,
                        uint64_t *drops) noexcept nogil:
        cdef pkt_meta *m = &b.meta[i]
        cdef uint8_t *p = pkt_data(b, i)
        cdef uint8_t *ip = p + m.l3_off
        cdef uint8_t *ic = p + m.l4_off
        cdef uint32_t end = <uint32_t>m.l3_off + m.l3_len
        cdef uint32_t off
        cdef uint16_t port = m.port_in
        cdef const uint8_t *mac = self.macs + 6 * port
        cdef const uint8_t *lla = NULL
        cdef uint8_t typ = m.icmp_type
        cdef uint8_t opt_lla = ND_OPT_SLLA if typ == ND_NS else ND_OPT_TLLA
        cdef uint8_t flags, olen
        cdef bint unspec, owned
        cdef uint32_t target[4]
        cdef uint32_t src[4]
        cdef uint32_t dst[4]
        cdef uint8_t lladdr[6]
        cdef uint8_t dst_mac[6]
        cdef neigh_entry *e
        # RFC 4861 7.1.1 / 7.1.2 (RFC 6980: never fragmented). The parser bounded l4_off by end.
        if (m.flags & PKT_F_FRAGMENT or m.ttl != HOP_LIMIT_ND or m.icmp_code != 0
                or end - m.l4_off < 24 or ic[8] == 0xff):
            pkt_drop(b, i, DROP_BAD_L4_LEN, drops)
            return
        if ip6_l4_csum(ip, ic, end - m.l4_off, IPPROTO_ICMPV6) != load_be16(ic + 2):
            pkt_drop(b, i, DROP_BAD_CSUM, drops)
            return
        off = m.l4_off + 24
        while off < end:
            olen = p[off + 1] if off + 2 <= end else 0
            if olen == 0 or off + 8 * <uint32_t>olen > end:
                pkt_drop(b, i, DROP_BAD_L4_LEN, drops)
                return
            if p[off] == opt_lla:
                if olen != 1:                           # not an Ethernet address (RFC 2464 8)
                    pkt_drop(b, i, DROP_BAD_L4_LEN, drops)
                    return
                lla = p + off + 2
            off += 8 * <uint32_t>olen
        unspec = is_unspecified6(ip + 8)
        flags = ic[4]
        if ((typ == ND_NS and unspec and (lla != NULL or not is_solicited_node_of(ip + 24, ic + 8)))
                or (typ == ND_NA and ip[24] == 0xff and flags & NA_F_SOLICITED)):
            pkt_drop(b, i, DROP_BAD_L4_LEN, drops)
            return
        memcpy(target, ic + 8, 16)
        memcpy(src, ip + 8, 16)
        if lla != NULL:
            memcpy(lladdr, lla, 6)
        owned = self._owns(port, 6, target)
        if typ == ND_NA:
            e = NULL if owned else self._live(port, 6, target, now_ns)   # owned: a DAD conflict
            if e != NULL and self._na_update(e, lladdr if lla != NULL else NULL, flags, now_ns):
                cnt[<int>CNT_NEIGH_LEARN] += 1
            b.verdict[i] = V_LOCAL
            cnt[<int>CNT_LOCAL] += 1
            return
        # A proxy answers for others, not for the solicitor itself nor for DAD (RFC 4861 7.2.8).
        if not owned and not (self.proxy[port] and not unspec and memcmp(target, src, 16) != 0):
            return
        if not unspec and lla != NULL and self._learn(port, 6, src, lladdr, now_ns):
            cnt[<int>CNT_NEIGH_LEARN] += 1
        if unspec:
            memcpy(dst_mac, ALL_NODES_MAC, 6)          # DAD: to all nodes (7.2.4)
            memcpy(dst, ALL_NODES, 16)
        else:
            memcpy(dst_mac, lla if lla != NULL else p + 6, 6)
            memcpy(dst, src, 16)
        p = frame_room(b, i, m.l3_off + ND_LEN)
        if p == NULL:
            return
        nd_build(b, i, p, dst_mac, mac,
                 <uint8_t *>target if owned else <uint8_t *>&self.src6[4 * port], <uint8_t *>dst,
                 ND_NA, NA_F_ROUTER | (0 if unspec else NA_F_SOLICITED)
                 | (NA_F_OVERRIDE if owned else 0), <uint8_t *>target)
        m.port_out = port
        b.verdict[i] = V_FORWARD
        cnt[<int>CNT_NEIGH_REPLY] += 1

    # --- table updates ------------------------------------------------------------------------

    cdef bint _owns(self, uint16_t port, uint8_t family, const uint32_t *key) noexcept nogil:
        return tbl_find(&self.own, port, family, key) != NULL

    cdef neigh_entry *_live(self, uint16_t port, uint8_t family, const uint32_t *key,
                            uint64_t now_ns) noexcept nogil:
        """The entry for key unless absent or expired (an expired one is reclaimed)."""
        cdef neigh_entry *e = tbl_find(&self.nt, port, family, key)
        if e != NULL and nud_state(e, now_ns, self.retrans_ns) == NUD_NONE:
            tbl_del(&self.nt, e)
            self.st.expired += 1
            return NULL
        return e

    cdef neigh_entry *_create(self, uint16_t port, uint8_t family, const uint32_t *key,
                              uint64_t now_ns) noexcept nogil:
        cdef neigh_entry *e = tbl_add(&self.nt, port, family, key)
        if e == NULL and now_ns >= self.next_forced_gc_ns:
            self.next_forced_gc_ns = now_ns + FORCED_GC_NS
            self.neigh_gc(now_ns)
            e = tbl_add(&self.nt, port, family, key)
        if e == NULL:
            self.st.full += 1
            return NULL
        self.st.created += 1
        return e

    cdef void _set(self, neigh_entry *e, const uint8_t *mac, uint8_t state,
                   uint64_t now_ns) noexcept nogil:
        """Record a MAC (NULL: keep) in state REACHABLE or STALE, restarting its timers."""
        if mac != NULL:
            memcpy(e.mac, mac, 6)
        e.state = state
        e.probes = 0
        e.used_stale = 0
        e.updated_ns = now_ns
        e.reach_until_ns = now_ns + self.reachable_ns if state == NUD_REACHABLE else now_ns
        e.expire_ns = e.reach_until_ns + self.stale_ns

    cdef bint _update(self, neigh_entry *e, const uint8_t *mac, uint8_t new, bint override,
                      uint64_t now_ns) noexcept nogil:
        """neigh_update: a valid entry changes MAC only with override, and a STALE report of
        the MAC it has leaves it (and its timers) alone. True if the entry changed."""
        cdef uint8_t old
        cdef bint same
        if e.state == NUD_PERMANENT:
            return False
        old = nud_state(e, now_ns, self.retrans_ns)
        same = memcmp(e.mac, mac, 6) == 0
        if old == NUD_REACHABLE or old == NUD_STALE:
            if not same and not override:
                return False
            if same and new == NUD_STALE:
                return False
        self._set(e, mac, new, now_ns)
        return True

    cdef bint _learn(self, uint16_t port, uint8_t family, const uint32_t *key, const uint8_t *mac,
                     uint64_t now_ns) noexcept nogil:
        """neigh_event_ns: the sender of a request addressed to us, created or updated STALE."""
        cdef neigh_entry *e
        if self._owns(port, family, key):
            return False                                 # our own address: a conflict
        e = self._live(port, family, key, now_ns)
        if e == NULL:
            e = self._create(port, family, key, now_ns)
            if e == NULL:
                return False
        return self._update(e, mac, NUD_STALE, True, now_ns)

    cdef bint _na_update(self, neigh_entry *e, const uint8_t *lla, uint8_t flags,
                         uint64_t now_ns) noexcept nogil:
        """RFC 4861 7.2.5; lla NULL when the NA has no target link-layer option."""
        cdef uint8_t old
        cdef bint solicited = (flags & NA_F_SOLICITED) != 0
        cdef bint differs
        if e.state == NUD_PERMANENT:
            return False
        old = nud_state(e, now_ns, self.retrans_ns)
        if old == NUD_INCOMPLETE or old == NUD_FAILED:
            if lla == NULL:
                return False
            self._set(e, lla, NUD_REACHABLE if solicited else NUD_STALE, now_ns)
            return True
        differs = lla != NULL and memcmp(lla, e.mac, 6) != 0
        if differs and not (flags & NA_F_OVERRIDE):
            if old != NUD_REACHABLE:
                return False
            self._set(e, NULL, NUD_STALE, now_ns)       # keep the MAC, doubt it
            return True
        if solicited:
            self._set(e, lla if differs else NULL, NUD_REACHABLE, now_ns)
            return True
        if differs:
            self._set(e, lla, NUD_STALE, now_ns)
            return True
        return False

    cdef uint32_t neigh_gc(self, uint64_t now_ns) noexcept nogil:
        cdef uint32_t freed = self._sweep(now_ns, -1, False)
        self.st.expired += freed
        return freed

    cdef uint32_t _sweep(self, uint64_t now_ns, int port, bint flush) noexcept nogil:
        """Delete expired entries, or (flush) every dynamic entry of port (-1: all ports)."""
        cdef uint32_t j = 0, freed = 0
        cdef neigh_entry *e
        while j <= self.nt.mask:
            e = &self.nt.slots[j]
            if e.family != 0 and e.state != NUD_PERMANENT and (
                    (port < 0 or e.port == port) if flush else now_ns >= e.expire_ns):
                tbl_del(&self.nt, e)                     # j now holds a later entry: look again
                freed += 1
            else:
                j += 1
        return freed

    # --- control plane and test hooks ---------------------------------------------------------

    cdef uint16_t _port(self, port) except? 0xffff:
        if not 0 <= port < self.nports:
            raise ValueError(f"port {port} out of range (0..{self.nports - 1})")
        return port

    def add_owned(self, port, ip):
        """Answer ARP requests / NSs for ip on port with the port's MAC. The first owned address
        of each family is the port's source address for solicitations."""
        cdef uint16_t p = self._port(port)
        cdef uint32_t key[4]
        cdef uint8_t family = _key(ip, key)
        cdef neigh_entry *e
        if self._owns(p, family, key):
            return
        e = tbl_add(&self.own, p, family, key)
        if e == NULL:
            raise OverflowError(f"owned address table full ({self.own.cap - self.nports})")
        e.state = NUD_PERMANENT
        if not self.src_set[p] & (1 << (family == 6)):
            self._set_source(p, family, key)

    def remove_owned(self, port, ip):
        """Stop answering for ip on port; True if it was owned."""
        cdef uint16_t p = self._port(port)
        cdef uint32_t key[4]
        cdef uint8_t family = _key(ip, key)
        cdef neigh_entry *e = tbl_find(&self.own, p, family, key)
        cdef uint32_t *src = &self.src4[p] if family == 4 else &self.src6[4 * p]
        cdef uint8_t bit = 1 << (family == 6)
        cdef uint32_t j
        if e == NULL:
            return False
        tbl_del(&self.own, e)
        if self.src_set[p] & bit and memcmp(src, key, 4 if family == 4 else 16) == 0:
            # The source address went away: the next owned one, else the default.
            self.src_set[p] &= ~bit
            ll = _link_local(self.macs + 6 * p)
            if family == 4:
                self.src4[p] = 0
            else:
                memcpy(src, <const char *>ll, 16)
            for j in range(self.own.mask + 1):
                e = &self.own.slots[j]
                if (e.family == family and e.port == p
                        and not (family == 6 and memcmp(e.ip, <const char *>ll, 16) == 0)):
                    self._set_source(p, family, e.ip)
                    break
        return True

    cdef _set_source(self, uint16_t port, uint8_t family, const uint32_t *key):
        if family == 4:
            self.src4[port] = key[0]
        else:
            memcpy(&self.src6[4 * port], key, 16)
        self.src_set[port] |= 1 << (family == 6)

    def set_proxy(self, port, on):
        """Answer every ARP request / NS on port (the port facing the node's own stack)."""
        self.proxy[self._port(port)] = bool(on)

    def add_static(self, port, ip, mac):
        """A PERMANENT entry: used by resolve, never learned over, kept by flush."""
        cdef uint16_t p = self._port(port)
        cdef uint32_t key[4]
        cdef uint8_t family = _key(ip, key)
        cdef neigh_entry *e
        mac = bytes(mac)
        if len(mac) != 6:
            raise ValueError("MAC addresses are 6 bytes")
        e = tbl_find(&self.nt, p, family, key)
        if e == NULL:
            e = tbl_add(&self.nt, p, family, key)
            if e == NULL:
                raise OverflowError(f"neighbour table full ({self.nt.cap})")
        e.state = NUD_PERMANENT
        memcpy(e.mac, <const char *>mac, 6)

    def delete(self, port, ip):
        """Remove the entry for ip on port (static or learned); True if there was one."""
        cdef uint16_t p = self._port(port)
        cdef uint32_t key[4]
        cdef uint8_t family = _key(ip, key)
        cdef neigh_entry *e = tbl_find(&self.nt, p, family, key)
        if e == NULL:
            return False
        tbl_del(&self.nt, e)
        return True

    def lookup(self, port, ip, uint64_t now_ns):
        """resolve() from Python: the MAC (bytes) of a usable entry at now_ns, else None."""
        cdef uint16_t p = self._port(port)
        cdef uint32_t key[4]
        cdef uint8_t family = _key(ip, key)
        cdef uint8_t mac[6]
        if self.resolve(p, key, family, now_ns, mac):
            return bytes(mac[:6])
        return None

    def entries(self, uint64_t now_ns):
        """Entries not expired at now_ns: dicts of port, ip, mac (bytes), state, probes."""
        cdef uint32_t j
        cdef neigh_entry *e
        cdef uint8_t state
        out = []
        for j in range(self.nt.mask + 1):
            e = &self.nt.slots[j]
            if e.family == 0:
                continue
            state = nud_state(e, now_ns, self.retrans_ns)
            if state == NUD_NONE:
                continue
            out.append({"port": e.port, "ip": _addr(e.ip, e.family), "mac": bytes(e.mac[:6]),
                        "state": STATES[state], "probes": e.probes})
        return sorted(out, key=lambda d: (d["port"], d["ip"].version, d["ip"]))

    def stats(self):
        return {"entries": self.nt.n, "capacity": self.nt.cap,
                "owned": self.own.n - self.nports, "created": self.st.created,
                "expired": self.st.expired, "full": self.st.full,
                "rate_limited": self.st.rate_limited, "queue_full": self.st.queue_full,
                "held": self.nq_used}

    def flush(self, port=None):
        """Delete every learned entry (of one port); static entries stay. Returns how many."""
        return self._sweep(0, -1 if port is None else self._port(port), True)

    def gc(self, uint64_t now_ns):
        """Reclaim entries expired at now_ns; returns how many."""
        return self.neigh_gc(now_ns)

    def probe_stale_into(self, Burst burst not None, uint64_t now_ns):
        """Clear `burst` and fill it with unicast probes for the neighbours in use that went
        STALE (see probe_stale); the worker sends them once a second. Returns how many."""
        burst.b.n = 0
        return self.probe_stale(&burst.b, now_ns)

    def run(self, Burst burst not None, uint64_t now_ns, counters=None):
        """neigh_burst over the burst (after parse). Returns (counters, drops) like parse()."""
        counters = stage_counters(counters)
        cdef uint64_t[::1] cnt = counters[0]
        cdef uint64_t[::1] drops = counters[1]
        with nogil:
            self.neigh_burst(&burst.b, now_ns, &cnt[0], &drops[0])
        return counters

    def solicit_packet(self, Burst burst not None, uint32_t i, port, ip, uint64_t now_ns):
        """solicit() on packet i for ip out of port: 0 built, -1 refused."""
        burst._check(i)
        cdef uint16_t p = self._port(port)
        cdef uint32_t key[4]
        cdef uint8_t family = _key(ip, key)
        return self.solicit(&burst.b, i, p, key, family, now_ns)


cdef uint8_t _key(ip, uint32_t *key) except 0:
    """Parse ip into a 4-word key; returns the family."""
    packed = ipaddress.ip_address(ip).packed
    memset(key, 0, 16)
    memcpy(key, <const char *>packed, len(packed))
    return 4 if len(packed) == 4 else 6


cdef bytes _link_local(const uint8_t *mac):
    """EUI-64 link-local address (RFC 4291 2.5.1, Appendix A): fe80::, U/L bit flipped, ff:fe."""
    return bytes([0xfe, 0x80, 0, 0, 0, 0, 0, 0, mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe,
                  mac[3], mac[4], mac[5]])


cdef object _addr(const uint32_t *ip, uint8_t family):
    return ipaddress.ip_address((<const char *>ip)[:4 if family == 4 else 16])
