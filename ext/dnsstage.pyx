"""DNS answers in the fast path (see dnsstage.pxd): a table of precomputed wire-format records keyed by
the lower-cased question name and type, and the stage that turns a query into its answer in place.

The records were packed by the control plane for the lower-cased question at offset 12; a query
for the same name in any letter case has a question of the same length, so their compression
pointers stay valid and owner names read back in the client's case, exactly as the control plane
answers (dataplane.dns.wire). Queries the table cannot answer are left pending: the control plane
(reached through the Service NAT) answers them.
"""
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.string cimport memcpy, memcmp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
import ipaddress

from dataplane.includes.pkt cimport (
    burst_t, pkt_meta, pkt_data, V_PENDING, V_FORWARD, PKT_F_L4, PKT_F_FRAGMENT, PKT_F_IP_OPTIONS,
    PKT_F_IP6_EXT, PKT_F_CSUM_PARTIAL, CNT_DNS_ANSWER,
)
from dataplane.includes.bytes cimport load_be16, store_be16
from dataplane.csum cimport IPPROTO_UDP, ip4_hdr_csum, ip4_l4_csum, ip6_l4_csum
from dataplane.burst cimport Burst
from dataplane.burst import stage_counters

__all__ = ["DnsTable"]

cdef enum:
    HDR = 12                    # DNS header
    OPT_LEN = 11                # an OPT record without options
    T_OPT = 41
    REPLY_TTL = 64

cdef uint64_t FNV_OFFSET = 0xcbf29ce484222325
cdef uint64_t FNV_PRIME = 0x100000001b3


cdef inline uint64_t key_hash(const uint8_t *key, uint16_t n, uint16_t qtype) noexcept nogil:
    cdef uint64_t h = FNV_OFFSET ^ qtype
    cdef uint16_t k
    for k in range(n):
        h = (h ^ key[k]) * FNV_PRIME
    h ^= h >> 29
    return h if h else 1


cdef class DnsTable:
    def __cinit__(self, entries, addresses, uint16_t port=53):
        """entries: (lower-case wire name, qtype, records, an, ns, ar) per answer; addresses: the
        DNS server addresses the stage answers for (the cluster DNS Service's IPs)."""
        cdef uint64_t nslots = 2
        cdef uint32_t blob_len = 0, off = 0, j
        cdef dns_entry *e
        cdef bytes kb, rb
        entries = [(bytes(k).lower(), q, bytes(r), an, ns, ar) for k, q, r, an, ns, ar in entries]
        for key, qtype, rrs, an, ns, ar in entries:
            if not 1 <= len(key) <= 255 or key[len(key) - 1] != 0 or len(rrs) > 65535:
                raise ValueError(f"bad entry for {key!r}: a wire-format name and at most 65535 bytes of records")
            blob_len += len(key) + len(rrs)
        while nslots < 2 * <uint64_t>len(entries):
            nslots <<= 1
        self.slots = <dns_entry *>PyMem_Calloc(nslots, sizeof(dns_entry))
        self.blob = <uint8_t *>PyMem_Calloc(max(blob_len, 1), 1)
        addrs = [ipaddress.ip_address(a) for a in addresses]
        v4 = [a.packed for a in addrs if a.version == 4]
        v6 = [a.packed for a in addrs if a.version == 6]
        self.addr4 = <uint32_t *>PyMem_Calloc(max(len(v4), 1), 4)
        self.addr6 = <uint8_t *>PyMem_Calloc(max(len(v6), 1), 16)
        if not (self.slots and self.blob and self.addr4 and self.addr6):
            raise MemoryError()
        self.mask = <uint32_t>(nslots - 1)
        self.port = port
        for k, a in enumerate(v4):
            memcpy(&self.addr4[k], <const char *>a, 4)
        for k, a in enumerate(v6):
            memcpy(&self.addr6[16 * k], <const char *>a, 16)
        self.n4, self.n6 = len(v4), len(v6)
        for kb, qtype, rb, an, ns, ar in entries:
            if self.find(kb, len(kb), qtype) != NULL:
                raise ValueError(f"duplicate entry {kb!r} type {qtype}")
            h = key_hash(kb, len(kb), qtype)
            j = h & self.mask
            while self.slots[j].hash:
                j = (j + 1) & self.mask
            e = &self.slots[j]
            e.hash, e.qtype, e.an, e.ns, e.ar = h, qtype, an, ns, ar
            e.key_off, e.key_len = off, len(kb)
            memcpy(self.blob + off, <const char *>kb, len(kb))
            off += len(kb)
            e.rr_off, e.rr_len = off, len(rb)
            if rb:
                memcpy(self.blob + off, <const char *>rb, len(rb))
            off += len(rb)
            self.size += 1

    def __dealloc__(self):
        PyMem_Free(self.slots)
        PyMem_Free(self.blob)
        PyMem_Free(self.addr4)
        PyMem_Free(self.addr6)

    cdef const dns_entry *find(self, const uint8_t *key, uint16_t key_len, uint16_t qtype) noexcept nogil:
        cdef uint64_t h = key_hash(key, key_len, qtype)
        cdef uint32_t j = h & self.mask
        cdef const dns_entry *e
        while True:
            e = &self.slots[j]
            if e.hash == 0:
                return NULL
            if e.hash == h and e.qtype == qtype and e.key_len == key_len \
                    and memcmp(self.blob + e.key_off, key, key_len) == 0:
                return e
            j = (j + 1) & self.mask

    cdef bint serves(self, const uint8_t *ip, uint8_t family) noexcept nogil:
        cdef uint32_t k
        if family == 4:
            for k in range(self.n4):
                if memcmp(&self.addr4[k], ip, 4) == 0:
                    return True
        else:
            for k in range(self.n6):
                if memcmp(&self.addr6[16 * k], ip, 16) == 0:
                    return True
        return False

    cdef void dns_burst(self, burst_t *b, uint64_t *cnt, uint64_t *drops) noexcept nogil:
        cdef uint32_t i
        for i in range(b.n):
            if b.verdict[i] == V_PENDING and answer(self, b, i):
                cnt[CNT_DNS_ANSWER] += 1

    def run(self, Burst burst not None, counters=None):
        """dns_burst over the burst (after parse). Returns (counters, drops) like parse()."""
        counters = stage_counters(counters)
        cdef uint64_t[::1] cnt = counters[0]
        cdef uint64_t[::1] drops = counters[1]
        with nogil:
            self.dns_burst(&burst.b, &cnt[0], &drops[0])
        return counters

    def lookup(self, name, uint16_t qtype):
        """The records and (an, ns, ar) stored for a wire-format name, or None (tests)."""
        cdef bytes key = bytes(name).lower()
        cdef const dns_entry *e = self.find(key, len(key), qtype)
        if e == NULL:
            return None
        return (<char *>self.blob)[e.rr_off:e.rr_off + e.rr_len], (e.an, e.ns, e.ar)

    def __len__(self):
        return self.size


cdef bint answer(DnsTable t, burst_t *b, uint32_t i) noexcept nogil:
    """Packet i's answer in place; False (packet untouched) when the table cannot give it."""
    cdef pkt_meta *m = &b.meta[i]
    cdef uint8_t *p
    cdef uint8_t *ip
    cdef uint8_t *udp
    cdef uint8_t *dns
    cdef uint8_t key[255]
    cdef uint8_t tmp[16]
    cdef uint32_t dlen, off, qend, resp, room, tmp4
    cdef uint16_t flags, edns_size = 0, ar
    cdef uint8_t n, c, opt_do = 0
    cdef bint edns = False, tc
    cdef const dns_entry *e
    cdef uint16_t limit

    if not (m.flags & PKT_F_L4) or m.t.proto != IPPROTO_UDP or m.t.dport != t.port \
            or m.flags & (PKT_F_FRAGMENT | PKT_F_IP_OPTIONS | PKT_F_IP6_EXT):
        return False
    if not t.serves(<const uint8_t *>m.t.daddr, m.t.family):
        return False
    p = pkt_data(b, i)
    ip = p + m.l3_off
    udp = p + m.l4_off
    dns = udp + 8
    dlen = load_be16(udp + 4) - 8
    if dlen < HDR + 5:
        return False
    flags = load_be16(dns + 2)
    ar = load_be16(dns + 10)
    # A standard query (QR 0, opcode 0, TC 0), one question, nothing else but an OPT record.
    if flags & 0xFA00 or load_be16(dns + 4) != 1 or load_be16(dns + 6) or load_be16(dns + 8) or ar > 1:
        return False
    off = HDR
    while True:
        if off >= dlen:
            return False
        n = dns[off]
        if n & 0xC0 or off - HDR + 1 + n > 255:
            return False
        key[off - HDR] = n
        off += 1
        if n == 0:
            break
        if off + n > dlen:
            return False
        for c in range(n):
            key[off - HDR + c] = dns[off + c] | 0x20 if 0x41 <= dns[off + c] <= 0x5A else dns[off + c]
        off += n
    qend = off + 4
    if qend > dlen or load_be16(dns + off + 2) != 1:    # class IN only
        return False
    if ar:
        # OPT: root name, type 41, version 0, its options (if any) end the message.
        if qend + OPT_LEN > dlen or dns[qend] != 0 or load_be16(dns + qend + 1) != T_OPT \
                or dns[qend + 6] != 0 or qend + OPT_LEN + load_be16(dns + qend + 9) != dlen:
            return False
        edns = True
        edns_size = load_be16(dns + qend + 3)
        opt_do = dns[qend + 7] & 0x80
    elif qend != dlen:
        return False
    e = t.find(key, <uint16_t>(off - HDR), load_be16(dns + off))
    if e == NULL:
        return False

    limit = DNS_CLASSIC_UDP
    if edns and edns_size > DNS_CLASSIC_UDP:
        limit = edns_size if edns_size < DNS_MAX_UDP else DNS_MAX_UDP
    resp = qend + e.rr_len + (OPT_LEN if edns else 0)
    tc = resp > limit
    if tc:
        resp = qend + (OPT_LEN if edns else 0)
    room = b.slot_size - m.data_off - m.l4_off - 8
    if resp > room:
        return False

    # DNS: flags QR AA RA, RD and CD copied; counts; records; OPT (our size, DO echoed).
    store_be16(dns + 2, 0x8480 | (flags & 0x0110) | (0x0200 if tc else 0))
    store_be16(dns + 6, 0 if tc else e.an)
    store_be16(dns + 8, 0 if tc else e.ns)
    store_be16(dns + 10, (0 if tc else e.ar) + (1 if edns else 0))
    off = qend
    if not tc:
        memcpy(dns + off, t.blob + e.rr_off, e.rr_len)
        off += e.rr_len
    if edns:
        dns[off] = 0
        store_be16(dns + off + 1, T_OPT)
        store_be16(dns + off + 3, DNS_MAX_UDP)
        dns[off + 5] = 0
        dns[off + 6] = 0
        dns[off + 7] = opt_do
        dns[off + 8] = 0
        store_be16(dns + off + 9, 0)

    # Back to the client: swap Ethernet, IP and UDP addresses; lengths, TTL and checksums.
    memcpy(tmp, p, 6)
    memcpy(p, p + 6, 6)
    memcpy(p + 6, tmp, 6)
    memcpy(tmp, udp, 2)
    memcpy(udp, udp + 2, 2)
    memcpy(udp + 2, tmp, 2)
    store_be16(udp + 4, <uint16_t>(8 + resp))
    store_be16(udp + 6, 0)
    if m.t.family == 4:
        memcpy(&tmp4, ip + 12, 4)
        memcpy(ip + 12, ip + 16, 4)
        memcpy(ip + 16, &tmp4, 4)
        store_be16(ip + 2, <uint16_t>(20 + 8 + resp))
        store_be16(ip + 6, 0)                       # no fragments: DF clear, offset 0
        ip[8] = REPLY_TTL
        store_be16(ip + 10, ip4_hdr_csum(ip, 20))
        store_be16(udp + 6, ip4_l4_csum(ip, udp, 8 + resp, IPPROTO_UDP))
        m.l3_len = <uint16_t>(20 + 8 + resp)
    else:
        memcpy(tmp, ip + 8, 16)
        memcpy(ip + 8, ip + 24, 16)
        memcpy(ip + 24, tmp, 16)
        store_be16(ip + 4, <uint16_t>(8 + resp))
        ip[7] = REPLY_TTL
        store_be16(udp + 6, ip6_l4_csum(ip, udp, 8 + resp, IPPROTO_UDP))
        m.l3_len = <uint16_t>(40 + 8 + resp)
    m.len = <uint16_t>(m.l4_off + 8 + resp)
    m.flags &= ~PKT_F_CSUM_PARTIAL
    memcpy(tmp, m.t.saddr, 16)
    memcpy(m.t.saddr, m.t.daddr, 16)
    memcpy(m.t.daddr, tmp, 16)
    m.t.dport, m.t.sport = m.t.sport, m.t.dport
    m.port_out = m.port_in
    b.verdict[i] = V_FORWARD
    return True
