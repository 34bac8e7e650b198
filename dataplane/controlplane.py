"""The control plane's sync loop: object events in, table generations out, off the forwarding
thread (kube-proxy's proxier SyncRunner, without the rule programs).

    cp = ControlPlane(node, engine.paused, metrics=Metrics())
    source = FileSource(path, cp.submit)      # or ApiSource(connection, node_name, cp.submit)
    cp.start(sources=[source])

- Events are batched: everything queued when the loop wakes up is applied in one sync.
- Until every source has listed once, nothing is programmed; then one full sync builds the whole
  table generation and swaps it in (kube-proxy waits for its informers the same way).
- Later batches go through the proxier's change trackers (a change that ends where it started
  is dropped) and a partial sync, done with the forwarding thread parked between two bursts.
  A batch touching many Services (a relist after an outage) is a full sync instead: the new
  generation is built while forwarding goes on, and only the swap is done parked.
- kube-proxy also resyncs everything every syncPeriod, to repair rules something else changed;
  nothing but this process writes our tables, so full syncs run only at start, after a failed
  sync, on request (SIGHUP) and for very large batches. `min_sync_period` (when configured)
  spaces syncs out; syncPeriod still sets the health timeout.
- A pause must stay as short as the table edits: while it is held, garbage collection is off,
  and other control-plane threads wait (CONTROL_LOCK) before their long C calls (decoding a big
  list response), which would otherwise keep the GIL from the sync thread with the forwarding
  thread parked. Health (kube-proxy's /healthz) is told when updates are queued and when applied.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import queue
import threading
import time
from typing import Callable

from dataplane.config.loader import Config
from dataplane.events import ObjectEvent
from dataplane.tables import announced_ips

__all__ = ["CONTROL_LOCK", "ControlPlane", "in_steps"]

log = logging.getLogger("dataplane.sync")

# Held by the sync thread for the length of a pause; other control-plane threads take it around
# long C calls that hold the GIL (json.loads of a list response), so none runs while forwarding
# is parked.
CONTROL_LOCK = threading.RLock()
FULL_SYNC_THRESHOLD = 2048  # Services touched by one batch beyond which a rebuild is cheaper
PAUSE_CHUNK = 32            # Services applied per pause in a partial sync (each pause stays short)
MAX_BATCH = 8192            # events taken from the queue at once


class ControlPlane:
    def __init__(self, node, pause: Callable = contextlib.nullcontext, *, metrics=None, health=None,
                 min_sync_period: float = 0.0, kube_proxy=None, on_synced=None,
                 dns=None):
        self.node = node
        self.pause = _guarded(pause)
        self.metrics = metrics
        self.health = health
        self.min_sync_period = min_sync_period
        self.kube_proxy = kube_proxy
        self.on_synced = on_synced             # called (sync thread) after every successful sync
        self.dns = dns                         # NodeDns: cluster DNS served by this node, or None
        self._dns_dirty = False
        self.sources: list = []
        self.objects: dict[str, dict] = {}     # what the tables were built from
        self.queue: "queue.SimpleQueue[list[ObjectEvent]]" = queue.SimpleQueue()
        self.synced = threading.Event()       # the first full sync is done
        self.syncs = {"full": 0, "partial": 0}
        self.last_sync_s: float | None = None
        self.errors: list[str] = []           # recent sync errors (bounded)
        self.warnings: list[str] = []
        self.latencies_ns: list[int] = []     # event received -> visible (the last 100,000)
        self.programming_s: list[float] = []  # EndpointSlice trigger time -> visible
        self._full_requested = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync", daemon=True)

    # ---- feeding it ----

    def submit(self, events: list[ObjectEvent]) -> None:
        """Called by sources from their own threads."""
        if events:
            self.queue.put(events)
            if self.health is not None:
                self.health.queued_update()
            if self.metrics is not None:
                self.metrics.last_queued.set_to_current_time()

    def request_full_sync(self) -> None:
        """SIGHUP / operator: rebuild everything from the current objects at the next wakeup."""
        self._full_requested = True
        self.queue.put([])

    def start(self, sources=()) -> "ControlPlane":
        self.sources = list(sources)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.queue.put([])
        self._thread.join(10)

    # ---- the loop ----

    def _run(self) -> None:
        initial: list[ObjectEvent] = []
        while not self._stop.is_set():
            events = self._next_batch(0.5)
            if self._stop.is_set():
                break
            if not self.synced.is_set():
                self._record(events)
                initial += events
                if all(s.synced() for s in self.sources):
                    self._sync(full=True, events=initial)
                    initial = []
                    self.synced.set()
                continue
            if self._full_requested or len(_touched(events)) > FULL_SYNC_THRESHOLD:
                self._full_requested = False
                self._record(events)
                self._sync(full=True, events=events)
            elif events:
                # Small steps, each with its own short pause, rather than one long one.
                for chunk in _chunks(events, PAUSE_CHUNK):
                    self._record(chunk)
                    self._sync(full=False, events=chunk)
            else:
                continue
            if self.min_sync_period:
                self._stop.wait(self.min_sync_period)

    def _next_batch(self, timeout: float) -> list[ObjectEvent]:
        """Everything queued now (waiting up to `timeout` for the first event)."""
        try:
            events = list(self.queue.get(timeout=timeout))
        except queue.Empty:
            return []
        while len(events) < MAX_BATCH:
            try:
                events.extend(self.queue.get_nowait())
            except queue.Empty:
                break
        return events

    def _record(self, events: list[ObjectEvent]) -> None:
        """Keep the object set current and feed the proxier's change trackers."""
        proxier = self.node.proxier
        for ev in events:
            table = self.objects.setdefault(ev.attr, {})
            if ev.new is None:
                table.pop(ev.key, None)
            else:
                table[ev.key] = ev.new
            if self.dns is not None and self.dns.record(ev):
                self._dns_dirty = True
            if ev.attr == "services":
                proxier.on_service(ev.old, ev.new)
                if self.metrics is not None:
                    self.metrics.service_changes.inc()
            elif ev.attr == "endpoint_slices":
                if self.dns is None or not self.dns.owns(ev.new or ev.old):
                    proxier.on_endpoint_slice(ev.old, ev.new)
                if self.metrics is not None:
                    self.metrics.endpoint_changes.inc()
            elif ev.attr in ("dataplane", "kube_proxy") and ev.old is not None:
                self._warn(f"{'DataplaneConfiguration' if ev.attr == 'dataplane' else 'KubeProxyConfiguration'} "
                           "changed: it takes effect when `dataplane run` restarts")
            elif ev.attr == "service_cidrs":
                proxier.on_service_cidr(ev.old, ev.new)
            elif ev.attr == "nodes" and ev.key[1] == proxier.node_name:
                proxier.on_node(ev.old, ev.new)
                if self.health is not None:
                    self.health.sync_node(ev.new)
        if self.dns is not None:
            for old, new in self.dns.proxier_slices():
                proxier.on_endpoint_slice(old, new)

    def _snapshot(self) -> Config:
        node = self.node
        get = lambda attr: tuple(self.objects.get(attr, {}).values())   # noqa: E731
        slices = get("endpoint_slices")
        if self.dns is not None:
            slices = tuple(s for s in slices if not self.dns.owns(s)) + tuple(self.dns.injected.values())
        return Config(dataplane=node.dp, kube_proxy=self.kube_proxy, services=get("services"),
                      endpoint_slices=slices, nodes=get("nodes"), service_cidrs=get("service_cidrs"))

    def _sync(self, full: bool, events: list[ObjectEvent]) -> None:
        node = self.node
        start = time.monotonic()
        try:
            if full:
                result = node.apply(self._snapshot(), self.pause)
            else:
                # The addresses answered for on the network change only with a Service's
                # external or load-balancer IPs: most partial syncs need not recompute them.
                vips_changed = any(e.attr == "services" and announced_ips(e.old) != announced_ips(e.new)
                                   for e in events)
                result = node.sync(self.pause, tuple(self.objects.get("services", {}).values())
                                   if vips_changed else None)
        except Exception as exc:   # a bug must not end the control plane: keep the old tables
            log.exception("sync failed; keeping the tables as they were")
            self._error(f"sync failed: {exc}")
            self._full_requested = True
            return
        visible = time.monotonic_ns()
        elapsed = time.monotonic() - start
        if full:
            # The objects a full sync leaves behind live long: keep them out of the collector's
            # scans, so that a collection stays short.
            gc.freeze()
        self.syncs["full" if full else "partial"] += 1
        self.last_sync_s = time.time()
        for msg in result.errors:
            self._error(msg)
        for msg in result.warnings:
            self._warn(msg)
        self.latencies_ns.extend(visible - e.received_ns for e in events)
        del self.latencies_ns[:-100_000]
        if self._dns_dirty:
            self._dns_dirty = False
            table = self.dns.compile()   # packed off the forwarding thread, swapped in parked
            with self.pause():
                node.pipeline.dns = table
        if self.health is not None:
            self.health.updated()
        if self.on_synced is not None:
            try:
                self.on_synced()
            except Exception as exc:   # a health-check listener must not stop syncing
                log.exception("after-sync hook failed")
                self._error(f"after sync: {exc}")
        now = time.time()
        programming = [now - e.trigger_time for e in events if e.trigger_time is not None]
        self.programming_s.extend(programming)
        del self.programming_s[:-100_000]
        m = self.metrics
        if m is not None:
            m.sync_duration.observe(elapsed)
            (m.full_sync_duration if full else m.partial_sync_duration).observe(elapsed)
            m.last_sync.set(self.last_sync_s)
            m.sync_errors.inc(len(result.errors))
            for e in events:
                m.event_latency.observe((visible - e.received_ns) / 1e9)
            for seconds in programming:
                if seconds >= 0:   # the API server's clock may run ahead of ours
                    m.programming.observe(seconds)
        log.debug("%s sync: %d events in %.1f ms", "full" if full else "partial", len(events), elapsed * 1e3)

    def latency_summary(self) -> dict:
        """p50 / p99 / max of event-to-visible and trigger-to-visible latencies, in ms."""
        def summary(values_ms):
            if not values_ms:
                return None
            v = sorted(values_ms)
            pick = lambda q: round(v[min(len(v) - 1, int(q * len(v)))], 3)   # noqa: E731
            return {"count": len(v), "p50": pick(0.5), "p99": pick(0.99), "max": round(v[-1], 3)}
        return {"eventToVisibleMs": summary([x / 1e6 for x in self.latencies_ns]),
                "programmingMs": summary([x * 1e3 for x in self.programming_s])}

    def _error(self, message: str) -> None:
        log.warning("%s", message)
        self.errors.append(message)
        del self.errors[:-100]

    def _warn(self, message: str) -> None:
        if message not in self.warnings[-10:]:
            log.warning("%s", message)
        self.warnings.append(message)
        del self.warnings[:-100]


def in_steps(items, step: int = 200):
    """Iterate `items` holding CONTROL_LOCK for `step` of them at a time: a long Python loop on
    another thread (parsing a relist) would otherwise share the GIL with a sync thread whose
    pause is held, and stretch the pause."""
    for start in range(0, len(items), step):
        with CONTROL_LOCK:
            yield from items[start:start + step]


def _guarded(pause):
    """`pause` with garbage collection off and CONTROL_LOCK held for its duration."""
    @contextlib.contextmanager
    def paused():
        with CONTROL_LOCK:
            collecting = gc.isenabled()
            gc.disable()
            try:
                with pause():
                    yield
            finally:
                if collecting:
                    gc.enable()
    return paused


def _service_of(e: ObjectEvent):
    if e.attr == "services":
        return e.key
    if e.attr == "endpoint_slices":
        return (e.key[0], getattr(e.new or e.old, "service_name", None))
    return None


def _touched(events: list[ObjectEvent]) -> set:
    return {k for k in map(_service_of, events) if k is not None}


def _chunks(events: list[ObjectEvent], services: int):
    """Consecutive runs of events touching at most `services` Services each (event order kept)."""
    chunk: list[ObjectEvent] = []
    seen: set = set()
    for e in events:
        k = _service_of(e)
        if k is not None and k not in seen and len(seen) >= services:
            yield chunk
            chunk, seen = [], set()
        if k is not None:
            seen.add(k)
        chunk.append(e)
    if chunk:
        yield chunk
