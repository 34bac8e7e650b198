"""Our own object: `dataplane/v1alpha1 DataplaneConfiguration` (node identity, ports, routes)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable

from .fields import (Invalid, IPAddress, IPNetwork, Obj, dns_label, dns_subdomain, format_mac, in_range, ip_address,
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


def vtep_mac(ip: IPAddress) -> bytes:
    """A VTEP's inner MAC, derived from its IPv4 address (02:00:a.b.c.d, locally administered)
    so that both ends of a tunnel agree without exchanging it (flannel publishes it instead)."""
    return b"\x02\x00" + ip.packed


@dataclass(frozen=True)
class Vxlan:
    """Encapsulation of a route's packets towards a remote VTEP (RFC 7348, flannel's vxlan)."""
    vni: int
    remote: ipaddress.IPv4Address
    port: int = 4789
    vtep_mac: bytes | None = None   # the remote VTEP's inner MAC; None: vtep_mac(remote)

    def describe(self) -> dict:
        return {"vni": self.vni, "remote": str(self.remote), "port": self.port,
                "vtepMAC": format_mac(self.vtep_mac or vtep_mac(self.remote))}


@dataclass(frozen=True)
class Route:
    """A static route. Without `via` the prefix is on-link; `mac` is the next hop's
    Ethernet address (None: to be resolved by the neighbour table). A `vxlan` route has no port,
    via or mac: its packets are encapsulated and leave through the route to the remote VTEP."""
    prefix: IPNetwork
    port: str | None
    port_index: int | None
    via: IPAddress | None = None
    mac: bytes | None = None
    vxlan: Vxlan | None = None

    def describe(self) -> dict:
        return {"prefix": str(self.prefix), "port": self.port, "portIndex": self.port_index,
                "via": None if self.via is None else str(self.via),
                "mac": None if self.mac is None else format_mac(self.mac),
                "vxlan": None if self.vxlan is None else self.vxlan.describe()}


@dataclass(frozen=True)
class DnsConfig:
    """Cluster DNS served by the node (the `dns:` section; `dataplane dns` takes the same as flags)."""
    cluster_domain: str = "cluster.local"
    pods: str = "disabled"                    # CoreDNS `pods`: disabled, insecure or verified
    endpoint_pod_names: bool = False          # CoreDNS `endpoint_pod_names`
    ttl: int = 5
    upstreams: tuple[tuple[IPAddress, int], ...] = ()  # empty: the node's resolv.conf
    server_ips: tuple[IPAddress, ...] = ()    # the DNS server's addresses (NS records)
    service: str = "kube-system/kube-dns"     # the cluster DNS Service the node answers for

    def describe(self) -> dict:
        return {"clusterDomain": self.cluster_domain, "pods": self.pods, "endpointPodNames": self.endpoint_pod_names,
                "ttl": self.ttl, "upstreams": [format_host_port(a, p) for a, p in self.upstreams],
                "serverIPs": [str(a) for a in self.server_ips], "service": self.service}


def host_port(default_port: int, lowest: int = 1) -> Callable[[str], tuple[IPAddress, int]]:
    """ADDR[:PORT], IPv6 as [ADDR]:PORT or a bare ADDR; ports from `lowest` (0: pick one) to 65535."""
    def parse(value: str) -> tuple[IPAddress, int]:
        host, port = value, default_port
        if value.startswith("["):
            host, sep, rest = value[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"must be ADDR, ADDR:PORT or [IPv6]:PORT, got {value!r}")
            if rest:
                port = _port_number(rest[1:], value, lowest)
        elif value.count(":") == 1:
            host, _, rest = value.partition(":")
            port = _port_number(rest, value, lowest)
        return ip_address(host), port
    return parse


def _port_number(text: str, value: str, lowest: int) -> int:
    if not text.isdigit() or not lowest <= int(text) <= 65535:
        raise ValueError(f"port must be {lowest}-65535 in {value!r}")
    return int(text)


def format_host_port(addr: IPAddress, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def dns_domain(value: str) -> str:
    """A cluster domain such as cluster.local (lower-cased, no trailing dot)."""
    domain = value.lower().rstrip(".")
    return dns_subdomain(domain)


def namespaced_name(value: str) -> str:
    ns, sep, name = value.partition("/")
    if not sep:
        raise ValueError(f"must be NAMESPACE/NAME, got {value!r}")
    dns_label(ns), dns_label(name)
    return value


DNS_FIELDS = ("clusterDomain", "pods", "endpointPodNames", "ttl", "upstreams", "serverIPs", "service")


def parse_dns(o: Obj) -> DnsConfig:
    return DnsConfig(
        o.get("clusterDomain", str, "cluster.local", parse=dns_domain),
        o.get("pods", str, "disabled", parse=one_of("disabled", "insecure", "verified")),
        o.get("endpointPodNames", bool, False),
        o.get("ttl", int, 5, parse=in_range(0, 3600)),
        o.scalars("upstreams", str, host_port(53), unique="upstream"),
        o.scalars("serverIPs", str, unicast_ip, unique="address"),
        o.get("service", str, "kube-system/kube-dns", parse=namespaced_name))


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
    dns: DnsConfig | None = None             # None: the node serves no cluster DNS

    def describe(self) -> dict:
        return {"nodeName": self.node_name, "nodeIPs": [str(a) for a in self.node_ips],
                "clusterCIDRs": [str(n) for n in self.cluster_cidrs],
                "nonMasqueradeCIDRs": None if self.non_masquerade_cidrs is None
                else [str(n) for n in self.non_masquerade_cidrs],
                "serviceLoadBalancing": self.service_load_balancing,
                "conntrackSize": self.conntrack_size, "localPort": self.local_port,
                "ports": [p.describe() for p in self.ports], "routes": [r.describe() for r in self.routes],
                "dns": self.dns and self.dns.describe()}


FIELDS = ("apiVersion", "kind", "nodeName", "nodeIPs", "clusterCIDRs", "nonMasqueradeCIDRs",
          "serviceLoadBalancing", "conntrackSize", "localPort", "ports", "routes", "dns")
PORT_FIELDS = ("name", "mac", "mtu", "ifname", "type", "addresses", "proxyARP")
ROUTE_FIELDS = ("prefix", "port", "via", "mac", "vxlan")
VXLAN_FIELDS = ("vni", "remote", "port", "vtepMAC")


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
        tunnel = r.obj("vxlan", VXLAN_FIELDS)
        if tunnel is not None:
            for key in ("port", "via", "mac"):
                if r.has(key):
                    raise Invalid(r.at(key), "not allowed with vxlan (the encapsulated packet "
                                  "follows the route to the remote VTEP)")
            return Route(prefix, None, None, vxlan=_vxlan(tunnel))
        port = r.get("port", str, required=True)
        if port not in port_index:
            raise Invalid(r.at("port"), f"no such port {port!r} (ports: {', '.join(sorted(port_index)) or 'none valid'})")
        via = r.get("via", str, parse=ip_address)
        if via is not None and via.version != prefix.version:
            raise Invalid(r.at("via"), f"IPv{via.version} next hop {via} for IPv{prefix.version} prefix {prefix}")
        return Route(prefix, port, port_index[port], via, r.get("mac", str, parse=mac_address))

    routes = o.objects("routes", ROUTE_FIELDS, route, unique={"prefix": lambda r: r.prefix})
    _check_tunnels(o, routes, node_ips)
    non_masq = (o.scalars("nonMasqueradeCIDRs", str, strict_cidr, unique="CIDR")
                if o.get("nonMasqueradeCIDRs", list) is not None else None)
    local_port = o.get("localPort", str)
    if local_port is not None and local_port not in port_index:
        raise Invalid(o.at("localPort"), f"no such port {local_port!r}")
    return DataplaneConfig(
        node_name, node_ips, ports, routes, cluster_cidrs, non_masq,
        o.get("serviceLoadBalancing", str, "random", parse=one_of("random", "maglev")),
        o.get("conntrackSize", int, parse=in_range(1, 1 << 30)), local_port,
        parse_dns(o.obj("dns", DNS_FIELDS)) if o.has("dns") else None)



def _vxlan(o: Obj) -> Vxlan:
    remote = o.get("remote", str, required=True, parse=unicast_ip)
    if remote.version != 4:
        raise Invalid(o.at("remote"), f"must be an IPv4 address (VXLAN over IPv4), got {remote}")
    return Vxlan(o.get("vni", int, required=True, parse=in_range(0, (1 << 24) - 1)), remote,
                 o.get("port", int, 4789, parse=in_range(1, 65535)),
                 o.get("vtepMAC", str, parse=mac_address))


def _check_tunnels(o: Obj, routes: tuple[Route, ...], node_ips) -> None:
    """Each tunnel needs our IPv4 VTEP address and a plain route to its remote VTEP (the route
    stage forwards the outer packet there); a remote reached only through a tunnel would loop."""
    for k, r in enumerate(routes):
        if r.vxlan is None:
            continue
        at = (*o.at("routes"), k, "vxlan")
        if not any(a.version == 4 for a in node_ips):
            raise Invalid(at, "needs an IPv4 address in nodeIPs (the local VTEP)")
        remote = r.vxlan.remote
        if remote in node_ips:
            raise Invalid((*at, "remote"), f"{remote} is this node's own address")
        best = max((c for c in routes if c.prefix.version == 4 and remote in c.prefix),
                   key=lambda c: c.prefix.prefixlen, default=None)
        if best is None or best.vxlan is not None:
            raise Invalid((*at, "remote"), f"no route to {remote} other than through a tunnel")
