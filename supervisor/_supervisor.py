"""The Supervisor actor: the registry of SessionActors, addressed by session id.

Callers never hold a SessionActor's reference (it may have been replaced); they route every
message through here, and the supervisor spawns the session's actor on first use.
"""

from __future__ import annotations

import contextlib
import random
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, final

import pykka
import structlog

from actors import RestartPolicy, SessionClosed, SessionFailed, SupervisorError, SupervisorStopped
from actors.runtime import (
    ActorCrashed,
    AwaitReply,
    Consumer,
    Kill,
    Message,
    MessagePosted,
    PostFailed,
    ReapRequested,
    RestartTracker,
    Resume,
    ResumeReply,
    Retire,
    Route,
    SessionActor,
    SessionRuntime,
    Stop,
    Subscribe,
)

__all__ = [
    "Close",
    "ListSessions",
    "Open",
    "RegistryFigures",
    "SessionRefs",
    "StopAll",
    "Supervisor",
    "WhichThread",
]

_log = structlog.get_logger("parlant_supervisor")

_PRUNE_AT: Final = 16
"""Registrations of a session after which finished ones are dropped (then at twice the live)."""


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
    supervisor starts no actor and drops what it is told."""

    error: SupervisorError


@final
@dataclass(frozen=True, slots=True)
class ListSessions:
    """The answer is the ids of the sessions with a live actor."""


@final
@dataclass(frozen=True, slots=True)
class RegistryFigures:
    """The answer is (entries, consumer registrations) of the registry: what it holds."""


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
    """What the supervisor keeps per session, across its actors' lives."""

    consumers: dict[int, AwaitReply | Subscribe] = field(default_factory=dict)
    posts: dict[int, int | SupervisorError] = field(default_factory=dict)
    """What became of each registered ask's message, as routed here: its offset, or why it
    failed. The successor of a crashed actor learns it from here."""
    restarts: RestartTracker | None = None
    restarting: list[Message | Kill] | None = None  # messages held while a restart is pending
    orphaned: list[Message | Kill] = field(default_factory=list)  # reached a dead actor
    resume_from: Resume = field(default_factory=lambda: Resume(0))
    generation: int = 0
    failed: SessionFailed | None = None

    prune_at: int = _PRUNE_AT

    def register(self, registration: AwaitReply | Subscribe) -> None:
        """Keep a new consumer. Finished ones are dropped whenever the registrations double
        (amortized O(1) an ask; a finished ask holds its message's text)."""
        if len(self.consumers) >= self.prune_at:
            self.live_consumers()
            self.prune_at = max(_PRUNE_AT, 2 * len(self.consumers))
        self.consumers[registration.consumer.consumer_id] = registration

    def live_consumers(self) -> list[AwaitReply | Subscribe]:
        finished = [cid for cid, reg in self.consumers.items() if reg.consumer.finished]
        for consumer_id in finished:
            del self.consumers[consumer_id]
            self.posts.pop(consumer_id, None)
        return list(self.consumers.values())

    def record(self, message: Message | Kill) -> None:
        """Note a post's outcome on its way to the actor (before it can die in a mailbox)."""
        if isinstance(message, MessagePosted) and message.consumer_id in self.consumers:
            self.posts[message.consumer_id] = message.offset
        elif isinstance(message, PostFailed) and message.consumer_id in self.consumers:
            self.posts.setdefault(message.consumer_id, message.error)


@final
class Supervisor(pykka.ThreadingActor):
    """Spawns, addresses, restarts and stops SessionActors (one-for-one supervision).

    A session actor that crashes reports it from inside its handler; the supervisor restarts
    the session from its checkpoint after a jittered delay, re-attaches the asks, streams and
    readers that outlived the crash (consumers drop what they already had), and holds messages
    for the session meanwhile. Past the restart intensity the session is given up: its callers
    get `SessionFailed` until someone `open()`s it again.
    """

    use_daemon_thread = True

    def __init__(self, runtime: SessionRuntime, restart_policy: RestartPolicy) -> None:
        super().__init__()
        self._runtime = runtime
        self._policy = restart_policy
        self._rng = random.Random()
        self._actors: dict[str, pykka.ActorRef[SessionActor]] = {}
        self._sessions: dict[str, _Session] = {}
        self._stopping = False

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
        for session_id in list(self._sessions):
            session = self._sessions[session_id]
            for registration in session.live_consumers():
                registration.consumer.fail(error)
            self._close(session_id, error)
        for session_id in list(self._actors):
            self._close(session_id, error)
        self._runtime.changes.notify()

    def on_receive(self, message: Any) -> Any:
        try:
            return self._receive(message)
        finally:
            self._runtime.changes.notify()  # the registry may have changed

    def _receive(self, message: Any) -> Any:
        if self._stopping and not isinstance(
            message, ListSessions | SessionRefs | RegistryFigures | WhichThread
        ):
            return None  # every consumer was failed by StopAll: nothing left to deliver to
        match message:
            case Route(session_id, inner):
                if self._admit(session_id, inner):
                    self._deliver(session_id, inner)
            case WhichThread():
                return threading.current_thread()
            case Open(session_id, since):
                self._session(session_id).failed = None
                if self._session(session_id).restarting is None:
                    self._actor(session_id, since)
            case ActorCrashed():
                self._crashed(message)
            case ReapRequested(session_id, actor_urn):
                self._reap(session_id, actor_urn)
            case RestartSession(session_id, generation):
                self._restart(session_id, generation)
            case Close(session_id, error):
                return self._close(session_id, error)
            case StopAll(error):
                self._stopping = True
                for session_id in list(self._sessions):
                    self._retire(session_id, error)
            case ListSessions():
                return list(self._actors)
            case RegistryFigures():
                registrations = sum(len(s.consumers) for s in self._sessions.values())
                return len(self._sessions), registrations
            case SessionRefs():
                return list(self._actors.values())
        return None

    def _session(self, session_id: str) -> _Session:
        return self._sessions.setdefault(session_id, _Session())

    def _actor(
        self, session_id: str, since: int | None = None, resume: Resume | None = None
    ) -> pykka.ActorRef[SessionActor]:
        """The session's live actor, else a new one: at `resume` (a restart), at `since` (an
        `open`), else where the session last stood."""
        start: Resume | None
        ref = self._actors.get(session_id)
        if ref is not None and ref.is_alive():
            return ref
        runtime = self._runtime
        reactivated = session_id in runtime.board or session_id in runtime.checkpoints
        if resume is not None:
            start = resume
        elif since is not None:
            start = Resume(since)
        elif not reactivated and runtime.settings.checkpoint_interval is not None:
            start = None  # durable checkpoints: resume where Parlant says we stopped
        else:
            start = runtime.resume_of(session_id)
        ref = SessionActor.start(
            session_id, runtime, start, reactivated=reactivated, parent=self.actor_ref
        )
        self._actors[session_id] = ref
        runtime.board.started_total += 1
        return ref

    def _admit(self, session_id: str, message: Message | Kill) -> bool:
        """Record a new consumer first, so that even a crash of ours reaches it; record what
        became of its message."""
        if isinstance(message, AwaitReply | Subscribe):
            session = self._session(session_id)
            if session.failed is not None:
                message.consumer.fail(session.failed)
                return False
            session.register(message)
        elif isinstance(message, MessagePosted | PostFailed):
            known = self._sessions.get(session_id)
            if known is not None:
                known.record(message)
        return True

    def _deliver(self, session_id: str, message: Message | Kill) -> None:
        summons = isinstance(message, AwaitReply | Subscribe)
        # no entry is made for housekeeping (a post's outcome after a close): only sessions
        # with an actor, or a consumer, have one
        session = self._sessions.get(session_id)
        if session is not None and session.restarting is not None:
            session.restarting.append(message)
            return
        ref = self._actors.get(session_id)
        if ref is not None and not ref.is_alive():
            # it crashed, and its report (told from inside the dying handler) is still behind
            # this message in our mailbox: keep the message for the successor, instead of
            # dropping it (a post's outcome) or spawning a successor that knows nothing of
            # the consumers waiting on the dead actor
            self._session(session_id).orphaned.append(message)
            return
        if not summons and ref is None:
            return  # housekeeping for a closed session must not re-open it
        try:
            self._actor(session_id).tell(message)
        except pykka.ActorDeadError:
            self._session(session_id).orphaned.append(message)  # its crash report follows

    def _crashed(self, crash: ActorCrashed) -> None:
        ref = self._actors.get(crash.session_id)
        if ref is None or ref.actor_urn != crash.actor_urn:
            return  # a predecessor's late report
        del self._actors[crash.session_id]
        session = self._session(crash.session_id)
        if session.restarts is None:
            session.restarts = RestartTracker(self._policy, self._rng)
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
            for registration in session.live_consumers():
                registration.consumer.fail(session.failed)
            session.consumers.clear()
            session.posts.clear()
            session.orphaned.clear()
            self._runtime.checkpoints.remember(crash.session_id, crash.resume)
            self._runtime.recorder.session_failed("crashed")
            self._runtime.recorder.session_crashed()
            log.error("session.given_up", restarts=decision.restarts_in_window)
            return
        session.generation += 1
        session.resume_from = crash.resume
        session.restarting, session.orphaned = session.orphaned, []
        generation = session.generation
        self._runtime.clock.call_at(
            decision.restart_at,
            lambda: self._tell_self(RestartSession(crash.session_id, generation)),
        )
        log.warning(
            "session.restart_scheduled",
            at=decision.restart_at,
            restarts=decision.restarts_in_window,
            checkpoint=crash.resume.offset,
        )
        self._runtime.recorder.session_crashed()  # after the restart is scheduled: see Changes

    def _reap(self, session_id: str, actor_urn: str) -> None:
        """Stop an idle session's actor, unless a call reached it since it asked."""
        ref = self._actors.get(session_id)
        session = self._sessions.get(session_id)
        if ref is None or ref.actor_urn != actor_urn:
            return
        if session is not None and (session.live_consumers() or session.restarting is not None):
            return  # consumers register through us: one registered after the actor asked
        error = SessionClosed(f"session {session_id} was reaped while idle", session_id=session_id)
        self._close(session_id, error)
        self._runtime.recorder.session_reaped()
        _log.info("session.reaped", session_id=session_id)

    def _tell_self(self, message: object) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(message)

    def _restart(self, session_id: str, generation: int) -> None:
        session = self._sessions.get(session_id)
        if session is None or session.generation != generation or session.restarting is None:
            return
        held, session.restarting = session.restarting, None
        ref = self._actor(session_id, resume=session.resume_from)
        self._runtime.recorder.session_restarted()
        _log.info(
            "session.restarted", session_id=session_id, from_offset=session.resume_from.offset
        )
        pending = {id(m) for m in held}
        for registration in session.live_consumers():
            if id(registration) in pending:
                continue  # registered while restarting: it is among the held messages
            resumption = _resumption(registration, session.posts.get(_id_of(registration)))
            if resumption is not None:
                ref.tell(resumption)
        for message in held:
            ref.tell(message)

    @staticmethod
    def _fail_unheld(
        session: _Session | None, ref: pykka.ActorRef[SessionActor] | None, error: SupervisorError
    ) -> None:
        """Fail the consumers no live actor will fail: those of a session waiting for its
        restart, or whose actor died with its crash report still behind this message."""
        if session is None:
            return
        if session.restarting is not None or ref is None or not ref.is_alive():
            for registration in session.live_consumers():
                registration.consumer.fail(error)

    def _retire(self, session_id: str, error: SupervisorError) -> None:
        """`_close` without a stop future to wait on (the dispatcher counts stopped actors)."""
        ref = self._actors.pop(session_id, None)
        self._fail_unheld(self._sessions.pop(session_id, None), ref, error)
        if ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(Retire(error, shutdown=True))

    def _close(self, session_id: str, error: SupervisorError) -> pykka.Future[Any] | None:
        ref = self._actors.pop(session_id, None)
        self._fail_unheld(self._sessions.pop(session_id, None), ref, error)
        if ref is None:
            return None
        with contextlib.suppress(pykka.ActorDeadError):
            ref.tell(Stop(error))
        return ref.stop(block=False)


def _id_of(registration: AwaitReply | Subscribe) -> int:
    return registration.consumer.consumer_id


def _resumption(
    registration: AwaitReply | Subscribe, post: int | SupervisorError | None
) -> Message | None:
    """How a consumer that outlived its session's actor is attached to the successor (None:
    it is finished instead).

    Messages still in a crashed actor's mailbox die with it, so nothing the dead actor was told
    can be assumed: what the supervisor routed (`post`: the message's offset, or why posting
    failed) and the consumer (whether its post started, what it received) say how far it got.
    """
    consumer: Consumer = registration.consumer
    consumer.rebase()
    if isinstance(registration, Subscribe):
        next_offset = consumer.next_offset
        since = next_offset if next_offset is not None else registration.since
        return Subscribe(consumer, since)
    if isinstance(post, SupervisorError):
        consumer.fail(post)  # its PostFailed may have died in the mailbox
        return None
    if post is None and not consumer.post_started:
        return registration  # the dead actor never sent the message: send it now
    return ResumeReply(consumer, post, registration.deadline)
