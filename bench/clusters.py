"""Synthetic clusters for the benchmarks: N ClusterIP Services x M endpoints, built directly as
configuration objects (parsing 20,000 YAML documents would measure PyYAML, not us)."""
from __future__ import annotations

import ipaddress

from dataplane.config import loads
from dataplane.config.k8s import Endpoint, EndpointPort, EndpointSlice, Service, ServicePort
from dataplane.config.loader import Config

SERVICE_BASE = int(ipaddress.IPv4Address("10.96.0.0"))
POD_BASE = int(ipaddress.IPv4Address("10.244.0.0"))
NODE = "node-0"

DATAPLANE = """
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-0
nodeIPs: [192.168.0.10]
clusterCIDRs: [10.244.0.0/16]
ports:
  - {name: eth0, mac: "02:00:00:00:00:01"}
routes:
  - {prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1, mac: "02:00:00:00:00:fe"}
  - {prefix: 10.244.0.0/16, port: eth0, via: 192.168.0.2, mac: "02:00:00:00:00:02"}
"""


def service_vip(i: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(SERVICE_BASE + i + 1)


def services(n_services: int, n_endpoints: int) -> Config:
    """ClusterIP Services svc-i on 10.96.0.0/16 port 80 -> n_endpoints pods each on port 8080,
    spread over three nodes."""
    svcs, slices = [], []
    for i in range(n_services):
        name = f"svc-{i}"
        svcs.append(Service("default", name, "ClusterIP", (service_vip(i),), ip_families=("IPv4",),
                            ports=(ServicePort("http", "TCP", 80, 8080),)))
        eps = tuple(Endpoint((ipaddress.IPv4Address(POD_BASE + i * n_endpoints + j),),
                             node_name=f"node-{j % 3}") for j in range(n_endpoints))
        slices.append(EndpointSlice("default", f"{name}-abc", name, "IPv4", eps,
                                    (EndpointPort("http", "TCP", 8080),)))
    return Config(services=tuple(svcs), endpoint_slices=tuple(slices))


def node_config(n_services: int, n_endpoints: int) -> Config:
    """The Services above plus a DataplaneConfiguration for node-0."""
    cfg = services(n_services, n_endpoints)
    return Config(dataplane=loads(DATAPLANE).dataplane, services=cfg.services,
                  endpoint_slices=cfg.endpoint_slices)
