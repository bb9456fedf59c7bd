"""A Parlant module that makes waiting free: requests waiting on a session are woken when the
session is written, instead of re-reading Parlant's store on a timer.

Parlant 3.3 answers a waiting `list_events` by reading its session store every 0.25 s until data
arrives or `wait_for_data` passes, and a waiting `read_event` every 0.1 s
(`PollingSessionListener`, `parlant/core/sessions.py`): each waiting request costs the server
those reads whether anything happens or not (200 waiting long-polls took 19.6 % of its core,
measured), and each write reaches its waiting client 0-250 ms later. This module defines
Parlant's `SessionListener` as `NotifyingSessionListener`, which waits for the session's own
writes: the same checks as Parlant's (the filters, `min_offset`, the timeout and its 504, a
deleted session's 404, a streamed message's completion), run when the session's events are
created, updated or deleted, or the session deleted, and not in between. Waiting then costs
nothing, and a write reaches its waiting client at once.

Load it in any of the ways Parlant offers (it needs only the core package installed in
Parlant's environment, from a clone or a wheel: `pip install <your clone or wheel>`):

- `parlant-server --module supervisor.parlant_module` (or `modules` in Parlant's config);
- `PARLANT_SDK_MODULE=supervisor.parlant_module` for a server started with the SDK;
- `p.Server(configure_container=supervisor.parlant_module.configure_container)`.

What it relies on, checked when Parlant starts (a Parlant whose internals differ fails to
start, naming its version, rather than waiting less correctly): Parlant defines its
`SessionListener` only if nothing did before (`try_define` in `parlant/bin/server.py`); the
listener's three methods and their parameters; and every write of an event going through the
`SessionStore` (`create_event`, `update_event`, `delete_event`, `delete_session`) in the process
that serves the session. To see those writes it wraps the four methods on the one store
instance Parlant's container holds (Parlant has no hook to observe its store: the one unclean
part, see `docs/PARLANT.md`).

It falls back to re-reading on a timer:
- where the store cannot be observed (its methods cannot be wrapped): at Parlant's own
  periods, with a warning in Parlant's log;
- as well as waking on writes, every `PARLANT_SUPERVISOR_RECHECK` seconds (an environment
  variable; unset: never) for deployments where another process writes to the same database.
  Parlant itself assigns offsets under an in-process lock, so one process must serve each
  session: with that rule kept, every write is seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from supervisor._extras import missing_modules

if missing_modules("parlant.core.sessions", "lagom"):
    raise ModuleNotFoundError(
        "supervisor.parlant_module runs inside a Parlant server, and Parlant is not installed "
        "here: install parlant-session-supervisor into Parlant's own environment",
        name="parlant.core.sessions",
    )

from lagom import Container, Singleton
from parlant.core.async_utils import Timeout
from parlant.core.sessions import (
    EventId,
    EventKind,
    EventSource,
    SessionId,
    SessionListener,
    SessionStore,
)

__all__ = [
    "IncompatibleParlant",
    "NotifyingSessionListener",
    "check_parlant",
    "configure_container",
    "configure_module",
    "initialize_container",
    "initialize_module",
]

_log = logging.getLogger("parlant_supervisor.parlant_module")

RECHECK_VARIABLE: Final = "PARLANT_SUPERVISOR_RECHECK"
"""Seconds between two re-reads of a waiting request's session besides the wake-ups (unset:
none); for several processes writing to one database."""

_POLLING_PERIODS: Final = {"events": 0.25, "event": 0.1}
"""Parlant's own re-read periods (`PollingSessionListener`), for the store it cannot observe."""

_LISTENER_PARAMETERS: Final = {
    "wait_for_more_events": ("session_id", "kinds", "min_offset", "source", "trace_id", "timeout"),
    "wait_for_event_completion": ("session_id", "event_id", "timeout"),
    "wait_for_new_streaming_chunks": (
        "session_id",
        "event_id",
        "last_known_chunk_count",
        "timeout",
    ),
}
_WRITES: Final = {
    "create_event": "session_id",
    "update_event": "session_id",
    "delete_session": "session_id",
    "delete_event": None,  # by event id only: every waiter looks again
}

T = TypeVar("T")


class IncompatibleParlant(RuntimeError):
    """Parlant's internals differ from what the module relies on: it refuses to start."""


def _parlant_version() -> str:
    try:
        return importlib.metadata.version("parlant")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def check_parlant() -> None:
    """Raise `IncompatibleParlant` unless Parlant's `SessionListener` and `SessionStore` are
    as this module relies on (their methods and parameters)."""
    differences = []
    for name, expected in _LISTENER_PARAMETERS.items():
        method = getattr(SessionListener, name, None)
        got = _parameters(method)
        if got != expected:
            differences.append(f"SessionListener.{name}{got or ' is missing'}")
    for name, session_parameter in _WRITES.items():
        method = getattr(SessionStore, name, None)
        parameters = _parameters(method)
        wanted = session_parameter or "event_id"
        if wanted not in (parameters or ()):
            differences.append(f"SessionStore.{name}{parameters or ' is missing'}")
    if differences:
        raise IncompatibleParlant(
            f"supervisor.parlant_module relies on Parlant 3.3's SessionListener and "
            f"SessionStore (tested with 3.3.2), and Parlant {_parlant_version()} differs: "
            f"{'; '.join(differences)}. Start Parlant without the module, or use a "
            "parlant-session-supervisor release made for this Parlant"
        )


def _parameters(method: object) -> tuple[str, ...] | None:
    if not callable(method):
        return None
    return tuple(name for name in inspect.signature(method).parameters if name != "self")


def _recheck_period() -> float | None:
    raw = os.environ.get(RECHECK_VARIABLE, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{RECHECK_VARIABLE} must be a number of seconds, got {raw!r}") from None
    if not seconds > 0:
        raise ValueError(f"{RECHECK_VARIABLE} must be > 0 seconds, got {raw!r}")
    return seconds


@dataclass(slots=True)
class _Waiting:
    """The requests waiting on one session: woken together by its next write."""

    written: asyncio.Event
    waiters: int = 0


class NotifyingSessionListener(SessionListener):
    """Parlant's `SessionListener`, woken by the writes of the session waited on.

    Each method answers as Parlant's `PollingSessionListener` does, from the same reads of the
    store; it reads again when the session is written (or after `recheck` seconds, if set), not
    every 0.25 s (0.1 s).
    """

    def __init__(self, session_store: SessionStore) -> None:
        self._store = session_store
        self._waiting: dict[SessionId, _Waiting] = {}
        self._recheck = _recheck_period()
        self._observed = _observe(session_store, self._written, self._written_somewhere)
        if not self._observed:
            _log.warning(
                "supervisor.parlant_module cannot observe the session store (%s): waiting "
                "requests re-read it on Parlant's own timers",
                type(session_store).__name__,
            )

    @property
    def observed(self) -> bool:
        """Whether the store's writes wake waiting requests (else they re-read on a timer)."""
        return self._observed

    @property
    def waiting(self) -> int:
        """Requests waiting now."""
        return sum(waiting.waiters for waiting in self._waiting.values())

    # --- SessionListener ------------------------------------------------------------------

    async def wait_for_more_events(
        self,
        session_id: SessionId,
        kinds: Sequence[EventKind] = (),
        min_offset: int | None = None,
        source: EventSource | None = None,
        trace_id: str | None = None,
        timeout: Timeout | None = None,
    ) -> bool:
        async def found() -> bool:
            events = await self._store.list_events(
                session_id, min_offset=min_offset, source=source, kinds=kinds, trace_id=trace_id
            )
            return bool(events)

        return await self._until(session_id, found, timeout, _POLLING_PERIODS["events"])

    async def wait_for_event_completion(
        self,
        session_id: SessionId,
        event_id: EventId,
        timeout: Timeout | None = None,
    ) -> bool:
        async def complete() -> bool:
            event = await self._store.read_event(session_id, event_id)
            chunks = _chunks(event.data)
            return chunks is None or (bool(chunks) and chunks[-1] is None)

        return await self._until(session_id, complete, timeout, _POLLING_PERIODS["event"])

    async def wait_for_new_streaming_chunks(
        self,
        session_id: SessionId,
        event_id: EventId,
        last_known_chunk_count: int,
        timeout: Timeout | None = None,
    ) -> bool:
        async def grown() -> bool:
            event = await self._store.read_event(session_id, event_id)
            chunks = _chunks(event.data)
            return (
                chunks is None
                or len(chunks) > last_known_chunk_count
                or (bool(chunks) and chunks[-1] is None)
            )

        return await self._until(session_id, grown, timeout, _POLLING_PERIODS["event"])

    # --- waiting --------------------------------------------------------------------------

    async def _until(
        self,
        session_id: SessionId,
        condition: Callable[[], Awaitable[bool]],
        timeout: Timeout | None,
        polling_period: float,
    ) -> bool:
        """True once `condition()` holds, False when `timeout` expires first (Parlant's
        semantics: the session is read first, so an unknown one raises at once)."""
        deadline = timeout if timeout is not None else Timeout.infinite()
        await self._store.read_session(session_id)  # raises for an unknown session
        period = self._recheck if self._observed else polling_period
        waiting = self._waiting.get(session_id)
        if waiting is None:
            waiting = self._waiting[session_id] = _Waiting(asyncio.Event())
        waiting.waiters += 1
        try:
            while True:
                written = waiting.written  # taken before the read: no write in between is lost
                if await condition():
                    return True
                if deadline.expired():
                    return False
                pause = (
                    deadline.remaining() if period is None else min(period, deadline.remaining())
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(written.wait(), pause)
        finally:
            waiting.waiters -= 1
            if not waiting.waiters and self._waiting.get(session_id) is waiting:
                del self._waiting[session_id]

    def _written(self, session_id: SessionId) -> None:
        """The session was written: its waiting requests look again."""
        waiting = self._waiting.get(session_id)
        if waiting is not None:
            waiting.written.set()
            waiting.written = asyncio.Event()

    def _written_somewhere(self) -> None:
        """An event was deleted by id (its session unknown here): every waiter looks again."""
        for session_id in list(self._waiting):
            self._written(session_id)


def _chunks(data: object) -> list[object] | None:
    """A streamed message's chunks (None: not a streamed message)."""
    if isinstance(data, dict) and "chunks" in data:
        return cast(list[object], data["chunks"])
    return None


def _observe(
    store: object,
    written: Callable[[SessionId], None],
    written_somewhere: Callable[[], None],
) -> bool:
    """Wrap the store's writing methods so that each write calls `written(session_id)`
    (`written_somewhere()` where the session is not named); False if it cannot be done."""
    originals = {name: getattr(store, name, None) for name in _WRITES}
    if not all(inspect.iscoroutinefunction(method) for method in originals.values()):
        return False
    wrapped: dict[str, Callable[..., Awaitable[Any]]] = {}
    for name, session_parameter in _WRITES.items():
        original = cast(Callable[..., Awaitable[Any]], originals[name])
        wrapped[name] = _notifying(original, session_parameter, written, written_somewhere)
    try:
        for name, method in wrapped.items():
            setattr(store, name, method)
    except (AttributeError, TypeError):
        for name, unwrapped in originals.items():
            with contextlib.suppress(AttributeError, TypeError):
                setattr(store, name, unwrapped)
        return False
    return True


def _notifying(
    original: Callable[..., Awaitable[T]],
    session_parameter: str | None,
    written: Callable[[SessionId], None],
    written_somewhere: Callable[[], None],
) -> Callable[..., Awaitable[T]]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    async def notifying(*args: Any, **kwargs: Any) -> T:
        try:
            return await original(*args, **kwargs)
        finally:  # a write that failed half-way wakes its waiters too: they only read again
            if session_parameter is None:
                written_somewhere()
            else:
                written(signature.bind(*args, **kwargs).arguments[session_parameter])

    return notifying


# --- Parlant's hooks ------------------------------------------------------------------------


async def configure_module(container: Container) -> Container:
    """`parlant-server --module supervisor.parlant_module`: define the `SessionListener` before
    Parlant defines its own (it keeps a definition made earlier)."""
    check_parlant()
    container[NotifyingSessionListener] = Singleton(NotifyingSessionListener)
    container[SessionListener] = lambda c: c[NotifyingSessionListener]  # type: ignore[type-abstract]
    return container


configure_container = configure_module
"""The same, for the SDK: `PARLANT_SDK_MODULE=supervisor.parlant_module`, or
`p.Server(configure_container=configure_container)` (with
`initialize_container=initialize_container`)."""


async def initialize_module(container: Container) -> None:
    """Build the listener at start-up, so that the store is observed from the first write."""
    container[SessionListener]  # type: ignore[type-abstract]


initialize_container = initialize_module
"""The same, for the SDK (`PARLANT_SDK_MODULE` calls it by this name)."""
