"""Object events: what every source (API watch, configuration files) hands the control plane.

A source never programs tables; it turns what it reads into (previous, current) changes of
parsed objects, and the control plane applies them off the forwarding thread. A change whose
current equals its previous (a resourceVersion bump, a file rewritten unchanged) is no event.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ObjectEvent", "ObjectStore", "key_of"]


def key_of(obj) -> tuple[str | None, str]:
    """(namespace, name); namespace None for cluster-scoped objects."""
    return (getattr(obj, "namespace", None), obj.name)


@dataclass(frozen=True)
class ObjectEvent:
    attr: str                   # Config attribute: "services", "endpoint_slices", "nodes", ...
    key: tuple
    old: Any                    # None: added
    new: Any                    # None: deleted
    received_ns: int = field(default_factory=time.monotonic_ns, compare=False)
    # EndpointSlices: the endpoints.kubernetes.io/last-change-trigger-time annotation (epoch s),
    # the start of kube-proxy's network programming latency.
    trigger_time: float | None = field(default=None, compare=False)


class ObjectStore:
    """The current objects of one source, by attribute and key. Thread-safe; `set` and
    `replace` return the events their change amounts to."""

    def __init__(self):
        self._objects: dict[str, dict[tuple, Any]] = {}
        self._lock = threading.Lock()

    def set(self, attr: str, key: tuple, obj, trigger_time: float | None = None) -> ObjectEvent | None:
        with self._lock:
            table = self._objects.setdefault(attr, {})
            old = table.get(key)
            if obj is None:
                table.pop(key, None)
            else:
                table[key] = obj
        if old == obj:
            return None
        return ObjectEvent(attr, key, old, obj, trigger_time=trigger_time)

    def replace(self, attr: str, objects: dict[tuple, Any]) -> list[ObjectEvent]:
        """Make `attr` hold exactly `objects` (a full list); events for what differs."""
        with self._lock:
            old = self._objects.get(attr, {})
            self._objects[attr] = dict(objects)
        events = [ObjectEvent(attr, k, None, v) for k, v in objects.items() if k not in old]
        events += [ObjectEvent(attr, k, old[k], v) for k, v in objects.items() if k in old and old[k] != v]
        events += [ObjectEvent(attr, k, v, None) for k, v in old.items() if k not in objects]
        return events

    def get(self, attr: str, key: tuple):
        with self._lock:
            return self._objects.get(attr, {}).get(key)

    def values(self, attr: str) -> list:
        with self._lock:
            return list(self._objects.get(attr, {}).values())

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {attr: len(objs) for attr, objs in self._objects.items()}

