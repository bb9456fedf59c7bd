"""Servers on 127.0.0.1 driven from synchronous code: an asyncio loop on a thread of its own,
listening sockets, their URLs (for `supervisor.emulator` and `supervisor.testing`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, final

__all__ = ["LoopThread", "http_url", "listening_socket"]

T = TypeVar("T")


async def _cancel_remaining() -> None:
    """Tasks still running when the loop stops (held-open long-polls) end here, not at exit."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@final
class LoopThread:
    """Runs an event loop (asyncio's, or `loop_factory()`'s) on a daemon thread until `stop()`;
    state on it is touched via `call`."""

    def __init__(
        self,
        name: str,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    ) -> None:
        self.loop = loop_factory()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(_cancel_remaining())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    @property
    def alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    def call(self, function: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
        """Run `function(*args)` on the loop and return its result (or raise its error)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function(*args))
            except BaseException as error:  # handed to the caller, who re-raises it
                future.set_exception(error)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout=timeout)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start a coroutine on the loop; its future resolves when it ends."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the loop and return its result."""
        return self.submit(coroutine).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop (cancelling what still runs on it) and join the thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=timeout)


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
