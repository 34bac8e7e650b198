"""Python hooks over the inline checksum helpers of csum.pxd, for tests and the control plane.

The fast path cimports csum.pxd; these wrappers take bytes / bytearray and copy nothing.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t

from dataplane.csum cimport (
    csum_buf, ip4_hdr_csum, ip4_hdr_csum_ok, ip4_l4_csum, ip6_l4_csum, csum_update16,
    csum_update32, csum_update128, csum_replace2, csum_replace4, csum_replace16,
    udp_csum_replace2, udp_csum_replace4, udp_csum_replace16, l4_check_off,
)
from dataplane.includes.bytes cimport load_u32

__all__ = ["checksum", "ip4_header", "ip4_header_ok", "l4_ip4", "l4_ip6", "update16", "update32",
           "update128", "replace2", "replace4", "replace16", "check_offset"]


def checksum(const uint8_t[::1] data):
    """Internet checksum of a buffer (complemented one's-complement sum)."""
    return csum_buf(&data[0] if data.shape[0] else NULL, data.shape[0])


def ip4_header(const uint8_t[::1] ip):
    """Header checksum for the IPv4 header at the start of ip (its IHL), ignoring the current field."""
    hlen = (ip[0] & 0xf) * 4
    if hlen < 20 or hlen > ip.shape[0]:
        raise ValueError("bad IHL")
    return ip4_hdr_csum(&ip[0], hlen)


def ip4_header_ok(const uint8_t[::1] ip):
    hlen = (ip[0] & 0xf) * 4
    if hlen < 20 or hlen > ip.shape[0]:
        raise ValueError("bad IHL")
    return ip4_hdr_csum_ok(&ip[0], hlen)


def l4_ip4(const uint8_t[::1] ip):
    """TCP/UDP/ICMP checksum of an IPv4 packet (starting at its header, total length honoured)."""
    cdef size_t hlen = (ip[0] & 0xf) * 4
    cdef size_t tot = (ip[2] << 8) | ip[3]
    if hlen < 20 or tot < hlen + 8 or tot > <size_t>ip.shape[0]:
        raise ValueError("bad IPv4 lengths")
    return ip4_l4_csum(&ip[0], &ip[hlen], tot - hlen, ip[9])


def l4_ip6(const uint8_t[::1] ip6):
    """TCP/UDP/ICMPv6 checksum of an IPv6 packet without extension headers."""
    cdef size_t plen = (ip6[4] << 8) | ip6[5]
    if plen < 8 or 40 + plen > <size_t>ip6.shape[0]:
        raise ValueError("bad IPv6 payload length")
    return ip6_l4_csum(&ip6[0], &ip6[40], plen, ip6[6])


def check_offset(uint8_t proto):
    return l4_check_off(proto)


def update16(uint16_t check, uint16_t old, uint16_t new):
    return csum_update16(check, old, new)


def update32(uint16_t check, uint32_t old, uint32_t new):
    """old/new are host-order integers (e.g. int(IPv4Address))."""
    return csum_update32(check, old, new)


def update128(uint16_t check, const uint8_t[::1] old, const uint8_t[::1] new):
    _need(old, 16)
    _need(new, 16)
    return csum_update128(check, &old[0], &new[0])


def replace2(uint8_t[::1] buf, size_t check_off, uint16_t old, uint16_t new, bint udp=False):
    """Update the checksum field at buf[check_off] in place for a 16-bit field change."""
    _need(buf, check_off + 2)
    if udp:
        udp_csum_replace2(&buf[check_off], old, new)
    else:
        csum_replace2(&buf[check_off], old, new)


def replace4(uint8_t[::1] buf, size_t check_off, const uint8_t[::1] old, const uint8_t[::1] new,
             bint udp=False):
    """Same for a 4-byte field; old/new are the field's bytes (network order, as in pkt_tuple)."""
    _need(buf, check_off + 2)
    _need(old, 4)
    _need(new, 4)
    if udp:
        udp_csum_replace4(&buf[check_off], load_u32(&old[0]), load_u32(&new[0]))
    else:
        csum_replace4(&buf[check_off], load_u32(&old[0]), load_u32(&new[0]))


def replace16(uint8_t[::1] buf, size_t check_off, const uint8_t[::1] old, const uint8_t[::1] new,
              bint udp=False):
    _need(buf, check_off + 2)
    _need(old, 16)
    _need(new, 16)
    if udp:
        udp_csum_replace16(&buf[check_off], &old[0], &new[0])
    else:
        csum_replace16(&buf[check_off], &old[0], &new[0])


cdef _need(const uint8_t[::1] b, size_t n):
    if <size_t>b.shape[0] < n:
        raise ValueError(f"buffer of {b.shape[0]} bytes, need {n}")
