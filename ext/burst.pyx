"""Burst: a fixed-capacity batch of frames in contiguous memory, the unit every stage runs on.

Python builds and inspects bursts only in tests, the control plane and traces; the fast path
fills them from rings and files in C (see dataplane.pcap) and hands &burst.b to nogil stages.
"""
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.string cimport memcpy, memset
from libc.stdint cimport uint64_t
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from cpython.ref cimport Py_INCREF
cimport numpy as cnp
import numpy as np

from dataplane.includes.pkt cimport (
    BURST_SIZE, SLOT_HEADROOM, SLOT_SIZE, V_PENDING, V_FORWARD, DROP_NONE, pkt_meta, pkt_tuple, pkt_data,
    drop_reason_strings, counter_strings, DROP_N_REASONS, CNT_N_COUNTERS, pkt_reset,
)

cnp.import_array()

__all__ = ["Burst", "DROP_REASONS", "COUNTERS", "VERDICTS", "VERDICT", "BURST_SIZE",
           "SLOT_HEADROOM", "stage_counters"]

DROP_REASONS = tuple(drop_reason_strings[i].decode() for i in range(<int>DROP_N_REASONS))
COUNTERS = tuple(counter_strings[i].decode() for i in range(<int>CNT_N_COUNTERS))
def stage_counters(counters=None):
    """(counters, drops) uint64 arrays for a stage's test hook: fresh zeros, or the pair given
    (checked), so calls can accumulate."""
    if counters is None:
        return np.zeros(<int>CNT_N_COUNTERS, np.uint64), np.zeros(<int>DROP_N_REASONS, np.uint64)
    cnt, drops = counters
    if cnt.shape != (CNT_N_COUNTERS,) or drops.shape != (DROP_N_REASONS,):
        raise ValueError(f"need {CNT_N_COUNTERS} counters and {DROP_N_REASONS} drop slots")
    return cnt, drops


VERDICTS = ("pending", "forward", "local", "drop", "reject")   # verdict_t order (pkt.pxd)
VERDICT = {name: value for value, name in enumerate(VERDICTS)}


cdef class Burst:
    def __cinit__(self, uint32_t capacity=BURST_SIZE, uint32_t slot_size=SLOT_SIZE):
        if capacity == 0 or slot_size <= SLOT_HEADROOM:
            raise ValueError("capacity must be > 0 and slot_size > headroom")
        self.b.cap = capacity
        self.b.slot_size = slot_size
        self.b.n = 0
        self.b.buf = <uint8_t *>PyMem_Calloc(capacity, slot_size)
        self.b.meta = <pkt_meta *>PyMem_Calloc(capacity, sizeof(pkt_meta))
        self.b.verdict = <uint8_t *>PyMem_Calloc(capacity, 1)
        self.b.reason = <uint8_t *>PyMem_Calloc(capacity, 1)
        if not (self.b.buf and self.b.meta and self.b.verdict and self.b.reason):
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.b.buf)
        PyMem_Free(self.b.meta)
        PyMem_Free(self.b.verdict)
        PyMem_Free(self.b.reason)

    def __len__(self):
        return self.b.n

    @property
    def capacity(self):
        return self.b.cap

    @property
    def max_frame(self):
        """Largest frame a slot holds."""
        return self.b.slot_size - SLOT_HEADROOM

    def clear(self):
        self.b.n = 0

    def append(self, frame, unsigned int port_in=0):
        """Copy one frame in; returns False when the burst is full. Raises on an oversize frame."""
        cdef const uint8_t[::1] src = memoryview(frame).cast("B")
        cdef uint32_t i = self.b.n
        if i >= self.b.cap:
            return False
        if <uint32_t>src.shape[0] > self.b.slot_size - SLOT_HEADROOM:
            raise ValueError(f"frame of {src.shape[0]} bytes exceeds slot of {self.max_frame}")
        pkt_reset(&self.b, i, <uint16_t>src.shape[0], <uint16_t>port_in)
        if src.shape[0]:
            memcpy(pkt_data(&self.b, i), &src[0], src.shape[0])
        self.b.n = i + 1
        return True

    def extend(self, frames, unsigned int port_in=0):
        """Append frames until full; returns how many were taken."""
        taken = 0
        for f in frames:
            if not self.append(f, port_in):
                break
            taken += 1
        return taken

    def copy_from(self, Burst src not None):
        """Reload this burst with src's frames as fresh, unprocessed packets (benchmarks replay
        the same traffic each round without per-frame Python work)."""
        cdef uint32_t i, n = src.b.n
        if n > self.b.cap or src.b.slot_size > self.b.slot_size:
            raise ValueError("source burst does not fit")
        with nogil:
            for i in range(n):
                pkt_reset(&self.b, i, src.b.meta[i].len, src.b.meta[i].port_in)
                self.b.meta[i].ts_ns = src.b.meta[i].ts_ns
                memcpy(pkt_data(&self.b, i), pkt_data(&src.b, i), src.b.meta[i].len)
            self.b.n = n

    def load_array(self, const uint8_t[:, ::1] frames not None, Py_ssize_t start=0,
                   unsigned int port_in=0, uint64_t ts_ns=0):
        """Fill the burst with rows start.. of a 2-D uint8 array of same-length frames (traffic
        generators and benchmarks); returns how many were taken."""
        cdef Py_ssize_t n = min(<Py_ssize_t>self.b.cap, frames.shape[0] - start)
        cdef uint16_t length = <uint16_t>frames.shape[1]
        cdef Py_ssize_t i
        if start < 0 or n < 0:
            raise IndexError(start)
        if frames.shape[1] > self.b.slot_size - SLOT_HEADROOM:
            raise ValueError(f"frames of {frames.shape[1]} bytes exceed slot of {self.max_frame}")
        with nogil:
            for i in range(n):
                pkt_reset(&self.b, <uint32_t>i, length, <uint16_t>port_in)
                self.b.meta[i].ts_ns = ts_ns
                memcpy(pkt_data(&self.b, <uint32_t>i), &frames[start + i, 0], length)
            self.b.n = <uint32_t>n
        return n

    def store_array(self, uint8_t[:, ::1] out not None, Py_ssize_t start=0):
        """Copy the frames (as they are now) into rows start.. of a 2-D uint8 array; each frame
        is cut or zero-padded to the row length. Returns how many rows were written."""
        cdef Py_ssize_t n = min(<Py_ssize_t>self.b.n, out.shape[0] - start)
        cdef Py_ssize_t i, width = out.shape[1], length
        if start < 0 or n < 0:
            raise IndexError(start)
        with nogil:
            for i in range(n):
                length = min(<Py_ssize_t>self.b.meta[i].len, width)
                memcpy(&out[start + i, 0], pkt_data(&self.b, <uint32_t>i), length)
                memset(&out[start + i, length], 0, width - length)
        return n

    def send_all(self, unsigned int port_out, unsigned int verdict=V_FORWARD):
        """Mark every frame for transmission on port_out (traffic generators, tests): a fresh
        frame goes nowhere until a stage picks its egress port."""
        cdef uint32_t i
        for i in range(self.b.n):
            self.b.meta[i].port_out = <uint16_t>port_out
            self.b.verdict[i] = <uint8_t>verdict

    def frame(self, uint32_t i):
        """The frame at index i as it is now (after any rewrite)."""
        self._check(i)
        return (<char *>pkt_data(&self.b, i))[:self.b.meta[i].len]

    def frames(self):
        return [self.frame(i) for i in range(self.b.n)]

    def meta(self, uint32_t i):
        """Metadata of packet i as a dict (tests, traces)."""
        self._check(i)
        d = dict(self.b.meta[i])
        d["t"] = _tuple_dict(&self.b.meta[i].t)
        d["inner"] = _tuple_dict(&self.b.meta[i].inner)
        d["verdict"] = VERDICTS[self.b.verdict[i]]
        d["reason"] = DROP_REASONS[self.b.reason[i]] if self.b.reason[i] != DROP_NONE else None
        return d

    @property
    def verdicts(self):
        """numpy view (uint8) of the first n verdicts."""
        return self._view(self.b.verdict)

    @property
    def reasons(self):
        """numpy view (uint8) of the first n drop reasons."""
        return self._view(self.b.reason)

    cdef _view(self, uint8_t *p):
        cdef cnp.npy_intp n = self.b.n
        arr = cnp.PyArray_SimpleNewFromData(1, &n, cnp.NPY_UINT8, p)
        cnp.PyArray_SetBaseObject(arr, self)
        Py_INCREF(self)
        return arr

    cdef _check(self, uint32_t i):
        if i >= self.b.n:
            raise IndexError(i)


cdef object _tuple_dict(pkt_tuple *t):
    import ipaddress
    if t.family == 4:
        src = str(ipaddress.IPv4Address((<char *>t.saddr)[:4]))
        dst = str(ipaddress.IPv4Address((<char *>t.daddr)[:4]))
    elif t.family == 6:
        src = str(ipaddress.IPv6Address((<char *>t.saddr)[:16]))
        dst = str(ipaddress.IPv6Address((<char *>t.daddr)[:16]))
    else:
        src = dst = None
    return {"src": src, "dst": dst, "sport": t.sport, "dport": t.dport, "proto": t.proto,
            "family": t.family}
