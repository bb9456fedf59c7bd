"""The real server's captures (tests/data/parlant-samples), parsed with parlant-client's models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from parlant.client.types import Event

from actors._events import event_list_adapter, parse_event

SAMPLES = Path(__file__).parent / "data" / "parlant-samples"


def raw(name: str) -> Any:
    """A capture file as JSON."""
    return json.loads((SAMPLES / f"{name}.json").read_text())


def events(name: str) -> list[Event]:
    """The `events` list of a capture, as parlant-client `Event`s."""
    return event_list_adapter.validate_python(raw(name)["events"])


def poll_batches(name: str) -> list[list[Event]]:
    """The answers of a capture's long-polls (`polls`), one list of events per 200."""
    return [
        event_list_adapter.validate_python(poll["body"])
        for poll in raw(name)["polls"]
        if poll["status"] == 200
    ]


def sse_updates(name: str) -> list[Event]:
    """The snapshots a capture's `read_event?sse=true` stream sent (`read_event_sse`)."""
    lines = [entry["line"] for entry in raw(name)["read_event_sse"] if "line" in entry]
    return [parse_event(line.removeprefix("data: ")) for line in lines if line]
