"""Grouping a session's event log into agent turns (pure: no I/O, no clock).

The rules come from docs/PARLANT.md, measured on a real server:

- The customer's message carries no id the agent's events repeat. A turn is the trace that
  opens with an `acknowledged` status; it claims every customer message seen before it that
  no open turn has claimed.
- A turn completes at `ready` with `data.stage == "completed"`; other `ready`s are intermediate.
- A superseded turn emits `cancelled`: its claims go back to the pool, and the next turn answers
  them together with the newer message. The cancelled trace keeps emitting afterwards: those
  strays, like anything after a trace completed, belong to no turn.
- A turn whose engine raised ends with its completed `ready` and then `status: error` in the
  same trace (a few ms apart, usually in one poll batch): the turn failed. Parlant's engine
  writes an intermediate `ready` after every message it sends, so a completed turn whose last
  agent message is followed by one shows that it succeeded; any other may still be failed by
  an `error` just behind it (`shows_success`).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, final

from parlant.client.types import Event

from actors._events import (
    is_acknowledgement,
    is_agent_error,
    is_cancellation,
    is_completed_ready,
    is_customer_message,
    is_intermediate_ready,
    is_message,
    is_preamble,
)

__all__ = [
    "CustomerSpoke",
    "TurnCancelled",
    "TurnCompleted",
    "TurnFailed",
    "TurnProgressed",
    "TurnTracker",
    "TurnUpdate",
    "shows_success",
]

_CLOSED_TRACES_REMEMBERED: Final = 256
_OPEN_TURNS_LIMIT: Final = 64
_UNCLAIMED_LIMIT: Final = 1024


@final
@dataclass(frozen=True, slots=True)
class CustomerSpoke:
    """A customer message was seen at `event.offset`."""

    event: Event


@final
@dataclass(frozen=True, slots=True)
class TurnProgressed:
    """`event` belongs to the open turn `trace_id`, which currently claims `answers`.

    The turn's `acknowledged` is reported this way too (it is the turn's first event).
    """

    trace_id: str
    answers: tuple[int, ...]
    event: Event


@final
@dataclass(frozen=True, slots=True)
class TurnCancelled:
    """The turn was superseded; the messages it had claimed wait for a later turn."""

    trace_id: str
    answers: tuple[int, ...]
    event: Event


@final
@dataclass(frozen=True, slots=True)
class TurnCompleted:
    """The turn completed and answers `answers`; `events` is the whole turn, in order."""

    trace_id: str
    answers: tuple[int, ...]
    events: tuple[Event, ...]

    @property
    def event(self) -> Event:
        """The completing `ready`."""
        return self.events[-1]


@final
@dataclass(frozen=True, slots=True)
class TurnFailed:
    """Parlant's engine failed the turn (`status: error` in its trace, `event`): the messages in
    `answers` get no answer from it."""

    trace_id: str
    answers: tuple[int, ...]
    event: Event


TurnUpdate = CustomerSpoke | TurnProgressed | TurnCancelled | TurnCompleted | TurnFailed


def shows_success(events: Sequence[Event]) -> bool:
    """Whether a completed turn's own events show it succeeded: it sent an answer (an agent
    message that is not a preamble) and Parlant wrote an intermediate `ready` after the last
    one (its engine does so once a message is out). A turn without that may still be failed by
    a `status: error` behind its completed `ready`: no answer (an empty reply, or an engine
    that raised after its preamble or before anything), or a message the engine raised while
    writing (a stream the model provider cut)."""
    answered = confirmed = False
    for event in events:
        if is_message(event) and event.source != "customer" and not is_preamble(event):
            answered, confirmed = True, False
        elif is_intermediate_ready(event):
            confirmed = True
    return answered and confirmed


@dataclass(slots=True)
class _OpenTurn:
    trace_id: str
    answers: tuple[int, ...]
    events: list[Event] = field(default_factory=list)


@final
class TurnTracker:
    """Feeds on a session's events in offset order and reports which turn each belongs to.

    Memory is bounded: at most 64 open turns (a turn that never completes is forgotten, oldest
    first, and its claims return to the pool), 1,024 unclaimed customer messages and 256
    closed trace ids (with what the completed ones answered).
    """

    def __init__(self) -> None:
        self._unclaimed: list[int] = []
        self._open: OrderedDict[str, _OpenTurn] = OrderedDict()
        self._claimed_by: dict[int, str] = {}
        self._closed: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def feed(self, event: Event) -> TurnUpdate | None:
        """Account for the next event; returns what it means for turns, or None if nothing."""
        if is_customer_message(event):
            self._add_unclaimed(event.offset)
            return CustomerSpoke(event)
        trace_id = event.trace_id
        turn = self._open.get(trace_id)
        if turn is None:
            if trace_id in self._closed:
                answers = self._closed[trace_id]
                return TurnFailed(trace_id, answers, event) if is_agent_error(event) else None
            if not is_acknowledgement(event):
                return None
            turn = self._open_turn(trace_id)
        if is_agent_error(event):  # the engine raised before it wrote the completed ready
            self._close(turn, answered=True)
            return TurnFailed(trace_id, turn.answers, event)
        turn.events.append(event)
        if is_cancellation(event):
            self._close(turn, answered=False)
            return TurnCancelled(trace_id, turn.answers, event)
        if is_completed_ready(event):
            self._close(turn, answered=True)
            return TurnCompleted(trace_id, turn.answers, tuple(turn.events))
        return TurnProgressed(trace_id, turn.answers, event)

    def answers_of(self, trace_id: str) -> tuple[int, ...] | None:
        """The customer messages an open turn currently claims (None: no such open turn)."""
        turn = self._open.get(trace_id)
        return turn.answers if turn is not None else None

    def open_turn_answering(self, customer_offset: int) -> tuple[str, tuple[Event, ...]] | None:
        """The open turn that currently claims a customer message: (trace id, its events)."""
        trace_id = self._claimed_by.get(customer_offset)
        if trace_id is None:
            return None
        turn = self._open[trace_id]
        return trace_id, tuple(turn.events)

    def _add_unclaimed(self, offset: int) -> None:
        bisect.insort(self._unclaimed, offset)
        if len(self._unclaimed) > _UNCLAIMED_LIMIT:
            del self._unclaimed[0]

    def _open_turn(self, trace_id: str) -> _OpenTurn:
        turn = _OpenTurn(trace_id, tuple(self._unclaimed))
        self._unclaimed.clear()
        for offset in turn.answers:
            self._claimed_by[offset] = trace_id
        self._open[trace_id] = turn
        if len(self._open) > _OPEN_TURNS_LIMIT:
            _, oldest = self._open.popitem(last=False)
            self._close(oldest, answered=False)
        return turn

    def _close(self, turn: _OpenTurn, *, answered: bool) -> None:
        self._open.pop(turn.trace_id, None)
        for offset in turn.answers:
            self._claimed_by.pop(offset, None)
            if not answered:
                self._add_unclaimed(offset)
        # a cancelled turn answered nothing: an error in its trace fails no one
        self._closed[turn.trace_id] = turn.answers if answered else ()
        if len(self._closed) > _CLOSED_TRACES_REMEMBERED:
            self._closed.popitem(last=False)
