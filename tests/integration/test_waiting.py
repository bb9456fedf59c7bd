"""supervisor.testing.wait_until: a test waits for a supervisor's state, woken by its changes."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import pytest

from supervisor import SessionState, SessionSupervisor
from supervisor.testing import EmulatorServer, FakeClock, metric, wait_until
from tests.helpers import new_session

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]


def test_a_wait_is_woken_by_the_change_and_leaves_the_actors_settled(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    clock = FakeClock()
    # polled with nobody waiting for longer than a linger: the backoff is what is under test
    sup = supervise(server.url, clock=clock, linger=None)
    session_id = server.call(server.emulator.create_session, "echo")
    server.call(server.emulator.inject_poll_failures, session_id, [500, 500])

    sup.open(session_id)
    wait_until(sup, lambda: metric(sup, "polls_total", outcome="server_error") >= 1)

    # settled: the failure was handled, its backoff timer set on the clock about to move
    assert sup.statistics().sessions_by_state[SessionState.BACKING_OFF] == 1
    clock.advance(sup.config.backoff.cap)
    wait_until(sup, lambda: metric(sup, "polls_total", outcome="server_error") >= 2)
    clock.advance(sup.config.backoff.cap)
    assert sup.ask(session_id, "there?", timeout=30).text == "echo: there?"


def test_a_wait_that_is_never_met_fails_naming_what_it_waited_for(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url)
    new_session(server, sup)

    with pytest.raises(AssertionError, match=r"Parlant down was not met within 0 s; statistics"):
        wait_until(
            sup,
            lambda: metric(sup, "upstream_transitions_total", state="down") >= 1,
            timeout=0,
            what="Parlant down",
        )


def test_a_waiting_ask_is_seen_through_the_metrics_it_moves(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url)
    session_id = new_session(server, sup)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asking = pool.submit(sup.ask, session_id, "hello", timeout=30)
        wait_until(sup, lambda: metric(sup, "replies_total", kind="ask", outcome="answered") >= 1)
        assert asking.result(timeout=30).text == "echo: hello"
