"""Reading Parlant events: what kind of thing an event is, in the terms docs/PARLANT.md measured.

Events are parlant-client's own `Event` model; nothing here copies or re-declares it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Final

import pydantic
from parlant.client.types import Event

LARGE_BODY: Final = 1024 * 1024
"""Bytes past which a body of events is parsed on a worker thread (`parse_events_soon`)."""

__all__ = [
    "LARGE_BODY",
    "PREAMBLE_TAG",
    "agent_status",
    "event_list_adapter",
    "is_acknowledgement",
    "is_agent_error",
    "is_cancellation",
    "is_completed_ready",
    "is_customer_message",
    "is_incomplete",
    "is_intermediate_ready",
    "is_message",
    "is_preamble",
    "message_text",
    "parse_event",
    "parse_events",
    "parse_events_gradually",
    "parse_events_soon",
    "stream_size",
]

PREAMBLE_TAG: Final = "__preamble__"
"""Tag the stock Parlant server puts on "One moment."-style messages sent before the answer."""

event_list_adapter: Final = pydantic.TypeAdapter(list[Event])
_event_adapter: Final = pydantic.TypeAdapter(Event)


def parse_events(body: bytes | str) -> list[Event]:
    """Parse the body of `GET /sessions/{id}/events` with parlant-client's model.

    Raises:
        pydantic.ValidationError: the body is not a JSON list of events.
    """
    return event_list_adapter.validate_json(body)


async def parse_events_soon(body: bytes) -> list[Event]:
    """`parse_events`, but a body past `LARGE_BODY` a piece at a time on a worker thread
    (`parse_events_gradually`): 100,000 events (~24 MB) took the I/O loop 1.3 s in one parse,
    on a thread or not (pydantic and `json` hold the GIL for a whole call), and another
    session's ask waited as long (issue 28)."""
    if len(body) <= LARGE_BODY:
        return parse_events(body)
    return await asyncio.to_thread(parse_events_gradually, body)


def parse_events_gradually(body: bytes) -> list[Event]:
    """`parse_events` in calls short enough for other threads to run between them: where each
    event's JSON starts and ends is found one event at a time, then `_BATCH` events at a time
    are parsed and validated by pydantic, as one parse would. The same events, and for a body
    that is not a list of events the same error (one parse of the whole body says it)."""
    try:
        text = body.decode("utf-8")
        events: list[Event] = []
        spans = _item_spans(text)
        for first in range(0, len(spans), _BATCH):
            batch = spans[first : first + _BATCH]
            events += event_list_adapter.validate_json("[" + text[batch[0][0] : batch[-1][1]] + "]")
    except (ValueError, RecursionError):  # pydantic.ValidationError is a ValueError
        return parse_events(body)
    return events


_BATCH: Final = 200
"""Events parsed and validated in one call (~2 ms of holding the GIL)."""


def _item_spans(text: str) -> list[tuple[int, int]]:
    """Where each item of a JSON array starts and ends (ValueError if it is not one)."""
    decoder = json.JSONDecoder()
    index = _blank_until(text, 0)
    if not text.startswith("[", index):
        raise ValueError("not a JSON array")
    spans: list[tuple[int, int]] = []
    index = _blank_until(text, index + 1)
    closed = text.startswith("]", index)
    while not closed:
        _, end = decoder.raw_decode(text, index)
        spans.append((index, end))
        index = _blank_until(text, end)
        if text.startswith("]", index):
            closed = True
        elif text.startswith(",", index):
            index = _blank_until(text, index + 1)
        else:
            raise ValueError("not a JSON array")
    if _blank_until(text, index + 1) != len(text):
        raise ValueError("text after the JSON array")
    return spans


def _blank_until(text: str, index: int) -> int:
    """The first index from `index` on that is not JSON whitespace."""
    while index < len(text) and text[index] in " \t\n\r":
        index += 1
    return index


def parse_event(body: bytes | str) -> Event:
    """Parse one event's JSON (a `read_event` answer, an SSE `data:` line).

    Raises:
        pydantic.ValidationError: the body is not an event.
    """
    return _event_adapter.validate_json(body)


def _data(event: Event) -> dict[str, Any]:
    return event.data if isinstance(event.data, dict) else {}


def agent_status(event: Event) -> str | None:
    """The `status` of an AI agent's status event (`acknowledged`, `ready`, ...), else None."""
    if event.kind != "status" or event.source != "ai_agent":
        return None
    status = _data(event).get("status")
    return status if isinstance(status, str) else None


def is_acknowledgement(event: Event) -> bool:
    """True for the `acknowledged` status that opens an agent turn (its trace id names the turn)."""
    return agent_status(event) == "acknowledged"


def is_cancellation(event: Event) -> bool:
    """True for the `cancelled` status of a turn superseded by a newer customer message."""
    return agent_status(event) == "cancelled"


def is_completed_ready(event: Event) -> bool:
    """True for the `ready` that completes a turn (`data.stage == "completed"`).

    The stock server also emits intermediate `ready` events with empty data; those do not
    complete anything.
    """
    if agent_status(event) != "ready":
        return False
    inner = _data(event).get("data")
    return isinstance(inner, dict) and inner.get("stage") == "completed"


def is_intermediate_ready(event: Event) -> bool:
    """True for a `ready` that completes nothing (Parlant's engine writes one after each message
    it sends, and after a preamble)."""
    return agent_status(event) == "ready" and not is_completed_ready(event)


def is_agent_error(event: Event) -> bool:
    """True for the `error` status Parlant writes when its engine raised while processing a turn
    (after the turn's completed `ready`). Its `data.exception` is a Python traceback: never show
    it to anyone."""
    return agent_status(event) == "error"


def is_message(event: Event) -> bool:
    """True for a `message` event from any source."""
    return event.kind == "message"


def is_customer_message(event: Event) -> bool:
    """True for a message the customer posted."""
    return event.kind == "message" and event.source == "customer"


def _tags(event: Event) -> Sequence[object]:
    tags = _data(event).get("tags")
    return tags if isinstance(tags, list) else ()


def is_preamble(event: Event) -> bool:
    """True for a preamble message (tagged `__preamble__`), sent before the real answer."""
    return is_message(event) and PREAMBLE_TAG in _tags(event)


def _chunks(event: Event) -> list[object] | None:
    chunks = _data(event).get("chunks")
    return chunks if isinstance(chunks, list) else None


def is_incomplete(event: Event) -> bool:
    """True for a streamed message Parlant is still writing: its `chunks` do not end with the
    `null` terminator yet (the event is updated in place, at the same offset, until they do).

    A block-mode message has no `chunks` and is complete as written.
    """
    if not is_message(event):
        return False
    chunks = _chunks(event)
    return chunks is not None and (not chunks or chunks[-1] is not None)


def stream_size(event: Event) -> int:
    """How far a streamed message has been written: its number of chunks, the terminator
    included (0 for a message that does not stream). Snapshots of one message only grow."""
    chunks = _chunks(event)
    return len(chunks) if chunks is not None else 0


def message_text(event: Event) -> str:
    """The text of a message event ('' for other kinds)."""
    text = _data(event).get("message")
    return text if isinstance(text, str) else ""
