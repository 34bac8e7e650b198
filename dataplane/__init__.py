"""Userspace Kubernetes node dataplane: burst packet core, routing, conntrack and Service NAT."""
__version__ = "0.1.0"
