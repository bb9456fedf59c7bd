"""Every session's long-poll, run concurrently on the one I/O loop.

Each session gets its own keep-alive connection (`Connection`, reused poll after poll):
one shared connection pool for thousands of concurrent long-polls costs O(N) per request and
O(N^2) in a wave of 504s (measured). The actor decides what to poll; the poller runs the
request and tells the outcome back, but for a poll that times out without events, which it
sends again itself when the actor allows it (`StartPoll.repeat_wait`): an idle session's poll
cycles then cost its actor nothing.

The poller also keeps the upstream's health (`Upstream`): when Parlant is down (a connection
refused, failures in a row from several sessions), a poll that fails for that reason, and any
new one, is held instead of told as a failure (the session's actor sees its poll still open:
it does not back off on its own); one probe (`GET /healthz`, any answer below 500) asks whether
the server is back, and the held polls are then readmitted at a bounded rate (`Readmission`).
One log line per transition, not one per session.

And it keeps what one Parlant is asked to carry bounded (`PollCeiling`): every waiting poll
costs Parlant four reads of its store a second, so at most `max_waiting` polls wait at once.
A turn's polls (an ask, a stream, a followed message: `StartPoll.for_turn`) always go; the
others (readers, lingering sessions) take the slots a turn leaves. Beyond the ceiling, a
session is read in rotation, with `wait_for_data=0`, at most `rotation_rate` reads a second
for all of them (a read costs Parlant about one request, 2.3 ms: less than a waiting second
costs it past a few seconds between reads, measured); and a background poll that times out
while others wait in the rotation yields its slot to the one that waited longest, so every
session beyond the ceiling takes its turn at waiting too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple, final
from urllib.parse import quote

import pydantic
import structlog

from actors._backoff import Backoff
from actors._budget import Budget
from actors._events import parse_events_soon
from actors._io import IOLoop
from actors._messages import (
    EventsReceived,
    FailureKind,
    Message,
    PollFailed,
    PollFailure,
    PollTimedOut,
    StartPoll,
)
from actors._recorder import Recorder
from actors._upstream import Readmission, Upstream, UpstreamState
from actors._wire import (
    CONNECT_TIMEOUT,
    Connection,
    WireBodyTooLarge,
    WireConnectError,
    WireError,
    WireSilenced,
    WireTarget,
    WireTlsError,
    retry_after_seconds,
)

_log = structlog.get_logger("parlant_supervisor")

__all__ = ["PollCeiling", "Poller", "outcome_label"]

TIMEOUT_MARGIN: Final = 10.0
"""Seconds the client waits past `wait_for_data`, so the server's 504 normally comes first."""

_TICK: Final = 0.02
"""Seconds between two batches of readmitted polls."""

LIVENESS: Final = 3.0
"""Seconds a waiting poll has, from when its request went out (or from the write, if it was
waiting already), to bring a message its session just stored (Parlant answers a waiting poll
within 0.25 s of a write); then it is taken for dead and sent again on a new connection: a
flow a middlebox forgot left sessions deaf for a whole poll (54-69 s measured). A Parlant that
took `took` seconds to store the message is given `_SLOW_FACTOR` times that, if longer: a
saturated server answers late, and each poll restarted there costs it the abandoned one's
wait as well (400 sessions asking every 30 s: 293 asks timed out of 754, against 88)."""
_SLOW_FACTOR: Final = 4.0
_RECOVERY_RESTART: Final = 1.0
"""Seconds before a recovery that died of a bug starts again."""
_PROBE_CONNECT: Final = 1.0
"""Seconds a probe may take to connect; then the next probe tries on a new connection. A
connect across a silent partition is retried by the kernel 1, 3, 7 s later: a probe that
waited `CONNECT_TIMEOUT` (10 s) for it noticed a healed link up to 8 s late (measured: 9.9 s
from the heal to the first answer, drill `net-partition`). A busy server still connects at
once (the kernel accepts for it): only the answer may take longer, up to `CONNECT_TIMEOUT`.
Over TLS the handshake's round trips count too: 3 s there (`_PROBE_CONNECT_TLS`). A link
slower than that (a round trip near a second) would find Parlant back only through a post."""
_PROBE_CONNECT_TLS: Final = 3.0

PACE: Final = Backoff(base=0.25, cap=30.0)
"""The pause before a session's next poll after answers that cannot be right (doubling with
each one in a row, jittered): an instant 504, an instant empty answer, only offsets already
read. Without it one session re-polled at once, 1,440-3,800 times a second (measured against
a cache that ignored the query string, and against instant 504s)."""

_INSTANT: Final = 0.5
"""A waiting poll answered without events in less than this share of its wait did not wait."""

_UPSTREAM_FAILURES: Final = frozenset({FailureKind.NETWORK, FailureKind.SERVER_ERROR})
"""Poll failures that say the server is not there (refused, reset, 5xx), not the session."""


@final
@dataclass(frozen=True, slots=True)
class PollCeiling:
    """How many polls one Parlant is asked to keep waiting at once, and how sessions beyond
    that are read.

    Attributes:
        max_waiting: Polls waiting on Parlant at once (None: no ceiling). A turn's polls
            always go; readers and lingering sessions share what they leave.
        rotation_rate: Reads a second, for all the sessions beyond the ceiling together (each
            a `list_events` with `wait_for_data=0`): what they cost Parlant, bounded.
    """

    max_waiting: int | None = 100
    rotation_rate: float = 20.0

    def __post_init__(self) -> None:
        if self.max_waiting is not None and self.max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0 or None, got {self.max_waiting}")
        if not 0 < self.rotation_rate < math.inf:
            raise ValueError(f"rotation_rate must be > 0 reads a second, got {self.rotation_rate}")


class _Rotating(NamedTuple):
    """A poll beyond the ceiling, waiting for its turn to be read."""

    poll: StartPoll
    tell: Callable[[Message], None]
    deadline: float  # when it ends, for a poll that is told its end (`repeat_wait` None)


def outcome_label(outcome: Message) -> str:
    """The metrics label of a poll's outcome (`events`, `gateway_timeout`, `network`, ...)."""
    if isinstance(outcome, PollTimedOut):
        return outcome.reason
    if isinstance(outcome, PollFailed):
        return outcome.failure.kind.value
    return "events"


@final
class Poller:
    """Runs long-polls on the I/O loop. `start` and `cancel` may be called from any thread.

    Guarantees: at most one open poll per session (a new one replaces the old); a cancelled
    poll tells nothing; every other poll tells exactly one outcome (a poll held while the
    upstream is down tells it once readmitted).
    """

    def __init__(
        self,
        io: IOLoop,
        base_url: str,
        recorder: Recorder,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_margin: float = TIMEOUT_MARGIN,
        max_body: int = 0,
        readmission: Readmission | None = None,
        budget: Budget | None = None,
        ceiling: PollCeiling | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._io = io
        self._recorder = recorder
        self._base_url = base_url.rstrip("/")
        self._target = WireTarget.of(self._base_url, dict(headers or {}), max_body)
        self._timeout_margin = timeout_margin
        self._connections: dict[str, Connection] = {}
        self._polls: dict[str, asyncio.Task[None]] = {}
        self._owners: dict[str, str] = {}
        self._shut = False
        self._rng = rng or random.Random()
        self._upstream = Upstream(self._rng)
        self._readmission = readmission or Readmission()
        self._budget = budget or Budget(None, io.loop.time)
        self._held: dict[str, tuple[StartPoll, Callable[[Message], None]]] = {}
        self._finishing: set[str] = set()  # sessions whose open poll is their last
        self._ceiling = ceiling or PollCeiling()
        self._waiting: set[str] = set()  # sessions whose task in `_polls` is a long-poll
        self._rotation: dict[str, _Rotating] = {}  # beyond the ceiling: read in turn
        self._rotator: asyncio.Task[None] | None = None
        self._paced: dict[str, int] = {}  # sessions -> answers that cannot be right, in a row
        # liveness: the waiting poll a stored message is expected from, and when each
        # waiting poll's request went out (generation, loop time)
        self._expected: dict[str, tuple[int, float]] = {}  # generation, seconds to bring it
        self._sent: dict[str, tuple[int, float]] = {}
        self._running: dict[str, tuple[StartPoll, Callable[[Message], None]]] = {}
        self._recovery: asyncio.Task[None] | None = None  # probing, then readmitting
        self._down_since = 0.0
        self._heard: asyncio.Event | None = None  # another request got an answer meanwhile
        self._back: asyncio.Event | None = None  # set when the upstream is no longer down

    @property
    def open_polls(self) -> int:
        """Polls in flight now (read from any thread; approximate while it changes)."""
        return len(self._polls)

    @property
    def held_polls(self) -> int:
        """Polls held while the upstream is down or recovering (any thread; approximate)."""
        return len(self._held)

    @property
    def waiting_polls(self) -> int:
        """Long-polls waiting on Parlant now (any thread; approximate)."""
        return len(self._waiting)

    @property
    def rotating_polls(self) -> int:
        """Sessions beyond the ceiling, read in rotation now (any thread; approximate)."""
        return len(self._rotation) + len(self._polls) - len(self._waiting)

    @property
    def ceiling(self) -> PollCeiling:
        """The ceiling of waiting polls."""
        return self._ceiling

    @property
    def upstream_state(self) -> UpstreamState:
        """The upstream's health now (read from any thread)."""
        return self._upstream.state

    def start(
        self, session_id: str, owner: str, poll: StartPoll, tell: Callable[[Message], None]
    ) -> None:
        """Open `poll` for the session on behalf of actor `owner` (it becomes the owner).

        The outcome goes to `tell` (called on the I/O loop). Dropped after `shut()`.
        """
        if not self._shut:
            self._io.call_soon(self._start, session_id, owner, poll, tell)

    def cancel(self, session_id: str, owner: str) -> None:
        """Cancel the session's open poll, if `owner` still owns it; it tells nothing."""
        if not self._shut:
            self._io.call_soon(self._cancel, session_id, owner)

    def expect(self, session_id: str, owner: str, generation: int, took: float = 0.0) -> None:
        """A message of the session's was just stored (its post took `took` s) for its poll
        `generation` to bring: sent again on a new connection if it has not within `LIVENESS`
        of going out (see there)."""
        if not self._shut:
            self._io.call_soon(self._expect, session_id, owner, generation, took)

    def finish(self, session_id: str, owner: str) -> None:
        """Let the session's open poll be its last, if `owner` still owns it: it is not sent
        again when it times out, and its outcome is told whatever it is."""
        if not self._shut:
            self._io.call_soon(self._finish, session_id, owner)

    def release(self, session_id: str, owner: str) -> None:
        """Cancel the poll and close the connection, if `owner` still owns the session.

        A crashed actor's release can arrive after its successor's first poll: ownership keeps
        it from cancelling the successor's.
        """
        if not self._shut:
            self._io.call_soon(self._release, session_id, owner)

    def upstream_answered(self) -> None:
        """Another request to Parlant got a real answer (a post): if it was down, it is back,
        and the held polls are readmitted without waiting for the next probe. Any thread."""
        if not self._shut and self._upstream.state is UpstreamState.DOWN:
            self._io.call_soon(self._answered)

    def upstream_unreachable(self, session_id: str) -> None:
        """A request of `session_id`'s (a post) could not connect: the server is not there,
        as when a poll's connection is refused (a dormant session asked has no poll to tell
        it). Any thread."""
        if not self._shut:
            self._io.call_soon(self._unreachable, session_id)

    def _unreachable(self, session_id: str) -> None:
        if self._upstream.failed(session_id, refused=True):
            self._went_down(PollFailure(FailureKind.NETWORK, "a post could not connect"))

    def _answered(self) -> None:
        if self._upstream.state is UpstreamState.DOWN:
            self._probe_answered()
            if self._heard is not None:
                self._heard.set()

    def _probe_answered(self) -> None:
        self._upstream.probe_answered()
        self._recorder.upstream_changed(self._upstream.state.value)
        if self._back is not None:
            self._back.set()
            self._back = None

    async def until_up(self, patience: float = 1.0) -> None:
        """Wait while the upstream is down, at most `patience` seconds (the caller looks again
        whether it still needs to send: posts wait with the polls, not each on its own). On
        the I/O loop."""
        if self._upstream.state is not UpstreamState.DOWN:
            return
        if self._back is None:
            self._back = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._back.wait(), patience)

    def shut(self) -> None:
        """Stop polling for good, every session at once: one pass on the I/O loop cancels every
        poll and closes every connection; `start`, `cancel` and `release` are dropped from now
        on, where they are called. For a whole supervisor's stop: 10,000 sessions releasing
        their polls one call each kept the I/O thread busy for a second."""
        self._shut = True
        self._io.call_soon(self._close_all)

    def _close_all(self) -> None:
        sessions = self._polls.keys() | self._connections.keys() | self._held.keys()
        for session_id in list(sessions | self._rotation.keys()):
            self._release(session_id, None)
        for task in (self._recovery, self._rotator):
            if task is not None:
                task.cancel()

    async def aclose(self) -> None:
        """Cancel every poll and close every connection (on the I/O loop)."""
        self._close_all()

    # --- on the I/O loop ------------------------------------------------------------------

    def _start(
        self, session_id: str, owner: str, poll: StartPoll, tell: Callable[[Message], None]
    ) -> None:
        self._cancel(session_id, None)
        self._owners[session_id] = owner
        if self._upstream.state is not UpstreamState.UP:
            self._held[session_id] = (poll, tell)  # readmitted in turn
            return
        self._admit(session_id, poll, tell)

    def _admit(
        self,
        session_id: str,
        poll: StartPoll,
        tell: Callable[[Message], None],
        deadline: float | None = None,
    ) -> None:
        """Send the poll to wait on Parlant if the ceiling lets it (a turn's always), else
        join the rotation. `deadline`: when a poll that is told its end ends (else after its
        `wait_for_data` from now)."""
        now = self._io.loop.time()
        if deadline is not None and poll.repeat_wait is None:
            rest = max(1, math.ceil(deadline - now))
            poll = dataclasses.replace(poll, wait_for_data=min(poll.wait_for_data, rest))
        if poll.for_turn or self._below_ceiling():
            self._launch(session_id, poll, tell, waiting=True)
            return
        end = deadline if deadline is not None else now + poll.wait_for_data
        self._rotation[session_id] = _Rotating(poll, tell, end)
        if self._rotator is None or self._rotator.done():
            self._rotator = self._io.loop.create_task(self._rotate())

    def _below_ceiling(self) -> bool:
        limit = self._ceiling.max_waiting
        return limit is None or len(self._waiting) < limit

    def _launch(
        self,
        session_id: str,
        poll: StartPoll,
        tell: Callable[[Message], None],
        *,
        waiting: bool,
        deadline: float = 0.0,
    ) -> None:
        """Run the poll: waiting on Parlant, or (`waiting` False) one read of the rotation."""
        if waiting:
            task = self._io.loop.create_task(self._poll(session_id, poll, tell))
            self._waiting.add(session_id)
            self._running[session_id] = (poll, tell)
        else:
            task = self._io.loop.create_task(self._read(session_id, poll, tell, deadline))
        self._polls[session_id] = task
        task.add_done_callback(lambda done: self._forget(session_id, done))

    def _forget(self, session_id: str, task: asyncio.Task[None]) -> None:
        if self._polls.get(session_id) is task:
            del self._polls[session_id]
            self._running.pop(session_id, None)
            self._sent.pop(session_id, None)
            if session_id in self._waiting:
                self._waiting.discard(session_id)
                self._promote()

    def _expire(self, now: float) -> None:
        """Tell the end of the polls in the rotation that are told their end (a linger) and
        whose time is up, read or not: nobody waits on them."""
        expired = [
            session_id
            for session_id, (poll, _, deadline) in self._rotation.items()
            if poll.repeat_wait is None and deadline <= now
        ]
        for session_id in expired:
            poll, tell, _ = self._rotation.pop(session_id)
            self._finishing.discard(session_id)
            tell(PollTimedOut(poll.generation, "empty"))

    def _promote(self) -> None:
        """A waiting poll ended: the longest in the rotation takes its slot."""
        while self._rotation and self._below_ceiling():
            session_id = next(iter(self._rotation))
            poll, tell, deadline = self._rotation.pop(session_id)
            self._admit(session_id, poll, tell, deadline)

    async def _rotate(self) -> None:
        """Read the sessions beyond the ceiling in turn, `rotation_rate` a second at most;
        while the upstream is not up they are held like any poll."""
        interval = 1.0 / self._ceiling.rotation_rate
        while self._rotation:
            self._expire(self._io.loop.time())
            if not self._rotation:
                return
            session_id = next(iter(self._rotation))
            poll, tell, deadline = self._rotation.pop(session_id)
            if self._upstream.state is not UpstreamState.UP:
                self._held[session_id] = (poll, tell)
                continue
            self._launch(session_id, poll, tell, waiting=False, deadline=deadline)
            await asyncio.sleep(interval)

    def _expect(self, session_id: str, owner: str, generation: int, took: float) -> None:
        if not self._owns(session_id, owner):
            return
        within = max(LIVENESS, _SLOW_FACTOR * took)
        self._expected[session_id] = (generation, within)
        sent = self._sent.get(session_id)
        if sent is not None and sent[0] == generation:  # waiting already: from the write
            self._io.loop.call_later(within, self._check_alive, session_id, sent)
        # else: checked from when it goes out (`_outcome`)

    def _check_alive(self, session_id: str, sent: tuple[int, float]) -> None:
        """The poll sent at `sent` was to bring a stored message by now: if it is still the
        one waiting, it is dead; send it again on a new connection."""
        generation, _ = sent
        expected = self._expected.get(session_id)
        if expected is None or expected[0] != generation or self._sent.get(session_id) != sent:
            return  # it answered, or a later request is out (checked on its own)
        running = self._running.get(session_id)
        if running is None or running[0].generation != generation:
            return
        poll, tell = running
        self._cancel(session_id, None)
        connection = self._connections.pop(session_id, None)
        if connection is not None:
            connection.close(reset=True)
        self._recorder.polls_restarted(1)
        _log.warning("session.poll_restarted", session_id=session_id)
        self._launch(session_id, poll, tell, waiting=True)

    def _owns(self, session_id: str, owner: str | None) -> bool:
        return owner is None or self._owners.get(session_id, owner) == owner

    def _finish(self, session_id: str, owner: str) -> None:
        if not self._owns(session_id, owner):
            return
        held = self._held.get(session_id)
        rotating = self._rotation.pop(session_id, None)
        if held is not None:
            poll, tell = held
            self._held[session_id] = (dataclasses.replace(poll, repeat_wait=None), tell)
        elif rotating is not None:  # waiting for its turn to be read: it ends now, unread
            tell = rotating.tell
            tell(PollTimedOut(rotating.poll.generation, "empty"))
        elif session_id in self._polls:
            self._finishing.add(session_id)

    def _hold(self, session_id: str, poll: StartPoll, tell: Callable[[Message], None]) -> None:
        """Hold a poll that was running until the upstream is back (its last, if it was)."""
        if session_id in self._finishing:
            self._finishing.discard(session_id)
            poll = dataclasses.replace(poll, repeat_wait=None)
        self._held[session_id] = (poll, tell)

    def _cancel(self, session_id: str, owner: str | None) -> None:
        if not self._owns(session_id, owner):
            return
        self._finishing.discard(session_id)
        self._held.pop(session_id, None)
        self._rotation.pop(session_id, None)
        task = self._polls.pop(session_id, None)
        self._running.pop(session_id, None)
        self._sent.pop(session_id, None)
        if task is not None:
            task.cancel()
            if session_id in self._waiting:
                self._waiting.discard(session_id)
                self._promote()

    def _release(self, session_id: str, owner: str | None) -> None:
        if not self._owns(session_id, owner):
            return
        self._cancel(session_id, None)
        self._owners.pop(session_id, None)
        self._paced.pop(session_id, None)
        self._expected.pop(session_id, None)
        connection = self._connections.pop(session_id, None)
        if connection is not None:
            connection.close()

    def _connection(self, session_id: str) -> Connection:
        connection = self._connections.get(session_id)
        if connection is None:
            connection = self._connections[session_id] = Connection(self._target)
        return connection

    async def _poll(
        self, session_id: str, poll: StartPoll, tell: Callable[[Message], None]
    ) -> None:
        """A poll waiting on Parlant, sent again while it times out and its session allows."""
        while True:
            outcome = await self._attempt(session_id, poll, tell)
            if outcome is None:
                return  # held until the upstream is back
            repeat = poll.repeat_wait
            if isinstance(outcome, PollTimedOut) and repeat and session_id not in self._finishing:
                lowest, highest = repeat  # nothing new: the same poll again, untold
                poll = dataclasses.replace(poll, wait_for_data=self._rng.randint(lowest, highest))
                if self._upstream.state is not UpstreamState.UP:
                    self._hold(session_id, poll, tell)  # readmitted in turn, like any new poll
                    return
                if not poll.for_turn and self._rotation and outcome.reason != "connection_lost":
                    # sessions wait beyond the ceiling: the longest waiting takes this slot
                    # (not from a poll the network cut short: it did not have its wait)
                    deadline = self._io.loop.time() + poll.wait_for_data
                    self._rotation[session_id] = _Rotating(poll, tell, deadline)
                    return
                continue
            self._finishing.discard(session_id)
            tell(outcome)
            return

    async def _read(
        self,
        session_id: str,
        poll: StartPoll,
        tell: Callable[[Message], None],
        deadline: float,
    ) -> None:
        """One read of a session beyond the ceiling (`wait_for_data=0`); nothing new: back to
        the rotation's end, untold, until the poll's `deadline` for one that is told its end."""
        outcome = await self._attempt(session_id, poll, tell, waiting=False)
        if outcome is None:
            return
        again = poll.repeat_wait is not None or self._io.loop.time() < deadline
        if isinstance(outcome, PollTimedOut) and again and session_id not in self._finishing:
            self._admit(session_id, poll, tell, deadline)
            return
        self._finishing.discard(session_id)
        tell(outcome)

    def _judge(self, session_id: str, outcome: Message, elapsed: float, wait: int) -> None:
        """Count an answer that cannot be right toward the session's pause (`PACE`); a
        normal one ends it."""
        reason = None
        if isinstance(outcome, PollTimedOut):
            if outcome.reason == "stale":
                reason = "stale"
            elif outcome.reason == "connection_lost":
                reason = None  # not an answer at all: nothing to pace
            elif wait and elapsed < _INSTANT * wait:
                reason = "instant_empty" if outcome.reason == "empty" else "instant_timeout"
        if reason is None:
            self._paced.pop(session_id, None)
            return
        self._paced[session_id] = self._paced.get(session_id, 0) + 1
        self._recorder.poll_paced(reason)

    async def _attempt(
        self,
        session_id: str,
        poll: StartPoll,
        tell: Callable[[Message], None],
        *,
        waiting: bool = True,
    ) -> Message | None:
        """Send the poll once (`waiting` False: a read that does not wait); its outcome, or
        None when the upstream is down and the poll is held until it is back."""
        streak = self._paced.get(session_id, 0)
        if streak:
            await asyncio.sleep(PACE.delay(streak - 1, self._rng))
        started = self._io.loop.time()
        refused = False
        try:
            outcome, refused = await self._outcome(session_id, poll, waiting=waiting)
        except Exception as error:  # a bug here must not leave the session waiting forever
            _log.exception("session.poll_crashed", session_id=session_id)
            detail = f"internal error: {type(error).__name__}: {error}"
            outcome = PollFailed(poll.generation, PollFailure(FailureKind.INTERNAL, detail))
        elapsed = self._io.loop.time() - started
        self._recorder.poll_finished(outcome_label(outcome), elapsed)
        self._judge(session_id, outcome, elapsed, poll.wait_for_data if waiting else 0)
        if isinstance(outcome, EventsReceived):
            self._expected.pop(session_id, None)  # heard: a later poll is expected anew
            kinds = Counter(str(event.kind) for event in outcome.events)
            for kind, count in kinds.items():
                self._recorder.events_received(kind, count)
        if isinstance(outcome, PollFailed) and outcome.failure.kind in _UPSTREAM_FAILURES:
            if self._upstream.failed(session_id, refused=refused):
                self._went_down(outcome.failure)
            if self._upstream.state is UpstreamState.DOWN:
                self._hold(session_id, poll, tell)  # the server is not there: wait
                return None
        elif isinstance(outcome, PollTimedOut) and outcome.reason == "client_timeout":
            # no answer at all, not even Parlant's 504: from several sessions, it is not there
            # (a lost flow answered "up" for a minute while sessions heard nothing)
            failure = PollFailure(FailureKind.NETWORK, "no answer within the poll's timeout")
            if self._upstream.failed(session_id, refused=False):
                self._went_down(failure)
        elif not isinstance(outcome, PollFailed):
            self._upstream.succeeded()
        return outcome

    # --- the upstream's health ------------------------------------------------------------

    def _went_down(self, failure: PollFailure) -> None:
        self._down_since = self._io.loop.time()
        _log.warning("upstream.down", url=self._base_url, detail=failure.detail)
        self._recorder.upstream_changed(UpstreamState.DOWN.value)
        self._recover_soon()

    def _recover_soon(self) -> None:
        """Start the recovery unless one runs (or everything is shut)."""
        if self._shut or (self._recovery is not None and not self._recovery.done()):
            return
        self._recovery = self._io.loop.create_task(self._recover())
        self._recovery.add_done_callback(self._recovery_ended)

    def _recovery_ended(self, task: asyncio.Task[None]) -> None:
        """A recovery that died of a bug is started again: held polls must never be left
        without one (they would wait for ever, Parlant back or not)."""
        if task.cancelled() or task.exception() is None:
            return
        _log.error("upstream.recovery_crashed", url=self._base_url, error=repr(task.exception()))
        if self._upstream.state is not UpstreamState.UP:
            self._io.loop.call_later(_RECOVERY_RESTART, self._recover_soon)

    async def _recover(self) -> None:
        """Probe until the server answers, then readmit the held polls at a bounded rate; from
        the probing again if it fails meanwhile."""
        heard = self._heard = asyncio.Event()
        while True:
            while self._upstream.state is UpstreamState.DOWN:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(heard.wait(), self._upstream.probe_delay())
                # once heard, forgotten: left set, a relapse to DOWN would probe without
                # pause for as long as Parlant stayed away
                heard.clear()
                if self._upstream.state is UpstreamState.DOWN and await self._answers():
                    self._probe_answered()
            _log.info("upstream.recovering", url=self._base_url, held=len(self._held))
            await self._readmit(self._readmission.rate(len(self._held)))
            if self._upstream.state is UpstreamState.RECOVERING:
                self._upstream.readmitted()
                self._recorder.upstream_changed(UpstreamState.UP.value)
                down = self._io.loop.time() - self._down_since
                _log.info("upstream.up", url=self._base_url, down_seconds=round(down, 3))
                return

    async def _readmit(self, rate: float) -> None:
        """Send the held polls again, `rate` a second: a few each tick of `_TICK` seconds (a
        sleep per poll would be rounded up to the loop's millisecond resolution, and slow),
        never making up for lost time in a burst: the rate is a bound."""
        loop = self._io.loop
        allowance, last = 0.0, loop.time()
        while self._held and self._upstream.state is UpstreamState.RECOVERING:
            now = loop.time()
            allowance = min(allowance + (now - last) * rate, max(1.0, rate * _TICK))
            last = now
            while allowance >= 1.0 and self._held:
                session_id = next(iter(self._held))
                poll, tell = self._held.pop(session_id)
                self._admit(session_id, poll, tell)
                allowance -= 1.0
            await asyncio.sleep(_TICK)

    async def _answers(self) -> bool:
        """Whether the server answers at all (`GET /healthz`: any status below 500), on a
        connection of its own: a kept one may be a flow the network lost."""
        probe = Connection(self._target)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                connect = _PROBE_CONNECT_TLS if self._target.ssl_context else _PROBE_CONNECT
                response = await probe.request(b"GET", "/healthz", connect_timeout=connect)
        except (WireError, TimeoutError):
            return False
        finally:
            probe.close()
        return response.status < 500

    async def _outcome(
        self, session_id: str, poll: StartPoll, *, waiting: bool
    ) -> tuple[Message, bool]:
        """The poll's outcome, and whether its connection was refused. It goes once the budget
        lets it, waiting longer than asked when many polls wait and need it to stay within
        the budget (`waiting` False: a read, which does not wait)."""
        generation = poll.generation
        await self._budget.take("list_events", background=not poll.for_turn)
        wait = self._budget.poll_wait(len(self._waiting), poll.wait_for_data) if waiting else 0
        path = (
            f"/sessions/{quote(session_id, safe='')}/events"
            f"?min_offset={poll.min_offset}&wait_for_data={wait}"
        )
        if waiting:  # liveness counts from here, not from the pause or the budget's wait
            sent = self._sent[session_id] = (generation, self._io.loop.time())
            expected = self._expected.get(session_id)
            if expected is not None and expected[0] == generation:
                self._io.loop.call_later(expected[1], self._check_alive, session_id, sent)
        try:
            async with asyncio.timeout(wait + self._timeout_margin):
                response = await self._connection(session_id).request(
                    b"GET", path, connect_timeout=CONNECT_TIMEOUT
                )
        except TimeoutError:
            return PollTimedOut(generation, "client_timeout"), False
        except WireSilenced:
            # its connection died of silence (keepalive, the user timeout): the path was lost,
            # maybe the server too; the same poll goes again at once on a new connection, whose
            # connect tells which. Counted as Parlant's failure, a mass flow loss took it for
            # down: every poll was held, then readmitted through the budget (113 s deaf at 500
            # sessions under the production budget, against 61 s before keepalive)
            return PollTimedOut(generation, "connection_lost"), False
        except WireBodyTooLarge as error:
            return PollFailed(generation, PollFailure(FailureKind.MALFORMED, str(error))), False
        except WireTlsError as error:
            failure = PollFailure(FailureKind.MISCONFIGURED, str(error))
            return PollFailed(generation, failure), False
        except WireError as error:
            failed = PollFailed(generation, PollFailure(FailureKind.NETWORK, str(error)))
            return failed, isinstance(error, WireConnectError)
        status = response.status
        if status == 200:
            try:
                events = await parse_events_soon(response.content)
            except pydantic.ValidationError as error:
                detail = (
                    f"200 with a body that is not a list of events ({error.error_count()} errors)"
                )
                failure = PollFailure(FailureKind.MALFORMED, detail, 200)
                return PollFailed(generation, failure), False
            if not events:
                return PollTimedOut(generation, "empty"), False
            if all(event.offset < poll.min_offset for event in events):
                return PollTimedOut(generation, "stale"), False  # a cache ignoring the query?
            return EventsReceived(generation, tuple(events)), False
        if status == 504:
            return PollTimedOut(generation, "gateway_timeout"), False
        detail = f"HTTP {status} {response.reason}".rstrip()
        if 300 <= status < 400:
            where = response.headers.get("location", "elsewhere")
            detail += (
                f" to {where}: this URL is not Parlant's API itself (redirects are not "
                "followed); point the supervisor at where it leads"
            )
        retry_after = retry_after_seconds(response.headers)
        if status == 429:  # every session's polls wait, not only this one's
            self._budget.refused("list_events", retry_after)
        failure = PollFailure(FailureKind.of_status(status), detail, status, retry_after)
        return PollFailed(generation, failure), False
