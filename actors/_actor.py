"""SessionActor: the pykka shell around a SessionCore.

Every handler reads the same way: feed the message to the core, carry out what it decides.
Nothing here blocks: the long-poll and the posts run on the I/O loop and come back as messages.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, final

import pykka
import structlog

from actors._changes import Changes
from actors._checkpoints import CheckpointMemory
from actors._clock import Clock
from actors._core import SessionCore, SessionSettings, SessionSnapshot
from actors._dispatcher import DispatchedActor, Dispatcher
from actors._errors import ParlantUnavailable, SupervisorError, SupervisorStopped
from actors._follower import Follower
from actors._io import IOLoop
from actors._messages import (
    AwaitReply,
    CancelPoll,
    CheckMessage,
    CheckpointLoaded,
    Consumer,
    Deliver,
    Effect,
    ExpectPoll,
    Fail,
    FetchHistory,
    FinishPoll,
    FollowMessage,
    HistoryFetched,
    LoadCheckpoint,
    Message,
    MessagePosted,
    PollFailed,
    PostFailed,
    PostMessage,
    Reap,
    Resolve,
    Resume,
    ResumeReply,
    SaveCheckpoint,
    Schedule,
    Start,
    StartPoll,
    Stop,
    StopFollowing,
    Subscribe,
    Unsubscribe,
)
from actors._parlant import ParlantApi, translate_error
from actors._poller import Poller
from actors._posting import PostExpired
from actors._recorder import Recorder
from actors._reply import Reply
from actors._state import SessionState

__all__ = [
    "ActorCrashed",
    "ActorKilled",
    "Barrier",
    "Kill",
    "Mailbox",
    "ReapRequested",
    "Retire",
    "Route",
    "SessionActor",
    "SessionBoard",
    "SessionRuntime",
]

_log = structlog.get_logger("parlant_supervisor")


@final
@dataclass(frozen=True, slots=True)
class Barrier:
    """Answered once every message sent to the actor before it has been handled."""


@final
@dataclass(frozen=True, slots=True)
class Kill:
    """Makes the actor fail as a bug would (like Akka's `Kill`): for drills and tests."""

    reason: str


@final
@dataclass(frozen=True, slots=True)
class Route:
    """Told to the supervisor: deliver `message` to the session's current actor (spawning one
    for a new consumer). A SessionActor routes the answers of its posts and history reads so:
    it may have been replaced while the request was on its way."""

    session_id: str
    message: Message | Kill


@final
@dataclass(frozen=True, slots=True)
class Retire:
    """Stop now, failing the session's waiting calls with `error`: every message queued before
    it was handled; any queued after it is answered like mail to a dead actor. One message,
    where `Stop` then pykka's `stop()` took three (pykka's queues an `_ActorStop`), at 10,000
    sessions a stop.

    Attributes:
        error: What the session's waiting asks, streams and readers fail with.
        shutdown: The whole supervisor stops: nothing will resume the session in this
            process, so its checkpoint is not kept in memory (at 10,000 sessions, storing them
            was a third of `stop()`, the dispatcher threads contending for the memory's lock).
    """

    error: SupervisorError
    shutdown: bool = False


class ActorKilled(Exception):
    """Raised by a SessionActor that was told `Kill`."""


@final
@dataclass(frozen=True, slots=True)
class ActorCrashed:
    """Told to the supervisor by a SessionActor from inside the handler that raised.

    Attributes:
        session_id: The session.
        actor_urn: Which actor crashed (a successor may already run).
        resume: Where a successor must resume so no consumer misses anything.
        error: What was raised.
    """

    session_id: str
    actor_urn: str
    resume: Resume
    error: Exception


@final
@dataclass(frozen=True, slots=True)
class ReapRequested:
    """Told to the supervisor by a SessionActor idle for its TTL."""

    session_id: str
    actor_urn: str


class Mailbox(Protocol):
    """What statistics read of an actor's inbox."""

    def qsize(self) -> int: ...

    def empty(self) -> bool: ...


@final
class SessionBoard:
    """Where live sessions publish their figures, for readers on any thread.

    Each SessionActor writes its own session's entries only (its latest snapshot, its inbox)
    and removes them when it stops, unless a successor's replaced them; the Supervisor actor
    alone counts starts. Readers (`statistics()`, `settle`, the Supervisor choosing where a new
    actor starts) take copies: one publication channel, never a decision made from another
    thread's state. Writes take one lock: an actor and its successor may run at once on two
    dispatcher threads, and removing the predecessor's entries is a check-then-delete.
    """

    __slots__ = ("_lock", "_mailboxes", "_snapshots", "started_total")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, SessionSnapshot] = {}
        self._mailboxes: dict[str, Mailbox] = {}
        self.started_total = 0
        """Session actors started (written by the Supervisor actor only)."""

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._snapshots

    def __len__(self) -> int:
        return len(self._snapshots)

    def snapshot(self, session_id: str) -> SessionSnapshot | None:
        """The session's latest snapshot, if it has a live actor."""
        return self._snapshots.get(session_id)

    def snapshots(self) -> list[SessionSnapshot]:
        """Every live session's latest snapshot (a copy of the list)."""
        return list(self._snapshots.values())

    def mailbox_depths(self) -> Iterator[int]:
        """Messages waiting in each live session's inbox."""
        return (inbox.qsize() for inbox in list(self._mailboxes.values()))

    def attach(self, session_id: str, inbox: Mailbox) -> None:
        with self._lock:
            self._mailboxes[session_id] = inbox

    def publish(self, session_id: str, snapshot: SessionSnapshot) -> None:
        with self._lock:
            self._snapshots[session_id] = snapshot

    def detach(self, session_id: str, snapshot: SessionSnapshot | None, inbox: Mailbox) -> None:
        """Remove an actor's entries, unless a successor's replaced them."""
        with self._lock:
            if snapshot is not None and self._snapshots.get(session_id) is snapshot:
                del self._snapshots[session_id]
            if self._mailboxes.get(session_id) is inbox:
                del self._mailboxes[session_id]


@final
@dataclass(frozen=True, slots=True)
class SessionRuntime:
    """What every SessionActor of one supervisor shares: built once, in full, and never
    rewired (the Runtime of `supervisor` builds it, starts it and stops it).

    Attributes:
        io: The I/O loop.
        dispatcher: The threads that run every SessionActor.
        poller: Runs the long-polls.
        follower: Follows streamed messages as Parlant writes them.
        api: Posts messages and reads history (and finishes checkpoint writes on close).
        clock: The injected clock.
        recorder: Where metrics go.
        settings: How sessions poll and buffer.
        checkpoints: Where each stopped session stopped, so a re-activated session resumes
            there (bounded: see `CheckpointMemory`).
        board: Where live sessions publish their snapshots and inboxes.
        rng: The randomness of every session's jitter and backoff (one for all: a Mersenne
            Twister is 2.9 KB, and seeding one from the OS was 5-7% of opening a session; its
            calls are atomic under the GIL, so dispatcher threads share it safely).
        changes: Notified once each handled message's change is complete (and by the
            recorder, the poller and the Supervisor actor): what `wait_until` waits on.
    """

    io: IOLoop
    dispatcher: Dispatcher
    poller: Poller
    follower: Follower
    api: ParlantApi
    clock: Clock
    recorder: Recorder
    settings: SessionSettings
    checkpoints: CheckpointMemory
    board: SessionBoard
    rng: random.Random
    changes: Changes

    def resume_of(self, session_id: str) -> Resume:
        """Where a new actor for the session starts: where its live or last actor stood (its
        checkpoint), else at 0."""
        live = self.board.snapshot(session_id)
        if live is not None:
            return Resume(live.checkpoint)
        remembered = self.checkpoints.recall(session_id)
        return remembered if remembered is not None else Resume(0)


@final
class SessionActor(DispatchedActor):
    """Owns one Parlant session: its offset, its consumers and its polling.

    One actor per session, run by the runtime's dispatcher: a few threads for every session
    (a thread per actor capped a process at a few thousand sessions). `parent` is the actor
    that supervises it: it is told `ActorCrashed`, `ReapRequested` and `Route`.
    """

    def __init__(
        self,
        session_id: str,
        runtime: SessionRuntime,
        start: Resume | None,
        *,
        reactivated: bool,
        parent: pykka.ActorRef[Any],
    ) -> None:
        super().__init__(runtime.dispatcher)
        self.session_id = session_id
        self._parent = parent
        self._reactivated = reactivated
        self._runtime = runtime
        self._start = start  # None: at the checkpoint stored in Parlant
        self._core = SessionCore(session_id, runtime.settings, runtime.rng)
        self._consumers: dict[int, Consumer] = {}
        self._snapshot: SessionSnapshot | None = None
        self._log = _log.bind(session_id=session_id)
        self._shutdown = False  # see Retire.shutdown

    # --- pykka hooks ----------------------------------------------------------------------

    def on_start(self) -> None:
        self._runtime.board.attach(self.session_id, self._inbox)
        start = self._start
        self._guarded(Start(None) if start is None else Start(start.offset, start))
        self._runtime.recorder.session_started(reactivated=self._reactivated)
        self._log.info("session.started", from_offset=start.offset if start else None)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Barrier):
            return None
        if isinstance(message, Retire):
            self._shutdown = message.shutdown
            self._guarded(Stop(message.error))
            self._stop()  # what pykka does on its `_ActorStop`, without queueing one
            return None
        if isinstance(message, AwaitReply | ResumeReply | Subscribe):
            self._consumers[message.consumer.consumer_id] = message.consumer
        elif isinstance(message, Unsubscribe):
            self._consumers.pop(message.consumer_id, None)  # its caller stopped reading
        self._guarded(message)
        return None

    def _guarded(self, message: Message | Kill) -> None:
        """Handle `message`; on a bug, report the crash to the supervisor, then die.

        Reported from inside the handler: pykka marks the actor stopped before `on_failure`
        runs, so a report from there would race with the supervisor's next message.
        """
        try:
            if isinstance(message, Kill):
                raise ActorKilled(message.reason)
            self._handle(message)
        except Exception as error:
            self._log.error("session.crashed", error=repr(error), message=type(message).__name__)
            self._tell_parent(
                ActorCrashed(self.session_id, self.actor_urn, self._core.resume_point(), error)
            )
            raise

    def on_stop(self) -> None:
        if self._core.state is not SessionState.STOPPED:
            self._handle(
                Stop(SupervisorStopped(f"session {self.session_id}: the supervisor stopped"))
            )
        self._retire()
        self._runtime.recorder.session_stopped()  # (it notifies the retirement's changes)
        self._log.info("session.stopped", checkpoint=self._core.checkpoint)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # the consumers live on: the supervisor re-attaches them to this actor's successor
        self._retire()
        self._runtime.changes.notify()

    # --- the shell ------------------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        before = self._core.state
        previous = self._snapshot
        effects = self._core.handle(message, self._runtime.clock.now())
        # published before the effects run: a caller woken by them sees figures that agree
        self._snapshot = self._core.snapshot()
        self._runtime.board.publish(self.session_id, self._snapshot)
        for effect in effects:
            self._apply(effect)
        self._record(before, previous)
        if isinstance(message, PollFailed):
            self._log.warning(
                "session.poll_failed",
                kind=message.failure.kind.value,
                detail=message.failure.detail,
                consecutive_failures=self._snapshot.consecutive_failures,
            )
        after = self._core.state
        if after is not before and after is not SessionState.POLLING:
            self._log.info("session.state_changed", state=after.value, previous=before.value)
        self._runtime.changes.notify()

    def _apply(self, effect: Effect) -> None:
        match effect:
            case StartPoll():
                self._runtime.poller.start(self.session_id, self.actor_urn, effect, self._tell)
            case CancelPoll():
                self._runtime.poller.cancel(self.session_id, self.actor_urn)
            case ExpectPoll(generation, took):
                self._runtime.poller.expect(self.session_id, self.actor_urn, generation, took)
            case FinishPoll():
                self._runtime.poller.finish(self.session_id, self.actor_urn)
            case FollowMessage():
                self._runtime.follower.follow(self.session_id, self.actor_urn, effect, self._tell)
            case CheckMessage():
                self._runtime.follower.check(self.session_id, self.actor_urn, effect, self._tell)
            case StopFollowing(event_id):
                self._runtime.follower.release(self.session_id, self.actor_urn, event_id)
            case PostMessage(consumer_id, text, since, deadline):
                consumer = self._consumers[consumer_id]
                consumer.post_started = True
                # the deadline on the post's own clock (the loop's): no request outlives it;
                # `due` says it on the supervisor's clock, which decides it (and tests inject)
                clock = self._runtime.clock
                patience = None if deadline is None else deadline - clock.now()
                due = (lambda: False) if deadline is None else (lambda: clock.now() >= deadline)
                started = time.monotonic()
                posting = self._runtime.io.submit(
                    self._runtime.api.post_customer_message(
                        self.session_id,
                        text,
                        consumer.post_key,
                        since=since,
                        wanted=lambda: not consumer.finished,
                        maybe_sent=consumer.maybe_sent,
                        until_up=self._runtime.poller.until_up,
                        retried=self._runtime.recorder.post_retried,
                        unreachable=lambda: self._runtime.poller.upstream_unreachable(
                            self.session_id
                        ),
                        patience=patience,
                        due=due,
                    )
                )
                posting.add_done_callback(lambda done: self._posted(consumer_id, done, started))
            case FetchHistory(consumer_id, min_offset, _):
                reading = self._runtime.io.submit(
                    self._runtime.api.read_events(self.session_id, min_offset)
                )
                reading.add_done_callback(lambda done: self._fetched(consumer_id, done))
            case Deliver(consumer_id, events):
                self._consumers[consumer_id].deliver(events)
            case Resolve(consumer_id, reply):
                self._finish(consumer_id, reply)
            case Fail(consumer_id, error):
                self._finish(consumer_id, error)
            case Schedule(at, timer):
                self._runtime.clock.call_at(at, lambda: self._tell(timer))
            case Reap():
                self._tell_parent(ReapRequested(self.session_id, self.actor_urn))
            case LoadCheckpoint():
                loading = self._runtime.io.submit(
                    self._runtime.api.read_checkpoint(self.session_id)
                )
                loading.add_done_callback(self._checkpoint_loaded)
            case SaveCheckpoint(offset):
                saving = self._runtime.io.submit(
                    self._runtime.api.save_checkpoint(self.session_id, offset)
                )
                saving.add_done_callback(self._checkpoint_saved)

    def _finish(self, consumer_id: int, result: Reply | SupervisorError) -> None:
        """Hand a consumer its reply or its error, and count how the ask or stream ended."""
        consumer = self._consumers.pop(consumer_id, None)
        if consumer is None:
            return
        asked_at = consumer.asked_at
        if asked_at is not None:
            outcome = "answered" if isinstance(result, Reply) else result.outcome
            seconds = self._runtime.clock.now() - asked_at
            self._runtime.recorder.reply_finished(consumer.kind.value, outcome, seconds)
        if isinstance(result, Reply):
            consumer.resolve(result)
        else:
            consumer.fail(result)

    def _record(self, before: SessionState, previous: SessionSnapshot | None) -> None:
        """Count what the message changed (the core keeps totals; counters take the growth)."""
        snapshot, recorder = self._snapshot, self._runtime.recorder
        assert snapshot is not None
        after = snapshot.state
        if after is SessionState.PAUSED and before is not SessionState.PAUSED:
            recorder.backpressure_paused()
        if after is SessionState.FAILED and before is not SessionState.FAILED:
            failure = snapshot.last_failure
            recorder.session_failed(failure.kind.value if failure else "crashed")
        for total, count in (
            ("evicted_total", recorder.events_evicted),
            ("failed_turns_total", recorder.turns_failed),
            ("abandoned_total", recorder.messages_abandoned),
            ("duplicate_posts_total", recorder.duplicate_posts),
        ):
            grown = getattr(snapshot, total) - (getattr(previous, total) if previous else 0)
            if grown:
                count(grown)
                if total == "duplicate_posts_total":
                    _log.error("session.duplicate_post", session_id=self.session_id, count=grown)

    def _tell(self, message: Message) -> None:
        """Tell this actor something from another thread; dropped if it has stopped."""
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(message)

    def _tell_parent(self, message: ActorCrashed | ReapRequested | Route) -> None:
        """Tell the supervising actor; after its shutdown there is nobody left to tell."""
        with contextlib.suppress(pykka.ActorDeadError):
            self._parent.tell(message)

    # Answers of posts and history reads go to the session's *current* actor: this one may
    # have crashed and been replaced while the request was on its way.

    # (On the I/O thread, as done callbacks: they only tell, and touch no state of ours.) The
    # supervisor records a post's outcome as it routes it, for a successor to know (a
    # MessagePosted told into a mailbox whose actor then crashes is lost with it).

    def _posted(
        self, consumer_id: int, done: concurrent.futures.Future[int], started: float
    ) -> None:
        error = _failure_of(done)
        if error is None:
            self._runtime.poller.upstream_answered()  # Parlant took it: it is there
            took = time.monotonic() - started
            posted = MessagePosted(consumer_id, done.result(), took)
            self._tell_parent(Route(self.session_id, posted))
        else:
            failure = self._translate(error)
            self._tell_parent(Route(self.session_id, PostFailed(consumer_id, failure)))

    def _fetched(self, consumer_id: int, done: concurrent.futures.Future[Any]) -> None:
        error = _failure_of(done)
        if error is None:
            answer = HistoryFetched(consumer_id, tuple(done.result()))
        else:
            answer = HistoryFetched(consumer_id, (), self._translate(error))
        self._tell_parent(Route(self.session_id, answer))

    def _translate(self, error: BaseException) -> SupervisorError:
        if isinstance(error, concurrent.futures.CancelledError):
            return SupervisorStopped(f"session {self.session_id}: the supervisor stopped")
        if isinstance(error, PostExpired):  # proven not stored: retrying it is safe
            return ParlantUnavailable(str(error), session_id=self.session_id)
        assert isinstance(error, Exception)
        return translate_error(error, self._runtime.api.base_url, self.session_id)

    def _checkpoint_loaded(self, done: concurrent.futures.Future[int | None]) -> None:
        error = _failure_of(done)
        if error is not None:
            # not fatal: the session is read from its start, and consumers drop what they had
            self._log.warning("session.checkpoint_unreadable", error=repr(error))
        self._tell(CheckpointLoaded(None if error is not None else done.result()))

    def _checkpoint_saved(self, done: concurrent.futures.Future[None]) -> None:
        error = _failure_of(done)
        if error is not None:
            self._log.warning("session.checkpoint_not_saved", error=repr(error))

    def _retire(self) -> None:
        self._runtime.poller.release(self.session_id, self.actor_urn)
        self._runtime.follower.release(self.session_id, self.actor_urn)
        if not self._shutdown:
            self._runtime.checkpoints.remember(self.session_id, self._core.resume_point())
        # a successor for the same session may already be running: leave its entries alone
        self._runtime.board.detach(self.session_id, self._snapshot, self._inbox)


def _failure_of(future: concurrent.futures.Future[Any]) -> BaseException | None:
    if future.cancelled():
        return concurrent.futures.CancelledError()
    return future.exception()
