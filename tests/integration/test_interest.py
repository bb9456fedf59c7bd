"""Interest-driven polling end to end, on the emulator, with what it costs Parlant.

A session is polled while someone waits on it and for its linger after, then dormant: it sends
nothing, and what Parlant writes meanwhile is read by whoever comes next, exactly once. The
emulator counts what its requests would cost a real Parlant (`ParlantCost`).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from supervisor import SessionState, SessionSupervisor
from supervisor.testing import EmulatorServer, FakeClock, metric, wait_until
from tests.helpers import messages, new_session, post_as_human_agent

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]

LINGER = 2.0
SHORT_POLLS = {"linger": LINGER, "wait_for_data": 2, "wait_jitter": 0}
"""A poll open when the last consumer leaves is not cut short (Parlant would wait on for it
all the same) but ends by itself: short polls keep these tests short."""


def dormant(sup: SessionSupervisor, session_id: str) -> bool:
    snapshot = sup.runtime.snapshot(session_id)
    return snapshot is not None and snapshot.state is SessionState.DORMANT


def no_poll_waits(server: EmulatorServer) -> None:
    """Return once no long-poll waits on the emulator (a poll the client left waits on, as
    on Parlant, until its `wait_for_data`: a linger's poll ends with the linger)."""
    emulator = server.emulator
    server.run(emulator.until(lambda: emulator.cost().waiting_polls == 0))


def asked_then_idle(server: EmulatorServer, sup: SessionSupervisor, clock: FakeClock) -> str:
    """A conversation asked once, then left past its linger."""
    session_id = new_session(server, sup)
    assert sup.ask(session_id, "hello", timeout=30).text == "echo: hello"
    clock.advance(LINGER)
    wait_until(sup, lambda: dormant(sup, session_id), what="the session dormant")
    no_poll_waits(server)
    return session_id


def test_a_conversation_nobody_waits_on_holds_no_poll_after_its_linger(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock, **SHORT_POLLS)

    asked_then_idle(server, sup, clock)

    stats = sup.statistics()
    assert stats.open_polls == 0
    assert stats.sessions == 1
    assert stats.sessions_by_state[SessionState.DORMANT] == 1
    assert metric(sup, "sessions", state="dormant") == 1
    cost = server.call(server.emulator.cost)
    assert (cost.waiting_polls, cost.waiting_reads) == (0, 0)


def test_what_parlant_writes_while_a_session_is_dormant_reaches_its_next_reader_once(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock, **SHORT_POLLS)
    session_id = asked_then_idle(server, sup, clock)
    written_before = len(server.call(server.emulator.session_events, session_id))

    server.call(server.emulator.post_agent_message, session_id, "A follow-up.")
    assert post_as_human_agent(server.url, session_id, "A human here.").status_code == 201

    reader = sup.events(session_id)
    seen = [next(reader), next(reader)]
    assert [e.offset for e in seen] == [written_before, written_before + 1]
    assert [e.data["message"] for e in seen] == ["A follow-up.", "A human here."]
    assert not dormant(sup, session_id)  # a reader waits on it
    reply = sup.ask(session_id, "and now?", timeout=30)
    assert reply.text == "echo: and now?"
    after = [next(reader) for _ in range(1 + len(reply.events))]  # its message, its turn
    assert [e.offset for e in after] == list(range(written_before + 2, after[-1].offset + 1))
    reader.close()


def test_an_ask_wakes_a_dormant_conversation_and_the_next_reader_gets_what_came_between(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock, **SHORT_POLLS)
    session_id = asked_then_idle(server, sup, clock)
    server.call(server.emulator.post_agent_message, session_id, "While you were away.")

    reply = sup.ask(session_id, "back again", timeout=30)

    assert reply.text == "echo: back again"
    assert "While you were away." not in [e.data.get("message") for e in reply.events]
    reader = sup.events(session_id)  # the unclaimed follow-up comes first
    assert next(reader).data["message"] == "While you were away."
    reader.close()


def test_a_reader_keeps_its_session_polled_past_the_linger(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock, **SHORT_POLLS)
    session_id = new_session(server, sup)
    reader = sup.events(session_id)
    assert sup.ask(session_id, "hello", timeout=30).text == "echo: hello"

    clock.advance(10 * LINGER)
    emulator = server.emulator
    server.run(emulator.until(lambda: emulator.cost().waiting_polls == 1))
    assert not dormant(sup, session_id)

    server.call(emulator.post_agent_message, session_id, "Live.")
    seen = [next(reader) for _ in range(7)]  # its message, its turn's six events
    assert seen[-1].data.get("message") != "Live."
    assert next(reader).data["message"] == "Live."
    reader.close()
    wait_until(sup, lambda: sup.statistics().readers == 0, what="the reader gone")
    clock.advance(LINGER)
    wait_until(sup, lambda: dormant(sup, session_id), what="dormant once the reader left")


@pytest.mark.parametrize("linger", [LINGER, None])
def test_what_idle_conversations_cost_parlant(
    serve: Serve, supervise: Supervise, linger: float | None
) -> None:
    """Ten conversations asked once: with a linger, Parlant carries no poll for them once it
    passed; polled continuously (`linger=None`), one each, four store reads a second."""
    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock, linger=linger, wait_for_data=2, wait_jitter=0)
    sessions = [new_session(server, sup) for _ in range(10)]
    for session_id in sessions:
        sup.ask(session_id, "hello", timeout=30)
    clock.advance(LINGER)
    emulator = server.emulator
    if linger is not None:
        wait_until(sup, lambda: all(dormant(sup, s) for s in sessions), what="all dormant")
        no_poll_waits(server)
        assert sup.statistics().open_polls == 0
        return
    before = server.call(emulator.cost)

    # polled for ever: the store reads grow by ~4 a second a session (two 2-s polls each)
    seen = []

    def spent_enough() -> bool:  # and every session waiting (not between two polls)
        spent = emulator.cost().since(before)
        seen.append(spent)
        return spent.requests.get("list_events", 0) >= 20 and spent.waiting_polls == 10

    server.run(emulator.until(spent_enough))  # fails unless one poll waits per session
    spent = seen[-1]  # what the server carried then (a session may re-poll just after)
    assert spent.store_reads >= 10 * 2 * (2 + 2 / 0.25) - 10


def test_a_poll_its_client_left_goes_on_costing_until_its_wait_ends(
    serve: Serve,
) -> None:
    """As on Parlant: a server does not notice a client that left a long-poll."""
    server = serve()
    emulator = server.emulator
    session_id = server.call(emulator.create_session, "echo")
    with httpx.Client(base_url=server.url) as client, pytest.raises(httpx.ReadTimeout):
        client.get(
            f"/sessions/{session_id}/events",
            params={"min_offset": 0, "wait_for_data": 2},
            timeout=0.3,
        )
    assert server.call(emulator.cost).waiting_polls == 1  # the client is gone
    no_poll_waits(server)
    cost = server.call(emulator.cost)
    # read_session, events at once, then every 0.25 s for 2 s
    assert cost.store_reads == 2 + 8
    assert cost.requests == {"list_events": 1}
    assert 2.0 <= cost.poll_seconds < 2.5


def test_the_cost_of_a_turn_counts_requests_by_operation(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url, linger=0.0)
    session_id = new_session(server, sup)
    before = server.call(server.emulator.cost)

    reply = sup.ask(session_id, "hello", timeout=30)

    spent = server.call(server.emulator.cost).since(before)
    assert reply.text == "echo: hello"
    assert spent.requests["create_customer_event"] == 1
    assert 1 <= spent.requests["list_events"] <= len(reply.events) + 1
    assert messages(server.call(server.emulator.session_events, session_id)) == [
        "hello",
        "echo: hello",
    ]
