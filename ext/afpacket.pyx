"""AF_PACKET ports: a TPACKET_V3 mmapped RX ring and sendmmsg() TX, whole bursts at a time in C.

RX walks the ring's blocks without the GIL, copying each frame into a burst slot: the ring is the
kernel's, so frames cannot stay in it while the pipeline rewrites them. Frames come in complete:
a checksum the sender's stack left to the NIC (CHECKSUM_PARTIAL, common over veth) is finished
here using the virtio-net header the kernel writes in front of each frame (PACKET_VNET_HDR), and a
VLAN tag the kernel stripped into the ring header is written back into the frame.

TX sends one sendmmsg() per burst, bypassing the qdisc layer (PACKET_QDISC_BYPASS, as DPDK's
af_packet PMD does): the dataplane is the scheduler. Every frame either goes out or is counted in
tx_errors.
"""
import os

from libc.errno cimport errno, EINTR, EAGAIN, ENODEV
from libc.stdlib cimport realloc, free
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.unistd cimport close as c_close

from dataplane.csum cimport csum_buf
from dataplane.includes.bytes cimport store_be16
from dataplane.includes.pkt cimport burst_t, pkt_reset, pkt_data, SLOT_HEADROOM, PKT_F_OVERSIZE
from dataplane.includes.sys_net cimport *
from dataplane.port cimport Port, tx_fits, tx_selected

cdef extern from "<sys/mman.h>" nogil:
    enum:
        MAP_POPULATE

__all__ = ["AfPacketPort"]

cdef enum:
    MAX_RING = 1 << 30        # bytes of ring per socket we are willing to pin
    NOMINAL_FRAME = 2048      # tp_frame_size: TPACKET_V3 packs frames, this only sizes the ring
    VLAN_HLEN = 4
    MAX_FRAME_LEN = 65535 - VLAN_HLEN   # pkt_meta.len is 16 bits, and a tag may be re-inserted
    CSUM_OFF_UDP = 6          # csum_offset says which transport left its checksum to us
    CSUM_OFF_SCTP = 8         # SCTP's is a CRC32c (veth offloads it too), not an Internet sum

# Zero virtio-net header in front of every transmitted frame: no offload requested.
cdef virtio_net_hdr VNET_NONE

cdef uint32_t CRC32C[256]
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    CRC32C[_i] = _c


cdef inline void sctp_crc_complete(uint8_t *sctp, uint32_t n) noexcept nogil:
    """RFC 4960 checksum: CRC32c over the packet with the field zeroed, stored little-endian."""
    cdef uint32_t crc = 0xffffffffU, i
    sctp[8] = sctp[9] = sctp[10] = sctp[11] = 0
    for i in range(n):
        crc = CRC32C[(crc ^ sctp[i]) & 0xff] ^ (crc >> 8)
    crc = ~crc
    sctp[8] = crc & 0xff
    sctp[9] = (crc >> 8) & 0xff
    sctp[10] = (crc >> 16) & 0xff
    sctp[11] = crc >> 24


cdef inline bint csum_complete(uint8_t *d, uint32_t n, uint32_t start, uint32_t off) noexcept nogil:
    """Finish a CHECKSUM_PARTIAL frame the way skb_checksum_help() would: the field already holds
    the pseudo-header sum, so the checksum is the complement of the sum from csum_start on."""
    cdef uint16_t c
    if start + off + (4 if off == CSUM_OFF_SCTP else 2) > n:
        return False
    if off == CSUM_OFF_SCTP:
        sctp_crc_complete(d + start, n - start)
        return True
    c = csum_buf(d + start, n - start)
    if c == 0 and off == CSUM_OFF_UDP:
        c = 0xffff            # 0 would mean "no checksum"
    store_be16(d + start + off, c)
    return True


cdef class AfPacketPort(Port):
    """A port on an existing interface. `frames` sizes the RX ring in 2 KiB units (small frames
    pack tighter, so it holds more of them); `block_size` is the unit the kernel hands over;
    `retire_ms` bounds how long a partly filled block waits before rx() can see it. A trickle
    of traffic retires one block per retire_ms, so the number of blocks (32 MiB / 256 KiB = 128
    by default) is also how many retire periods rx() may fall behind before the ring drops."""

    def __cinit__(self, ifname, *, unsigned int frames=16384, unsigned int block_size=1 << 18,
                  fanout_group=None, bint promisc=True, unsigned int retire_ms=2):
        cdef bytes name = os.fsencode(ifname)
        cdef ifreq r
        cdef tpacket_req3 req
        cdef sockaddr_ll sll
        cdef packet_mreq mreq
        cdef void *p
        self.fd = -1
        self.ifname = os.fsdecode(name)
        if not 0 < len(name) < IFNAMSIZ:
            raise ValueError(f"interface name {self.ifname!r} must be 1-{IFNAMSIZ - 1} bytes")
        if block_size < 4096 or block_size & (block_size - 1):
            raise ValueError(f"block_size {block_size} must be a power of two >= 4096")
        if <uint64_t>frames * NOMINAL_FRAME > MAX_RING or block_size > MAX_RING:
            # The kernel would try to allocate it (and the OOM killer would answer).
            raise ValueError(f"RX ring of {frames} frames / {block_size}-byte blocks exceeds "
                             f"{MAX_RING >> 20} MiB")
        if fanout_group is not None and not 0 <= fanout_group <= 0xffff:
            raise ValueError(f"fanout_group {fanout_group} must be in 0..65535")
        self.fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)  # no rx until bound
        if self.fd < 0:
            self._fail(errno, "socket(AF_PACKET)")
        self.ifindex = if_nametoindex(name)
        if self.ifindex == 0:
            raise OSError(ENODEV, f"no such interface {self.ifname!r}")
        if if_ioctl(self.fd, name, SIOCGIFMTU, &r) < 0:
            self._fail(errno, "SIOCGIFMTU")
        self.mtu = r.ifr_mtu
        if if_ioctl(self.fd, name, SIOCGIFHWADDR, &r) < 0:
            self._fail(errno, "SIOCGIFHWADDR")
        self.mac = r.ifr_hwaddr.sa_data[:6]

        self._setopt(PACKET_VERSION, TPACKET_V3, "PACKET_VERSION TPACKET_V3")
        self._setopt(PACKET_VNET_HDR, 1, "PACKET_VNET_HDR")       # before the ring, or EBUSY
        self._setopt(PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING")
        self._setopt(PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS")

        self.block_size = block_size
        nr = <uint64_t>frames * NOMINAL_FRAME // block_size
        self.block_nr = nr if nr else 1
        req.tp_block_size = block_size
        req.tp_block_nr = self.block_nr
        req.tp_frame_size = NOMINAL_FRAME
        req.tp_frame_nr = self.block_nr * (block_size // NOMINAL_FRAME)
        req.tp_retire_blk_tov = retire_ms
        req.tp_sizeof_priv = 0
        req.tp_feature_req_word = 0
        if setsockopt(self.fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0:
            self._fail(errno, f"PACKET_RX_RING ({self.block_nr} blocks of {block_size} bytes)")
        self.ring_size = <size_t>block_size * self.block_nr
        p = mmap(NULL, self.ring_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, self.fd, 0)
        if p == MAP_FAILED:
            self._fail(errno, f"mmap of the {self.ring_size}-byte RX ring")
        self.ring = <uint8_t *>p

        memset(&sll, 0, sizeof(sll))
        sll.sll_family = AF_PACKET
        sll.sll_protocol = htons(ETH_P_ALL)
        sll.sll_ifindex = self.ifindex
        if bind(self.fd, <sockaddr *>&sll, sizeof(sll)) < 0:
            self._fail(errno, "bind")
        if promisc:
            # A membership, not IFF_PROMISC: the kernel drops it when the socket goes away.
            memset(&mreq, 0, sizeof(mreq))
            mreq.mr_ifindex = self.ifindex
            mreq.mr_type = PACKET_MR_PROMISC
            if setsockopt(self.fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq, sizeof(mreq)) < 0:
                self._fail(errno, "PACKET_ADD_MEMBERSHIP PACKET_MR_PROMISC")
        if fanout_group is not None:
            self._setopt(PACKET_FANOUT, fanout_group | PACKET_FANOUT_HASH << 16,
                         f"PACKET_FANOUT hash group {fanout_group}")

    def __dealloc__(self):
        self._release()
        free(self.msgs)
        free(self.iovs)

    cdef void _release(self) noexcept:
        if self.ring != NULL:
            munmap(self.ring, self.ring_size)
            self.ring = NULL
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1

    cdef int _setopt(self, int name, int value, what) except -1:
        if setsockopt(self.fd, SOL_PACKET, name, &value, sizeof(value)) < 0:
            self._fail(errno, what)
        return 0

    cdef uint32_t rx_burst(self, burst_t *b, uint16_t port_in) noexcept nogil:
        cdef tpacket_block_desc *bd
        cdef tpacket3_hdr *h
        cdef virtio_net_hdr *vh
        cdef uint8_t *src
        cdef uint8_t *d
        cdef uint32_t n = 0, flen, vlan, room = b.slot_size - SLOT_HEADROOM
        cdef uint64_t ts
        if room > MAX_FRAME_LEN:
            room = MAX_FRAME_LEN
        b.n = 0
        while n < b.cap:
            if self.cur_left == 0:
                bd = <tpacket_block_desc *>(self.ring + <size_t>self.cur_block * self.block_size)
                if not ring_load_acquire(&bd.hdr.bh1.block_status) & TP_STATUS_USER:
                    break
                self.cur_left = bd.hdr.bh1.num_pkts
                self.cur_frame = <uint8_t *>bd + bd.hdr.bh1.offset_to_first_pkt
                if self.cur_left == 0:
                    self._release_block(bd)
                    continue
            h = <tpacket3_hdr *>self.cur_frame
            src = self.cur_frame + h.tp_mac
            flen = h.tp_len
            ts = <uint64_t>h.tp_sec * 1000000000ULL + h.tp_nsec
            vlan = VLAN_HLEN if h.tp_status & TP_STATUS_VLAN_VALID else 0
            if flen > room or h.tp_snaplen < flen or flen < ETH_HLEN:
                # Too big for a slot (a GSO super-frame, or cut by the ring): one empty frame the
                # parser drops as oversize, so the loss shows up in its counters too.
                pkt_reset(b, n, 0, port_in)
                b.meta[n].flags = PKT_F_OVERSIZE
                self.n_oversize += 1
            else:
                pkt_reset(b, n, <uint16_t>(flen + vlan), port_in)
                if vlan:
                    # The kernel moved the tag into the ring header: put it back, in the headroom.
                    b.meta[n].data_off -= VLAN_HLEN
                    d = pkt_data(b, n)
                    memcpy(d, src, 12)
                    store_be16(d + 12, h.hv1.tp_vlan_tpid
                               if h.tp_status & TP_STATUS_VLAN_TPID_VALID else 0x8100)
                    store_be16(d + 14, <uint16_t>h.hv1.tp_vlan_tci)
                    memcpy(d + 16, src + 12, flen - 12)
                else:
                    d = pkt_data(b, n)
                    memcpy(d, src, flen)
                vh = <virtio_net_hdr *>(src - sizeof(virtio_net_hdr))
                if vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                    # csum_start counts from the MAC header as the kernel held it: tag-less.
                    if csum_complete(d, flen + vlan, vh.csum_start + vlan, vh.csum_offset):
                        self.n_csum_fixed += 1
            b.meta[n].ts_ns = ts
            n += 1
            self.cur_left -= 1
            if self.cur_left == 0:
                self._release_block(<tpacket_block_desc *>(self.ring + <size_t>self.cur_block * self.block_size))
            else:
                self.cur_frame += h.tp_next_offset
        b.n = n
        self.n_rx += n
        return n

    cdef void _release_block(self, tpacket_block_desc *bd) noexcept nogil:
        ring_store_release(&bd.hdr.bh1.block_status, TP_STATUS_KERNEL)
        self.cur_left = 0
        self.cur_block = (self.cur_block + 1) % self.block_nr

    cdef bint _grow_tx(self, uint32_t n) noexcept nogil:
        cdef mmsghdr *m
        cdef iovec *v
        if n <= self.msgs_cap:
            return True
        m = <mmsghdr *>realloc(self.msgs, n * sizeof(mmsghdr))
        if m == NULL:
            return False
        self.msgs = m
        v = <iovec *>realloc(self.iovs, 2 * n * sizeof(iovec))
        if v == NULL:
            return False
        self.iovs = v
        self.msgs_cap = n
        return True

    cdef uint32_t tx_burst(self, burst_t *b, uint16_t port_index, uint32_t verdict_mask) noexcept nogil:
        cdef uint32_t i, m = 0, pos = 0, sent = 0, errors = 0, flen
        cdef uint8_t *d
        cdef iovec *v
        cdef int r
        if not self._grow_tx(b.cap):
            for i in range(b.n):
                if tx_selected(b, i, port_index, verdict_mask):
                    errors += 1
            self.n_tx_errors += errors
            return 0
        for i in range(b.n):
            if not tx_selected(b, i, port_index, verdict_mask):
                continue
            d = pkt_data(b, i)
            flen = b.meta[i].len
            if not tx_fits(d, flen, self.mtu):
                errors += 1
                continue
            v = self.iovs + 2 * m
            # The socket has PACKET_VNET_HDR, so every message starts with one.
            v[0].iov_base = &VNET_NONE
            v[0].iov_len = sizeof(virtio_net_hdr)
            v[1].iov_base = d
            v[1].iov_len = flen
            self.msgs[m].msg_hdr = msghdr(msg_name=NULL, msg_namelen=0, msg_iov=v, msg_iovlen=2,
                                          msg_control=NULL, msg_controllen=0, msg_flags=0)
            m += 1
        while pos < m:
            r = sendmmsg(self.fd, self.msgs + pos, m - pos, MSG_DONTWAIT)
            if r > 0:
                pos += r
                sent += r
            elif r < 0 and errno == EINTR:
                continue
            elif r < 0 and errno == EAGAIN:
                errors += m - pos      # socket buffer full: the rest would fail the same way
                break
            else:
                errors += 1            # ENOBUFS (the device dropped it) and the like: skip it
                pos += 1
        self.n_tx += sent
        self.n_tx_errors += errors
        return sent

    def stats(self):
        """Counters since open. rx_dropped: frames the kernel could not put in a full ring."""
        cdef tpacket_stats_v3 st
        cdef socklen_t sl = sizeof(st)
        # The kernel resets its counters on every read, so they are accumulated here.
        if self.fd >= 0 and getsockopt(self.fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0:
            self.n_rx_dropped += st.tp_drops
        return {"rx": self.n_rx, "tx": self.n_tx, "rx_dropped": self.n_rx_dropped,
                "tx_errors": self.n_tx_errors, "oversize": self.n_oversize,
                "csum_fixed": self.n_csum_fixed}

    def close(self):
        self.stats()      # keep the kernel's last drop count
        self._release()

