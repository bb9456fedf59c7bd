"""The Supervisor actor: the registry of SessionActors, addressed by session id.

Callers never hold a SessionActor's reference (it may have been replaced); they route every
message through here, and the supervisor spawns the session's actor on first use.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, final

import pykka
import structlog

from actors._actor import SessionActor, SessionRuntime
from actors._errors import SupervisorError
from actors._messages import Message, Stop

__all__ = ["Close", "ListSessions", "Open", "Route", "SessionRefs", "StopAll", "Supervisor"]

_log = structlog.get_logger("parlant_supervisor")
_stack_size_lock = threading.Lock()


@final
@dataclass(frozen=True, slots=True)
class Route:
    """Deliver `message` to the session's actor, spawning it if needed."""

    session_id: str
    message: Message


@final
@dataclass(frozen=True, slots=True)
class Open:
    """Make sure the session's actor runs; a new one starts at `since` (else its checkpoint)."""

    session_id: str
    since: int | None = None


@final
@dataclass(frozen=True, slots=True)
class Close:
    """Stop the session's actor, failing its consumers with `error`.

    The answer is a pykka future that resolves when the actor has stopped (None if none ran).
    """

    session_id: str
    error: SupervisorError


@final
@dataclass(frozen=True, slots=True)
class StopAll:
    """Stop every session's actor at once; the answer is their stop futures."""

    error: SupervisorError


@final
@dataclass(frozen=True, slots=True)
class ListSessions:
    """The answer is the ids of the sessions with a live actor."""


@final
@dataclass(frozen=True, slots=True)
class SessionRefs:
    """The answer is the live SessionActors' refs (for `supervisor.testing.settle`)."""


@contextlib.contextmanager
def _thread_stack_size(size: int) -> Iterator[None]:
    """Threads started inside get `size`-byte stacks (threading.stack_size is process-wide)."""
    if not size:
        yield
        return
    with _stack_size_lock:
        previous = threading.stack_size(size)
        try:
            yield
        finally:
            threading.stack_size(previous)


@final
class Supervisor(pykka.ThreadingActor):
    """Spawns, addresses and stops SessionActors."""

    use_daemon_thread = True

    def __init__(self, runtime: SessionRuntime, actor_stack_size: int) -> None:
        super().__init__()
        self._runtime = runtime
        self._stack_size = actor_stack_size
        self._sessions: dict[str, pykka.ActorRef[SessionActor]] = {}

    def on_start(self) -> None:
        self._runtime.threads.add(threading.current_thread())

    def on_receive(self, message: Any) -> Any:
        match message:
            case Route(session_id, inner):
                self._deliver(session_id, inner)
            case Open(session_id, since):
                self._actor(session_id, since)
            case Close(session_id, error):
                return self._close(session_id, error)
            case StopAll(error):
                futures = [self._close(session_id, error) for session_id in list(self._sessions)]
                return [f for f in futures if f is not None]
            case ListSessions():
                return list(self._sessions)
            case SessionRefs():
                return list(self._sessions.values())
        return None

    def _actor(self, session_id: str, since: int | None = None) -> pykka.ActorRef[SessionActor]:
        ref = self._sessions.get(session_id)
        if ref is not None and ref.is_alive():
            return ref
        runtime = self._runtime
        reactivated = session_id in runtime.checkpoints or session_id in runtime.board
        start = since if since is not None else runtime.checkpoint_of(session_id)
        with _thread_stack_size(self._stack_size):
            ref = SessionActor.start(session_id, runtime, start, reactivated=reactivated)
        self._sessions[session_id] = ref
        self._runtime.started_total += 1
        return ref

    def _deliver(self, session_id: str, message: Message) -> None:
        try:
            self._actor(session_id).tell(message)
        except pykka.ActorDeadError:
            # it died between our liveness check and the tell: a fresh actor takes over
            self._sessions.pop(session_id, None)
            self._actor(session_id).tell(message)

    def _close(self, session_id: str, error: SupervisorError) -> pykka.Future[Any] | None:
        ref = self._sessions.pop(session_id, None)
        if ref is None:
            return None
        with contextlib.suppress(pykka.ActorDeadError):
            ref.tell(Stop(error))
        return ref.stop(block=False)
