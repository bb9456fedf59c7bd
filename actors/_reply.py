"""The answer to one customer message: the agent events of the turn that answered it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import final

from parlant.client.types import Event

from actors._events import is_message, is_preamble, message_text

__all__ = ["Reply", "ReplyMessage"]


@final
@dataclass(frozen=True, slots=True)
class ReplyMessage:
    """One agent message of a reply.

    Attributes:
        text: The message text.
        offset: The event's offset in the session.
        is_preamble: True for a preamble ("One moment.") sent before the real answer.
        event: The Parlant event itself.
    """

    text: str
    offset: int
    is_preamble: bool
    event: Event


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
            ReplyMessage(message_text(e), e.offset, is_preamble(e), e)
            for e in turn
            if is_message(e) and e.source != "customer"
        )
        return cls(session_id, trace_id, tuple(answers), turn, messages)

    @property
    def text(self) -> str:
        """The answer's text: the non-preamble messages joined by blank lines ('' if none)."""
        return "\n\n".join(m.text for m in self.messages if not m.is_preamble)
