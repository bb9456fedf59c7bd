"""Serving the backend with uvicorn: its limits, a drain before uvicorn's own shutdown, and
several worker processes.

uvicorn's shutdown alone does not suit a chat backend: at SIGTERM it stops reading new
connections, waits `timeout_graceful_shutdown` for requests in flight, then cancels them (an ask
got a plain-text 500, a stream was cut mid-chunk, each logged a CancelledError traceback), and
only then runs the lifespan shutdown that stops the supervisor. `BackendServer` drains first
(`Backend.drain`: new requests answered 503 JSON at once, asks and streams in flight given
`drain_timeout` seconds, then answered 503 JSON or ended with an `error` event), and hands over
to uvicorn's shutdown once nothing is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import socket
import threading
import time
from types import FrameType
from typing import Final, final

import structlog
import uvicorn
from fastapi import FastAPI

from supervisor.backend._app import Backend, BackendSettings, create_app, prepare_store
from supervisor.backend._http import harden_server

__all__ = ["BackendServer", "serve"]

_UVICORN_GRACE: Final = 5
"""Seconds uvicorn's own shutdown waits after the drain: what is left is sending the last
frames of streams that ended."""


@final
class BackendServer(uvicorn.Server):
    """A uvicorn server of the backend that drains before it shuts down (see the module).

    It builds its app in the process that serves it, so that each worker process has its own
    supervisor.
    """

    def __init__(self, config: uvicorn.Config, settings: BackendSettings, drain_timeout: float):
        super().__init__(config)
        self.settings = settings
        self.drain_timeout = drain_timeout
        self._app: FastAPI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_begun = False
        self._draining: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Build the app here (in a worker, after it was pickled over), then serve it."""
        self._loop = asyncio.get_running_loop()
        self._app = create_app(self.settings)
        self.config.app = self._app
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first SIGINT/SIGTERM drains, then shuts down; another one shuts down at once
        (as uvicorn does)."""
        backend: Backend | None = getattr(self._app.state, "backend", None) if self._app else None
        if self._drain_begun:  # a second signal: stop now, drain or not
            super().handle_exit(sig, frame)
            self.force_exit = True
            return
        if backend is None or self._loop is None:  # not started yet: nothing to drain
            super().handle_exit(sig, frame)
            return
        self._drain_begun = True
        loop = self._loop

        def begin() -> None:
            self._draining = loop.create_task(self._drain(backend, sig, frame))

        loop.call_soon_threadsafe(begin)

    async def _drain(self, backend: Backend, sig: int, frame: FrameType | None) -> None:
        try:
            await backend.drain(self.drain_timeout)
        finally:
            super().handle_exit(sig, frame)


def serve(
    settings: BackendSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    drain_timeout: float = 10.0,
    log_level: int = logging.WARNING,
) -> None:
    """Serve the backend until SIGINT/SIGTERM: `workers` processes on one socket, each with
    its own supervisor, sharing conversations through the store (`settings.store_url`, or the
    SQLite file in `settings.data_dir` for workers of one machine).

    Args:
        log_level: What the supervisor logs (structlog) in each worker process; one process
            logs as the caller configured.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and settings.parlant_url is None:
        raise ValueError(
            "several workers need one Parlant server they all reach (settings.parlant_url): "
            "each would embed an emulator of its own, and a conversation another worker "
            "opened would be lost"
        )
    asyncio.run(prepare_store(settings))  # raises StoreUnusable with its reason, not a traceback
    config = uvicorn.Config(
        "supervisor.backend:create_app",  # replaced by the app each process builds
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=_UVICORN_GRACE,
    )
    harden_server(config, settings.limits)
    if workers == 1:
        # bound here, not by asyncio: asyncio makes an IPv6 socket IPv6-only, and `--host ::`
        # then refused every IPv4 client; uvicorn's binding serves both families
        sock = _listening(config)
        try:
            BackendServer(config, settings, drain_timeout).run(sockets=[sock])
        finally:
            sock.close()
        return
    _Workers(config, settings, drain_timeout, workers, log_level).run()


def _listening(config: uvicorn.Config) -> socket.socket:
    """The server's socket, listening before uvicorn says it runs: `bind_socket` says so
    already, while the app still starts (Parlant checked, agents found), and a client that
    believed it was refused; now the kernel queues it until the app serves."""
    sock = config.bind_socket()
    sock.listen(config.backlog)
    return sock


def _work(
    config: uvicorn.Config,
    settings: BackendSettings,
    drain_timeout: float,
    sock: socket.socket,
    log_level: int,
) -> None:
    """A worker process: in a process group of its own, so that a terminal's Ctrl+C reaches
    the parent alone, which then drains each worker once (SIGTERM). A new interpreter: its
    logging is configured again, as in the parent."""
    os.setpgid(0, 0)
    threading.Thread(target=_die_with, args=(os.getppid(),), daemon=True).start()
    config.configure_logging()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(log_level))
    BackendServer(config, settings, drain_timeout).run(sockets=[sock])


def _die_with(parent: int) -> None:
    """Drain and stop when the parent process is gone (killed, say): a worker in a process
    group of its own would otherwise go on serving the port, orphaned."""
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK)
    os.kill(os.getpid(), signal.SIGTERM)


_PARENT_CHECK: Final = 1.0
_RESTART_BACKOFF: Final = (1.0, 30.0)
"""Seconds before a worker that died young is replaced: doubling from the first to the
second (a worker that cannot start, e.g. its database is down, is not respawned in a loop)."""


@final
class _Workers:
    """Worker processes serving one listening socket, replaced when one dies; SIGINT or SIGTERM
    drains them all (each gets one SIGTERM), then the parent dies by the same signal.

    (uvicorn's own `Multiprocess` makes a plain `uvicorn.Server` in each worker, which would
    not drain.)
    """

    def __init__(
        self,
        config: uvicorn.Config,
        settings: BackendSettings,
        drain_timeout: float,
        workers: int,
        log_level: int,
    ) -> None:
        self._log_level = log_level
        self._config = config
        self._settings = settings
        self._drain_timeout = drain_timeout
        self._count = workers
        self._context = multiprocessing.get_context("spawn")
        self._stopping: list[int] = []

    def _start(self, sock: socket.socket) -> multiprocessing.process.BaseProcess:
        args = (self._config, self._settings, self._drain_timeout, sock, self._log_level)
        process = self._context.Process(target=_work, args=args, name="backend-worker")
        process.start()
        return process

    def run(self) -> None:
        sock = _listening(self._config)
        processes: list[multiprocessing.process.BaseProcess] = []
        started: dict[int, float] = {}  # index -> when its process started
        told: dict[int | None, int] = {}  # pid -> how many signals it was sent
        backoff = _RESTART_BACKOFF[0]
        restart_at: dict[int, float] = {}

        def stop(sig: int, frame: FrameType | None) -> None:
            self._stopping.append(sig)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for index in range(self._count):
                processes.append(self._start(sock))
                started[index] = time.monotonic()
            _log.info("Started %d worker processes [%s]", self._count, os.getpid())
            while any(p.exitcode is None for p in processes) or (restart_at and not self._stopping):
                live = [p.sentinel for p in processes if p.exitcode is None]
                multiprocessing.connection.wait(live, timeout=0.2)  # a dead one's is always ready
                for process in processes:  # each signal the parent got, each worker gets once
                    if process.exitcode is None and told.get(process.pid, 0) < len(self._stopping):
                        told[process.pid] = told.get(process.pid, 0) + 1
                        os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]
                if self._stopping:
                    continue
                now = time.monotonic()
                for index, process in enumerate(processes):
                    if process.exitcode is not None and index not in restart_at:
                        young = now - started[index] < _RESTART_BACKOFF[1]
                        wait = backoff if young else 0.0
                        backoff = (
                            min(backoff * 2, _RESTART_BACKOFF[1]) if young else _RESTART_BACKOFF[0]
                        )
                        _log.warning(
                            "Worker process [%s] died; another in %.0f s", process.pid, wait
                        )
                        restart_at[index] = now + wait
                for index, at in list(restart_at.items()):
                    if at <= now:
                        del restart_at[index]
                        processes[index] = self._start(sock)
                        started[index] = now
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sock.close()
        if self._stopping:
            signal.raise_signal(self._stopping[0])  # die by it, as uvicorn does


_log: Final = logging.getLogger("uvicorn.error")
