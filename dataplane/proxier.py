"""Services and EndpointSlices -> LBTable, the way kube-proxy turns them into rules.

    proxier = Proxier.from_config(config, conntrack=ct)   # or Proxier(node_name, node_ips, ...)
    proxier.apply(config)                                  # full load: a new table generation
    proxier.on_endpoint_slice(old, new)                    # informer events: recorded only
    result = proxier.sync()                                # applies just what changed
    pipeline reads proxier.lb

What follows kube-proxy (kubernetes/kubernetes pkg/proxy):
- servicechangetracker.go / endpointschangetracker.go: changes are kept as (previous, current)
  per object; a change that ends where it started is dropped; sync() applies the rest.
- serviceport.go newBaseServiceInfo: one entry per Service port and IP family, with that
  family's ClusterIP, externalIPs, load-balancer VIPs (ipMode Proxy already left out by the
  config loader) and source ranges; a zero CIDR in loadBalancerSourceRanges means "any".
  Headless and ExternalName Services, and families without a ClusterIP, are not programmed.
- endpointslicecache.go: endpoints are grouped by (Service, slice port name, protocol): a Service
  port takes the port number its EndpointSlices publish under the Service port's name (that is
  how a named targetPort reaches the proxy: the EndpointSlice controller resolved it per pod).
  Only addresses of the proxier's family count, the first address of an endpoint is used, and
  duplicates across slices collapse to one, preferring the copy that is local to this node.
- topology.go CategorizeEndpoints: the cluster set is the ready endpoints (filtered by node
  hints, else zone hints, when every ready endpoint has them and one is for this node / its
  zone), else the serving and terminating ones; the local set is computed the same way among
  this node's endpoints. A change of this Node's zone label re-categorizes every Service.
- util/nodeport_addresses.go: nodePortAddresses CIDRs are per family; a family without any
  CIDR keeps NodePorts on all of its node IPs; "primary" (and, as in nftables mode, an unset
  list) means the node's primary IP of each family.
- util/localdetector.go: detectLocalMode picks what counts as pod traffic (cluster CIDRs, this
  Node's podCIDRs, or the ingress interface); nftables/proxier.go cluster-ips-check: the
  ServiceCIDRs and the ClusterIPs in use go to the table for the reject / drop of new
  connections no frontend matched; UDP Service ports that get their first endpoints have the
  entries towards their frontends flushed.
- conntrack cleanup (proxier CleanStaleEntries): when an endpoint (ip, port, protocol) stops
  serving for every Service, its UDP/SCTP entries are flushed so datagrams stop going to it.
  TCP is never flushed: its connections end on their own (RST from the gone endpoint).
"""
from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable

from .config.k8s import EndpointSlice, KubeProxyConfig, Node, Service, ServiceCIDR
from .lb import DEFAULT_MAGLEV_M, FE_EXTERNAL, FE_LOCAL, LBTable

__all__ = ["ALGORITHMS", "ChangeTracker", "Proxier", "SyncResult"]

ALGORITHMS = ("random", "maglev")
FLUSHED_PROTOCOLS = {"UDP": 17, "SCTP": 132}   # conntrack.flush takes the protocol number
_EXTERNAL_TYPES = ("NodePort", "LoadBalancer")


@dataclass
class SyncResult:
    """What one sync (or apply) did. Services are (namespace, name)."""
    services_changed: set[tuple[str, str]] = field(default_factory=set)   # frontends/policies changed
    endpoints_changed: set[tuple[str, str]] = field(default_factory=set)  # only endpoint sets changed
    stale_endpoints: list[tuple[str, int, str]] = field(default_factory=list)  # (ip, port, protocol) gone
    newly_active: set[tuple] = field(default_factory=set)  # UDP Service ports that got their first endpoints
    flushed: int = 0                                                      # conntrack entries removed
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)   # Services left as they were; retried next sync


class ChangeTracker:
    """(previous, current) per object key, as kube-proxy's change trackers: a later change keeps
    the first `previous`, and a change whose current equals its previous is dropped."""

    def __init__(self):
        self.items: dict[Any, list] = {}

    def update(self, key, previous, current) -> bool:
        """Record a change; True if the object now differs from what was last applied."""
        change = self.items.get(key)
        if change is None:
            change = self.items[key] = [previous, current]
        else:
            change[1] = current
        if change[0] == change[1]:
            del self.items[key]
            return False
        return True

    def pending(self) -> bool:
        return bool(self.items)

    def take(self) -> dict[Any, list]:
        items, self.items = self.items, {}
        return items


@dataclass(frozen=True)
class _Port:
    """One Service port of one family as installed: what decides set_service vs update."""
    frontends: tuple
    affinity: int
    cluster: tuple          # (ip, port) pairs, table order
    local: tuple
    serving: frozenset      # (ip, port, protocol) the port keeps alive (conntrack refcount)


def _net(n) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return n if isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else ipaddress.ip_network(n, strict=False)


class Proxier:
    """Keeps the LBTable (`lb`) in step with Services and EndpointSlices for one node."""

    def __init__(self, node_name: str, node_ips: Iterable, cluster_cidrs: Iterable = (),
                 kube_proxy: KubeProxyConfig | None = None, conntrack=None, algorithm: str = "random",
                 non_masquerade_cidrs: Iterable | None = None, node_zone: str | None = None,
                 maglev_m: int = DEFAULT_MAGLEV_M, seed: int | None = None, port_names: Iterable[str] = ()):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        self.node_name = node_name
        self.node_ips = tuple(ipaddress.ip_address(a) if isinstance(a, str) else a for a in node_ips)
        self.kube_proxy = kube_proxy or KubeProxyConfig()
        # kube-proxy's local detector: the cluster CIDRs given here, else clusterCIDR.
        self.cluster_cidrs = tuple(map(_net, cluster_cidrs)) or self.kube_proxy.cluster_cidrs
        self.non_masquerade_cidrs = None if non_masquerade_cidrs is None else tuple(map(_net, non_masquerade_cidrs))
        self.node_zone = node_zone
        self.conntrack = conntrack
        self.algorithm = algorithm
        self.maglev_m = maglev_m
        self.seed = seed
        self._primary = {f: [a for a in self.node_ips if a.version == f][:1] for f in (4, 6)}
        self._node_port_ips = {f: self._node_ports(f) for f in (4, 6)}
        self._precomputed: dict = {}     # service -> desired ports, worked out before a pause
        # PreferSameTrafficDistribution (node hints): on unless the feature gate turns it off.
        self._same_node = dict(self.kube_proxy.feature_gates).get("PreferSameTrafficDistribution", True)
        self.port_names = tuple(port_names)    # by port index: the interface modes of detectLocalMode
        self.node: Node | None = None           # this node's Node (zone, podCIDRs)
        self.service_cidrs: dict[str, ServiceCIDR] = {}
        self._services_tracker = ChangeTracker()
        self._slices_tracker = ChangeTracker()
        self._cidrs_tracker = ChangeTracker()
        self._node_tracker = ChangeTracker()
        self._reset()
        self.lb = self._new_table((), capacity=1024)

    @classmethod
    def from_config(cls, config, **kwargs) -> "Proxier":
        """A Proxier for the node a loaded Config describes (DataplaneConfiguration nodeName,
        nodeIPs and clusterCIDRs; KubeProxyConfiguration), with the config applied."""
        dp = config.dataplane
        if config.node_name is None:
            raise ValueError("the configuration names no node (DataplaneConfiguration nodeName or hostnameOverride)")
        kwargs.setdefault("cluster_cidrs", dp.cluster_cidrs if dp else ())
        kwargs.setdefault("kube_proxy", config.kube_proxy)
        kwargs.setdefault("port_names", [p.ifname or p.name for p in dp.ports] if dp else ())
        proxier = cls(config.node_name, dp.node_ips if dp else (), **kwargs)
        proxier.apply(config)
        return proxier

    # ---- state ----

    def _reset(self):
        self._services: dict[tuple[str, str], Service] = {}
        self._slices: dict[tuple[str, str], dict[str, EndpointSlice]] = {}   # service -> slice name -> slice
        self._installed: dict[tuple[str, str], dict[tuple, _Port]] = {}     # service -> port key -> state
        self._owners: dict[tuple, tuple] = {}        # frontend (addr, port, proto) -> port key
        # Endpoints as (ip as int, port, protocol, family):
        self._serving: dict[tuple, int] = {}         # endpoint -> Service ports it serves
        self._ids: dict[tuple, int] = {}             # endpoint -> backend id
        self._gone: set[tuple] = set()               # stopped serving since the last flush
        self._next_id = 1
        self._retry: set[tuple[str, str]] = set()
        self._waiting: dict[tuple, set] = {}         # frontend -> Services refused it (taken)
        self._wakeups: set[tuple[str, str]] = set()

    def _new_table(self, on_link, capacity: int) -> LBTable:
        nonmasq = self.non_masquerade_cidrs
        if nonmasq is None:     # default: pod networks and the node's connected networks
            nonmasq = self.cluster_cidrs + tuple(on_link)
        return LBTable(node_ips=self.node_ips, cluster_cidrs=self.cluster_cidrs, non_masquerade_cidrs=nonmasq,
                       masquerade_all=self.kube_proxy.masquerade_all, maglev_m=self.maglev_m,
                       capacity=max(1024, capacity), seed=self.seed, service_cidrs=self._service_cidr_list(),
                       **self._local_detector())

    def _local_detector(self) -> dict:
        """localdetector.go by detectLocalMode: pod traffic is what comes from the cluster CIDRs
        (ClusterCIDR), this Node's podCIDRs (NodeCIDR; none known yet: no detector, as
        kube-proxy before the Node has them), or in through the bridge / an interface whose
        name has the prefix (matched against each port's ifname)."""
        kp = self.kube_proxy
        if kp.detect_local_mode == "NodeCIDR":
            return {"local_cidrs": self.node.pod_cidrs if self.node else ()}
        if kp.detect_local_mode == "BridgeInterface":
            return {"local_ports": [n == kp.detect_local.bridge_interface for n in self.port_names]}
        if kp.detect_local_mode == "InterfaceNamePrefix":
            return {"local_ports": [n.startswith(kp.detect_local.interface_name_prefix) for n in self.port_names]}
        return {"local_cidrs": self.cluster_cidrs}

    def _service_cidr_list(self) -> list:
        return [c for sc in self.service_cidrs.values() for c in sc.cidrs]

    def _node_ports(self, family: int) -> list:
        kp = self.kube_proxy
        if kp.node_port_primary:
            return self._primary[family]
        cidrs = [n for n in kp.node_port_addresses if n.version == family]
        return [a for a in self.node_ips if a.version == family and (not cidrs or any(a in n for n in cidrs))]

    # ---- informer handlers ----

    def on_service(self, old: Service | None, new: Service | None) -> bool:
        return self._services_tracker.update(_key(old or new), old, new)

    def on_endpoint_slice(self, old: EndpointSlice | None, new: EndpointSlice | None) -> bool:
        return self._slices_tracker.update(_key(old or new), old, new)

    def on_service_cidr(self, old: ServiceCIDR | None, new: ServiceCIDR | None) -> bool:
        return self._cidrs_tracker.update((old or new).name, old, new)

    def on_node(self, old: Node | None, new: Node | None) -> bool:
        """This node's Node (others are ignored): its zone label and podCIDRs."""
        if (old or new).name != self.node_name:
            return False
        return self._node_tracker.update(self.node_name, old, new)

    # ---- full load ----

    def apply(self, config) -> SyncResult:
        """Program exactly the Services and EndpointSlices of `config` into a new table
        generation and make it current; pending handler changes are superseded."""
        result = SyncResult()
        old_serving, old_installed = self._serving, self._installed
        for tracker in (self._services_tracker, self._slices_tracker, self._cidrs_tracker, self._node_tracker):
            tracker.take()
        self._reset()
        if config.node_name is not None and config.node_name != self.node_name:
            result.warnings.append(f"config is for node {config.node_name!r}, this proxier is {self.node_name!r}")
        self.node = next((n for n in config.nodes if n.name == self.node_name), None) or self.node
        self.node_zone = (self.node and self.node.zone) or self.node_zone
        self.service_cidrs = {c.name: c for c in getattr(config, "service_cidrs", ())}
        on_link = tuple(r.prefix for r in config.dataplane.routes if r.via is None) if config.dataplane else ()
        for s in config.endpoint_slices:
            if s.ignored is None:
                self._slices.setdefault((s.namespace, s.service_name), {})[s.name] = s
        self._services = {(s.namespace, s.name): s for s in config.services}
        table = self._new_table(on_link, capacity=2 * sum(len(s.ports) for s in config.services))
        self._sync_all(table, set(self._services), result, old_installed)
        self.lb = table
        self._flush(old_serving.keys() - self._serving.keys(), result)
        return result

    # ---- incremental ----

    def sync(self, pause=contextlib.nullcontext) -> SyncResult:
        """Apply the recorded changes to the current table; only touched Services are rebuilt.

        `pause` (the forwarding engine's, live) brackets the table edits only: what each touched
        Service should look like is worked out before, while forwarding goes on."""
        result = SyncResult()
        touched = set(self._retry)
        self._retry.clear()
        table_edits = []    # done with the others, inside the pause
        if self._cidrs_tracker.pending():
            for name, (_, current) in self._cidrs_tracker.take().items():
                if current is None:
                    self.service_cidrs.pop(name, None)
                else:
                    self.service_cidrs[name] = current
            table_edits.append(lambda cidrs=self._service_cidr_list(): self.lb.set_service_cidrs(cidrs))
        if self._node_tracker.pending():
            (_, node), = self._node_tracker.take().values()
            old_cidrs = self.node.pod_cidrs if self.node else ()
            self.node = node
            zone = node.zone if node else None
            if zone != self.node_zone:          # topology hints are read against the zone
                self.node_zone = zone
                touched |= set(self._services)
            if self.kube_proxy.detect_local_mode == "NodeCIDR" and (node.pod_cidrs if node else ()) != old_cidrs:
                table_edits.append(lambda cidrs=node.pod_cidrs if node else (): self.lb.set_local_cidrs(cidrs))
        for key, (_, current) in self._services_tracker.take().items():
            touched.add(key)
            if current is None:
                self._services.pop(key, None)
            else:
                self._services[key] = current
        for (namespace, name), (previous, current) in self._slices_tracker.take().items():
            for s in (previous, current):
                if s is not None and s.service_name is not None:
                    touched.add((namespace, s.service_name))
                    self._slices.get((namespace, s.service_name), {}).pop(name, None)
            if current is not None and current.ignored is None:
                self._slices.setdefault((namespace, current.service_name), {})[name] = current
        self._precomputed = {key: self._desired_or_error(key) for key in touched}
        try:
            with pause():
                for edit in table_edits:
                    edit()
                self._sync_all(self.lb, touched, result)
                gone, self._gone = self._gone, set()
                self._flush(gone, result)
        finally:
            self._precomputed = {}
        return result

    def _desired_or_error(self, svc_key):
        service = self._services.get(svc_key)
        try:
            return self._desired(service) if service is not None else {}
        except ValueError as e:
            return e

    # ---- one Service ----

    def _sync_service(self, table: LBTable, svc_key: tuple[str, str], result: SyncResult,
                      previous: dict | None = None):
        installed = self._installed.get(svc_key, {})
        # What was usable before this change (apply: the previous generation's state).
        before = installed if previous is None else previous.get(svc_key, {})
        desired = self._precomputed.pop(svc_key, None)
        if desired is None:
            desired = self._desired_or_error(svc_key)
        if isinstance(desired, ValueError):
            result.errors.append(f"Service {svc_key[0]}/{svc_key[1]}: {desired}")
            self._retry.add(svc_key)
            return
        changed_frontends = changed_endpoints = False
        for port_key in installed.keys() - desired.keys():
            if port_key in table:
                table.remove_service(port_key)
            self._release(port_key, installed[port_key])
            changed_frontends = True
        new_installed = {}
        for port_key, want in desired.items():
            have = installed.get(port_key)
            want = self._claim(port_key, want, have, result)
            # Count first so new endpoints have ids; undone if the table refuses the update.
            self._refcount(have.serving if have else frozenset(), want.serving)
            try:
                ids, proto, family = self._ids, port_key[3], port_key[4]
                cluster = [(ip, port, ids[ip, port, proto, family]) for ip, port in want.cluster]
                local = [(ip, port, ids[ip, port, proto, family]) for ip, port in want.local]
                if have is None or have.frontends != want.frontends or have.affinity != want.affinity:
                    if not want.frontends:
                        if have is not None:
                            table.remove_service(port_key)
                    else:
                        table.set_service(port_key, want.frontends, cluster, local, affinity_timeout=want.affinity,
                                          maglev=self.algorithm == "maglev")
                    changed_frontends = True
                elif have.cluster != want.cluster or have.local != want.local:
                    if want.frontends:
                        table.update_endpoints(port_key, cluster, local)
                    changed_endpoints = True
            except (ValueError, MemoryError) as e:
                result.errors.append(f"Service {svc_key[0]}/{svc_key[1]} port {port_key[2] or port_key[3]}: {e}")
                self._retry.add(svc_key)
                self._refcount(want.serving, have.serving if have else frozenset())
                self._claim(port_key, have or _Port((), 0, (), (), frozenset()), want, result)
                if have is not None:
                    new_installed[port_key] = have
                continue
            new_installed[port_key] = want
            if have is not None and have.serving != want.serving:
                changed_endpoints = True
            was = before.get(port_key)
            if port_key[3] == "UDP" and want.cluster and not (was and was.cluster):
                self._flush_frontends(port_key, want, result)
        if new_installed:
            self._installed[svc_key] = new_installed
        else:
            self._installed.pop(svc_key, None)
        if changed_frontends:
            result.services_changed.add(svc_key)
        elif changed_endpoints:
            result.endpoints_changed.add(svc_key)

    def _claim(self, port_key, want: _Port, have: _Port | None, result: SyncResult) -> _Port:
        """First Service to claim a frontend keeps it (ordered by namespace/name in apply)."""
        kept = []
        for fe in want.frontends:
            owner = self._owners.get(fe[:3])
            if owner is not None and owner != port_key:
                result.warnings.append(f"{port_key[0]}/{port_key[1]}: {fe[0]}:{fe[1]}/{fe[2]} is already used by "
                                       f"{owner[0]}/{owner[1]}; skipped")
                self._waiting.setdefault(fe[:3], set()).add(port_key[:2])
                continue
            kept.append(fe)
        if have is not None:
            for fe in have.frontends:
                self._free_frontend(fe[:3])
        for fe in kept:
            self._owners[fe[:3]] = port_key
        if len(kept) != len(want.frontends):
            want = _Port(tuple(kept), want.affinity, want.cluster, want.local, want.serving)
        return want

    def _release(self, port_key, have: _Port):
        for fe in have.frontends:
            self._free_frontend(fe[:3])
        self._refcount(have.serving, frozenset())

    def _free_frontend(self, fe: tuple):
        """Services that were refused this frontend get another try in the same sync."""
        self._owners.pop(fe, None)
        self._wakeups |= self._waiting.pop(fe, set())

    def _sync_all(self, table: LBTable, keys: set, result: SyncResult, previous: dict | None = None):
        while keys:
            for key in sorted(keys):
                self._sync_service(table, key, result, previous)
            keys, self._wakeups = self._wakeups, set()

    def _flush_frontends(self, port_key, want: _Port, result: SyncResult):
        """A UDP Service port went from no endpoints to some (kube-proxy's newly active UDP
        services): entries tracked towards any of its frontends (ClusterIP, externalIPs,
        load-balancer IPs, NodePorts) while it had none would keep bypassing the DNAT."""
        result.newly_active.add(port_key)
        if self.conntrack is not None:
            for addr, port, *_ in want.frontends:
                result.flushed += self.conntrack.flush_destination(str(addr), port, 17) or 0

    def _refcount(self, old: frozenset, new: frozenset):
        for ep in new - old:
            n = self._serving.get(ep, 0)
            self._serving[ep] = n + 1
            if n == 0:
                self._gone.discard(ep)
                if ep not in self._ids:
                    self._ids[ep] = self._next_id
                    self._next_id += 1
        for ep in old - new:
            n = self._serving[ep] - 1
            if n:
                self._serving[ep] = n
            else:
                del self._serving[ep]
                self._ids.pop(ep, None)
                self._gone.add(ep)

    def _flush(self, gone, result: SyncResult):
        for ip, port, protocol, family in sorted(gone):
            ip = str(ipaddress.IPv4Address(ip) if family == 4 else ipaddress.IPv6Address(ip))
            result.stale_endpoints.append((ip, port, protocol))
            proto = FLUSHED_PROTOCOLS.get(protocol)
            if proto is not None and self.conntrack is not None:
                result.flushed += self.conntrack.flush(ip, port, proto) or 0

    # ---- health checks (dataplane.healthcheck.ServiceHealth) ----

    def health_check_services(self) -> dict[tuple[str, str], int]:
        """(namespace, name) -> healthCheckNodePort of the programmed Services that have one."""
        return {k: s.health_check_node_port for k, s in self._services.items()
                if s.health_check_node_port and s.ignored is None and k in self._installed}

    def local_ready_endpoints(self) -> dict[tuple[str, str], int]:
        """EndpointsMap.LocalReadyEndpoints: this node's ready endpoints per Service, summed over
        its ports (of the primary family: dual-stack kube-proxy reports one family's map), for
        the Services with a health check node port."""
        out = {}
        for key in self.health_check_services():
            svc = self._services[key]
            by_port = _endpoints_by_port(self._slices.get(key, {}).values(), svc.ip_families[0], self.node_name)
            out[key] = sum(1 for sp in svc.ports for e in by_port.get((sp.name, sp.protocol), {}).values()
                           if e[5] and e[2])
        return out

    def health_check_addresses(self) -> list[str]:
        """Where health check node ports listen: the node-port addresses, as NodePorts."""
        return [str(a) for f in (4, 6) for a in self._node_port_ips[f]]

    # ---- model -> table entries ----

    def _desired(self, svc: Service) -> dict[tuple, _Port]:
        if svc.ignored is not None:
            return {}
        slices = self._slices.get((svc.namespace, svc.name), {})
        external_local = svc.type in _EXTERNAL_TYPES and svc.external_traffic_policy == "Local"
        internal_local = svc.internal_traffic_policy == "Local"
        affinity = (svc.session_affinity_timeout or 0) if svc.session_affinity == "ClientIP" else 0
        out = {}
        for cluster_ip in svc.cluster_ips:     # at most one per family
            family = cluster_ip.version
            node_ips, primary = self._node_port_ips[family], self._primary[family]
            external_ips = [a for a in svc.external_ips if a.version == family]
            vips = [a for a in svc.load_balancer_ips if a.version == family]
            ranges = [n for n in svc.load_balancer_source_ranges if n.version == family]
            if any(n.prefixlen == 0 for n in ranges):
                ranges = []
            if ranges and any(ip in n for n in ranges for ip in primary):
                # nftables proxier allowFromNode: the VIP loops back as the source.
                ranges += [ipaddress.ip_network(v) for v in vips]
            by_port = _endpoints_by_port(slices.values(), f"IPv{family}", self.node_name)
            for sp in svc.ports:
                key = (svc.namespace, svc.name, sp.name, sp.protocol, family)
                ext_flags = FE_EXTERNAL | (FE_LOCAL if external_local else 0)
                frontends = [(cluster_ip, sp.port, sp.protocol, FE_LOCAL if internal_local else 0, ())]
                frontends += [(a, sp.port, sp.protocol, ext_flags, ()) for a in external_ips]
                frontends += [(a, sp.port, sp.protocol, ext_flags, tuple(ranges)) for a in vips]
                if sp.node_port:
                    frontends += [(a, sp.node_port, sp.protocol, ext_flags, ()) for a in node_ips]
                accessible = bool(sp.node_port and node_ips) or bool(external_ips) or bool(vips)
                eps = by_port.get((sp.name, sp.protocol), {})
                cluster, local = _categorize(eps.values(), internal_local or (external_local and accessible),
                                             self.node_zone, self.node_name, self._same_node)
                serving = frozenset((e[0], e[1], sp.protocol, family) for e in eps.values() if e[2] or e[3])
                out[key] = _Port(tuple(frontends), affinity, cluster, local, serving)
        return out


    # ---- views (control socket) ----

    def programmed(self) -> list[dict]:
        """The Services as installed in the table: each frontend with the endpoints a new
        connection to it may reach (the node-local set for a Local policy)."""
        out = []
        for (namespace, name), ports in sorted(self._installed.items()):
            service = self._services.get((namespace, name))
            frontends = []
            for port_key, st in ports.items():
                for addr, port, proto, flags, _ in st.frontends:
                    eps = st.local if flags & FE_LOCAL else st.cluster
                    frontends.append({
                        "ip": str(addr), "port": port, "protocol": proto, "portName": port_key[2],
                        "kind": _frontend_kind(service, addr, port),
                        "endpoints": [{"ip": str(ipaddress.ip_address(ip)), "port": p} for ip, p in eps]})
            out.append({"namespace": namespace, "name": name, "frontends": frontends})
        return out

    def frontends_of(self, port_key) -> tuple:
        """The installed frontends (address, port, protocol, flags, ranges) of one Service port."""
        state = self._installed.get(port_key[:2], {}).get(port_key)
        return state.frontends if state else ()

    def service_names(self) -> dict[int, str]:
        """Table service id -> "namespace/name:port" (conntrack entries and counters carry ids)."""
        return {self.lb.service_key_id(k): f"{k[0]}/{k[1]}:{k[2] or k[3]}" for k in self.lb.keys()}

    def service_ids(self, namespace: str, name: str) -> set[int]:
        """Table service ids (as conntrack entries carry them) of one Service's ports."""
        return {self.lb.service_key_id(k) for k in self._installed.get((namespace, name), {}) if k in self.lb}



def _key(obj) -> tuple[str, str]:
    return (obj.namespace, obj.name)


def _endpoints_by_port(slices, address_type: str, node_name: str) -> dict[tuple[str, str], dict]:
    """endpointslicecache.go endpointInfoByServicePort/addEndpoints: (port name, protocol) ->
    {(ip, port): (ip, port, ready, serving, terminating, local, zone hints, node hints)}, addresses as ints
    (cheap to hash; the table takes them as they are)."""
    out: dict[tuple[str, str], dict] = {}
    for s in slices:
        if s.address_type != address_type:
            continue
        for p in s.ports:
            if not p.port:      # nil port ("all ports") is not supported by kube-proxy either
                continue
            eps = out.setdefault((p.name, p.protocol), {})
            port = p.port
            for e in s.endpoints:
                k = (int(e.addresses[0]), port)
                local = e.node_name == node_name
                if local or k not in eps:
                    eps[k] = (k[0], port, e.ready, e.serving, e.terminating, local, e.hint_zones, e.hint_nodes)
    return out


def _topology_filter(ready: list, node_name: str, zone: str | None, same_node: bool):
    """topology.go topologyModeFromHints + availableForTopology over the ready endpoints.
    Node hints (PreferSameNode) win when every ready endpoint has one and one names this node;
    else zone hints (PreferClose / PreferSameZone) when every ready endpoint has one and one is
    for this node's zone; else no topology. The EndpointSlice controller writes the hints from
    the Service's trafficDistribution, so the proxy reads only the hints."""
    if same_node and ready and all(e[7] for e in ready) and any(node_name in e[7] for e in ready):
        return [e for e in ready if node_name in e[7]]
    if zone and ready and all(e[6] for e in ready) and any(zone in e[6] for e in ready):
        return [e for e in ready if zone in e[6]]
    return ready


def _categorize(eps, uses_local: bool, zone: str | None, node_name: str = "",
                same_node: bool = True) -> tuple[tuple, tuple]:
    """topology.go CategorizeEndpoints -> (cluster, local) as (ip, port) tuples. The
    serving-and-terminating fallback ignores topology (no ready endpoint anywhere)."""
    ready = _topology_filter([e for e in eps if e[2]], node_name, zone, same_node)
    cluster = ready or [e for e in eps if e[3] and e[4]]
    local = []
    if uses_local:
        local = [e for e in eps if e[5] and e[2]] or [e for e in eps if e[5] and e[3] and e[4]]
    return tuple((e[0], e[1]) for e in cluster), tuple((e[0], e[1]) for e in local)


def _frontend_kind(service, addr, port) -> str:
    if service is None or addr in service.cluster_ips:
        return "ClusterIP"
    if addr in service.external_ips:
        return "ExternalIP"
    if addr in service.load_balancer_ips:
        return "LoadBalancer"
    return "NodePort"
