"""The cluster zone: Kubernetes DNS-based service discovery (kubernetes/dns
docs/specification.md) with the name grammar and answers of CoreDNS's kubernetes plugin.

Names, answers and the NXDOMAIN/NODATA split (CoreDNS parse.go, kubernetes.go):
  <zone>                          SOA, NS; anything else NODATA
  dns-version.<zone>              TXT "1.1.0"
  ns.dns.<zone>                   A/AAAA of the server addresses (the NS target)
  svc.<zone>, pod.<zone>          NODATA
  <ns>.svc|pod.<zone>             NODATA if the namespace exists, else NXDOMAIN
  <svc>.<ns>.svc.<zone>           ClusterIP (NodePort, LoadBalancer): its cluster IPs; headless: the
                                  ready endpoints (NXDOMAIN when none); ExternalName: a CNAME.
                                  SRV: one per port (target the Service, or each endpoint)
  <ep>.<svc>.<ns>.svc.<zone>      the endpoints whose hostname is <ep> (hostname, else the pod name
                                  with endpoint_pod_names, else the dashed IP); none under ExternalName
  _<port>._<proto>.<svc>...       SRV (and A/AAAA) for that named port
  <a-b-c-d>.<ns>.pod.<zone>       pods: disabled (NXDOMAIN), insecure (any IP), verified (a pod of
                                  <ns> has that IP); IPv6 with '-' for ':'
  anything else in the zone       NXDOMAIN
Names exist or not as a whole: a name with records of other types is NODATA, one without any
is NXDOMAIN; both carry the zone's SOA in authority. Reverse names of Service IPs and of ready
headless endpoints with a hostname have PTR records; other reverse names go upstream.

Updates come as informer events (on_service, on_endpoint_slice, on_pod, on_namespace: old, new)
or as a whole Config (load). Each builds a new immutable Snapshot and publishes it with one
reference assignment: a query reads one snapshot, so it sees the old or the new state, never a mix.
"""
from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable

from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RR, SOA, SRV, TXT, A

from dataplane.config.dataplane import DnsConfig
from dataplane.config.k8s import EndpointSlice, Service
from dataplane.config.workloads import Namespace, Pod

SCHEMA_VERSION = "1.1.0"
T_A, T_AAAA, T_SRV, T_PTR, T_CNAME, T_TXT, T_SOA, T_NS = (
    QTYPE.A, QTYPE.AAAA, QTYPE.SRV, QTYPE.PTR, QTYPE.CNAME, QTYPE.TXT, QTYPE.SOA, QTYPE.NS)
HOT_TYPES = (T_A, T_AAAA, T_SRV)
MAX_CNAME_CHAIN = 8

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
Records = dict[int, tuple[RR, ...]]   # qtype -> records of one name


@dataclass(frozen=True)
class Answer:
    """What the zone says about one question. rcode 0 with no answers is NODATA."""
    rcode: int                          # 0 NOERROR, 3 NXDOMAIN
    answers: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()
    external: str | None = None         # a CNAME target outside the zone, for the resolver to chase


@dataclass(frozen=True)
class ServiceNames:
    """Every name one Service owns (lower-case, absolute without the final dot) and its PTRs."""
    names: dict[str, Records]
    ptrs: dict[str, str]                # reverse name -> target


@dataclass(frozen=True)
class Snapshot:
    services: dict[tuple[str, str], ServiceNames] = field(default_factory=dict)
    ptrs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    namespaces: frozenset[str] = frozenset()
    pod_ips: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, frozenset[str]] = field(default_factory=dict)
    serial: int = 0


def lower_name(name: str) -> str:
    return name.lower().rstrip(".")


def reverse_name(ip) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


def _port_weight(n: int) -> int:
    return max(1, 100 // n)


class Zone:
    """The cluster zone of one node, fed by informer events or a whole Config."""

    def __init__(self, settings: DnsConfig):
        self.settings = settings
        self.domain = lower_name(settings.cluster_domain)
        self.ttl = settings.ttl
        self._lock = threading.Lock()          # writers only; readers take `snapshot` once
        self._services: dict[tuple[str, str], Service] = {}
        self._slices: dict[tuple[str, str], EndpointSlice] = {}
        self._slices_by_service: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._pods: dict[tuple[str, str], Pod] = {}
        self._namespaces: dict[str, Namespace] = {}
        self._pod_names: dict = {}             # (namespace, pod IP) -> pod name
        self.snapshot = Snapshot(serial=int(time.time()))

    # ---- updates ----

    def load(self, services: Iterable[Service], slices: Iterable[EndpointSlice], pods: Iterable[Pod] = (),
             namespaces: Iterable[Namespace] = ()) -> None:
        """Replace everything with these objects (a full sync)."""
        with self._lock:
            self._services = {(s.namespace, s.name): s for s in services}
            self._slices = {(s.namespace, s.name): s for s in slices}
            self._slices_by_service = {}
            for key, s in self._slices.items():
                if s.service_name:
                    self._slices_by_service.setdefault((s.namespace, s.service_name), set()).add(key)
            self._pods = {(p.namespace, p.name): p for p in pods}
            self._namespaces = {n.name: n for n in namespaces}
            snap = Snapshot(namespaces=self._namespace_set(), pod_ips=self._pod_ips())  # before the names
            self._publish(snap, {key: self._service_names(key) for key in self._services}, full=True)

    def load_config(self, config) -> None:
        self.load(config.services, config.endpoint_slices, config.pods, config.namespaces)

    def on_service(self, old: Service | None, new: Service | None) -> None:
        with self._lock:
            if old is not None:
                self._services.pop((old.namespace, old.name), None)
            if new is not None:
                self._services[(new.namespace, new.name)] = new
            keys = {(o.namespace, o.name) for o in (old, new) if o is not None}
            self._publish(self._with(namespaces=self._namespace_set()), {k: self._service_names(k) for k in keys})

    def on_endpoint_slice(self, old: EndpointSlice | None, new: EndpointSlice | None) -> None:
        with self._lock:
            keys = set()
            for s in (old, new):
                if s is not None and s.service_name:
                    keys.add((s.namespace, s.service_name))
            if old is not None:
                self._slices.pop((old.namespace, old.name), None)
                if old.service_name:
                    self._slices_by_service.get((old.namespace, old.service_name), set()).discard(
                        (old.namespace, old.name))
            if new is not None:
                self._slices[(new.namespace, new.name)] = new
                if new.service_name:
                    self._slices_by_service.setdefault((new.namespace, new.service_name), set()).add(
                        (new.namespace, new.name))
            self._publish(self.snapshot, {k: self._service_names(k) for k in keys})

    def on_pod(self, old: Pod | None, new: Pod | None) -> None:
        with self._lock:
            if old is not None:
                self._pods.pop((old.namespace, old.name), None)
            if new is not None:
                self._pods[(new.namespace, new.name)] = new
            keys = set()
            if self.settings.endpoint_pod_names:  # endpoint names of its namespace may follow the pod
                spaces = {p.namespace for p in (old, new) if p is not None}
                keys = {k for k in self._services if k[0] in spaces}
            snap = self._with(pod_ips=self._pod_ips(), namespaces=self._namespace_set())
            self._publish(snap, {k: self._service_names(k) for k in keys})

    def on_namespace(self, old: Namespace | None, new: Namespace | None) -> None:
        with self._lock:
            if old is not None:
                self._namespaces.pop(old.name, None)
            if new is not None:
                self._namespaces[new.name] = new
            self._publish(self._with(namespaces=self._namespace_set()), {})

    def services(self) -> dict[tuple[str, str], Service]:
        """The Services the zone holds, by (namespace, name)."""
        with self._lock:
            return dict(self._services)

    def _with(self, **changes) -> Snapshot:
        s = self.snapshot
        return Snapshot(changes.get("services", s.services), changes.get("ptrs", s.ptrs),
                        changes.get("namespaces", s.namespaces), changes.get("pod_ips", s.pod_ips), s.serial)

    def _publish(self, base: Snapshot, changed: dict[tuple[str, str], ServiceNames | None], full=False) -> None:
        """A new snapshot: base with the changed Services' names replaced (copy on write)."""
        services = {} if full else dict(base.services)
        ptrs = {} if full else dict(base.ptrs)
        for key, names in changed.items():
            old = services.pop(key, None)
            for rev, target in (old.ptrs.items() if old is not None else ()):
                left = tuple(t for t in ptrs[rev] if t != target)
                if left:
                    ptrs[rev] = left
                else:
                    del ptrs[rev]
            if names is not None:
                services[key] = names
                for rev, target in names.ptrs.items():
                    ptrs[rev] = ptrs.get(rev, ()) + (target,)
        self.snapshot = Snapshot(services, ptrs, base.namespaces, base.pod_ips, int(time.time()))

    def _namespace_set(self) -> frozenset[str]:
        # A namespace exists when its object does; configurations without Namespace objects
        # still get the namespaces their Services and pods live in.
        return frozenset(self._namespaces) | {ns for ns, _ in self._services} | {ns for ns, _ in self._pods}

    def _pod_ips(self) -> dict:
        """Pod IP -> namespaces of the live pods that have it (and the pod names, for
        endpoint_pod_names). Host-network pods are left out: their IPs are their nodes'."""
        ips: dict = {}
        self._pod_names = {}
        for p in self._pods.values():
            if not p.terminal and not p.host_network:
                for ip in p.ips:
                    ips.setdefault(ip, set()).add(p.namespace)
                    self._pod_names[(p.namespace, ip)] = p.name
        return {ip: frozenset(ns) for ip, ns in ips.items()}

    # ---- records of one Service ----

    def _rr(self, name: str, rtype: int, rdata) -> RR:
        return RR(name + ".", rtype, ttl=self.ttl, rdata=rdata)

    def _addr_rr(self, name: str, ip) -> RR:
        return self._rr(name, T_A, A(str(ip))) if ip.version == 4 else self._rr(name, T_AAAA, AAAA(str(ip)))

    def _endpoints(self, svc: Service, slices: list[EndpointSlice]):
        """(hostname, ip, ports, explicit hostname) of the ready endpoints, both families merged."""
        seen = set()
        for s in sorted(slices, key=lambda s: s.name):
            if s.address_type == "FQDN":
                continue
            for e in s.endpoints:
                if not (e.ready or svc.publish_not_ready_addresses):
                    continue
                for ip in e.addresses:
                    host = e.hostname or self._pod_name(svc.namespace, ip) or str(ip).replace(".", "-").replace(":", "-")
                    if (host, ip) not in seen:
                        seen.add((host, ip))
                        yield host, ip, s.ports, e.hostname is not None

    def _pod_name(self, namespace: str, ip) -> str | None:
        """endpoint_pod_names: the endpoint's pod (its targetRef) names it, if a DNS label."""
        if not self.settings.endpoint_pod_names:
            return None
        name = self._pod_names.get((namespace, ip))
        return name if name and _DNS_LABEL.fullmatch(name) else None

    def _service_names(self, key: tuple[str, str]) -> ServiceNames | None:
        svc = self._services.get(key)
        if svc is None:
            return None
        base = f"{svc.name}.{svc.namespace}.svc.{self.domain}".lower()
        names: dict[str, dict[int, list[RR]]] = {}
        seen: set[tuple[str, int, str]] = set()

        def add(name: str, rr: RR) -> None:
            key = (name, rr.rtype, str(rr.rdata))
            if key not in seen:
                seen.add(key)
                names.setdefault(name, {}).setdefault(rr.rtype, []).append(rr)

        ptrs: dict[str, str] = {}
        if svc.type == "ExternalName":
            add(base, self._rr(base, T_CNAME, CNAME(svc.external_name.rstrip(".") + ".")))
        elif not svc.headless:
            for ip in svc.cluster_ips:
                add(base, self._addr_rr(base, ip))
                ptrs[reverse_name(ip)] = base
            for p in svc.ports:
                proto = p.protocol.lower()
                srv = self._rr(base, T_SRV, SRV(0, _port_weight(len(svc.ports)), p.port, base + "."))
                add(base, srv)
                if p.name:
                    port_name = f"_{p.name}._{proto}.{base}".lower()
                    add(port_name, self._rr(port_name, T_SRV, SRV(0, 100, p.port, base + ".")))
                    for ip in svc.cluster_ips:
                        add(port_name, self._addr_rr(port_name, ip))
        slices = [self._slices[k] for k in sorted(self._slices_by_service.get(key, ()))]
        if svc.type != "ExternalName":
            endpoints = list(self._endpoints(svc, slices))
            hosts = {host for host, *_ in endpoints}
            for host, ip, ports, named in endpoints:
                ep_name = f"{host}.{base}".lower()
                add(ep_name, self._addr_rr(ep_name, ip))
                if svc.headless:
                    add(base, self._addr_rr(base, ip))
                    if named:
                        ptrs[reverse_name(ip)] = ep_name
                    for p in ports or ():
                        if p.port is None:
                            continue
                        target = ep_name + "."
                        add(base, self._rr(base, T_SRV, SRV(0, _port_weight(len(hosts)), p.port, target)))
                        if p.name:
                            port_name = f"_{p.name}._{p.protocol.lower()}.{base}"
                            add(port_name, self._rr(port_name, T_SRV, SRV(0, _port_weight(len(hosts)), p.port, target)))
                            add(port_name, self._addr_rr(port_name, ip))
        if not names:
            return None    # a headless Service without ready endpoints: NXDOMAIN
        return ServiceNames({n: {t: tuple(rrs) for t, rrs in recs.items()} for n, recs in names.items()}, ptrs)

    # ---- queries ----

    def in_zone(self, qname: str) -> bool:
        name = lower_name(qname)
        return name == self.domain or name.endswith("." + self.domain)

    def soa(self, snap: Snapshot) -> RR:
        d = self.domain
        return self._rr(d, T_SOA, SOA(f"ns.dns.{d}.", f"hostmaster.{d}.", (snap.serial, 7200, 1800, 86400, self.ttl)))

    def records(self, qname: str, snap: Snapshot | None = None) -> Records | None:
        """Every record of a name in the zone; {} for a name without records (NODATA), None for
        a name that does not exist (NXDOMAIN)."""
        snap = snap or self.snapshot
        name = lower_name(qname)
        d = self.domain
        if name == d:
            return {T_SOA: (self.soa(snap),), T_NS: (self._rr(d, T_NS, NS(f"ns.dns.{d}.")),)}
        rel = name[:-len(d) - 1].split(".")
        if rel == ["dns-version"]:
            return {T_TXT: (self._rr(name, T_TXT, TXT(SCHEMA_VERSION)),)}
        if rel == ["ns", "dns"]:
            return self._group(self._addr_rr(name, ip) for ip in self.settings.server_ips)
        kind = rel[-1]
        if kind not in ("svc", "pod") or len(rel) > 5:
            return None
        if len(rel) == 1:
            return {}
        ns = rel[-2]
        if ns not in snap.namespaces:
            return None
        if len(rel) == 2:
            return {}
        if kind == "pod":
            return self._pod_records(name, rel, snap) if len(rel) == 3 else None
        svc = snap.services.get((ns, rel[-3]))
        return None if svc is None else svc.names.get(name)

    def owner(self, qname: str, snap: Snapshot) -> ServiceNames | None:
        """The Service whose names include qname (lower-case, no final dot), if any."""
        if not qname.endswith(".svc." + self.domain):
            return None
        rel = qname[:-len(self.domain) - 5].split(".")
        svc = snap.services.get((rel[-1], rel[-2])) if 2 <= len(rel) <= 4 else None
        return svc if svc is not None and qname in svc.names else None

    def _group(self, rrs: Iterable[RR]) -> Records:
        out: dict[int, list[RR]] = {}
        for rr in rrs:
            out.setdefault(rr.rtype, []).append(rr)
        return {t: tuple(v) for t, v in out.items()}

    def _pod_records(self, name: str, rel: list[str], snap: Snapshot) -> Records | None:
        mode = self.settings.pods
        if mode == "disabled":
            return None
        label = rel[0]
        text = label.replace("-", ".") if label.count("-") == 3 and "--" not in label else label.replace("-", ":")
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return None
        if mode == "verified" and rel[1] not in snap.pod_ips.get(ip, ()):
            return None
        return self._group([self._addr_rr(name, ip)])

    def resolve(self, qname: str, qtype: int, snap: Snapshot | None = None, depth: int = 0) -> Answer:
        """The answer for a question about a name in the zone (in_zone) or a reverse name."""
        snap = snap or self.snapshot
        name = lower_name(qname)
        if not self.in_zone(name):
            targets = snap.ptrs.get(name)
            if targets is None:
                return Answer(3)
            return Answer(0, tuple(self._rr(name, T_PTR, PTR(t + ".")) for t in targets) if qtype == T_PTR else ())
        recs = self.records(name, snap)
        if recs is None:
            return Answer(3, authority=(self.soa(snap),))
        cname = recs.get(T_CNAME)
        if cname and qtype != T_CNAME:
            target = lower_name(str(cname[0].rdata.label))
            if self.in_zone(target):
                if depth >= MAX_CNAME_CHAIN:    # ExternalName Services naming each other in a loop
                    return Answer(0, cname)
                chased = self.resolve(target, qtype, snap, depth + 1)
                return Answer(chased.rcode, cname + chased.answers, chased.authority, chased.additional,
                              chased.external)
            return Answer(0, cname, external=target)
        if qtype == QTYPE.ANY:
            answers = tuple(rr for t in sorted(recs) for rr in recs[t])
        else:
            answers = recs.get(qtype, ())
        if not answers:
            return Answer(0, authority=(self.soa(snap),))
        additional = ()
        if qtype == T_SRV:
            additional = tuple(self._additional(answers, snap))
        elif qtype == T_NS:
            additional = tuple(rr for t in (T_A, T_AAAA) for rr in (self.records(f"ns.dns.{self.domain}", snap) or {}).get(t, ()))
        return Answer(0, answers, (), additional)

    def _additional(self, srvs: tuple[RR, ...], snap: Snapshot) -> Iterable[RR]:
        seen = set()
        for rr in srvs:
            target = lower_name(str(rr.rdata.target))
            if target in seen:
                continue
            seen.add(target)
            recs = self.records(target, snap) or {}
            yield from recs.get(T_A, ())
            yield from recs.get(T_AAAA, ())

    def hot_names(self) -> Iterable[tuple[str, int]]:
        """(name, qtype) of every positive A, AAAA and SRV answer: what the fast path serves."""
        snap = self.snapshot
        for svc in snap.services.values():
            for name, recs in svc.names.items():
                for t in HOT_TYPES:
                    if recs.get(t):
                        yield name, t
