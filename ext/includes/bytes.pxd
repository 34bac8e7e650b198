# Unaligned big-endian field access (bytes.h): the only way stages read header fields.
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef extern from "bytes.h" nogil:
    uint16_t load_be16(const uint8_t *p)
    uint32_t load_be32(const uint8_t *p)
    uint32_t load_u32(const uint8_t *p)
    void store_be16(uint8_t *p, uint16_t v)
    void store_be32(uint8_t *p, uint32_t v)
    void store_u32(uint8_t *p, uint32_t v)
    uint32_t bswap32(uint32_t v)
    uint16_t bswap16(uint16_t v)
