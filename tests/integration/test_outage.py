"""One health signal per Parlant: an outage is noticed once, probed by one request, and every
session comes back at a bounded rate when it is over."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from supervisor import SessionState, SessionSupervisor
from supervisor.testing import EmulatorServer, FaultProxy, metric, wait_until
from tests.helpers import new_session
from tests.logwatch import LogWatcher

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]
Proxy = Callable[[str], FaultProxy]


def test_an_outage_holds_every_poll_and_all_come_back_once_parlant_answers(
    serve: Serve, proxy: Proxy, supervise: Supervise, logs: LogWatcher
) -> None:
    server = serve()
    faults = proxy(server.url)
    sup = supervise(faults.url)
    sessions = [new_session(server, sup) for _ in range(30)]
    readers = [sup.events(session_id) for session_id in sessions]  # each session waited on
    server.run(server.emulator.until(lambda: server.emulator.open_polls() >= 30))

    with faults.outage():  # refused, and the open polls reset
        wait_until(sup, lambda: metric(sup, "upstream_transitions_total", state="down") >= 1)
        during = sup.statistics()
    wait_until(sup, lambda: metric(sup, "upstream_transitions_total", state="up") >= 1)

    assert during.upstream == "down"
    assert during.held_polls + during.open_polls <= 30
    assert during.held_polls >= 1
    assert len(logs.matching("upstream.down")) == 1  # one line for the upstream, not 30
    assert metric(sup, "upstream_transitions_total", state="down") == 1
    after = sup.statistics()
    assert after.upstream == "up"
    assert after.held_polls == 0
    assert after.sessions_by_state[SessionState.FAILED] == 0
    replies = [sup.ask(session_id, "back?", timeout=30).text for session_id in sessions[:5]]
    assert replies == ["echo: back?"] * 5
    for reader in readers:
        reader.close()


def test_one_sessions_failures_do_not_hold_the_others(
    serve: Serve, proxy: Proxy, supervise: Supervise, logs: LogWatcher
) -> None:
    from supervisor.testing import Respond

    server = serve()
    faults = proxy(server.url)
    sup = supervise(faults.url)
    broken = new_session(server, sup)
    fine = new_session(server, sup)
    faults.inject(*[Respond(500)] * 5, method="GET", path=rf"^/sessions/{broken}/events$")

    assert sup.ask(fine, "hello", timeout=30).text == "echo: hello"
    assert sup.ask(broken, "and you?", timeout=30).text == "echo: and you?"
    assert logs.matching("upstream.down") == []


def test_a_recovery_that_dies_of_a_bug_is_started_again_and_parlant_is_seen_back(
    serve: Callable[..., EmulatorServer],
    supervise: Callable[..., SessionSupervisor],
    proxy: Callable[[str], FaultProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 28: a recovery that raised (then: its probe backoff overflowing after ~1,500
    probes) left every poll held for good while Parlant answered again. One bug in one probe
    must not deafen every session."""
    from actors._poller import Poller

    real_answers = Poller._answers
    raised = []

    async def buggy_once(self: Poller) -> bool:
        if not raised:
            raised.append(True)
            raise RuntimeError("a bug in the probe")
        return await real_answers(self)

    monkeypatch.setattr(Poller, "_answers", buggy_once)
    server = serve()
    gate = proxy(server.url)
    sup = supervise(gate.url)
    session_id = server.call(server.emulator.create_session, "echo")
    reader = sup.events(session_id)  # someone waits: the session is polled
    gate.refuse()
    wait_until(sup, lambda: metric(sup, "upstream_transitions_total", state="down") >= 1)
    gate.accept()

    wait_until(sup, lambda: metric(sup, "upstream_transitions_total", state="up") >= 1)
    assert raised
    server.call(server.emulator.post_agent_message, session_id, "heard again")
    assert next(reader).data["message"] == "heard again"
    reader.close()
