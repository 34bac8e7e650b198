"""List + watch of one resource, as client-go's Reflector does it, feeding a store.

    reflector = Reflector(connection, SERVICES, store, label_selector=PROXY_SELECTOR)
    reflector.start(); ...; reflector.stop()

- A paginated list (limit 500, `continue`) gives the full state and a resourceVersion; the store
  replaces its contents with it (deletions seen while disconnected come out of the diff).
- A watch from that resourceVersion streams ADDED / MODIFIED / DELETED events; BOOKMARK events
  (allowWatchBookmarks) only move the resourceVersion on, so a reconnect resumes from a recent
  point instead of relisting.
- `410 Gone` (the resourceVersion is too old, as an HTTP status or as a watch ERROR event)
  means relist. Any other failure (refused connection, reset stream, 5xx) is retried with
  client-go's backoff (0.8 s doubling to 30 s, jittered), resuming the watch from the last
  resourceVersion. The store keeps its objects meanwhile, so the node keeps forwarding with the
  last state it saw.
"""
from __future__ import annotations

import json
import logging
import random
import threading
from dataclasses import dataclass
from typing import Protocol

from dataplane.controlplane import CONTROL_LOCK

__all__ = ["Gone", "Reflector", "Resource", "StoreSink"]

log = logging.getLogger("dataplane.k8s")

PAGE_SIZE = 500                  # kube-proxy's informers list in pages of 500
WATCH_TIMEOUT_S = (300, 600)     # client-go picks a random server-side watch timeout in this range
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.8, 30.0
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0           # a watch is never silent that long: bookmarks come every minute
NOT_SERVED_RECHECK_S = 300.0


@dataclass(frozen=True)
class Resource:
    group: str          # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def path(self) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{base}/{self.plural}"


class StoreSink(Protocol):
    def replace(self, resource: Resource, items: list[dict], resource_version: str) -> None: ...
    def event(self, resource: Resource, type_: str, obj: dict) -> None: ...


class Gone(Exception):
    """The resourceVersion expired (HTTP 410): list again."""


class WatchError(Exception):
    pass


class _Retry(Exception):
    """List again, without counting an error (a resource the server does not serve)."""


class Reflector:
    def __init__(self, connection, resource: Resource, sink: StoreSink, *, label_selector: str | None = None,
                 field_selector: str | None = None, page_size: int = PAGE_SIZE):
        self.connection = connection
        self.resource = resource
        self.sink = sink
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.resource_version: str | None = None
        self.lists = 0                # full lists done (1 + relists)
        self.watches = 0              # watch requests made
        self.errors = 0
        self.last_error: str | None = None
        self.not_served = False
        self._stop = threading.Event()
        self._response = None
        self._thread = threading.Thread(target=self.run, name=f"watch-{resource.plural}", daemon=True)

    def start(self) -> "Reflector":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()   # unblocks a read waiting on the watch stream
            except Exception:         # already closed: nothing to interrupt
                pass
        self._thread.join(timeout)

    def run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                self._watch()
                backoff = BACKOFF_INITIAL_S   # a watch that ran normally resets the backoff
            except _Retry:
                need_list = True
            except Gone:
                log.info("%s: resourceVersion %s expired, listing again", self.resource.plural,
                         self.resource_version)
                need_list = True
            except Exception as exc:   # connection refused/reset, 5xx, bad JSON: retry later
                if self._stop.is_set():
                    break
                self.errors += 1
                self.last_error = _describe(exc)
                log.warning("%s: %s; retrying in %.1fs", self.resource.plural, _describe(exc), backoff)
                self._stop.wait(backoff * (1 + random.random()))
                backoff = min(2 * backoff, BACKOFF_MAX_S)

    # ---- list ----

    def _selectors(self) -> list[tuple[str, str]]:
        query = []
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        return query

    def _list(self) -> None:
        items: list[dict] = []
        token = None
        while True:
            query = self._selectors() + [("limit", str(self.page_size))]
            if token:
                query.append(("continue", token))
            body = self._get(query)
            if body.get("kind") == "Status" and body.get("code") == 404:
                # The server does not serve this resource (an older API server without
                # ServiceCIDRs): it has none, and we look again later.
                self.not_served = True
                self.resource_version = None
                self.sink.replace(self.resource, [], "")
                self._stop.wait(NOT_SERVED_RECHECK_S)
                raise _Retry()
            if body.get("kind") == "Status":
                if body.get("code") == 410 and token:
                    items, token = [], None   # the continue token expired: start the list again
                    continue
                raise WatchError(_status_text(body))
            items.extend(body.get("items") or ())
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        self.resource_version = meta.get("resourceVersion") or None
        self.lists += 1
        self.not_served = False
        self.sink.replace(self.resource, items, self.resource_version or "")

    def _get(self, query) -> dict:
        response = self.connection.request(self.resource.path, query, (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                                           self._stop)
        try:
            data = response.data
        finally:
            response.release_conn()
        with CONTROL_LOCK:   # one long C call holding the GIL: never while forwarding is parked
            body = json.loads(data)
        if response.status == 410:
            raise Gone()
        if response.status >= 400 and body.get("kind") != "Status":
            raise WatchError(f"HTTP {response.status}")
        return body

    # ---- watch ----

    def _watch(self) -> None:
        query = self._selectors() + [("watch", "true"), ("allowWatchBookmarks", "true"),
                                     ("timeoutSeconds", str(random.randint(*WATCH_TIMEOUT_S)))]
        if self.resource_version:
            query.append(("resourceVersion", self.resource_version))
        response = self.connection.request(self.resource.path, query, (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                                           self._stop)
        self.watches += 1
        self._response = response
        try:
            if response.status != 200:
                body = _json_or_none(response.data)
                if response.status == 410 or (body or {}).get("code") == 410:
                    raise Gone()
                raise WatchError(f"HTTP {response.status}: {_status_text(body or {})}")
            for line in _lines(response):
                if self._stop.is_set():
                    return
                self._handle(json.loads(line))
        finally:
            self._response = None
            response.release_conn()

    def _handle(self, event: dict) -> None:
        type_, obj = event.get("type"), event.get("object") or {}
        if type_ == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise WatchError(_status_text(obj))
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if type_ == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        if type_ not in ("ADDED", "MODIFIED", "DELETED"):
            raise WatchError(f"unknown watch event type {type_!r}")
        self.sink.event(self.resource, type_, obj)
        if rv:
            self.resource_version = rv


def _lines(response):
    """Newline-delimited JSON of a chunked watch response, one line at a time as it arrives."""
    pending = b""
    for chunk in response.stream(65536, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _json_or_none(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return None


def _status_text(status: dict) -> str:
    return ": ".join(str(s) for s in (status.get("code"), status.get("reason"), status.get("message")) if s) \
        or "error"


def _describe(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"
