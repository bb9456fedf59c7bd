"""1,000 sessions in one process, each asked once: polled for ever (`linger=None`, no ceiling),
each with an open poll; by default, all dormant once answered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from supervisor import SessionState, SessionSupervisor, SupervisorConfig
from supervisor.testing import EmulatorServer, settle, wait_until

Serve = Callable[..., EmulatorServer]
SESSIONS = 1000


@pytest.mark.slow
def test_a_thousand_sessions_each_poll_and_each_ask_gets_its_own_reply(serve: Serve) -> None:
    server = serve()
    agent_id = server.call(server.emulator.agent_id, "echo")
    config = SupervisorConfig(wait_for_data=60, linger=None, max_waiting_polls=None)
    sup = SessionSupervisor(server.url, config=config)

    async def converse() -> list[tuple[str, str]]:
        sessions = await asyncio.gather(*(sup.acreate_session(agent_id) for _ in range(SESSIONS)))
        replies = await asyncio.gather(
            *(sup.aask(sid, f"what about {sid}?", timeout=120) for sid in sessions)
        )
        return [(sid, reply.text) for sid, reply in zip(sessions, replies, strict=True)]

    try:
        answered = asyncio.run(converse())
        settle(sup, timeout=60)
        stats = sup.statistics()
        server_side_polls = server.run(
            server.emulator.until(lambda: server.emulator.open_polls() >= SESSIONS)
        )
    finally:
        summary = sup.stop(timeout=60)

    assert server_side_polls is None
    assert all(text == f"echo: what about {sid}?" for sid, text in answered)
    assert len({sid for sid, _ in answered}) == SESSIONS
    assert stats.sessions == SESSIONS
    assert stats.sessions_by_state[SessionState.POLLING] == SESSIONS
    assert stats.open_polls == SESSIONS
    assert stats.waiting_replies == 0
    assert summary.deadline_met
    assert summary.sessions_stopped == SESSIONS
    assert not any(t.is_alive() for t in sup.runtime.threads())


@pytest.mark.slow
def test_a_thousand_conversations_asked_at_once_cost_parlant_no_poll_once_answered(
    serve: Serve,
) -> None:
    """The defaults: every ask's poll goes at once (past the ceiling of 100 waiting polls), and
    once the replies are in, nobody waits: each session lingers, then is dormant."""
    server = serve()
    agent_id = server.call(server.emulator.agent_id, "echo")
    sup = SessionSupervisor(server.url)
    emulator = server.emulator

    async def converse() -> list[tuple[str, str]]:
        sessions = await asyncio.gather(*(sup.acreate_session(agent_id) for _ in range(SESSIONS)))
        replies = await asyncio.gather(
            *(sup.aask(sid, f"what about {sid}?", timeout=120) for sid in sessions)
        )
        return [(sid, reply.text) for sid, reply in zip(sessions, replies, strict=True)]

    try:
        answered = asyncio.run(converse())
        wait_until(
            sup,
            lambda: sup.statistics().sessions_by_state[SessionState.DORMANT] == SESSIONS,
            timeout=60,
            what="every session dormant",
        )
        server.run(emulator.until(lambda: emulator.cost().waiting_polls == 0), timeout=60)
        stats = sup.statistics()
    finally:
        summary = sup.stop(timeout=60)

    assert all(text == f"echo: what about {sid}?" for sid, text in answered)
    assert stats.sessions == SESSIONS
    assert (stats.open_polls, stats.waiting_polls, stats.rotating_polls) == (0, 0, 0)
    assert summary.deadline_met
