# Kernel interfaces the live port backends (afpacket, tap) share: sockets, interface ioctls,
# TPACKET_V3 rings, virtio-net headers and TUN/TAP. Declarations only.
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memset, strncpy

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        unsigned short sa_family
        char sa_data[14]
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    enum:
        AF_PACKET, AF_INET, SOCK_RAW, SOCK_DGRAM, SOCK_NONBLOCK, SOCK_CLOEXEC, SOL_PACKET,
        MSG_DONTWAIT
    int socket(int domain, int type, int protocol)
    int bind(int fd, const sockaddr *addr, socklen_t len)
    int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
    int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
    int sendmmsg(int fd, mmsghdr *msgs, unsigned int n, int flags)

cdef extern from "<arpa/inet.h>" nogil:
    uint16_t htons(uint16_t v)

cdef extern from "<sys/uio.h>" nogil:
    ssize_t readv(int fd, const iovec *iov, int n)

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    enum:
        CLOCK_REALTIME
    int clock_gettime(int clk, timespec *ts)

cdef extern from "<net/if.h>" nogil:
    enum:
        IFNAMSIZ, IFF_UP
    struct ifreq:
        char ifr_name[16]
        short ifr_flags
        int ifr_mtu
        int ifr_ifindex
        sockaddr ifr_hwaddr
    unsigned int if_nametoindex(const char *name)
    enum:
        SIOCGIFMTU, SIOCGIFHWADDR, SIOCGIFFLAGS, SIOCSIFFLAGS

cdef extern from "<linux/if_ether.h>" nogil:
    enum:
        ETH_P_ALL, ETH_HLEN

cdef extern from "<linux/if_packet.h>" nogil:
    struct sockaddr_ll:
        unsigned short sll_family
        unsigned short sll_protocol
        int sll_ifindex
        unsigned short sll_hatype
        unsigned char sll_pkttype
        unsigned char sll_halen
        unsigned char sll_addr[8]
    struct packet_mreq:
        int mr_ifindex
        unsigned short mr_type
        unsigned short mr_alen
        unsigned char mr_address[8]
    struct tpacket_req3:
        unsigned int tp_block_size
        unsigned int tp_block_nr
        unsigned int tp_frame_size
        unsigned int tp_frame_nr
        unsigned int tp_retire_blk_tov
        unsigned int tp_sizeof_priv
        unsigned int tp_feature_req_word
    struct tpacket_stats_v3:
        unsigned int tp_packets
        unsigned int tp_drops
        unsigned int tp_freeze_q_cnt
    struct tpacket_hdr_variant1:
        uint32_t tp_rxhash
        uint32_t tp_vlan_tci
        uint16_t tp_vlan_tpid
    struct tpacket3_hdr:
        uint32_t tp_next_offset
        uint32_t tp_sec
        uint32_t tp_nsec
        uint32_t tp_snaplen
        uint32_t tp_len
        uint32_t tp_status
        uint16_t tp_mac
        uint16_t tp_net
        tpacket_hdr_variant1 hv1
    struct tpacket_hdr_v1:
        uint32_t block_status
        uint32_t num_pkts
        uint32_t offset_to_first_pkt
    union tpacket_bd_header_u:
        tpacket_hdr_v1 bh1
    struct tpacket_block_desc:
        uint32_t version
        uint32_t offset_to_priv
        tpacket_bd_header_u hdr
    enum:
        PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC, PACKET_RX_RING, PACKET_STATISTICS,
        PACKET_VERSION, PACKET_VNET_HDR, PACKET_QDISC_BYPASS, PACKET_IGNORE_OUTGOING,
        PACKET_FANOUT, PACKET_FANOUT_HASH, TPACKET_V3,
        TP_STATUS_KERNEL, TP_STATUS_USER, TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID

cdef extern from "<linux/virtio_net.h>" nogil:
    # Fields are in the host's byte order (legacy virtio, which is what AF_PACKET writes).
    struct virtio_net_hdr:
        uint8_t flags
        uint8_t gso_type
        uint16_t hdr_len
        uint16_t gso_size
        uint16_t csum_start
        uint16_t csum_offset
    enum:
        VIRTIO_NET_HDR_F_NEEDS_CSUM

cdef extern from "<linux/if_tun.h>" nogil:
    enum:
        TUNSETIFF, IFF_TAP, IFF_NO_PI

# Ring words the kernel writes concurrently: load with acquire, store with release, so frame
# contents are seen after the status that publishes them and handed back only once copied.
cdef extern from *:
    """
    static inline uint32_t ring_load_acquire(const volatile uint32_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void ring_store_release(volatile uint32_t *p, uint32_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    """
    uint32_t ring_load_acquire(const uint32_t *p) nogil
    void ring_store_release(uint32_t *p, uint32_t v) nogil


cdef inline int if_ioctl(int fd, const char *ifname, unsigned long request, ifreq *r) noexcept nogil:
    """An interface ioctl (SIOCGIFMTU, ...) on any socket of the interface's namespace; -1 + errno."""
    memset(r, 0, sizeof(ifreq))
    strncpy(r.ifr_name, ifname, IFNAMSIZ - 1)
    return ioctl(fd, request, r)


cdef inline uint32_t l2_hdr_len(const uint8_t *frame, uint32_t n) noexcept nogil:
    """Ethernet header length including up to two VLAN tags: what a frame may carry on top of
    the MTU."""
    cdef uint32_t off = 12
    cdef uint16_t et
    while off + 2 <= n and off < 20:
        et = (<uint16_t>frame[off] << 8) | frame[off + 1]
        if et != 0x8100 and et != 0x88a8:
            break
        off += 4
    return off + 2
