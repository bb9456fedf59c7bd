"""A structlog processor that records log events and lets a test wait for one (no sleeping)."""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from typing import Any

import structlog


class LogWatcher:
    """Collects every log event; `wait_for` blocks until a matching one has been logged."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._condition = threading.Condition()

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        with self._condition:
            self.events.append({"log_level": method, **event_dict})
            self._condition.notify_all()
        raise structlog.DropEvent

    def matching(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        with self._condition:
            return [
                e
                for e in self.events
                if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_for(
        self, event: str, *, count: int = 1, timeout: float = 20.0, **fields: Any
    ) -> list[dict[str, Any]]:
        with self._condition:
            if not self._condition.wait_for(
                lambda: len(self.matching(event, **fields)) >= count, timeout
            ):
                seen = [
                    (e["event"], e.get("session_id"), e.get("kind"), e.get("state"))
                    for e in self.events[-20:]
                ]
                raise AssertionError(
                    f"no {count} x {event} {fields} within {timeout} s; saw {seen}"
                )
            return self.matching(event, **fields)
