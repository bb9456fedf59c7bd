"""The answer to one customer message: the agent events of the turn that answered it, and the
live text of its streamed messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import final

from parlant.client.types import Event

from actors._events import is_incomplete, is_message, is_preamble, message_text

__all__ = ["MessageDelta", "Reply", "ReplyMessage"]


@final
@dataclass(frozen=True, slots=True)
class MessageDelta:
    """A streamed agent message grew: what `stream()` yields between a turn's events while
    Parlant writes a message (agents with `output_mode=STREAM`).

    The message event itself follows once it is complete, at its offset, like any event; a
    block-mode message comes only as that event. Deltas of one message arrive in order, each
    at most once; `delta` pieces join to `text`.

    Attributes:
        event_id: The message event's id (Parlant updates it in place).
        offset: The message event's offset.
        trace_id: The turn's trace id.
        text: The message's text so far.
        delta: What this delta adds to the text ('' for the last one, when nothing was added).
        preamble: True for a preamble ("One moment.").
        done: True for the last delta: the message is complete (or Parlant abandoned it).
    """

    event_id: str
    offset: int
    trace_id: str
    text: str
    delta: str
    preamble: bool
    done: bool


@final
@dataclass(frozen=True, slots=True)
class ReplyMessage:
    """One agent message of a reply.

    Attributes:
        text: The message text.
        offset: The event's offset in the session.
        is_preamble: True for a preamble ("One moment.") sent before the real answer.
        event: The Parlant event itself.
        is_complete: False only for a streamed message Parlant never finished writing (its
            turn was cancelled or stalled mid-message): `text` is what was written.
    """

    text: str
    offset: int
    is_preamble: bool
    event: Event
    is_complete: bool = True


@final
@dataclass(frozen=True, slots=True)
class Reply:
    """The agent turn that answered a customer message, complete up to its final `ready`.

    A superseded turn answers nothing; the turn after it answers every message it covers, so
    two asks in one session may resolve with the same `Reply` (see `answers`).

    Attributes:
        session_id: The Parlant session.
        trace_id: The trace id shared by every event of the turn.
        answers: Offsets of the customer messages this turn answers, oldest first.
        events: Every event of the turn, from `acknowledged` to the completed `ready`.
        messages: The turn's agent messages (preambles included, marked), in order.
    """

    session_id: str
    trace_id: str
    answers: tuple[int, ...]
    events: tuple[Event, ...]
    messages: tuple[ReplyMessage, ...]

    @classmethod
    def of_turn(
        cls, session_id: str, trace_id: str, answers: Iterable[int], events: Iterable[Event]
    ) -> Reply:
        """Build a reply from the events of one turn."""
        turn = tuple(events)
        messages = tuple(
            ReplyMessage(message_text(e), e.offset, is_preamble(e), e, not is_incomplete(e))
            for e in turn
            if is_message(e) and e.source != "customer"
        )
        return cls(session_id, trace_id, tuple(answers), turn, messages)

    @property
    def text(self) -> str:
        """The answer's text: the non-preamble messages joined by blank lines ('' if none)."""
        return "\n\n".join(m.text for m in self.messages if not m.is_preamble)
