"""RestartTracker: restart intensity within a window, with growing jittered delays."""

from __future__ import annotations

import random

from actors._backoff import Backoff
from actors._restarts import RestartPolicy, RestartTracker


def test_restarts_up_to_the_limit_then_gives_up() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=3, restart_window=60), random.Random(1))
    decisions = [tracker.crashed(now) for now in (0.0, 1.0, 2.0, 3.0)]
    assert [d.restart_at is not None for d in decisions] == [True, True, True, False]
    assert decisions[-1].restarts_in_window == 3


def test_restarts_older_than_the_window_no_longer_count() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=2, restart_window=10), random.Random(1))
    assert tracker.crashed(0.0).restart_at is not None
    assert tracker.crashed(1.0).restart_at is not None
    assert tracker.crashed(5.0).restart_at is None
    assert tracker.crashed(11.5).restart_at is not None  # the crashes at 0 and 1 aged out


def test_delays_are_jittered_and_grow_with_recent_restarts() -> None:
    policy = RestartPolicy(max_restarts=50, restart_window=1e9, backoff=Backoff(base=1, cap=8))
    ceilings = [1, 2, 4, 8, 8, 8]
    for seed in range(20):
        tracker = RestartTracker(policy, random.Random(seed))
        for attempt, ceiling in enumerate(ceilings):
            decision = tracker.crashed(100.0)
            assert decision.restart_at is not None
            assert 100.0 <= decision.restart_at <= 100.0 + ceiling, attempt


def test_zero_restarts_gives_up_at_the_first_crash() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=0), random.Random(1))
    assert tracker.crashed(0.0).restart_at is None
