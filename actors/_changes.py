"""Changes: wakes whoever waits for a supervisor's observable state to change.

What can be observed of a supervisor (its sessions' snapshots on the board, its metrics,
Parlant's health as its poller sees it, its registry of sessions) changes on the dispatcher
threads, the Supervisor actor's thread and the I/O thread; each notifies this one object once
its change is complete. A waiter (`supervisor.testing.wait_until`) re-reads the state it
waits for at each notification: an event-driven wait on a state, where tests waited for the
log line that reports it (which made log names an API) or slept.

Notifying costs one attribute read while nobody waits, so the hot paths pay nothing for it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, cast, final

from actors._recorder import Recorder

__all__ = ["Changes", "notifying"]


@final
class Changes:
    """A condition notified after every observable change (see the module's doc)."""

    __slots__ = ("_changes", "_condition", "_waiting")

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._waiting = 0
        self._changes = 0  # notifications since the start, counted while someone waits

    def notify(self) -> None:
        """Something observable changed (call once the change is complete)."""
        # Read without the lock: a waiter counts itself in before it first looks at the state,
        # so a change complete before this read of 0 is one that waiter's first look sees.
        if self._waiting:
            with self._condition:
                self._changes += 1
                self._condition.notify_all()

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Block until `condition()` is true, evaluated now and after each change; False if
        `timeout` seconds passed first (real seconds: a caller's guard, see `Clock`).

        `condition` runs outside this object's lock, so it may read anything, even ask an
        actor that notifies as it answers.
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            self._waiting += 1
        try:
            while True:
                with self._condition:
                    seen = self._changes  # a change from here on is not missed below
                if condition():
                    return True
                with self._condition:
                    changed = self._condition.wait_for(
                        functools.partial(self._changed_since, seen), deadline - time.monotonic()
                    )
                if not changed:
                    return condition()  # the deadline passed: one last look
        finally:
            with self._condition:
                self._waiting -= 1

    def _changed_since(self, seen: int) -> bool:
        return self._changes != seen


def notifying(recorder: Recorder, changes: Changes) -> Recorder:
    """`recorder`, notifying `changes` after each record (a metric is observable state)."""
    return cast(Recorder, _Notifying(recorder, changes))


@final
class _Notifying:
    def __init__(self, recorder: Recorder, changes: Changes) -> None:
        self._recorder = recorder
        self._changes = changes

    def __getattr__(self, name: str) -> Any:
        record = getattr(self._recorder, name)
        notify = self._changes.notify

        def recorded(*args: Any, **kwargs: Any) -> None:
            record(*args, **kwargs)
            notify()

        self.__dict__[name] = recorded  # looked up once per method, not once per record
        return recorded
