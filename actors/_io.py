"""One thread running one asyncio event loop: every session's HTTP and every timer."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar, final

__all__ = ["IOLoop"]

T = TypeVar("T")
_STOP_GRACE: Final = 5.0


@final
class IOLoop:
    """Owns the I/O thread. Thread-safe: every method may be called from any thread.

    The thread is a daemon so a crashed embedding app can still exit, but `stop()` joins it:
    after `stop()` no thread of ours is left.
    """

    def __init__(self, name: str = "parlant-supervisor-io") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._stopped = False
        # Calls from other threads wait here; the loop is woken once per batch, not per call:
        # waking it is a syscall that, contended for the GIL, cost ~0.2 ms a call when 3,000
        # sessions stopped at once. No lock (a contended one cost as much again at 10,000):
        # deque.append and popleft are atomic, and the flag may at worst schedule one drain
        # too many, never one too few (see `_drain`).
        self._calls: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._drain_scheduled = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (use only from coroutines and callbacks running on it)."""
        return self._loop

    @property
    def stopped(self) -> bool:
        """Whether `stop()` was called (what is submitted from then on never runs)."""
        return self._stopped

    @property
    def thread(self) -> threading.Thread:
        """The I/O thread."""
        return self._thread

    def start(self) -> None:
        """Start the thread and return once its loop runs."""
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._started.set)
        self._loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coroutine` on the loop; its result arrives in the returned future (cancelling
        the future cancels the coroutine). Started through `call_soon`, so a burst of submits
        wakes the loop once (`asyncio.run_coroutine_threadsafe` wakes it per call)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._loop.is_closed():
            coroutine.close()
            future.set_exception(RuntimeError("the I/O loop is stopped"))
            return future
        self.call_soon(self._start, coroutine, future)
        if self._loop.is_closed():  # closed while this was queued: it will never start
            self._cancel_unstarted()
        return future

    def _start(
        self, coroutine: Coroutine[Any, Any, T], future: concurrent.futures.Future[T]
    ) -> None:
        if future.cancelled():
            coroutine.close()
            return
        task = self._loop.create_task(coroutine)
        task.add_done_callback(lambda done: _settle(done, future))

        def cancel_task(settled: concurrent.futures.Future[T]) -> None:
            if settled.cancelled():
                self.call_soon(task.cancel)

        future.add_done_callback(cancel_task)

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Call `callback(*args)` on the loop as soon as possible, after every call made
        before it (dropped after `stop()`)."""
        self._calls.append((callback, args))
        if self._drain_scheduled:
            return  # a drain that has not started yet will take it
        self._drain_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # Cleared before taking anything: a call appended from here on either is taken below
        # or finds the flag clear and schedules the next drain.
        self._drain_scheduled = False
        calls = self._calls
        for _ in range(len(calls)):  # not more: the loop's other work must not starve
            callback, args = calls.popleft()
            try:
                callback(*args)
            except Exception as error:  # as the loop itself would: report it, go on
                self._loop.call_exception_handler(
                    {"message": f"exception in {callback!r}", "exception": error}
                )

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Call `callback()` on the loop at loop time `when` (`time.monotonic()` scale)."""
        self.call_soon(self._loop.call_at, when, callback)

    def stop(self, timeout: float = _STOP_GRACE) -> bool:
        """Cancel every task, stop the loop and join the thread. Returns False on timeout."""
        if self._stopped:
            return True
        self._stopped = True
        if not self._thread.is_alive():
            self._loop.close()
            self._cancel_unstarted()
            return True
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.submit(self._cancel_everything()).result(timeout)
        self.call_soon(self._loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self._loop.close()
        self._cancel_unstarted()
        return True

    def _cancel_unstarted(self) -> None:
        """Once the loop is closed: cancel the future of every coroutine submitted too late to
        start (whoever waits on it learns that it never ran, instead of waiting for ever)."""
        while True:
            try:
                callback, args = self._calls.popleft()
            except IndexError:
                return
            if callback == self._start:
                coroutine, future = args
                coroutine.close()
                future.cancel()

    async def _cancel_everything(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._loop.shutdown_asyncgens()


def _settle(task: asyncio.Task[T], future: concurrent.futures.Future[T]) -> None:
    """Hand a finished task's outcome to the future of the thread that submitted it."""
    if task.cancelled():
        future.cancel()
    elif not future.set_running_or_notify_cancel():  # cancelled by the submitter meanwhile
        return
    elif (error := task.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(task.result())
