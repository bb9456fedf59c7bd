"""Where each stopped session stopped (its `Resume`), kept in memory: bounded in size and time.

A reaped or given-up session's actor is gone, but its checkpoint is kept so that the next call
resumes it where it stopped. One entry per session ever seen would grow without end in a
long-running backend, so the memory forgets the least recently stored entry past `capacity`,
and any entry older than `ttl`. A session whose checkpoint was forgotten starts over like one
never seen (from offset 0, or from Parlant with durable checkpoints): its history may be seen
again by a new `events()` reader, never lost.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import final

from actors._messages import Resume

__all__ = ["CheckpointMemory"]


@final
class CheckpointMemory:
    """session id -> `Resume`, least recently stored first; safe to use from any thread."""

    def __init__(self, now: Callable[[], float], *, capacity: int, ttl: float | None) -> None:
        if capacity < 1:
            raise ValueError(f"checkpoint capacity must be >= 1, got {capacity}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"checkpoint ttl must be > 0 seconds or None, got {ttl}")
        self._now = now
        self._capacity = capacity
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[Resume, float]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, session_id: str, resume: Resume) -> None:
        """Store (or replace) where the session stopped; it becomes the most recent entry."""
        with self._lock:
            now = self._now()
            self._entries[session_id] = (resume, now)
            self._entries.move_to_end(session_id)
            self._expire(now)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def recall(self, session_id: str) -> Resume | None:
        """Where the session stopped, or None if it was never stored or was forgotten."""
        with self._lock:
            self._expire(self._now())
            entry = self._entries.get(session_id)
            return entry[0] if entry is not None else None

    def forget(self, session_id: str) -> None:
        """Drop the session's checkpoint, if any."""
        with self._lock:
            self._entries.pop(session_id, None)

    def __contains__(self, session_id: object) -> bool:
        return isinstance(session_id, str) and self.recall(session_id) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _expire(self, now: float) -> None:
        """Drop entries older than the ttl (oldest first: stop at the first young one)."""
        if self._ttl is None:
            return
        while self._entries:
            _, (_, stored_at) = next(iter(self._entries.items()))
            if now - stored_at < self._ttl:
                return
            self._entries.popitem(last=False)
