"""The node's DNS server: UDP and TCP listeners in front of a Resolver, and DnsService, the API
`dataplane run` and `dataplane dns` use (zone events in, a fast-path table out).

Inside `dataplane run` (the intended wiring):

    service = DnsService(config.dataplane.dns)
    service.load_config(config)                      # then the informer events:
    service.on_service(old, new)                     #   on_endpoint_slice, on_pod, on_namespace
    service.start((str(node_ip), 53))                # UDP + TCP, in-process threads
    slices = service.node_endpoint_slices(node_name, node_ips)   # kube-dns -> this node
    pipeline.dns = service.compile_stage_table()     # after each change, between bursts
    service.stop()

The proxier gets `slices` instead of the kube-dns Service's own EndpointSlices, so the queries
the stage leaves pending are DNATed to the node's server and the answers reverse-NATed.
"""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from dataplane.config.dataplane import DnsConfig
from dataplane.config.k8s import Endpoint, EndpointPort, EndpointSlice

from .resolver import Resolver, recv_message, system_upstreams
from .stage import TableCompiler
from .wire import RCODE_REFUSED, BadQuery, error, header_error, parse_query
from .zone import Zone

TCP_IDLE_S = 10.0       # RFC 7766 6.2.3: close idle connections after seconds, not minutes
MAX_FORWARDS = 1000     # queries waiting for upstream; more are REFUSED (CoreDNS forward's max_concurrent)
MAX_TCP = 256           # open TCP connections; more are closed at once
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)   # Linux <netinet/in.h>; Python does not export it


class DnsServer:
    """UDP and TCP on one address and port. Zone answers are built on the receiving thread;
    forwarded queries wait for upstream on a small pool so they never hold up the others."""

    def __init__(self, resolver: Resolver, host: str, port: int, workers: int = 16,
                 max_forwards: int = MAX_FORWARDS, max_tcp: int = MAX_TCP):
        self.resolver = resolver
        self._forwards = threading.BoundedSemaphore(max_forwards)
        self._connections = threading.BoundedSemaphore(max_tcp)
        self.udp, self.tcp = _bind(host, port)
        self.address = self.udp.getsockname()[:2]
        # On a wildcard address each answer must leave from the address its query was sent to
        # (stub resolvers drop answers from another one): learn it per datagram (IP_PKTINFO).
        self._wildcard = ipaddress.ip_address(host).is_unspecified
        if self._wildcard:
            if self.udp.family == socket.AF_INET:
                self.udp.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            else:
                self.udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dns-forward")
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve_udp, name="dns-udp", daemon=True),
                         threading.Thread(target=self._serve_tcp, name="dns-tcp", daemon=True)]
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._stop.set()
        for s in (self.udp, self.tcp):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _serve_udp(self) -> None:
        resolver = self.resolver
        while not self._stop.is_set():
            try:
                if self._wildcard:
                    data, ancillary, _, peer = self.udp.recvmsg(65535, 256)
                    peer = (peer, _reply_source(ancillary))
                else:
                    data, peer = self.udp.recvfrom(65535)
                    peer = (peer, None)
            except OSError:
                return
            try:
                q = parse_query(data)
            except BadQuery as e:
                if e.rcode is not None:
                    self._send(header_error(data, e.rcode), peer)
                continue
            wire = resolver.local(q, udp=True, chase=False)
            if wire is not None:
                self._send(wire, peer)
            elif self._forwards.acquire(blocking=False):   # upstream: never on this thread
                self._pool.submit(self._forward, q, peer)
            else:
                self._send(error(q, RCODE_REFUSED), peer)

    def _forward(self, q, peer) -> None:
        try:
            self._send(self.resolver.answer(q, udp=True), peer)
        finally:
            self._forwards.release()

    def _send(self, wire: bytes | None, to) -> None:
        """to: (peer address, the source address control message or None)."""
        peer, source = to
        if wire is not None:
            try:
                if source is None:
                    self.udp.sendto(wire, peer)
                else:
                    self.udp.sendmsg([wire], [source], 0, peer)
            except OSError as e:  # a peer gone away must not stop the server
                print(f"dataplane dns: reply to {peer[0]}: {e.strerror or e}", file=sys.stderr)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            if not self._connections.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def _serve_conn(self, conn: socket.socket) -> None:
        with conn, _released(self._connections):
            conn.settimeout(TCP_IDLE_S)
            while not self._stop.is_set():
                try:
                    data = recv_message(conn)
                    if data is None:
                        return
                    wire = self.resolver.handle(data, udp=False)
                    if wire is None:
                        return
                    conn.sendall(struct.pack("!H", len(wire)) + wire)
                except OSError:
                    return


def _reply_source(ancillary) -> tuple | None:
    """The control message that makes an answer leave from the query's destination address."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            _, _, dst = struct.unpack("=I4s4s", data[:12])
            return level, kind, struct.pack("=I4s4s", 0, dst, bytes(4))   # ipi_spec_dst: the source
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            return level, kind, data                                       # in6_pktinfo as received
    return None


@contextlib.contextmanager
def _released(sem: threading.BoundedSemaphore):
    try:
        yield
    finally:
        sem.release()


def _bind(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on one port; with port 0, a port free for both (UDP picks, TCP may
    find it taken and then we pick again)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for attempt in range(32):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(128)
            return udp, tcp
        except OSError as e:
            udp.close()
            tcp.close()
            if port or e.errno != errno.EADDRINUSE or attempt == 31:
                raise
    raise AssertionError("unreachable")


class DnsService:
    """Cluster DNS for one node. Feed it objects (load_config, or the informer handlers
    on_service / on_endpoint_slice / on_pod / on_namespace), serve it (start / stop), and give the
    fast path its table (compile_stage_table, to swap into the DNS stage between bursts)."""

    def __init__(self, settings: DnsConfig, zone: Zone | None = None):
        self.settings = settings
        self.zone = zone or Zone(settings)
        self.resolver = Resolver(self.zone, settings.upstreams or system_upstreams())
        self.server: DnsServer | None = None
        self._compiler = TableCompiler(self.zone)
        self.on_service = self.zone.on_service
        self.on_endpoint_slice = self.zone.on_endpoint_slice
        self.on_pod = self.zone.on_pod
        self.on_namespace = self.zone.on_namespace
        self.load_config = self.zone.load_config

    def start(self, listen: tuple[str, int]) -> tuple[str, int]:
        """Serve UDP and TCP on (host, port); returns the bound address (port 0 picks one).
        An upstream that is this server itself (a resolv.conf naming the node-local DNS) is
        dropped: forwarding to it would loop."""
        self.server = DnsServer(self.resolver, *listen)
        host, port = self.server.address
        me = ipaddress.ip_address(host)

        def is_self(addr: str, p: int) -> bool:
            a = ipaddress.ip_address(addr)
            return p == port and (a == me or (me.is_unspecified and (a.is_loopback or a.is_unspecified)))

        looping = [u for u in self.resolver.upstreams if is_self(*u)]
        if looping:
            print(f"dataplane dns: not forwarding to {', '.join(f'{a}:{p}' for a, p in looping)}: "
                  "that is this server", file=sys.stderr)
            self.resolver.upstreams = tuple(u for u in self.resolver.upstreams if u not in looping)
        return self.server.address

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def service_ips(self) -> tuple:
        """Cluster IPs of the cluster DNS Service (settings.service), the addresses pods query."""
        ns, name = self.settings.service.split("/")
        svc = self.zone.services().get((ns, name))
        return svc.cluster_ips if svc is not None else ()

    def node_endpoint_slices(self, node_name: str, node_ips, port: int = 53) -> tuple[EndpointSlice, ...]:
        """The cluster DNS Service's endpoints when this node serves it: the node itself, one
        slice per address family, with the Service's port names (kube-proxy matches endpoint
        ports by name) on `port`. Given to the proxier instead of the Service's own slices, the
        queries the stage leaves pending are DNATed to this node's server."""
        ns, name = self.settings.service.split("/")
        svc = self.zone.services().get((ns, name))
        if svc is None:
            return ()
        ports = tuple(EndpointPort(p.name, p.protocol, port) for p in svc.ports)
        out = []
        for family in (4, 6):
            ips = tuple(ipaddress.ip_address(a) for a in node_ips if ipaddress.ip_address(a).version == family)
            if ips:
                out.append(EndpointSlice(ns, f"{name}-node-local-ipv{family}", name, f"IPv{family}",
                                         (Endpoint(ips[:1], node_name=node_name),), ports))
        return tuple(out)

    def compile_stage_table(self, addresses=None):
        """A DnsTable of the zone's hot answers for the fast path, answering queries sent to
        `addresses` (default: the cluster DNS Service's cluster IPs) on UDP port 53. Only the
        Services changed since the previous call are packed again."""
        return self._compiler.compile(self.service_ips() if addresses is None else
                                      tuple(ipaddress.ip_address(a) for a in addresses))
