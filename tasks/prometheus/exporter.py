"""One node's metrics endpoint: a registry of its own and an HTTP server on METRICS_PORT.

A registry per node (not prometheus-client's global one) keeps several nodes in one
process — tests, the embedded demo — apart, and shows only snakepool's figures.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from snakepool.config.operations import DEFAULT_METRICS_ADDRESS
from snakepool.errors import ConfigError
from snakepool.tasks.prometheus.collector import NodeCollector
from snakepool.tasks.prometheus.requests import PoolEvents, RequestMetrics

if TYPE_CHECKING:
    from snakepool.tasks.worker.node import Node

__all__ = ["DEFAULT_ADDRESS", "MetricsExporter"]

log = logging.getLogger("snakepool.prometheus")

#: This host only (``METRICS_ADDRESS``): compose sets ``0.0.0.0``, Prometheus being in
#: another container.
DEFAULT_ADDRESS = DEFAULT_METRICS_ADDRESS


class MetricsExporter:
    """A node's Prometheus metrics.

    Args:
        node: The worker node (its pool may start later: pool figures appear then).
        port: TCP port of ``/metrics`` (0: pick a free one, see :attr:`port`).
        address: IP address to listen on (``METRICS_ADDRESS``).
    """

    def __init__(self, node: Node, *, port: int, address: str = DEFAULT_ADDRESS) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.pool_events = PoolEvents()
        self.requests = RequestMetrics(self.registry, declared=self._declared(node))
        self.registry.register(NodeCollector(node, starts=lambda: self.pool_events.starts))
        self.port = port
        self.address = address
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _declared(node: Node) -> Callable[[], list[str]]:
        def declared() -> list[str]:
            return list(node.pool.commands()) if node.pool is not None else []

        return declared

    def start(self) -> None:
        """Serve ``/metrics`` (in a daemon thread).

        Raises:
            ConfigError: the port cannot be listened on (in use, or not allowed),
                naming ``METRICS_PORT``.
        """
        try:
            server, thread = start_http_server(self.port, addr=self.address, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"SNAKEPOOL_METRICS_PORT: cannot serve metrics on {self.address}:{self.port}: "
                f"{exc.strerror or exc} (another node on this host uses it? give each its own "
                "with --metrics-port; or SNAKEPOOL_METRICS_ADDRESS is not this host's)",
                setting="METRICS_PORT",
            ) from None
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", self.address, self.port)

    def scrape(self) -> bytes:
        """What ``/metrics`` answers now (the Prometheus text format)."""
        return bytes(generate_latest(self.registry))

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
