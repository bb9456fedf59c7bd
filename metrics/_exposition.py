"""Serving a registry: a plain HTTP endpoint, or an ASGI app to mount (e.g. in FastAPI)."""

from __future__ import annotations

import threading
from typing import Any, final
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import CollectorRegistry

__all__ = ["MetricsServer", "make_asgi_app", "start_http_server"]


@final
class MetricsServer:
    """A running `/metrics` endpoint; `close()` stops it and joins its thread."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The port it listens on (useful with `port=0`)."""
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """Where to scrape."""
        return f"http://{self._server.server_name}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def start_http_server(
    registry: CollectorRegistry, *, port: int = 0, addr: str = "127.0.0.1"
) -> MetricsServer:
    """Serve `registry` on `addr:port` from a daemon thread (OpenMetrics when asked for).

    Args:
        registry: The supervisor's registry (`SessionSupervisor.registry`).
        port: 0 picks a free port (read it from `.port`).
        addr: The address to bind; loopback by default.
    """
    server, thread = prometheus_client.start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server, thread)


def make_asgi_app(registry: CollectorRegistry) -> Any:
    """An ASGI app serving `registry` (mount it at `/metrics`; it negotiates OpenMetrics)."""
    return prometheus_client.make_asgi_app(registry=registry)
