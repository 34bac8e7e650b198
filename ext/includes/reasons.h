/* Drop reasons and pipeline counters, declared once.
 *
 * Each list expands into an enum, its strings and (in Python) the counter names, the way VPP's
 * foreach_*_error lists do: add a reason here and every stage, counter and trace knows it. */
#ifndef DATAPLANE_REASONS_H
#define DATAPLANE_REASONS_H

#define foreach_drop_reason(_)                                            \
  _(NONE, "none")                     /* not dropped */                   \
  _(TRUNCATED, "truncated")           /* header cut off by the frame */   \
  _(OVERSIZE, "oversize")             /* frame larger than a slot */      \
  _(BAD_ETHERTYPE, "bad_ethertype")   /* not IPv4, IPv6 or ARP */         \
  _(BAD_VERSION, "bad_version")       /* IP version field mismatch */     \
  _(BAD_IHL, "bad_ihl")               /* IPv4 header length < 20 */       \
  _(BAD_CSUM, "bad_csum")             /* IPv4 header checksum wrong */    \
  _(BAD_LEN, "bad_len")               /* IP length inconsistent */        \
  _(BAD_L4_LEN, "bad_l4_len")         /* TCP data offset / UDP length */  \
  _(BAD_EXT_HDR, "bad_ext_hdr")       /* IPv6 extension chain broken */   \
  _(TOO_MANY_VLANS, "too_many_vlans") /* more than two tags */            \
  _(TTL_EXPIRED, "ttl_expired")       /* TTL / hop limit would hit 0 */   \
  _(NO_ROUTE, "no_route")             /* no matching route */             \
  _(NOT_IP, "not_ip")                 /* ARP etc. not routed here */      \
  _(BAD_PORT, "bad_port")             /* route names an unknown port */   \
  _(NO_NEIGHBOR, "no_neighbor")       /* next hop MAC not known */        \
  _(NEIGH_QUEUED, "neigh_queued")     /* held until the next hop resolves:\
                                         names the slot, never counted */ \
  _(CT_FULL, "ct_full")               /* conntrack table full */          \
  _(NO_ENDPOINT, "no_endpoint")       /* service has no usable endpoint */\
  _(SRC_RANGE, "src_range")           /* loadBalancerSourceRanges */      \
  _(NAT_EXHAUSTED, "nat_exhausted")   /* no free SNAT port */             \
  _(POLICY, "policy")                 /* dropped by policy */             \
  _(INVALID_STATE, "invalid_state")   /* conntrack: out of window etc. */\
  _(BAD_VXLAN, "bad_vxlan")           /* to our VXLAN port: unknown VNI, */\
                                      /* I flag clear, cut off */       \
  _(BAD_L4_CSUM, "bad_l4_csum")       /* ICMP error with a bad checksum */\
  _(MARTIAN_SRC, "martian_src")       /* source no host may use (127/8, */\
                                      /* multicast, class E, ...) */    \
  _(SPOOFED_SRC, "spoofed_src")       /* a source of ours (node IP, a */ \
                                      /* local pod) from outside */     \
  _(RPF, "rpf")                       /* pod port: not the pod's address*/\
  _(SVC_NO_PORT, "svc_no_port")       /* ClusterIP, port it does not     \
                                         serve: rejected (ICMP unreach.) */\
  _(SVC_UNALLOCATED, "svc_unallocated") /* in a ServiceCIDR, no Service  \
                                           has the address */

typedef enum {
#define _(sym, str) DROP_##sym,
  foreach_drop_reason(_)
#undef _
  DROP_N_REASONS
} drop_reason_t;

static const char *const drop_reason_strings[] = {
#define _(sym, str) str,
  foreach_drop_reason(_)
#undef _
};

/* Per-stage event counters (not drops). Same pattern: enum + strings from one list. */
#define foreach_counter(_)                                                \
  _(RX, "rx")                   /* frames entering the pipeline */        \
  _(IP4, "ip4")                 /* parsed IPv4 packets */                 \
  _(IP6, "ip6")                 /* parsed IPv6 packets */                 \
  _(ARP, "arp")                 /* ARP frames */                          \
  _(VLAN, "vlan")               /* frames with at least one VLAN tag */   \
  _(FRAGMENT, "fragment")       /* IP fragments (any) */                  \
  _(ICMP_ERROR, "icmp_error")   /* ICMP/ICMPv6 errors with inner header */\
  _(NEIGH_REPLY, "neigh_reply") /* ARP replies / NAs we answered with */   \
  _(NEIGH_LEARN, "neigh_learn") /* neighbour entries learned or refreshed */\
  _(NEIGH_SOLICIT, "neigh_solicit") /* ARP requests / NSs we sent */      \
  _(NEIGH_QUEUED, "neigh_queued") /* packets held while resolving */      \
  _(NEIGH_RELEASED, "neigh_released") /* held packets sent once resolved */\
  _(CT_NEW, "ct_new")           /* connections created by conntrack */    \
  _(CT_ESTABLISHED, "ct_established") /* tracked, original direction */ \
  _(CT_REPLY, "ct_reply")       /* tracked, reply direction */            \
  _(CT_RELATED, "ct_related")   /* ICMP errors translated for a flow */   \
  _(DNAT, "dnat")               /* new connections to a Service backend */\
  _(SNAT, "snat")               /* new connections masqueraded */         \
  _(REJECT, "reject")           /* RST / port unreachable sent back */    \
  _(ROUTED, "routed")           /* forwarded by the route stage */        \
  _(LOCAL, "local")             /* delivered to this node */              \
  _(VXLAN_DECAP, "vxlan_decap") /* VXLAN packets unwrapped (RFC 7348) */  \
  _(VXLAN_ENCAP, "vxlan_encap") /* packets wrapped towards a remote VTEP */\
  _(DNS_ANSWER, "dns_answer")   /* DNS queries answered in the fast path */\
  _(TX, "tx")                   /* frames transmitted */

typedef enum {
#define _(sym, str) CNT_##sym,
  foreach_counter(_)
#undef _
  CNT_N_COUNTERS
} counter_t;

static const char *const counter_strings[] = {
#define _(sym, str) str,
  foreach_counter(_)
#undef _
};

#endif
