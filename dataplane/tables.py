"""Control plane -> fast-path tables: turns a validated configuration into a Pipeline.

Pure Python over the compiled tables; the only place that knows how configuration objects map
onto LPM entries and next hops.
"""
from __future__ import annotations

import ipaddress

from dataplane.lpm import LPM4, LPM6
from dataplane.pipeline import Pipeline
from dataplane.route import NH_LOCAL, Router

__all__ = ["build_pipeline", "build_router"]


def build_router(dp) -> Router:
    """Routes become next hops in the LPMs; the node's own addresses become local host routes."""
    router = Router(LPM4(), LPM6())
    for route in dp.routes:
        port = dp.ports[route.port_index]
        nexthop = router.add_nexthop(route.port_index, port.mac, route.mac)
        _lpm_for(router, route.prefix.version).add(route.prefix, nexthop)
    for addr in dp.node_ips:
        host = ipaddress.ip_network(addr)  # /32 or /128
        _lpm_for(router, host.version).add(host, NH_LOCAL)
    return router


def build_pipeline(dp) -> Pipeline:
    return Pipeline(build_router(dp), len(dp.ports))


def _lpm_for(router: Router, version: int):
    return router.lpm4 if version == 4 else router.lpm6
