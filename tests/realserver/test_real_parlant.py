"""The seed's scenarios through `SessionSupervisor`, against a real Parlant 3.3.2 server."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import httpx
import pytest

from supervisor import (
    ParlantUnavailable,
    SessionNotFound,
    SessionState,
    SessionSupervisor,
)
from supervisor.testing import Drop, Fault, FaultProxy, ParlantServer, ResetMidResponse, settle
from tests.helpers import post_as_human_agent, session_with

Supervise = Callable[..., SessionSupervisor]


def statuses(events: object) -> list[str]:
    return [e.data["status"] for e in events if e.kind == "status"]  # type: ignore[attr-defined]


def test_a_reply_arrives_and_polling_goes_on_after_ready(
    null_parlant: ParlantServer, supervise: Supervise
) -> None:
    sup = supervise(null_parlant.url)
    session_id = session_with(sup)
    reader = sup.events(session_id)

    reply = sup.ask(session_id, "hello there", timeout=30)
    posted = post_as_human_agent(null_parlant.url, session_id, "A human here, following up.")

    assert posted.status_code == 201, posted.text
    assert reply.text == "echo: hello there"
    assert statuses(reply.events)[0] == "acknowledged"
    assert reply.events[-1].data["data"]["stage"] == "completed"
    seen = [next(reader) for _ in range(len(reply.events) + 2)]  # customer message, turn, human
    assert seen[0].source == "customer"
    assert [e.offset for e in seen[1:-1]] == [e.offset for e in reply.events]
    assert seen[-1].source == "human_agent"
    assert seen[-1].data["message"] == "A human here, following up."


def test_several_messages_in_sequence_each_get_their_own_reply(
    null_parlant: ParlantServer, supervise: Supervise
) -> None:
    sup = supervise(null_parlant.url)
    session_id = session_with(sup)

    replies = [sup.ask(session_id, f"message {n}", timeout=30) for n in range(4)]

    assert [r.text for r in replies] == [f"echo: message {n}" for n in range(4)]
    assert len({r.trace_id for r in replies}) == 4
    answered = [r.answers for r in replies]
    assert answered == sorted(answered)
    assert all(len(a) == 1 for a in answered)


def test_lifecycle_open_close_reopen_and_stop(
    null_parlant: ParlantServer, supervise: Supervise
) -> None:
    sup = supervise(null_parlant.url)
    session_id = session_with(sup)
    assert sup.ask(session_id, "first", timeout=30).text == "echo: first"

    sup.close(session_id)
    settle(sup)
    assert session_id not in sup.sessions()

    again = sup.ask(session_id, "second", timeout=30)  # reopened from its checkpoint
    assert again.text == "echo: second"
    assert sup.history(session_id)[-1].offset == again.events[-1].offset
    summary = sup.stop()
    assert summary.deadline_met
    assert summary.calls_failed == 0


def test_the_stock_policys_intermediate_ready_does_not_cut_a_turn_short(
    stock_parlant: ParlantServer, supervise: Supervise
) -> None:
    sup = supervise(stock_parlant.url)
    session_id = session_with(sup)

    reply = sup.ask(session_id, "take your time", timeout=60)

    readies = [e for e in reply.events if e.kind == "status" and e.data["status"] == "ready"]
    assert len(readies) >= 2  # at least one empty `ready` came before the completed one
    assert readies[0].data["data"] == {}
    assert readies[-1].data["data"]["stage"] == "completed"
    assert reply.text == "echo: take your time"


def test_a_superseded_turn_resolves_both_asks_with_the_turn_that_answers_them(
    stock_parlant: ParlantServer, supervise: Supervise
) -> None:
    sup = supervise(stock_parlant.url)
    session_id = session_with(sup)

    first_stream = sup.stream(session_id, "first question", timeout=60)
    assert next(first_stream).data["status"] == "acknowledged"  # the first turn is under way
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        second = pool.submit(sup.ask, session_id, "second question", timeout=60)
        first_events = list(first_stream)
        reply = second.result(timeout=60)

    # The stream followed the turn that answers its message: the second one, which covers both.
    assert first_events[-1].offset == reply.events[-1].offset
    assert reply.text == "echo: second question"
    customer = [e for e in sup.history(session_id) if e.source == "customer"]
    assert reply.answers == tuple(e.offset for e in customer)
    cancelled = [
        e for e in sup.history(session_id) if e.kind == "status" and e.data["status"] == "cancelled"
    ]
    assert len(cancelled) == 1
    assert cancelled[0].trace_id != reply.trace_id


def test_a_session_deleted_during_a_turn_ends_with_a_clear_error(
    stock_parlant: ParlantServer, supervise: Supervise
) -> None:
    sup = supervise(stock_parlant.url)
    session_id = session_with(sup)
    stream = sup.stream(session_id, "are you there?", timeout=60)
    assert next(stream).data["status"] == "acknowledged"  # the turn takes 3-4 s from here

    deleted = httpx.delete(f"{stock_parlant.url}/sessions/{session_id}")
    assert deleted.status_code == 204

    with pytest.raises(SessionNotFound, match=session_id):
        list(stream)
    with pytest.raises(SessionNotFound, match=session_id):
        sup.ask(session_id, "hello?", timeout=30)
    settle(sup)
    assert sup.statistics().sessions_by_state[SessionState.FAILED] == 1


def test_a_restarted_server_that_forgot_its_sessions_gives_a_clear_error_not_a_hang(
    own_parlant: ParlantServer, supervise: Supervise
) -> None:
    sup = supervise(own_parlant.url, request_retries=2)
    session_id = session_with(sup)
    assert sup.ask(session_id, "before", timeout=30).text == "echo: before"

    own_parlant.kill()
    with pytest.raises(ParlantUnavailable):  # at its deadline: a post waits for Parlant's return
        sup.ask(session_id, "while it is down", timeout=3)
    own_parlant.restart()

    with pytest.raises(SessionNotFound, match=session_id):
        sup.ask(session_id, "after", timeout=30)
    fresh = session_with(sup)  # the restarted server serves new sessions as usual
    assert sup.ask(fresh, "after", timeout=30).text == "echo: after"


def test_fifty_sessions_in_parallel_each_with_two_turns(
    null_parlant: ParlantServer, supervise: Supervise
) -> None:
    sup = supervise(null_parlant.url)
    sessions = [session_with(sup) for _ in range(50)]

    def converse(index: int) -> list[str]:
        session_id = sessions[index]
        return [sup.ask(session_id, f"s{index} t{turn}", timeout=60).text for turn in range(2)]

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        texts = list(pool.map(converse, range(50)))

    assert texts == [[f"echo: s{i} t0", f"echo: s{i} t1"] for i in range(50)]


@pytest.mark.parametrize("fault", [ResetMidResponse(), Drop()], ids=["answer-lost", "dropped"])
def test_a_post_cut_on_the_wire_is_settled_from_the_real_servers_log_and_stored_once(
    fault: Fault, null_parlant: ParlantServer, supervise: Supervise
) -> None:
    with FaultProxy(null_parlant.url) as wire:
        sup = supervise(wire.url, post_grace=0.2)
        session_id = session_with(sup)
        wire.inject(fault, method="POST", path=rf"^/sessions/{session_id}/events$")

        reply = sup.ask(session_id, "did this arrive?", timeout=30)
        log = sup.history(session_id)
        sup.stop()

    assert reply.text == "echo: did this arrive?"
    customer = [e.data["message"] for e in log if e.kind == "message" and e.source == "customer"]
    assert customer == ["did this arrive?"]
