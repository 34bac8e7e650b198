"""The forwarding engine: one thread polls every port, drains ready rings a burst at a time,
runs each burst through the pipeline and transmits it, all without the GIL.

Why its own nogil loop: the control plane (API watches, JSON decoding, table builds) is Python
on other threads and holds the GIL for long stretches; a loop that needed the GIL between bursts
would stall behind it. Here nothing on the packet path waits for Python.

Table changes use a pause handshake instead of locks on the fast path: the control plane asks
the loop to park between two bursts (`pause()`), swaps or edits tables while it is parked, and
lets it go (`resume()`). A burst therefore sees one generation of every table, and a change
costs the loop only the time of the swap itself, not the time to build it.
"""
from cpython.ref cimport PyObject
from libc.errno cimport errno, EINTR, EAGAIN
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset, memcmp
import threading

from dataplane.burst cimport Burst
from dataplane.includes.atomics cimport dp_load, dp_store, dp_load_u32, dp_store_u32
from dataplane.includes.pkt cimport burst_t, pkt_meta, V_FORWARD, V_LOCAL, V_DROP, V_REJECT
from dataplane.includes.sys_net cimport timespec, clock_gettime, CLOCK_REALTIME
from dataplane.pipeline cimport Pipeline
from dataplane.port cimport Port

__all__ = ["Engine", "TX_MASK"]

cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    enum:
        EPOLLIN
        EPOLLERR
        EPOLLHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)

cdef extern from "<sys/eventfd.h>" nogil:
    enum:
        EFD_CLOEXEC
        EFD_NONBLOCK
    int eventfd(unsigned int initval, int flags)

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int close(int fd)

cdef extern from "<sched.h>" nogil:
    int sched_yield()

# Frames that leave a port: forwarded, rejected (the answer), and local ones (sent to the tap
# into the node's stack when a local port is configured; otherwise they have no port_out).
TX_MASK = (1 << V_FORWARD) | (1 << V_REJECT) | (1 << V_LOCAL)
cdef uint32_t C_TX_MASK = (1 << V_FORWARD) | (1 << V_REJECT) | (1 << V_LOCAL)

cdef enum:
    WAKE_TOKEN = 0xFFFFFFFF        # epoll data of the wake eventfd (ports use their index)
    MAX_EVENTS = 64
    POLL_TIMEOUT_MS = 50           # bounds how late the once-a-second probes can be
    MAX_BURSTS_PER_WAKEUP = 16     # one busy port must not starve the others
    MON_SIZE = 1 << 16             # monitor ring slots


cdef inline uint64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef class Engine:
    """Engine(pipeline, ports, burst_size=256, trace=None)

    `ports` are open Port objects in configuration order (a packet's port_out indexes them).
    `run()` forwards until `stop()`; call it on a thread of its own. `pause()` / `resume()` (or
    `with engine.paused():`) bracket every change to a table the pipeline reads."""

    def __cinit__(self, Pipeline pipeline not None, ports, unsigned int burst_size=256, trace=None,
                  double probe_interval_s=1.0):
        cdef uint32_t i
        cdef epoll_event ev
        self.epfd = -1
        self.wakefd = -1
        self.pipeline = pipeline
        self._ports = list(ports)
        self.n_ports = len(self._ports)
        for p in self._ports:
            if not isinstance(p, Port):
                raise TypeError(f"not a Port: {p!r}")
        self.burst = Burst(burst_size)
        self.probes = Burst(64)
        self.trace = trace
        self.probe_interval_ns = <uint64_t>(probe_interval_s * 1e9)
        self._pause_lock = threading.RLock()
        self.port_ptr = <PyObject **>calloc(max(self.n_ports, 1), sizeof(PyObject *))
        self.port_dead = <uint8_t *>calloc(max(self.n_ports, 1), 1)
        self.port_used = <uint8_t *>calloc(max(self.n_ports, 1), 1)
        self.mon = <mon_event *>calloc(MON_SIZE, sizeof(mon_event))
        if self.port_ptr == NULL or self.port_dead == NULL or self.port_used == NULL or self.mon == NULL:
            raise MemoryError()
        self.mon_mask = MON_SIZE - 1
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        self.wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if self.epfd < 0 or self.wakefd < 0:
            raise OSError(errno, "epoll/eventfd")
        ev.events = EPOLLIN
        ev.data.u64 = 0
        ev.data.u32 = WAKE_TOKEN
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, self.wakefd, &ev) < 0:
            raise OSError(errno, "epoll_ctl")
        for i in range(self.n_ports):
            self.port_ptr[i] = <PyObject *>self._ports[i]
            ev.events = EPOLLIN
            ev.data.u64 = 0
            ev.data.u32 = i
            if epoll_ctl(self.epfd, EPOLL_CTL_ADD, self._ports[i].fileno(), &ev) < 0:
                raise OSError(errno, f"epoll_ctl {self._ports[i].ifname}")

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)
        if self.wakefd >= 0:
            close(self.wakefd)
        free(self.port_ptr)
        free(self.port_dead)
        free(self.port_used)
        free(self.mon)

    # ---- the loop (forwarding thread) ----

    def run(self):
        """Forward until stop(); releases the GIL for the whole time (except to write traces)."""
        with nogil:
            self.loop()

    cdef void loop(self) noexcept nogil:
        cdef epoll_event events[MAX_EVENTS]
        cdef int n, k
        cdef uint32_t idx
        cdef uint64_t token, t, next_probe = now_ns() + self.probe_interval_ns
        dp_store(&self.running, 1)
        while not dp_load(&self.stop_req):
            self.quiesce()
            n = epoll_wait(self.epfd, events, MAX_EVENTS, POLL_TIMEOUT_MS)
            if n < 0 and errno != EINTR:
                break
            for k in range(n if n > 0 else 0):
                idx = events[k].data.u32
                if idx == WAKE_TOKEN:
                    read(self.wakefd, &token, 8)
                    continue
                if events[k].events & (EPOLLERR | EPOLLHUP):
                    # The interface went away (its pod was deleted): stop polling it instead
                    # of spinning on the error; the other ports carry on.
                    epoll_ctl(self.epfd, EPOLL_CTL_DEL, (<Port>self.port_ptr[idx]).fd, NULL)
                    self.port_dead[idx] = 1
                    continue
                self.drain(idx)
            t = now_ns()
            if t >= next_probe:
                self.quiesce()
                self.probe(t)
                next_probe = t + self.probe_interval_ns
        dp_store(&self.running, 0)

    cdef void quiesce(self) noexcept nogil:
        """A point between bursts: park here while the control plane holds a pause."""
        if dp_load(&self.pause_req):
            dp_store(&self.parked, 1)
            while dp_load(&self.pause_req):
                sched_yield()
            dp_store(&self.parked, 0)

    cdef void drain(self, uint32_t index) noexcept nogil:
        cdef burst_t *b = &self.burst.b
        cdef uint32_t k, n
        for k in range(MAX_BURSTS_PER_WAKEUP):
            self.quiesce()
            n = (<Port>self.port_ptr[index]).rx_burst(b, <uint16_t>index)
            if n == 0:
                return
            self.pipeline.run(b, now_ns())
            if self.trace is not None:
                with gil:
                    self.trace.write(self.burst)
            if dp_load(&self.mon_on):
                self.monitor(b)
            self.transmit(b)
            self.bursts += 1
            self.packets += n
            if n < b.cap:
                return

    cdef void transmit(self, burst_t *b) noexcept nogil:
        """One pass finds the ports this burst addresses; each of them sends its frames in one
        batch. Ports with nothing to send cost nothing."""
        cdef uint32_t i, p
        memset(self.port_used, 0, self.n_ports)
        for i in range(b.n):
            p = b.meta[i].port_out
            if p < self.n_ports and (C_TX_MASK >> b.verdict[i]) & 1:
                self.port_used[p] = 1
        for p in range(self.n_ports):
            if self.port_used[p] and not self.port_dead[p]:
                (<Port>self.port_ptr[p]).tx_burst(b, <uint16_t>p, C_TX_MASK)

    cdef void probe(self, uint64_t t) noexcept nogil:
        """Unicast probes for the neighbours in use that went stale, so they are confirmed
        before they expire (Linux DELAY/PROBE)."""
        if self.pipeline.router.neigh is None:
            return
        self.probes.b.n = 0
        if self.pipeline.router.neigh.probe_stale(&self.probes.b, t):
            self.transmit(&self.probes.b)

    cdef void monitor(self, burst_t *b) noexcept nogil:
        cdef uint32_t i, head = self.mon_head, tail = dp_load_u32(&self.mon_tail)
        cdef pkt_meta *m
        cdef mon_event *e
        cdef const mon_filter *f = &self.mf
        for i in range(b.n):
            m = &b.meta[i]
            if f.drops_only and b.verdict[i] != V_DROP:
                continue
            if f.proto and m.t.proto != f.proto:
                continue
            if f.port and m.t.sport != f.port and m.t.dport != f.port:
                continue
            if f.family and (m.t.family != f.family or (memcmp(m.t.saddr, f.addr, 16) != 0
                                                       and memcmp(m.t.daddr, f.addr, 16) != 0)):
                continue
            if head - tail > self.mon_mask:
                self.mon_lost += 1
                continue
            e = &self.mon[head & self.mon_mask]
            e.ts_ns = m.ts_ns
            e.t = m.t
            e.port_in = m.port_in
            e.port_out = m.port_out
            e.len = m.len
            e.verdict = b.verdict[i]
            e.reason = b.reason[i]
            e.tcp_flags = m.tcp_flags
            head += 1
        dp_store_u32(&self.mon_head, head)

    # ---- control plane (other threads) ----

    def stop(self):
        """Ask the loop to return (from any thread, or a signal handler)."""
        cdef uint64_t one = 1
        dp_store(&self.stop_req, 1)
        write(self.wakefd, &one, 8)

    @property
    def is_running(self):
        return bool(dp_load(&self.running))

    def pause(self):
        """Park the loop between two bursts; returns once it is parked (at once when the loop is
        not running). Nestable on one thread; every pause() needs its resume()."""
        cdef uint64_t one = 1
        self._pause_lock.acquire()
        self.depth += 1
        if self.depth > 1:
            return
        with nogil:
            dp_store(&self.pause_req, 1)
            write(self.wakefd, &one, 8)
            while dp_load(&self.running) and not dp_load(&self.parked):
                sched_yield()
        self._pause_t0 = now_ns()

    def resume(self):
        cdef uint64_t held
        if self.depth <= 0:
            raise RuntimeError("resume() without pause()")
        self.depth -= 1
        if self.depth == 0:
            held = now_ns() - self._pause_t0
            with nogil:
                dp_store(&self.pause_req, 0)
                # Wait until the loop has left its parking spot, so that the next pause() cannot
                # take the old `paused` for a new acknowledgement.
                while dp_load(&self.running) and dp_load(&self.parked):
                    sched_yield()
            self.pauses += 1
            self.pause_total_ns += held
            if held > self.pause_max_ns:
                self.pause_max_ns = held
        self._pause_lock.release()

    def paused(self):
        """Context manager: `with engine.paused(): <change tables>`."""
        return _Paused(self)

    # ---- monitor ----

    def monitor_start(self, drops_only=False, proto=0, address=None, port=0):
        """Start copying packet events (matching the filter) into the monitor ring."""
        import ipaddress
        memset(&self.mf, 0, sizeof(mon_filter))
        self.mf.drops_only = bool(drops_only)
        self.mf.proto = proto
        self.mf.port = port
        if address is not None:
            raw = ipaddress.ip_address(address).packed
            self.mf.family = 4 if len(raw) == 4 else 6
            for i, byte in enumerate(raw):
                (<uint8_t *>self.mf.addr)[i] = byte
        dp_store_u32(&self.mon_tail, dp_load_u32(&self.mon_head))
        dp_store(&self.mon_on, 1)

    def monitor_stop(self):
        dp_store(&self.mon_on, 0)

    def monitor_read(self, unsigned int limit=4096):
        """Events copied since the last call, oldest first, as dicts (raw tuple addresses)."""
        cdef uint32_t head = dp_load_u32(&self.mon_head), tail = self.mon_tail
        cdef mon_event *e
        out = []
        while tail != head and len(out) < limit:
            e = &self.mon[tail & self.mon_mask]
            fam = e.t.family
            out.append({"ts_ns": e.ts_ns, "family": fam, "proto": e.t.proto,
                        "src": (<const char *>e.t.saddr)[:4 if fam == 4 else 16],
                        "dst": (<const char *>e.t.daddr)[:4 if fam == 4 else 16],
                        "sport": e.t.sport, "dport": e.t.dport, "port_in": e.port_in,
                        "port_out": e.port_out, "len": e.len, "verdict": e.verdict,
                        "reason": e.reason, "tcp_flags": e.tcp_flags})
            tail += 1
        dp_store_u32(&self.mon_tail, tail)
        return out

    # ---- state ----

    def dead_ports(self):
        """Indexes of ports whose interface went away."""
        return [i for i in range(self.n_ports) if self.port_dead[i]]

    def stats(self):
        return {"bursts": self.bursts, "packets": self.packets, "pauses": self.pauses,
                "pause_max_ns": self.pause_max_ns, "pause_total_ns": self.pause_total_ns,
                "monitor_lost": self.mon_lost}


class _Paused:
    __slots__ = ("engine",)

    def __init__(self, engine):
        self.engine = engine

    def __enter__(self):
        self.engine.pause()
        return self.engine

    def __exit__(self, *exc):
        self.engine.resume()
