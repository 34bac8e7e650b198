"""What the dataplane asks of the API server, in one place: the watches `dataplane run` makes
(dataplane.k8s.informer) and the RBAC rules deploy/rbac.yaml grants for them
(tests/deploy/test_manifests.py checks that the two agree exactly).

kube-proxy's role (system:node-proxier) is the model: list + watch on Services, EndpointSlices
and ServiceCIDRs, get + list + watch on Nodes, and events. We grant get on every watched
resource: it reads nothing a list does not already return.
"""
from __future__ import annotations

from .reflector import Resource

__all__ = ["DNS_WATCHED", "ENDPOINT_SLICES", "EVENTS", "EVENT_VERBS", "NAMESPACES", "NODES", "PODS",
           "SERVICES", "SERVICE_CIDRS", "WATCHED", "WATCH_VERBS"]

SERVICES = Resource("", "v1", "services", "Service", True)
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True)
SERVICE_CIDRS = Resource("networking.k8s.io", "v1", "servicecidrs", "ServiceCIDR", False)
NODES = Resource("", "v1", "nodes", "Node", False)   # this node's only (a field selector)

WATCHED = (SERVICES, ENDPOINT_SLICES, SERVICE_CIDRS, NODES)
WATCH_VERBS = ("get", "list", "watch")

# With cluster DNS served by the node (the DataplaneConfiguration's dns:), also the objects
# the DNS specification names records after: pod records and verified pod mode.
PODS = Resource("", "v1", "pods", "Pod", True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)
DNS_WATCHED = (PODS, NAMESPACES)

# Events as kube-proxy records them (events.k8s.io/v1, client-go's event broadcaster).
EVENTS = Resource("events.k8s.io", "v1", "events", "Event", True)
EVENT_VERBS = ("create", "patch", "update")
