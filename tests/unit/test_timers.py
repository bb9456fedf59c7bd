"""TimerQueue: a session actor's pending timers behind one clock timer."""

from __future__ import annotations

from actors._messages import TimerFired, TimerKind
from actors._timers import TimerQueue


def deadline(consumer_id: int) -> TimerFired:
    return TimerFired(TimerKind.DEADLINE, consumer_id)


def test_one_clock_timer_is_armed_for_the_earliest_and_the_rest_fire_in_order() -> None:
    queue = TimerQueue()
    assert queue.push(120.0, deadline(1)) == 120.0
    assert queue.push(130.0, deadline(2)) is None  # the one at 120 wakes the actor first
    assert queue.push(5.0, TimerFired(TimerKind.FAILURE_GRACE, 1)) == 5.0  # earlier: armed

    assert list(queue.due(5.0)) == [TimerFired(TimerKind.FAILURE_GRACE, 1)]
    assert queue.next_wake() is None  # the clock timer at 120 is still armed
    assert list(queue.due(130.0)) == [deadline(1), deadline(2)]
    assert queue.next_wake() is None
    assert len(queue) == 0


def test_the_deadlines_of_finished_consumers_go_once_they_are_most_of_the_heap() -> None:
    queue = TimerQueue()
    for consumer_id in range(1, 12):
        queue.push(100.0 + consumer_id, deadline(consumer_id))
    queue.push(600.0, TimerFired(TimerKind.IDLE, 0))
    live = {11}

    queue.drop_deadlines(live, len(live))  # 11 deadlines > 2 * 1 + 8

    assert len(queue) == 2
    assert list(queue.due(1_000.0)) == [deadline(11), TimerFired(TimerKind.IDLE, 0)]


def test_timers_pushed_while_firing_that_are_due_fire_too() -> None:
    queue = TimerQueue()
    queue.push(10.0, TimerFired(TimerKind.LINGER, 0))
    fired = []
    for timer in queue.due(10.0):
        fired.append(timer)
        if timer.kind is TimerKind.LINGER:
            queue.push(10.0, TimerFired(TimerKind.RETRY_POLL, 3))
    assert fired == [TimerFired(TimerKind.LINGER, 0), TimerFired(TimerKind.RETRY_POLL, 3)]


def test_a_fake_clock_fires_a_timer_armed_for_a_time_it_has_already_reached() -> None:
    """An actor arms its next clock timer once it has handled the last one, maybe after the
    `advance` that reached it ended: that timer must not wait for the next `advance`."""
    from supervisor.testing import FakeClock

    clock = FakeClock()
    fired: list[str] = []
    clock.call_at(10.0, lambda: clock.call_at(20.0, lambda: fired.append("armed inside")))
    clock.advance(30.0)
    clock.call_at(25.0, lambda: fired.append("armed after"))
    clock.call_at(40.0, lambda: fired.append("not yet"))

    assert fired == ["armed inside", "armed after"]
    assert clock.pending_timers == 1
