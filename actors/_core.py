"""The pure core of a SessionActor: a state machine fed with messages, returning effects.

No threads, sockets or clocks here: `handle(message, now)` is all there is, so every
transition is tested by feeding messages and reading the effects (see tests/unit).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, final

from parlant.client.types import Event

from actors._backoff import Backoff
from actors._budget import MAX_WAIT_FOR_DATA
from actors._errors import (
    AgentError,
    DeliveryUnknown,
    ReplyTimeout,
    SessionClosed,
    SessionNotFound,
    SupervisorError,
)
from actors._events import (
    agent_status,
    is_completed_ready,
    is_incomplete,
    is_preamble,
    message_text,
    stream_size,
)
from actors._messages import (
    AwaitReply,
    CancelPoll,
    CheckMessage,
    CheckpointLoaded,
    ConsumerKind,
    Deliver,
    Effect,
    EventsConsumed,
    EventsReceived,
    ExpectPoll,
    Fail,
    FailureKind,
    FetchHistory,
    FinishPoll,
    FollowEnded,
    FollowMessage,
    HistoryFetched,
    LoadCheckpoint,
    Message,
    MessageChecked,
    MessagePosted,
    MessageUpdated,
    PollFailed,
    PollFailure,
    PollTimedOut,
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
    StreamItem,
    Subscribe,
    TimerFired,
    TimerKind,
    Unsubscribe,
)
from actors._posting import key_of
from actors._reply import MessageDelta, Reply
from actors._state import SessionState, check_transition
from actors._turns import (
    CustomerSpoke,
    TurnCancelled,
    TurnCompleted,
    TurnFailed,
    TurnProgressed,
    TurnTracker,
    shows_success,
)

__all__ = ["SessionCore", "SessionSettings", "SessionSnapshot"]

_PARKED_LIMIT: Final = 1000
"""Events held behind a streamed message still being written before polling pauses (they
wait on the server instead)."""
_LIVE: Final = frozenset({SessionState.POLLING, SessionState.PAUSED, SessionState.BACKING_OFF})
"""States in which the session sends Parlant requests (polls, or retries of them)."""
_ENDED: Final = frozenset({SessionState.FAILED, SessionState.STOPPED})
_SETTLE_LIMIT: Final = 20.0
"""Seconds past its deadline a waiter waits for its post's settlement (grace and one read of
the log, 12 s at most by default) before giving up on knowing (`DeliveryUnknown`); within the
caller's own 30-s guard."""
_POST_KEYS_KEPT: Final = 256
"""Post keys a session remembers, to tell a post stored twice (the latest ones: a late copy
lands within seconds of the first)."""


@final
@dataclass(frozen=True, slots=True)
class SessionSettings:
    """How one session polls and buffers.

    Attributes:
        wait_for_data: Seconds each long-poll asks the server to wait for new events.
        wait_jitter: Each poll waits uniformly in [wait_for_data - wait_jitter, wait_for_data]
            so that sessions opened together do not time out (504) together.
        window_size: Unclaimed events kept in memory for the next `events()` reader; past it
            the oldest are evicted from memory (they stay on the server: re-read with `since`).
        backoff: Delays between retries of a failed poll.
        idle_ttl: Seconds a session may sit with no ask, stream, reader or unclaimed event
            before it is reaped (None: never).
        checkpoint_interval: Store the checkpoint in Parlant (its consumption offset) at
            most this often, and once more when the session stops (None: never store it).
        failure_grace: Seconds a completed turn that did not show its success (no agent
            message, or none Parlant confirmed with a `ready`) waits for the `status: error`
            that would fail it, before it resolves as it is. Parlant writes the error a few ms
            after the completed `ready`, and a poll sees new events within 0.25 s.
        max_stream_life: Seconds a streamed message may go on being written before it is
            released as it stands (incomplete), so that the events behind it go on: chunks
            that never end held every later event back with no bound.
        linger: Seconds the session keeps polling once nobody waits on it any more (no ask,
            stream or reader, no streamed message being followed), so that what Parlant writes
            after a turn is read at once. Then the session is DORMANT and sends Parlant nothing
            until someone waits on it again; what Parlant wrote meanwhile is read then, and
            goes to the next reader like any unclaimed event, so a linger changes when such
            events are read, never who gets them. 0 by default: a turn's own late writes (a
            `status: error`) come within `failure_grace`, while its asks still wait, and each
            second of linger costs Parlant four store reads per session. None: poll for as
            long as the session lives, whoever waits.
    """

    wait_for_data: int = 60
    wait_jitter: int = 15
    window_size: int = 1000
    backoff: Backoff = field(default_factory=Backoff)
    idle_ttl: float | None = None
    checkpoint_interval: float | None = None
    failure_grace: float = 0.5
    linger: float | None = 0.0
    max_stream_life: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.max_stream_life < math.inf:
            raise ValueError(f"max_stream_life must be > 0 seconds, got {self.max_stream_life}")
        if self.linger is not None and not 0 <= self.linger < math.inf:
            raise ValueError(f"linger must be >= 0 seconds or None, got {self.linger}")
        if self.failure_grace < 0:
            raise ValueError(f"failure_grace must be >= 0 seconds, got {self.failure_grace}")
        if self.checkpoint_interval is not None and self.checkpoint_interval <= 0:
            raise ValueError(
                f"checkpoint_interval must be > 0 seconds or None, got {self.checkpoint_interval}"
            )
        if self.idle_ttl is not None and self.idle_ttl <= 0:
            raise ValueError(f"idle_ttl must be > 0 seconds or None, got {self.idle_ttl}")
        if self.wait_for_data > MAX_WAIT_FOR_DATA:
            raise ValueError(
                f"wait_for_data must be <= {MAX_WAIT_FOR_DATA} s (the smallest common idle "
                f"timeout of load balancers and NATs), got {self.wait_for_data}"
            )
        if self.wait_for_data < 0 or not 0 <= self.wait_jitter <= self.wait_for_data:
            raise ValueError(
                "need wait_for_data >= 0 and 0 <= wait_jitter <= wait_for_data, got "
                f"wait_for_data={self.wait_for_data} wait_jitter={self.wait_jitter}"
            )
        if self.window_size < 0:
            raise ValueError(f"window_size must be >= 0, got {self.window_size}")


@final
@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """A session's figures at one moment (read by `statistics()` and metrics).

    Attributes:
        session_id: The Parlant session.
        state: Its lifecycle state.
        next_offset: The next offset it will poll for.
        checkpoint: The lowest offset a live consumer still needs (`next_offset` when none):
            where a restarted actor resumes.
        buffered: Unclaimed events held in memory for the next reader.
        waiting_replies: Asks and streams waiting for their turn.
        readers: `events()` readers subscribed.
        evicted_total: Unclaimed events dropped from memory because the window was full.
        pauses_total: Times polling paused because a consumer stopped reading.
        consecutive_failures: Failed polls since the last good one.
        last_failure: The most recent poll failure, if any.
        streaming: Streamed messages Parlant is still writing (followed live).
        failed_turns_total: Turns Parlant's engine failed (`status: error`).
        abandoned_total: Streamed messages Parlant never finished (their turn was cancelled,
            or nothing was written for `wait_for_data` seconds): released as they stood.
        duplicate_posts_total: Customer messages whose post key was already in the log at
            another offset: one post stored twice (see `actors._posting`).
    """

    session_id: str
    state: SessionState
    next_offset: int
    checkpoint: int
    buffered: int
    waiting_replies: int
    readers: int
    evicted_total: int
    pauses_total: int
    consecutive_failures: int
    last_failure: PollFailure | None
    streaming: int = 0
    failed_turns_total: int = 0
    abandoned_total: int = 0
    duplicate_posts_total: int = 0


@dataclass(slots=True)
class _Flow:
    """Backpressure accounting of a live consumer."""

    capacity: int
    delivered: int = 0
    taken: int = 0

    @property
    def full(self) -> bool:
        return self.delivered - self.taken >= self.capacity


@dataclass(slots=True)
class _Waiter:
    """An ask or stream: waits for the turn that answers its customer message."""

    kind: ConsumerKind
    registered_at: int
    flow: _Flow
    customer_offset: int | None = None
    resumed: bool = False  # its message may have been posted by a process now gone
    post_took: float = 0.0  # seconds its post took (`ExpectPoll`)
    expired: bool = False  # its deadline passed before its post was settled: awaiting that


@dataclass(slots=True)
class _Reader:
    """An `events()` reader: every event from `since` on."""

    since: int
    flow: _Flow
    held: list[Event] | None = None
    history_before: int = 0
    from_now: bool = False  # subscribed without `since`: the window, then live; no history


@dataclass(slots=True)
class _Streamed:
    """A streamed message Parlant is still writing."""

    event: Event  # its latest snapshot
    sent: str = ""  # its text as last given to streams
    settling: bool = False  # its trace ended, or Parlant went quiet: a CheckMessage decides
    trace_ended: bool = False


@dataclass(slots=True)
class _Held:
    """A completed turn that did not show its success, waiting out `failure_grace` for the
    `status: error` that would fail it."""

    trace_id: str
    reply: Reply


@final
class SessionCore:
    """Decides, for one session, what to poll, whom to give each event, and when to give up.

    Guarantees:
        - The session polls while someone waits on it (an ask, a stream, a reader, a
          streamed message followed) and for `linger` seconds after, from `Start` until
          `Stop` or a terminal failure; `ready` ends replies, never polling. Then it is
          DORMANT: no request, its offset kept; the next consumer wakes it, and it reads on
          from where it stopped, so nothing Parlant wrote meanwhile is missed.
        - Every event at or past the start offset is handled once, in offset order; an offset
          seen twice (a re-delivery) is dropped here.
        - A waiter resolves with the turn that answers its own message (see `TurnTracker`);
          a turn Parlant failed (`status: error`) fails it with `AgentError`.
        - Whole messages: a streamed message still being written holds back it and every
          event after it (polling goes on) until it is complete, so asks, replies and readers
          only see it whole; streams get its text as it grows (`MessageDelta`). The checkpoint
          never passes it.
        - An event no consumer claims is kept (bounded) for the next reader.
        - A consumer over its capacity pauses polling; nothing is dropped.
    """

    # One per session, thousands at once: past 30 attributes an instance's dict stops sharing
    # its keys and costs ~1.5 KiB more (measured with tracemalloc at 1,000 sessions).
    __slots__ = (
        "_abandoned_total",
        "_consecutive_failures",
        "_duplicate_posts_total",
        "_effects",
        "_evicted_total",
        "_failed_turns_total",
        "_generation",
        "_held",
        "_held_generation",
        "_idle_since",
        "_idle_timer_at",
        "_last_failure",
        "_linger_until",
        "_next_offset",
        "_now",
        "_outbox",
        "_own_posts",
        "_parked",
        "_pauses_total",
        "_poll_open",
        "_post_keys",
        "_readers",
        "_replay_unclaimed",
        "_replay_until",
        "_replies",
        "_retry_not_before",
        "_rng",
        "_save_armed",
        "_saved_at",
        "_saved_checkpoint",
        "_settings",
        "_state",
        "_streaming",
        "_terminal_error",
        "_tracker",
        "_waiters",
        "_window",
        "session_id",
    )

    def __init__(self, session_id: str, settings: SessionSettings, rng: random.Random) -> None:
        self.session_id = session_id
        self._settings = settings
        self._rng = rng
        self._state = SessionState.STARTING
        self._next_offset = 0
        self._generation = 0
        self._poll_open = False
        self._consecutive_failures = 0
        self._retry_not_before = 0.0  # a server's Retry-After, as a time
        self._last_failure: PollFailure | None = None
        self._terminal_error: SupervisorError | None = None
        self._tracker = TurnTracker()
        self._window: dict[int, Event] = {}
        self._waiters: dict[int, _Waiter] = {}
        self._readers: dict[int, _Reader] = {}
        self._replies: dict[int, Reply | SupervisorError] = {}
        self._streaming: dict[str, _Streamed] = {}
        self._parked: list[Event] = []
        self._held: dict[int, _Held] = {}
        self._held_generation = 0
        self._failed_turns_total = 0
        self._abandoned_total = 0
        self._replay_until = 0  # see Resume: events below it were handled by an earlier actor
        self._replay_unclaimed: frozenset[int] = frozenset()
        self._own_posts: set[int] = set()
        self._post_keys: dict[str, int] = {}  # the latest posts' keys -> their offsets
        self._duplicate_posts_total = 0
        self._idle_since: float | None = None  # idle from then on (None: busy)
        self._idle_timer_at: float | None = None  # the one IDLE timer pending fires then
        self._linger_until: float | None = None  # nobody waits: polling ends then
        self._saved_checkpoint: int | None = None
        self._saved_at = float("-inf")
        self._save_armed = False
        self._evicted_total = 0
        self._pauses_total = 0
        self._effects: list[Effect] = []
        self._now = 0.0  # the clock time of the message being handled
        self._outbox: dict[int, list[StreamItem]] = {}

    # --- queries --------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """The current lifecycle state."""
        return self._state

    @property
    def checkpoint(self) -> int:
        """The lowest offset a live consumer or the unclaimed window still needs.

        `next_offset` when none: where a restarted or re-activated actor resumes.
        """
        needed = [self._next_offset]
        if self._parked:
            needed.append(self._parked[0].offset)
        if self._window:
            needed.append(next(iter(self._window)))
        for waiter in self._waiters.values():
            offset = waiter.customer_offset
            needed.append(waiter.registered_at if offset is None else offset)
        needed.extend(r.since for r in self._readers.values() if r.held is not None)
        return min(needed)

    def resume_point(self) -> Resume:
        """What a successor needs to pick up where this core stands (see `Resume`). A core that
        has not yet read again all that an earlier one had handled passes the earlier one's
        word on (a core that crashes while it catches up must not make old events news)."""
        dispatched = self._dispatched_until
        if self._replay_until <= dispatched:
            return Resume(self.checkpoint, dispatched, frozenset(self._window))
        earlier = (offset for offset in self._replay_unclaimed if offset >= dispatched)
        return Resume(self.checkpoint, self._replay_until, frozenset((*self._window, *earlier)))

    def snapshot(self) -> SessionSnapshot:
        """The session's figures now."""
        return SessionSnapshot(
            session_id=self.session_id,
            state=self._state,
            next_offset=self._next_offset,
            checkpoint=self.checkpoint,
            buffered=len(self._window),
            waiting_replies=len(self._waiters),
            readers=len(self._readers),
            evicted_total=self._evicted_total,
            pauses_total=self._pauses_total,
            consecutive_failures=self._consecutive_failures,
            last_failure=self._last_failure,
            streaming=len(self._streaming),
            failed_turns_total=self._failed_turns_total,
            abandoned_total=self._abandoned_total,
            duplicate_posts_total=self._duplicate_posts_total,
        )

    # --- the one entry point --------------------------------------------------------------

    def handle(self, message: Message, now: float) -> list[Effect]:
        """Account for `message` at clock time `now`; returns what the shell must do, in order."""
        self._effects = []
        self._now = now
        match message:
            case Start(None):
                check_transition(self._state, SessionState.POLLING)
                self._effects.append(LoadCheckpoint())
            case Start(int() as from_offset, resume):
                self._begin(from_offset)
                if resume is not None:
                    self._replay_until = resume.seen_until
                    self._replay_unclaimed = resume.unclaimed
            case CheckpointLoaded(stored):
                if self._state is SessionState.STARTING:  # else: stopped while it loaded
                    self._begin(stored)
            case Stop(error):
                self._stop(error)
            case EventsReceived(generation, events):
                if self._claim_poll(generation):
                    self._consecutive_failures = 0
                    for event in sorted(events, key=lambda e: e.offset):
                        self._accept(event)
            case PollTimedOut(generation, _):
                if self._claim_poll(generation):
                    self._consecutive_failures = 0
            case PollFailed(generation, failure):
                if self._claim_poll(generation):
                    self._poll_failed(failure, now)
            case MessageUpdated(event):
                self._message_updated(event)
            case FollowEnded(event_id):
                self._settle_message(event_id)
            case MessageChecked(event_id, event):
                self._message_checked(event_id, event)
            case AwaitReply():
                self._await_reply(message, now)
            case ResumeReply(consumer, customer_offset, deadline):
                if not self._refuse_if_closed(consumer.consumer_id):
                    self._resume_reply(consumer.consumer_id, consumer.kind, consumer.capacity)
                    if customer_offset is not None:
                        self._message_posted(consumer.consumer_id, customer_offset)
                    self._schedule_deadline(consumer.consumer_id, deadline)
            case MessagePosted(consumer_id, offset, took):
                self._message_posted(consumer_id, offset, took)
                self._expect(offset, took)
                if self._state is SessionState.BACKING_OFF and now >= self._retry_not_before:
                    # Parlant just took a post: it is back. Poll now, not at the retry timer
                    # (up to backoff.cap away): someone is waiting for this turn's reply.
                    self._transition(SessionState.POLLING)
            case PostFailed(consumer_id, error):
                if self._waiters.pop(consumer_id, None) is not None:
                    self._fail(consumer_id, error)
                if isinstance(error, SessionNotFound) and self._state not in _ENDED:
                    # Parlant does not know the session: as final as a poll's 404 (a dormant
                    # session has no poll to hear it from)
                    self._last_failure = PollFailure(FailureKind.NOT_FOUND, "a post's 404", 404)
                    self._fail_session(error)
            case Subscribe(consumer, since):
                self._subscribe(consumer.consumer_id, consumer.capacity, since)
            case HistoryFetched(consumer_id, events, error):
                self._history_fetched(consumer_id, events, error)
            case Unsubscribe(consumer_id):
                self._waiters.pop(consumer_id, None)
                self._readers.pop(consumer_id, None)
            case EventsConsumed(consumer_id, taken):
                flow = self._flow(consumer_id)
                if flow is not None:
                    flow.taken = max(flow.taken, taken)
            case TimerFired(TimerKind.RETRY_POLL, generation):
                if self._state is SessionState.BACKING_OFF and generation == self._generation:
                    self._transition(SessionState.POLLING)
            case TimerFired(TimerKind.FAILURE_GRACE, generation):
                held = self._held.pop(generation, None)
                if held is not None:
                    self._answer(held.reply.answers, held.reply)
            case TimerFired(TimerKind.CHECKPOINT, _):
                self._save_armed = False
            case TimerFired(TimerKind.LINGER, _):
                pass  # a wake-up: `_poll_if_due` decides from the clock
            case TimerFired(TimerKind.STREAM_LIFE, offset):
                self._outlived(offset)
            case TimerFired(TimerKind.IDLE, _):
                self._idle_timer_fired(now)
            case TimerFired(TimerKind.DEADLINE, consumer_id):
                self._deadline_passed(consumer_id)
        self._watch_interest(now)
        self._poll_if_due()
        self._flush_outbox()
        self._watch_idleness(now)
        self._save_checkpoint(now, final=self._state is SessionState.STOPPED)
        effects, self._effects = self._effects, []
        return effects

    def _save_checkpoint(self, now: float, *, final: bool) -> None:
        """Store a changed checkpoint in Parlant, at most once per interval (and at the end)."""
        interval = self._settings.checkpoint_interval
        if interval is None or self._state is SessionState.STARTING:
            return
        checkpoint = self.checkpoint
        if checkpoint == self._saved_checkpoint:
            return
        if final or now - self._saved_at >= interval:
            self._saved_checkpoint, self._saved_at = checkpoint, now
            self._effects.append(SaveCheckpoint(checkpoint))
        elif not self._save_armed:
            self._save_armed = True
            at = self._saved_at + interval
            self._effects.append(Schedule(at, TimerFired(TimerKind.CHECKPOINT, 0)))

    # --- idleness -------------------------------------------------------------------------

    def _idle(self) -> bool:
        # Unclaimed events are no work: a reaped session's checkpoint stays on the first of
        # them, and its next reader gets them from the server (`resume_point`).
        return (
            not self._waiters
            and not self._readers
            and not self._parked
            and (self._state in _LIVE or self._state is SessionState.DORMANT)
        )

    def _watch_idleness(self, now: float) -> None:
        """Note when the session becomes idle, and keep one IDLE timer pending for it.

        A timer cannot be cancelled, and one armed at every idle spell stayed pending for the
        whole TTL: a session asked every few seconds held hundreds, each a handful of objects
        for the garbage collector to scan. One pending timer is re-armed when it fires early.
        """
        ttl = self._settings.idle_ttl
        if ttl is None:
            return
        if not self._idle():
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
            if self._idle_timer_at is None:
                self._arm_idle_timer(now + ttl)

    def _idle_timer_fired(self, now: float) -> None:
        """Reap a session idle for its TTL; one idle for less has its timer armed again."""
        at, ttl = self._idle_timer_at, self._settings.idle_ttl
        if at is None or now < at or ttl is None:
            return  # not the pending timer
        self._idle_timer_at = None
        since = self._idle_since
        if since is None or not self._idle():
            return  # busy: the next idle spell arms it again
        if now >= since + ttl:
            self._effects.append(Reap())
        else:
            self._arm_idle_timer(since + ttl)

    def _arm_idle_timer(self, at: float) -> None:
        self._idle_timer_at = at
        self._effects.append(Schedule(at, TimerFired(TimerKind.IDLE, 0)))

    # --- interest: who waits on the session -----------------------------------------------

    def _interested(self) -> bool:
        """Someone waits on the session: an ask, a stream, a reader, or a streamed message
        being followed (its readers and asks get it only whole)."""
        return bool(self._waiters or self._readers or self._streaming)

    def _watch_interest(self, now: float) -> None:
        """Start the linger when the last consumer leaves; any new one ends it."""
        linger = self._settings.linger
        if linger is None:
            return
        if self._interested():
            self._linger_until = None
        elif self._linger_until is None and self._state in _LIVE:
            self._linger_until = now + linger
            if self._poll_open:
                self._effects.append(FinishPoll())
            if linger > 0:
                self._effects.append(Schedule(self._linger_until, TimerFired(TimerKind.LINGER, 0)))

    def _lingered_out(self) -> bool:
        return self._linger_until is not None and self._now >= self._linger_until

    def _go_dormant(self) -> None:
        """Nobody waits and the linger is over: no more requests (a retry timer goes stale)
        until someone waits on the session again."""
        if self._state in _LIVE:
            self._transition(SessionState.DORMANT)

    # --- polls that cannot be alive ------------------------------------------------------

    def _expect(self, offset: int, took: float) -> None:
        """Parlant stored a message of the session's at `offset`: the open poll must bring it,
        or it is dead (its connection lost without a word). The poller judges it, from when
        the poll's request went out: a poll paced, held or waiting for the budget is not late
        (`ExpectPoll`)."""
        if offset >= self._next_offset and self._poll_open:
            self._effects.append(ExpectPoll(self._generation, took))

    # --- polling --------------------------------------------------------------------------

    def _begin(self, from_offset: int | None) -> None:
        self._transition(SessionState.POLLING)
        self._next_offset = from_offset or 0
        self._saved_checkpoint = from_offset
        # Readers that subscribed with `since` while the checkpoint loaded (next_offset was 0
        # then, so nothing seemed to be history): what lies between their `since` and where
        # polling now starts is history, fetched as at any subscription.
        for consumer_id, reader in self._readers.items():
            if not reader.from_now and reader.held is None and reader.since < self._next_offset:
                reader.held = []
                reader.history_before = self._next_offset
                self._effects.append(FetchHistory(consumer_id, reader.since, self._next_offset))

    def _claim_poll(self, generation: int) -> bool:
        """True if this outcome is for the open poll (a stale or cancelled one is ignored)."""
        if not self._poll_open or generation != self._generation:
            return False
        self._poll_open = False
        return True

    def _poll_if_due(self) -> None:
        if self._lingered_out():
            # An open poll is not cancelled but ends by itself (`FinishPoll`): Parlant goes on
            # waiting for a poll its client left, so a cancelled one would cost it the same
            # and bring nothing. Dormant once it has ended.
            if not self._poll_open:
                self._go_dormant()
            return
        if self._state is SessionState.DORMANT:
            if self._awaiting_own_posts():
                return
            self._transition(SessionState.POLLING)
        if self._poll_open or self._state not in (SessionState.POLLING, SessionState.PAUSED):
            return
        if self._any_consumer_full():
            if self._state is SessionState.POLLING:
                self._transition(SessionState.PAUSED)
                self._pauses_total += 1
            return
        if self._state is SessionState.PAUSED:
            self._transition(SessionState.POLLING)
        self._generation += 1
        self._poll_open = True
        highest, jitter = self._settings.wait_for_data, self._settings.wait_jitter
        lowest = max(1, highest - jitter) if jitter else highest
        wait = self._rng.randint(lowest, highest) if jitter else highest
        # a poll that times out changes nothing here, unless failures are to be forgotten: the
        # poller sends it again itself (at 15,000 idle sessions, a cycle each through this actor
        # was most of the idle CPU)
        repeat = (lowest, highest) if self._consecutive_failures == 0 else None
        if self._linger_until is not None:
            # lingering: the poll ends with the linger (Parlant goes on waiting for a poll its
            # client left, so one cut short would still cost it), and its end is told
            wait = max(1, min(wait, math.ceil(self._linger_until - self._now)))
            repeat = None
        for_turn = bool(self._waiters or self._streaming)
        self._effects.append(
            StartPoll(self._generation, self._next_offset, wait, repeat, for_turn=for_turn)
        )
        posted = [
            (w.customer_offset, w.post_took)
            for w in self._waiters.values()
            if w.customer_offset is not None and w.customer_offset >= self._next_offset
        ]
        if posted:  # a message of ours is stored: this poll must bring it
            self._expect(*min(posted))

    def _fail_session(self, error: SupervisorError) -> None:
        """Parlant said the session is gone or forbidden: retrying cannot help, so everyone
        waiting gets `error`, and so does whoever comes next, until it is opened again."""
        if self._poll_open:
            self._poll_open = False
            self._effects.append(CancelPoll())
        self._terminal_error = error
        self._transition(SessionState.FAILED)
        self._stop_following()
        self._fail_everyone(error)

    def _awaiting_own_posts(self) -> bool:
        """Only asks whose messages are not stored yet wait on the session: nothing it could
        hear before they are is theirs (a turn comes after its message), so a dormant session
        wakes once one is. Under load a post took seconds, and a poll waiting beside it cost
        Parlant four reads a second all that time (bench/upstream.py: 208 polls waiting where
        80 were needed, 400 sessions asking every 30 s)."""
        return (
            bool(self._waiters)
            and not self._readers
            and not self._streaming
            and all(w.customer_offset is None for w in self._waiters.values())
        )

    def _any_consumer_full(self) -> bool:
        return (
            len(self._parked) >= _PARKED_LIMIT
            or any(w.flow.full for w in self._waiters.values())
            or any(r.flow.full for r in self._readers.values())
        )

    def _poll_failed(self, failure: PollFailure, now: float) -> None:
        self._last_failure = failure
        if failure.kind.is_terminal:
            if failure.kind is FailureKind.NOT_FOUND:
                message = (
                    f"session {self.session_id}: Parlant does not know this session "
                    f"({failure.detail}); it was deleted or never existed: open another one"
                )
            elif failure.kind is FailureKind.MISCONFIGURED:
                message = f"session {self.session_id}: {failure.detail}"
            else:
                message = (
                    f"session {self.session_id}: Parlant refused access ({failure.detail}); "
                    "check the credentials the supervisor uses"
                )
            self._fail_session(failure.kind.error(message, session_id=self.session_id))
            return
        delay = self._settings.backoff.delay(
            self._consecutive_failures, self._rng, retry_after=failure.retry_after
        )
        self._consecutive_failures += 1
        self._retry_not_before = now + (failure.retry_after or 0.0)
        self._transition(SessionState.BACKING_OFF)
        self._effects.append(
            Schedule(now + delay, TimerFired(TimerKind.RETRY_POLL, self._generation))
        )

    # --- events ---------------------------------------------------------------------------

    def _accept(self, event: Event) -> None:
        """Take the next event of the log: dispatch it, or park it behind a streamed message
        that Parlant is still writing (it and everything after it wait, in offset order)."""
        if event.offset < self._next_offset:
            return
        self._next_offset = event.offset + 1
        if is_incomplete(event):
            self._streaming[event.id] = _Streamed(event)
            self._effects.append(FollowMessage(event.id, event.offset))
            life = self._settings.max_stream_life
            at = self._now + life
            self._effects.append(Schedule(at, TimerFired(TimerKind.STREAM_LIFE, event.offset)))
        elif not self._parked:
            self._dispatch(event)
            return
        self._parked.append(event)
        if len(self._parked) == 1:
            self._send_text(event, self._streaming[event.id], done=False)
        self._settle_if_trace_ended(event)

    def _dispatch(self, event: Event) -> None:
        # read again after an earlier actor handled it: news only if it was still unclaimed
        news = event.offset >= self._replay_until or event.offset in self._replay_unclaimed
        if self._replay_unclaimed and event.offset + 1 >= self._replay_until:
            self._replay_unclaimed = frozenset()
        update = self._tracker.feed(event)
        claimed = False
        match update:
            case CustomerSpoke():
                self._note_key(event)
                claimed = event.offset in self._own_posts or any(
                    w.customer_offset == event.offset for w in self._waiters.values()
                )
                self._own_posts.discard(event.offset)
            case TurnProgressed(_, answers, _) | TurnCancelled(_, answers, _):
                for consumer_id in self._waiting_for(answers, ConsumerKind.STREAM):
                    self._deliver(consumer_id, (event,))
            case TurnCompleted(trace_id, answers, turn_events):
                reply = Reply.of_turn(self.session_id, trace_id, answers, turn_events)
                for consumer_id in self._waiting_for(answers, ConsumerKind.STREAM):
                    self._deliver(consumer_id, (event,))
                claimed = bool(self._waiting_for(answers))
                if shows_success(turn_events) or not self._settings.failure_grace:
                    self._answer(answers, reply)
                else:
                    self._hold(reply)
            case TurnFailed(trace_id, answers, _):
                self._failed_turns_total += 1
                self._held = {g: h for g, h in self._held.items() if h.trace_id != trace_id}
                claimed = bool(self._waiting_for(answers))
                self._answer(answers, self._agent_error())
            case None:
                pass
        for consumer_id, reader in self._readers.items():
            if event.offset < reader.since or (reader.from_now and not news):
                continue
            if reader.held is not None:
                reader.held.append(event)
            else:
                self._deliver(consumer_id, (event,))
        if news and not claimed and not self._readers:
            self._keep_unclaimed(event)

    def _note_key(self, event: Event) -> None:
        """Count a post key met at a second offset: one post stored twice."""
        key = key_of(event)
        if key is None:
            return
        first = self._post_keys.setdefault(key, event.offset)
        if first != event.offset:
            self._duplicate_posts_total += 1
        elif len(self._post_keys) > _POST_KEYS_KEPT:
            del self._post_keys[next(iter(self._post_keys))]

    def _agent_error(self) -> AgentError:
        return AgentError(
            f"session {self.session_id}: the agent's turn failed inside Parlant (it wrote "
            "status: error instead of an answer); nothing was answered: try again, and check "
            "the Parlant server's log and its model provider if it keeps failing",
            session_id=self.session_id,
        )

    def _answer(self, answers: tuple[int, ...], outcome: Reply | SupervisorError) -> None:
        """Resolve (or fail) every waiter whose message the turn answered, and keep the outcome
        for asks whose post has not been acknowledged yet."""
        for consumer_id in self._waiting_for(answers):
            if isinstance(outcome, Reply):
                self._resolve(consumer_id, outcome)
            else:
                del self._waiters[consumer_id]
                self._fail(consumer_id, outcome)
        self._remember_for_late_posts(answers, outcome)

    def _hold(self, reply: Reply) -> None:
        """Resolve the turn after `failure_grace`, unless a `status: error` fails it first."""
        self._held_generation += 1
        self._held[self._held_generation] = _Held(reply.trace_id, reply)
        at = self._now + self._settings.failure_grace
        timer = TimerFired(TimerKind.FAILURE_GRACE, self._held_generation)
        self._effects.append(Schedule(at, timer))

    # --- streamed messages ----------------------------------------------------------------

    def _message_updated(self, event: Event) -> None:
        streamed = self._streaming.get(event.id)
        if streamed is None or stream_size(event) <= stream_size(streamed.event):
            return  # not followed (any more), or not newer
        streamed.event = event
        index = next(i for i, parked in enumerate(self._parked) if parked.id == event.id)
        self._parked[index] = event
        complete = not is_incomplete(event)
        if index == 0:
            self._send_text(event, streamed, done=complete)
        if complete:
            del self._streaming[event.id]
            self._release()

    def _settle_if_trace_ended(self, event: Event) -> None:
        """A parked event that ends a trace whose message is still incomplete: Parlant writes
        a message's terminator before its turn's `ready`, so the message must be complete in
        the log by now, or was abandoned (a turn cancelled mid-message never finishes it)."""
        if is_completed_ready(event) or agent_status(event) in ("cancelled", "error"):
            for event_id, streamed in self._streaming.items():
                if streamed.event.trace_id == event.trace_id:
                    streamed.trace_ended = True
                    self._settle_message(event_id)

    def _settle_message(self, event_id: str) -> None:
        """Ask the log what became of the message: complete, or never to be."""
        streamed = self._streaming.get(event_id)
        if streamed is not None and not streamed.settling:
            streamed.settling = True
            self._effects.append(CheckMessage(event_id, streamed.event.offset))

    def _outlived(self, offset: int) -> None:
        """A streamed message still unfinished `max_stream_life` after it began is released
        as it stands (its chunks may never end: every later event waited behind it)."""
        event_id = next((i for i, s in self._streaming.items() if s.event.offset == offset), None)
        if event_id is not None:
            self._abandon(event_id)

    def _message_checked(self, event_id: str, event: Event | None) -> None:
        streamed = self._streaming.get(event_id)
        if streamed is None:
            return
        streamed.settling = False
        before = stream_size(streamed.event)
        if event is not None:
            self._message_updated(event)
        if event_id not in self._streaming:
            return  # complete
        if stream_size(streamed.event) > before and not streamed.trace_ended:
            # written further since Parlant went quiet: it is alive, follow it again
            self._effects.append(FollowMessage(event_id, streamed.event.offset))
            return
        # Still incomplete after its trace ended (a cancelled turn never finishes its message)
        # or after Parlant wrote nothing for wait_for_data: abandoned, released as it stands
        # (ReplyMessage.is_complete says so).
        self._abandon(event_id)

    def _abandon(self, event_id: str) -> None:
        """Stop waiting for a streamed message: released as it stands, counted."""
        streamed = self._streaming.pop(event_id)
        self._effects.append(StopFollowing(event_id))
        self._abandoned_total += 1
        if self._parked and self._parked[0].id == event_id:
            self._send_text(streamed.event, streamed, done=True)
        self._release()

    def _release(self) -> None:
        """Dispatch the parked events up to the next message still being written."""
        while self._parked and self._parked[0].id not in self._streaming:
            self._dispatch(self._parked.pop(0))
        if self._parked:
            head = self._parked[0]
            self._send_text(head, self._streaming[head.id], done=False)

    def _send_text(self, event: Event, streamed: _Streamed, *, done: bool) -> None:
        """Give the streams waiting for the message's turn its text so far."""
        text = message_text(event)
        delta = text[len(streamed.sent) :] if text.startswith(streamed.sent) else text
        streamed.sent = text
        answers = self._tracker.answers_of(event.trace_id)
        if answers is None:
            return  # a closed trace's message (a cancelled turn's stray): no turn of anyone's
        item = self._delta(event, text, delta, done)
        for consumer_id in self._waiting_for(answers, ConsumerKind.STREAM):
            self._deliver_text(consumer_id, item)

    @staticmethod
    def _delta(event: Event, text: str, delta: str, done: bool) -> MessageDelta:
        return MessageDelta(
            event.id, event.offset, event.trace_id, text, delta, is_preamble(event), done
        )

    def _deliver_text(self, consumer_id: int, delta: MessageDelta) -> None:
        """Deltas do not count against a consumer's capacity, and a full consumer misses
        them: each carries the whole text so far, and the message event follows whole."""
        flow = self._flow(consumer_id)
        if flow is not None and not flow.full:
            self._outbox.setdefault(consumer_id, []).append(delta)

    def _keep_unclaimed(self, event: Event) -> None:
        """Hold `event` for the next reader, unless a turn resolved later claims it."""
        self._window[event.offset] = event
        while len(self._window) > self._settings.window_size:
            del self._window[next(iter(self._window))]
            self._evicted_total += 1

    def _waiting_for(self, answers: Iterable[int], kind: ConsumerKind | None = None) -> list[int]:
        wanted = set(answers)
        return [
            consumer_id
            for consumer_id, waiter in self._waiters.items()
            if waiter.customer_offset in wanted and (kind is None or waiter.kind is kind)
        ]

    def _remember_for_late_posts(
        self, answers: tuple[int, ...], outcome: Reply | SupervisorError
    ) -> None:
        """Keep a turn's outcome for asks whose post has not been acknowledged yet.

        The poll and the post travel on different connections: the turn that answers a message
        can arrive before we learn the message's offset.
        """
        floor = self._unposted_floor()
        if floor is None:
            return
        for offset in answers:
            if offset >= floor:
                self._replies[offset] = outcome

    def _deadline_passed(self, consumer_id: int) -> None:
        """A waiter whose message was stored times out. One whose post is not settled yet
        waits for it (no request of it outlives the deadline, and the post then reads the log
        to tell what became of it): its ask says "not sent" only when that is proven. Past
        `_SETTLE_LIMIT` more, it gives up on knowing."""
        waiter = self._waiters.get(consumer_id)
        if waiter is None:
            return
        if waiter.customer_offset is not None or waiter.expired:
            del self._waiters[consumer_id]
            self._fail(consumer_id, self._timed_out(waiter))
            return
        waiter.expired = True
        at = self._now + _SETTLE_LIMIT
        self._effects.append(Schedule(at, TimerFired(TimerKind.DEADLINE, consumer_id)))

    def _timed_out(self, waiter: _Waiter) -> SupervisorError:
        if waiter.customer_offset is None:  # its post never said how it ended
            return DeliveryUnknown(
                f"session {self.session_id}: no answer to the message's post before the "
                "deadline: it may have been stored. Read the conversation before sending it "
                "again (or, if you gave the ask a post_key, ask again with it and "
                "maybe_sent=True: a stored copy is found, not posted twice)",
                session_id=self.session_id,
            )
        return ReplyTimeout(
            f"session {self.session_id}: no completed reply before the deadline; "
            "the reply will still reach the session's events() readers",
            session_id=self.session_id,
        )

    def _unposted_floor(self) -> int | None:
        pending = [w.registered_at for w in self._waiters.values() if w.customer_offset is None]
        return min(pending) if pending else None

    # --- consumers ------------------------------------------------------------------------

    def _refuse_if_closed(self, consumer_id: int) -> bool:
        if self._state is SessionState.FAILED and self._terminal_error is not None:
            self._fail(consumer_id, self._terminal_error)
            return True
        if self._state is SessionState.STOPPED:
            self._fail(consumer_id, self._closed_error())
            return True
        return False

    def _closed_error(self) -> SessionClosed:
        return SessionClosed(
            f"session {self.session_id} is closed; open it again to continue",
            session_id=self.session_id,
        )

    def _await_reply(self, message: AwaitReply, now: float) -> None:
        consumer = message.consumer
        if self._refuse_if_closed(consumer.consumer_id):
            return
        self._resume_reply(consumer.consumer_id, consumer.kind, consumer.capacity)
        # a new message lands after everything read so far; one a process now gone may have
        # posted, anywhere (this actor may have read past it before the ask came)
        resumed = consumer.maybe_sent
        self._waiters[consumer.consumer_id].resumed = resumed
        since = 0 if resumed else self._next_offset
        post = PostMessage(consumer.consumer_id, message.text, since, message.deadline)
        self._effects.append(post)
        self._schedule_deadline(consumer.consumer_id, message.deadline)

    def _resume_reply(self, consumer_id: int, kind: ConsumerKind, capacity: int) -> None:
        self._waiters[consumer_id] = _Waiter(kind, self._next_offset, _Flow(capacity))

    def _schedule_deadline(self, consumer_id: int, deadline: float | None) -> None:
        if deadline is not None:
            self._effects.append(Schedule(deadline, TimerFired(TimerKind.DEADLINE, consumer_id)))

    def _message_posted(self, consumer_id: int, offset: int, took: float = 0.0) -> None:
        # our own message is news to no reader, even if its ask already timed out
        self._window.pop(offset, None)
        waiter = self._waiters.get(consumer_id)
        if waiter is not None and waiter.expired and offset not in self._replies:
            # stored, and settled past its deadline: the ask timed out, its reply goes on
            del self._waiters[consumer_id]
            waiter.customer_offset = offset
            self._fail(consumer_id, self._timed_out(waiter))
            waiter = None
        if waiter is None:
            if offset >= self._dispatched_until:
                self._own_posts.add(offset)
            return
        if waiter.customer_offset == offset:
            return  # told twice (once on resumption, once by the POST's answer)
        waiter.customer_offset = offset
        waiter.post_took = took
        outcome = self._replies.get(offset)
        held = next((h for h in self._held.values() if offset in h.reply.answers), None)
        stream = waiter.kind is ConsumerKind.STREAM
        if isinstance(outcome, Reply):
            if stream:
                self._deliver(consumer_id, outcome.events)
            self._resolve(consumer_id, outcome)
        elif outcome is not None:
            del self._waiters[consumer_id]
            self._fail(consumer_id, outcome)
        elif held is not None:
            if stream:  # it resolves (or fails) with the others when the hold ends
                self._deliver(consumer_id, held.reply.events)
        elif (
            waiter.resumed
            and offset < self._dispatched_until
            and self._tracker.open_turn_answering(offset) is None
        ):
            # posted by a process now gone: its turn may have been read, and completed, before
            # this waiter came; read it again (`_settle_from_history`)
            self._effects.append(FetchHistory(consumer_id, offset, self._dispatched_until))
        elif stream:
            self._catch_up(consumer_id, offset)
        floor = self._unposted_floor()
        self._replies = (
            {} if floor is None else {o: r for o, r in self._replies.items() if o >= floor}
        )

    def _catch_up(self, consumer_id: int, customer_offset: int) -> None:
        """A stream that learns its message's offset late: the turn's events so far, and the
        text so far of its message being written."""
        open_turn = self._tracker.open_turn_answering(customer_offset)
        if open_turn is None:
            return
        trace_id, events = open_turn
        self._deliver(consumer_id, events)
        if self._parked and self._parked[0].trace_id == trace_id:
            head = self._parked[0]
            streamed = self._streaming[head.id]
            self._deliver_text(consumer_id, self._delta(head, streamed.sent, streamed.sent, False))

    @property
    def _dispatched_until(self) -> int:
        """Every event below this offset has been dispatched (the rest are parked or unseen)."""
        return self._parked[0].offset if self._parked else self._next_offset

    def _subscribe(self, consumer_id: int, capacity: int, since: int | None) -> None:
        if self._refuse_if_closed(consumer_id):
            return
        if since is None:
            reader = _Reader(0, _Flow(capacity), from_now=True)
            self._readers[consumer_id] = reader
            backlog = tuple(self._window.values())
            self._window.clear()
            if backlog:
                self._deliver(consumer_id, backlog)
            return
        reader = _Reader(since, _Flow(capacity))
        self._readers[consumer_id] = reader
        if since < self._next_offset:
            reader.held = []
            reader.history_before = self._next_offset
            self._window = {o: e for o, e in self._window.items() if o < since}
            self._effects.append(FetchHistory(consumer_id, since, self._next_offset))

    def _history_fetched(
        self, consumer_id: int, events: tuple[Event, ...], error: SupervisorError | None
    ) -> None:
        if consumer_id in self._waiters:
            self._settle_from_history(consumer_id, events, error)
            return
        reader = self._readers.get(consumer_id)
        if reader is None or reader.held is None:
            return
        if error is not None:
            del self._readers[consumer_id]
            self._fail(consumer_id, error)
            return
        history = tuple(
            e for e in events if reader.since <= e.offset < reader.history_before
        ) + tuple(reader.held)
        reader.held = None
        if history:
            self._deliver(consumer_id, history)

    def _settle_from_history(
        self, consumer_id: int, events: tuple[Event, ...], error: SupervisorError | None
    ) -> None:
        """Resolve a resumed waiter with its turn, read again from its message on; if that
        turn has not completed (or the read failed), the live log settles it (or its
        deadline)."""
        waiter = self._waiters[consumer_id]
        offset = waiter.customer_offset
        if error is not None or offset is None:
            return
        tracker = TurnTracker()
        outcome: Reply | SupervisorError | None = None
        for event in events:
            match tracker.feed(event):
                case TurnCompleted(trace_id, answers, turn_events) if offset in answers:
                    outcome = Reply.of_turn(self.session_id, trace_id, answers, turn_events)
                case TurnFailed(_, answers, _) if offset in answers:
                    outcome = self._agent_error()
        if isinstance(outcome, Reply):
            if waiter.kind is ConsumerKind.STREAM:
                self._deliver(consumer_id, outcome.events)
            self._resolve(consumer_id, outcome)
        elif outcome is not None:
            del self._waiters[consumer_id]
            self._fail(consumer_id, outcome)

    def _flow(self, consumer_id: int) -> _Flow | None:
        waiter = self._waiters.get(consumer_id)
        if waiter is not None:
            return waiter.flow
        reader = self._readers.get(consumer_id)
        return reader.flow if reader is not None else None

    def _deliver(self, consumer_id: int, events: tuple[Event, ...]) -> None:
        flow = self._flow(consumer_id)
        if flow is not None:
            flow.delivered += len(events)
        self._outbox.setdefault(consumer_id, []).extend(events)

    def _flush(self, consumer_id: int) -> None:
        pending = self._outbox.pop(consumer_id, None)
        if pending:
            self._effects.append(Deliver(consumer_id, tuple(pending)))

    def _flush_outbox(self) -> None:
        for consumer_id in list(self._outbox):
            self._flush(consumer_id)

    def _resolve(self, consumer_id: int, reply: Reply) -> None:
        self._flush(consumer_id)
        del self._waiters[consumer_id]
        for event in reply.events:
            self._window.pop(event.offset, None)
        self._effects.append(Resolve(consumer_id, reply))

    def _fail(self, consumer_id: int, error: SupervisorError) -> None:
        self._flush(consumer_id)
        self._effects.append(Fail(consumer_id, error))

    def _fail_everyone(self, error: SupervisorError) -> None:
        for consumer_id in [*self._waiters, *self._readers]:
            self._fail(consumer_id, error)
        self._waiters.clear()
        self._readers.clear()

    # --- lifecycle ------------------------------------------------------------------------

    def _stop(self, error: SupervisorError) -> None:
        if self._state is SessionState.STOPPED:
            return
        if self._poll_open:
            self._poll_open = False
            self._effects.append(CancelPoll())
        self._stop_following()
        self._fail_everyone(error)
        self._transition(SessionState.STOPPED)

    def _stop_following(self) -> None:
        """No more news of the messages being written; they stay parked (the checkpoint keeps
        them for whoever opens the session again)."""
        if self._streaming:
            self._streaming.clear()
            self._effects.append(StopFollowing())

    def _transition(self, target: SessionState) -> None:
        check_transition(self._state, target)
        self._state = target
