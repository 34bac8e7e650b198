"""`dataplane replay`: run a capture through the pipeline, write what it transmits."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from dataplane.burst import COUNTERS, DROP_REASONS, VERDICT, Burst
from dataplane.pcap import PcapError, PcapReader, PcapWriter
from dataplane.tables import NodeDataplane
from dataplane.trace import TraceWriter

__all__ = ["ReplayResult", "replay"]

log = logging.getLogger(__name__)

TRANSMITTED = (VERDICT["forward"], VERDICT["reject"])  # frames that leave a port


@dataclass
class ReplayResult:
    packets: int
    elapsed_s: float
    counters: dict[str, int]
    drops: dict[str, int]
    port_tx: dict[str, int]
    oversize: int = 0
    over_snaplen: int = 0
    error: str | None = field(default=None)

    @property
    def pps(self) -> float:
        return self.packets / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {"packets": self.packets, "elapsed_s": round(self.elapsed_s, 6),
                "pps": round(self.pps), "counters": self.counters, "drops": self.drops,
                "ports": {name: {"tx": n} for name, n in self.port_tx.items()},
                "oversize": self.oversize, "over_snaplen": self.over_snaplen, "error": self.error}


def replay(config, in_path: Path, out_path: Path, trace_path: Path | None = None,
           in_port: str | None = None, burst_size: int = 256) -> ReplayResult:
    """Every input frame counts as received on `in_port` (default: the first port).

    A capture that turns corrupt part-way is processed up to the bad record; the error is
    returned in the result with everything counted so far, and so is a capture that is bad from
    its first byte (nothing processed): both are errors of the input, not of the configuration.
    Records longer than their file's snaplen are processed, counted (over_snaplen) and warned
    about.
    """
    node = NodeDataplane(config)
    port_names = node.port_names
    port_in = _port_index(port_names, in_port)
    pipeline = node.pipeline
    burst = Burst(burst_size)
    packets = 0
    error = None
    out_format = "pcapng" if Path(out_path).suffix == ".pcapng" else "pcap"
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        try:
            reader = stack.enter_context(PcapReader(str(in_path)))
        except PcapError as exc:
            return ReplayResult(0, 0.0, dict(zip(COUNTERS, map(int, pipeline.counters))),
                                {name: 0 for name in DROP_REASONS if name != "none"},
                                dict.fromkeys(port_names, 0), error=str(exc))
        writer = stack.enter_context(PcapWriter(str(out_path), format=out_format, nsec=reader.nsec))
        tracer = None
        if trace_path is not None:
            tracer = TraceWriter(stack.enter_context(open(trace_path, "w")), port_names)
        while True:
            try:
                n = reader.fill(burst, port_in)
            except ValueError as exc:  # PcapError: keep what was good, report where it broke
                error = str(exc)
                break
            if n == 0:
                break
            pipeline.process(burst)
            writer.write(burst, TRANSMITTED)
            if tracer is not None:
                tracer.write(burst)
            packets += n
        oversize = reader.oversize
        over_snaplen = reader.over_snaplen
    if over_snaplen:
        log.warning("%s: %d records longer than the capture's snaplen (processed as recorded)",
                    in_path, over_snaplen)
    elapsed = time.perf_counter() - started
    return ReplayResult(
        packets=packets,
        elapsed_s=elapsed,
        counters=dict(zip(COUNTERS, map(int, pipeline.counters))),
        drops={name: int(n) for name, n in zip(DROP_REASONS, pipeline.drops) if name != "none"},
        port_tx=dict(zip(port_names, map(int, pipeline.port_tx))),
        oversize=oversize,
        over_snaplen=over_snaplen,
        error=error,
    )


def _port_index(port_names: list[str], name: str | None) -> int:
    if name is None:
        return 0
    try:
        return port_names.index(name)
    except ValueError:
        raise ValueError(f"--in-port {name!r} is not a configured port "
                         f"(ports: {', '.join(port_names)})") from None
