"""The Supervisor actor: the directory of SessionActors, and the judge of their crashes.

Callers tell a session's live actor directly (`Runtime.route` reads the directory this actor
alone writes); they come here only when there is none, and the supervisor spawns one. A crashed
actor restarts in place (see `actors._actor`): the supervisor decides when, or gives it up.
"""

from __future__ import annotations

import contextlib
import random
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, final

import pykka
import structlog

from actors import RestartPolicy, SessionFailed, SupervisorError, SupervisorStopped
from actors.runtime import (
    ActorCrashed,
    AwaitReply,
    GiveUp,
    Kill,
    Message,
    Reaped,
    Restart,
    RestartTracker,
    Resume,
    Retire,
    Route,
    SessionActor,
    SessionRuntime,
    Stop,
    Subscribe,
)

__all__ = [
    "Close",
    "Directory",
    "ListSessions",
    "Open",
    "SessionRefs",
    "StopAll",
    "Supervisor",
    "WhichThread",
    "tell_live",
]

_log = structlog.get_logger("parlant_supervisor")

Directory = dict[str, pykka.ActorRef[SessionActor]]
"""Each session's live actor. The Supervisor actor alone writes it; callers read it (a dict's
`get` is atomic under the GIL) to tell an actor without passing through the supervisor."""


def tell_live(directory: Directory, session_id: str, message: Message | Kill) -> bool:
    """Tell the session's live actor in `directory` `message`; False if it has none, or it
    stopped (reaped, closed) between the look and the tell: the caller decides what next."""
    ref = directory.get(session_id)
    if ref is None:
        return False
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


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
    """Stop every session's actor (wait with `Dispatcher.wait_all_stopped`); from then on the
    supervisor starts no actor, and fails the consumers it is handed with `error`."""

    error: SupervisorError


@final
@dataclass(frozen=True, slots=True)
class ListSessions:
    """The answer is the ids of the sessions with a live actor."""


@final
@dataclass(frozen=True, slots=True)
class SessionRefs:
    """The answer is the live SessionActors' refs (for `supervisor.testing.settle`)."""


@final
@dataclass(frozen=True, slots=True)
class WhichThread:
    """The answer is the supervisor's thread (for its owner to join at shutdown)."""


@final
@dataclass(frozen=True, slots=True)
class RestartSession:
    """A crashed session's restart delay has passed (stale if `generation` moved on)."""

    session_id: str
    generation: int


@dataclass(slots=True)
class _Session:
    """What the supervisor keeps of a session that crashed: its restarts, and whether it was
    given up (its callers get `failed` until someone `open()`s it again)."""

    restarts: RestartTracker
    generation: int = 0
    failed: SessionFailed | None = None


@final
class Supervisor(pykka.ThreadingActor):
    """Spawns, restarts and stops SessionActors (one-for-one supervision).

    A session actor that crashes reports it and waits; the supervisor tells it to restart
    after a jittered delay (it keeps its consumers and stashes its mail meanwhile). Past the
    restart intensity the session is given up: its callers get `SessionFailed` until someone
    `open()`s it again.
    """

    use_daemon_thread = True

    def __init__(
        self, runtime: SessionRuntime, restart_policy: RestartPolicy, directory: Directory
    ) -> None:
        super().__init__()
        self._runtime = runtime
        self._policy = restart_policy
        self._rng = random.Random()
        self._actors = directory
        self._sessions: dict[str, _Session] = {}
        self._stopped_with: SupervisorError | None = None
        self._handling: object = None  # the message being handled (see `on_failure`)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """A bug in the supervisor itself: leave no orphans, tell every caller plainly."""
        error = SupervisorStopped(
            f"the supervisor crashed ({type(exception_value).__name__}: {exception_value}); "
            "every session was stopped: stop() this SessionSupervisor and create a new one"
        )
        _log.error("supervisor.crashed", error=repr(exception_value))
        handling = self._handling
        if isinstance(handling, Route) and isinstance(handling.message, AwaitReply | Subscribe):
            handling.message.consumer.fail(error)  # it reached no actor
        for session_id in list(self._actors):
            self._retire(session_id, error)
        self._runtime.changes.notify()

    def on_receive(self, message: Any) -> Any:
        self._handling = message
        try:
            return self._receive(message)
        finally:
            self._runtime.changes.notify()  # the directory may have changed

    def _receive(self, message: Any) -> Any:
        match message:
            case Route(session_id, inner):
                self._deliver(session_id, inner)
            case WhichThread():
                return threading.current_thread()
            case ListSessions():
                return list(self._actors)
            case SessionRefs():
                return list(self._actors.values())
            case _ if self._stopped_with is not None:
                return None  # every actor was retired: nothing left to do
            case Open(session_id, since):
                session = self._sessions.get(session_id)
                if session is not None:
                    session.failed = None
                ref = self._actors.get(session_id)
                if ref is None or not ref.is_alive():
                    self._start(session_id, since)
            case ActorCrashed():
                self._crashed(message)
            case Reaped(session_id, actor_urn):
                ref = self._actors.get(session_id)
                if ref is not None and ref.actor_urn == actor_urn:
                    del self._actors[session_id]
                    self._sessions.pop(session_id, None)
            case RestartSession(session_id, generation):
                self._restart(session_id, generation)
            case Close(session_id, error):
                return self._close(session_id, error)
            case StopAll(error):
                self._stopped_with = error
                for session_id in list(self._actors):
                    self._retire(session_id, error)
        return None

    def _start(
        self, session_id: str, since: int | None = None, first: Message | Kill | None = None
    ) -> None:
        """Start the session's actor (none is alive): at `since` (an `open`), else where the
        session last stood. `first` is told to it before callers can find it in the
        directory: nothing they tell it directly may overtake it."""
        start: Resume | None
        runtime = self._runtime
        reactivated = session_id in runtime.board or session_id in runtime.checkpoints
        if since is not None:
            start = Resume(since)
        elif not reactivated and runtime.settings.checkpoint_interval is not None:
            start = None  # durable checkpoints: resume where Parlant says we stopped
        else:
            start = runtime.resume_of(session_id)
        ref = SessionActor.start(
            session_id, runtime, start, reactivated=reactivated, parent=self.actor_ref
        )
        if first is not None:
            ref.tell(first)
        self._actors[session_id] = ref
        runtime.board.started_total += 1

    def _deliver(self, session_id: str, message: Message | Kill) -> None:
        """Tell the session's actor `message`, starting one for a new consumer."""
        if isinstance(message, AwaitReply | Subscribe):
            session = self._sessions.get(session_id)
            if self._stopped_with is not None:
                message.consumer.fail(self._stopped_with)
                return
            if message.consumer.finished:
                return  # its caller gave up (its Unsubscribe may have found no actor)
            if session is not None and session.failed is not None:
                message.consumer.fail(session.failed)
                return
        elif self._stopped_with is not None:
            return
        if tell_live(self._actors, session_id, message):
            return
        if isinstance(message, AwaitReply | Subscribe):
            self._start(session_id, first=message)
        # else: housekeeping for a closed session must not re-open it

    def _crashed(self, crash: ActorCrashed) -> None:
        ref = self._actors.get(crash.session_id)
        if ref is None or ref.actor_urn != crash.actor_urn:
            return  # a closed session's late report
        session = self._sessions.get(crash.session_id)
        if session is None:
            session = self._sessions[crash.session_id] = _Session(
                RestartTracker(self._policy, self._rng)
            )
        decision = session.restarts.crashed(self._runtime.clock.now())
        log = _log.bind(session_id=crash.session_id)
        if decision.restart_at is None:
            session.failed = SessionFailed(
                f"session {crash.session_id}: its actor crashed {decision.restarts_in_window + 1} "
                f"times within {self._policy.restart_window:g} s (last: "
                f"{type(crash.error).__name__}: {crash.error}); it was given up: open() it "
                "again once the cause is fixed",
                session_id=crash.session_id,
            )
            del self._actors[crash.session_id]
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(GiveUp(session.failed))
            self._runtime.recorder.session_failed("crashed")
            self._runtime.recorder.session_crashed()
            log.error("session.given_up", restarts=decision.restarts_in_window)
            return
        session.generation += 1
        generation = session.generation
        self._runtime.clock.call_at(
            decision.restart_at,
            lambda: self._tell_self(RestartSession(crash.session_id, generation)),
        )
        log.warning(
            "session.restart_scheduled",
            at=decision.restart_at,
            restarts=decision.restarts_in_window,
        )
        self._runtime.recorder.session_crashed()  # after the restart is scheduled: see Changes

    def _tell_self(self, message: object) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(message)

    def _restart(self, session_id: str, generation: int) -> None:
        session = self._sessions.get(session_id)
        ref = self._actors.get(session_id)
        if session is None or session.generation != generation or ref is None:
            return
        try:
            ref.tell(Restart())
        except pykka.ActorDeadError:
            return  # it died outside its guarded handling: the next call starts a new one
        self._runtime.recorder.session_restarted()

    def _retire(self, session_id: str, error: SupervisorError) -> None:
        """`_close` without a stop future to wait on (the dispatcher counts stopped actors)."""
        ref = self._actors.pop(session_id, None)
        self._sessions.pop(session_id, None)
        if ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(Retire(error, shutdown=True))

    def _close(self, session_id: str, error: SupervisorError) -> pykka.Future[Any] | None:
        ref = self._actors.pop(session_id, None)
        self._sessions.pop(session_id, None)
        if ref is None:
            return None
        with contextlib.suppress(pykka.ActorDeadError):
            ref.tell(Stop(error))
        return ref.stop(block=False)
