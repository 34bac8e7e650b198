"""Proxier semantics from kube-proxy's configuration and topology: health check inputs,
ServiceCIDRs, topology hints, detect-local, UDP flushes when a Service gets endpoints."""
import pytest

from dataplane.config import loads
from dataplane.proxier import Proxier
from tests.test_proxier import CLUSTER, NODE_CONFIG, ep, eps, flow, port, svc


def test_health_check_inputs():
    p = Proxier.from_config(loads(CLUSTER))
    assert p.health_check_services() == {("default", "lbl"): 32000}
    assert p.local_ready_endpoints() == {("default", "lbl"): 1}
    assert p.health_check_addresses() == ["192.168.0.10", "fd00::10"]
