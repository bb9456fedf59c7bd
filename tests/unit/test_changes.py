"""Changes: a wait for a state is woken by the change that makes it true, on any thread."""

from __future__ import annotations

import threading

from actors.runtime import Changes, notifying


class Calls:
    """A Recorder that keeps what it was told (only the methods these tests call)."""

    def __init__(self) -> None:
        self.retries: list[str] = []

    def post_retried(self, reason: str) -> None:
        self.retries.append(reason)


def test_a_condition_already_true_returns_at_once_and_a_false_one_at_its_timeout() -> None:
    changes = Changes()

    assert changes.wait_until(lambda: True, timeout=0)
    assert not changes.wait_until(lambda: False, timeout=0)


def test_a_waiter_on_another_thread_is_woken_by_the_notification_of_its_change() -> None:
    changes = Changes()
    state = {"down": False}
    counted_in = threading.Event()
    answers: list[bool] = []

    def condition() -> bool:
        counted_in.set()  # evaluated under the lock, after the waiter counted itself in
        return state["down"]

    # waits far longer than the join below: only the notification can end it in time
    waiter = threading.Thread(
        target=lambda: answers.append(changes.wait_until(condition, 600)), daemon=True
    )
    waiter.start()
    assert counted_in.wait(30)
    state["down"] = True
    changes.notify()
    waiter.join(30)

    assert answers == [True]


def test_a_notifying_recorder_records_then_wakes_the_waiters() -> None:
    changes = Changes()
    calls = Calls()
    recorder = notifying(calls, changes)  # type: ignore[arg-type]
    counted_in = threading.Event()
    answers: list[bool] = []

    def retried() -> bool:
        counted_in.set()
        return calls.retries == ["refused"]

    waiter = threading.Thread(
        target=lambda: answers.append(changes.wait_until(retried, 600)), daemon=True
    )
    waiter.start()
    assert counted_in.wait(30)
    recorder.post_retried("refused")
    waiter.join(30)

    assert answers == [True]
    assert calls.retries == ["refused"]


def test_a_condition_may_wait_on_a_thread_that_notifies_as_it_answers() -> None:
    changes = Changes()
    evaluations = [0]

    def asks_an_actor() -> bool:  # like sessions(): the actor notifies before it answers
        evaluations[0] += 1
        actor = threading.Thread(target=changes.notify, daemon=True)
        actor.start()
        actor.join(30)
        return not actor.is_alive() and evaluations[0] >= 2

    assert changes.wait_until(asks_an_actor, 600)
