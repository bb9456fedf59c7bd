"""Serve an ASGI app (the emulator) with uvicorn on a thread of its own, on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar, final

import uvicorn

from supervisor.testing._loop import LoopThread

__all__ = ["EmulatorServer", "listening_socket"]

T = TypeVar("T")


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A TCP socket bound to (host, port) and listening.

    proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without it
    every response waits ~40 ms for a delayed ACK (Nagle).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def http_url(host: str, port: int) -> str:
    """The base URL of a server on (host, port), brackets around IPv6 hosts."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@final
class EmulatorServer:
    """Runs an ASGI app on a free (or given) loopback port until `stop()`.

    The socket is bound and listening when the constructor returns, so `url` works at once;
    connections made before uvicorn accepts wait in the kernel's backlog.

    Example:
        >>> with EmulatorServer(ParlantEmulator([EmulatedAgent("echo")])) as server:
        ...     client = ParlantClient(base_url=server.url)
    """

    def __init__(
        self, emulator: Any, *, host: str = "127.0.0.1", port: int = 0, backlog: int = 16384
    ) -> None:
        self.emulator = emulator
        self._socket = listening_socket(host, port, backlog)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            emulator.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            backlog=backlog,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=120,
        )
        self._server = uvicorn.Server(config)
        self._thread = LoopThread("parlant-emulator")
        self._serving = self._thread.submit(self._server.serve(sockets=[self._socket]))

    @property
    def url(self) -> str:
        """The base URL to give a Parlant client."""
        return http_url(self.host, self.port)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on the server's loop (where the emulator's state lives)."""
        return self._thread.call(function, *args)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's loop and return its result (e.g. `emulator.until`)."""
        return self._thread.run(coroutine, timeout)

    def stop(self) -> None:
        """Stop serving (open long-polls are answered 503) and join the thread."""
        if self._thread.alive:
            close = getattr(self.emulator, "close", None)
            if callable(close):
                self.call(close)
            self._server.should_exit = True
            self._serving.exception(timeout=30)
        self._thread.stop()
        self._socket.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
