"""Our own object: `dataplane/v1alpha1 DataplaneConfiguration` (node identity, ports, routes)."""
from __future__ import annotations

from dataclasses import dataclass

from .fields import (Invalid, IPAddress, IPNetwork, Obj, dns_subdomain, format_mac, in_range, ip_address,
                     ip_network, mac_address, one_of, unicast_ip)

API_VERSION = "dataplane/v1alpha1"
KIND = "DataplaneConfiguration"


@dataclass(frozen=True)
class Port:
    """A dataplane port (one NIC)."""
    name: str
    mac: bytes                # 6 bytes; source MAC of frames we send out of this port
    index: int                # position in DataplaneConfig.ports; the fast path refers to ports by index
    mtu: int = 1500           # largest L3 packet the port may send
    ifname: str | None = None  # live mode: host interface to attach; None means the same as `name`
    type: str = "afpacket"    # live mode: "afpacket" (existing NIC) or "tap" (create a tap device)
    # Addresses the dataplane owns on this port and answers ARP / neighbour solicitations for
    # (e.g. the pods' gateway address on a pod-facing port).
    addresses: tuple[IPAddress, ...] = ()
    proxy_arp: bool = False   # answer every ARP / NS on this port (the port facing the node's stack)

    def describe(self) -> dict:
        return {"name": self.name, "index": self.index, "mac": format_mac(self.mac), "mtu": self.mtu,
                "ifname": self.ifname or self.name, "type": self.type,
                "addresses": [str(a) for a in self.addresses], "proxyARP": self.proxy_arp}


@dataclass(frozen=True)
class Route:
    """A static route. Without `via` the prefix is on-link; `mac` is the next hop's
    Ethernet address (None: to be resolved by the neighbour table)."""
    prefix: IPNetwork
    port: str
    port_index: int
    via: IPAddress | None = None
    mac: bytes | None = None

    def describe(self) -> dict:
        return {"prefix": str(self.prefix), "port": self.port, "portIndex": self.port_index,
                "via": None if self.via is None else str(self.via),
                "mac": None if self.mac is None else format_mac(self.mac)}


@dataclass(frozen=True)
class DataplaneConfig:
    node_name: str                     # must equal the Node object's name (topology, Local policies)
    node_ips: tuple[IPAddress, ...]    # addresses this node owns: NodePort destinations, SNAT source
    ports: tuple[Port, ...]
    routes: tuple[Route, ...]
    cluster_cidrs: tuple[IPNetwork, ...] = ()  # pod networks; traffic from outside them is masqueraded
    # Pod traffic to these is not SNATed (ip-masq-agent's nonMasqueradeCIDRs); None: the cluster
    # CIDRs plus the node's on-link networks.
    non_masquerade_cidrs: tuple[IPNetwork, ...] | None = None
    service_load_balancing: str = "random"    # backend choice: "random" or "maglev" (consistent)
    conntrack_size: int | None = None        # flow-table entries; None: from kube-proxy's settings
    # Port (a tap into the node's own stack) that packets for the node are delivered to; None:
    # the node's stack sees them on the interface itself and the dataplane leaves them alone.
    local_port: str | None = None

    def describe(self) -> dict:
        return {"nodeName": self.node_name, "nodeIPs": [str(a) for a in self.node_ips],
                "clusterCIDRs": [str(n) for n in self.cluster_cidrs],
                "nonMasqueradeCIDRs": None if self.non_masquerade_cidrs is None
                else [str(n) for n in self.non_masquerade_cidrs],
                "serviceLoadBalancing": self.service_load_balancing,
                "conntrackSize": self.conntrack_size, "localPort": self.local_port,
                "ports": [p.describe() for p in self.ports], "routes": [r.describe() for r in self.routes]}


FIELDS = ("apiVersion", "kind", "nodeName", "nodeIPs", "clusterCIDRs", "nonMasqueradeCIDRs",
          "serviceLoadBalancing", "conntrackSize", "localPort", "ports", "routes")
PORT_FIELDS = ("name", "mac", "mtu", "ifname", "type", "addresses", "proxyARP")
ROUTE_FIELDS = ("prefix", "port", "via", "mac")


def _port(o: Obj) -> Port:
    return Port(
        name=o.get("name", str, required=True, parse=_port_name),
        mac=o.get("mac", str, required=True, parse=mac_address),
        index=o.path[-1],
        mtu=o.get("mtu", int, 1500, parse=in_range(68, 65535)),
        ifname=o.get("ifname", str, parse=_port_name),
        type=o.get("type", str, "afpacket", parse=one_of("afpacket", "tap")),
        addresses=o.scalars("addresses", str, unicast_ip, unique="address"),
        proxy_arp=o.get("proxyARP", bool, False))


def _port_name(value: str) -> str:
    # Linux interface names: at most 15 bytes, no '/', whitespace or ':'.
    if not value or len(value.encode()) > 15 or any(c in value for c in "/: \t\n"):
        raise ValueError(f"must be an interface name (1-15 characters, no '/', ':' or spaces), got {value!r}")
    return value


def parse(o: Obj) -> DataplaneConfig:
    strict_cidr = ip_network(strict=True)
    node_name = o.get("nodeName", str, required=True, parse=dns_subdomain)
    node_ips = o.scalars("nodeIPs", str, unicast_ip, unique="address")
    cluster_cidrs = o.scalars("clusterCIDRs", str, strict_cidr, unique="CIDR")
    if not o.get("ports", list, []):
        raise Invalid(o.at("ports"), "at least one port is required")
    ports = o.objects("ports", PORT_FIELDS, _port, unique={"name": lambda p: p.name})
    port_index = {p.name: p.index for p in ports}

    def route(r: Obj) -> Route:
        prefix = r.get("prefix", str, required=True, parse=strict_cidr)
        port = r.get("port", str, required=True)
        if port not in port_index:
            raise Invalid(r.at("port"), f"no such port {port!r} (ports: {', '.join(sorted(port_index)) or 'none valid'})")
        via = r.get("via", str, parse=ip_address)
        if via is not None and via.version != prefix.version:
            raise Invalid(r.at("via"), f"IPv{via.version} next hop {via} for IPv{prefix.version} prefix {prefix}")
        return Route(prefix, port, port_index[port], via, r.get("mac", str, parse=mac_address))

    routes = o.objects("routes", ROUTE_FIELDS, route, unique={"prefix": lambda r: r.prefix})
    non_masq = (o.scalars("nonMasqueradeCIDRs", str, strict_cidr, unique="CIDR")
                if o.get("nonMasqueradeCIDRs", list) is not None else None)
    local_port = o.get("localPort", str)
    if local_port is not None and local_port not in port_index:
        raise Invalid(o.at("localPort"), f"no such port {local_port!r}")
    return DataplaneConfig(
        node_name, node_ips, ports, routes, cluster_cidrs, non_masq,
        o.get("serviceLoadBalancing", str, "random", parse=one_of("random", "maglev")),
        o.get("conntrackSize", int, parse=in_range(1, 1 << 30)), local_port)

