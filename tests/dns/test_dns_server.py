"""The node's DNS server against the Kubernetes DNS specification and CoreDNS's kubernetes plugin,
asked with dnspython over UDP and TCP: a table of questions and expected answers, then the details
(NXDOMAIN vs NODATA, letter case, EDNS0, truncation, upstream and cache, updates under load)."""
import ipaddress
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.resolver
import pytest

from dataplane.config import loads
from dataplane.config.k8s import Endpoint, EndpointSlice
from dnshelp import answers, ask

Z = "cluster.local."
NX, NODATA = "NXDOMAIN", "NODATA"

# (question, type, expected answer records as "name type rdata", or NXDOMAIN / NODATA)
TABLE = [
    # 2.2 schema version
    (f"dns-version.{Z}", "TXT", {f'dns-version.{Z} TXT "1.1.0"'}),
    (f"dns-version.{Z}", "A", NODATA),
    # 2.3.1 A / AAAA of ClusterIP Services; NodePort and LoadBalancer resolve to their cluster IP
    (f"kubernetes.default.svc.{Z}", "A", {f"kubernetes.default.svc.{Z} A 10.96.0.1"}),
    (f"kubernetes.default.svc.{Z}", "AAAA", NODATA),
    (f"dual.default.svc.{Z}", "A", {f"dual.default.svc.{Z} A 10.96.0.20"}),
    (f"dual.default.svc.{Z}", "AAAA", {f"dual.default.svc.{Z} AAAA fd00:96::20"}),
    (f"v6only.default.svc.{Z}", "A", NODATA),
    (f"v6only.default.svc.{Z}", "AAAA", {f"v6only.default.svc.{Z} AAAA fd00:96::30"}),
    (f"lb.default.svc.{Z}", "A", {f"lb.default.svc.{Z} A 10.96.0.40"}),
    (f"kubernetes.default.svc.{Z}", "TXT", NODATA),
    # 2.3.2 SRV for named ports; CoreDNS also answers SRV at the Service name (every port)
    (f"_https._tcp.kubernetes.default.svc.{Z}", "SRV",
     {f"_https._tcp.kubernetes.default.svc.{Z} SRV 0 100 443 kubernetes.default.svc.{Z}"}),
    (f"_alt._udp.dual.default.svc.{Z}", "SRV", {f"_alt._udp.dual.default.svc.{Z} SRV 0 100 81 dual.default.svc.{Z}"}),
    (f"_alt._tcp.dual.default.svc.{Z}", "SRV", NX),
    (f"_nope._tcp.kubernetes.default.svc.{Z}", "SRV", NX),
    (f"kubernetes.default.svc.{Z}", "SRV", {f"kubernetes.default.svc.{Z} SRV 0 100 443 kubernetes.default.svc.{Z}"}),
    # 2.3.3 PTR of Service IPs (both families)
    ("1.0.96.10.in-addr.arpa.", "PTR", {f"1.0.96.10.in-addr.arpa. PTR kubernetes.default.svc.{Z}"}),
    (ipaddress.ip_address("fd00:96::20").reverse_pointer + ".", "PTR",
     {f"{ipaddress.ip_address('fd00:96::20').reverse_pointer}. PTR dual.default.svc.{Z}"}),
    # 2.4 headless: ready endpoints only (not-ready and terminating left out), both families merged
    (f"headless.default.svc.{Z}", "A",
     {f"headless.default.svc.{Z} A 10.244.1.10", f"headless.default.svc.{Z} A 10.244.1.11"}),
    (f"headless.default.svc.{Z}", "AAAA", {f"headless.default.svc.{Z} AAAA fd00:244:1::10"}),
    (f"pet-0.headless.default.svc.{Z}", "A", {f"pet-0.headless.default.svc.{Z} A 10.244.1.10"}),
    (f"pet-0.headless.default.svc.{Z}", "AAAA", {f"pet-0.headless.default.svc.{Z} AAAA fd00:244:1::10"}),
    (f"10-244-1-11.headless.default.svc.{Z}", "A", {f"10-244-1-11.headless.default.svc.{Z} A 10.244.1.11"}),
    (f"10-244-1-12.headless.default.svc.{Z}", "A", NX),          # not ready
    (f"10-244-1-13.headless.default.svc.{Z}", "A", NX),          # terminating
    (f"pet-9.headless.default.svc.{Z}", "A", NX),
    (f"_http._tcp.headless.default.svc.{Z}", "SRV",
     {f"_http._tcp.headless.default.svc.{Z} SRV 0 50 8080 pet-0.headless.default.svc.{Z}",
      f"_http._tcp.headless.default.svc.{Z} SRV 0 50 8080 10-244-1-11.headless.default.svc.{Z}"}),
    ("10.1.244.10.in-addr.arpa.", "PTR", {f"10.1.244.10.in-addr.arpa. PTR pet-0.headless.default.svc.{Z}"}),
    (f"headless-empty.default.svc.{Z}", "A", NX),                # no ready endpoint: NXDOMAIN (2.4.1)
    # 2.5 ExternalName: a CNAME, chased in the zone and upstream; nothing below it
    (f"alias.default.svc.{Z}", "A",
     {f"alias.default.svc.{Z} CNAME kubernetes.default.svc.{Z}", f"kubernetes.default.svc.{Z} A 10.96.0.1"}),
    (f"ext.default.svc.{Z}", "A", {f"ext.default.svc.{Z} CNAME www.example.org.", "www.example.org. A 192.0.2.80"}),
    (f"ext.default.svc.{Z}", "CNAME", {f"ext.default.svc.{Z} CNAME www.example.org."}),
    (f"x.ext.default.svc.{Z}", "A", NX),
    # the tree above the Services
    (Z, "SOA", {f"{Z} SOA ns.dns.{Z} hostmaster.{Z} *"}),
    (Z, "NS", {f"{Z} NS ns.dns.{Z}"}),
    (Z, "A", NODATA),
    (f"svc.{Z}", "A", NODATA),
    (f"pod.{Z}", "A", NODATA),
    (f"default.svc.{Z}", "A", NODATA),
    (f"empty.svc.{Z}", "A", NODATA),                            # a namespace without Services
    (f"missing.svc.{Z}", "A", NX),
    (f"nope.default.svc.{Z}", "A", NX),
    (f"kubernetes.missing.svc.{Z}", "A", NX),
    (f"foo.{Z}", "A", NX),
    (f"a.b.c.d.kubernetes.default.svc.{Z}", "A", NX),
    (f"ns.dns.{Z}", "A", {f"ns.dns.{Z} A 10.96.0.10"}),
    # pods are disabled by default
    (f"10-244-1-50.default.pod.{Z}", "A", NX),
    # other names go upstream
    ("www.example.org.", "A", {"www.example.org. A 192.0.2.80"}),
    ("nothing.example.org.", "A", NX),
    ("11.1.244.10.in-addr.arpa.", "PTR", NX),                  # no hostname: upstream (fallthrough)
]


def _expect(msg, expected):
    if expected == NX:
        assert msg.rcode() == dns.rcode.NXDOMAIN
    else:
        assert msg.rcode() == dns.rcode.NOERROR
    if expected in (NX, NODATA):
        assert not msg.answer
        if msg.flags & dns.flags.AA:
            # NXDOMAIN and NODATA carry the zone's SOA for negative caching (RFC 2308)
            assert [rr.rdtype for rr in msg.authority] == [dns.rdatatype.SOA]
        return
    got = {" ".join(a) for a in answers(msg)}
    for e in expected:
        if e.endswith("*"):
            assert any(g.startswith(e[:-1]) for g in got), (e, got)
    assert {g for g in got if not any(e.endswith("*") and g.startswith(e[:-1]) for e in expected)} == \
        {e for e in expected if not e.endswith("*")}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("name,rdtype,expected", TABLE, ids=[f"{n}{t}" for n, t, _ in TABLE])
def test_spec_table(server, name, rdtype, expected, tcp):
    _expect(ask(server, name, rdtype, tcp=tcp), expected)


def test_zone_answers_are_authoritative_and_recursion_available(server):
    msg = ask(server, f"kubernetes.default.svc.{Z}")
    assert msg.flags & dns.flags.AA and msg.flags & dns.flags.RA and msg.flags & dns.flags.RD
    assert not ask(server, "www.example.org.").flags & dns.flags.AA


def test_nxdomain_and_nodata_carry_the_zone_soa(server):
    for name, rcode in ((f"nope.default.svc.{Z}", dns.rcode.NXDOMAIN), (f"default.svc.{Z}", dns.rcode.NOERROR)):
        msg = ask(server, name)
        assert msg.rcode() == rcode and not msg.answer
        soa = msg.authority[0]
        assert soa.name.to_text() == Z and soa.ttl == 5
        assert soa[0].mname.to_text() == f"ns.dns.{Z}" and soa[0].minimum == 5


def test_srv_answers_carry_their_targets_addresses(server):
    msg = ask(server, f"_http._tcp.headless.default.svc.{Z}", "SRV")
    extra = {(r.name.to_text(), rd.to_text()) for r in msg.additional for rd in r}
    assert extra == {(f"pet-0.headless.default.svc.{Z}", "10.244.1.10"),
                     (f"pet-0.headless.default.svc.{Z}", "fd00:244:1::10"),
                     (f"10-244-1-11.headless.default.svc.{Z}", "10.244.1.11")}
    msg = ask(server, f"_https._tcp.kubernetes.default.svc.{Z}", "SRV")
    assert {rd.to_text() for r in msg.additional for rd in r} == {"10.96.0.1"}


def test_ns_answer_has_the_server_address_as_glue(server):
    msg = ask(server, Z, "NS")
    assert {(r.name.to_text(), rd.to_text()) for r in msg.additional for rd in r} == {(f"ns.dns.{Z}", "10.96.0.10")}


def test_matching_is_case_insensitive_and_the_question_case_is_echoed(server):
    name = f"KuBeRnEtEs.DEFAULT.svc.Cluster.Local."
    for tcp in (False, True):
        msg = ask(server, name, tcp=tcp)    # dnspython checks the question matches exactly
        assert msg.question[0].name.to_text() == name
        assert msg.answer[0].name.to_text() == name and msg.answer[0][0].to_text() == "10.96.0.1"
    assert ask(server, f"_HTTPS._TCP.kubernetes.default.svc.{Z}", "SRV").answer


def test_edns0(server):
    msg = ask(server, f"kubernetes.default.svc.{Z}", use_edns=0, payload=4096, want_dnssec=True)
    assert msg.edns == 0 and msg.payload == 1232 and msg.ednsflags & dns.flags.DO
    msg = ask(server, f"kubernetes.default.svc.{Z}", use_edns=0)
    assert msg.edns == 0 and not msg.ednsflags & dns.flags.DO
    assert ask(server, f"kubernetes.default.svc.{Z}").edns == -1    # no OPT without EDNS in the query
    msg = ask(server, f"kubernetes.default.svc.{Z}", use_edns=1)    # RFC 6891 6.1.3: BADVERS, version 0
    assert msg.rcode() == dns.rcode.BADVERS and msg.edns == 0 and not msg.answer


def _big_headless(n):
    eps = "\n".join(f"  - {{addresses: [10.245.{i // 250}.{i % 250 + 1}]}}" for i in range(n))
    return loads(f"""
apiVersion: v1
kind: Service
metadata: {{name: big, namespace: default}}
spec: {{clusterIP: None, ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: big-1, namespace: default, labels: {{kubernetes.io/service-name: big}}}}
addressType: IPv4
ports: [{{name: http, port: 80, protocol: TCP}}]
endpoints:
{eps}
""")


def test_truncated_over_udp_then_whole_over_tcp(server):
    big = _big_headless(100)    # 100 A records: ~1,650 bytes
    server.on_service(None, big.services[0])
    server.on_endpoint_slice(None, big.endpoint_slices[0])
    try:
        name = f"big.default.svc.{Z}"
        udp = ask(server, name)
        assert udp.flags & dns.flags.TC and not udp.answer
        edns = ask(server, name, use_edns=0, payload=4096)      # above our 1232 limit: still TC
        assert edns.flags & dns.flags.TC and edns.edns == 0
        tcp = ask(server, name, tcp=True)
        assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 100
        resolver = dns.resolver.Resolver(configure=False)     # a stub resolver retries over TCP itself
        resolver.nameservers, resolver.port = [server.server.address[0]], server.server.address[1]
        assert len(resolver.resolve(name, "A")) == 100
        small = ask(server, f"kubernetes.default.svc.{Z}")
        assert not small.flags & dns.flags.TC
    finally:
        server.on_endpoint_slice(big.endpoint_slices[0], None)
        server.on_service(big.services[0], None)
    assert ask(server, f"big.default.svc.{Z}").rcode() == dns.rcode.NXDOMAIN


def test_upstream_answers_are_cached(server, upstream):
    resolver, _ = upstream
    before = len([q for q in resolver.queries if q[0] == "mirror.example.org."])
    for _ in range(3):
        msg = ask(server, "mirror.example.org.")
        assert answers(msg) == {("mirror.example.org.", "A", "192.0.2.81")}
        assert 0 < msg.answer[0].ttl <= 300
    assert len([q for q in resolver.queries if q[0] == "mirror.example.org."]) == before + 1
    for _ in range(2):                                       # negative answers too (RFC 2308)
        assert ask(server, "missing.example.org.").rcode() == dns.rcode.NXDOMAIN
    assert len([q for q in resolver.queries if q[0] == "missing.example.org."]) == 1


def test_no_upstream_answers_servfail(config):
    from dataplane.config.dataplane import DnsConfig
    from dataplane.dns import DnsService
    service = DnsService(DnsConfig(upstreams=((ipaddress.ip_address("127.0.0.1"), 9),)))
    service.resolver.timeout = 0.2
    service.load_config(config)
    service.start(("127.0.0.1", 0))
    try:
        assert ask(service, "www.example.org.").rcode() == dns.rcode.SERVFAIL
        assert ask(service, f"kubernetes.default.svc.{Z}").rcode() == dns.rcode.NOERROR
    finally:
        service.stop()


@pytest.mark.parametrize("name,rdtype,expected", [
    (f"10-244-1-50.default.pod.{Z}", "A", {"disabled": NX, "insecure": "10.244.1.50", "verified": "10.244.1.50"}),
    (f"1-2-3-4.default.pod.{Z}", "A", {"disabled": NX, "insecure": "1.2.3.4", "verified": NX}),
    (f"10-244-1-50.empty.pod.{Z}", "A", {"disabled": NX, "insecure": "10.244.1.50", "verified": NX}),
    (f"10-244-1-50.missing.pod.{Z}", "A", {"disabled": NX, "insecure": NX, "verified": NX}),
    (f"fd00-244-1--50.default.pod.{Z}", "AAAA", {"disabled": NX, "insecure": "fd00:244:1::50",
                                                 "verified": "fd00:244:1::50"}),
    (f"10-244-1-50.default.pod.{Z}", "AAAA", {"disabled": NX, "insecure": NODATA, "verified": NODATA}),
    (f"not-an-ip.default.pod.{Z}", "A", {"disabled": NX, "insecure": NX, "verified": NX}),
    (f"default.pod.{Z}", "A", {"disabled": NODATA, "insecure": NODATA, "verified": NODATA}),
])
def test_pod_records_in_each_mode(pods_server, name, rdtype, expected):
    mode, service = pods_server
    want = expected[mode]
    msg = ask(service, name, rdtype)
    if want in (NX, NODATA):
        _expect(msg, want)
    else:
        assert answers(msg) == {(name.lower(), rdtype, want)}


def test_endpoints_changing_while_queried(server):
    """A writer flips the endpoints of a headless Service between two sets while readers ask:
    every answer is one whole set, never a mix or an error."""
    base = loads("""
apiVersion: v1
kind: Service
metadata: {name: flip, namespace: default}
spec: {clusterIP: None, ports: [{name: http, port: 80}]}
""").services[0]
    sets = [tuple(f"10.246.{k}.{i}" for i in range(1, 6)) for k in (1, 2)]

    def slice_of(ips):
        return EndpointSlice("default", "flip-1", "flip", "IPv4",
                             tuple(Endpoint((ipaddress.ip_address(ip),)) for ip in ips))

    server.on_service(None, base)
    current = slice_of(sets[0])
    server.on_endpoint_slice(None, current)
    stop = threading.Event()

    def writer():
        nonlocal current
        k = 0
        while not stop.is_set():
            k ^= 1
            new = slice_of(sets[k])
            server.on_endpoint_slice(current, new)
            current = new

    t = threading.Thread(target=writer)
    t.start()
    seen = set()
    try:
        for i in range(300):
            msg = ask(server, f"flip.default.svc.{Z}", tcp=bool(i % 2))
            got = tuple(sorted(rd.to_text() for rd in msg.answer[0]))
            assert got in (tuple(sorted(sets[0])), tuple(sorted(sets[1])))
            seen.add(got)
    finally:
        stop.set()
        t.join()
        server.on_endpoint_slice(current, None)
        server.on_service(base, None)
    assert ask(server, f"flip.default.svc.{Z}").rcode() == dns.rcode.NXDOMAIN


def test_bad_messages_get_an_error_or_nothing(server):
    import socket
    host, port = server.server.address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00", (host, port))   # two questions, none there
        reply = s.recv(512)
        assert reply[:2] == b"\x12\x34" and reply[3] & 0xF == 1                      # FORMERR
        s.sendto(b"\x12\x35\x28\x00" + bytes(8), (host, port))                       # opcode UPDATE
        reply = s.recv(512)
        assert reply[:2] == b"\x12\x35" and reply[3] & 0xF == 4                      # NOTIMP
        s.sendto(b"\x01", (host, port))                                              # not even a header: ignored
        assert ask(server, f"kubernetes.default.svc.{Z}").answer                     # and still serving


def _zone(text, **settings):
    from dataclasses import replace as _replace
    from dataplane.config.dataplane import DnsConfig
    from dataplane.dns import Zone
    zone = Zone(_replace(DnsConfig(), **settings))
    zone.load_config(loads(text))
    return zone


NAMED = """
apiVersion: v1
kind: Service
metadata: {name: named, namespace: default}
spec: {clusterIP: None, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: named-1, namespace: default, labels: {kubernetes.io/service-name: named}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints: [{addresses: [10.244.1.50]}, {addresses: [10.244.1.51], hostname: fixed}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-0, namespace: default}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.244.1.50}
"""


def test_endpoint_pod_names():
    """CoreDNS endpoint_pod_names: an endpoint without a hostname is named after its pod."""
    from dnslib import QTYPE
    plain, named = _zone(NAMED), _zone(NAMED, endpoint_pod_names=True)
    assert plain.resolve(f"10-244-1-50.named.default.svc.{Z}", QTYPE.A).answers
    assert named.resolve(f"10-244-1-50.named.default.svc.{Z}", QTYPE.A).rcode == 3
    assert str(named.resolve(f"client-0.named.default.svc.{Z}", QTYPE.A).answers[0].rdata) == "10.244.1.50"
    assert named.resolve(f"fixed.named.default.svc.{Z}", QTYPE.A).answers       # a hostname still wins
    srv = {str(rr.rdata.target) for rr in named.resolve(f"_http._tcp.named.default.svc.{Z}", QTYPE.SRV).answers}
    assert srv == {f"client-0.named.default.svc.{Z}", f"fixed.named.default.svc.{Z}"}
    pod = loads(NAMED).pods[0]
    from dataclasses import replace as _replace
    renamed = _replace(pod, name="client-1")
    named.on_pod(pod, renamed)                  # the endpoint's name follows its pod
    assert named.resolve(f"client-1.named.default.svc.{Z}", QTYPE.A).answers
    assert named.resolve(f"client-0.named.default.svc.{Z}", QTYPE.A).rcode == 3


def test_externalname_loop_ends():
    from dnslib import QTYPE
    zone = _zone("""
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
spec: {type: ExternalName, externalName: b.default.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: default}
spec: {type: ExternalName, externalName: a.default.svc.cluster.local}
""")
    ans = zone.resolve(f"a.default.svc.{Z}", QTYPE.A)
    assert ans.rcode == 0 and 2 <= len(ans.answers) <= 10 and all(rr.rtype == QTYPE.CNAME for rr in ans.answers)


def test_namespace_events_decide_nxdomain_or_nodata():
    from dnslib import QTYPE
    from dataplane.config.workloads import Namespace
    zone = _zone("")
    assert zone.resolve(f"team.svc.{Z}", QTYPE.A).rcode == 3
    zone.on_namespace(None, Namespace("team", {}))
    assert zone.resolve(f"team.svc.{Z}", QTYPE.A).rcode == 0
    zone.on_namespace(Namespace("team", {}), None)
    assert zone.resolve(f"team.svc.{Z}", QTYPE.A).rcode == 3


def test_truncated_upstream_answer_stays_truncated_and_tcp_gets_it_whole(server):
    udp = ask(server, "big.example.org.")
    assert udp.flags & dns.flags.TC and not udp.answer          # never a partial answer as if whole
    tcp = ask(server, "big.example.org.", tcp=True)             # we ask upstream over TCP in turn
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 60


def test_queries_waiting_for_upstream_are_bounded(config):
    """A silent upstream: beyond max_forwards waiting queries, the next ones are REFUSED at once
    (CoreDNS forward's max_concurrent) while the zone is still answered."""
    import socket
    from dataplane.config.dataplane import DnsConfig
    from dataplane.dns import DnsService
    from dataplane.dns.server import DnsServer
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    service = DnsService(DnsConfig(upstreams=((ipaddress.ip_address("127.0.0.1"), silent.getsockname()[1]),)))
    service.load_config(config)
    service.resolver.timeout = 1.0
    service.server = DnsServer(service.resolver, "127.0.0.1", 0, max_forwards=2)
    try:
        host, port = service.server.address
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(3)
            for k in range(4):
                c.sendto(dns.message.make_query(f"n{k}.example.org.", "A", id=k).to_wire(), (host, port))
            first = [dns.message.from_wire(c.recv(512)) for _ in range(2)]
            assert sorted(m.id for m in first) == [2, 3] and {m.rcode() for m in first} == {dns.rcode.REFUSED}
            assert ask(service, f"kubernetes.default.svc.{Z}").answer
            rest = [dns.message.from_wire(c.recv(512)) for _ in range(2)]
            assert {m.rcode() for m in rest} == {dns.rcode.SERVFAIL}
    finally:
        service.stop()
        silent.close()


def test_packed_hot_answers_equal_fresh_packing(server):
    """Hot names are answered from records packed once; those answers are exactly what packing
    the zone's answer for this very query gives (any case, EDNS or not, both transports)."""
    import random
    from dnslib import QTYPE
    from dataplane.dns.wire import finish, pack_answer, parse_query
    rng = random.Random(3)
    names = sorted(server.zone.hot_names())
    assert names
    for name, qtype in names:
        text = "".join(c.upper() if rng.random() < 0.5 else c for c in name) + "."
        for edns in (-1, 0):
            data = dns.message.make_query(text, QTYPE[qtype], use_edns=edns).to_wire()
            q = parse_query(data)
            ans = server.zone.resolve(q.qname, q.qtype)
            for udp in (True, False):
                fresh = finish(q, pack_answer(q, ans.rcode, ans.answers, ans.authority, ans.additional), udp)
                assert server.resolver.handle(data, udp) == fresh, (name, qtype)
