"""The answer's text as it is generated, from a stream's items (what `stream_text` yields)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import final

from actors import MessageDelta
from actors.events import StreamItem, is_message, is_preamble, message_text

__all__ = ["AnswerText", "answer_text", "answer_text_async"]


@final
class AnswerText:
    """Turns the items of one turn's stream into text pieces that join to `Reply.text`: the
    turn's agent messages but preambles, separated by a blank line, each as it grows (a
    streamed message delta by delta, a block-mode message whole)."""

    def __init__(self) -> None:
        self._given: dict[str, int] = {}  # message id -> characters of it given so far

    def piece(self, item: StreamItem) -> str:
        """What `item` adds to the answer's text ('' if nothing)."""
        if isinstance(item, MessageDelta):
            return "" if item.preamble else self._grow(item.event_id, item.text)
        if is_message(item) and item.source != "customer" and not is_preamble(item):
            return self._grow(item.id, message_text(item))
        return ""

    def _grow(self, message_id: str, text: str) -> str:
        given = self._given.get(message_id)
        separator = "\n\n" if given is None and self._given else ""
        self._given[message_id] = len(text)
        return separator + text[given or 0 :]


def answer_text(items: Iterator[StreamItem]) -> Iterator[str]:
    """The answer's text pieces from a stream's items (closing the stream when closed)."""
    assembler = AnswerText()
    try:
        for item in items:
            piece = assembler.piece(item)
            if piece:
                yield piece
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


async def answer_text_async(items: AsyncIterator[StreamItem]) -> AsyncIterator[str]:
    """Asyncio twin of `answer_text`."""
    assembler = AnswerText()
    try:
        async for item in items:
            piece = assembler.piece(item)
            if piece:
                yield piece
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
