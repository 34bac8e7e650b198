"""Shared DNS fixtures: the test cluster's objects, a small upstream resolver on loopback, and the
node's DNS server (in-process) in each pods mode."""
from dataclasses import replace
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, SOA, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from dataplane.config import load
from dataplane.config.dataplane import DnsConfig
from dataplane.dns import DnsService

OBJECTS = Path(__file__).with_name("objects.yaml")
UPSTREAM_A = {"www.example.org.": "192.0.2.80", "mirror.example.org.": "192.0.2.81"}


class Upstream(BaseResolver):
    """The outside world: a few A records, NXDOMAIN (with an SOA) for the rest; counts queries."""

    def __init__(self):
        self.queries = []

    def resolve(self, request: DNSRecord, handler):
        self.queries.append((str(request.q.qname).lower(), request.q.qtype))
        reply = request.reply()
        ip = UPSTREAM_A.get(str(request.q.qname).lower())
        if str(request.q.qname).lower() == "big.example.org.":    # 60 A records: ~1 kB
            for k in range(60):
                reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=300, rdata=A(f"192.0.2.{k + 1}")))
        elif ip and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=300, rdata=A(ip)))
        elif not ip:
            reply.header.rcode = 3
            reply.add_auth(RR("example.org.", QTYPE.SOA, ttl=60,
                              rdata=SOA("ns.example.org.", "h.example.org.", (1, 2, 3, 4, 30))))
        return reply


class ClassicHandler(DNSHandler):
    udplen = 512     # truncates UDP answers as RFC 1035 servers do (dnslib's default sends them whole)


@pytest.fixture(scope="session")
def upstream():
    """The upstream on UDP and TCP, one port."""
    resolver = Upstream()
    quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data")
    for _ in range(20):     # the port UDP got may be taken for TCP: pick again
        udp = DNSServer(resolver, "127.0.0.1", 0, logger=quiet, handler=ClassicHandler)
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(resolver, "127.0.0.1", port, tcp=True, logger=quiet)
            break
        except OSError:
            udp.server.server_close()
    udp.start_thread()
    tcp.start_thread()
    yield resolver, port
    udp.stop()
    tcp.stop()


@pytest.fixture(scope="session")
def config():
    return load(OBJECTS)


def _serve(config, upstream, **settings):
    service = DnsService(replace(DnsConfig(), upstreams=(("127.0.0.1", upstream[1]),), **settings))
    service.load_config(config)
    service.start(("127.0.0.1", 0))
    return service


@pytest.fixture(scope="session")
def server(config, upstream):
    import ipaddress
    service = _serve(config, upstream, server_ips=(ipaddress.ip_address("10.96.0.10"),))
    yield service
    service.stop()


@pytest.fixture(scope="session", params=["disabled", "insecure", "verified"])
def pods_server(request, config, upstream):
    service = _serve(config, upstream, pods=request.param)
    yield request.param, service
    service.stop()
