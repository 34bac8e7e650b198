"""TAP ports: the dataplane's door into the node's own network stack.

A /dev/net/tun descriptor in IFF_TAP | IFF_NO_PI mode carries one Ethernet frame per read() or
write(); rx and tx loop over the burst without the GIL. No offloads are negotiated (no
IFF_VNET_HDR, no TUNSETOFFLOAD), so the kernel completes checksums and segments before handing
frames over, and every frame fits the tap's MTU.

Frames the kernel could not queue to us (we read too slowly) are counted by the kernel as the
tap's tx_dropped (`ip -s link`), not here.
"""
import os

from libc.errno cimport errno, EINTR, EAGAIN, ENODEV
from libc.string cimport memset, strncpy
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from posix.fcntl cimport open as c_open, O_RDWR, O_NONBLOCK, O_CLOEXEC
from posix.unistd cimport close as c_close, write

from dataplane.includes.pkt cimport burst_t, pkt_reset, pkt_data, SLOT_HEADROOM, PKT_F_OVERSIZE
from dataplane.includes.sys_net cimport *
from dataplane.port cimport Port, tx_fits, tx_selected

__all__ = ["TapPort"]

cdef enum:
    MAX_FRAME_LEN = 65535     # pkt_meta.len is 16 bits


cdef class TapPort(Port):
    """Attach to the tap `name` if it exists, else create it (create=False: it must exist).
    A tap we create is brought up and disappears when the port is closed."""

    def __cinit__(self, name, *, bint create=True):
        cdef bytes bname = os.fsencode(name)
        cdef ifreq r
        cdef int s
        self.fd = -1
        self.ifname = os.fsdecode(bname)
        if not 0 < len(bname) < IFNAMSIZ:
            raise ValueError(f"interface name {self.ifname!r} must be 1-{IFNAMSIZ - 1} bytes")
        self.created = if_nametoindex(bname) == 0
        if self.created and not create:
            raise OSError(ENODEV, f"no such tap {self.ifname!r} (and create=False)")
        self.fd = c_open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        if self.fd < 0:
            self._fail(errno, "open /dev/net/tun")
        memset(&r, 0, sizeof(r))
        strncpy(r.ifr_name, bname, IFNAMSIZ - 1)
        r.ifr_flags = IFF_TAP | IFF_NO_PI
        if ioctl(self.fd, TUNSETIFF, &r) < 0:
            # EINVAL: an interface of that name that is not a tap (or a tap with other flags);
            # EBUSY: another process holds it.
            self._fail(errno, "TUNSETIFF IFF_TAP|IFF_NO_PI")
        self.ifindex = if_nametoindex(bname)
        s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)    # any socket will do for SIOC*IF*
        if s < 0:
            self._fail(errno, "socket for interface ioctls")
        try:
            if if_ioctl(s, bname, SIOCGIFMTU, &r) < 0:
                self._fail(errno, "SIOCGIFMTU")
            self.mtu = r.ifr_mtu
            if if_ioctl(s, bname, SIOCGIFHWADDR, &r) < 0:
                self._fail(errno, "SIOCGIFHWADDR")
            self.mac = r.ifr_hwaddr.sa_data[:6]
            if self.created:
                if if_ioctl(s, bname, SIOCGIFFLAGS, &r) < 0:
                    self._fail(errno, "SIOCGIFFLAGS")
                r.ifr_flags |= IFF_UP
                if ioctl(s, SIOCSIFFLAGS, &r) < 0:
                    self._fail(errno, "SIOCSIFFLAGS up")
        finally:
            c_close(s)

    def __dealloc__(self):
        if self.fd >= 0:
            c_close(self.fd)

    @property
    def kernel_mac(self):
        """MAC of the kernel's side of the tap: frames we write must be addressed to it."""
        return self.mac

    cdef uint32_t rx_burst(self, burst_t *b, uint16_t port_in) noexcept nogil:
        cdef uint32_t n = 0, room = b.slot_size - SLOT_HEADROOM
        cdef uint8_t spill
        cdef iovec v[2]
        cdef ssize_t r
        cdef timespec now
        if room > MAX_FRAME_LEN:
            room = MAX_FRAME_LEN
        # One byte past the slot: a frame that reaches it did not fit (tun truncates silently).
        v[1].iov_base = &spill
        v[1].iov_len = 1
        b.n = 0
        while n < b.cap:
            pkt_reset(b, n, 0, port_in)
            v[0].iov_base = pkt_data(b, n)
            v[0].iov_len = room
            r = readv(self.fd, v, 2)
            if r < 0:
                if errno == EINTR:
                    continue
                break                  # EAGAIN: drained (errors end the burst the same way)
            clock_gettime(CLOCK_REALTIME, &now)
            b.meta[n].ts_ns = <uint64_t>now.tv_sec * 1000000000ULL + now.tv_nsec
            if <uint32_t>r > room:
                b.meta[n].flags = PKT_F_OVERSIZE
                self.n_oversize += 1
            else:
                b.meta[n].len = <uint16_t>r
            n += 1
        b.n = n
        self.n_rx += n
        return n

    cdef uint32_t tx_burst(self, burst_t *b, uint16_t port_index, uint32_t verdict_mask) noexcept nogil:
        cdef uint32_t i, sent = 0, errors = 0, flen
        cdef uint8_t *d
        cdef ssize_t r
        for i in range(b.n):
            if not tx_selected(b, i, port_index, verdict_mask):
                continue
            d = pkt_data(b, i)
            flen = b.meta[i].len
            if not tx_fits(d, flen, self.mtu):
                errors += 1
                continue
            while True:
                r = write(self.fd, d, flen)
                if r >= 0 or errno != EINTR:
                    break
            if r == <ssize_t>flen:
                sent += 1
            else:
                errors += 1            # EIO when the tap is down, EAGAIN, ...
        self.n_tx += sent
        self.n_tx_errors += errors
        return sent

    def stats(self):
        return {"rx": self.n_rx, "tx": self.n_tx, "rx_dropped": 0, "tx_errors": self.n_tx_errors,
                "oversize": self.n_oversize, "csum_fixed": 0}

    def close(self):
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            c_close(fd)

