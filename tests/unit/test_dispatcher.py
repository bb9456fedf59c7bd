"""DispatchedActor: pykka's actor semantics, on a dispatcher's few threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from actors._dispatcher import DispatchedActor, Dispatcher


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    running = Dispatcher(2, throughput=3)
    yield running
    running.stop_all()
    assert running.shutdown(10)


def actor_of(ref: pykka.ActorRef[Any]) -> Any:
    """The actor behind `ref` (a test may look inside)."""
    return ref._actor_weakref()


class Recorder(DispatchedActor):
    """Records what it handles, where, and whether two threads ever ran it at once."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        super().__init__(dispatcher)
        self.seen: list[Any] = []
        self.threads: set[str] = set()
        self.overlapped = False
        self._busy = threading.Lock()
        self.stopped = False
        self.failed: BaseException | None = None
        self.gate = threading.Event()
        self.undelivered: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if not self._busy.acquire(blocking=False):
            self.overlapped = True
            return None
        try:
            self.threads.add(threading.current_thread().name)
            if message == "block":
                self.gate.wait(10)
                return None
            if message == "boom":
                raise RuntimeError("boom")
            if message == "report":
                return (list(self.seen), self.overlapped, set(self.threads))
            self.seen.append(message)
            return None
        finally:
            self._busy.release()

    def on_stop(self) -> None:
        self.stopped = True

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.failed = exception_value

    def on_undelivered(self, message: Any) -> None:
        self.undelivered.append(message)


def test_a_thousand_actors_each_handle_their_mail_in_order_on_two_threads(
    dispatcher: Dispatcher,
) -> None:
    refs = [Recorder.start(dispatcher) for _ in range(1000)]
    for n in range(10):
        for ref in refs:
            ref.tell(n)

    reports = [ref.ask("report") for ref in refs]

    assert all(seen == list(range(10)) for seen, _, _ in reports)
    assert not any(overlapped for _, overlapped, _ in reports)
    used = set().union(*(threads for _, _, threads in reports))
    assert used <= {thread.name for thread in dispatcher.threads}
    assert len(dispatcher.threads) == 2


def test_stop_runs_on_stop_and_later_asks_fail_as_for_any_dead_actor(
    dispatcher: Dispatcher,
) -> None:
    ref = Recorder.start(dispatcher)
    actor = actor_of(ref)

    ref.stop()

    assert actor.stopped
    assert not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("report")


def test_mail_queued_behind_a_stop_is_answered_not_left_waiting(dispatcher: Dispatcher) -> None:
    ref = Recorder.start(dispatcher)
    ref.tell("block")  # holds the actor until the gate opens
    stopping = ref.stop(block=False)
    behind = ref.ask("report", block=False)
    actor_of(ref).gate.set()

    stopping.get(timeout=10)
    with pytest.raises(pykka.ActorDeadError):
        behind.get(timeout=10)


def test_told_mail_behind_a_stop_is_offered_back_and_a_later_tell_raises(
    dispatcher: Dispatcher,
) -> None:
    """pykka drops told mail it finds at its end; a tell between its liveness check and the
    put would be lost. Ours is handed to `on_undelivered`, and the closed inbox refuses more."""
    ref = Recorder.start(dispatcher)
    actor = actor_of(ref)
    ref.tell("block")
    stopping = ref.stop(block=False)
    ref.tell("behind the stop")
    actor.gate.set()
    stopping.get(timeout=10)

    assert actor.undelivered == ["behind the stop"]
    assert actor.seen == []
    with pytest.raises(pykka.ActorDeadError):
        actor.actor_inbox.put(pykka._envelope.Envelope("after the close"))
    assert actor.undelivered == ["behind the stop"]


def test_a_crash_on_a_tell_runs_on_failure_and_stops_only_that_actor(
    dispatcher: Dispatcher,
) -> None:
    crashing, healthy = Recorder.start(dispatcher), Recorder.start(dispatcher)
    actor = actor_of(crashing)

    crashing.tell("boom")
    healthy.tell("still here")

    assert healthy.ask("report")[0] == ["still here"]
    actor.actor_stopped.wait(10)
    assert isinstance(actor.failed, RuntimeError)
    assert not crashing.is_alive()


def test_a_crash_on_an_ask_goes_to_the_caller_and_the_actor_lives_on(
    dispatcher: Dispatcher,
) -> None:
    ref = Recorder.start(dispatcher)

    with pytest.raises(RuntimeError, match="boom"):
        ref.ask("boom")

    assert ref.is_alive()
    assert ref.ask("report")[0] == []


def test_shutdown_ends_every_worker_thread() -> None:
    dispatcher = Dispatcher(3)
    ref = Recorder.start(dispatcher)
    ref.stop()

    assert dispatcher.shutdown(10)
    assert not any(thread.is_alive() for thread in dispatcher.threads)


def test_a_dispatcher_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least 1 thread"):
        Dispatcher(0)


def test_its_actors_are_in_the_dispatchers_registry_not_pykkas(dispatcher: Dispatcher) -> None:
    refs = [Recorder.start(dispatcher) for _ in range(3)]
    actors = [actor_of(ref) for ref in refs]
    refs[0].stop()

    assert not set(pykka.ActorRegistry.get_all()) & set(refs)
    dispatcher.stop_all()
    assert dispatcher.wait_all_stopped(10)
    assert all(actor.stopped for actor in actors)
    assert dispatcher.live == 0
