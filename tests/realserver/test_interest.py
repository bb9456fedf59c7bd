"""Dormancy against a real Parlant server and the emulator alike: a conversation nobody waits on
holds no request to Parlant, and what Parlant writes meanwhile reaches the next reader, once.

A fault-free proxy in front of each server counts the requests in flight: the supervisor's view
of its own polls is not taken on trust.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from supervisor import SessionState, SessionSupervisor
from supervisor.testing import EmulatorServer, FakeClock, FaultProxy, ParlantServer, wait_until
from tests.helpers import post_as_human_agent, session_with
from tests.realserver.test_conformance import NULL_AGENTS

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]

LINGER = 1.0


@pytest.mark.parametrize("server", ["real", "emulator"])
def test_a_dormant_conversation_holds_no_request_and_reads_what_was_written_meanwhile(
    server: str,
    null_parlant: ParlantServer,
    serve: Serve,
    supervise: Supervise,
    proxy: Callable[[str], FaultProxy],
) -> None:
    url = null_parlant.url if server == "real" else serve(*NULL_AGENTS).url
    counting = proxy(url)
    clock = FakeClock()
    # short polls: a poll open when the last consumer leaves ends by itself, not cut short
    sup = supervise(counting.url, clock=clock, linger=LINGER, wait_for_data=2, wait_jitter=0)
    session_id = session_with(sup)
    assert sup.ask(session_id, "hello", timeout=30).text == "echo: hello"

    clock.advance(LINGER)
    wait_until(
        sup,
        lambda: sup.statistics().sessions_by_state[SessionState.DORMANT] == 1,
        timeout=30,
        what="the conversation dormant",
    )
    assert counting.in_flight == 0
    forwarded = counting.forwarded

    # a human agent writes while nobody polls (straight to the server, not through the proxy)
    assert post_as_human_agent(url, session_id, "A human here.").status_code == 201
    assert counting.forwarded == forwarded  # nothing went to the server meanwhile

    reader = sup.events(session_id)
    event = next(reader)
    assert (event.source, event.data["message"]) == ("human_agent", "A human here.")
    reply = sup.ask(session_id, "and now?", timeout=30)
    assert reply.text == "echo: and now?"
    after = [next(reader) for _ in range(1 + len(reply.events))]  # its message, its turn
    assert [e.offset for e in after] == list(range(event.offset + 1, event.offset + len(after) + 1))
    reader.close()
