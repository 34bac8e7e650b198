"""The node pipeline: parse -> VXLAN decap -> neighbours (live mode) -> input checks -> DNS answers ->
conntrack/Service NAT -> route (VXLAN encap included), one nogil call per burst.

Stages only touch packets whose verdict is still pending, so each stage is a plain loop and
the pipeline is the order of the calls. Counters are numpy arrays the control plane reads
without copying.
"""
from libc.stdint cimport uint32_t, uint64_t
cimport numpy as cnp
import numpy as np

from dataplane.burst cimport Burst
from dataplane.includes.pkt cimport (
    burst_t, V_FORWARD, V_REJECT, CNT_TX, CNT_N_COUNTERS, DROP_N_REASONS,
)
from dataplane.ctnat cimport CtNat
from dataplane.parse cimport parse_burst
from dataplane.route cimport Router
from dataplane.vxlan cimport VxlanDecap
from dataplane.ip_input cimport IpInput
from dataplane.dnsstage cimport DnsTable

cnp.import_array()

__all__ = ["Pipeline"]


cdef class Pipeline:
    def __cinit__(self, Router router not None, unsigned int n_ports, CtNat ctnat=None,
                  VxlanDecap vxlan=None, IpInput ip_input=None, DnsTable dns=None):
        self.router = router
        self.ctnat = ctnat
        self.vxlan = vxlan
        self.ip_input = ip_input
        self.dns = dns
        self.n_ports = n_ports
        self.counters = np.zeros(<int>CNT_N_COUNTERS, dtype=np.uint64)
        self.drops = np.zeros(<int>DROP_N_REASONS, dtype=np.uint64)
        self.port_tx = np.zeros(max(n_ports, 1), dtype=np.uint64)
        self.cnt = <uint64_t *>cnp.PyArray_DATA(self.counters)
        self.drp = <uint64_t *>cnp.PyArray_DATA(self.drops)
        self.tx = <uint64_t *>cnp.PyArray_DATA(self.port_tx)

    def process(self, Burst burst not None, now_ns=None):
        """Run every stage over the burst; verdicts, reasons and rewritten frames are left in it.

        `now_ns` is the conntrack clock; by default the receive time of the burst's last frame,
        so a replayed capture ages its connections by its own timestamps."""
        cdef uint64_t now = 0
        if now_ns is not None:
            now = now_ns
        elif burst.b.n:
            now = burst.b.meta[burst.b.n - 1].ts_ns
        with nogil:
            self.run(&burst.b, now)

    def reset_counters(self):
        self.counters[:] = 0
        self.drops[:] = 0
        self.port_tx[:] = 0

    cdef void run(self, burst_t *b, uint64_t now_ns) noexcept nogil:
        cdef uint32_t i
        parse_burst(b, self.cnt, self.drp)
        if self.vxlan is not None:
            self.vxlan.decap_burst(b, self.cnt, self.drp)
        if self.router.neigh is not None:
            self.router.neigh.neigh_burst(b, now_ns, self.cnt, self.drp)
        if self.ip_input is not None:
            self.ip_input.input_burst(b, self.cnt, self.drp)
        if self.dns is not None:
            self.dns.dns_burst(b, self.cnt, self.drp)
        if self.ctnat is not None:
            self.ctnat.run(b, now_ns, self.cnt, self.drp)
        self.router.route_burst(b, now_ns, self.cnt, self.drp)
        for i in range(b.n):
            if (b.verdict[i] == V_FORWARD or b.verdict[i] == V_REJECT) \
                    and b.meta[i].port_out < self.n_ports:
                self.tx[b.meta[i].port_out] += 1
                self.cnt[CNT_TX] += 1
