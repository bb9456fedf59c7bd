"""wait_until, metric: tests that wait for a state, not for a log line or a sleep."""

from __future__ import annotations

from collections.abc import Callable

from metrics import PREFIX
from supervisor._facade import SessionSupervisor
from supervisor.testing._settle import settle

__all__ = ["metric", "wait_until"]


def wait_until(
    supervisor: SessionSupervisor,
    condition: Callable[[], bool],
    *,
    timeout: float = 20.0,
    what: str | None = None,
    settled: bool = True,
) -> None:
    """Return once `condition()` is true, evaluating it now and after each observable change
    of `supervisor` (a session's snapshot, a metric, Parlant's health, its registry): no
    polling, no sleeping. `condition` reads state (`statistics()`, `metric()`,
    `supervisor.runtime.snapshot(id)`, even `sessions()`: it runs outside any lock).

    Then, unless `settled=False`, it `settle()`s: a snapshot is published before its message's
    effects run and a metric is recorded where it happens (a poll's outcome on the I/O thread,
    before its session is told), so a condition can be true while the actor that made it true
    is still at work (its backoff timer not yet set on a `FakeClock` a test is about to
    advance); settling lets every message sent so far finish.

    Wait on what only grows (counters: `metric(sup, "polls_total", outcome="network") >= 1`;
    `snapshot.consecutive_failures >= 2` while no poll can succeed) rather than on a passing
    state a session may leave again before the condition is read.

    Raises:
        AssertionError: `condition()` was still false after `timeout` seconds (`what`
            names it in the message, with the supervisor's statistics then).
    """
    if not supervisor.runtime.wait_until(condition, timeout):
        name = what or getattr(condition, "__name__", "the condition")
        raise AssertionError(
            f"{name} was not met within {timeout:g} s; statistics: {supervisor.statistics()}"
        )
    if settled:
        settle(supervisor)


def metric(supervisor: SessionSupervisor, name: str, **labels: str) -> float:
    """A sample of `supervisor`'s metrics now, 0.0 if it was never recorded: `name` with or
    without the `parlant_supervisor_` prefix (`metric(sup, "polls_total", outcome="network")`)."""
    full = name if name.startswith(f"{PREFIX}_") else f"{PREFIX}_{name}"
    value = supervisor.registry.get_sample_value(full, labels)
    return value if value is not None else 0.0
