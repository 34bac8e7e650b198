"""Configuration files as a source of object events (file mode of `dataplane run`).

The file or directory is polled. A file is read once its (inode, size, mtime) has stayed the
same for one poll interval, so a `cp` or an editor writing in several steps is read once, whole.
What a file holds is diffed against what it held before, and only the difference becomes
events, exactly as an API watch would deliver it.

Files come and go in normal operation (a ConfigMap volume swaps a `..data` symlink; an editor
renames over the original): a file that vanished between listing and reading, a dangling
symlink or a half-written document is reported, and the objects it last held stay in force
until it is readable again. Only a file that is really gone (no longer listed) takes its objects
with it.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

from dataplane.config.loader import KINDS, SUFFIXES, loads
from dataplane.controlplane import CONTROL_LOCK
from dataplane.events import ObjectEvent, ObjectStore, key_of

__all__ = ["FileSource"]

log = logging.getLogger("dataplane.files")

POLL_INTERVAL_S = 0.25
_ATTR_BY_KIND = {kind: spec.attr for (_, kind), spec in KINDS.items()}
SINGLETONS = ("dataplane", "kube_proxy")
LIST_ATTRS = tuple(dict.fromkeys(spec.attr for spec in KINDS.values() if spec.attr not in SINGLETONS))


class FileSource:
    def __init__(self, path: Path, submit: Callable[[list[ObjectEvent]], None], interval: float = POLL_INTERVAL_S):
        self.path = Path(path)
        self.submit = submit
        self.interval = interval
        self.store = ObjectStore()
        self.problems: dict[str, list[str]] = {}     # file -> problems of its current version
        self.reads = 0                                # files (re)read
        self._applied: dict[str, tuple] = {}          # file -> signature its objects came from
        self._pending: dict[str, tuple] = {}          # file -> signature seen once, not yet read
        self._objects: dict[str, dict[str, dict]] = {}  # file -> attr -> key -> object
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="config-files", daemon=True)
        self._first = True

    def start(self) -> "FileSource":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def synced(self) -> bool:
        return not self._first

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:   # a bug here must not end file mode: log it, try again
                log.exception("configuration poll failed")
            self._stop.wait(self.interval)

    # ---- one poll ----

    def poll(self) -> list[ObjectEvent]:
        """Read what changed and settled; submit and return the events."""
        current = self._signatures()
        changed = False
        for name in list(self._objects):
            if name not in current:          # removed (or no longer a regular file)
                self._forget(name)
                changed = True
        for name, sig in current.items():
            if sig is None or sig == self._applied.get(name):
                continue
            if not self._first and self._pending.get(name) != sig:
                self._pending[name] = sig    # read it once it has stopped changing
                continue
            self._pending.pop(name, None)
            changed |= self._read(name, sig)
        events = self._merge() if changed or self._first else []
        if events:
            self.submit(events)
        self._first = False   # synced only once the first read's events are queued
        return events

    def _signatures(self) -> dict[str, tuple | None]:
        """file -> (dev, inode, size, mtime) of what it points to; None: listed but unreadable
        right now (a dangling symlink, gone between listing and stat)."""
        if not self.path.exists():
            # The whole path vanished (a volume remounted, a directory being replaced): keep
            # everything until it is back rather than withdraw every Service.
            self._report(str(self.path), ["does not exist (keeping the objects read before)"])
            return {name: None for name in self._objects}
        if not self.path.is_dir():
            paths = [self.path]
        else:
            try:
                paths = [self.path / e.name for e in os.scandir(self.path)
                         if e.name.endswith(SUFFIXES) and not e.name.startswith(".")]
            except OSError as exc:
                log.warning("cannot list %s: %s", self.path, exc.strerror or exc)
                return {name: None for name in self._objects}   # keep everything as it is
        out = {}
        for p in paths:
            try:
                st = p.stat()
            except OSError as exc:
                out[str(p)] = None
                self._report(str(p), [f"cannot read: {exc.strerror or exc}"])
                continue
            if not p.is_file():
                continue
            out[str(p)] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        return out

    def _read(self, name: str, sig: tuple) -> bool:
        """Parse one file; False when it cannot be used (its previous objects stay)."""
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._report(name, [f"cannot read: {getattr(exc, 'strerror', None) or exc}"])
            return False
        self.reads += 1
        with CONTROL_LOCK:   # YAML / JSON decoding: long C calls holding the GIL
            config = loads(text, source=name, strict=False)
        problems = [str(p) for p in config.problems]
        previous = self._objects.get(name, {})
        objects: dict[str, dict] = {}
        for attr in SINGLETONS:
            obj = getattr(config, attr, None)
            if obj is not None:
                objects[attr] = {(None, attr): obj}
        for attr in LIST_ATTRS:
            for obj in getattr(config, attr):
                objects.setdefault(attr, {}).setdefault(key_of(obj), obj)
        if any(p.kind is None for p in config.problems) and previous:
            # The file does not parse as a whole (a partial write, broken YAML): keep all it held.
            self._report(name, problems + ["keeping the objects of its last good version"])
            self._applied[name] = sig
            return False
        for p in config.problems:   # an invalid object keeps its last good version
            attr = _ATTR_BY_KIND.get(p.kind or "")
            key = _problem_key(p.name)
            if attr and key and key in previous.get(attr, {}):
                objects.setdefault(attr, {}).setdefault(key, previous[attr][key])
        self._objects[name] = objects
        self._applied[name] = sig
        self._report(name, problems)
        return True

    def _forget(self, name: str) -> None:
        self._objects.pop(name, None)
        self._applied.pop(name, None)
        self._pending.pop(name, None)
        self.problems.pop(name, None)

    def _merge(self) -> list[ObjectEvent]:
        """Union of all files (sorted by name; the first definition of a key wins) -> events."""
        merged: dict[str, dict] = {}
        for name in sorted(self._objects):
            for attr, objs in self._objects[name].items():
                table = merged.setdefault(attr, {})
                for key, obj in objs.items():
                    table.setdefault(key, obj)
        events = []
        for attr in set(merged) | set(self.store.counts()):
            events += self.store.replace(attr, merged.get(attr, {}))
        return events

    def _report(self, name: str, problems: list[str]) -> None:
        if problems and self.problems.get(name) != problems:
            for p in problems:
                log.warning("%s", p)
        if problems:
            self.problems[name] = problems
        else:
            self.problems.pop(name, None)


def _problem_key(name: str | None) -> tuple | None:
    if not name:
        return None
    ns, _, n = name.rpartition("/")
    return (ns or None, n)
