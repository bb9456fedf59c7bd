"""supervisor.parlant_module's listener against an in-memory session store: the same answers as
Parlant's `PollingSessionListener`, woken by the store's writes (no real server: those tests are
in tests/realserver/test_parlant_module.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from tests.helpers import require_parlant

require_parlant()

from parlant.core.async_utils import Timeout  # noqa: E402
from parlant.core.common import ItemNotFoundError, UniqueId  # noqa: E402
from parlant.core.sessions import EventKind, EventSource, SessionListener  # noqa: E402

from supervisor import parlant_module  # noqa: E402
from supervisor.parlant_module import (  # noqa: E402
    IncompatibleParlant,
    NotifyingSessionListener,
    check_parlant,
)

T = TypeVar("T")
SESSION: Any = "s1"


@dataclass
class Written:
    id: str
    offset: int
    kind: EventKind
    source: EventSource
    trace_id: str
    data: Any
    deleted: bool = False


@dataclass
class Store:
    """The part of Parlant's `SessionStore` the listener uses, in memory."""

    sessions: set[str] = field(default_factory=lambda: {SESSION})
    events: dict[str, list[Written]] = field(default_factory=lambda: {SESSION: []})
    reads: int = 0

    async def read_session(self, session_id: str) -> object:
        self.reads += 1
        if session_id not in self.sessions:
            raise ItemNotFoundError(item_id=UniqueId(session_id), message="Session not found")
        return object()

    async def list_events(
        self,
        session_id: str,
        source: EventSource | None = None,
        trace_id: str | None = None,
        kinds: Sequence[EventKind] = (),
        min_offset: int | None = None,
        exclude_deleted: bool = True,
    ) -> list[Written]:
        self.reads += 1
        if session_id not in self.sessions:
            raise ItemNotFoundError(item_id=UniqueId(session_id), message="Session not found")
        return [
            e
            for e in self.events[session_id]
            if (source is None or e.source == source)
            and (trace_id is None or e.trace_id == trace_id)
            and (not kinds or e.kind in kinds)
            and (not min_offset or e.offset >= min_offset)
            and not (exclude_deleted and e.deleted)
        ]

    async def read_event(self, session_id: str, event_id: str) -> Written:
        self.reads += 1
        for event in self.events[session_id]:
            if event.id == event_id:
                return event
        raise ItemNotFoundError(item_id=UniqueId(event_id), message="Event not found")

    async def create_event(
        self,
        session_id: str,
        source: EventSource,
        kind: EventKind,
        trace_id: str,
        data: Any,
        metadata: Any = None,
        creation_utc: Any = None,
    ) -> Written:
        events = self.events[session_id]
        event = Written(f"e{len(events)}", len(events), kind, source, trace_id, data)
        events.append(event)
        return event

    async def update_event(self, session_id: str, event_id: str, params: Any) -> Written:
        event = await self.read_event(session_id, event_id)
        event.data = params["data"]
        return event

    async def delete_event(self, event_id: str) -> None:
        for events in self.events.values():
            for event in events:
                if event.id == event_id:
                    event.deleted = True

    async def delete_session(self, session_id: str) -> None:
        self.sessions.discard(session_id)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def after_a_turn(action: Coroutine[Any, Any, Any]) -> None:
    """Let the waiter start waiting (one turn of the loop), then act."""
    await asyncio.sleep(0)
    await action


def message(store: Store, source: EventSource = EventSource.HUMAN_AGENT) -> Any:
    return store.create_event(SESSION, source, EventKind.MESSAGE, "<main>", {"message": "hi"})


def test_a_waiting_poll_is_woken_by_the_write_it_waits_for() -> None:
    async def scenario() -> bool:
        store = Store()
        listener = NotifyingSessionListener(store)  # type: ignore[arg-type]
        waiting = asyncio.ensure_future(
            listener.wait_for_more_events(SESSION, min_offset=0, timeout=Timeout(30))
        )
        await after_a_turn(message(store))
        return await waiting

    assert run(scenario())


def test_a_poll_costs_no_read_while_nothing_is_written() -> None:
    """Parlant's own listener would read the store 4 times in this second; this one reads
    the session and its events when the wait starts, and the events once more at its end."""

    async def scenario() -> tuple[bool, int]:
        store = Store()
        listener = NotifyingSessionListener(store)  # type: ignore[arg-type]
        found = await listener.wait_for_more_events(SESSION, timeout=Timeout(1.0))
        return found, store.reads

    assert run(scenario()) == (False, 3)


@pytest.mark.parametrize(
    ("filters", "written"),
    [
        ({"kinds": [EventKind.STATUS]}, "a message"),
        ({"source": EventSource.CUSTOMER}, "a human agent's"),
        ({"min_offset": 1}, "offset 0"),
        ({"trace_id": "other"}, "another trace's"),
    ],
)
def test_a_write_the_filters_exclude_leaves_the_poll_waiting_to_its_timeout(
    filters: dict[str, Any], written: str
) -> None:
    async def scenario() -> bool:
        store = Store()
        listener = NotifyingSessionListener(store)  # type: ignore[arg-type]
        waiting = asyncio.ensure_future(
            listener.wait_for_more_events(SESSION, timeout=Timeout(0.2), **filters)
        )
        await after_a_turn(message(store))
        return await waiting

    assert run(scenario()) is False, written


def test_an_unknown_session_raises_at_once_and_a_deleted_one_as_soon_as_it_is_deleted() -> None:
    async def scenario() -> None:
        store = Store()
        listener = NotifyingSessionListener(store)  # type: ignore[arg-type]
        with pytest.raises(ItemNotFoundError):
            await listener.wait_for_more_events("nope", timeout=Timeout(30))
        waiting = asyncio.ensure_future(listener.wait_for_more_events(SESSION, timeout=Timeout(30)))
        await after_a_turn(store.delete_session(SESSION))
        with pytest.raises(ItemNotFoundError):
            await waiting

    run(scenario())


def test_a_streamed_message_is_waited_for_until_complete_and_its_chunks_as_they_grow() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        store = Store()
        listener = NotifyingSessionListener(store)  # type: ignore[arg-type]
        event = await store.create_event(
            SESSION, EventSource.AI_AGENT, EventKind.MESSAGE, "t", {"chunks": ["Hel"]}
        )
        grown = asyncio.ensure_future(
            listener.wait_for_new_streaming_chunks(SESSION, event.id, 1, timeout=Timeout(30))
        )
        complete = asyncio.ensure_future(
            listener.wait_for_event_completion(SESSION, event.id, timeout=Timeout(30))
        )
        await after_a_turn(
            store.update_event(SESSION, event.id, {"data": {"chunks": ["Hel", "lo"]}})
        )
        first = await grown
        assert not complete.done()
        await store.update_event(SESSION, event.id, {"data": {"chunks": ["Hel", "lo", None]}})
        plain = await store.create_event(
            SESSION, EventSource.AI_AGENT, EventKind.MESSAGE, "t", {"message": "whole"}
        )
        at_once = await listener.wait_for_event_completion(SESSION, plain.id, timeout=Timeout(30))
        return first, await complete, at_once

    assert run(scenario()) == (True, True, True)


def test_waiters_of_other_sessions_are_not_woken_and_nothing_is_kept_after_them() -> None:
    async def scenario() -> None:
        store = Store(sessions={SESSION, "s2"}, events={SESSION: [], "s2": []})
        listener = NotifyingSessionListener(store)  # type: ignore[arg-type]
        other = asyncio.ensure_future(listener.wait_for_more_events("s2", timeout=Timeout(0.2)))
        await after_a_turn(message(store))
        assert await other is False
        assert listener._waiting == {}

    run(scenario())


def test_a_deleted_event_wakes_every_waiter_to_look_again() -> None:
    async def scenario() -> None:
        store = Store()
        listener = NotifyingSessionListener(store)  # type: ignore[arg-type]
        event = await message(store)
        waiting = asyncio.ensure_future(
            listener.wait_for_event_completion(SESSION, event.id, timeout=Timeout(30))
        )
        await after_a_turn(store.delete_event(event.id))
        assert await waiting  # a plain message: complete (and read again after the delete)

    run(scenario())


def test_with_a_recheck_period_a_write_the_store_did_not_report_is_still_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several processes writing to one database: each re-reads every RECHECK seconds too."""
    monkeypatch.setenv(parlant_module.RECHECK_VARIABLE, "0.05")

    async def scenario() -> bool:
        store = Store()
        listener = NotifyingSessionListener(store)  # type: ignore[arg-type]
        waiting = asyncio.ensure_future(listener.wait_for_more_events(SESSION, timeout=Timeout(30)))
        await asyncio.sleep(0)
        store.events[SESSION].append(  # written by another process: no wake-up
            Written("x", 0, EventKind.MESSAGE, EventSource.HUMAN_AGENT, "<main>", {})
        )
        return await waiting

    assert run(scenario())


@pytest.mark.parametrize("value", ["soon", "0", "-1"])
def test_a_bad_recheck_period_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(parlant_module.RECHECK_VARIABLE, value)
    with pytest.raises(ValueError, match=parlant_module.RECHECK_VARIABLE):
        NotifyingSessionListener(Store())  # type: ignore[arg-type]


def test_a_store_that_cannot_be_observed_is_read_on_parlants_own_timers() -> None:
    class Sealed(Store):
        def __setattr__(self, name: str, value: object) -> None:
            if name in ("create_event", "update_event", "delete_event", "delete_session"):
                raise AttributeError(f"{name} is read-only")
            super().__setattr__(name, value)

    async def scenario() -> bool:
        store = Sealed()
        listener = NotifyingSessionListener(store)  # type: ignore[arg-type]
        assert not listener.observed
        waiting = asyncio.ensure_future(listener.wait_for_more_events(SESSION, timeout=Timeout(30)))
        await after_a_turn(message(store))
        return await waiting  # found at the next 0.25-s re-read

    assert run(scenario())


def test_it_checks_parlants_internals_and_refuses_a_parlant_that_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_parlant()  # the Parlant installed here is the one it was made for

    async def renamed(self: object, session: str, timeout: Timeout) -> bool:
        return False

    monkeypatch.setattr(SessionListener, "wait_for_more_events", renamed)
    with pytest.raises(IncompatibleParlant, match=r"Parlant 3\.\d+\.\d+ differs.*wait_for_more"):
        check_parlant()
    with pytest.raises(IncompatibleParlant):
        run(parlant_module.configure_module(object()))  # type: ignore[arg-type]
