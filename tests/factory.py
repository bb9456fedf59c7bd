"""Build Parlant events shaped like the real server's (see tests/data/parlant-samples)."""

from __future__ import annotations

from typing import Any

from parlant.client.types import Event

from actors._events import PREAMBLE_TAG, event_list_adapter


def _event(
    offset: int,
    source: str,
    kind: str,
    trace_id: str,
    data: dict[str, Any],
    metadata: dict[str, Any] | None = None,
) -> Event:
    raw = {
        "id": f"ev{offset:08d}",
        "source": source,
        "kind": kind,
        "offset": offset,
        "creation_utc": "2026-11-26T05:28:12.621741Z",
        "trace_id": trace_id,
        "correlation_id": trace_id,
        "data": data,
        "metadata": metadata or {},
        "deleted": False,
    }
    return event_list_adapter.validate_python([raw])[0]


def customer(offset: int, text: str = "hello", *, key: str | None = None) -> Event:
    """A customer message; `key`: posted by this library with that key."""
    participant = {"id": "cust", "display_name": "customer"}
    data = {"message": text, "participant": participant, "flagged": False, "tags": []}
    metadata = {"parlant_supervisor": {"post": key}} if key is not None else None
    return _event(offset, "customer", "message", "<main>", data, metadata)


def status(offset: int, trace_id: str, name: str, stage: str | None = None) -> Event:
    inner: dict[str, Any] = {} if stage is None else {"stage": stage}
    return _event(offset, "ai_agent", "status", trace_id, {"status": name, "data": inner})


def agent(offset: int, trace_id: str, text: str, *, preamble: bool = False) -> Event:
    data: dict[str, Any] = {"message": text, "participant": {"id": "agent", "display_name": "A"}}
    if preamble:
        data["tags"] = [PREAMBLE_TAG]
    return _event(offset, "ai_agent", "message", trace_id, data)


def turn(start: int, trace_id: str, text: str) -> list[Event]:
    """acknowledged, typing, message, ready, completed ready at start .. start+4 (Parlant's
    engine writes an intermediate `ready` after each message it sends)."""
    return [
        status(start, trace_id, "acknowledged"),
        status(start + 1, trace_id, "typing"),
        agent(start + 2, trace_id, text),
        status(start + 3, trace_id, "ready"),
        status(start + 4, trace_id, "ready", "completed"),
    ]


def streamed(offset: int, trace_id: str, *chunks: str | None) -> Event:
    """A streamed agent message as a snapshot shows it: `chunks` so far (a trailing None is
    Parlant's terminator: the message is complete)."""
    text = "".join(chunk for chunk in chunks if chunk is not None)
    data: dict[str, Any] = {
        "message": text,
        "participant": {"id": "agent", "display_name": "A"},
        "chunks": list(chunks),
    }
    return _event(offset, "ai_agent", "message", trace_id, data)


def error(offset: int, trace_id: str) -> Event:
    """The `status: error` Parlant writes when its engine raised (with a traceback)."""
    traceback = "['Traceback (most recent call last):\\n', 'secret-token-XYZ\\n']"
    data = {"status": "error", "data": {"exception": traceback}}
    return _event(offset, "ai_agent", "status", trace_id, data)
