"""The control socket of a running `dataplane run`, and its client.

A Unix stream socket (mode 0600: it can flush connections and read every flow's addresses);
one JSON request per line, answered by one JSON line, or by a stream of lines for `monitor`
and `stats --watch`:

    {"cmd": "services"}                         -> {"ok": true, "result": [...]}
    {"cmd": "conntrack.list", "filter": {...}}  -> {"ok": true, "result": [...]}
    {"cmd": "conntrack.flush", "filter": {...}} -> {"ok": true, "result": {"deleted": N}}
    {"cmd": "stats"} / {"cmd": "status"}
    {"cmd": "monitor", "drops": true, "proto": "tcp", "ip": "10.0.0.1", "port": 80}
                                                -> {"event": {...}} lines until the client goes

Conntrack is read in short steps with the forwarding thread parked for each step only, so a
million-entry table can be listed without stalling forwarding.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import socketserver
import threading
import time
from pathlib import Path

from dataplane.controlplane import CONTROL_LOCK

__all__ = ["ControlServer", "ControlError", "request", "stream", "DEFAULT_SOCKET", "conntrack_filter"]

log = logging.getLogger("dataplane.control")

DEFAULT_SOCKET = Path("/run/dataplane/dataplane.sock")
CT_STEP = 8192          # conntrack slots read per pause
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132}
PROTO_NAMES = {v: k for k, v in PROTOCOLS.items()}


class ControlError(Exception):
    """A request the running dataplane refused, or no dataplane answering."""


# ---- server ----

class ControlServer:
    def __init__(self, path: Path, worker):
        self.path = Path(path)
        self.worker = worker
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.is_socket() or self.path.is_symlink():
            self._remove_stale()
        handler = type("Handler", (_Handler,), {"worker": worker})
        old_umask = os.umask(0o177)   # the socket is created 0600, with no window at 0755
        try:
            self.server = _Server(str(self.path), handler)
        finally:
            os.umask(old_umask)
        self._thread = threading.Thread(target=self.server.serve_forever, name="control", daemon=True)

    def _remove_stale(self) -> None:
        """A socket left by a dataplane that died: remove it; one still answering: refuse."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)
            return
        finally:
            probe.close()
        raise OSError(f"{self.path}: another dataplane is listening there")

    def start(self) -> "ControlServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.path.unlink(missing_ok=True)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Handler(socketserver.StreamRequestHandler):
    worker = None

    def handle(self):
        for line in self.rfile:
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ControlError("a request is a JSON object")
                cmd = req.get("cmd")
                if cmd == "monitor":
                    self._monitor(req)
                    return
                if cmd == "stats" and req.get("watch"):
                    self._watch_stats(float(req.get("interval", 1.0)))
                    return
                if cmd in _STEPPED:    # long walks take the lock step by step themselves
                    result = _STEPPED[cmd](self.worker, req)
                else:
                    with CONTROL_LOCK:   # a consistent view of the proxier, never during a pause
                        result = _COMMANDS.get(cmd, _unknown)(self.worker, req)
                self._send({"ok": True, "result": result})
            except (ControlError, ValueError, TypeError, KeyError) as exc:
                self._send({"ok": False, "error": str(exc)})
            except (BrokenPipeError, ConnectionResetError):
                return

    def _send(self, obj) -> None:
        self.wfile.write(json.dumps(obj, default=str).encode() + b"\n")
        self.wfile.flush()

    def _watch_stats(self, interval: float) -> None:
        try:
            while True:
                with CONTROL_LOCK:
                    stats = _stats(self.worker, {})
                self._send({"ok": True, "result": stats})
                time.sleep(max(0.1, interval))
        except (BrokenPipeError, ConnectionResetError):
            return

    def _monitor(self, req: dict) -> None:
        engine = self.worker.engine
        proto = req.get("proto")
        engine.monitor_start(drops_only=bool(req.get("drops")),
                             proto=PROTOCOLS[proto.lower()] if proto else 0,
                             address=req.get("ip"), port=int(req.get("port") or 0))
        names = self.worker.node.port_names
        try:
            self._send({"ok": True, "result": "monitoring"})
            while True:
                for ev in engine.monitor_read():
                    self._send({"event": describe_event(ev, names)})
                lost = engine.stats()["monitor_lost"]
                if req.get("_lost_seen", 0) != lost:
                    req["_lost_seen"] = lost
                    self._send({"lost": lost})
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            engine.monitor_stop()


def _unknown(worker, req):
    raise ControlError(f"unknown command {req.get('cmd')!r} (services, conntrack.list, "
                       "conntrack.flush, stats, status, monitor)")


def _services(worker, req):
    return worker.node.proxier.programmed()


def _stats(worker, req):
    return worker.counters()


def _status(worker, req):
    cp = worker.cp
    return {"node": worker.node_name, "synced": bool(cp and cp.synced.is_set()),
            "syncs": dict(cp.syncs) if cp else {}, "lastSync": cp.last_sync_s if cp else None,
            "sources": [s.status() if hasattr(s, "status") else {"files": str(s.path), "reads": s.reads}
                        for s in worker.sources],
            "errors": list(cp.errors[-20:]) if cp else [], "warnings": list(cp.warnings[-20:]) if cp else []}


def _conntrack_list(worker, req):
    match = conntrack_filter(req.get("filter") or {}, worker)
    out = []
    _walk_conntrack(worker, lambda ct, entries: out.extend(describe_entry(e) for e in entries if match(e)))
    return out


def _conntrack_flush(worker, req):
    match = conntrack_filter(req.get("filter") or {}, worker)
    deleted = 0

    def step(ct, entries):
        nonlocal deleted
        for e in entries:
            if match(e):
                ct.delete(e["index"])   # same pause as the read: the index is still this entry
                deleted += 1
    _walk_conntrack(worker, step)
    return {"deleted": deleted}


def _walk_conntrack(worker, step) -> None:
    ct, pause = worker.node.conntrack, worker.cp.pause   # the sync loop's pause: lock and all
    start = 0
    while start is not None:
        with pause():
            entries, start = ct.entries_range(start, CT_STEP)
            step(ct, entries)


_COMMANDS = {"services": _services, "stats": _stats, "status": _status}
_STEPPED = {"conntrack.list": _conntrack_list, "conntrack.flush": _conntrack_flush}


# ---- views ----

def conntrack_filter(f: dict, worker=None):
    """conntrack -L/-D style filter over entry dicts: proto, src, dst, sport, dport (of the
    original direction) and service ("namespace/name", any of its ports)."""
    proto = f.get("proto")
    if proto is not None:
        if str(proto).lower() not in PROTOCOLS:
            raise ControlError(f"unknown protocol {proto!r} ({', '.join(PROTOCOLS)})")
        proto = PROTOCOLS[str(proto).lower()]
    src = str(ipaddress.ip_address(f["src"])) if f.get("src") else None
    dst = str(ipaddress.ip_address(f["dst"])) if f.get("dst") else None
    sport, dport = f.get("sport"), f.get("dport")
    ids = None
    if f.get("service"):
        ns, _, name = str(f["service"]).partition("/")
        if not name:
            raise ControlError("service must be namespace/name")
        with CONTROL_LOCK:
            ids = worker.node.proxier.service_ids(ns, name)

    def match(e: dict) -> bool:
        o = e["orig"]
        return ((proto is None or e["proto"] == proto) and (src is None or o["src"] == src)
                and (dst is None or o["dst"] == dst) and (sport is None or o["sport"] == int(sport))
                and (dport is None or o["dport"] == int(dport)) and (ids is None or e["svc_id"] in ids))
    return match


def describe_entry(e: dict) -> dict:
    return {"proto": PROTO_NAMES.get(e["proto"], str(e["proto"])), "state": e["state"],
            "orig": {k: e["orig"][k] for k in ("src", "dst", "sport", "dport")},
            "reply": {k: e["reply"][k] for k in ("src", "dst", "sport", "dport")},
            "flags": e["flags"], "expiresNs": e["expires_ns"], "serviceId": e["svc_id"],
            "packets": list(e["packets"]), "bytes": list(e["bytes"])}


def describe_event(ev: dict, port_names) -> dict:
    from dataplane.burst import DROP_REASONS, VERDICTS
    fam = ev["family"]
    addr = (lambda raw: str(ipaddress.ip_address(raw))) if fam in (4, 6) else (lambda raw: None)
    name = lambda i: port_names[i] if i < len(port_names) else None   # noqa: E731
    return {"ts": ev["ts_ns"] / 1e9, "verdict": VERDICTS[ev["verdict"]],
            "reason": DROP_REASONS[ev["reason"]] if ev["reason"] else None,
            "proto": PROTO_NAMES.get(ev["proto"], str(ev["proto"])) if fam else None,
            "src": addr(ev["src"]), "dst": addr(ev["dst"]), "sport": ev["sport"], "dport": ev["dport"],
            "in": name(ev["port_in"]), "out": name(ev["port_out"]), "len": ev["len"]}


# ---- client ----

def _connect(path: Path, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise ControlError(f"no dataplane answering on {path}: {exc.strerror or exc}") from None
    return sock


def request(path: Path, req: dict, timeout: float = 60.0):
    """One request, one answer; ControlError when refused or nobody answers."""
    with _connect(path, timeout) as sock:
        sock.sendall(json.dumps(req).encode() + b"\n")
        reply = sock.makefile("rb").readline()
    if not reply:
        raise ControlError(f"{path}: connection closed without an answer")
    answer = json.loads(reply)
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "refused"))
    return answer["result"]


def stream(path: Path, req: dict):
    """A streaming request: yields each answer line (dict) until the server closes."""
    with _connect(path, None) as sock:
        sock.sendall(json.dumps(req).encode() + b"\n")
        for line in sock.makefile("rb"):
            answer = json.loads(line)
            if answer.get("ok") is False:
                raise ControlError(answer.get("error", "refused"))
            yield answer
