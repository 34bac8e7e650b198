"""Prometheus metrics: kube-proxy's names for what we also do, ours for the dataplane itself.

kube-proxy's (pkg/proxy/metrics/metrics.go) are updated by the control plane as it syncs, so
existing dashboards and alerts keep working. The dataplane's packet counters live in C arrays
that the forwarding thread bumps; they are read at scrape time by a collector, never pushed.
"""
from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import MetricsHandler

from dataplane.healthcheck import HttpServer, split_host_port

__all__ = ["Metrics", "MetricsServer"]


def _exponential(start: float, factor: float, count: int) -> list[float]:
    return [start * factor ** i for i in range(count)]


# network_programming_duration_seconds: 0.25 s, 0.5 s, 1..59 s, 60..115 s, 2..5 min (kube-proxy's).
_PROGRAMMING_BUCKETS = ([0.25, 0.5] + [float(s) for s in range(1, 60)] + [float(s) for s in range(60, 120, 5)]
                        + [float(s) for s in range(120, 301, 30)])


class Metrics:
    """One registry per node (so tests can run several nodes in one process)."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        sync_buckets = _exponential(0.001, 2, 15)
        self.sync_duration = Histogram("kubeproxy_sync_proxy_rules_duration_seconds",
                                       "SyncProxyRules latency in seconds", buckets=sync_buckets, registry=r)
        self.full_sync_duration = Histogram("kubeproxy_sync_full_proxy_rules_duration_seconds",
                                            "SyncProxyRules latency in seconds for full resyncs",
                                            buckets=sync_buckets, registry=r)
        self.partial_sync_duration = Histogram("kubeproxy_sync_partial_proxy_rules_duration_seconds",
                                               "SyncProxyRules latency in seconds for partial resyncs",
                                               buckets=sync_buckets, registry=r)
        self.last_sync = Gauge("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                               "The last time proxy rules were successfully synced", registry=r)
        self.last_queued = Gauge("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                                 "The last time a sync of proxy rules was queued", registry=r)
        self.programming = Histogram("kubeproxy_network_programming_duration_seconds",
                                     "In Cluster Network Programming Latency in seconds",
                                     buckets=_PROGRAMMING_BUCKETS, registry=r)
        self.endpoint_changes_pending = Gauge("kubeproxy_sync_proxy_rules_endpoint_changes_pending",
                                              "Pending proxy rules Endpoint changes", registry=r)
        self.endpoint_changes = Counter("kubeproxy_sync_proxy_rules_endpoint_changes",
                                        "Cumulative proxy rules Endpoint changes", registry=r)
        self.service_changes_pending = Gauge("kubeproxy_sync_proxy_rules_service_changes_pending",
                                             "Pending proxy rules Service changes", registry=r)
        self.service_changes = Counter("kubeproxy_sync_proxy_rules_service_changes",
                                       "Cumulative proxy rules Service changes", registry=r)
        self.no_local_endpoints = Gauge("kubeproxy_sync_proxy_rules_no_local_endpoints_total",
                                        "Number of services with a Local traffic policy and no endpoints",
                                        ["traffic_policy"], registry=r)
        # Ours: the control plane.
        self.event_latency = Histogram("dataplane_sync_event_to_visible_seconds",
                                       "From an object event's arrival to its change being used by the "
                                       "forwarding thread", buckets=_exponential(0.0001, 2, 16), registry=r)
        self.sync_errors = Counter("dataplane_sync_errors", "Service ports that failed to program "
                                   "(kept as they were, retried)", registry=r)
        self.invalid_objects = Gauge("dataplane_invalid_objects", "Objects skipped because they are invalid",
                                     ["source"], registry=r)
        self.nat_exhausted = Counter("dataplane_nat_exhausted", "New connections dropped for lack of a free "
                                     "SNAT port", ["service"], registry=r)

    def add_dataplane(self, node, engine, ports) -> None:
        """Packet counters of a running node (its open ports in configuration order), read at
        scrape time."""
        self.registry.register(_DataplaneCollector(node, engine, ports))


class _DataplaneCollector:
    def __init__(self, node, engine, ports):
        self.node, self.engine, self.ports = node, engine, ports

    def collect(self):
        from dataplane.burst import COUNTERS, DROP_REASONS
        pipeline = self.node.pipeline
        stage = CounterMetricFamily("dataplane_pipeline_events", "Per-stage pipeline events", labels=["counter"])
        for name, value in zip(COUNTERS, pipeline.counters):
            stage.add_metric([name], int(value))
        yield stage
        drops = CounterMetricFamily("dataplane_drops", "Packets dropped, by reason", labels=["reason"])
        for name, value in zip(DROP_REASONS, pipeline.drops):
            if name != "none":
                drops.add_metric([name], int(value))
        yield drops
        packets = CounterMetricFamily("dataplane_port_packets", "Frames per port and direction",
                                      labels=["port", "direction"])
        errors = CounterMetricFamily("dataplane_port_errors", "Port errors: ring drops, send errors, oversize",
                                     labels=["port", "kind"])
        for port, live in zip(self.node.dp.ports, self.ports):
            st = live.stats()
            packets.add_metric([port.name, "rx"], st["rx"])
            packets.add_metric([port.name, "tx"], st["tx"])
            for kind in ("rx_dropped", "tx_errors", "oversize"):
                errors.add_metric([port.name, kind], st[kind])
        yield packets
        yield errors
        ct = self.node.conntrack
        yield GaugeMetricFamily("dataplane_conntrack_entries", "Connections tracked", value=len(ct))
        yield GaugeMetricFamily("dataplane_conntrack_capacity", "Conntrack table size", value=ct.capacity)
        ct_stats = CounterMetricFamily("dataplane_conntrack_operations", "Conntrack table operations",
                                       labels=["op"])
        for op, value in ct.stats().items():
            if isinstance(value, int):
                ct_stats.add_metric([op], value)
        yield ct_stats
        st = self.engine.stats()
        yield CounterMetricFamily("dataplane_bursts", "Bursts processed", value=st["bursts"])
        yield CounterMetricFamily("dataplane_table_swaps", "Times the control plane parked the forwarding "
                                  "thread to change tables", value=st["pauses"])
        yield GaugeMetricFamily("dataplane_table_swap_max_seconds", "Longest the forwarding thread was "
                                "parked for a table change", value=st["pause_max_ns"] / 1e9)


class MetricsServer:
    """GET /metrics on metricsBindAddress, from a thread of its own."""

    def __init__(self, metrics: Metrics, bind_address: str):
        handler = type("Handler", (MetricsHandler,), {"registry": metrics.registry,
                                                      "log_message": lambda *a: None})
        self.server = HttpServer(*split_host_port(bind_address), handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

