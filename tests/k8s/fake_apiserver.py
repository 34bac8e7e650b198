"""An in-test Kubernetes API server: list and watch over HTTP, as kube-apiserver serves them.

No kube-apiserver can be installed here, so the dataplane's watch is tested against this one,
through the unmodified `kubernetes` client. What it implements, because the reflector depends on
it: JSON lists with metadata.resourceVersion, `limit` / `continue` pagination, label and field
selectors, chunked watch streams (ADDED / MODIFIED / DELETED / BOOKMARK / ERROR events) from a
resourceVersion, `410 Gone` (as an HTTP status for a list continue or a watch start, and as an
ERROR event in a running watch) once history is compacted, and server-side watch timeouts.

Used two ways: as a thread in the test process on loopback (`FakeApiServer().start()`), or as a
process inside a test's network namespace (`python fake_apiserver.py PORT CONTROL_SOCKET`)
driven over a Unix socket (`Control`), since Unix sockets cross network namespaces.
"""
from __future__ import annotations

import bisect
import json
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

RESOURCES = {   # path -> (kind, namespaced)
    "/api/v1/services": ("Service", True),
    "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSlice", True),
    "/apis/networking.k8s.io/v1/servicecidrs": ("ServiceCIDR", False),
    "/api/v1/nodes": ("Node", False),
}


class FakeApiServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, bookmark_interval: float = 0.5,
                 serve_service_cidrs: bool = True):
        self.host, self.port = host, port
        self.bookmark_interval = bookmark_interval
        self.serve = {p for p in RESOURCES if serve_service_cidrs or "servicecidrs" not in p}
        self.rv = 100
        self.objects: dict[str, dict[tuple, dict]] = {p: {} for p in RESOURCES}
        self.history: list[tuple[int, str, str, dict]] = []   # (rv, path, type, object), rv order
        self.history_rvs: list[int] = []                       # the rvs alone, for bisect
        self.compacted = 0           # events at or below this rv are gone: older watches get 410
        self.cond = threading.Condition()
        self.requests: list[str] = []
        self.watch_error_410 = False  # next watches get an ERROR 410 event instead of an HTTP 410
        self._server = None
        self._thread = None
        self._generation = 0         # bumped by drop_watches(): open watch streams end

    # ---- state changes (the test's side) ----

    def put(self, obj: dict) -> int:
        path = _path_of(obj)
        key = _key(obj)
        with self.cond:
            self.rv += 1
            obj = json.loads(json.dumps(obj))
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
            type_ = "MODIFIED" if key in self.objects[path] else "ADDED"
            self.objects[path][key] = obj
            self._log(path, type_, obj)
            return self.rv

    def delete(self, kind: str, namespace: str | None, name: str) -> int:
        path = next(p for p, (k, _) in RESOURCES.items() if k == kind)
        with self.cond:
            obj = self.objects[path].pop((namespace, name))
            self.rv += 1
            obj = dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(self.rv)))
            self._log(path, "DELETED", obj)
            return self.rv

    def _log(self, path: str, type_: str, obj: dict) -> None:
        self.history.append((self.rv, path, type_, obj))
        self.history_rvs.append(self.rv)
        self.cond.notify_all()

    def compact(self) -> None:
        """Forget the event history: a watch or continue from before now gets 410 Gone."""
        with self.cond:
            self.compacted = self.rv
            self.history.clear()
            self.history_rvs.clear()

    def drop_watches(self) -> None:
        """End every open watch stream (as an apiserver restart or a load balancer would)."""
        with self.cond:
            self._generation += 1
            self.cond.notify_all()

    # ---- serving ----

    def start(self) -> "FakeApiServer":
        fake = self
        handler = type("Handler", (_Handler,), {"fake": fake})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and end open watches (an outage); start() serves again, same port."""
        if self._server is not None:
            self.drop_watches()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def kubeconfig(self) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "test-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]})


class _Handler(BaseHTTPRequestHandler):
    fake: FakeApiServer = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        fake = self.fake
        fake.requests.append(self.path)
        if url.path not in fake.serve:
            return self._json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
        if q.get("watch") in ("true", "1"):
            return self._watch(url.path, q)
        return self._list(url.path, q)

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _list(self, path: str, q: dict) -> None:
        fake = self.fake
        with fake.cond:
            items = sorted(fake.objects[path].items())
            rv = fake.rv
            compacted = fake.compacted
        items = [o for _, o in items if _selected(o, q)]
        offset = 0
        if q.get("continue"):
            start_rv, offset = map(int, q["continue"].split(":"))
            if start_rv < compacted:
                return self._json(410, _status(410, "Expired", "the continue token is too old"))
            rv = start_rv
        limit = int(q.get("limit") or 0)
        page = items[offset:offset + limit] if limit else items[offset:]
        meta = {"resourceVersion": str(rv)}
        if limit and offset + limit < len(items):
            meta["continue"] = f"{rv}:{offset + limit}"
        kind = RESOURCES[path][0]
        self._json(200, {"kind": f"{kind}List", "apiVersion": _api_version(path), "metadata": meta, "items": page})

    def _watch(self, path: str, q: dict) -> None:
        fake = self.fake
        since = int(q.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 1800)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        with fake.cond:
            gone = since and since < fake.compacted
            as_event = fake.watch_error_410
            generation = fake._generation
        if gone and not as_event:
            return self._json(410, _status(410, "Expired", f"too old resource version: {since}"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if gone:
                self._chunk({"type": "ERROR", "object": _status(410, "Expired", f"too old resource version: {since}")})
                return self._end()
            sent = since
            next_bookmark = time.monotonic() + fake.bookmark_interval
            while time.monotonic() < deadline:
                with fake.cond:
                    if fake._generation != generation or fake._server is None:
                        break
                    first = bisect.bisect_right(fake.history_rvs, sent)
                    events = [e for e in fake.history[first:] if e[1] == path]
                    current = fake.rv
                    if not events:
                        fake.cond.wait(0.1)
                for rv, _, type_, obj in events:
                    if _selected(obj, q):
                        self._chunk({"type": type_, "object": obj})
                if events:
                    sent = events[-1][0]
                elif current > sent:
                    sent = current
                if bookmarks and time.monotonic() >= next_bookmark:
                    sent = max(sent, current)
                    kind = RESOURCES[path][0]
                    self._chunk({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": _api_version(path),
                                                                "metadata": {"resourceVersion": str(sent)}}})
                    next_bookmark = time.monotonic() + fake.bookmark_interval
            self._end()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _chunk(self, event: dict) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _api_version(path: str) -> str:
    return "v1" if path.startswith("/api/") else path.split("/")[2] + "/" + path.split("/")[3]


def _path_of(obj: dict) -> str:
    kind = obj["kind"]
    return next(p for p, (k, _) in RESOURCES.items() if k == kind)


def _key(obj: dict) -> tuple:
    meta = obj["metadata"]
    namespaced = RESOURCES[_path_of(obj)][1]
    return (meta.get("namespace", "default") if namespaced else None, meta["name"])


def _selected(obj: dict, q: dict) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for req in filter(None, (q.get("labelSelector") or "").split(",")):
        req = req.strip()
        if req.startswith("!"):
            if req[1:] in labels:
                return False
        elif "!=" in req:
            k, v = req.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in req:
            k, v = req.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif req not in labels:
            return False
    for req in filter(None, (q.get("fieldSelector") or "").split(",")):
        k, v = req.split("=", 1)
        if k == "metadata.name" and obj["metadata"]["name"] != v:
            return False
    return True


# ---- running inside a network namespace, driven over a Unix socket ----

class Control:
    """The test's handle on a FakeApiServer process: each call is one JSON line."""

    def __init__(self, path):
        self.path = str(path)

    def call(self, op: str, *args):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.path)
            s.sendall(json.dumps([op, *args]).encode() + b"\n")
            reply = json.loads(s.makefile().readline())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply.get("result")

    def __getattr__(self, op):
        return lambda *args: self.call(op, *args)


def _serve_control(fake: FakeApiServer, path: str) -> None:
    ops = {"put": fake.put, "delete": fake.delete, "compact": fake.compact, "drop_watches": fake.drop_watches,
           "stop": fake.stop, "start": lambda: fake.start() and None,
           "requests": lambda: list(fake.requests), "rv": lambda: fake.rv}

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            op, *args = json.loads(self.rfile.readline())
            try:
                reply = {"result": ops[op](*args)}
            except Exception as exc:   # report to the test, keep serving
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write(json.dumps(reply).encode() + b"\n")

    server = socketserver.ThreadingUnixStreamServer(path, Handler)
    server.serve_forever()


if __name__ == "__main__":
    port, control = int(sys.argv[1]), sys.argv[2]
    _serve_control(FakeApiServer("127.0.0.1", port).start(), control)
