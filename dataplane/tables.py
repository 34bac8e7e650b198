"""Control plane -> fast-path tables: turns a validated configuration into a running pipeline.

Pure Python over the compiled tables; the only place that knows how configuration objects map
onto LPM entries, next hops, the conntrack table and the Service tables.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os

from dataplane.config.dataplane import vtep_mac
from dataplane.config.k8s import KubeProxyConfig
from dataplane.conntrack import Conntrack
from dataplane.ctnat import CtNat
from dataplane.lpm import LPM4, LPM6
from dataplane.neigh import Neighbours
from dataplane.ip_input import IpInput
from dataplane.pipeline import Pipeline
from dataplane.proxier import FLUSHED_PROTOCOLS, Proxier
from dataplane.route import NH_LOCAL, Router
from dataplane.vxlan import VxlanDecap

__all__ = ["NodeDataplane", "build_neighbours", "build_pipeline", "build_router", "build_vxlan",
           "conntrack_settings", "vtep_ip"]

DEFAULT_CONNTRACK_SIZE = 1 << 20
FLUSHES_PER_PAUSE = 64


def build_router(dp) -> Router:
    """Routes become next hops in the LPMs; the node's own addresses become local host routes."""
    router = Router(LPM4(), LPM6())
    local = vtep_ip(dp)
    for route in dp.routes:
        if route.vxlan is not None:
            t = route.vxlan
            nexthop = router.add_vxlan_nexthop(t.vni, local, t.remote, t.port,
                                               t.vtep_mac or vtep_mac(t.remote), vtep_mac(local))
        else:
            port = dp.ports[route.port_index]
            nexthop = router.add_nexthop(route.port_index, port.mac, route.mac, route.via)
        _lpm_for(router, route.prefix.version).add(route.prefix, nexthop)
    for addr in dp.node_ips:
        host = ipaddress.ip_network(addr)  # /32 or /128
        _lpm_for(router, host.version).add(host, NH_LOCAL)
    router.resolve_underlay()
    return router


def vtep_ip(dp):
    """Our VTEP address: the node's first IPv4 address (flannel's public IP)."""
    return next((a for a in dp.node_ips if a.version == 4), None)


def build_vxlan(dp) -> VxlanDecap | None:
    """The decapsulation stage for the node's tunnels; None when it has none."""
    tunnels = {(r.vxlan.port, r.vxlan.vni) for r in dp.routes if r.vxlan is not None}
    return VxlanDecap(dp.node_ips, tunnels) if tunnels else None


def build_pipeline(dp) -> Pipeline:
    """A pure router: parse -> route, no conntrack and no Services."""
    router = build_router(dp)
    return Pipeline(router, len(dp.ports), vxlan=build_vxlan(dp),
                    ip_input=IpInput.from_config(dp, router))


def conntrack_settings(dp, kube_proxy: KubeProxyConfig | None, cores: int | None = None):
    """(size, timeouts) for the flow table. Size: the DataplaneConfiguration's conntrackSize, else
    kube-proxy's rule max(maxPerCore x cores, min) but never below 1,048,576 entries. Timeouts:
    Linux's defaults with kube-proxy's overrides (24 h established, 1 h close-wait by default)."""
    kp = kube_proxy or KubeProxyConfig()
    c = kp.conntrack
    size = dp.conntrack_size
    if size is None:
        size = max(DEFAULT_CONNTRACK_SIZE, c.max_per_core * (cores or os.cpu_count() or 1), c.min)
    timeouts = {"tcp_established": c.tcp_established_timeout,
                "tcp_close_wait": c.tcp_close_wait_timeout}
    if c.udp_timeout:
        timeouts["udp"] = c.udp_timeout
    if c.udp_stream_timeout:
        timeouts["udp_stream"] = c.udp_stream_timeout
    return size, {k: v for k, v in timeouts.items() if v}


def build_neighbours(dp) -> Neighbours:
    """Live mode: the dataplane answers ARP/ND for the addresses its ports own and resolves
    next hops configured without a MAC."""
    neigh = Neighbours([p.mac for p in dp.ports])
    for port in dp.ports:
        for addr in port.addresses:
            neigh.add_owned(port.index, addr)
        if port.proxy_arp:
            neigh.set_proxy(port.index, True)
    return neigh


class NodeDataplane:
    """One node's fast path: routes, conntrack, Services (via the proxier) and the pipeline.

    `live`: attached to real ports (`dataplane run`), so neighbour discovery runs too; replay
    leaves it out and keeps its output a pure function of the capture."""

    def __init__(self, config, live: bool = False):
        dp = config.dataplane
        if dp is None:
            raise ValueError("no DataplaneConfiguration object (ports and routes)")
        self.dp = dp
        self.port_names = [p.name for p in dp.ports]
        size, timeouts = conntrack_settings(dp, config.kube_proxy)
        liberal = (config.kube_proxy or KubeProxyConfig()).conntrack.tcp_be_liberal
        try:
            self.conntrack = Conntrack(size, timeouts, tcp_be_liberal=liberal)
        except MemoryError:
            field = ("DataplaneConfiguration conntrackSize" if dp.conntrack_size is not None
                     else "KubeProxyConfiguration conntrack.min / conntrack.maxPerCore")
            raise ValueError(f"a conntrack table of {size:,} entries does not fit in this machine's "
                             f"memory ({field})") from None
        self.proxier = Proxier.from_config(
            config, conntrack=self.conntrack, algorithm=dp.service_load_balancing,
            non_masquerade_cidrs=dp.non_masquerade_cidrs)
        self.ctnat = CtNat(self.conntrack, self.proxier.lb)
        self.router = build_router(dp)
        self._announced: set = set()
        if live:
            self.router.set_neighbours(build_neighbours(dp))
            self._announce(_announced(config.services))
        self.pipeline = Pipeline(self.router, len(dp.ports), self.ctnat, build_vxlan(dp),
                                 IpInput.from_config(dp, self.router))

    def attach_ports(self, ports) -> None:
        """Live ports are open: packets for the node go to the local port's kernel side."""
        if self.dp.local_port is not None:
            index = self.port_names.index(self.dp.local_port)
            self.router.set_local(index, ports[index].kernel_mac, self.dp.ports[index].mac)

    def apply(self, config, pause=contextlib.nullcontext):
        """Program exactly the Services and EndpointSlices of `config` (a full sync).

        The new table generation is built while the pipeline keeps using the old one; `pause`
        (the engine's, in live mode) brackets only the swap and the conntrack flush of endpoints
        that went away, so forwarding stops for the swap, not for the build."""
        conntrack, self.proxier.conntrack = self.proxier.conntrack, None   # flushed below, paused
        try:
            result = self.proxier.apply(config)
        finally:
            self.proxier.conntrack = conntrack
        old = self.ctnat.lb
        wanted = _announced(config.services)
        with pause():
            self.ctnat.set_lb(self.proxier.lb)
            self._announce(wanted)
        del old   # the old generation is freed here, after the pipeline let go of it
        # Conntrack flushes (each a walk of the table) in pauses of their own, a few at a time:
        # a relist can bring thousands of them.
        stale, active = list(result.stale_endpoints), sorted(result.newly_active)
        for k in range(0, max(len(stale), len(active)), FLUSHES_PER_PAUSE):
            with pause():
                result.flushed += self._flush_stale(stale[k:k + FLUSHES_PER_PAUSE])
                result.flushed += self._flush_newly_active(active[k:k + FLUSHES_PER_PAUSE])
        return result

    def sync(self, pause=contextlib.nullcontext, services=None):
        """Apply the changes recorded by the proxier's handlers (on_service, on_endpoint_slice)
        in place, with the pipeline parked; `services` (all current ones) refreshes the
        addresses answered for on the network when Services changed."""
        wanted = None if services is None else _announced(services)
        result = self.proxier.sync(pause)
        if wanted is not None:
            with pause():
                self._announce(wanted)
        return result

    def _flush_stale(self, stale) -> int:
        flushed = 0
        for ip, port, protocol in stale:
            proto = FLUSHED_PROTOCOLS.get(protocol)
            if proto is not None:
                flushed += self.conntrack.flush(ip, port, proto) or 0
        return flushed

    def _flush_newly_active(self, port_keys) -> int:
        """UDP Service ports that got their first endpoints: entries towards their frontends,
        made while they had none, would keep bypassing the DNAT (kube-proxy flushes them too)."""
        flushed = 0
        for port_key in port_keys:
            for addr, port, *_ in self.proxier.frontends_of(port_key):
                flushed += self.conntrack.flush_destination(str(addr), port, 17) or 0
        return flushed

    def _announce(self, wanted: set) -> None:
        """Answer ARP / NS for the Services' LoadBalancer and external IPs (`wanted`) on the
        ports facing the network (as MetalLB's layer-2 mode does), so clients on the link can
        reach them."""
        neigh = self.router.neigh
        if neigh is None:
            return
        ports = [p for p in self.dp.ports if not p.proxy_arp and p.name != self.dp.local_port]
        for port in ports:
            for ip in self._announced - wanted - set(port.addresses):
                neigh.remove_owned(port.index, ip)
            for ip in wanted - self._announced:
                neigh.add_owned(port.index, ip)
        self._announced = wanted


def _announced(services) -> set:
    return {ip for svc in services for ip in announced_ips(svc)}


def announced_ips(service) -> tuple:
    """The addresses of one Service (None: none) that the node answers ARP / NS for."""
    return () if service is None else (*service.load_balancer_ips, *service.external_ips)


def _lpm_for(router: Router, version: int):
    return router.lpm4 if version == 4 else router.lpm6
