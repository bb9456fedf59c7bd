"""Many pykka actors on a few threads: a dispatcher, as Akka runs actors.

`pykka.ThreadingActor` gives every actor a thread of its own. For one actor per Parlant
session that caps a process at a few thousand sessions: 10,000 threads cost ~0.3 ms each to
start and to join, and the kernel's scheduler pays for every idle one. A `DispatchedActor` is a
pykka actor like any other (an `ActorRef`, `tell`/`ask`, futures, `on_start`, `on_stop`,
`on_failure`, one message at a time, in order), but its messages are handled by one of a
dispatcher's few worker threads, taken in turns: an actor with mail is queued for a worker,
handles up to `throughput` messages, and yields the thread to the next actor.

Its actors are not in pykka's process-wide `ActorRegistry`, but in their dispatcher's
(`Dispatcher.stop_all`): pykka's is a list, whose unregister scans it (twice, under a lock) and
formats a debug message, so stopping 10,000 actors was quadratic; py-spy put it at a sixth of a
10,000-session `stop()`.

Handlers must not block (ours never do: I/O runs on the I/O loop and comes back as messages). A
blocked handler holds one worker, not the whole dispatcher.

pykka has no pluggable dispatcher, so this reuses its actor loop's pieces (`_actor_loop_setup`,
`_handle_receive`, `_handle_failure`, `_stop`, `Envelope`, `_ActorStop`): pykka 4.x, which
pyproject pins (`<5`); `tests/unit/test_dispatcher.py` fails first if they change.
"""

from __future__ import annotations

import collections
import queue
import sys
import threading
from typing import Any, Final, Self, final

import pykka
from pykka import messages
from pykka._envelope import Envelope

__all__ = ["DispatchedActor", "Dispatcher"]

_STOP_WORKER: Final = None


@final
class Dispatcher:
    """A few daemon threads that run the actors that have mail, each in turn.

    Args:
        threads: Worker threads.
        name: Prefix of the threads' names.
        throughput: Messages an actor handles before yielding its thread (Akka's default: 5;
            more favours throughput, fewer fairness).
    """

    def __init__(self, threads: int, *, name: str = "session-dispatcher", throughput: int = 16):
        if threads < 1:
            raise ValueError(f"a dispatcher needs at least 1 thread, got {threads}")
        self.throughput = throughput
        self._ready: queue.SimpleQueue[DispatchedActor | None] = queue.SimpleQueue()
        self._live = 0
        self._members: dict[str, pykka.ActorRef[Any]] = {}
        self._all_stopped = threading.Condition()
        self.threads = tuple(
            threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True)
            for n in range(threads)
        )
        for thread in self.threads:
            thread.start()

    @property
    def live(self) -> int:
        """Actors started on this dispatcher and not yet stopped."""
        return self._live

    def wait_all_stopped(self, timeout: float) -> bool:
        """Wait until every actor started here has stopped; False if `timeout` came first.

        Cheaper than a stop future per actor: stopping 10,000 actors through 10,000 futures
        (a `threading.Condition` each) took seconds of the Supervisor's thread.
        """
        with self._all_stopped:
            return self._all_stopped.wait_for(lambda: self._live == 0, timeout)

    def stop_all(self) -> None:
        """Tell every actor started here and not yet stopped to stop (what
        `pykka.ActorRegistry.stop_all` does for the actors in pykka's registry)."""
        with self._all_stopped:
            refs = list(self._members.values())
        for ref in refs:
            ref.stop(block=False)  # never raises: a dead actor's stop is answered at once

    def _actor_started(self, ref: pykka.ActorRef[Any]) -> None:
        with self._all_stopped:
            self._live += 1
            self._members[ref.actor_urn] = ref

    def _actor_stopped(self, ref: pykka.ActorRef[Any]) -> None:
        with self._all_stopped:
            self._live -= 1
            del self._members[ref.actor_urn]
            if self._live == 0:
                self._all_stopped.notify_all()

    def schedule(self, actor: DispatchedActor) -> None:
        """Queue `actor` for a worker (its inbox guarantees it is queued at most once)."""
        self._ready.put(actor)

    def shutdown(self, timeout: float) -> bool:
        """Stop the workers once the actors queued before are handled; True if all ended."""
        for _ in self.threads:
            self._ready.put(_STOP_WORKER)
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        return not any(thread.is_alive() for thread in self.threads)

    def _work(self) -> None:
        while (actor := self._ready.get()) is not _STOP_WORKER:
            actor._run_turn(self.throughput)


@final
class _Inbox:
    """An actor's mailbox that queues its actor for a worker when mail arrives for it idle."""

    def __init__(self) -> None:
        self._envelopes: collections.deque[Envelope[Any]] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._closed = False
        self._actor: DispatchedActor | None = None

    def attach(self, actor: DispatchedActor) -> None:
        with self._lock:
            self._actor = actor
            self._scheduled = True  # its first turn runs `on_start`
        actor.dispatcher.schedule(actor)

    def put(self, envelope: Envelope[Any], /) -> None:
        """Queue `envelope`.

        Raises:
            pykka.ActorDeadError: The actor stopped and its inbox was closed: the envelope
                would never be read (pykka's `tell` checks the actor is alive first, but it
                may stop between that check and this put).
        """
        with self._lock:
            if self._closed:
                raise pykka.ActorDeadError("the actor stopped first")
            self._envelopes.append(envelope)
            actor = self._actor
            if actor is None or self._scheduled:
                return
            self._scheduled = True
        actor.dispatcher.schedule(actor)

    def get(self) -> Envelope[Any]:
        with self._lock:
            return self._envelopes.popleft()

    def take(self) -> Envelope[Any] | None:
        """The next envelope, or None (and the actor is no longer scheduled) if there is none."""
        with self._lock:
            if self._envelopes:
                return self._envelopes.popleft()
            self._scheduled = False
            return None

    def yield_turn(self) -> bool:
        """After a turn: True if the actor has more mail (it stays scheduled)."""
        with self._lock:
            self._scheduled = bool(self._envelopes)
            return self._scheduled

    def close(self) -> list[Envelope[Any]]:
        """Refuse any further envelope; the ones queued and never taken, to be answered."""
        with self._lock:
            self._closed = True
            left = list(self._envelopes)
            self._envelopes.clear()
            return left

    def empty(self) -> bool:
        return not self._envelopes

    def qsize(self) -> int:
        return len(self._envelopes)


class DispatchedActor(pykka.Actor):
    """A pykka actor whose messages a `Dispatcher`'s threads handle (see the module's doc).

    Subclasses call `super().__init__(dispatcher)`.
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._started = False
        self._counted_out = False
        super().__init__()

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Self]:
        """Start an actor (pykka's `Actor.start`, with its dispatcher as its registry)."""
        actor = cls(*args, **kwargs)
        actor._start_actor_loop()
        return actor.actor_ref

    def _stop(self) -> None:
        """pykka's `Actor._stop`, without pykka's registry (the dispatcher's forgets the actor
        once its last turn ends)."""
        self.actor_stopped.set()
        try:
            self.on_stop()
        except Exception:
            self._handle_failure(*sys.exc_info())

    @staticmethod
    def _create_actor_inbox() -> _Inbox:
        return _Inbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        self.dispatcher._actor_started(self.actor_ref)
        self._inbox.attach(self)

    @property
    def _inbox(self) -> _Inbox:
        inbox = self.actor_inbox
        assert isinstance(inbox, _Inbox)
        return inbox

    def _run_turn(self, throughput: int) -> None:
        """Handle up to `throughput` messages (pykka's loop, a slice at a time)."""
        if not self._started:
            self._started = True
            self._actor_loop_setup()
        handled = 0
        while handled < throughput and not self.actor_stopped.is_set():
            envelope = self._inbox.take()
            if envelope is None:
                return
            self._handle_envelope(envelope)
            handled += 1
        if self.actor_stopped.is_set():
            self._actor_loop_teardown()
            if not self._counted_out:
                self._counted_out = True
                self.dispatcher._actor_stopped(self.actor_ref)
            return
        if self._inbox.yield_turn():
            self.dispatcher.schedule(self)

    def _handle_envelope(self, envelope: Envelope[Any]) -> None:
        """One message, as `pykka.Actor._actor_loop_running` handles it."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:  # KeyboardInterrupt, SystemExit: pykka stops every actor
            self._stop()
            pykka.ActorRegistry.stop_all()
            self.dispatcher.stop_all()

    def _actor_loop_teardown(self) -> None:
        """As pykka's, but the inbox is closed first, so a later `tell` raises `ActorDeadError`
        and no message is left unread and unanswered; told mail that raced with the stop is
        offered to `on_undelivered` (pykka drops it)."""
        for envelope in self._inbox.close():
            if envelope.reply_to is None:
                self.on_undelivered(envelope.message)
            elif isinstance(envelope.message, messages._ActorStop):
                envelope.reply_to.set(None)
            else:
                envelope.reply_to.set_exception(
                    exc_info=(
                        pykka.ActorDeadError,
                        pykka.ActorDeadError(f"{self.actor_ref} stopped first"),
                        None,
                    )
                )

    def on_undelivered(self, message: Any) -> None:
        """A message told to this actor that it stopped before handling (dropped by default,
        as pykka drops it). Runs on the stopping actor's thread, after `on_stop`."""
