"""A worker node's Prometheus metrics, served at ``/metrics`` on ``METRICS_PORT``.

- :mod:`~snakepool.tasks.prometheus.requests` — per-request counters and histograms
  (a :class:`~snakepool.tasks.worker.observer.LaneObserver` the lane pipeline calls);
- :mod:`~snakepool.tasks.prometheus.collector` — figures read when Prometheus scrapes:
  the pool, the rollout flags, the breakers, the dead-letter count;
- :mod:`~snakepool.tasks.prometheus.exporter` — one registry and HTTP server per node.

Every metric name starts ``snakepool_``; the list, with labels, is in
``docs/observability.md``. Names here are loaded on first use (prometheus-client is only
imported by nodes that serve metrics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from snakepool.tasks.prometheus.collector import NodeCollector, dead_letter_count
    from snakepool.tasks.prometheus.exporter import MetricsExporter
    from snakepool.tasks.prometheus.requests import PoolEvents, RequestMetrics

__all__ = ["MetricsExporter", "NodeCollector", "PoolEvents", "RequestMetrics", "dead_letter_count"]


def __getattr__(name: str) -> Any:
    if name in ("NodeCollector", "dead_letter_count"):
        from snakepool.tasks.prometheus import collector

        return getattr(collector, name)
    if name == "MetricsExporter":
        from snakepool.tasks.prometheus.exporter import MetricsExporter

        return MetricsExporter
    if name in ("PoolEvents", "RequestMetrics"):
        from snakepool.tasks.prometheus import requests

        return getattr(requests, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
