/* Sequentially consistent loads and stores shared by the forwarding thread and the control
 * plane (the pause handshake, the monitor ring). Plain ints: the handshake needs no more. */
#ifndef DATAPLANE_ATOMICS_H
#define DATAPLANE_ATOMICS_H
#include <stdint.h>

static inline int dp_load(const int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void dp_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t dp_load_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void dp_store_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

#endif
