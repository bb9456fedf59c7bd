"""A frozen snapshot of the supervisor's figures, read by metrics and tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Final, final

from actors import SessionSnapshot, SessionState

__all__ = ["StopSummary", "SupervisorStatistics"]

_UPSTREAM_SEVERITY: Final = ("up", "recovering", "down")


@final
@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """The supervisor's figures at one moment. Per-session figures come as sum and max only.

    Attributes:
        running: False once `stop()` has begun.
        sessions: Sessions with a live actor.
        sessions_by_state: How many sessions are in each state (every state present).
        sessions_started_total: Session actors started since the supervisor started.
        open_polls: Long-polls in flight now.
        buffered_events: Unclaimed events held in memory, summed over sessions.
        buffered_events_max: The most any one session holds.
        mailbox_depth: Messages waiting in session actors' mailboxes, summed.
        mailbox_depth_max: The deepest session mailbox.
        waiting_replies: Asks and streams waiting for their turn.
        readers: `events()` readers subscribed.
        evicted_events_total: Unclaimed events dropped from memory (still on the server).
        backpressure_pauses_total: Times a session paused polling for a slow consumer.
        failing_sessions: Sessions whose last poll failed (backing off).
        streaming_messages: Streamed messages Parlant is writing now (followed live).
        failed_turns_total: Agent turns Parlant failed (`status: error`), over live sessions.
        messages_abandoned_total: Streamed messages Parlant never finished (released as
            they stood), over live sessions.
        upstream: Parlant's health as the supervisor sees it: `up`, `down` (its polls are
            held, one probe asks), `recovering` (held polls readmitted at a bounded rate).
        held_polls: Polls held until Parlant is back.
        waiting_polls: Polls waiting on Parlant now (each costs it four store reads a second).
        rotating_polls: Sessions beyond the ceiling of waiting polls, read in rotation.
        poll_ceiling: The most polls kept waiting on Parlant at once (None: no ceiling).
        buffered_events_per_session: Each live session's unclaimed events (no order, no ids).
        mailbox_depth_per_session: Each live session's mailbox depth (no order, no ids).
    """

    running: bool
    sessions: int
    sessions_by_state: Mapping[SessionState, int]
    sessions_started_total: int
    open_polls: int
    buffered_events: int
    buffered_events_max: int
    mailbox_depth: int
    mailbox_depth_max: int
    waiting_replies: int
    readers: int
    evicted_events_total: int
    backpressure_pauses_total: int
    failing_sessions: int
    buffered_events_per_session: tuple[int, ...]
    mailbox_depth_per_session: tuple[int, ...]
    streaming_messages: int = 0
    failed_turns_total: int = 0
    messages_abandoned_total: int = 0
    upstream: str = "up"
    held_polls: int = 0
    waiting_polls: int = 0
    rotating_polls: int = 0
    poll_ceiling: int | None = None

    @property
    def poll_demand(self) -> int:
        """Sessions that want a poll now: waiting on Parlant or read in rotation."""
        return self.waiting_polls + self.rotating_polls

    @classmethod
    def collect(
        cls,
        *,
        running: bool,
        snapshots: Iterable[SessionSnapshot],
        mailbox_depths: Iterable[int],
        sessions_started_total: int,
        open_polls: int,
        upstream: str = "up",
        held_polls: int = 0,
        waiting_polls: int = 0,
        rotating_polls: int = 0,
        poll_ceiling: int | None = None,
    ) -> SupervisorStatistics:
        """Aggregate per-session snapshots."""
        by_state = dict.fromkeys(SessionState, 0)
        buffered: list[int] = []
        waiting = readers = evicted = pauses = failing = streaming = failed = abandoned = 0
        for snapshot in snapshots:
            by_state[snapshot.state] += 1
            buffered.append(snapshot.buffered)
            waiting += snapshot.waiting_replies
            readers += snapshot.readers
            evicted += snapshot.evicted_total
            pauses += snapshot.pauses_total
            failing += snapshot.consecutive_failures > 0
            streaming += snapshot.streaming
            failed += snapshot.failed_turns_total
            abandoned += snapshot.abandoned_total
        depths = list(mailbox_depths)
        return cls(
            running=running,
            sessions=len(buffered),
            sessions_by_state=MappingProxyType(by_state),
            sessions_started_total=sessions_started_total,
            open_polls=open_polls,
            buffered_events=sum(buffered),
            buffered_events_max=max(buffered, default=0),
            mailbox_depth=sum(depths),
            mailbox_depth_max=max(depths, default=0),
            waiting_replies=waiting,
            readers=readers,
            evicted_events_total=evicted,
            backpressure_pauses_total=pauses,
            failing_sessions=failing,
            buffered_events_per_session=tuple(buffered),
            mailbox_depth_per_session=tuple(depths),
            streaming_messages=streaming,
            failed_turns_total=failed,
            messages_abandoned_total=abandoned,
            upstream=upstream,
            held_polls=held_polls,
            waiting_polls=waiting_polls,
            rotating_polls=rotating_polls,
            poll_ceiling=poll_ceiling,
        )

    @classmethod
    def combine(cls, parts: Sequence[SupervisorStatistics]) -> SupervisorStatistics:
        """One set of figures for several supervisors (the shards of a `ShardedSupervisor`):
        running while all run, maxima of the maxima, sums of the rest."""
        by_state = dict.fromkeys(SessionState, 0)
        for part in parts:
            for state, count in part.sessions_by_state.items():
                by_state[state] += count
        return cls(
            running=all(part.running for part in parts),
            sessions=sum(part.sessions for part in parts),
            sessions_by_state=MappingProxyType(by_state),
            sessions_started_total=sum(part.sessions_started_total for part in parts),
            open_polls=sum(part.open_polls for part in parts),
            buffered_events=sum(part.buffered_events for part in parts),
            buffered_events_max=max((part.buffered_events_max for part in parts), default=0),
            mailbox_depth=sum(part.mailbox_depth for part in parts),
            mailbox_depth_max=max((part.mailbox_depth_max for part in parts), default=0),
            waiting_replies=sum(part.waiting_replies for part in parts),
            readers=sum(part.readers for part in parts),
            evicted_events_total=sum(part.evicted_events_total for part in parts),
            backpressure_pauses_total=sum(part.backpressure_pauses_total for part in parts),
            failing_sessions=sum(part.failing_sessions for part in parts),
            buffered_events_per_session=tuple(
                n for part in parts for n in part.buffered_events_per_session
            ),
            mailbox_depth_per_session=tuple(
                n for part in parts for n in part.mailbox_depth_per_session
            ),
            streaming_messages=sum(part.streaming_messages for part in parts),
            failed_turns_total=sum(part.failed_turns_total for part in parts),
            messages_abandoned_total=sum(part.messages_abandoned_total for part in parts),
            upstream=max(
                (part.upstream for part in parts), key=_UPSTREAM_SEVERITY.index, default="up"
            ),
            held_polls=sum(part.held_polls for part in parts),
            waiting_polls=sum(part.waiting_polls for part in parts),
            rotating_polls=sum(part.rotating_polls for part in parts),
            # each shard has its own ceiling (its own upstream connections): theirs add up
            poll_ceiling=(
                None
                if any(part.poll_ceiling is None for part in parts)
                else sum(part.poll_ceiling or 0 for part in parts)
            ),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable (a shard sends its figures to its driver), though its mapping is a
        read-only proxy, which is not."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        values["sessions_by_state"] = dict(self.sessions_by_state)
        return (_statistics_from, (values,))


def _statistics_from(values: dict[str, Any]) -> SupervisorStatistics:
    values["sessions_by_state"] = MappingProxyType(values["sessions_by_state"])
    return SupervisorStatistics(**values)


@final
@dataclass(frozen=True, slots=True)
class StopSummary:
    """What `stop()` did.

    Attributes:
        sessions_stopped: Session actors stopped.
        calls_failed: Asks, streams and readers that were failed with `SupervisorStopped`.
        deadline_met: True when everything stopped before the deadline; False means some
            thread was still running when `stop()` gave up waiting (it is a daemon thread).
    """

    sessions_stopped: int
    calls_failed: int
    deadline_met: bool
