"""Cluster DNS served by the node: the Kubernetes DNS specification from the node's own
Services, EndpointSlices, Pods and Namespaces (zone), a UDP/TCP server with upstream forwarding
and a cache (resolver, server), and the precomputed answers of the fast-path stage (stage)."""
from .server import DnsServer, DnsService
from .zone import Zone

__all__ = ["DnsServer", "DnsService", "Zone"]
