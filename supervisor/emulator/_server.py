"""Serve an ASGI app (the emulator) with uvicorn on a thread of its own, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, final

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from supervisor._net import LoopThread, http_url, listening_socket

__all__ = ["AppServer", "EmulatorServer"]

T = TypeVar("T")


class _UnloggedH11(H11Protocol):
    """h11 that writes no access log whatever the process' logging: uvicorn decides it from the
    `uvicorn.access` logger's handlers, which are process-wide, and its `access_log=False`
    empties that logger for every server of the process (the backend's own included)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access_log = False


def _unlogged(http: Literal["h11", "httptools"]) -> type[asyncio.Protocol]:
    """The `http` protocol writing no access log (see `_UnloggedH11`); httptools is imported
    only when asked for (uvicorn does not need it)."""
    if http == "h11":
        return _UnloggedH11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class _UnloggedHttpTools(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.access_log = False

    return _UnloggedHttpTools


_THREAD = "asgi-server"


class _EmbeddedLifecycleFilter(logging.Filter):
    """uvicorn logs for every server of the process through one logger (`uvicorn.error`): the
    start and stop lines of a server embedded in the backend repeated the backend's own
    ("Started server process", "Shutting down", "Finished server process", twice each). Its
    warnings and errors still go through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or record.threadName != _THREAD


_QUIET = _EmbeddedLifecycleFilter()


class AppServer:
    """Runs an ASGI app with uvicorn on a thread of its own, on a free (or given) port, until
    `stop()`.

    The socket is bound and listening when the constructor returns, so `url` works at once;
    connections made before uvicorn accepts (after the app's lifespan start-up) wait in the
    kernel's backlog. `stop()` drains requests in flight for up to `graceful_shutdown` seconds,
    then runs the app's lifespan shutdown. It writes no access log unless `access_log` (then to
    the `uvicorn.access` logger, as uvicorn does); `configure` may change the uvicorn config
    before the server is made (`supervisor.backend.harden_server` does, and its protocol writes
    the access log).

    Example:
        >>> with AppServer(create_app()) as backend:
        ...     httpx.post(f"{backend.url}/api/chat", json={...})
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 16384,
        lifespan: Literal["on", "off"] = "on",
        graceful_shutdown: int = 1,
        http: Literal["h11", "httptools"] = "h11",
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
        access_log: bool = False,
        configure: Callable[[uvicorn.Config], None] | None = None,
    ) -> None:
        self.app = app
        self._backlog = backlog
        self._socket = listening_socket(host, port, backlog)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._config = uvicorn.Config(
            app,
            # never reconfigure logging: it is process-wide, and an embedded emulator must not
            # silence the logs of the uvicorn serving the app it is embedded in
            log_config=None,
            log_level=None,
            lifespan=lifespan,
            backlog=backlog,
            timeout_graceful_shutdown=graceful_shutdown,
            timeout_keep_alive=120,
            http=http if access_log else _unlogged(http),
        )
        if configure is not None:
            configure(self._config)
        self._server = uvicorn.Server(self._config)
        logging.getLogger("uvicorn.error").addFilter(_QUIET)  # once: a logger keeps a set
        self._thread = LoopThread(_THREAD, loop_factory)
        self._serving = self._thread.submit(self._server.serve(sockets=[self._socket]))

    def _shut(self) -> None:
        self._before_stop()
        self._server.should_exit = True
        self._serving.exception(timeout=60)
        self._socket.close()

    @property
    def url(self) -> str:
        """The server's base URL."""
        return http_url(self.host, self.port)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on the server's loop (where the app's state lives)."""
        return self._thread.call(function, *args)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's loop and return its result."""
        return self._thread.run(coroutine, timeout)

    def stop(self) -> None:
        """Stop accepting, drain requests in flight, run the lifespan shutdown, join the thread."""
        if self._thread.alive:
            self._shut()
        self._thread.stop()
        self._socket.close()

    def _before_stop(self) -> None:
        """A hook for subclasses, run on the caller's thread while the server still runs."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@final
class EmulatorServer(AppServer):
    """Runs a `ParlantEmulator` on a free (or given) loopback port until `stop()`.

    Example:
        >>> with EmulatorServer(ParlantEmulator([EmulatedAgent("echo")])) as server:
        ...     client = ParlantClient(base_url=server.url)
    """

    def __init__(
        self,
        emulator: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 16384,
        http: Literal["h11", "httptools"] = "h11",
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    ) -> None:
        self.emulator = emulator
        super().__init__(
            emulator.app,
            host=host,
            port=port,
            backlog=backlog,
            lifespan="off",
            http=http,
            loop_factory=loop_factory,
        )

    def _before_stop(self) -> None:
        """Open long-polls are answered 503 at once instead of waiting for their timeout."""
        self.call(self.emulator.close)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop serving (like `stop()`: polls answered 503, turns interrupted), stay down for
        `down_for` seconds (connections refused), then serve again on the same port with the
        same sessions and offsets; interrupted turns run again (`ParlantEmulator.reopen`)."""
        self._shut()
        if down_for > 0:
            threading.Event().wait(down_for)
        self._socket = listening_socket(self.host, self.port, self._backlog)
        self._server = uvicorn.Server(self._config)
        self._serving = self._thread.submit(self._server.serve(sockets=[self._socket]))
        self.call(self.emulator.reopen)
