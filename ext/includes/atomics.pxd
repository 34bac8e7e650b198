from libc.stdint cimport uint32_t

cdef extern from "atomics.h" nogil:
    int dp_load(const int *p)
    void dp_store(int *p, int v)
    uint32_t dp_load_u32(const uint32_t *p)
    void dp_store_u32(uint32_t *p, uint32_t v)
