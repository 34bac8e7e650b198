"""Deterministic address plan of a lab, so Kubernetes objects can name pod IPs in advance.

    node k (1-based)   node IP 192.168.0.(1+k)   pod CIDR 10.244.k.0/24   pod gateway 10.244.k.1
    pod i on node k    10.244.k.(9+i)            (pod-1-1 = 10.244.1.10, pod-2-2 = 10.244.2.11)
    outside world      192.168.0.1 (the nodes' default gateway), server 203.0.113.100
    external client    192.168.0.100

Pod CIDRs are carved from the cluster CIDR in order (index 0 is kept unused, as in the
example configurations, so node k gets subnet k); the allocation is stored in state.json.
"""
from __future__ import annotations

import ipaddress

__all__ = ["CLUSTER_CIDR", "NODE_NET", "GATEWAY_IP", "CLIENT_IP", "OUTSIDE_SERVER_IP", "MAX_NODES",
           "MAX_PODS", "node_ip", "pod_cidrs", "pod_gateway", "pod_ip"]

CLUSTER_CIDR = ipaddress.ip_network("10.244.0.0/16")
NODE_NET = ipaddress.ip_network("192.168.0.0/24")
GATEWAY_IP = ipaddress.ip_address("192.168.0.1")
CLIENT_IP = ipaddress.ip_address("192.168.0.100")
OUTSIDE_SERVER_IP = ipaddress.ip_address("203.0.113.100")
MAX_NODES = 50     # node IPs .2-.51 stay clear of the client's .100
MAX_PODS = 200     # .10-.209 in a /24


def pod_cidrs(nodes: int, cluster: ipaddress.IPv4Network = CLUSTER_CIDR, prefixlen: int = 24):
    """One distinct /prefixlen per node, node k -> subnet k of the cluster CIDR."""
    subnets = cluster.subnets(new_prefix=prefixlen)
    next(subnets)  # subnet 0 unused: node k's CIDR carries k in its third octet
    cidrs = [next(subnets, None) for _ in range(nodes)]
    if None in cidrs:
        raise ValueError(f"{cluster} has no room for {nodes} /{prefixlen} pod CIDRs")
    return cidrs


def node_ip(k: int) -> ipaddress.IPv4Address:
    return NODE_NET.network_address + 1 + k


def pod_gateway(cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return cidr.network_address + 1


def pod_ip(cidr: ipaddress.IPv4Network, i: int) -> ipaddress.IPv4Address:
    return cidr.network_address + 9 + i
