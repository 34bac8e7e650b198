# Service NAT packet rewriting and reject frames. Conntrack decides what a packet becomes; these
# functions make the bytes so. All run on one slot of a burst, without the GIL, never touching a
# byte outside the frame (rewrites) or the slot (reject frames, which grow into the headroom).
#
# Return codes: 0 done, pkt_meta refreshed; -1 refused, packet and metadata untouched.
from libc.stdint cimport uint32_t
from dataplane.includes.pkt cimport burst_t, pkt_tuple

# Rewrite packet i so its tuple becomes `to` (same family and protocol): addresses, then ports
# (TCP/UDP/SCTP) or the echo identifier (ICMP/ICMPv6 echo request and reply, set to to.sport),
# with RFC 1624 updates of only the checksums whose covered fields changed. SCTP's CRC32c is
# recomputed when the ports change, which needs the whole SCTP packet in the frame (-1 for a
# fragment). Later fragments get addresses only. A checksum left to the NIC (PKT_F_CSUM_PARTIAL)
# holds the pseudo-header sum and follows the addresses only. Sets m.t = *to (m.hash is kept).
cdef int nat_rewrite(burst_t *b, uint32_t i, const pkt_tuple *to) noexcept nogil

# Reverse-translate an ICMP/ICMPv6 error quoting a NATed packet (nf_nat_icmp_reply_translation):
# the quoted packet's addresses and ports become *inner_to (its IPv4 header checksum and, when
# the field lies inside the quote, its L4 checksum updated), the outer addresses become
# outer_src / outer_dst (NULL: keep; network-order words as in pkt_tuple), and the ICMP checksum
# follows every changed word it covers. Sets m.t's addresses and m.inner = *inner_to.
cdef int nat_rewrite_icmp_error(burst_t *b, uint32_t i, const pkt_tuple *inner_to,
                                const uint32_t *outer_src, const uint32_t *outer_dst) noexcept nogil

# REJECT with tcp-reset: packet i (TCP, not a fragment, not a RST) becomes the RST a closed port
# sends back (RFC 9293 3.10.7.1), Ethernet addresses swapped, VLAN tags kept, TTL 64.
cdef int build_tcp_rst(burst_t *b, uint32_t i) noexcept nogil

# REJECT with icmp(v6)-port-unreachable: packet i becomes the error from its destination to its
# source, quoting it from the IP header (576 / 1280 byte limits, RFC 1812 4.3.2.3 / RFC 4443
# 2.4(c)). -1 for ICMP errors, later fragments and non-unicast endpoints (RFC 1812 4.3.2.7,
# RFC 4443 2.4(e)). The frame grows into the slot headroom (meta.data_off moves back).
cdef int build_icmp_unreach(burst_t *b, uint32_t i) noexcept nogil

# Time exceeded in transit (ICMP 11/0, ICMPv6 3/0) from router address src_addr (network-order
# words, v4 in word 0), same rules and layout as build_icmp_unreach.
cdef int build_icmp_time_exceeded(burst_t *b, uint32_t i, const uint32_t *src_addr) noexcept nogil
