"""The I/O loop's thread: what a coroutine submitted around its stop becomes."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from actors._io import IOLoop


async def _answer() -> int:
    return 42


def test_a_coroutine_submitted_to_a_running_loop_runs() -> None:
    io = IOLoop()
    io.start()
    try:
        assert io.submit(_answer()).result(timeout=10) == 42
    finally:
        assert io.stop()


def test_a_coroutine_submitted_after_the_stop_fails_at_once() -> None:
    io = IOLoop()
    io.start()
    assert io.stop()

    with pytest.raises(RuntimeError, match="stopped"):
        io.submit(_answer()).result(timeout=0)


def test_a_start_still_queued_when_the_loop_closes_is_cancelled_not_left_pending() -> None:
    """A submit that races with the stop's last drain queues its start on a loop that will
    never drain it again: before, its future stayed pending and its caller waited for ever."""
    io = IOLoop()
    io.start()
    assert io.stop()
    future: concurrent.futures.Future[int] = concurrent.futures.Future()
    coroutine = _answer()
    io._calls.append((io._start, (coroutine, future)))  # what the race leaves behind

    io._cancel_unstarted()

    assert future.cancelled()
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning
    assert not io._calls


def test_a_call_through_a_stopped_runtime_is_supervisor_stopped_sync_and_async() -> None:
    from supervisor import SessionSupervisor, SupervisorStopped

    sup = SessionSupervisor("http://127.0.0.1:9")  # nothing listens: nothing is sent
    sup.stop()

    with pytest.raises(SupervisorStopped):
        sup.runtime.call(_answer())
    with pytest.raises(SupervisorStopped):
        asyncio.run(sup.runtime.acall(_answer()))
