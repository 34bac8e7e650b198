"""Cluster DNS inside `dataplane run` (NodeLocal DNSCache's job, without its extra hop or a
second process).

- The zone follows the control plane's object events (Services, EndpointSlices, Pods,
  Namespaces).
- The fast-path stage answers the hot queries (A, AAAA, SRV of names in the zone) sent to the
  cluster DNS Service's IPs straight from the burst; its table is recompiled off the forwarding
  thread after a change and swapped in while the engine is parked.
- Everything else sent to the Service goes to this node's own server (bound on the node's
  address): the proxier is given the node itself as the Service's only endpoint instead of the
  Service's EndpointSlices, so conntrack DNATs those queries to the node and reverse-NATs the
  answers.
"""
from __future__ import annotations

import logging

from dataplane.events import ObjectEvent
from .server import DnsService

__all__ = ["NodeDns", "DNS_ATTRS"]

log = logging.getLogger("dataplane.dns")

DNS_ATTRS = ("services", "endpoint_slices", "pods", "namespaces")
DNS_PORT = 53


class NodeDns:
    def __init__(self, settings, node_name: str, node_ips):
        self.service = DnsService(settings)
        self.node_name = node_name
        self.node_ips = tuple(node_ips)
        self.key = tuple(settings.service.split("/", 1))
        self.injected: dict[str, object] = {}     # slice name -> slice given to the proxier
        self.address = None                       # where the server listens, once started

    def start(self) -> None:
        """Serve on the node's first address, port 53; a failure is reported, and only the
        fast path answers (the rest of the queries find no server)."""
        if not self.node_ips:
            log.error("cluster DNS: no node IP to serve on")
            return
        host = str(self.node_ips[0])
        try:
            self.address = self.service.start((host, DNS_PORT))
            log.info("cluster DNS for %s/%s served on %s:%d", *self.key, *self.address)
        except OSError as exc:
            log.error("cluster DNS: cannot serve on %s:%d: %s", host, DNS_PORT, exc.strerror or exc)

    def stop(self) -> None:
        self.service.stop()

    def owns(self, endpoint_slice) -> bool:
        """A slice of the cluster DNS Service: replaced by the node itself for the proxier."""
        return (endpoint_slice.namespace, endpoint_slice.service_name) == self.key

    def record(self, ev: ObjectEvent) -> bool:
        """Feed the zone; True when the event concerns DNS."""
        handler = {"services": self.service.on_service, "endpoint_slices": self.service.on_endpoint_slice,
                   "pods": self.service.on_pod, "namespaces": self.service.on_namespace}.get(ev.attr)
        if handler is None:
            return False
        handler(ev.old, ev.new)
        return True

    def proxier_slices(self) -> list[tuple]:
        """(old, new) changes of the slices that make the node the DNS Service's endpoint."""
        want = {s.name: s for s in self.service.node_endpoint_slices(self.node_name, self.node_ips, DNS_PORT)}
        changes = [(self.injected.get(n), s) for n, s in want.items() if self.injected.get(n) != s]
        changes += [(s, None) for n, s in self.injected.items() if n not in want]
        self.injected = want
        return changes

    def compile(self):
        return self.service.compile_stage_table()
