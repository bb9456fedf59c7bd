"""A session actor's pending timers: a heap, behind one clock timer.

A clock timer cannot be cancelled, and each is a handful of objects (an asyncio `TimerHandle`,
its `Context`, a closure, the message) pending for its whole delay. One per `Schedule` left an
answered ask's deadline pending for its timeout and every idle spell's TTL timer for 600 s: a
busy session held two more per ask for the garbage collector to scan. Here each pending timer
is one tuple, one clock timer is armed for the earliest, and the deadlines of consumers that
finished are dropped once they are most of the heap.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Container, Iterator
from typing import Final, final

from actors._messages import TimerFired, TimerKind

__all__ = ["TimerQueue"]

_order: Final = itertools.count()  # timers due at once fire in the order they were scheduled


@final
class TimerQueue:
    """The timers a core scheduled and that have not fired, and the clock timers armed for
    them. Used by one actor, on its own thread."""

    __slots__ = ("_armed", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerFired]] = []
        self._armed: list[float] = []  # when each clock timer armed for them fires (a heap)

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, at: float, timer: TimerFired) -> float | None:
        """Keep `timer` until `at`; the time to arm a clock timer at, if none armed covers it."""
        heapq.heappush(self._heap, (at, next(_order), timer))
        return self.next_wake()

    def due(self, now: float) -> Iterator[TimerFired]:
        """A clock timer fired: every timer due at `now`, in order, each taken as it is
        yielded (timers pushed meanwhile that are due fire too)."""
        while self._armed and self._armed[0] <= now:
            heapq.heappop(self._armed)
        while self._heap and self._heap[0][0] <= now:
            yield heapq.heappop(self._heap)[2]

    def clear(self) -> None:
        """Forget every timer (their clock timers still fire, and find nothing due)."""
        self._heap.clear()
        self._armed.clear()

    def drop_deadlines(self, live: Container[int], count: int) -> None:
        """Forget the DEADLINE timers of consumers not in `live` (`count` of them live), once
        they can be most of the heap: amortized, a heap is rebuilt after as many finishes as it
        holds."""
        if len(self._heap) <= 2 * count + 8:
            return
        deadlines = sum(1 for entry in self._heap if entry[2].kind is TimerKind.DEADLINE)
        if deadlines <= 2 * count + 8:
            return  # mostly other timers (a stream's life, a retry): nothing much to drop
        self._heap = [
            entry
            for entry in self._heap
            if entry[2].kind is not TimerKind.DEADLINE or entry[2].generation in live
        ]
        heapq.heapify(self._heap)

    def next_wake(self) -> float | None:
        """The time to arm a clock timer at for the next timer, if no clock timer armed
        already wakes the actor first (after `due`, or a `push`)."""
        if not self._heap:
            return None
        at = self._heap[0][0]
        if self._armed and self._armed[0] <= at:
            return None  # a clock timer armed earlier wakes the actor first
        heapq.heappush(self._armed, at)
        return at
