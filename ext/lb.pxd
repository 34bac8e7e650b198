# Service load-balancing tables (Cilium lb.h shape): frontend key -> lb_service -> lb_backend.
# The ct_nat stage (ext/ctnat.pyx) calls the nogil API below for the first packet of a
# connection; everything else about Services (policies, endpoint conditions, masquerade rules)
# is decided here and in the proxier that fills these tables.
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from dataplane.includes.pkt cimport pkt_tuple
from dataplane.includes.cidr cimport cidr_t

cdef enum:
    # lb4_select_backend results
    LB_OK = 0              # backend chosen
    LB_REJECT = 1          # no usable endpoint: answer TCP RST / ICMP port unreachable
    LB_DROP = 2            # Local policy without a local endpoint: drop silently (kube-proxy)
    LB_SRC_DENIED = 3      # source not in loadBalancerSourceRanges
    # flags the selection adds for the NAT stage
    LB_MASQ = 0x1          # SNAT the connection to the node IP

# check_service_ip results: kube-proxy nftables' cluster-ips-check chain, for new
# connections that matched no frontend.
cdef enum:
    LB_VIP_NONE = 0        # not a Service address: route as usual
    LB_VIP_NO_PORT = 1     # a ClusterIP on a port/protocol it does not serve: reject (ICMP)
    LB_VIP_UNALLOCATED = 2 # inside a ServiceCIDR but no Service has it: drop

# lb_service.flags: what kind of frontend this is.
cdef enum:
    LB_FE_EXTERNAL = 0x1   # NodePort, externalIP or load-balancer VIP (externalTrafficPolicy applies)
    LB_FE_LOCAL = 0x2      # this frontend's traffic policy is Local (eTP for external, iTP for ClusterIP)

# lb_group.flags
cdef enum:
    LB_G_AFFINITY = 0x1    # sessionAffinity ClientIP
    LB_G_MAGLEV = 0x2      # backends chosen by Maglev lookup instead of the PRNG

ctypedef struct lb_backend:
    uint32_t addr[4]       # network order words (v4 in word 0)
    uint16_t port          # host order
    uint8_t family
    uint8_t flags
    uint32_t id            # stable while the endpoint exists (conntrack flush, stats)

# One endpoint set (topology.go CategorizeEndpoints already applied: ready, else serving and
# terminating). Replaced whole: new arrays are built, the pointers swapped, the old ones freed.
ctypedef struct lb_set:
    lb_backend *be
    uint16_t *maglev       # maglev_m slots of indexes into be; NULL unless LB_G_MAGLEV and n > 0
    uint32_t n

# One Service port of one IP family. Every frontend of that port points at it, so an
# EndpointSlice change rewrites one group, not one copy per frontend.
ctypedef struct lb_group:
    lb_set cluster         # cluster-wide usable endpoints (empty: the Service has none at all)
    lb_set local           # the usable endpoints on this node
    uint64_t affinity_ns   # ClientIP affinity timeout
    uint32_t id            # service_id(): stable for the life of the Service port, never 0
    uint32_t flags         # LB_G_*
    uint32_t n_frontends   # 0: slot free

# One frontend (Cilium lb4_key + lb4_service): a Service port on one address.
ctypedef struct lb_service:
    uint32_t addr[4]
    uint16_t port
    uint8_t proto
    uint8_t family
    uint32_t flags         # LB_FE_*
    int32_t group          # index into groups; -1: slot free
    uint32_t n_src         # loadBalancerSourceRanges (+ the VIPs when the node may use them)
    cidr_t *src

# One ClusterIP in use (the set kube-proxy calls cluster-ips); open addressing.
ctypedef struct lb_vip:
    uint32_t addr[4]
    uint8_t family         # 0: slot empty

# ClientIP affinity (one entry per (service port, client)), written from the fast path.
ctypedef struct lb_affinity:
    uint32_t client[4]
    uint32_t svc_id        # 0: empty
    uint8_t family
    uint16_t be_port
    uint32_t be_addr[4]
    uint64_t expires_ns

# Final: the NAT stage's calls bind directly, no vtable.
@cython.final
cdef class LBTable:
    cdef lb_service *svcs
    cdef uint32_t cap_svcs
    cdef lb_group *groups
    cdef uint32_t cap_groups
    cdef int32_t *fe_slots         # frontend hash: open addressing, -1 empty, power-of-two size
    cdef uint32_t fe_mask
    cdef uint32_t n_frontends
    cdef lb_affinity *aff
    cdef uint32_t aff_mask
    cdef uint32_t maglev_m
    cdef uint64_t rng              # xorshift64* state
    cdef uint32_t next_id
    cdef bint masquerade_all
    cdef cidr_t *cluster           # cluster CIDRs (pod networks)
    cdef uint32_t n_cluster
    cdef bint cluster_known[2]     # per family (v4, v6): "local detector implemented"
    cdef cidr_t *nonmasq           # destinations NAT-outgoing leaves alone
    cdef uint32_t n_nonmasq
    cdef cidr_t *node_addrs        # this node's own addresses (fib saddr type local)
    cdef uint32_t n_node_addrs
    cdef uint32_t node4[4]
    cdef uint32_t node6[4]
    # kube-proxy's local traffic detector (detectLocalMode): source CIDRs (ClusterCIDR, NodeCIDR)
    # or, for BridgeInterface / InterfaceNamePrefix, a per-ingress-port flag.
    cdef cidr_t *localnet
    cdef uint32_t n_localnet
    cdef bint local_known[2]       # per family (v4, v6): the detector is implemented
    cdef uint8_t *local_ports      # NULL unless detecting by interface
    cdef uint32_t n_local_ports
    # ClusterIPs in use and the ServiceCIDRs (cluster-ips-check)
    cdef lb_vip *vips
    cdef uint32_t vip_mask
    cdef uint32_t n_vips
    cdef dict _vip_refs            # (family, address bytes) -> frontends using it
    cdef cidr_t *svc_cidrs
    cdef uint32_t n_svc_cidrs
    cdef uint64_t st_affinity_full, st_affinity_hits, st_reject, st_drop, st_denied
    cdef dict _groups              # Python service key -> group index
    cdef dict _fes                 # group index -> list of frontend indexes
    cdef list _free_svcs
    cdef list _free_groups

    cdef uint32_t _random(self, uint32_t n) noexcept nogil
    cdef uint32_t _pick(self, const lb_set *s, uint32_t hash) noexcept nogil
    cdef uint32_t _pick_affinity(self, const lb_group *g, const lb_set *s, const pkt_tuple *t,
                                 uint32_t hash, uint64_t now_ns) noexcept nogil
    cdef void _fe_insert(self, int32_t s) noexcept nogil
    cdef void _fe_delete(self, int32_t s) noexcept nogil
    cdef int _build_set(self, object backends, uint8_t family, bint maglev, lb_set *out) except -1
    cdef _grow(self, uint32_t need_svcs, uint32_t need_groups)
    cdef _drop_frontends(self, int32_t gi)
    cdef bint _src_local(self, const pkt_tuple *t, uint16_t port_in) noexcept nogil
    cdef bint _local_known(self, uint8_t family) noexcept nogil
    cdef int64_t _vip_find(self, const uint32_t *addr, uint8_t family) noexcept nogil
    cdef _vip_reserve(self, uint32_t need)
    cdef _vip_ref(self, const lb_service *fe, int delta)
    cdef _tuple(self, pkt_tuple *t, dst, dport, proto, src, sport)

    # Frontend lookup by the packet's destination (address, port, protocol); NULL-free API:
    # returns the service index or -1.
    cdef int64_t lookup_service(self, const pkt_tuple *t) noexcept nogil
    # Choose a backend for a new connection t to service svc, received on port port_in; fills
    # *backend and *flags (LB_MASQ).
    cdef int select_backend(self, int64_t svc, const pkt_tuple *t, uint32_t hash, uint16_t port_in,
                            uint64_t now_ns, lb_backend *backend, uint32_t *flags) noexcept nogil
    # A new connection that matched no frontend: LB_VIP_* (cluster-ips-check).
    cdef int check_service_ip(self, const pkt_tuple *t) noexcept nogil
    # Service id (stable per service port) for conntrack entries and counters.
    cdef uint32_t service_id(self, int64_t svc) noexcept nogil
    # Pod traffic that leaves the cluster is SNATed to the node IP ("NAT outgoing").
    cdef bint nat_outgoing(self, const pkt_tuple *t) noexcept nogil
    # The node IP used as the SNAT source for this family (network order words).
    cdef const uint32_t *node_ip(self, uint8_t family) noexcept nogil
