"""The real server's captures (tests/data/parlant-samples), parsed with parlant-client's models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from parlant.client.types import Event

from actors._events import event_list_adapter

SAMPLES = Path(__file__).parent / "data" / "parlant-samples"


def raw(name: str) -> Any:
    """A capture file as JSON."""
    return json.loads((SAMPLES / f"{name}.json").read_text())


def events(name: str) -> list[Event]:
    """The `events` list of a capture, as parlant-client `Event`s."""
    return event_list_adapter.validate_python(raw(name)["events"])
