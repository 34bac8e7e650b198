"""kube-proxy's health servers (pkg/proxy/healthcheck), with its URLs, JSON and status codes.

    health = ProxyHealth("0.0.0.0:10256", health_timeout_s=2 * sync_period)
    health.start()
    health.queued_update()      # a Service/EndpointSlice change is waiting
    health.updated()            # ... and is now programmed
    health.sync_node(node)      # this node's Node (None: deleted)

- ProxyHealth (proxy_health.go) serves /healthz and /livez. The proxy is healthy unless an
  update was queued more than health_timeout_s ago and not applied since (kube-proxy passes 2 x
  syncPeriod). /healthz is also 503 while the node is not eligible: being deleted, or tainted
  ToBeDeletedByClusterAutoscaler, so load balancers drain it first. A healthy answer reports
  lastUpdated as the current time, as kube-proxy does for compatibility.
- ServiceHealth (service_health.go) opens one listener per healthCheckNodePort (LoadBalancer
  Services with externalTrafficPolicy Local) on the node-port addresses; any path answers 200
  with the count of this node's ready endpoints, or 503 with none or while the proxy is
  unhealthy. Cloud load balancers probe these to send traffic only to nodes with endpoints.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable

__all__ = ["HttpServer", "ProxyHealth", "ServiceHealth", "TO_BE_DELETED_TAINT", "go_time", "split_host_port"]

log = logging.getLogger(__name__)
TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"


def go_time(ts: float | None) -> str:
    """A timestamp as Go's time.Time.String() prints it in UTC (zero time for None)."""
    if ts is None:
        return "0001-01-01 00:00:00 +0000 UTC"
    dt = datetime.fromtimestamp(ts, timezone.utc)
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return dt.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, handler):
        # Go listens on a dual-stack socket for the wildcard "0.0.0.0" as for "::".
        ip = ipaddress.ip_address(host or "0.0.0.0")
        self.dual_stack = ip.is_unspecified and socket.has_ipv6
        self.address_family = socket.AF_INET6 if ip.version == 6 or self.dual_stack else socket.AF_INET
        super().__init__(("::" if self.dual_stack else str(ip), port), handler)

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if self.dual_stack else 1)
        super().server_bind()


class _Handler(BaseHTTPRequestHandler):
    """Routes GET/HEAD to server.answer(path) -> (status, body) or None (404)."""
    protocol_version = "HTTP/1.1"

    def _reply(self, body_too: bool):
        answer = self.server.answer(self.path.split("?", 1)[0])
        status, body = answer if answer else (404, b"404 page not found\n")
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if answer else "text/plain; charset=utf-8")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body_too:
            self.wfile.write(body)

    def do_GET(self):
        self._reply(True)

    def do_HEAD(self):
        self._reply(False)

    def log_message(self, fmt, *args):
        log.debug("health %s: " + fmt, self.address_string(), *args)


def _serve(host: str, port: int, answer: Callable) -> HttpServer:
    server = HttpServer(host, port, _Handler)
    server.answer = answer
    threading.Thread(target=server.serve_forever, name=f"health-{port}", daemon=True).start()
    return server


class ProxyHealth:
    """The proxy's own health (healthzBindAddress): /healthz and /livez."""

    def __init__(self, bind_address: str, health_timeout_s: float, clock: Callable[[], float] = time.time):
        self.bind_address = bind_address
        self.health_timeout_s = health_timeout_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last_updated: dict[str, float] = {}      # family -> time of the last successful sync
        self._oldest_queued: dict[str, float] = {}     # family -> first change not yet synced
        self._node_eligible = True                     # until a Node event says otherwise
        self._server: HttpServer | None = None

    @property
    def port(self) -> int | None:
        return self._server.server_address[1] if self._server else None

    def start(self) -> None:
        """Listen and serve in a thread; OSError if the address cannot be bound."""
        host, port = split_host_port(self.bind_address)
        self._server = _serve(host, port, self._answer)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def queued_update(self, family: str = "IPv4") -> None:
        with self._lock:
            self._oldest_queued.setdefault(family, self.clock())

    def updated(self, family: str = "IPv4") -> None:
        with self._lock:
            self._oldest_queued.pop(family, None)
            self._last_updated[family] = self.clock()

    def sync_node(self, node) -> None:
        """Eligible unless deleted (None or being deleted) or tainted for deletion by the autoscaler."""
        with self._lock:
            self._node_eligible = node is not None and not node.deleting and TO_BE_DELETED_TAINT not in node.taints

    @property
    def node_eligible(self) -> bool:
        return self._node_eligible

    def healthy(self) -> tuple[bool, float | None]:
        """(healthy, lastUpdated): unhealthy once a queued change has waited a full timeout."""
        with self._lock:
            now, last = self.clock(), None
            for family, updated in self._last_updated.items():
                last = updated if last is None else max(last, updated)
                queued = self._oldest_queued.get(family)
                if queued is not None and now - queued >= self.health_timeout_s:
                    return False, updated
            return True, last

    def is_healthy(self) -> bool:
        return self.healthy()[0]

    def _answer(self, path: str):
        if path not in ("/healthz", "/livez"):
            return None
        healthy, last = self.healthy()
        now = self.clock()
        eligible = self._node_eligible
        if path == "/healthz":
            healthy = healthy and eligible
        if healthy:
            last = now
        body = f'{{"lastUpdated": {json.dumps(go_time(last))},"currentTime": {json.dumps(go_time(now))}'
        body += f', "nodeEligible": {json.dumps(eligible)}}}' if path == "/healthz" else "}"
        return (200 if healthy else 503), body.encode()


class ServiceHealth:
    """healthCheckNodePort servers: one per Service, on every address in `addresses`
    (["0.0.0.0"] when nodePortAddresses matches all, else the matching node IPs)."""

    def __init__(self, addresses: Iterable = ("0.0.0.0",), proxy_health: ProxyHealth | None = None,
                 hostname: str = ""):
        self.addresses = [str(a) for a in addresses]
        self.proxy_health = proxy_health
        self.hostname = hostname
        self._lock = threading.Lock()
        self._services: dict[tuple[str, str], tuple[int, list[HttpServer]]] = {}
        self._endpoints: dict[tuple[str, str], int] = {}
        self.errors: list[str] = []          # listeners that failed in the last sync_services

    def ports(self) -> dict[tuple[str, str], int]:
        """Open listeners: Service -> bound port (the real one when 0 was asked for)."""
        with self._lock:
            return {k: servers[0].server_address[1] for k, (_, servers) in self._services.items() if servers}

    def sync_services(self, services: dict[tuple[str, str], int]) -> list[str]:
        """Make exactly these (namespace, name) -> port listeners open; unchanged ones stay.
        A port that cannot be bound is reported (returned and logged) and retried next call."""
        self.errors = []
        with self._lock:
            for key, (port, servers) in list(self._services.items()):
                if services.get(key) != port:
                    _close(servers)
                    del self._services[key]
            for key, port in services.items():
                if key in self._services:
                    continue
                servers = []
                try:
                    for host in self.addresses:
                        servers.append(_serve(host, port, lambda path, key=key: self._answer(key)))
                except OSError as e:
                    _close(servers)
                    msg = (f"node {self.hostname} failed to start healthcheck \"{key[0]}/{key[1]}\" "
                           f"on port {port}: {e.strerror or e}")
                    log.error("%s", msg)
                    self.errors.append(msg)
                    continue
                self._services[key] = (port, servers)
        return self.errors

    def sync_endpoints(self, endpoints: dict[tuple[str, str], int]) -> None:
        """Local ready endpoint counts; Services not listed have none."""
        with self._lock:
            self._endpoints = dict(endpoints)

    def stop(self) -> None:
        self.sync_services({})

    def _answer(self, key: tuple[str, str]):
        with self._lock:
            if key not in self._services:
                return None
            count = self._endpoints.get(key, 0)
        proxy_healthy = self.proxy_health.is_healthy() if self.proxy_health else True
        body = (f'{{\n\t"service": {{\n\t\t"namespace": {json.dumps(key[0])},\n\t\t"name": {json.dumps(key[1])}\n\t}},'
                f'\n\t"localEndpoints": {count},\n\t"serviceProxyHealthy": {json.dumps(proxy_healthy)}\n}}')
        return (200 if count and proxy_healthy else 503), body.encode()


def _close(servers: list[HttpServer]) -> None:
    for s in servers:
        s.shutdown()
        s.server_close()
