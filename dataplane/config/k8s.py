"""Kubernetes objects in their API shape, reduced to what a node proxy uses.

Service, EndpointSlice and Node are read as the API server (and `kubectl get -o
yaml`) prints them: every documented field is accepted, fields the proxy
interprets are validated like the API server does, unknown fields are errors.
Status sections are read leniently (newer servers add status fields), except the
parts we use. KubeProxyConfiguration is strict at the top level, as in kube-proxy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .fields import (Invalid, IPAddress, IPNetwork, Obj, dns1035_label, dns_label, dns_subdomain, go_duration,
                     iana_svc_name, in_range, ip_address, ip_network, non_special_ip, one_of, port_number)

OBJECT_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")
METADATA_FIELDS = (
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
PROTOCOLS = ("TCP", "UDP", "SCTP")
IP_FAMILIES = ("IPv4", "IPv6")
_loose_cidr = ip_network(strict=False)  # the API server parses with Go's ParseCIDR: host bits allowed


def _family(addr: IPAddress | IPNetwork) -> str:
    return f"IPv{addr.version}"


def _metadata(o: Obj, namespaced: bool, name: Callable[[str], str]) -> tuple[str | None, str, dict[str, str]]:
    m = o.obj("metadata", METADATA_FIELDS)
    if m is None:
        raise Invalid(o.at("metadata"), "required field is missing")
    labels = m.strings("labels")
    m.strings("annotations")
    namespace = m.get("namespace", str, "default", parse=dns_label) if namespaced else None
    return namespace, m.get("name", str, required=True, parse=name), labels


# ---- Service ----

@dataclass(frozen=True)
class ServicePort:
    name: str                 # "" only when the Service has a single port
    protocol: str             # TCP, UDP or SCTP
    port: int
    target_port: int | str    # number, or a container port name resolved through EndpointSlice ports
    node_port: int | None = None
    app_protocol: str | None = None

    def describe(self) -> dict:
        return {"name": self.name, "protocol": self.protocol, "port": self.port, "targetPort": self.target_port,
                "nodePort": self.node_port}


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    type: str = "ClusterIP"                          # ClusterIP, NodePort, LoadBalancer or ExternalName
    cluster_ips: tuple[IPAddress, ...] = ()         # primary first; empty if headless or not allocated
    headless: bool = False                          # clusterIP: None
    ip_families: tuple[str, ...] = ()               # "IPv4"/"IPv6", in cluster_ips order
    ports: tuple[ServicePort, ...] = ()
    external_ips: tuple[IPAddress, ...] = ()
    load_balancer_ips: tuple[IPAddress, ...] = ()   # status.loadBalancer.ingress[].ip, except ipMode Proxy
    load_balancer_source_ranges: tuple[IPNetwork, ...] = ()  # empty: allow all
    session_affinity: str = "None"                  # None or ClientIP
    session_affinity_timeout: int | None = None     # seconds; set only for ClientIP
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    health_check_node_port: int | None = None
    publish_not_ready_addresses: bool = False
    allocate_load_balancer_node_ports: bool = True
    external_name: str | None = None

    @property
    def ignored(self) -> str | None:
        """Why kube-proxy does not program this Service (None: it does)."""
        if self.type == "ExternalName":
            return "type ExternalName is served by DNS only"
        if self.headless:
            return "headless (clusterIP: None)"
        if not self.cluster_ips:
            return "no cluster IP allocated (spec.clusterIP unset)"
        return None

    def describe(self) -> dict:
        d = {"name": f"{self.namespace}/{self.name}", "type": self.type,
             "clusterIPs": [str(a) for a in self.cluster_ips], "ipFamilies": list(self.ip_families),
             "ports": [p.describe() for p in self.ports]}
        for key, value in (("externalIPs", self.external_ips), ("loadBalancerIPs", self.load_balancer_ips),
                           ("loadBalancerSourceRanges", self.load_balancer_source_ranges)):
            if value:
                d[key] = [str(v) for v in value]
        d |= {"sessionAffinity": self.session_affinity, "externalTrafficPolicy": self.external_traffic_policy,
              "internalTrafficPolicy": self.internal_traffic_policy}
        if self.session_affinity_timeout is not None:
            d["sessionAffinityTimeoutSeconds"] = self.session_affinity_timeout
        if self.health_check_node_port is not None:
            d["healthCheckNodePort"] = self.health_check_node_port
        if self.publish_not_ready_addresses:
            d["publishNotReadyAddresses"] = True
        if self.ignored:
            d["ignored"] = self.ignored
        return d


SERVICE_SPEC_FIELDS = (
    "ports", "selector", "clusterIP", "clusterIPs", "type", "externalIPs", "sessionAffinity", "loadBalancerIP",
    "loadBalancerSourceRanges", "externalName", "externalTrafficPolicy", "healthCheckNodePort",
    "publishNotReadyAddresses", "sessionAffinityConfig", "ipFamilies", "ipFamilyPolicy",
    "allocateLoadBalancerNodePorts", "loadBalancerClass", "internalTrafficPolicy", "trafficDistribution")
SERVICE_PORT_FIELDS = ("name", "protocol", "appProtocol", "port", "targetPort", "nodePort")


def _target_port(o: Obj, port: int) -> int | str:
    value = o.data.get("targetPort")
    if value is None or value == 0:  # IntOrString zero value: defaults to `port`
        return port
    if isinstance(value, str):
        return o.get("targetPort", str, parse=iana_svc_name)
    return o.get("targetPort", int, parse=port_number)


def _cluster_ips(spec: Obj, type_: str) -> tuple[tuple[IPAddress, ...], bool]:
    """(cluster IPs, headless) from spec.clusterIPs, which wins over the legacy spec.clusterIP."""
    single = spec.get("clusterIP", str, "")
    values = list(spec.scalars("clusterIPs", str))
    if single and values and values[0] != single:
        raise Invalid(spec.at("clusterIPs") + (0,), f"must match spec.clusterIP {single!r}, got {values[0]!r}")
    if values:
        paths = [spec.at("clusterIPs") + (i,) for i in range(len(values))]
    else:
        values, paths = ([single], [spec.at("clusterIP")]) if single else ([], [])
    if "None" in values:
        if values != ["None"]:
            raise Invalid(spec.at("clusterIPs"), "\"None\" (headless) must be the only value")
        if type_ != "ClusterIP":
            raise Invalid(paths[0], f"headless (None) is only valid for type ClusterIP, not {type_}")
        return (), True
    if type_ == "ExternalName" and values:
        raise Invalid(paths[0], "must not be set for type ExternalName")
    ips = []
    for path, value in zip(paths, values):
        try:
            # No ServiceCIDR can hand out 0.0.0.0, broadcast, multicast, loopback or link-local.
            ips.append(non_special_ip(value))
        except ValueError as e:
            raise Invalid(path, str(e)) from None
    if len(ips) > 2 or (len(ips) == 2 and ips[0].version == ips[1].version):
        raise Invalid(spec.at("clusterIPs"), "at most one IPv4 and one IPv6 address (dual-stack)")
    return tuple(ips), False


def parse_service(o: Obj) -> Service:
    namespace, name, _ = _metadata(o, True, dns1035_label)
    spec = o.section("spec", SERVICE_SPEC_FIELDS)
    type_ = spec.get("type", str, "ClusterIP", parse=one_of("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"))
    external = type_ in ("NodePort", "LoadBalancer")
    cluster_ips, headless = _cluster_ips(spec, type_)

    families = spec.scalars("ipFamilies", str, one_of(*IP_FAMILIES), unique="family")
    for i, (family, ip) in enumerate(zip(families, cluster_ips)):
        if _family(ip) != family:
            raise Invalid(spec.at("clusterIPs") + (i,), f"{ip} is not {family} as listed in spec.ipFamilies[{i}]")
    spec.get("ipFamilyPolicy", str, parse=one_of("SingleStack", "PreferDualStack", "RequireDualStack"))

    def port(p: Obj) -> ServicePort:
        number = p.get("port", int, required=True, parse=port_number)
        node_port = p.get("nodePort", int, 0, parse=lambda v: v and port_number(v)) or None  # 0: allocate one
        if node_port is not None and not external:
            raise Invalid(p.at("nodePort"), f"may not be used when type is {type_}")
        return ServicePort(p.get("name", str, "", parse=lambda v: v and dns_label(v)),
                           p.get("protocol", str, "TCP", parse=one_of(*PROTOCOLS)), number,
                           _target_port(p, number), node_port, p.get("appProtocol", str))

    ports = spec.objects("ports", SERVICE_PORT_FIELDS, port, unique={
        "name": lambda p: p.name or None,
        "port": lambda p: (p.port, p.protocol),
        "nodePort": lambda p: (p.node_port, p.protocol) if p.node_port else None})
    if len(ports) > 1:
        for i, p in enumerate(ports):
            if not p.name:
                spec.report(spec.at("ports") + (i, "name"), "required when the Service has more than one port")
    if not spec.get("ports", list) and type_ != "ExternalName" and not headless:
        raise Invalid(spec.at("ports"), "at least one port is required")

    affinity = spec.get("sessionAffinity", str, "None", parse=one_of("None", "ClientIP"))
    timeout = None
    affinity_config = spec.obj("sessionAffinityConfig", ("clientIP",))
    client_ip = affinity_config and affinity_config.obj("clientIP", ("timeoutSeconds",))
    if client_ip is not None and affinity == "None":
        raise Invalid(client_ip.path, "must not be set when sessionAffinity is None")
    if affinity == "ClientIP":
        timeout = client_ip.get("timeoutSeconds", int, 10800, parse=in_range(1, 86400)) if client_ip else 10800

    etp = spec.get("externalTrafficPolicy", str, "Cluster", parse=one_of("Cluster", "Local"))
    hc_port = spec.get("healthCheckNodePort", int, 0, parse=in_range(0, 65535)) or None
    if hc_port and not (type_ == "LoadBalancer" and etp == "Local"):
        raise Invalid(spec.at("healthCheckNodePort"), "only valid for type LoadBalancer with externalTrafficPolicy Local")
    if spec.has("allocateLoadBalancerNodePorts") and type_ != "LoadBalancer":
        raise Invalid(spec.at("allocateLoadBalancerNodePorts"), "may only be used when type is LoadBalancer")
    if spec.has("loadBalancerSourceRanges") and type_ != "LoadBalancer":
        raise Invalid(spec.at("loadBalancerSourceRanges"), "may only be used when type is LoadBalancer")
    spec.strings("selector")
    spec.get("loadBalancerIP", str, parse=lambda v: v and ip_address(v))
    for key in ("loadBalancerClass", "trafficDistribution"):
        spec.get(key, str)
    # A DNS name; the API allows one trailing dot (fully qualified).
    external_name = spec.get("externalName", str, parse=lambda v: v and dns_subdomain(v.removesuffix(".")) and v)
    if type_ == "ExternalName" and not external_name:
        raise Invalid(spec.at("externalName"), "required for type ExternalName")

    return Service(
        namespace, name, type_, cluster_ips, headless,
        tuple(families) or tuple(_family(ip) for ip in cluster_ips), ports,
        spec.scalars("externalIPs", str, non_special_ip, unique="address"),
        _load_balancer_ips(o.section("status")),
        spec.scalars("loadBalancerSourceRanges", str, _loose_cidr),
        affinity, timeout, etp,
        spec.get("internalTrafficPolicy", str, "Cluster", parse=one_of("Cluster", "Local")),
        hc_port,
        spec.get("publishNotReadyAddresses", bool, False),
        spec.get("allocateLoadBalancerNodePorts", bool, True),
        external_name or None)


def _load_balancer_ips(status: Obj) -> tuple[IPAddress, ...]:
    lb = status.section("loadBalancer")

    def ingress(i: Obj) -> IPAddress | None:
        # ipMode Proxy: the load balancer proxies to node ports itself and the VIP
        # must not be captured on the node (KEP-1860); kube-proxy skips it too.
        mode = i.get("ipMode", str, "VIP", parse=one_of("VIP", "Proxy"))
        ip = i.get("ip", str, parse=ip_address)
        return ip if mode == "VIP" else None

    return tuple(ip for ip in lb.objects("ingress", None, ingress) if ip is not None)


# ---- EndpointSlice ----

@dataclass(frozen=True)
class EndpointPort:
    name: str                  # matches ServicePort.name ("" for an unnamed port)
    protocol: str
    port: int | None           # None: "all ports" (API nil)
    app_protocol: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """One backend. Conditions already have the API's nil semantics applied:
    ready nil = true, serving nil = ready, terminating nil = false."""
    addresses: tuple[IPAddress | str, ...]  # IPs; host names for FQDN slices. The proxy uses the first.
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    hostname: str | None = None
    node_name: str | None = None
    zone: str | None = None
    hint_zones: tuple[str, ...] = ()    # hints.forZones[].name (topology-aware routing)
    hint_nodes: tuple[str, ...] = ()    # hints.forNodes[].name

    def describe(self) -> dict:
        d = {"addresses": [str(a) for a in self.addresses], "ready": self.ready, "serving": self.serving,
             "terminating": self.terminating}
        d |= {k: v for k, v in (("nodeName", self.node_name), ("zone", self.zone)) if v}
        if self.hint_zones or self.hint_nodes:
            d["hints"] = {"forZones": list(self.hint_zones), "forNodes": list(self.hint_nodes)}
        return d


@dataclass(frozen=True)
class EndpointSlice:
    namespace: str
    name: str
    service_name: str | None     # label kubernetes.io/service-name
    address_type: str            # IPv4, IPv6 or FQDN
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()

    @property
    def ignored(self) -> str | None:
        """Why kube-proxy does not use this slice (None: it does)."""
        if self.service_name is None:
            return f"no {SERVICE_NAME_LABEL} label"
        if self.address_type == "FQDN":
            return "addressType FQDN"
        return None

    def describe(self) -> dict:
        d = {"name": f"{self.namespace}/{self.name}", "service": self.service_name, "addressType": self.address_type,
             "ports": [{"name": p.name, "protocol": p.protocol, "port": p.port} for p in self.ports],
             "endpoints": [e.describe() for e in self.endpoints]}
        if self.ignored:
            d["ignored"] = self.ignored
        return d


ENDPOINTSLICE_FIELDS = ("apiVersion", "kind", "metadata", "addressType", "endpoints", "ports")
ENDPOINT_FIELDS = ("addresses", "conditions", "hostname", "targetRef", "deprecatedTopology", "nodeName", "zone", "hints")
OBJECT_REFERENCE_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
_ENDPOINT_KEYS, _REFERENCE_KEYS = frozenset(ENDPOINT_FIELDS), frozenset(OBJECT_REFERENCE_FIELDS)
_CONDITION_KEYS = frozenset(("ready", "serving", "terminating"))


def parse_endpoint_slice(o: Obj) -> EndpointSlice:
    namespace, name, labels = _metadata(o, True, dns_subdomain)
    address_type = o.get("addressType", str, required=True, parse=one_of("IPv4", "IPv6", "FQDN"))

    def address(value: str) -> IPAddress | str:
        if address_type == "FQDN":
            return dns_subdomain(value)
        ip = non_special_ip(value)
        if _family(ip) != address_type:
            raise ValueError(f"must be an {address_type} address (addressType), got {value!r}")
        return ip

    def fast_endpoint(e) -> Endpoint | None:
        """The usual shape of an endpoint without the per-field machinery (it dominates loading
        100k Services); None sends anything unusual down the checked path, which reports it."""
        if type(e) is not dict or not e.keys() <= _ENDPOINT_KEYS or e.get("hints") is not None \
                or e.get("deprecatedTopology") is not None:
            return None
        addrs, cond, ref = e.get("addresses"), e.get("conditions") or {}, e.get("targetRef")
        node, hostname, zone = e.get("nodeName"), e.get("hostname"), e.get("zone")
        if (type(addrs) is not list or not 1 <= len(addrs) <= 100 or type(cond) is not dict
                or not cond.keys() <= _CONDITION_KEYS or any(v is not None and type(v) is not bool for v in cond.values())
                or (ref is not None and (type(ref) is not dict or not ref.keys() <= _REFERENCE_KEYS))
                or any(v is not None and type(v) is not str for v in (node, hostname, zone))):
            return None
        try:
            parsed = tuple(address(a) for a in addrs)
            node = None if node is None else dns_subdomain(node)
            hostname = None if hostname is None else dns_label(hostname)
        except (ValueError, TypeError):
            return None
        ready = cond.get("ready")
        ready = True if ready is None else ready
        serving = cond.get("serving")
        return Endpoint(parsed, ready, ready if serving is None else serving, cond.get("terminating") or False,
                        hostname, node, zone)

    def endpoint(e: Obj) -> Endpoint:
        addresses = e.scalars("addresses", str, address)
        if not e.get("addresses", list) or len(e.data["addresses"]) > 100:
            raise Invalid(e.at("addresses"), "must list 1-100 addresses")
        cond = e.section("conditions", ("ready", "serving", "terminating"))
        ready = cond.get("ready", bool, True)
        hints = e.obj("hints", ("forZones", "forNodes"))
        e.obj("targetRef", OBJECT_REFERENCE_FIELDS)
        e.strings("deprecatedTopology")
        return Endpoint(
            addresses, ready, cond.get("serving", bool, ready), cond.get("terminating", bool, False),
            e.get("hostname", str, parse=dns_label), e.get("nodeName", str, parse=dns_subdomain), e.get("zone", str),
            hints.objects("forZones", ("name",), lambda h: h.get("name", str, required=True)) if hints else (),
            hints.objects("forNodes", ("name",), lambda h: h.get("name", str, required=True)) if hints else ())

    def port(p: Obj) -> EndpointPort:
        return EndpointPort(p.get("name", str, "", parse=lambda v: v and dns_label(v)),
                            p.get("protocol", str, "TCP", parse=one_of(*PROTOCOLS)),
                            p.get("port", int, parse=port_number), p.get("appProtocol", str))

    raw = o.get("endpoints", list, [])
    fast = [fast_endpoint(e) for e in raw]
    if None in fast:
        endpoints = o.objects("endpoints", ENDPOINT_FIELDS, endpoint)
    else:
        endpoints = tuple(fast)
    if len(o.get("endpoints", list, [])) > 1000:
        raise Invalid(o.at("endpoints"), "at most 1000 endpoints per slice")
    ports = o.objects("ports", ("name", "protocol", "port", "appProtocol"), port, unique={"name": lambda p: p.name})
    return EndpointSlice(namespace, name, labels.get(SERVICE_NAME_LABEL), address_type, endpoints, ports)


# ---- Node ----

@dataclass(frozen=True)
class Node:
    name: str
    pod_cidrs: tuple[IPNetwork, ...] = ()        # spec.podCIDRs (or podCIDR), primary first
    internal_ips: tuple[IPAddress, ...] = ()     # status.addresses type InternalIP
    external_ips: tuple[IPAddress, ...] = ()     # status.addresses type ExternalIP
    hostname: str | None = None                  # status.addresses type Hostname
    zone: str | None = None                      # label topology.kubernetes.io/zone (topology hints)
    taints: tuple[str, ...] = ()                 # spec.taints[].key (health: ToBeDeletedByClusterAutoscaler)
    deleting: bool = False                       # metadata.deletionTimestamp is set

    def describe(self) -> dict:
        return {"name": self.name, "podCIDRs": [str(c) for c in self.pod_cidrs],
                "internalIPs": [str(a) for a in self.internal_ips],
                "externalIPs": [str(a) for a in self.external_ips], "hostname": self.hostname, "zone": self.zone}


NODE_SPEC_FIELDS = ("podCIDR", "podCIDRs", "providerID", "unschedulable", "taints", "configSource", "externalID")
NODE_ADDRESS_TYPES = ("Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS")


def parse_node(o: Obj) -> Node:
    _, name, labels = _metadata(o, False, dns_subdomain)
    spec = o.section("spec", NODE_SPEC_FIELDS)
    single = spec.get("podCIDR", str, "", parse=lambda v: v and _loose_cidr(v))
    cidrs = spec.scalars("podCIDRs", str, _loose_cidr, unique="CIDR") or ((single,) if single else ())
    if single and cidrs[0] != single:
        raise Invalid(spec.at("podCIDRs") + (0,), f"must match spec.podCIDR {str(single)!r}")
    if len(cidrs) > 2 or (len(cidrs) == 2 and cidrs[0].version == cidrs[1].version):
        raise Invalid(spec.at("podCIDRs"), "at most one IPv4 and one IPv6 CIDR (dual-stack)")

    def address(a: Obj) -> tuple[str, IPAddress | str]:
        type_ = a.get("type", str, required=True, parse=one_of(*NODE_ADDRESS_TYPES))
        value = a.get("address", str, required=True, parse=ip_address if type_.endswith("IP") else None)
        return type_, value

    addresses = o.section("status").objects("addresses", ("type", "address"), address)
    internal, external, hostnames = ([v for k, v in addresses if k == t] for t in ("InternalIP", "ExternalIP", "Hostname"))
    taints = spec.objects("taints", ("key", "value", "effect", "timeAdded"),
                          lambda t: t.get("key", str, required=True))
    return Node(name, cidrs, tuple(internal), tuple(external), next(iter(hostnames), None), labels.get(ZONE_LABEL),
                taints, o.section("metadata").has("deletionTimestamp"))


# ---- ServiceCIDR ----

@dataclass(frozen=True)
class ServiceCIDR:
    """networking.k8s.io ServiceCIDR: ranges ClusterIPs are allocated from (one per family)."""
    name: str
    cidrs: tuple[IPNetwork, ...]

    def describe(self) -> dict:
        return {"name": self.name, "cidrs": [str(c) for c in self.cidrs]}


def parse_service_cidr(o: Obj) -> ServiceCIDR:
    _, name, _ = _metadata(o, False, dns_subdomain)
    spec = o.section("spec", ("cidrs",))
    # The API takes canonical CIDRs only (ValidateServiceCIDR: no host bits).
    cidrs = spec.scalars("cidrs", str, ip_network(strict=True), unique="CIDR")
    if not 1 <= len(cidrs) <= 2 or (len(cidrs) == 2 and cidrs[0].version == cidrs[1].version):
        raise Invalid(spec.at("cidrs"), "must list one CIDR, or one IPv4 and one IPv6 CIDR (dual-stack)")
    o.section("status")   # conditions: written by the API server, not used by a proxy
    return ServiceCIDR(name, cidrs)


# ---- KubeProxyConfiguration ----
#
# Decoded as kube-proxy's loadConfig does (cmd/kube-proxy/app/server.go): strictly first; a
# strict-only error (unknown or duplicate field, e.g. udpIdleTimeout or conntrack.max left by
# kubeadm and kind) falls back to lenient decoding with a warning; type errors and values that
# fail pkg/proxy/apis/config/validation are errors. Defaults are v1alpha1/defaults.go.

@dataclass(frozen=True)
class Conntrack:
    """kube-proxy's conntrack settings; defaults are kube-proxy's. Times in seconds."""
    max_per_core: int = 32768
    min: int = 131072
    tcp_established_timeout: float = 86400.0
    tcp_close_wait_timeout: float = 3600.0
    tcp_be_liberal: bool = False
    udp_timeout: float | None = None          # None (or 0 in the file): keep the dataplane's default
    udp_stream_timeout: float | None = None


@dataclass(frozen=True)
class ClientConnection:
    """componentbaseconfig ClientConnectionConfiguration with kube-proxy's defaults."""
    kubeconfig: str | None = None             # None: --kubeconfig, else in-cluster config
    qps: float = 5.0
    burst: int = 10
    content_type: str = "application/vnd.kubernetes.protobuf"
    accept_content_types: str = ""


@dataclass(frozen=True)
class DetectLocal:
    bridge_interface: str = ""
    interface_name_prefix: str = ""
    cluster_cidrs: tuple[IPNetwork, ...] = ()   # clusterCIDR (v1alpha1 keeps it at the top level)


@dataclass(frozen=True)
class Logging:
    verbosity: int | None = None              # logging.verbosity (klog -v)
    format: str = "text"


DETECT_LOCAL_MODES = ("ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix")
HEALTHZ_PORT, METRICS_PORT = 10256, 10249


@dataclass(frozen=True)
class KubeProxyConfig:
    hostname_override: str | None = None      # this node's name
    cluster_cidrs: tuple[IPNetwork, ...] = ()  # clusterCIDR, comma-separated in the file
    node_port_addresses: tuple[IPNetwork, ...] = ()  # CIDRs; empty and not primary: see node_port_primary
    node_port_primary: bool = True            # [primary] or unset (nftables-mode default): primary IPs only
    masquerade_all: bool = False
    mode: str = ""                            # accepted for compatibility; this dataplane replaces all modes
    conntrack: Conntrack = Conntrack()
    client_connection: ClientConnection = ClientConnection()
    config_sync_period: float = 900.0         # seconds (informer resync)
    sync_period: float = 30.0                 # seconds, from the section `mode` selects
    min_sync_period: float | None = None      # seconds; None: unset (kube-proxy's default is 1 s)
    bind_address: str = "0.0.0.0"
    healthz_bind_address: str = f"0.0.0.0:{HEALTHZ_PORT}"   # "": disabled
    metrics_bind_address: str = f"127.0.0.1:{METRICS_PORT}"
    bind_address_hard_fail: bool = False
    detect_local_mode: str = "ClusterCIDR"
    detect_local: DetectLocal = DetectLocal()
    logging: Logging = Logging()
    feature_gates: tuple[tuple[str, bool], ...] = ()

    def describe(self) -> dict:
        c, cc, dl = self.conntrack, self.client_connection, self.detect_local
        return {"hostnameOverride": self.hostname_override, "clusterCIDRs": [str(n) for n in self.cluster_cidrs],
                "nodePortAddresses": ["primary"] if self.node_port_primary else [str(n) for n in self.node_port_addresses],
                "masqueradeAll": self.masquerade_all, "mode": self.mode,
                "clientConnection": {"kubeconfig": cc.kubeconfig, "qps": cc.qps, "burst": cc.burst,
                                     "contentType": cc.content_type, "acceptContentTypes": cc.accept_content_types},
                "configSyncPeriodSeconds": self.config_sync_period, "syncPeriodSeconds": self.sync_period,
                "minSyncPeriodSeconds": self.min_sync_period, "healthzBindAddress": self.healthz_bind_address,
                "metricsBindAddress": self.metrics_bind_address, "bindAddressHardFail": self.bind_address_hard_fail,
                "detectLocalMode": self.detect_local_mode,
                "detectLocal": {"bridgeInterface": dl.bridge_interface, "interfaceNamePrefix": dl.interface_name_prefix},
                "conntrack": {"maxPerCore": c.max_per_core, "min": c.min,
                              "tcpEstablishedTimeoutSeconds": c.tcp_established_timeout,
                              "tcpCloseWaitTimeoutSeconds": c.tcp_close_wait_timeout, "tcpBeLiberal": c.tcp_be_liberal,
                              "udpTimeoutSeconds": c.udp_timeout, "udpStreamTimeoutSeconds": c.udp_stream_timeout}}


KUBE_PROXY_FIELDS = (
    "apiVersion", "kind", "featureGates", "clientConnection", "logging", "hostnameOverride", "bindAddress",
    "healthzBindAddress", "metricsBindAddress", "bindAddressHardFail", "enableProfiling", "showHiddenMetricsForVersion",
    "mode", "iptables", "ipvs", "nftables", "winkernel", "detectLocalMode", "detectLocal", "clusterCIDR",
    "nodePortAddresses", "oomScoreAdj", "conntrack", "configSyncPeriod", "portRange", "windowsRunAsService",
    "linux", "windows")
IPTABLES_FIELDS = ("masqueradeBit", "masqueradeAll", "localhostNodePorts", "syncPeriod", "minSyncPeriod")
NFTABLES_FIELDS = ("masqueradeBit", "masqueradeAll", "syncPeriod", "minSyncPeriod")
IPVS_FIELDS = ("syncPeriod", "minSyncPeriod", "scheduler", "excludeCIDRs", "strictARP", "tcpTimeout", "tcpFinTimeout",
               "udpTimeout")
CONNTRACK_FIELDS = ("maxPerCore", "min", "tcpEstablishedTimeout", "tcpCloseWaitTimeout", "tcpBeLiberal",
                    "udpTimeout", "udpStreamTimeout")
CLIENT_CONNECTION_FIELDS = ("kubeconfig", "acceptContentTypes", "contentType", "qps", "burst")
LOGGING_FIELDS = ("format", "flushFrequency", "verbosity", "vmodule", "options")
_INT32 = in_range(0, 2**31 - 1)
# kube-proxy takes any int32, but our flow table is preallocated and holds at most 2**30
# entries (dataplane.conntrack.MAX_CAPACITY): say so here, not as a MemoryError at start.
_CT_ENTRIES = in_range(0, 2**30)


def append_port_if_needed(address: str, port: int) -> str:
    """proxyutil.AppendPortIfNeeded: a bare IP gets the default port; anything else is kept."""
    try:
        ip = ip_address(address)
    except ValueError:
        return address
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def host_port(value: str) -> str:
    """validateHostPort: "IP:port" with a valid IP and a port of 1-65535."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host:
        raise ValueError(f"must be IP:port, got {value!r}")
    ip_address(host)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"must be IP:port with a port of 1-65535, got {value!r}")
    return value


def _cidr_list(o: Obj, key: str, text: str) -> tuple[IPNetwork, ...]:
    cidrs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            cidrs.append(_loose_cidr(part))
        except ValueError as e:
            raise Invalid(o.at(key), str(e)) from None
    if len(cidrs) > 2 or (len(cidrs) == 2 and cidrs[0].version == cidrs[1].version):
        raise Invalid(o.at(key), "at most one IPv4 and one IPv6 CIDR (dual-stack)")
    return tuple(cidrs)


def _period(o: Obj, key: str, default: float) -> float:
    """A period kube-proxy defaults when it is zero (configSyncPeriod, syncPeriod)."""
    return o.get(key, str, None, parse=_non_negative_duration) or default


def parse_kube_proxy(o: Obj) -> KubeProxyConfig:
    hostname = o.get("hostnameOverride", str, parse=lambda v: v and dns_subdomain(v.strip().lower())) or None
    cidrs = _cidr_list(o, "clusterCIDR", o.get("clusterCIDR", str, ""))

    # nodeport_addresses.go: CIDRs, or the single value "primary"; unset is the nftables-mode
    # default, which is also "primary" (kube-proxy only opens all IPs in iptables/ipvs mode).
    raw = o.get("nodePortAddresses", list, [])
    primary = not raw or "primary" in raw
    if raw and primary and len(raw) > 1:
        raise Invalid(o.at("nodePortAddresses"), "\"primary\" must be the only entry")
    node_port_addresses = () if primary else o.scalars("nodePortAddresses", str, _loose_cidr)

    mode = o.get("mode", str, "", parse=one_of("", "iptables", "ipvs", "nftables", "kernelspace"))
    sections = {"iptables": o.obj("iptables", IPTABLES_FIELDS), "nftables": o.obj("nftables", NFTABLES_FIELDS),
                "ipvs": o.obj("ipvs", IPVS_FIELDS)}
    for s in sections.values():
        if s is not None:
            s.get("masqueradeBit", int, parse=in_range(0, 31))
            s.get("syncPeriod", str, parse=_non_negative_duration)
            s.get("minSyncPeriod", str, parse=_non_negative_duration)
    masquerade_all = any(s.get("masqueradeAll", bool, False) for s in sections.values() if s)
    # The section of the mode in use sets the periods (iptables for the default mode).
    timing = sections.get(mode or "iptables") or o.section(mode or "iptables")
    sync_period = _period(timing, "syncPeriod", 30.0)
    min_sync_period = timing.get("minSyncPeriod", str, None, parse=_non_negative_duration)
    if min_sync_period is not None and min_sync_period > sync_period:
        raise Invalid(timing.at("minSyncPeriod"), f"must be less than or equal to syncPeriod ({sync_period:g}s)")

    cc, d = o.section("clientConnection", CLIENT_CONNECTION_FIELDS), ClientConnection()
    qps = cc.data.get("qps")
    if qps is not None and (isinstance(qps, bool) or not isinstance(qps, (int, float))):
        raise Invalid(cc.at("qps"), "must be a number")
    if qps is not None and qps < 0:
        raise Invalid(cc.at("qps"), "must not be negative")
    # Zero is "unset" for qps and burst (defaults.go), as kubeadm writes them.
    client = ClientConnection(
        cc.get("kubeconfig", str) or None, float(qps or d.qps),
        cc.get("burst", int, 0, parse=_INT32) or d.burst, cc.get("contentType", str) or d.content_type,
        cc.get("acceptContentTypes", str, ""))

    mode_local = o.get("detectLocalMode", str, "", parse=lambda v: v and one_of(*DETECT_LOCAL_MODES)(v)) or "ClusterCIDR"
    dl = o.section("detectLocal", ("bridgeInterface", "interfaceNamePrefix"))
    detect_local = DetectLocal(dl.get("bridgeInterface", str, ""), dl.get("interfaceNamePrefix", str, ""), cidrs)
    if mode_local == "BridgeInterface" and not detect_local.bridge_interface:
        raise Invalid(dl.at("bridgeInterface"), "required when detectLocalMode is BridgeInterface")
    if mode_local == "InterfaceNamePrefix" and not detect_local.interface_name_prefix:
        raise Invalid(dl.at("interfaceNamePrefix"), "required when detectLocalMode is InterfaceNamePrefix")

    lg = o.section("logging", LOGGING_FIELDS)
    logging = Logging(lg.get("verbosity", int, None, parse=_INT32), lg.get("format", str, "") or "text")
    gates = o.obj("featureGates")
    feature_gates = ()
    if gates is not None:
        for k, v in gates.data.items():
            gates.get(k, bool)
        feature_gates = tuple(sorted(gates.data.items()))
    for section in ("winkernel", "linux", "windows"):
        o.obj(section)
    o.get("portRange", str)
    o.get("oomScoreAdj", int, parse=in_range(-1000, 1000))

    c, dc = o.section("conntrack", CONNTRACK_FIELDS), Conntrack()

    def duration(key: str, default: float | None) -> float | None:
        return c.get(key, str, default, parse=_non_negative_duration)

    conntrack = Conntrack(
        c.get("maxPerCore", int, dc.max_per_core, parse=_CT_ENTRIES),
        c.get("min", int, dc.min, parse=_CT_ENTRIES),
        duration("tcpEstablishedTimeout", dc.tcp_established_timeout),
        duration("tcpCloseWaitTimeout", dc.tcp_close_wait_timeout),
        c.get("tcpBeLiberal", bool, False),
        duration("udpTimeout", None) or None, duration("udpStreamTimeout", None) or None)

    return KubeProxyConfig(
        hostname, cidrs, node_port_addresses, primary, masquerade_all, mode, conntrack, client,
        _period(o, "configSyncPeriod", 900.0), sync_period, min_sync_period,
        o.get("bindAddress", str, "", parse=lambda v: v and str(ip_address(v))) or "0.0.0.0",
        _bind(o, "healthzBindAddress", HEALTHZ_PORT, "0.0.0.0"), _bind(o, "metricsBindAddress", METRICS_PORT, "127.0.0.1"),
        o.get("bindAddressHardFail", bool, False), mode_local, detect_local, logging, feature_gates)


def _bind(o: Obj, key: str, port: int, default_host: str) -> str:
    """healthz/metrics bind address: defaulted, a bare IP gets the default port, then validated."""
    value = o.get(key, str, "")
    if not value:
        return f"{default_host}:{port}"
    try:
        return host_port(append_port_if_needed(value, port))
    except ValueError as e:
        raise Invalid(o.at(key), str(e)) from None


def _non_negative_duration(value: str) -> float:
    seconds = go_duration(value)
    if seconds < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return seconds
