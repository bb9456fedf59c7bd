"""Failure-table rows that need real sockets failing: resets, hangs, slow answers, outages.

Each test puts a `FaultProxy` between the supervisor and the emulator and aims its faults at
one session's polls (GET) or message posts (POST).
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import httpx
import pytest

from supervisor import Reply, SessionSupervisor
from supervisor.testing import (
    Delay,
    Drop,
    EmulatorServer,
    FakeClock,
    Fault,
    FaultProxy,
    Hang,
    Reset,
    ResetMidResponse,
    Respond,
    metric,
    wait_until,
)
from tests.helpers import failed_with, last_failure, messages

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]
Proxy = Callable[[str], FaultProxy]


class Rig(NamedTuple):
    server: EmulatorServer
    wire: FaultProxy
    sup: SessionSupervisor
    session_id: str  # a session no client has polled yet: faults aimed at it meet its polls


def rig(serve: Serve, proxy: Proxy, supervise: Supervise, **config: Any) -> Rig:
    """An emulator, a proxy in front of it, a supervisor behind the proxy, and a new session."""
    server = serve()
    wire = proxy(server.url)
    sup = supervise(wire.url, **config)
    return Rig(server, wire, sup, server.call(server.emulator.create_session, "echo"))


def events_path(session_id: str) -> str:
    return rf"^/sessions/{re.escape(session_id)}/events$"


def offsets_seen(reader: Iterator[object], server: EmulatorServer, session_id: str) -> list[int]:
    written = server.call(server.emulator.session_events, session_id)
    return [next(reader).offset for _ in written]  # type: ignore[attr-defined]


def written_offsets(server: EmulatorServer, session_id: str) -> list[int]:
    return [event["offset"] for event in server.call(server.emulator.session_events, session_id)]


@pytest.mark.parametrize(
    ("faults", "names"),
    [
        pytest.param([ResetMidResponse()], ["reset_mid_response"], id="reset-mid-response"),
        pytest.param([Reset(), Drop()], ["reset", "drop"], id="reset-and-drop"),
        pytest.param(
            [Respond(500), Respond(503, retry_after=1), Respond(200, body=b"<html>")],
            ["respond_500", "respond_503", "respond_200"],
            id="5xx-and-malformed",
        ),
    ],
)
def test_a_poll_broken_on_the_wire_is_retried_and_loses_or_repeats_nothing(
    serve: Serve,
    supervise: Supervise,
    proxy: Proxy,
    faults: list[object],
    names: list[str],
) -> None:
    clock = FakeClock()
    server, wire, sup, session_id = rig(serve, proxy, supervise, clock=clock)
    wire.inject(*faults, method="GET", path=events_path(session_id))  # type: ignore[arg-type]
    reader = sup.events(session_id)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asking = pool.submit(sup.ask, session_id, "are you there?", timeout=600)
        for count in range(1, len(faults) + 1):
            failed_with(sup, session_id, count)
            clock.advance(sup.config.backoff.cap)
        reply: Reply = asking.result(timeout=30)

    assert reply.text == "echo: are you there?"
    assert offsets_seen(reader, server, session_id) == written_offsets(server, session_id)
    assert wire.pending == 0
    assert sorted(wire.injected.elements()) == sorted(names)


def test_a_hung_connection_is_given_up_after_the_poll_timeout_and_polled_again(
    serve: Serve, supervise: Supervise, proxy: Proxy
) -> None:
    _server, wire, sup, session_id = rig(
        serve, proxy, supervise, wait_for_data=1, wait_jitter=0, poll_timeout_margin=0.5
    )
    wire.inject(Hang(), method="GET", path=events_path(session_id))

    reply = sup.ask(session_id, "hello?", timeout=30)  # the first poll hangs for 1.5 s

    assert reply.text == "echo: hello?"
    assert metric(sup, "polls_total", outcome="client_timeout") == 1
    assert metric(sup, "polls_total", outcome="network") == 0  # not a failure: no backoff
    assert wire.injected == {"hang": 1}


def test_slow_answers_are_waited_for_not_taken_for_failures(
    serve: Serve, supervise: Supervise, proxy: Proxy
) -> None:
    _server, wire, sup, session_id = rig(serve, proxy, supervise)
    wire.inject(Delay(0.3), method="GET", path=events_path(session_id))  # the first poll
    wire.inject(Delay(0.3), method="POST", path=events_path(session_id))

    reply = sup.ask(session_id, "take your time", timeout=30)

    assert reply.text == "echo: take your time"
    assert wire.injected == {"delay": 2}
    assert metric(sup, "polls_total", outcome="network") == 0
    assert metric(sup, "polls_total", outcome="client_timeout") == 0


def test_an_ask_during_an_outage_is_posted_once_it_ends_and_polling_resumes(
    serve: Serve, supervise: Supervise, proxy: Proxy
) -> None:
    clock = FakeClock()
    server, wire, sup, session_id = rig(serve, proxy, supervise, clock=clock)
    reader = sup.events(session_id)
    assert sup.ask(session_id, "before", timeout=600).text == "echo: before"
    # The next poll is open, so that the outage resets it (between two polls, its connection
    # would be refused instead: Parlant down at once, and no session backs off on its own).
    emulator = server.emulator
    server.run(emulator.until(lambda: emulator.open_polls() == 1))

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with wire.outage():  # the open poll is reset, every new connection refused
            # a reset alone may be the session's: it backs off, as any session would
            failed_with(sup, session_id)
            assert last_failure(sup, session_id)[0] == "network"
            during = pool.submit(sup.ask, session_id, "during", timeout=600)
            wait_until(sup, lambda: metric(sup, "post_retries_total", reason="refused") >= 1)
            clock.advance(sup.config.backoff.cap)  # its retry is refused: Parlant is down
            wait_until(sup, lambda: metric(sup, "upstream_transitions_total", state="down") >= 1)
            stats = sup.statistics()
            assert (stats.upstream, stats.held_polls) == ("down", 1)  # held: a probe asks
            assert not during.done()  # the post waits for Parlant, as the poll does
        # the probe found it back: the held poll went out again
        wait_until(sup, lambda: metric(sup, "upstream_transitions_total", state="up") >= 1)
        assert during.result(timeout=30).text == "echo: during"
    assert sup.ask(session_id, "after", timeout=600).text == "echo: after"

    assert offsets_seen(reader, server, session_id) == written_offsets(server, session_id)
    written = messages(server.call(server.emulator.session_events, session_id))
    assert written.count("during") == 1
    assert wire.injected["refused"] >= 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param(ResetMidResponse(), "found", id="stored-then-reset"),
        pytest.param(Drop(), "absent", id="dropped-unforwarded"),
        pytest.param(Reset(), "absent", id="reset-unforwarded"),
        pytest.param(Respond(502), "absent", id="bad-gateway"),
    ],
)
def test_a_post_whose_fate_is_unknown_is_settled_from_the_log_and_stored_once(
    fault: Fault, reason: str, serve: Serve, supervise: Supervise, proxy: Proxy
) -> None:
    server, wire, sup, session_id = rig(serve, proxy, supervise, post_grace=0.05)
    wire.inject(fault, method="POST", path=events_path(session_id))
    reader = sup.events(session_id)

    reply = sup.ask(session_id, "did this arrive?", timeout=30)

    assert reply.text == "echo: did this arrive?"
    emulator = server.emulator
    written = messages(server.call(emulator.session_events, session_id))
    assert written == ["did this arrive?", "echo: did this arrive?"]
    assert offsets_seen(reader, server, session_id) == written_offsets(server, session_id)
    retried = sup.registry.get_sample_value(
        "parlant_supervisor_post_retries_total", {"reason": reason}
    )
    assert retried == 1
    assert sup.registry.get_sample_value("parlant_supervisor_duplicate_posts_total") == 0


def test_chaos_is_seeded_bounded_and_aimed(serve: Serve, proxy: Proxy) -> None:
    server = serve()
    drawn: list[list[int]] = []
    for _ in range(2):
        wire = proxy(server.url)
        wire.chaos(0.5, [Respond(503), Respond(500)], seed=7, limit=5, path="^/agents$")
        with httpx.Client(base_url=wire.url) as client:
            statuses = [client.get("/agents").status_code for _ in range(30)]
            assert client.get("/healthz").status_code == 200  # not aimed at: untouched
        drawn.append(statuses)
        assert wire.injected.total() == 5
        assert wire.forwarded == 26

    assert drawn[0] == drawn[1]  # the same seed, the same faults at the same requests
    assert drawn[0].count(200) == 25
    assert set(drawn[0]) <= {200, 500, 503}


def test_a_rate_limit_and_an_upstream_that_refuses_are_plain_http_answers(
    serve: Serve, proxy: Proxy
) -> None:
    server = serve()
    wire = proxy(server.url)
    wire.inject(Respond(429, retry_after=2.5))
    with httpx.Client(base_url=wire.url) as client:
        limited = client.get("/agents")
        server.stop()
        down = client.get("/agents")

    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2.5")
    assert down.status_code == 503  # nothing was forwarded: safe to send again (as Envoy says)
    assert down.json()["detail"] == "upstream connect error"


def test_the_proxy_forwards_only_to_plain_http() -> None:
    with pytest.raises(ValueError, match="http://"):
        FaultProxy("https://parlant.example.com")


def test_a_post_that_certainly_had_no_effect_is_sent_again_and_only_once_written(
    serve: Serve, supervise: Supervise, proxy: Proxy
) -> None:
    server, wire, sup, session_id = rig(serve, proxy, supervise)
    wire.inject(
        Respond(503), Respond(429, retry_after=0), method="POST", path=events_path(session_id)
    )

    reply = sup.ask(session_id, "third time lucky", timeout=30)

    assert reply.text == "echo: third time lucky"
    assert wire.injected == {"respond_503": 1, "respond_429": 1}
    written = messages(server.call(server.emulator.session_events, session_id))
    assert written == ["third time lucky", "echo: third time lucky"]


def test_the_proxy_counts_requests_waiting_upstream(serve: Serve, proxy: Proxy) -> None:
    server = serve()
    wire = proxy(server.url)
    emulator = server.emulator
    session_id = server.call(emulator.create_session, "echo")
    assert wire.in_flight == 0

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        poll = pool.submit(
            httpx.get,
            f"{wire.url}/sessions/{session_id}/events",
            params={"min_offset": 0, "wait_for_data": 30},
            timeout=60,
        )
        server.run(emulator.until(lambda: emulator.open_polls() == 1))
        assert wire.in_flight == 1  # counted before it went upstream
        server.call(emulator.post_agent_message, session_id, "hello")
        assert poll.result().status_code == 200

    assert wire.in_flight == 0  # uncounted before its answer went back


@pytest.mark.parametrize(
    "fault",
    [ResetMidResponse(), Drop(), Respond(502)],
    ids=["created-then-reset", "dropped-unforwarded", "bad-gateway"],
)
def test_a_customer_creation_whose_fate_is_unknown_creates_one_customer(
    fault: Fault, serve: Serve, supervise: Supervise, proxy: Proxy
) -> None:
    server = serve()
    wire = proxy(server.url)
    sup = supervise(wire.url)
    wire.inject(fault, method="POST", path="^/customers$")

    customer_id = sup.create_customer("Ada")

    customers = server.call(server.emulator.customers)
    assert [(c["id"], c["name"]) for c in customers] == [(customer_id, "Ada")]
