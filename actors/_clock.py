"""Time, injected: the clock of every decision a session or the Supervisor makes.

Two clocks, each for a reason. This one (`Clock`; `FakeClock` in tests) times what the
protocol decides: backoffs, restarts, idle TTLs, the grace for a failed turn, an ask's
deadline, the checkpoint interval; it is the only clock the core and the Supervisor actor
read, so a test moves all of them at once and never sleeps. The I/O loop's own time bounds
waits on the network (a long-poll's timeout, a request's retries and its backoff, the
request budget's window, a probe's delay): those guard real sockets against a real server,
and a fake clock cannot make a socket answer sooner; so does a caller's guard against an
actor that never answers (real seconds past its deadline). Nothing else reads the system
clock or sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, final

from actors._io import IOLoop

__all__ = ["Clock", "Deadline", "SystemClock"]


class Clock(Protocol):
    """A monotonic clock that can also call back at a given time.

    Timers cannot be cancelled: whoever receives one recognizes a stale one (by a generation
    number, or by the time it was for) and ignores it.
    """

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Call `callback()` (on some other thread, soon) once `now() >= when`."""
        ...


@final
class SystemClock:
    """The real monotonic clock; timers run on the supervisor's I/O loop."""

    def __init__(self, io: IOLoop) -> None:
        self._io = io

    def now(self) -> float:
        """`time.monotonic()`, the same scale as the asyncio loop's `time()`."""
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Schedule `callback` on the I/O loop at monotonic time `when`."""
        self._io.call_at(when, callback)


@final
class Deadline:
    """A real-time budget for joining threads and waiting on futures at shutdown.

    Shutdown waits on real threads, so it is measured on the real clock even when the
    sessions run on an injected one.
    """

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left, never below zero."""
        return max(0.0, self._end - time.monotonic())
