# Parser stage: fills pkt_meta (L2/L3/L4 offsets, flags, tuple, hash) for a burst. See parse.pyx.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from dataplane.includes.pkt cimport burst_t, pkt_tuple

cdef extern from *:
    """
    #ifndef DATAPLANE_TUPLE_HASH
    #define DATAPLANE_TUPLE_HASH
    #include <stdint.h>
    #include <string.h>
    #if defined(__SSE4_2__)
    #include <nmmintrin.h>
    static inline uint32_t dp_hash_step(uint32_t h, uint64_t w) { return (uint32_t)_mm_crc32_u64(h, w); }
    #elif defined(__ARM_FEATURE_CRC32)
    #include <arm_acle.h>
    static inline uint32_t dp_hash_step(uint32_t h, uint64_t w) { return __crc32cd(h, w); }
    #else
    /* No CRC instruction: a multiply-xorshift step, different values but as well spread. */
    static inline uint32_t dp_hash_step(uint32_t h, uint64_t w) {
        uint64_t x = (w ^ h) * 0x9E3779B97F4A7C15ULL;
        return (uint32_t)(x ^ (x >> 32));
    }
    #endif
    /* pkt_tuple is 40 bytes with its pad zeroed: five 8-byte words, no per-field work. */
    static inline uint32_t dp_tuple_hash(const void *t) {
        uint64_t w[5];
        uint32_t h = 0xffffffffu;
        memcpy(w, t, sizeof w);
        for (int i = 0; i < 5; i++) h = dp_hash_step(h, w[i]);
        return h;
    }
    #endif
    """
    uint32_t dp_tuple_hash(const void *t) nogil


cdef inline uint32_t tuple_hash(const pkt_tuple *t) noexcept nogil:
    """Flow hash of a tuple (CRC32C where the CPU has it). Direction-sensitive: a reply hashes
    differently from its request."""
    return dp_tuple_hash(t)


cdef void parse_burst(burst_t *b, uint64_t *cnt, uint64_t *drops) noexcept nogil


# Parses frame i into its meta without counting or dropping (the decap stage re-parses an inner
# frame with it); returns its drop reason, DROP_NONE when it parsed.
cdef uint8_t parse_one(burst_t *b, uint32_t i) noexcept nogil
