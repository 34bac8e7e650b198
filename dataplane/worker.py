"""`dataplane run`: a node's dataplane, as threads with one job each.

    forwarding   Engine.run(): ports -> pipeline -> ports, nogil, never waits for Python
    sync         ControlPlane: object events -> proxier -> table generations, swapped in while
                 the forwarding thread is parked between two bursts
    sources      FileSource (the config directory) or ApiSource (list/watch of the API server)
    servers      /healthz + /livez, /metrics, health-check NodePorts, the control socket
    main         signals, the stats file, shutdown (conntrack saved last)

The DataplaneConfiguration and KubeProxyConfiguration come from the config path and are read
once; Services, EndpointSlices, ServiceCIDRs and Nodes come from the API server when one is
configured (--kubeconfig, clientConnection.kubeconfig, or in-cluster), else from the same files.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dataplane.burst import COUNTERS, DROP_REASONS
from dataplane.config import load
from dataplane.config.k8s import KubeProxyConfig
from dataplane.config.loader import Config
from dataplane.controlplane import CONTROL_LOCK, ControlPlane
from dataplane.engine import Engine
from dataplane.io import open_port
from dataplane.tables import NodeDataplane

__all__ = ["Worker", "RunOptions", "install_signal_handlers", "select_node_config"]

log = logging.getLogger("dataplane.run")

STATS_INTERVAL_S = 1.0
INITIAL_SYNC_WAIT_S = 10.0
GIL_SWITCH_INTERVAL_S = 0.0005   # forward (routing) even if the API server has not answered by then


@dataclass
class RunOptions:
    burst_size: int = 256
    stats_file: Path | None = None
    trace: object = None                   # TraceWriter
    conntrack_file: Path | None = None
    kubeconfig: str | None = None          # --kubeconfig (wins over clientConnection.kubeconfig)
    node_name: str | None = None           # --hostname-override
    control_socket: Path | None = None
    healthz_bind_address: str | None = None   # None: the KubeProxyConfiguration's (or default)
    metrics_bind_address: str | None = None
    file_poll_interval: float = 0.25
    forwarding_cpu: int | None = None     # pin the forwarding thread; other threads avoid it


@dataclass
class RunStats:
    port_errors: list[str] = field(default_factory=list)  # ports that failed and were dropped


class Worker:
    def __init__(self, config_path: Path, options: RunOptions | None = None):
        self.options = opts = options or RunOptions()
        self.config_path = Path(config_path)
        self.stop_event = threading.Event()
        self.stats = RunStats()
        self.ports = []
        self.claimed = None
        self.servers: list = []
        config = select_node_config(load(self.config_path, strict=False), opts.node_name, self.config_path)
        self.node_name = config.node_name
        self.startup_problems = [str(p) for p in config.problems]
        for p in self.startup_problems:
            log.warning("%s", p)
        self.kube_proxy = config.kube_proxy or KubeProxyConfig()   # kube-proxy's defaults
        # Tables start empty: every Service arrives through the control plane, the same way in
        # file and API mode.
        self.node = NodeDataplane(Config(dataplane=config.dataplane, kube_proxy=config.kube_proxy), live=True)
        self.restored = self._restore_conntrack()
        dp = config.dataplane
        try:
            for port in dp.ports:
                self.ports.append(open_port(port))
            self.node.attach_ports(self.ports)
            self.claimed = claim_interfaces(dp) if dp.local_port is not None else None
            self.engine = Engine(self.node.pipeline, self.ports, opts.burst_size, opts.trace)
        except BaseException:
            self.close()
            raise
        self.metrics = None
        self.health = None
        self.service_health = None
        self.dns = None
        self._nat_exhausted: dict[str, int] = {}   # Service -> nat_exhausted drops reported
        self.control = None
        self.sources = []
        self.cp: ControlPlane | None = None
        self._forwarder = threading.Thread(target=self._forward, name="forwarding", daemon=True)

    # ---- lifecycle ----

    def _forward(self) -> None:
        cpu = self.options.forwarding_cpu
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})   # this thread only (Linux: pid 0 is the caller)
        self.engine.run()

    def start(self) -> None:
        """Sources, control plane and servers; then forwarding once the first sync is done (or
        INITIAL_SYNC_WAIT_S passed: routing must not wait for an unreachable API server)."""
        from dataplane.metrics import Metrics
        opts, kp = self.options, self.kube_proxy
        if opts.forwarding_cpu is not None:
            # Threads started from here on (sync, sources, servers) inherit this: they keep off
            # the forwarding CPU, so the kernel never time-slices forwarding against a table build.
            others = os.sched_getaffinity(0) - {opts.forwarding_cpu}
            if opts.forwarding_cpu not in os.sched_getaffinity(0):
                raise ValueError(f"--forwarding-cpu {opts.forwarding_cpu}: not one of this process's CPUs")
            if others:
                os.sched_setaffinity(0, others)
        # A sync holds a pause while it runs Python; hand the GIL over quickly when it waits
        # for it, so other control-plane threads (watch decoding) do not stretch the pause.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.metrics = Metrics()
        self.metrics.add_dataplane(self.node, self.engine, self.ports)
        self.health = _proxy_health(kp, opts)
        from dataplane.healthcheck import ServiceHealth
        self.service_health = ServiceHealth(self.node.proxier.health_check_addresses(), self.health,
                                            self.node_name)
        dp = self.node.dp
        if dp.dns is not None:
            from dataplane.dns.node import NodeDns
            self.dns = NodeDns(dp.dns, self.node_name, dp.node_ips)
            self.dns.start()
        self.cp = ControlPlane(self.node, self.engine.paused, metrics=self.metrics, health=self.health,
                               min_sync_period=kp.min_sync_period or 0.0, kube_proxy=kp,
                               on_synced=self._after_sync, dns=self.dns)
        self._start_servers()
        kubeconfig = opts.kubeconfig or kp.client_connection.kubeconfig
        if kubeconfig or _in_cluster():
            from dataplane.k8s.client import connect
            from dataplane.k8s.informer import ApiSource
            cc = kp.client_connection
            connection = connect(kubeconfig, cc.qps, cc.burst)
            log.info("watching the API server %s (%s)", connection.host, connection.source)
            self.sources = [ApiSource(connection, self.node_name, self.cp.submit, dns=self.dns is not None)]
        else:
            from dataplane.filesource import FileSource
            self.sources = [FileSource(self.config_path, self.cp.submit, opts.file_poll_interval)]
        self.cp.start(self.sources)
        for s in self.sources:
            s.start()
        if not self.cp.synced.wait(INITIAL_SYNC_WAIT_S):
            log.warning("no initial sync after %.0fs: forwarding without Services until the sources answer",
                        INITIAL_SYNC_WAIT_S)
        self._forwarder.start()

    def run(self) -> RunStats:
        """Start everything and serve until stop() (SIGINT/SIGTERM); returns on shutdown."""
        self.start()
        try:
            self._housekeeping()    # the stats file exists as soon as the node forwards
            while not self.stop_event.wait(STATS_INTERVAL_S):
                self._housekeeping()
        finally:
            self.shutdown()
        return self.stats

    def stop(self) -> None:
        self.stop_event.set()

    def shutdown(self) -> None:
        for s in self.sources:
            s.stop()
        if self.cp is not None:
            self.cp.stop()
        self.engine.stop()
        if self._forwarder.is_alive():
            self._forwarder.join(10)
        for server in self.servers:
            server.stop()
        self.servers = []
        if self.service_health is not None:
            self.service_health.stop()
        if self.dns is not None:
            self.dns.stop()
        self._housekeeping()

    def close(self) -> None:
        if self.claimed:
            release_interfaces(self.claimed)
            self.claimed = None
        for port in self.ports:
            port.close()
        self.ports = []

    def _start_servers(self) -> None:
        from dataplane.control import ControlServer
        from dataplane.metrics import MetricsServer
        opts, kp = self.options, self.kube_proxy
        metrics_bind = kp.metrics_bind_address if opts.metrics_bind_address is None else opts.metrics_bind_address
        hard_fail = kp.bind_address_hard_fail
        if metrics_bind:   # kube-proxy: empty disables
            self._serve("metrics", lambda: MetricsServer(self.metrics, metrics_bind), hard_fail)
        if self.health is not None:
            self._serve("healthz", lambda: self.health, hard_fail)
        if opts.control_socket is not None:
            self._serve("control socket", lambda: ControlServer(opts.control_socket, self), True)

    def _serve(self, what: str, make, hard_fail: bool) -> None:
        """kube-proxy logs a port it cannot bind and carries on, unless bindAddressHardFail."""
        try:
            server = make()
            server.start()
        except OSError as exc:
            if hard_fail:
                raise
            log.error("cannot start the %s server: %s", what, exc)
            return
        self.servers.append(server)

    def _after_sync(self) -> None:
        """healthCheckNodePort listeners follow the Services; their answers follow the local
        endpoints (kube-proxy's syncProxyRules ends the same way)."""
        proxier = self.node.proxier
        self.service_health.sync_services(proxier.health_check_services())
        self.service_health.sync_endpoints(proxier.local_ready_endpoints())

    # ---- periodic ----

    def _housekeeping(self) -> None:
        self._report_nat_exhaustion()
        for index in self.engine.dead_ports():
            name = self.node.port_names[index]
            if name not in self.stats.port_errors:
                log.warning("port %s: interface went away; dropped", name)
                self.stats.port_errors.append(name)
        self._write_stats()

    def _report_nat_exhaustion(self) -> None:
        """New connections refused for lack of a free SNAT port: a metric per Service, and a
        warning naming the Service each time its count grows."""
        counts = self.node.ctnat.nat_exhausted()
        if not counts:
            return
        with CONTROL_LOCK:
            names = self.node.proxier.service_names()
        for name, grew in nat_exhaustion_growth(counts, names, self._nat_exhausted):
            log.warning("SNAT ports exhausted for %s: %d more new connections dropped", name, grew)
            if self.metrics is not None:
                self.metrics.nat_exhausted.labels(service=name).inc(grew)

    def _write_stats(self) -> None:
        """Atomically replace the stats file (mode 0600, never through a symlink), so a reader
        never sees half of it."""
        path = self.options.stats_file
        if path is None:
            return
        write_private(path, json.dumps(self.counters()).encode())

    # ---- conntrack state ----

    def _restore_conntrack(self) -> int:
        """Connections tracked by a previous run carry on (no file: none; a bad one is
        reported and ignored)."""
        path = self.options.conntrack_file
        if path is None or not path.exists():
            return 0
        try:
            loaded = self.node.conntrack.restore(str(path), time.time_ns())
        except (ValueError, OSError) as exc:   # StateFileError: foreign, truncated, corrupted
            log.warning("conntrack state %s not restored: %s", path, exc)
            return 0
        report = getattr(self.node.conntrack, "restore_report", {})
        log.info("conntrack state %s: %d connections restored (%s)", path, loaded,
                 ", ".join(f"{k} {v}" for k, v in report.items() if k != "loaded") or "none skipped")
        return loaded

    def save_conntrack(self) -> None:
        if self.options.conntrack_file is not None:
            try:
                self.node.conntrack.save(str(self.options.conntrack_file))
            except OSError as exc:
                log.error("cannot save the conntrack state to %s: %s", self.options.conntrack_file, exc)

    # ---- views ----

    def counters(self) -> dict:
        pipeline = self.node.pipeline
        cp = self.cp
        engine = self.engine.stats()
        return {
            "packets": engine["packets"], "bursts": engine["bursts"],
            "syncs": dict(cp.syncs) if cp else {}, "reloads": sum(cp.syncs.values()) if cp else 0,
            "reload_errors": (cp.errors + self._source_problems()) if cp else [],
            "warnings": list(cp.warnings) if cp else [],
            "port_errors": list(self.stats.port_errors),
            "counters": dict(zip(COUNTERS, map(int, pipeline.counters))),
            "drops": {k: int(v) for k, v in zip(DROP_REASONS, pipeline.drops) if k != "none" and v},
            "ports": {p.name: {**self.ports[i].stats(), "tx_pipeline": int(pipeline.port_tx[i])}
                      for i, p in enumerate(self.node.dp.ports)} if self.ports else {},
            "conntrack": len(self.node.conntrack), "conntrack_restored": self.restored,
            "engine": engine,
            "sync_latency": cp.latency_summary() if cp else {},
        }

    def _source_problems(self) -> list[str]:
        out = []
        for s in self.sources:
            problems = s.problems
            for v in problems.values():
                out.extend(v if isinstance(v, list) else [v])
        return out[-100:]


def nat_exhaustion_growth(counts: dict, names: dict, seen: dict) -> list[tuple[str, int]]:
    """(Service, new drops) since the last call, from CtNat.nat_exhausted() counts by service id
    (0: pod traffic leaving the cluster, None: Services beyond the counted ones); `seen` is kept
    by the caller between calls."""
    out = []
    for svc_id, count in counts.items():
        name = ("pod traffic leaving the cluster" if svc_id == 0 else "other Services" if svc_id is None
                else names.get(svc_id, f"service id {svc_id}"))
        if count > seen.get(name, 0):
            out.append((name, count - seen.get(name, 0)))
            seen[name] = count
    return out


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by root only, without following a symlink
    planted at the temporary name or the path itself (the rename replaces a link, never its target)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def select_node_config(config: Config, node_name: str | None, path: Path) -> Config:
    """The configuration of this node. With --hostname-override, a directory may hold one
    DataplaneConfiguration per node (one ConfigMap for a whole DaemonSet): this node's is used."""
    if node_name and (config.dataplane is None or config.dataplane.node_name != node_name):
        mine = [dp for dp in _dataplane_configurations(path) if dp.node_name == node_name]
        if not mine:
            raise ValueError(f"no valid DataplaneConfiguration with nodeName {node_name!r}"
                             + "".join(f"\n{p}" for p in config.problems))
        config = dataclasses.replace(config, dataplane=mine[0])
    if config.dataplane is None:
        raise ValueError("no valid DataplaneConfiguration object (ports and routes)"
                         + "".join(f"\n{p}" for p in config.problems))
    if node_name:   # the others are for other nodes, not duplicates
        config = dataclasses.replace(config, problems=tuple(
            p for p in config.problems if not (p.kind == "DataplaneConfiguration" and "only one" in p.message)))
    return config


def _dataplane_configurations(path: Path) -> list:
    from dataplane.config.loader import SUFFIXES, parse_object
    files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file()) if path.is_dir() else [path]
    out = []
    for f in files:
        try:
            docs = list(yaml.safe_load_all(f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue   # reported by the main load
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "DataplaneConfiguration":
                _, obj, _, _ = parse_object(doc, str(f))
                if obj is not None:
                    out.append(obj)
    return out


def _in_cluster() -> bool:
    from dataplane.k8s.client import IN_CLUSTER_ENV
    return all(os.environ.get(k) for k in IN_CLUSTER_ENV) and Path(
        "/var/run/secrets/kubernetes.io/serviceaccount/token").exists()


def _proxy_health(kp, opts: RunOptions):
    """kube-proxy's /healthz and /livez (None when the bind address is empty); unhealthy once a
    queued change waited 2 x syncPeriod, as kube-proxy's health timeout."""
    from dataplane.healthcheck import ProxyHealth
    bind = kp.healthz_bind_address if opts.healthz_bind_address is None else opts.healthz_bind_address
    return ProxyHealth(bind, 2 * kp.sync_period) if bind else None


NFT_TABLE = "dataplane"


def claim_interfaces(dp) -> str:
    """With a local port, the node's stack is reached through the tap only: an nftables ingress
    drop on every AF_PACKET interface keeps the kernel from also answering their traffic (a
    kernel owning the node IP would reset NodePort and SNAT-reply TCP segments, as Linux accepts
    local addresses on any interface). AF_PACKET taps run before the ingress hook, so the
    dataplane still sees every frame."""
    chains = "".join(
        f'  chain in_{i} {{ type filter hook ingress device "{p.ifname or p.name}" priority -500;'
        f' policy drop; }}\n'
        for i, p in enumerate(dp.ports) if p.type == "afpacket")
    script = f"table netdev {NFT_TABLE} {{\n{chains}}}\n"
    try:
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True,
                       capture_output=True)
    except FileNotFoundError:
        raise OSError("nft (nftables) is needed to keep the kernel off the dataplane's "
                      "interfaces when localPort is set") from None
    except subprocess.CalledProcessError as exc:
        raise OSError(f"nft: {exc.stderr.strip()}") from None
    return NFT_TABLE


def release_interfaces(table: str) -> None:
    subprocess.run(["nft", "delete", "table", "netdev", table], capture_output=True)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)


def install_signal_handlers(worker: Worker) -> None:
    """Every terminating signal stops the node cleanly (counters printed, conntrack saved);
    SIGHUP rebuilds the tables from the current objects, like a forced full sync."""
    def stop(signum, frame):
        log.info("%s: shutting down", signal.Signals(signum).name)
        worker.stop()

    def hup(signum, frame):
        log.info("SIGHUP: full resync")
        if worker.cp is not None:
            worker.cp.request_full_sync()
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    signal.signal(signal.SIGHUP, hup)
