"""SessionActor: the pykka shell around a SessionCore, one for a session's whole life.

Every handler reads the same way: feed the message to the core, carry out what it decides.
Nothing here blocks: the long-poll and the posts run on the I/O loop and come back as messages.

A crash restarts the session in place, as Akka restarts an actor: the actor keeps its ref, its
mailbox, its consumers and what became of their posts; it reports the crash to its supervisor
and stashes its mail until the supervisor says `Restart` (a new core, from the resume point the
crashed one left) or `GiveUp`. Nobody else holds a session's state, so nothing has to survive a
swap of actors: callers tell the actor directly, and the answers of its requests come back to it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, final

import pykka
import structlog

from actors._board import SessionRuntime
from actors._core import SessionCore, SessionSnapshot
from actors._dispatcher import DispatchedActor
from actors._errors import (
    ParlantUnavailable,
    SessionClosed,
    SupervisorError,
    SupervisorStopped,
)
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
from actors._parlant import translate_error
from actors._posting import PostExpired
from actors._reply import Reply
from actors._state import SessionState
from actors._supervision import (
    ActorCrashed,
    ActorKilled,
    Barrier,
    GiveUp,
    Kill,
    Reaped,
    Restart,
    Retire,
    Route,
)
from actors._timers import TimerQueue

__all__ = ["SessionActor"]

_log = structlog.get_logger("parlant_supervisor")


@final
@dataclass(frozen=True, slots=True)
class _Fenced:
    """A message from one incarnation's requests and timers; stale once the actor restarted."""

    incarnation: int
    message: Message


@final
@dataclass(frozen=True, slots=True)
class _Wake:
    """The actor's one clock timer fired: its core's timers that are due now fire."""


_WAKE: Final = _Wake()


@dataclass(slots=True)
class _Crash:
    """A crashed actor waiting for its supervisor's decision."""

    resume: Resume
    stash: list[Message | Kill]


@final
class SessionActor(DispatchedActor):
    """Owns one Parlant session for its whole life: its offset, its consumers and what became
    of their posts, its polling, and its restarts in place.

    One actor per session, run by the runtime's dispatcher: a few threads for every session
    (a thread per actor capped a process at a few thousand sessions). `parent` is the actor
    that supervises it: it is told `ActorCrashed`, `Reaped` and `Route`.
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
        self._core = SessionCore(session_id, runtime.settings, runtime.rng)
        self._registrations: dict[int, AwaitReply | Subscribe] = {}
        """Each consumer fed, with the message that registered it (to re-attach it)."""
        self._posts: dict[int, int | SupervisorError] = {}
        """What became of each registered ask's message: its offset, or why posting failed.
        A restarted core learns it from here."""
        self._crash: _Crash | None = None
        self._incarnation = 0
        self._lease = ""
        self._io_tell: functools.partial[None] = functools.partial(self._tell_fenced, 0)
        self._snapshot: SessionSnapshot | None = None  # the core's last (its totals' baseline)
        self._published: SessionSnapshot | None = None  # the last on the board, whichever core
        self._log = _log.bind(session_id=session_id)
        self._shutdown = False  # see Retire.shutdown
        self._reap_due = False
        self._started_from = start  # where its core began (None: at Parlant's checkpoint)
        self._timers = TimerQueue()  # the core's, behind one clock timer (see `TimerQueue`)

    # --- pykka hooks ----------------------------------------------------------------------

    def on_start(self) -> None:
        self._lease = self.actor_urn
        self._runtime.board.attach(self.session_id, self._inbox)
        start = self._started_from
        self._guarded(Start(None) if start is None else Start(start.offset, start))
        self._runtime.recorder.session_started(reactivated=self._reactivated)
        self._log.info("session.started", from_offset=start.offset if start else None)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Fenced):
            if message.incarnation != self._incarnation:
                return None  # from a crashed incarnation's poll, follow or timer
            message = message.message
        if isinstance(message, Barrier):
            return len(self._registrations)
        if isinstance(message, _Wake):
            self._fire_timers()
            return None
        if isinstance(message, Retire):
            self._shutdown = message.shutdown
            self._end(message.error)
            self._stop()  # what pykka does on its `_ActorStop`, without queueing one
            return None
        if isinstance(message, MessagePosted | PostFailed):
            self._record_post(message)  # first: the core that learns it may crash
        if self._crash is not None:
            self._while_crashed(message)
            return None
        if isinstance(message, AwaitReply | Subscribe):
            if message.consumer.finished:
                return None  # its caller gave up before it arrived: its Unsubscribe may be lost
            self._registrations[message.consumer.consumer_id] = message
        elif isinstance(message, Unsubscribe):
            self._forget(message.consumer_id)  # its caller stopped reading
        self._guarded(message)
        if self._reap_due:
            self._reap()
        return None

    def on_stop(self) -> None:
        self._end(self._stopped())  # nothing left to fail once a `Retire` or a reap ended it
        self._retire()
        self._runtime.recorder.session_stopped()  # (it notifies the retirement's changes)
        self._log.info("session.stopped", checkpoint=self._resume_point().offset)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """A bug outside the guarded handling (the crash handling itself, a restart): the
        actor is dead, so nobody may be left waiting on it. The session's next call starts a
        new actor (the supervisor finds this one dead)."""
        self._log.error("session.actor_died", error=repr(exception_value))
        self._fail_all(
            SupervisorStopped(f"session {self.session_id}: its actor failed ({exception_value!r})")
        )
        self._retire()
        self._runtime.changes.notify()

    def on_undelivered(self, message: Any) -> None:
        """A consumer that reached the mailbox as the actor stopped goes back to the
        supervisor, which starts the session's next actor for it (a reap raced with a new ask);
        at shutdown, or with no supervisor left, it fails."""
        if isinstance(message, _Fenced) or not isinstance(message, AwaitReply | Subscribe):
            return  # housekeeping for consumers that are gone
        if not self._shutdown:
            try:
                self._parent.tell(Route(self.session_id, message))
                return
            except pykka.ActorDeadError:
                pass
        message.consumer.fail(self._stopped())

    # --- crashes, in place ----------------------------------------------------------------

    def _guarded(self, message: Message | Kill) -> None:
        """Handle `message`; on a bug, report the crash to the supervisor and wait for its
        decision, stashing mail meanwhile (the actor, its ref and its mailbox live on)."""
        try:
            if isinstance(message, Kill):
                raise ActorKilled(message.reason)
            self._handle(message)
        except Exception as error:
            self._crashed(error, message)

    def _crashed(self, error: Exception, message: Message | Kill) -> None:
        self._log.error("session.crashed", error=repr(error), message=type(message).__name__)
        resume = self._safe_resume_point()
        if self._core.state is SessionState.STARTING and self._started_from is not None:
            resume = self._started_from  # its Start failed: where it was to begin
        self._crash = _Crash(resume, [])
        self._release()  # the crashed core's poll and follows end with it
        self._incarnation += 1  # and what they, or its timers, still tell is dropped
        self._io_tell = functools.partial(self._tell_fenced, self._incarnation)
        self._lease = f"{self.actor_urn}/{self._incarnation}"
        self._reap_due = False
        self._timers.clear()  # the crashed core's; its clock timers are fenced
        if not self.actor_stopped.is_set():
            self._tell_parent(ActorCrashed(self.session_id, self.actor_urn, error))
        self._runtime.changes.notify()

    def _safe_resume_point(self) -> Resume:
        try:
            return self._core.resume_point()
        except Exception:  # a core broken past reading: from its last published checkpoint
            snapshot = self._published
            return Resume(snapshot.checkpoint if snapshot is not None else 0)

    def _while_crashed(self, message: Message | Kill) -> None:
        crash = self._crash
        assert crash is not None
        match message:
            case Restart():
                self._restart(crash)
            case GiveUp(error):
                self._fail_all(error)
                self._stop()
            case Stop(error):
                self._fail_all(error)
            case _:
                crash.stash.append(message)

    def _restart(self, crash: _Crash) -> None:
        """A new core from where the crashed one stood; then every consumer it fed, as far as
        each got; then the mail that arrived meanwhile, in order."""
        self._crash = None
        self._log.info("session.restarted", from_offset=crash.resume.offset)
        self._core = SessionCore(self.session_id, self._runtime.settings, self._runtime.rng)
        self._snapshot = None  # the new core's totals count from zero
        self._started_from = crash.resume
        self._guarded(Start(crash.resume.offset, crash.resume))
        for consumer_id, registration in list(self._registrations.items()):
            if self._crash is not None:
                break  # crashed again: every consumer is re-attached at the next restart
            resumption = _resumption(registration, self._posts.get(consumer_id))
            if resumption is None:
                self._forget(consumer_id)
            else:
                self._guarded(resumption)
        for index, message in enumerate(crash.stash):
            if self._crash is not None:
                self._crash.stash.extend(crash.stash[index:])
                break
            self.on_receive(message)

    def _end(self, error: SupervisorError) -> None:
        """Stop the session, failing every consumer with `error`."""
        if self._crash is None and self._core.state is not SessionState.STOPPED:
            self._guarded(Stop(error))  # the core fails its consumers
        self._fail_all(error)

    def _fail_all(self, error: SupervisorError) -> None:
        """Fail every consumer left: the ones registered (a crashed core, or none, feeds them)
        and a crashed actor's stashed ones."""
        consumers = [r.consumer for r in self._registrations.values()]
        if self._crash is not None:
            consumers += [
                m.consumer for m in self._crash.stash if isinstance(m, AwaitReply | Subscribe)
            ]
            self._crash.stash.clear()
        self._registrations.clear()
        self._posts.clear()
        for consumer in consumers:
            try:
                consumer.fail(error)
            except Exception as failure:  # one caller's broken channel must not strand the rest
                self._log.error("session.consumer_not_failed", error=repr(failure))

    def _reap(self) -> None:
        """Idle for its TTL: stop, and tell the supervisor (mail that races with the stop goes
        back to it: see `on_undelivered`)."""
        self._reap_due = False
        if any(not r.consumer.finished for r in self._registrations.values()):
            return
        self._end(SessionClosed(f"session {self.session_id} was reaped while idle"))
        self._tell_parent(Reaped(self.session_id, self.actor_urn))
        self._runtime.recorder.session_reaped()
        self._log.info("session.reaped")
        self._stop()

    def _arm_wake(self, at: float | None) -> None:
        """Arm a clock timer at `at` (None: none is needed) that wakes this incarnation."""
        if at is not None:
            tell = self._io_tell
            self._runtime.clock.call_at(at, lambda: tell(_WAKE))

    def _fire_timers(self) -> None:
        """The core's timers due now, in order; then a clock timer for the next."""
        incarnation = self._incarnation
        for timer in self._timers.due(self._runtime.clock.now()):
            self.on_receive(timer)
            if self._crash or self._incarnation != incarnation or self.actor_stopped.is_set():
                return  # crashed (its core's timers went with it) or stopped
        self._arm_wake(self._timers.next_wake())

    def _drop_deadlines_of_the_finished(self) -> None:
        self._timers.drop_deadlines(self._registrations, len(self._registrations))

    def _record_post(self, message: MessagePosted | PostFailed) -> None:
        if message.consumer_id not in self._registrations:
            return
        if isinstance(message, MessagePosted):
            self._posts[message.consumer_id] = message.offset
        else:
            self._posts.setdefault(message.consumer_id, message.error)

    def _forget(self, consumer_id: int) -> AwaitReply | Subscribe | None:
        """Stop tracking a consumer (finished, or unsubscribed); its registration, if any."""
        registration = self._registrations.pop(consumer_id, None)
        self._posts.pop(consumer_id, None)
        self._drop_deadlines_of_the_finished()
        return registration

    # --- the shell ------------------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        before = self._core.state
        previous = self._snapshot
        effects = self._core.handle(message, self._runtime.clock.now())
        # published before the effects run: a caller woken by them sees figures that agree
        self._snapshot = self._published = self._core.snapshot()
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
        runtime, tell = self._runtime, self._io_tell
        match effect:
            case StartPoll():
                runtime.poller.start(self.session_id, self._lease, effect, tell)
            case CancelPoll():
                runtime.poller.cancel(self.session_id, self._lease)
            case ExpectPoll(generation, took):
                runtime.poller.expect(self.session_id, self._lease, generation, took)
            case FinishPoll():
                runtime.poller.finish(self.session_id, self._lease)
            case FollowMessage():
                runtime.follower.follow(self.session_id, self._lease, effect, tell)
            case CheckMessage():
                runtime.follower.check(self.session_id, self._lease, effect, tell)
            case StopFollowing(event_id):
                runtime.follower.release(self.session_id, self._lease, event_id)
            case PostMessage(consumer_id, text, since, deadline):
                self._post(self._registrations[consumer_id].consumer, text, since, deadline)
            case FetchHistory(consumer_id, min_offset, _):
                reading = runtime.io.submit(runtime.api.read_events(self.session_id, min_offset))
                reading.add_done_callback(lambda done: self._fetched(consumer_id, done))
            case Deliver(consumer_id, events):
                self._registrations[consumer_id].consumer.deliver(events)
            case Resolve(consumer_id, reply):
                self._finish(consumer_id, reply)
            case Fail(consumer_id, error):
                self._finish(consumer_id, error)
            case Schedule(at, timer):
                self._arm_wake(self._timers.push(at, timer))
            case Reap():
                self._reap_due = True  # once the message is handled (see `on_receive`)
            case LoadCheckpoint():
                loading = runtime.io.submit(runtime.api.read_checkpoint(self.session_id))
                loading.add_done_callback(lambda done: self._checkpoint_loaded(tell, done))
            case SaveCheckpoint(offset):
                saving = runtime.io.submit(runtime.api.save_checkpoint(self.session_id, offset))
                saving.add_done_callback(self._checkpoint_saved)

    def _post(self, consumer: Consumer, text: str, since: int, deadline: float | None) -> None:
        consumer.post_started = True
        # the deadline on the post's own clock (the loop's): no request outlives it; `due`
        # says it on the supervisor's clock, which decides it (and tests inject)
        runtime = self._runtime
        clock = runtime.clock
        patience = None if deadline is None else deadline - clock.now()
        due = (lambda: False) if deadline is None else (lambda: clock.now() >= deadline)
        started = time.monotonic()
        posting = runtime.io.submit(
            runtime.api.post_customer_message(
                self.session_id,
                text,
                consumer.post_key,
                since=since,
                wanted=lambda: not consumer.finished,
                maybe_sent=consumer.maybe_sent,
                until_up=runtime.poller.until_up,
                retried=runtime.recorder.post_retried,
                unreachable=lambda: runtime.poller.upstream_unreachable(self.session_id),
                patience=patience,
                due=due,
            )
        )
        consumer_id = consumer.consumer_id
        posting.add_done_callback(lambda done: self._posted(consumer_id, done, started))

    def _finish(self, consumer_id: int, result: Reply | SupervisorError) -> None:
        """Hand a consumer its reply or its error, and count how the ask or stream ended."""
        registration = self._forget(consumer_id)
        if registration is None:
            return
        consumer = registration.consumer
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
            if grown > 0:
                count(grown)
                if total == "duplicate_posts_total":
                    _log.error("session.duplicate_post", session_id=self.session_id, count=grown)

    def _tell(self, message: Message | _Fenced) -> None:
        """Tell this actor something from another thread; dropped if it has stopped."""
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(message)

    def _tell_fenced(self, incarnation: int, message: Message) -> None:
        """`_tell` for what one incarnation's polls, follows and timers say (see `_Fenced`)."""
        self._tell(_Fenced(incarnation, message))

    def _tell_parent(self, message: ActorCrashed | Reaped) -> None:
        """Tell the supervising actor; after its shutdown there is nobody left to tell."""
        with contextlib.suppress(pykka.ActorDeadError):
            self._parent.tell(message)

    # On the I/O thread, as done callbacks: they only tell, and touch no state of ours. The
    # answers of posts and history reads are not fenced: a restarted core wants them.

    def _posted(
        self, consumer_id: int, done: concurrent.futures.Future[int], started: float
    ) -> None:
        error = _failure_of(done)
        if error is None:
            self._runtime.poller.upstream_answered()  # Parlant took it: it is there
            took = time.monotonic() - started
            self._tell(MessagePosted(consumer_id, done.result(), took))
        else:
            self._tell(PostFailed(consumer_id, self._translate(error)))

    def _fetched(self, consumer_id: int, done: concurrent.futures.Future[Any]) -> None:
        error = _failure_of(done)
        if error is None:
            self._tell(HistoryFetched(consumer_id, tuple(done.result())))
        else:
            self._tell(HistoryFetched(consumer_id, (), self._translate(error)))

    def _translate(self, error: BaseException) -> SupervisorError:
        if isinstance(error, concurrent.futures.CancelledError):
            return self._stopped()
        if isinstance(error, PostExpired):  # proven not stored: retrying it is safe
            return ParlantUnavailable(str(error), session_id=self.session_id)
        assert isinstance(error, Exception)
        return translate_error(error, self._runtime.api.base_url, self.session_id)

    def _checkpoint_loaded(
        self, tell: functools.partial[None], done: concurrent.futures.Future[int | None]
    ) -> None:
        error = _failure_of(done)
        if error is not None:
            # not fatal: the session is read from its start, and consumers drop what they had
            self._log.warning("session.checkpoint_unreadable", error=repr(error))
        tell(CheckpointLoaded(None if error is not None else done.result()))

    def _checkpoint_saved(self, done: concurrent.futures.Future[None]) -> None:
        error = _failure_of(done)
        if error is not None:
            self._log.warning("session.checkpoint_not_saved", error=repr(error))

    def _stopped(self) -> SupervisorStopped:
        return SupervisorStopped(f"session {self.session_id}: the supervisor stopped")

    def _release(self) -> None:
        """End this incarnation's poll and follows."""
        self._runtime.poller.release(self.session_id, self._lease)
        self._runtime.follower.release(self.session_id, self._lease)

    def _resume_point(self) -> Resume:
        return self._crash.resume if self._crash is not None else self._safe_resume_point()

    def _retire(self) -> None:
        self._release()
        if not self._shutdown:
            self._runtime.checkpoints.remember(self.session_id, self._resume_point())
        # the session's next actor may already be running: leave its entries alone
        self._runtime.board.detach(self.session_id, self._published, self._inbox)


def _resumption(
    registration: AwaitReply | Subscribe, post: int | SupervisorError | None
) -> Message | None:
    """How a consumer that outlived its session's crashed core is attached to the new one
    (None: it is finished instead).

    `post` is what became of its message (its offset, or why posting failed), and the consumer
    says whether its post started and what it received: how far it got.
    """
    consumer: Consumer = registration.consumer
    if consumer.finished:
        return None
    consumer.rebase()
    if isinstance(registration, Subscribe):
        next_offset = consumer.next_offset
        since = next_offset if next_offset is not None else registration.since
        return Subscribe(consumer, since)
    if isinstance(post, SupervisorError):
        consumer.fail(post)  # the crashed core may not have failed it
        return None
    if post is None and not consumer.post_started:
        return registration  # the crashed core never sent the message: send it now
    return ResumeReply(consumer, post, registration.deadline)


def _failure_of(future: concurrent.futures.Future[Any]) -> BaseException | None:
    if future.cancelled():
        return concurrent.futures.CancelledError()
    return future.exception()
