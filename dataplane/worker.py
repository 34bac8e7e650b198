"""`dataplane run`: the live forwarding loop over the ports a configuration names.

One thread polls every port; a ready port's ring is drained a burst at a time, each burst goes
through the pipeline once and is transmitted on every port it addresses (one batched send per
port). The configuration directory is watched: changed Kubernetes objects are applied between
bursts, so Services and EndpointSlices change without a restart and without losing conntrack.
"""
from __future__ import annotations

import json
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dataplane.burst import COUNTERS, DROP_REASONS, VERDICT, Burst
from dataplane.config import ConfigError, load
from dataplane.io import open_port
from dataplane.tables import NodeDataplane
from dataplane.trace import TraceWriter

__all__ = ["Worker", "RunStats"]

# Frames that leave a port: forwarded, rejected (the answer), and local ones when a local port
# (a tap into the node's stack) is configured.
TX_MASK = (1 << VERDICT["forward"]) | (1 << VERDICT["reject"]) | (1 << VERDICT["local"])
RELOAD_INTERVAL_S = 1.0
MAX_BURSTS_PER_WAKEUP = 16  # one busy port must not starve the others or the config watch


@dataclass
class RunStats:
    bursts: int = 0
    packets: int = 0
    reloads: int = 0
    reload_errors: list[str] = field(default_factory=list)
    port_errors: list[str] = field(default_factory=list)  # ports that failed and were dropped


class Worker:
    def __init__(self, config_path: Path, burst_size: int = 256, stats_file: Path | None = None,
                 trace: TraceWriter | None = None, conntrack_file: Path | None = None):
        self.config_path = Path(config_path)
        self.stats_file = stats_file
        self.trace = trace
        self.conntrack_file = conntrack_file
        config = load(self.config_path)
        self.node = NodeDataplane(config, live=True)
        self.restored = self._restore_conntrack()
        dp = config.dataplane
        self.ports = []
        try:
            for i, port in enumerate(dp.ports):
                self.ports.append(open_port(port))
        except BaseException:
            self.close()
            raise
        self.node.attach_ports(self.ports)
        self.claimed = claim_interfaces(dp) if dp.local_port is not None else None
        self.burst = Burst(burst_size)
        self.probes = Burst(64)
        self.stats = RunStats()
        self._seen = self._config_files()
        self.stop = threading.Event()

    def _restore_conntrack(self) -> int:
        """Connections tracked by a previous run carry on (a missing or foreign file: none)."""
        if self.conntrack_file is None or not self.conntrack_file.exists():
            return 0
        try:
            return self.node.conntrack.restore(str(self.conntrack_file), time.time_ns())
        except ValueError:
            return 0

    def save_conntrack(self) -> None:
        if self.conntrack_file is not None:
            self.node.conntrack.save(str(self.conntrack_file))

    def close(self):
        if getattr(self, "claimed", None):
            release_interfaces(self.claimed)
            self.claimed = None
        for port in self.ports:
            port.close()
        self.ports = []

    def run(self) -> RunStats:
        """Forward until `stop` is set (SIGINT/SIGTERM in `dataplane run`)."""
        poller = select.epoll()
        by_fd = {}
        for i, port in enumerate(self.ports):
            poller.register(port.fileno(), select.EPOLLIN)
            by_fd[port.fileno()] = i
        next_reload = time.monotonic() + RELOAD_INTERVAL_S
        try:
            while not self.stop.is_set():
                for fd, events in poller.poll(0.1):
                    if events & (select.EPOLLERR | select.EPOLLHUP):
                        # The interface went away (e.g. its pod was deleted): stop polling it
                        # instead of spinning on the error; the other ports carry on.
                        poller.unregister(fd)
                        self.stats.port_errors.append(self.node.port_names[by_fd[fd]])
                        continue
                    self._drain(by_fd[fd])
                if time.monotonic() >= next_reload:
                    self._maybe_reload()
                    self._probe_neighbours()
                    self._write_stats()
                    next_reload = time.monotonic() + RELOAD_INTERVAL_S
        finally:
            poller.close()
        return self.stats

    def _drain(self, index: int) -> None:
        port, burst, pipeline = self.ports[index], self.burst, self.node.pipeline
        for _ in range(MAX_BURSTS_PER_WAKEUP):
            n = port.rx(burst, index)
            if n == 0:
                return
            pipeline.process(burst, time.time_ns())
            if self.trace is not None:
                self.trace.write(burst)
            for out_index, out in enumerate(self.ports):
                out.tx(burst, out_index, TX_MASK)
            self.stats.bursts += 1
            self.stats.packets += n
            if n < burst.capacity:
                return

    def _probe_neighbours(self) -> None:
        """Unicast probes for the neighbours in use that went stale, so they are confirmed
        before they expire (one per neighbour a second at most)."""
        neigh = self.node.router.neigh
        if neigh.probe_stale_into(self.probes, time.time_ns()):
            for index, port in enumerate(self.ports):
                port.tx(self.probes, index, TX_MASK)

    def _config_files(self) -> tuple:
        """(name, mtime) of every configuration file: any file added, removed or rewritten
        changes it."""
        paths = [self.config_path] if self.config_path.is_file() else \
            [p for p in self.config_path.iterdir() if p.suffix in (".yaml", ".yml", ".json")]
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in paths))

    def _maybe_reload(self) -> None:
        """Re-apply the Kubernetes objects when a file changed; a bad file keeps the old state."""
        seen = self._config_files()
        if seen == self._seen:
            return
        self._seen = seen
        try:
            config = load(self.config_path)
            self.node.apply(config)
            self.stats.reloads += 1
            if config.dataplane != self.node.dp:
                self.stats.reload_errors.append(
                    "DataplaneConfiguration changed: ports and routes take effect at restart")
        except (ConfigError, OSError) as exc:
            self.stats.reload_errors.append(str(exc))

    def _write_stats(self) -> None:
        """Atomically replace the stats file, so a reader never sees half of it."""
        if self.stats_file is None:
            return
        tmp = self.stats_file.with_name(self.stats_file.name + ".tmp")
        tmp.write_text(json.dumps(self.counters()))
        tmp.replace(self.stats_file)

    def counters(self) -> dict:
        pipeline = self.node.pipeline
        return {
            "packets": self.stats.packets, "bursts": self.stats.bursts,
            "reloads": self.stats.reloads, "reload_errors": self.stats.reload_errors,
            "port_errors": self.stats.port_errors,
            "counters": dict(zip(COUNTERS, map(int, pipeline.counters))),
            "drops": {k: int(v) for k, v in zip(DROP_REASONS, pipeline.drops) if k != "none" and v},
            "ports": {p.name: {**self.ports[i].stats(), "tx_pipeline": int(pipeline.port_tx[i])}
                      for i, p in enumerate(self.node.dp.ports)} if self.ports else {},
            "conntrack": len(self.node.conntrack), "conntrack_restored": self.restored,
        }


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


def install_signal_handlers(worker: Worker) -> None:
    def handler(signum, frame):
        worker.stop.set()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
