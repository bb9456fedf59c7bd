"""FakeClock: time that moves only when a test says so."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from typing import final

__all__ = ["FakeClock"]


@final
class FakeClock:
    """A `Clock` for tests: `now()` stands still until `advance()`, which fires due timers.

    Timers fire in the thread that calls `advance`, in time order (ties in scheduling order).
    Pass it as `SessionSupervisor(url, clock=FakeClock())`; follow `advance` with `settle()`.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []

    def now(self) -> float:
        """The fake time."""
        with self._lock:
            return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Call `callback()` during the `advance` that reaches `when`; at once, on this thread,
        if time has already reached it (an `advance` that ended, or is under way past `when`,
        must not leave it for the next one)."""
        with self._lock:
            due = when <= self._now
            if not due:
                heapq.heappush(self._timers, (when, next(self._order), callback))
        if due:
            callback()

    @property
    def pending_timers(self) -> int:
        """Timers not fired yet."""
        with self._lock:
            return len(self._timers)

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing every timer that comes due."""
        if seconds < 0:
            raise ValueError(f"time only moves forward; got {seconds}")
        with self._lock:
            target = self._now + seconds
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > target:
                    self._now = target
                    return
                when, _, callback = heapq.heappop(self._timers)
                self._now = max(self._now, when)
            callback()
