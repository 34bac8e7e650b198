/* Unaligned big-endian loads and stores. Frames start at any offset, so every header field is
 * read with memcpy (one mov on x86) instead of a cast that would be undefined behaviour. */
#ifndef DATAPLANE_BYTES_H
#define DATAPLANE_BYTES_H
#include <stdint.h>
#include <string.h>

static inline uint16_t load_be16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return __builtin_bswap16(v); }
static inline uint32_t load_be32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return __builtin_bswap32(v); }
static inline uint32_t load_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void store_be16(uint8_t *p, uint16_t v) { v = __builtin_bswap16(v); memcpy(p, &v, 2); }
static inline void store_be32(uint8_t *p, uint32_t v) { v = __builtin_bswap32(v); memcpy(p, &v, 4); }
static inline void store_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint32_t bswap32(uint32_t v) { return __builtin_bswap32(v); }
static inline uint16_t bswap16(uint16_t v) { return __builtin_bswap16(v); }

#endif
