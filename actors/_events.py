"""Reading Parlant events: what kind of thing an event is, in the terms PARLANT.md measured.

Events are parlant-client's own `Event` model; nothing here copies or re-declares it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import pydantic
from parlant.client.types import Event

__all__ = [
    "PREAMBLE_TAG",
    "agent_status",
    "event_list_adapter",
    "is_acknowledgement",
    "is_cancellation",
    "is_completed_ready",
    "is_customer_message",
    "is_message",
    "is_preamble",
    "message_text",
    "parse_events",
]

PREAMBLE_TAG: Final = "__preamble__"
"""Tag the stock Parlant server puts on "One moment."-style messages sent before the answer."""

event_list_adapter: Final = pydantic.TypeAdapter(list[Event])


def parse_events(body: bytes | str) -> list[Event]:
    """Parse the body of `GET /sessions/{id}/events` with parlant-client's model.

    Raises:
        pydantic.ValidationError: the body is not a JSON list of events.
    """
    return event_list_adapter.validate_json(body)


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


def message_text(event: Event) -> str:
    """The text of a message event ('' for other kinds)."""
    text = _data(event).get("message")
    return text if isinstance(text, str) else ""
