"""Queries from lab pods: each pod has kubelet's resolv.conf and asks the kube-dns Service, which
its node's dataplane DNATs to the node's own `dataplane dns` (needs root: namespaces)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from dataplane.lab import LabSpec, down, up
from dataplane.lab.netns import exec_argv
from dataplane.lab.topology import NETNS_ETC, dataplane_run_available

ASK = textwrap.dedent("""
    import json, socket
    import dns.resolver, dns.reversename
    r = dns.resolver.Resolver()                      # from the pod's /etc/resolv.conf
    out = {"resolv.conf": open("/etc/resolv.conf").read(),
           "getaddrinfo": sorted({a[4][0] for a in socket.getaddrinfo("web-local", 80, socket.AF_INET)})}
    def ask(name, rdtype, **kw):
        try:
            return sorted(rd.to_text() for rd in r.resolve(name, rdtype, **kw))
        except dns.resolver.NXDOMAIN:
            return "NXDOMAIN"
        except dns.resolver.NoAnswer:
            return "NODATA"
    out["search"] = ask("web", "A", search=True)
    out["srv"] = ask("_http._tcp.web.default.svc.cluster.local.", "SRV")
    out["tcp"] = ask("echo-udp.default.svc.cluster.local.", "A", tcp=True)
    out["pod"] = ask("10-244-2-10.default.pod.cluster.local.", "A")
    out["unknown pod"] = ask("10-244-9-99.default.pod.cluster.local.", "A")
    out["nodata"] = ask("web.default.svc.cluster.local.", "AAAA")
    out["ptr"] = ask(dns.reversename.from_address("10.96.0.10"), "PTR")
    out["dns-version"] = ask("dns-version.cluster.local.", "TXT")
    print(json.dumps(out))
""")


@pytest.fixture
def lab():
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (network namespaces)")
    if not dataplane_run_available():
        pytest.skip("`dataplane run` is not in this tree")
    name = f"dns{os.getpid() % 100000}"
    try:
        yield up(LabSpec(name=name))
    finally:
        down(name)
    assert not any(d.name.startswith(f"dpl.{name}.") for d in NETNS_ETC.glob("*"))


def test_pods_resolve_through_the_node_local_dns(lab):
    assert lab["dns"] == {"service": "kube-system/kube-dns", "ip": "10.96.0.100", "clusterDomain": "cluster.local"}
    for pod in ("pod-1-1", "pod-2-2"):
        ns = next(p["netns"] for p in lab["pods"] if p["name"] == pod)
        cp = subprocess.run(exec_argv(ns, [sys.executable, "-c", ASK]), capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        got = json.loads(cp.stdout)
        assert got["resolv.conf"] == ("nameserver 10.96.0.100\nsearch default.svc.cluster.local svc.cluster.local "
                                      "cluster.local\noptions ndots:5\n")
        assert got["getaddrinfo"] == ["10.96.0.21"]
        assert got["search"] == ["10.96.0.10"]
        assert got["srv"] == ["0 100 80 web.default.svc.cluster.local."]
        assert got["tcp"] == ["10.96.0.53"]
        assert got["pod"] == ["10.244.2.10"]             # --pods verified: a pod has that address
        assert got["unknown pod"] == "NXDOMAIN"
        assert got["nodata"] == "NODATA"
        assert got["ptr"] == ["web.default.svc.cluster.local."]
        assert got["dns-version"] == ['"1.1.0"']
