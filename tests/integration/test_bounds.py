"""Bounded in time and memory: every request has a deadline, unread events do not pin a session,
finished asks and closed sessions leave nothing behind, response bodies are capped."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import generate_latest

from actors._messages import MessagePosted, PostFailed
from supervisor import ParlantUnavailable, SessionSupervisor
from supervisor.testing import (
    AppServer,
    EmulatedAgent,
    EmulatorServer,
    FakeClock,
    FaultProxy,
    Hang,
    Respond,
    TurnContext,
    settle,
)
from tests.helpers import new_session, until_events

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]
Proxy = Callable[[str], FaultProxy]
Backend = Callable[..., AppServer]


def registry(sup: SessionSupervisor) -> tuple[int, int]:
    """(entries, consumer registrations) the Supervisor actor holds."""
    return sup.runtime.registry_figures()


def hanging(proxy: Proxy, url: str) -> FaultProxy:
    """A server that accepts every connection and never answers."""
    faults = proxy(url)
    faults.chaos(1.0, [Hang()], seed=1)
    return faults


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda sup: sup.create_customer("Ada"), "create_customer"),
        (lambda sup: sup.create_session("agent"), "create_session"),
        (lambda sup: sup.ensure_agents(["Echo"]), "list_agents"),
        (lambda sup: sup.check_parlant(), "list_agents"),
        (lambda sup: sup.history("session"), "list_events within 0.3 s"),
    ],
    ids=["create_customer", "create_session", "ensure_agents", "check_parlant", "history"],
)
def test_a_server_that_never_answers_fails_each_request_at_its_deadline(
    call: Callable[[SessionSupervisor], object],
    name: str,
    serve: Serve,
    proxy: Proxy,
    supervise: Supervise,
) -> None:
    server = serve()
    sup = supervise(hanging(proxy, server.url).url, request_timeout=0.3)

    with pytest.raises(ParlantUnavailable, match=name):
        call(sup)


def test_the_backend_answers_503_at_once_when_parlant_never_answers(
    serve: Serve, proxy: Proxy, backend: Backend
) -> None:
    from supervisor import SupervisorConfig

    server = serve()
    app = backend(
        parlant_url=hanging(proxy, server.url).url,
        supervisor=SupervisorConfig(request_timeout=0.3, wait_for_data=30, wait_jitter=5),
    )
    body = {"message": "hello", "intent": "research_paper"}

    with httpx.Client(base_url=app.url, timeout=10) as http:  # a hang fails the test here
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            chats = list(pool.map(lambda _: http.post("/api/chat", json=body), range(8)))
        ready = http.get("/readyz")

    assert [response.status_code for response in chats] == [503] * 8
    assert ready.status_code == 503


def test_a_follow_up_nobody_reads_does_not_keep_its_session_polling(
    serve: Serve, supervise: Supervise
) -> None:
    async def answer_then_follow_up(turn: TurnContext) -> None:
        turn.say(f"echo: {turn.message}")
        turn.follow_up("Would you like more?")

    server = serve(EmulatedAgent("chatty", answer_then_follow_up))
    clock = FakeClock()
    sup = supervise(server.url, clock=clock, idle_ttl=300)
    session_id = new_session(server, sup, "chatty")
    reply = sup.ask(session_id, "hello", timeout=30)
    until_events(server, session_id, reply.events[-1].offset + 2)  # and the follow-up
    settle(sup)

    clock.advance(300)
    settle(sup)

    assert sup.sessions() == []
    assert sup.statistics().open_polls == 0  # no socket held for it
    reader = sup.events(session_id)  # re-activated: the follow-up is still news, once
    follow_up = next(reader)
    assert follow_up.data["message"] == "Would you like more?"
    assert sup.ask(session_id, "again", timeout=30).text == "echo: again"
    assert [e.source for e in [next(reader)]] == ["customer"]  # not the first turn again


def test_finished_asks_do_not_stay_registered(serve: Serve, supervise: Supervise) -> None:
    server = serve()
    sup = supervise(server.url)
    session_id = new_session(server, sup)
    message = "x" * 32_000

    for _ in range(200):
        sup.ask(session_id, message, timeout=30)
    settle(sup)

    entries, registrations = registry(sup)
    assert entries == 1
    assert registrations <= 16


def test_a_posts_answer_that_comes_after_its_session_closed_leaves_no_registry_entry(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url)
    sessions = [new_session(server, sup) for _ in range(20)]

    for session_id in sessions:
        sup.close(session_id)
        # what the I/O thread routes when a post that was in flight at the close answers
        sup.runtime.route(session_id, MessagePosted(consumer_id=1, offset=0))
        sup.runtime.route(session_id, PostFailed(2, ParlantUnavailable("cut")))

    assert registry(sup) == (0, 0)
    assert sup.sessions() == []


def test_a_response_body_past_the_cap_is_a_malformed_poll_not_a_memory_blow_up(
    serve: Serve, proxy: Proxy, supervise: Supervise
) -> None:
    server = serve()
    faults = proxy(server.url)
    faults.inject(Respond(200, body=b"[" + b" " * 2_000_000 + b"]"), method="GET", path=r"/events$")
    sup = supervise(faults.url, max_response_bytes=1_000_000)

    session_id = new_session(server, sup)
    assert sup.ask(session_id, "still there?", timeout=30).text == "echo: still there?"

    exposition = generate_latest(sup.registry).decode()
    assert 'parlant_supervisor_polls_total{outcome="malformed"} 1.0' in exposition


def test_a_conversation_the_backend_expires_has_its_session_closed(
    serve: Serve, backend: Backend
) -> None:
    server = serve()
    now = [1_000.0]
    app = backend(parlant_url=server.url, conversation_ttl=100, clock=lambda: now[0])

    with httpx.Client(base_url=app.url, timeout=30) as http:
        tokens = []
        for n, at in enumerate([1_000.0, 1_060.0, 1_060.0]):
            now[0] = at
            body = {"message": f"hi {n}", "intent": "research_paper"}
            tokens.append(http.post("/api/chat", json=body).json()["session_id"])
        now[0] = 1_130.0  # the first unused for 130 s, the others for 70 s
        expired = app.run(app.app.state.backend.expire())
        live = app.app.state.backend.supervisor.sessions()  # the first's actor is stopped
        forgotten = http.get(f"/api/sessions/{tokens[0]}/messages")
        kept = http.get(f"/api/sessions/{tokens[1]}/messages")

    assert expired == 1
    assert len(live) == 2
    assert forgotten.status_code == 404
    assert kept.status_code == 200


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999"])
def test_a_url_its_parts_refuse_is_a_clear_error_that_leaves_no_thread_behind(url: str) -> None:
    import threading

    before = set(threading.enumerate())
    with pytest.raises(ValueError, match=r"IPv6|out of range"):
        SessionSupervisor(url)

    assert set(threading.enumerate()) <= before  # the I/O thread it started was stopped


def test_a_header_that_would_break_every_request_is_refused_by_the_config() -> None:
    from supervisor import SupervisorConfig

    with pytest.raises(ValueError, match="'X-Evil': not a valid HTTP header"):
        SupervisorConfig(headers={"X-Evil": "a\r\nx-injected: 1"})
