"""Rows of the README's failure table (README.md, "When things fail") over real HTTP, one test each
(more in test_conversations)."""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import Callable

import pytest

from supervisor import (
    AccessDenied,
    ParlantMisconfigured,
    ParlantUnavailable,
    SessionState,
    SessionSupervisor,
)
from supervisor.testing import (
    AppServer,
    EmulatorServer,
    FakeClock,
    FaultProxy,
    Hang,
    metric,
    settle,
    wait_until,
)
from tests.helpers import failed_with, last_failure

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]


def failing_session(server: EmulatorServer, statuses: list[int]) -> str:
    session_id = server.call(server.emulator.create_session, "echo")
    server.call(server.emulator.inject_poll_failures, session_id, statuses)
    return session_id


def test_a_429_backs_off_for_at_least_its_retry_after_then_recovers(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock)
    session_id = failing_session(server, [429])

    reader = sup.events(session_id)  # someone waits on the session: it is polled
    failed_with(sup, session_id)
    assert last_failure(sup, session_id) == ("rate_limited", "HTTP 429 Too Many Requests")
    clock.advance(0.99)  # Retry-After: 1 is a floor the jittered backoff may not undercut
    settle(sup)
    assert sup.statistics().sessions_by_state[SessionState.BACKING_OFF] == 1
    clock.advance(sup.config.backoff.cap)
    assert sup.ask(session_id, "may I?").text == "echo: may I?"
    reader.close()


def test_a_401_is_terminal_with_a_clear_error(serve: Serve, supervise: Supervise) -> None:
    server = serve()
    sup = supervise(server.url)
    session_id = failing_session(server, [401])

    with pytest.raises(AccessDenied, match=rf"{session_id}.*credentials"):
        sup.ask(session_id, "let me in", timeout=30)
    settle(sup)
    assert sup.statistics().sessions_by_state[SessionState.FAILED] == 1


def test_a_malformed_body_is_retried_not_taken_for_events(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock)
    session_id = failing_session(server, [200])

    reader = sup.events(session_id)  # someone waits on the session: it is polled
    failed_with(sup, session_id)
    kind, detail = last_failure(sup, session_id)
    clock.advance(sup.config.backoff.cap)
    assert sup.ask(session_id, "still parsing?").text == "echo: still parsing?"
    reader.close()
    assert kind == "malformed"
    assert "not a list of events" in detail


def test_a_refused_connection_is_parlant_down_and_the_post_waits_until_the_asks_deadline(
    supervise: Supervise,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clock = FakeClock()
    sup = supervise(f"http://127.0.0.1:{port}", clock=clock)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asking = pool.submit(sup.ask, "s1", "anyone home?", timeout=30)
        wait_until(
            sup,
            lambda: (
                metric(sup, "post_retries_total", reason="refused") >= 1
                and metric(sup, "upstream_transitions_total", state="down") >= 1
            ),
        )
        stats = sup.statistics()
        assert stats.upstream == "down"  # one probe asks
        # nothing to hear before the message is stored: the session sends no poll meanwhile
        assert (stats.sessions_by_state[SessionState.DORMANT], stats.held_polls) == (1, 0)
        assert not asking.done()  # the post waits for Parlant, up to the ask's deadline
        clock.advance(30)
        with pytest.raises(ParlantUnavailable, match="could not be posted before the deadline"):
            asking.result(timeout=30)


def test_instant_504s_are_paced_not_repeated_at_once(serve: Serve, supervise: Supervise) -> None:
    """Issue 28: an upstream answering 504 at once (not after the wait asked for) made one
    session re-poll 3,700 times a second. Now each such answer in a row doubles a pause."""
    server = serve()
    session_id = failing_session(server, [504] * 1000)
    sup = supervise(server.url, wait_for_data=30, wait_jitter=0)
    reader = sup.events(session_id)  # someone waits on the session: it is polled

    wait_until(
        sup,
        lambda: metric(sup, "poll_paces_total", reason="instant_timeout") >= 4,
        timeout=30,
        what="four paced polls",
    )
    assert server.call(server.emulator.served, session_id, 504) <= 8
    reader.close()


def test_a_redirecting_url_is_a_clear_terminal_error_not_a_retry_for_ever(
    supervise: Supervise,
) -> None:
    """A 301 was taken for a server error: retried for ever (issue 28)."""
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    async def moved(request: object) -> RedirectResponse:
        return RedirectResponse("https://parlant.example.invalid/api", status_code=301)

    app = Starlette(routes=[Route("/{path:path}", moved, methods=["GET", "POST"])])
    with AppServer(app) as elsewhere:
        sup = supervise(elsewhere.url)
        with pytest.raises(ParlantMisconfigured, match="redirects are not followed"):
            sup.ask("s1", "hello?", timeout=30)
        reader = sup.events("s2")
        with pytest.raises(ParlantMisconfigured, match=r"301 .* to https://parlant\.example"):
            next(reader)


def test_an_https_url_to_a_plain_http_server_says_so(serve: Serve, supervise: Supervise) -> None:
    """It said only "Parlant unreachable" (issue 28)."""
    server = serve()
    sup = supervise(server.url.replace("http://", "https://"))

    with pytest.raises(ParlantMisconfigured, match="speaks plain HTTP there; use http://"):
        sup.ask("s1", "hello?", timeout=30)
    with pytest.raises(ParlantMisconfigured, match="speaks plain HTTP there"):
        sup.check_parlant()  # through parlant-client's httpx: the same answer, not retried


def test_a_poll_that_does_not_bring_a_stored_message_is_sent_again_on_a_new_connection(
    serve: Serve,
    supervise: Supervise,
    proxy: Callable[[str], FaultProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 28: a flow lost without a word left its session deaf for a whole poll (54-69 s):
    the post went out on another connection and was stored, the poll heard nothing. Now the
    poll must bring it within `LIVENESS` of its request going out, else it is sent again."""
    from actors import _poller

    monkeypatch.setattr(_poller, "LIVENESS", 0.2)  # 3 s otherwise
    server = serve()
    gate = proxy(server.url)
    sup = supervise(gate.url, wait_for_data=30, wait_jitter=0)
    session_id = server.call(server.emulator.create_session, "echo")
    gate.inject(Hang(), method="GET", path=r"^/sessions/[^/]+/events$")  # its first poll

    reply = sup.ask(session_id, "hello", timeout=20)  # the hung poll would take 40 s

    assert reply.text == "echo: hello"
    assert metric(sup, "polls_restarted_total") == 1
