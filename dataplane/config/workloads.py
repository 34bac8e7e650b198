"""`v1 Pod` and `v1 Namespace`, reduced to what the node's consumers use (cluster DNS now,
NetworkPolicy later): identity, labels, addresses, node, phase and container ports.

Pods carry huge specs and grow fields every release, so spec and status are read leniently:
every field is accepted and only the ones used here are checked. Metadata is as strict as for
the other kinds (its field set is stable). `kubectl get pods,namespaces -A -o yaml` loads as is.
"""
from __future__ import annotations

from dataclasses import dataclass

from .fields import IPAddress, Obj, dns_label, dns_subdomain, iana_svc_name, ip_address, one_of, port_number
from .k8s import PROTOCOLS, _metadata

POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
CONTAINER_PORT_FIELDS = ("name", "containerPort", "hostPort", "hostIP", "protocol")


@dataclass(frozen=True)
class ContainerPort:
    name: str              # "" when unnamed; NetworkPolicy and targetPort refer to named ones
    port: int
    protocol: str          # TCP, UDP or SCTP


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: dict[str, str]
    node_name: str | None = None          # spec.nodeName: None until scheduled
    ips: tuple[IPAddress, ...] = ()       # status.podIPs (or podIP), primary first
    phase: str = "Pending"
    host_network: bool = False            # the pod's IPs are its node's
    hostname: str | None = None           # spec.hostname / spec.subdomain: the endpoints
    subdomain: str | None = None          # controller turns them into endpoint hostnames
    ports: tuple[ContainerPort, ...] = ()  # every container's ports, in declaration order

    @property
    def terminal(self) -> bool:
        """Succeeded or Failed: its IPs are released and may belong to another pod already."""
        return self.phase in ("Succeeded", "Failed")

    def describe(self) -> dict:
        d = {"name": f"{self.namespace}/{self.name}", "nodeName": self.node_name, "phase": self.phase,
             "podIPs": [str(a) for a in self.ips], "labels": dict(self.labels)}
        if self.ports:
            d["ports"] = [{"name": p.name, "containerPort": p.port, "protocol": p.protocol} for p in self.ports]
        if self.host_network:
            d["hostNetwork"] = True
        return d


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: dict[str, str]
    phase: str = "Active"

    def describe(self) -> dict:
        return {"name": self.name, "labels": dict(self.labels), "phase": self.phase}


def parse_pod(o: Obj) -> Pod:
    namespace, name, labels = _metadata(o, True, dns_subdomain)
    spec, status = o.section("spec"), o.section("status")

    def container_ports(c: Obj) -> tuple[ContainerPort, ...]:
        return c.objects("ports", CONTAINER_PORT_FIELDS, lambda p: ContainerPort(
            p.get("name", str, "", parse=lambda v: v and iana_svc_name(v)),
            p.get("containerPort", int, required=True, parse=port_number),
            p.get("protocol", str, "TCP", parse=one_of(*PROTOCOLS))))

    ports = tuple(p for ps in spec.objects("containers", None, container_ports) for p in ps)
    single = status.get("podIP", str, "", parse=lambda v: v and ip_address(v))
    ips = status.objects("podIPs", None, lambda a: a.get("ip", str, required=True, parse=ip_address))
    return Pod(namespace, name, labels,
               spec.get("nodeName", str, parse=lambda v: v and dns_subdomain(v)) or None,
               ips or ((single,) if single else ()),
               status.get("phase", str, "Pending", parse=one_of(*POD_PHASES)),
               spec.get("hostNetwork", bool, False),
               spec.get("hostname", str, parse=lambda v: v and dns_label(v)) or None,
               spec.get("subdomain", str, parse=lambda v: v and dns_label(v)) or None,
               ports)


def parse_namespace(o: Obj) -> Namespace:
    _, name, labels = _metadata(o, False, dns_label)
    o.section("spec", ("finalizers",))
    status = o.section("status")
    return Namespace(name, labels, status.get("phase", str, "Active", parse=one_of("Active", "Terminating")))
