"""Consumers live on the caller's side of the actors: they survive the actor that feeds them.

A `_Channel` is a thread-safe queue that threads and asyncio tasks can both wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Generic, TypeVar, final

from actors import MessageDelta, Reply, SessionClosed, SupervisorError, SupervisorStopped
from actors.events import StreamItem
from actors.runtime import ConsumerKind, EventsConsumed, Message

__all__ = [
    "Ended",
    "EventConsumer",
    "ReplyConsumer",
    "TurnCursor",
    "new_post_key",
    "next_consumer_id",
]

T = TypeVar("T")

_ids: Final = itertools.count(1)
_QUIET_ENDINGS: Final = (SessionClosed, SupervisorStopped)


class _PostKeys:
    """Post keys unique across processes without a system call each: 96 random bits drawn
    once per process (and again in a forked child, which would otherwise repeat its parent's
    keys), then a counter. `uuid4()` read the OS's randomness for every ask, and gave up the
    GIL to do it: under load, a wait to take it back, on the asking thread."""

    def __init__(self) -> None:
        self._reseed()
        if hasattr(os, "register_at_fork"):  # (not on Windows, which does not fork)
            os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = os.urandom(12).hex()
        self._counter = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


_keys: Final = _PostKeys()


def new_post_key() -> str:
    """A key no other message of any session, from any process, is posted with."""
    return _keys.new()


def next_consumer_id() -> int:
    """A process-wide unique consumer id."""
    return next(_ids)


class Ended(Exception):
    """The channel is closed and drained (normal end of a stream)."""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@final
class _Channel(Generic[T]):
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._items: deque[T] = deque()
        self._closed = False
        self._error: SupervisorError | None = None
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, items: Iterable[T]) -> None:
        with self._condition:
            if self._closed:
                return
            self._items.extend(items)
            self._notify()

    def close(self, error: SupervisorError | None = None) -> None:
        with self._condition:
            if self._closed:
                return
            self._closed = True
            self._error = error
            self._notify()

    def _notify(self) -> None:
        self._condition.notify_all()
        for loop, future in self._async_waiters:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_wake, future)
        self._async_waiters.clear()

    def _take(self) -> T:
        """With the lock held and nothing to wait for: the next item, or the end."""
        if self._items:
            return self._items.popleft()
        if self._error is not None:
            raise self._error
        raise Ended

    def get(self, timeout: float | None = None) -> T:
        with self._condition:
            if not self._condition.wait_for(lambda: self._items or self._closed, timeout):
                raise TimeoutError
            return self._take()

    async def aget(self) -> T:
        while True:
            with self._condition:
                if self._items or self._closed:
                    return self._take()
                loop = asyncio.get_running_loop()
                future: asyncio.Future[None] = loop.create_future()
                self._async_waiters.append((loop, future))
            await future


@final
class TurnCursor:
    """What a caller was given of a session: the offset after its last event, and how much of
    each streamed message's text. Whoever feeds it again from an earlier point (an actor
    restarted from its resume point, a shard restarted from its checkpoint) gives events and
    text it already had: the cursor lets each event and each piece of text through once.

    One caller's; not thread-safe.
    """

    __slots__ = ("_texts", "next_offset")

    def __init__(self, since: int | None = None) -> None:
        self.next_offset = since
        """The first offset it was not given (None: no event yet, and no `since`)."""
        self._texts: dict[str, tuple[int, bool]] = {}  # message id -> (characters, done)

    def floor(self, offset: int) -> None:
        """No event below `offset` is due to the caller: a cursor that let no event through
        yet starts there (a reader resumed elsewhere takes up where its feed had reached)."""
        if self.next_offset is None:
            self.next_offset = offset

    def fresh(self, item: StreamItem) -> StreamItem | None:
        """`item` as the caller should see it now (a delta cut to the text it was not given),
        or None if it had all of it."""
        if self.next_offset is not None and item.offset < self.next_offset:
            return None
        if isinstance(item, MessageDelta):
            given, done = self._texts.get(item.event_id, (0, False))
            if len(item.text) < given or (len(item.text) == given and (done or not item.done)):
                return None  # nothing new (its last delta may add no text, only `done`)
            self._texts[item.event_id] = (len(item.text), item.done)
            piece = item.text[given:]
            return item if piece == item.delta else dataclasses.replace(item, delta=piece)
        self.next_offset = item.offset + 1
        self._texts.pop(item.id, None)
        return item


@final
class ReplyConsumer:
    """An `ask`: waits for one whole turn."""

    kind: Final = ConsumerKind.ASK

    def __init__(
        self, capacity: int, *, post_key: str | None = None, maybe_sent: bool = False
    ) -> None:
        self.consumer_id = next_consumer_id()
        self.capacity = capacity
        self.post_started = False
        self.post_key = post_key if post_key is not None else new_post_key()
        self.maybe_sent = maybe_sent
        self.asked_at: float | None = None
        self.next_offset: int | None = None  # an ask takes its turn whole, not by offsets
        self._channel: _Channel[Reply] = _Channel()

    @property
    def finished(self) -> bool:
        """True once resolved or failed."""
        return self._channel.closed

    def deliver(self, events: Sequence[StreamItem]) -> None:
        """Asks take the turn whole at `resolve`; nothing is delivered to them piecemeal."""

    def rebase(self) -> None:
        """Nothing to rebase: an ask keeps no flow accounting."""

    def resolve(self, reply: Reply) -> None:
        self._channel.put((reply,))
        self._channel.close()

    def fail(self, error: SupervisorError) -> None:
        self._channel.close(error)

    def wait(self, timeout: float | None) -> Reply:
        """Block until resolved; raises the failure, or TimeoutError after `timeout` seconds."""
        return self._channel.get(timeout)

    async def wait_async(self) -> Reply:
        """Wait until resolved; raises the failure."""
        return await self._channel.aget()


@final
class EventConsumer:
    """A stream (one turn, live) or a reader (every event, live).

    Tells its session how far the caller has read once the session may think it is half
    full and the queue has drained to half its capacity: a paused session resumes polling,
    and a reader that keeps up costs one message per `capacity / 2` events. Message deltas
    (streams only) do not count: each carries the whole text so far, so one that is dropped
    or repeated (a restarted actor follows the message again) costs nothing.
    """

    def __init__(
        self,
        kind: ConsumerKind,
        capacity: int,
        notify: Callable[[Message], None],
        *,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> None:
        self.consumer_id = next_consumer_id()
        self.kind = kind
        self.capacity = capacity
        self.post_started = False
        self.post_key = post_key if post_key is not None else new_post_key()
        self.maybe_sent = maybe_sent
        self.asked_at: float | None = None
        self._notify = notify
        self._channel: _Channel[StreamItem] = _Channel()
        self._cursor = TurnCursor()
        # flow accounting: the caller takes, its session's actor delivers, the supervisor
        # rebases for a successor; three threads, one lock
        self._flow = threading.Lock()
        self._received = 0
        self._taken = 0
        self._reported = 0
        self._low_water = capacity // 2

    @property
    def next_offset(self) -> int | None:
        """The first offset it has not received (None until it received one)."""
        return self._cursor.next_offset

    @property
    def finished(self) -> bool:
        """True once nothing more will be delivered (or its caller abandoned it)."""
        return self._channel.closed

    def abandon(self) -> None:
        """The caller stopped reading: deliver nothing more."""
        self._channel.close()

    def deliver(self, events: Sequence[StreamItem]) -> None:
        """Queue events; offsets below `next_offset` (a restarted actor's re-reads) are dropped,
        and so is message text already given (a delta keeps only what is new to the caller)."""
        fresh: list[StreamItem] = []
        received = duplicates = 0
        for item in events:
            new = self._cursor.fresh(item)
            if new is not None:
                fresh.append(new)
            if isinstance(item, MessageDelta):
                continue  # text: no flow accounting
            if new is not None:
                received += 1
            else:
                duplicates += 1
        with self._flow:
            # counted before the caller can take them
            self._received += received + duplicates
            if duplicates:
                # dropped duplicates count as consumed, or the session could stay paused
                self._taken += duplicates
                self._reported = taken = self._taken
        if fresh:
            self._channel.put(fresh)
        if duplicates:
            self._notify(EventsConsumed(self.consumer_id, taken))

    def rebase(self) -> None:
        """Start flow accounting afresh: a new actor (counting from zero) takes over."""
        with self._flow:
            self._received = self._taken = self._reported = 0

    def resolve(self, reply: Reply) -> None:
        self._channel.close()

    def fail(self, error: SupervisorError) -> None:
        # a reader's iteration simply ends when its session is closed or the supervisor stops
        quiet = self.kind is ConsumerKind.READER and isinstance(error, _QUIET_ENDINGS)
        self._channel.close(None if quiet else error)

    def get(self, timeout: float | None = None) -> StreamItem:
        """The next item; raises `Ended` at the end, the failure, or TimeoutError."""
        return self._took(self._channel.get(timeout))

    async def get_async(self) -> StreamItem:
        """The next item; raises `Ended` at the end, or the failure."""
        return self._took(await self._channel.aget())

    def _took(self, item: StreamItem) -> StreamItem:
        if isinstance(item, MessageDelta):
            return item
        with self._flow:
            self._taken += 1
            report = (
                self._received - self._reported >= max(1, self.capacity // 2)
                and len(self._channel) <= self._low_water
                and not self._channel.closed
            )
            if report:
                self._reported = taken = self._taken
        if report:
            self._notify(EventsConsumed(self.consumer_id, taken))
        return item
