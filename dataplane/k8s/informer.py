"""The objects kube-proxy watches, from the API server, as object events.

One Reflector per resource (Services, EndpointSlices, ServiceCIDRs, this node's Node); each
object is parsed by the same code as configuration files (dataplane.config), so the API and
files mean the same thing. An object we cannot use is reported and skipped, keeping the last
good version of it: one bad object never stops the node.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Callable

from dataplane.config.loader import KINDS, parse_object
from dataplane.controlplane import CONTROL_LOCK, in_steps
from dataplane.events import ObjectEvent, ObjectStore, key_of
from .reflector import Reflector, Resource
from .resources import DNS_WATCHED, ENDPOINT_SLICES, NODES, SERVICE_CIDRS, SERVICES, WATCHED

__all__ = ["ApiSource", "ENDPOINT_SLICES", "NODES", "PROXY_LABEL_SELECTOR", "SERVICE_CIDRS", "SERVICES"]

log = logging.getLogger("dataplane.k8s")


# kube-proxy's informers skip objects another proxy owns and headless Services' endpoints
# (cmd/kube-proxy/app/server.go: noProxyName, noHeadlessEndpoints), server-side.
PROXY_LABEL_SELECTOR = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
DNS_LABEL_SELECTOR = "!service.kubernetes.io/service-proxy-name"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


class ApiSource:
    """Watches the API server; `submit(events)` receives object events, `synced()` is true once
    every resource has been listed once (kube-proxy's "informers synced")."""

    def __init__(self, connection, node_name: str, submit: Callable[[list[ObjectEvent]], None],
                 resources=WATCHED, dns: bool = False):
        self.connection = connection
        self.node_name = node_name
        self.submit = submit
        self.store = ObjectStore()
        self.problems: dict[tuple, str] = {}     # (kind, namespace, name) -> why it was skipped
        self._listed: set[str] = set()
        self._lock = threading.Lock()
        # Cluster DNS needs headless Services and their endpoints (the proxier ignores them).
        selector = DNS_LABEL_SELECTOR if dns else PROXY_LABEL_SELECTOR
        if dns:
            resources = tuple(resources) + DNS_WATCHED
        self.reflectors = [
            Reflector(connection, r, self,
                      label_selector=selector if r in (SERVICES, ENDPOINT_SLICES) else None,
                      field_selector=f"metadata.name={node_name}" if r == NODES else None)
            for r in resources]

    def start(self) -> "ApiSource":
        for r in self.reflectors:
            r.start()
        return self

    def stop(self) -> None:
        for r in self.reflectors:
            r._stop.set()
        for r in self.reflectors:
            r.stop()
        self.connection.close()

    def synced(self) -> bool:
        with self._lock:
            return len(self._listed) == len(self.reflectors)

    def status(self) -> dict:
        return {r.resource.plural: {"listed": r.resource.plural in self._listed,
                                    "resourceVersion": r.resource_version, "lists": r.lists,
                                    "watches": r.watches, "errors": r.errors, "lastError": r.last_error,
                                    "served": not r.not_served}
                for r in self.reflectors}

    # ---- StoreSink ----

    def replace(self, resource: Resource, items: list[dict], resource_version: str) -> None:
        parsed: dict[str, dict] = {}
        attr_of_resource = None
        for raw in in_steps(items):
            raw = {"apiVersion": resource.api_version, "kind": resource.kind, **raw}
            attr, obj = self._parse(resource, raw)
            if obj is None:
                # Invalid: keep the version we had, if any (its problem is reported).
                key = _raw_key(resource, raw)
                attr = attr or self._attr_of(resource)
                old = self.store.get(attr, key) if attr else None
                if old is not None:
                    parsed.setdefault(attr, {})[key] = old
                continue
            attr_of_resource = attr
            parsed.setdefault(attr, {})[key_of(obj)] = obj
        events = []
        attr = attr_of_resource or self._attr_of(resource)
        if attr:
            events = self.store.replace(attr, parsed.get(attr, {}))
        log.info("%s: listed %d at resourceVersion %s (%d changes)", resource.plural, len(items),
                 resource_version or "-", len(events))
        # Submitted before counting as listed: the first sync starts once every resource is
        # listed, and must find this list's objects already queued.
        self.submit(events)
        with self._lock:
            self._listed.add(resource.plural)

    def event(self, resource: Resource, type_: str, raw: dict) -> None:
        with CONTROL_LOCK:
            self._event(resource, type_, raw)

    def _event(self, resource: Resource, type_: str, raw: dict) -> None:
        raw = {"apiVersion": resource.api_version, "kind": resource.kind, **raw}
        if type_ == "DELETED":
            attr = self._attr_of(resource)
            self.problems.pop((resource.kind, *_raw_key(resource, raw)), None)
            ev = self.store.set(attr, _raw_key(resource, raw), None) if attr else None
        else:
            attr, obj = self._parse(resource, raw)
            if obj is None:
                return
            ev = self.store.set(attr, key_of(obj), obj, _trigger_time(raw))
        if ev is not None:
            self.submit([ev])

    # ---- parsing ----

    @staticmethod
    def _attr_of(resource: Resource) -> str | None:
        """The Config attribute objects of this resource are kept under (None: a kind this
        build does not use)."""
        spec = KINDS.get((resource.api_version, resource.kind))
        return spec.attr if spec else None

    def _parse(self, resource: Resource, raw: dict):
        attr, obj, problems, _ = parse_object(raw, f"{resource.plural} (API)")
        key = (resource.kind, *_raw_key(resource, raw))
        if problems:
            message = "; ".join(p.message if not p.path else f"{p.path}: {p.message}" for p in problems)
            if self.problems.get(key) != message:
                log.warning("skipping %s %s: %s", resource.kind, "/".join(filter(None, key[1:])), message)
            self.problems[key] = message
            return attr, None
        self.problems.pop(key, None)
        return attr, obj


def _raw_key(resource: Resource, raw: dict) -> tuple:
    meta = raw.get("metadata") or {}
    return (meta.get("namespace") if resource.namespaced else None, meta.get("name"))


def _trigger_time(raw: dict) -> float | None:
    value = ((raw.get("metadata") or {}).get("annotations") or {}).get(TRIGGER_TIME_ANNOTATION)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
