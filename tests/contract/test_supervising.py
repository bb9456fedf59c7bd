"""One contract, two supervisors: the same calls, errors and behaviours from `SessionSupervisor`
and from `ShardedSupervisor` (on a local Ray instance), as `supervisor.Supervising` promises.

Each test runs against both; a behaviour that only one of them has is not in the contract.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from parlant.client.types import Event

from supervisor import (
    InvalidInput,
    MessageDelta,
    SessionNotFound,
    SessionSupervisor,
    Supervising,
    SupervisorConfig,
    SupervisorStopped,
)
from supervisor.sharding import ShardedSupervisor
from supervisor.testing import EmulatedAgent, EmulatorServer, ParlantEmulator
from tests.sharding.conftest import sharded

KINDS = ("local", "sharded")


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(ParlantEmulator((EmulatedAgent("echo"),))) as running:
        yield running


def _start(kind: str, url: str, request: pytest.FixtureRequest) -> Supervising:
    if kind == "local":
        return SessionSupervisor(url, config=SupervisorConfig(wait_for_data=30, wait_jitter=5))
    request.getfixturevalue("ray_instance")
    return sharded(url, shards=2, name=f"contract-{request.node.name}")


@pytest.fixture(scope="module", params=KINDS)
def sup(request: pytest.FixtureRequest, server: EmulatorServer) -> Iterator[Supervising]:
    """One supervisor of each kind for the module (a sharded one takes seconds to start)."""
    supervisor = _start(request.param, server.url, request)
    yield supervisor
    assert supervisor.stop().deadline_met


@pytest.fixture
def session(server: EmulatorServer, sup: Supervising) -> str:
    return sup.create_session(server.call(server.emulator.agent_id, "echo"))


def customer_messages(server: EmulatorServer, session_id: str) -> list[str]:
    events = server.call(server.emulator.session_events, session_id)
    return [e["data"]["message"] for e in events if e["source"] == "customer"]


# --- the shape of the contract (no server needed) -----------------------------------------


def _members() -> list[str]:
    return [
        name
        for name, value in vars(Supervising).items()
        if not name.startswith("_") and callable(value)
    ]


@pytest.mark.parametrize("implementation", [SessionSupervisor, ShardedSupervisor])
def test_each_supervisor_has_every_call_of_the_contract_with_its_exact_signature(
    implementation: type,
) -> None:
    for name in _members():
        promised = inspect.signature(getattr(Supervising, name))
        actual = inspect.signature(getattr(implementation, name))
        assert str(actual) == str(promised), f"{implementation.__name__}.{name}"
        assert inspect.iscoroutinefunction(getattr(implementation, name)) == (
            inspect.iscoroutinefunction(getattr(Supervising, name))
        ), f"{implementation.__name__}.{name}: async or not, as promised"


# --- behaviour, on both ------------------------------------------------------------------


def test_an_ask_returns_the_turn_that_answers_its_message(sup: Supervising, session: str) -> None:
    reply = sup.ask(session, "hello", timeout=30)

    assert reply.text == "echo: hello"
    assert reply.session_id == session
    assert asyncio.run(sup.aask(session, "again", timeout=30)).text == "echo: again"


def test_a_stream_yields_the_turn_live_and_its_text_joins_to_the_reply(
    sup: Supervising, session: str
) -> None:
    items = list(sup.stream(session, "streamed", timeout=30))
    events = [item for item in items if not isinstance(item, MessageDelta)]

    assert [e.data["message"] for e in events if e.kind == "message"] == ["echo: streamed"]
    assert events[-1].kind == "status"
    assert events[-1].data["status"] == "ready"
    assert "".join(sup.stream_text(session, "text", timeout=30)) == "echo: text"

    async def astream() -> list[Event | MessageDelta]:
        return [item async for item in sup.astream(session, "async", timeout=30)]

    assert any(isinstance(e, Event) and e.kind == "message" for e in asyncio.run(astream()))


def test_events_from_offset_zero_reread_the_whole_log_in_order(
    server: EmulatorServer, sup: Supervising, session: str
) -> None:
    sup.ask(session, "one", timeout=30)
    written = len(server.call(server.emulator.session_events, session))
    reader = sup.events(session, since=0)
    try:
        offsets = [next(reader).offset for _ in range(written)]
    finally:
        reader.close()

    assert offsets == list(range(written))
    assert [e.offset for e in sup.history(session)] == offsets
    assert [e.offset for e in asyncio.run(sup.ahistory(session, since=1))] == offsets[1:]


@pytest.mark.parametrize(
    ("message", "options", "says"),
    [
        ("", {}, "empty"),
        ("   ", {}, "empty"),
        ("hi", {"timeout": 0}, "timeout"),
        ("hi", {"post_key": ""}, "post_key"),
        ("hi", {"post_key": "k" * 201}, "post_key"),
    ],
)
def test_a_bad_ask_is_refused_with_invalid_input_and_nothing_is_sent(
    server: EmulatorServer,
    sup: Supervising,
    session: str,
    message: str,
    options: dict[str, Any],
    says: str,
) -> None:
    with pytest.raises(InvalidInput, match=says):
        sup.ask(session, message, **options)
    with pytest.raises(InvalidInput, match=says):
        list(sup.stream(session, message, **options))

    assert customer_messages(server, session) == []


def test_bad_ids_and_offsets_are_refused_with_invalid_input(sup: Supervising) -> None:
    calls: list[Callable[[], object]] = [
        lambda: sup.ask("", "hi"),
        lambda: sup.open(""),
        lambda: sup.open("s", since=-1),
        lambda: sup.events("s", since=-1),
        lambda: sup.history(" "),
        lambda: sup.create_session(""),
        lambda: sup.create_customer(""),
        lambda: sup.ensure_agents([""]),
    ]
    for call in calls:
        with pytest.raises(InvalidInput):
            call()


def test_an_unknown_session_is_session_not_found(sup: Supervising) -> None:
    with pytest.raises(SessionNotFound):
        sup.ask("no-such-session", "hello?", timeout=30)


def test_a_message_asked_again_with_its_key_is_answered_and_not_posted_twice(
    server: EmulatorServer, sup: Supervising, session: str
) -> None:
    first = sup.ask(session, "exactly once", timeout=30, post_key="contract-key-1")
    again = sup.ask(session, "exactly once", timeout=30, post_key="contract-key-1", maybe_sent=True)

    assert customer_messages(server, session) == ["exactly once"]
    assert again.text == first.text == "echo: exactly once"


def test_a_session_created_without_opening_it_has_no_actor_until_used(
    server: EmulatorServer, sup: Supervising
) -> None:
    agent_id = server.call(server.emulator.agent_id, "echo")
    closed = sup.create_session(agent_id, open=False)

    assert closed not in sup.sessions()
    sup.ask(closed, "now", timeout=30)
    assert closed in sup.sessions()
    assert closed in asyncio.run(sup.asessions())


def test_a_closed_session_reopens_where_it_stopped_on_next_use(
    sup: Supervising, session: str
) -> None:
    sup.ask(session, "before", timeout=30)
    sup.close(session)

    assert session not in sup.sessions()
    assert sup.ask(session, "after", timeout=30).text == "echo: after"
    asyncio.run(sup.aclose(session))
    assert session not in sup.sessions()


def test_figures_and_the_health_check(sup: Supervising, session: str) -> None:
    sup.ask(session, "count me", timeout=30)
    sup.check_parlant(timeout=5)
    asyncio.run(sup.acheck_parlant(timeout=5))

    figures = sup.statistics()
    assert figures.running
    assert figures.sessions >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_after_stop_every_call_is_refused_with_supervisor_stopped(
    kind: str, server: EmulatorServer, request: pytest.FixtureRequest
) -> None:
    supervisor = _start(kind, server.url, request)
    session = supervisor.create_session(server.call(server.emulator.agent_id, "echo"))
    summary = supervisor.stop()

    assert summary.deadline_met
    assert supervisor.stop().sessions_stopped == 0  # idempotent
    assert not supervisor.statistics().running
    for call in (
        lambda: supervisor.ask(session, "hello?"),
        lambda: supervisor.history(session),
        lambda: supervisor.create_session("agent"),
    ):
        with pytest.raises(SupervisorStopped):
            call()
