"""Serve an ASGI app (the emulator) with uvicorn on a thread of its own, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar, final

import uvicorn

__all__ = ["EmulatorServer"]

T = TypeVar("T")


async def _cancel_remaining() -> None:
    """Long-polls still held open when the server stops end here, not at interpreter exit."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


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
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and
        # without it every response waits ~40 ms for a delayed ACK (Nagle)
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(backlog)
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parlant-emulator", daemon=True)
        self._thread.start()
        self._ready.wait()

    @property
    def url(self) -> str:
        """The base URL to give a Parlant client."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.call_soon(self._ready.set)
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        finally:
            loop.run_until_complete(_cancel_remaining())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on the server's loop (where the emulator's state lives)."""
        assert self._loop is not None
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function(*args))
            except BaseException as error:  # handed to the caller, who re-raises it
                future.set_exception(error)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's loop and return its result (e.g. `emulator.until`)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self) -> None:
        """Stop serving (open long-polls are answered 503) and join the thread."""
        if self._thread.is_alive():
            close = getattr(self.emulator, "close", None)
            if callable(close):
                self.call(close)
            self._server.should_exit = True
        self._thread.join(timeout=30)
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
