"""pcap and pcapng files to and from bursts.

PcapReader mmaps the file and copies records straight into burst slots (no Python object per
packet); every non-Ethernet link type it supports is turned into Ethernet by writing a synthetic
14-byte header into the slot's headroom, so the pipeline only ever sees Ethernet. PcapWriter
builds a burst's records in one C buffer and writes them with a single write().

Bad input raises PcapError naming the file and the byte offset of the offending record or block.
"""
import os
import stat

from libc.errno cimport errno, EINTR
from libc.stdlib cimport realloc, free
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from posix.mman cimport mmap, munmap, madvise, PROT_READ, MAP_PRIVATE, MAP_FAILED, MADV_SEQUENTIAL
from posix.unistd cimport write, close as c_close

from dataplane.burst cimport Burst
from dataplane.includes.pkt cimport burst_t, pkt_reset, pkt_data, SLOT_HEADROOM, PKT_F_OVERSIZE
from dataplane.includes.bytes cimport load_u32, store_u32, load_be16, store_be16, bswap32, bswap16

cdef extern from *:
    uint64_t __builtin_bswap64(uint64_t) nogil

__all__ = ["PcapReader", "PcapWriter", "PcapError", "read_all", "LINKTYPES"]

# Link types we read; everything but Ethernet gets a synthetic Ethernet header.
LINKTYPES = {1: "EN10MB", 113: "LINUX_SLL", 276: "LINUX_SLL2", 101: "RAW", 12: "RAW", 14: "RAW",
             228: "IPV4", 229: "IPV6"}
# Names of a few link types people try to replay, to make the rejection readable.
_OTHER_LINKTYPES = {0: "NULL", 9: "PPP", 105: "IEEE802_11", 108: "LOOP",
                    127: "IEEE802_11_RADIOTAP", 226: "IPNET", 239: "NFLOG"}


class PcapError(ValueError):
    """A capture file that cannot be read: `.path` names it, `.offset` is where it went wrong."""

    def __init__(self, path, offset, msg):
        super().__init__(path, offset, msg)   # args as given, so the error pickles
        self.path = path
        self.offset = offset
        self.msg = msg

    def __str__(self):
        return f"{self.path}: {self.msg} (at byte offset {self.offset})"


cdef enum:
    MAGIC_US = 0xa1b2c3d4
    MAGIC_NS = 0xa1b23c4d
    NG_SHB = 0x0a0d0d0a       # byte-order independent by design
    NG_BOM = 0x1a2b3c4d
    NG_IDB = 1
    NG_PB = 2                 # obsolete Packet Block
    NG_SPB = 3
    NG_EPB = 6
    # libpcap's MAXIMUM_SNAPLEN: anything larger is a corrupt length, not a big packet.
    MAX_CAPLEN = 262144
    ETH_HLEN = 14
    MAX_FRAME_LEN = 65535     # pkt_meta.len is 16 bits

cdef enum:
    LT_ETHERNET = 1
    LT_RAW_BSD12 = 12
    LT_RAW_BSD14 = 14
    LT_RAW = 101
    LT_SLL = 113
    LT_IPV4 = 228
    LT_IPV6 = 229
    LT_SLL2 = 276

cdef enum:
    E_OK = 0
    E_NOMEM
    E_REC_HDR
    E_CAPLEN_ABSURD
    E_CAPLEN_EOF
    E_BLOCK_HDR
    E_BLOCK_SMALL
    E_BLOCK_ALIGN
    E_BLOCK_EOF
    E_BLOCK_TRAILER
    E_BOM
    E_VERSION
    E_BLOCK_BODY
    E_CAPLEN_BLOCK
    E_IFACE
    E_LINKTYPE
    E_OPTION
    E_TSRESOL


cdef uint64_t POW10[11]
POW10[:] = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000,
            10000000000]


cdef inline uint32_t rd32(const uint8_t *p, bint swap) noexcept nogil:
    cdef uint32_t v = load_u32(p)
    return bswap32(v) if swap else v


cdef inline uint64_t rd64(const uint8_t *p, bint swap) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return __builtin_bswap64(v) if swap else v


cdef inline uint16_t rd16(const uint8_t *p, bint swap) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return bswap16(v) if swap else v


cdef inline bint linktype_ok(uint32_t lt) noexcept nogil:
    return (lt == LT_ETHERNET or lt == LT_SLL or lt == LT_SLL2 or lt == LT_RAW
            or lt == LT_RAW_BSD12 or lt == LT_RAW_BSD14 or lt == LT_IPV4 or lt == LT_IPV6)


cdef inline uint64_t iface_ts(const pcap_iface *f, uint64_t ts) noexcept nogil:
    cdef uint64_t frac
    cdef uint8_t sh = f.ts_shift
    if sh:
        frac = ts & ((<uint64_t>1 << sh) - 1)
        # frac * 10^9 must fit 64 bits: drop the sub-ns bits of very fine resolutions first.
        if sh > 34:
            frac >>= sh - 34
            return (ts >> sh) * 1000000000ULL + ((frac * 1000000000ULL) >> 34) + <uint64_t>f.ts_off_ns
        return (ts >> sh) * 1000000000ULL + ((frac * 1000000000ULL) >> sh) + <uint64_t>f.ts_off_ns
    return ts * f.ts_mul / f.ts_div + <uint64_t>f.ts_off_ns


cdef inline bint oversize(burst_t *b, uint32_t i, uint16_t port_in, uint64_t ts_ns) noexcept nogil:
    pkt_reset(b, i, 0, port_in)
    b.meta[i].flags = PKT_F_OVERSIZE
    b.meta[i].ts_ns = ts_ns
    return False


cdef inline bint emit(burst_t *b, uint32_t i, const uint8_t *p, uint32_t caplen, uint32_t lt,
                      uint16_t port_in, uint64_t ts_ns) noexcept nogil:
    """Copy one record into slot i as an Ethernet frame. False: it does not fit the slot, so the
    slot gets an empty frame flagged PKT_F_OVERSIZE (the parser drops it as `oversize`): every
    record stays one packet, and traces keep their input indexes."""
    cdef uint32_t room = b.slot_size - SLOT_HEADROOM
    cdef uint32_t hlen, plen
    cdef uint16_t ethertype = 0
    cdef uint8_t *d
    if room > MAX_FRAME_LEN:
        room = MAX_FRAME_LEN
    if lt == LT_ETHERNET:
        if caplen > room:
            return oversize(b, i, port_in, ts_ns)
        pkt_reset(b, i, <uint16_t>caplen, port_in)
        memcpy(pkt_data(b, i), p, caplen)
        b.meta[i].ts_ns = ts_ns
        return True

    hlen = 16 if lt == LT_SLL else 20 if lt == LT_SLL2 else 0
    if caplen < hlen:
        # Not even the link header was captured: nothing Ethernet-shaped to deliver, so an empty
        # frame goes through and the parser drops it as truncated.
        pkt_reset(b, i, 0, port_in)
        b.meta[i].ts_ns = ts_ns
        return True
    plen = caplen - hlen
    # The payload lands where an Ethernet frame would start; the header goes into the headroom.
    if plen > room or plen + ETH_HLEN > MAX_FRAME_LEN:
        return oversize(b, i, port_in, ts_ns)
    pkt_reset(b, i, <uint16_t>(plen + ETH_HLEN), port_in)
    b.meta[i].data_off = SLOT_HEADROOM - ETH_HLEN
    b.meta[i].ts_ns = ts_ns
    d = pkt_data(b, i)
    memset(d, 0, 12)
    if lt == LT_SLL:
        if load_be16(p + 4) == 6:
            memcpy(d + 6, p + 6, 6)
        ethertype = load_be16(p + 14)
    elif lt == LT_SLL2:
        if p[11] == 6:
            memcpy(d + 6, p + 12, 6)
        ethertype = load_be16(p)
    elif lt == LT_IPV4:
        ethertype = 0x0800
    elif lt == LT_IPV6:
        ethertype = 0x86dd
    elif plen:
        # Raw IP: the version nibble says which. Anything else keeps ethertype 0 and is dropped
        # by the parser as a bad ethertype.
        if p[0] >> 4 == 4:
            ethertype = 0x0800
        elif p[0] >> 4 == 6:
            ethertype = 0x86dd
    store_be16(d + 12, ethertype)
    memcpy(d + ETH_HLEN, p + hlen, plen)
    return True


cdef class PcapReader:
    """Reads a pcap or pcapng file into bursts: `while reader.fill(burst): ...`."""

    def __cinit__(self, path):
        cdef void *p
        self.path = os.fspath(path)
        self.first_linktype = -1
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise PcapError(self.path, 0, "not a regular file (pipes and devices cannot be mapped)")
            size = st.st_size
            if size == 0:
                raise PcapError(self.path, 0, "empty file")
            p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0)
            if p == MAP_FAILED:
                raise OSError(errno, os.strerror(errno), self.path)
        finally:
            os.close(fd)
        self.data = <const uint8_t *>p
        self.size = size
        madvise(p, size, MADV_SEQUENTIAL)  # one pass front to back: read ahead aggressively
        self._open()

    def __dealloc__(self):
        if self.data != NULL:
            munmap(<void *>self.data, self.size)
        free(self.ifaces)

    cdef int _open(self) except -1:
        cdef uint32_t magic
        if self.size < 4:
            raise PcapError(self.path, 0, f"file of {self.size} bytes is too short for a magic number")
        magic = load_u32(self.data)
        if magic == NG_SHB:
            self.ng = True
            # Consume the section and interface headers up to the first packet so linktype is known.
            if self._fill_ng(NULL, 0, 0) != E_OK:
                self._raise()
            return 0
        if magic == MAGIC_US or magic == MAGIC_NS:
            self.swap = False
        elif bswap32(magic) == MAGIC_US or bswap32(magic) == MAGIC_NS:
            self.swap = True
            magic = bswap32(magic)
        else:
            raise PcapError(self.path, 0, f"unknown magic number 0x{magic:08x}: not pcap or pcapng")
        if self.size < 24:
            raise PcapError(self.path, 0, f"global header cut off ({self.size} of 24 bytes)")
        self.frac_mul = 1 if magic == MAGIC_NS else 1000
        self.first_nsec = magic == MAGIC_NS
        if self._grow_ifaces() != E_OK:
            raise MemoryError()
        # The upper 16 bits of the link type carry FCS length information, not the link type.
        self.ifaces[0].linktype = rd32(self.data + 20, self.swap) & 0xffff
        self.ifaces[0].snaplen = rd32(self.data + 16, self.swap)
        self.n_ifaces = 1
        self.first_linktype = self.ifaces[0].linktype
        self.pos = 24
        if not linktype_ok(self.ifaces[0].linktype):
            self._fail(E_LINKTYPE, 20, self.ifaces[0].linktype)
            self._raise()
        return 0

    @property
    def linktype(self):
        """Link type of the file's first interface (None for a pcapng file without any)."""
        return None if self.first_linktype < 0 else self.first_linktype

    @property
    def nsec(self):
        """True when the first interface's timestamps are finer than microseconds."""
        return self.first_nsec

    @property
    def offset(self):
        """Byte offset of the next record or block to read."""
        return self.pos

    def fill(self, Burst burst not None, unsigned int port_in=0):
        """Clear `burst` and fill it with up to capacity frames; returns how many (0 at the end).

        Bad input raises PcapError, but only once the good frames before it were returned."""
        if self.data == NULL:
            raise ValueError("read from a closed PcapReader")
        if port_in > 0xffff:
            raise ValueError(f"port_in {port_in} out of range")
        return self.fill_burst(&burst.b, <uint16_t>port_in)

    cdef Py_ssize_t fill_burst(self, burst_t *b, uint16_t port_in) except -1:
        cdef int err
        b.n = 0
        if self.ng:
            err = self._fill_ng(b, b.cap, port_in)
        else:
            err = self._fill_pcap(b, port_in)
        self.packets_read += b.n
        if err != E_OK and b.n == 0:
            self._raise()
        return b.n

    cdef int _fail(self, int err, size_t off, uint64_t val) noexcept nogil:
        self.err = err
        self.err_off = off
        self.err_val = val
        return err

    cdef int _raise(self) except -1:
        cdef uint64_t v = self.err_val
        if self.err == E_NOMEM:
            raise MemoryError()
        if self.err == E_LINKTYPE:
            name = LINKTYPES.get(v) or _OTHER_LINKTYPES.get(v)
            msg = f"unsupported link type {v}" + (f" ({name})" if name else "")
        else:
            msg = {
                E_REC_HDR: f"record header cut off ({v} of 16 bytes)",
                E_CAPLEN_ABSURD: f"captured length {v} exceeds the {MAX_CAPLEN}-byte maximum",
                E_CAPLEN_EOF: f"captured length {v} runs past end of file",
                E_BLOCK_HDR: f"block header cut off ({v} bytes left)",
                E_BLOCK_SMALL: f"block length {v} is smaller than 12",
                E_BLOCK_ALIGN: f"block length {v} is not a multiple of 4",
                E_BLOCK_EOF: f"block length {v} runs past end of file",
                E_BLOCK_TRAILER: f"trailing block length {v} differs from the leading one",
                E_BOM: f"bad section byte-order magic 0x{v:08x}",
                E_VERSION: f"unsupported pcapng major version {v}",
                E_BLOCK_BODY: f"block of {v} bytes is too short for its type",
                E_CAPLEN_BLOCK: f"captured length {v} runs past its block",
                E_IFACE: f"packet refers to interface {v}, which this section does not describe",
                E_OPTION: f"option of {v} bytes runs past its block",
                E_TSRESOL: f"unsupported if_tsresol 0x{v:02x}",
            }[self.err]
        raise PcapError(self.path, self.err_off, msg)

    cdef int _fill_pcap(self, burst_t *b, uint16_t port_in) noexcept nogil:
        cdef const uint8_t *d = self.data
        cdef size_t pos = self.pos, size = self.size
        cdef uint32_t n = 0, caplen, lt = self.ifaces[0].linktype
        cdef uint64_t ts
        cdef bint swap = self.swap
        cdef int err = E_OK
        while n < b.cap and pos < size:
            if size - pos < 16:
                err = self._fail(E_REC_HDR, pos, size - pos)
                break
            caplen = rd32(d + pos + 8, swap)
            if caplen > MAX_CAPLEN:
                err = self._fail(E_CAPLEN_ABSURD, pos, caplen)
                break
            if caplen > size - pos - 16:
                err = self._fail(E_CAPLEN_EOF, pos, caplen)
                break
            ts = <uint64_t>rd32(d + pos, swap) * 1000000000ULL + <uint64_t>rd32(d + pos + 4, swap) * self.frac_mul
            if self.ifaces[0].snaplen and caplen > self.ifaces[0].snaplen:
                self.over_snaplen += 1      # a writer bug or a doctored file: read, but counted
            if not emit(b, n, d + pos + 16, caplen, lt, port_in, ts):
                self.oversize += 1
            n += 1
            pos += 16 + <size_t>caplen
        self.pos = pos
        b.n = n
        return err

    cdef int _fill_ng(self, burst_t *b, uint32_t cap, uint16_t port_in) noexcept nogil:
        """Walk blocks until `cap` packets are out or the file ends. cap 0 (at open) stops at the
        first packet block, having read the section and interface headers before it."""
        cdef const uint8_t *d = self.data
        cdef const uint8_t *body
        cdef size_t pos = self.pos, size = self.size
        cdef uint32_t n = 0, btype, blen, body_len, caplen, origlen, ifid, bom
        cdef uint64_t ts
        cdef bint swap
        cdef pcap_iface *f
        cdef int err = E_OK
        while pos < size:
            if size - pos < 12:
                err = self._fail(E_BLOCK_HDR, pos, size - pos)
                break
            btype = load_u32(d + pos)
            swap = self.swap
            if btype == NG_SHB:
                # A new section may switch byte order: its length is read in the new one.
                bom = load_u32(d + pos + 8)
                if bom == NG_BOM:
                    swap = False
                elif bom == bswap32(NG_BOM):
                    swap = True
                else:
                    err = self._fail(E_BOM, pos, bom)
                    break
            else:
                btype = rd32(d + pos, swap)
            blen = rd32(d + pos + 4, swap)
            if blen < 12:
                err = self._fail(E_BLOCK_SMALL, pos, blen)
                break
            if blen & 3:
                err = self._fail(E_BLOCK_ALIGN, pos, blen)
                break
            if blen > size - pos:
                err = self._fail(E_BLOCK_EOF, pos, blen)
                break
            if rd32(d + pos + blen - 4, swap) != blen:
                err = self._fail(E_BLOCK_TRAILER, pos, rd32(d + pos + blen - 4, swap))
                break
            body = d + pos + 8
            body_len = blen - 12

            if btype == NG_EPB or btype == NG_PB or btype == NG_SPB:
                if n >= cap:
                    break
                if btype == NG_SPB:
                    if body_len < 4:
                        err = self._fail(E_BLOCK_BODY, pos, blen)
                        break
                    ifid = 0
                else:
                    if body_len < 20:
                        err = self._fail(E_BLOCK_BODY, pos, blen)
                        break
                    ifid = rd32(body, swap) if btype == NG_EPB else rd16(body, swap)
                if ifid >= self.n_ifaces:
                    err = self._fail(E_IFACE, pos, ifid)
                    break
                f = &self.ifaces[ifid]
                if not linktype_ok(f.linktype):
                    err = self._fail(E_LINKTYPE, pos, f.linktype)
                    break
                if btype == NG_SPB:
                    # No captured length: it is the original length cut to snaplen and block.
                    caplen = rd32(body, swap)
                    if f.snaplen and caplen > f.snaplen:
                        caplen = f.snaplen
                    if caplen > body_len - 4:
                        caplen = body_len - 4
                    body += 4
                    ts = 0
                else:
                    caplen = rd32(body + 12, swap)
                    if caplen > body_len - 20:
                        err = self._fail(E_CAPLEN_BLOCK, pos, caplen)
                        break
                    if f.snaplen and caplen > f.snaplen:
                        self.over_snaplen += 1
                    ts = iface_ts(f, (<uint64_t>rd32(body + 4, swap) << 32) | rd32(body + 8, swap))
                    body += 20
                if not emit(b, n, body, caplen, f.linktype, port_in, ts):
                    self.oversize += 1
                n += 1
            elif btype == NG_SHB:
                if body_len < 16:
                    err = self._fail(E_BLOCK_BODY, pos, blen)
                    break
                if rd16(body + 4, swap) != 1:
                    err = self._fail(E_VERSION, pos, rd16(body + 4, swap))
                    break
                self.swap = swap
                self.n_ifaces = 0   # interface ids are per section
            elif btype == NG_IDB:
                err = self._idb(body, body_len, pos)
                if err != E_OK:
                    break
            # Every other block (NRB, ISB, DSB, custom...) carries nothing we replay.
            pos += blen
        self.pos = pos
        if b != NULL:
            b.n = n
        return err

    cdef int _idb(self, const uint8_t *body, uint32_t body_len, size_t off) noexcept nogil:
        cdef pcap_iface f
        cdef const uint8_t *o
        cdef uint32_t left, olen, step
        cdef uint16_t code
        cdef uint8_t res, k
        cdef bint swap = self.swap
        if body_len < 8:
            return self._fail(E_BLOCK_BODY, off, body_len + 12)
        memset(&f, 0, sizeof(f))
        f.linktype = rd16(body, swap)
        f.snaplen = rd32(body + 4, swap)
        f.ts_mul = 1000     # default resolution: microseconds
        f.ts_div = 1
        o = body + 8
        left = body_len - 8
        while left >= 4:
            code = rd16(o, swap)
            olen = rd16(o + 2, swap)
            if code == 0:   # opt_endofopt
                break
            if olen > left - 4:
                return self._fail(E_OPTION, off, olen)
            if code == 9 and olen >= 1:     # if_tsresol: 10^-k, or 2^-k with the top bit set
                res = o[4]
                k = res & 0x7f
                if res == 0x80:             # 2^0: whole seconds
                    f.ts_mul = POW10[9]
                elif res & 0x80 and k <= 63:
                    f.ts_shift = k
                elif not res & 0x80 and k <= 9:
                    f.ts_mul = POW10[9 - k]
                elif not res & 0x80 and k <= 19:
                    f.ts_mul = 1
                    f.ts_div = POW10[k - 9]
                else:
                    return self._fail(E_TSRESOL, off, res)
            elif code == 14 and olen == 8:  # if_tsoffset: signed seconds added to every timestamp
                f.ts_off_ns = <int64_t>rd64(o + 4, swap) * 1000000000
            step = 4 + ((olen + 3) & ~3u)
            if step >= left:
                break
            o += step
            left -= step
        if self.n_ifaces == self.ifaces_cap and self._grow_ifaces() != E_OK:
            return self._fail(E_NOMEM, off, 0)
        if self.first_linktype < 0:
            self.first_linktype = f.linktype
            self.first_nsec = (f.ts_div > 1 or f.ts_mul < 1000) if not f.ts_shift else f.ts_shift >= 20
        self.ifaces[self.n_ifaces] = f
        self.n_ifaces += 1
        return E_OK

    cdef int _grow_ifaces(self) noexcept nogil:
        cdef uint32_t cap = self.ifaces_cap * 2 if self.ifaces_cap else 4
        cdef pcap_iface *p = <pcap_iface *>realloc(self.ifaces, cap * sizeof(pcap_iface))
        if p == NULL:
            return E_NOMEM
        self.ifaces = p
        self.ifaces_cap = cap
        return E_OK

    def close(self):
        if self.data != NULL:
            munmap(<void *>self.data, self.size)
            self.data = NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_all(path):
    """Every frame of a capture as bytes (after the Ethernet conversion). For tests and tools."""
    cdef Burst burst = Burst(256)
    frames = []
    with PcapReader(path) as r:
        while r.fill(burst):
            frames.extend(burst.frames())
    return frames


cdef class PcapWriter:
    """Writes Ethernet frames to a pcap (default) or pcapng file, a burst at a time."""

    def __cinit__(self, path, format="pcap", nsec=False, snaplen=65535):
        cdef uint8_t *p
        cdef size_t n
        self.fd = -1
        if format not in ("pcap", "pcapng"):
            raise ValueError(f"format must be 'pcap' or 'pcapng', not {format!r}")
        if not 0 < snaplen <= MAX_CAPLEN:
            raise ValueError(f"snaplen must be in 1..{MAX_CAPLEN}, not {snaplen}")
        self.path = os.fspath(path)
        self.ng = format == "pcapng"
        self.nsec = bool(nsec)
        self.snaplen = snaplen
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self._reserve(64)
        p = self.buf
        # Files are written in host byte order; readers detect it from the magic / BOM.
        if self.ng:
            store_u32(p, NG_SHB); store_u32(p + 4, 28); store_u32(p + 8, NG_BOM)
            store_u32(p + 12, 1)                           # version 1.0
            store_u32(p + 16, 0xffffffff); store_u32(p + 20, 0xffffffff)  # section length unknown
            store_u32(p + 24, 28)
            p += 28
            n = 32 if self.nsec else 20                    # IDB, with if_tsresol=9 for ns
            store_u32(p, NG_IDB); store_u32(p + 4, n)
            store_u32(p + 8, LT_ETHERNET)                  # link type 1, reserved 0
            store_u32(p + 12, self.snaplen)
            if self.nsec:
                store_u32(p + 16, 9 | (1 << 16)); store_u32(p + 20, 9)   # code 9, len 1, value 9
                store_u32(p + 24, 0)                       # opt_endofopt
            store_u32(p + n - 4, n)
            n += 28
        else:
            store_u32(p, MAGIC_NS if self.nsec else MAGIC_US)
            store_u32(p + 4, 2 | (4 << 16))                # version 2.4
            store_u32(p + 8, 0); store_u32(p + 12, 0)      # thiszone, sigfigs
            store_u32(p + 16, self.snaplen)
            store_u32(p + 20, LT_ETHERNET)
            n = 24
        self._flush(n)

    def __dealloc__(self):
        if self.fd >= 0:
            c_close(self.fd)
        free(self.buf)

    def write(self, Burst burst not None, verdict=None):
        """Write the burst's frames with their ts_ns timestamps: all of them, or only those whose
        verdict is `verdict` (an int, or a collection of ints: what a pipeline transmits is
        forwarded and rejected frames alike). Returns how many were written."""
        cdef uint32_t mask = 0
        if verdict is None:
            mask = 0xFFFFFFFFU
        else:
            for v in ((verdict,) if isinstance(verdict, int) else verdict):
                if not 0 <= v < 32:
                    raise ValueError(f"verdict {v} out of range")
                mask |= 1U << v
        return self.write_burst(&burst.b, mask)

    def write_frame(self, frame, uint64_t ts_ns=0):
        """Write one frame given as bytes (tests and tools)."""
        cdef const uint8_t[::1] data = memoryview(frame).cast("B")
        cdef size_t n = data.shape[0]
        if n > MAX_CAPLEN:
            raise ValueError(f"frame of {n} bytes is larger than {MAX_CAPLEN}")
        if self.fd < 0:
            raise ValueError("write to a closed PcapWriter")
        self._reserve(32 + n + 3)
        self._flush(self._put(self.buf, &data[0] if n else self.buf, <uint32_t>n, ts_ns))
        self.packets_written += 1

    cdef Py_ssize_t write_burst(self, burst_t *b, uint32_t verdict_mask) except -1:
        cdef size_t need = 0, used = 0
        cdef uint32_t i, count = 0, length
        if self.fd < 0:
            raise ValueError("write to a closed PcapWriter")
        for i in range(b.n):
            if verdict_mask >> b.verdict[i] & 1:
                length = b.meta[i].len if b.meta[i].len < self.snaplen else self.snaplen
                need += 32 + length + 3
        if need == 0:
            return 0
        self._reserve(need)
        for i in range(b.n):
            if verdict_mask >> b.verdict[i] & 1:
                used += self._put(self.buf + used, pkt_data(b, i), b.meta[i].len, b.meta[i].ts_ns)
                count += 1
        self._flush(used)
        self.packets_written += count
        return count

    cdef size_t _put(self, uint8_t *p, const uint8_t *frame, uint32_t length,
                     uint64_t ts_ns) noexcept nogil:
        """One record at p; returns its size."""
        cdef uint32_t caplen = length if length < self.snaplen else self.snaplen
        cdef uint32_t blen
        cdef uint64_t ts
        if self.ng:
            blen = 32 + ((caplen + 3) & ~3u)
            ts = ts_ns if self.nsec else ts_ns // 1000
            store_u32(p, NG_EPB); store_u32(p + 4, blen)
            store_u32(p + 8, 0)                                  # interface 0
            store_u32(p + 12, <uint32_t>(ts >> 32)); store_u32(p + 16, <uint32_t>ts)
            store_u32(p + 20, caplen); store_u32(p + 24, length)
            memcpy(p + 28, frame, caplen)
            memset(p + 28 + caplen, 0, blen - 32 - caplen)       # padding
            store_u32(p + blen - 4, blen)
            return blen
        store_u32(p, <uint32_t>(ts_ns // 1000000000ULL))
        store_u32(p + 4, <uint32_t>(ts_ns % 1000000000ULL if self.nsec
                                    else ts_ns % 1000000000ULL // 1000))
        store_u32(p + 8, caplen); store_u32(p + 12, length)
        memcpy(p + 16, frame, caplen)
        return 16 + caplen

    cdef int _reserve(self, size_t need) except -1:
        cdef uint8_t *p
        if need > self.buf_cap:
            p = <uint8_t *>realloc(self.buf, need)
            if p == NULL:
                raise MemoryError()
            self.buf = p
            self.buf_cap = need
        return 0

    cdef int _flush(self, size_t length) except -1:
        cdef const uint8_t *p = self.buf
        cdef ssize_t r
        cdef int fd = self.fd
        while length:
            with nogil:
                r = write(fd, p, length)
            if r < 0:
                if errno == EINTR:
                    continue
                raise OSError(errno, os.strerror(errno), self.path)
            p += r
            length -= r
        return 0

    def close(self):
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
