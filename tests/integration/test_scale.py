"""1,000 sessions in one process, each with an open poll, each asked once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from supervisor import SessionState, SessionSupervisor, SupervisorConfig
from supervisor.testing import EmulatorServer, settle

Serve = Callable[..., EmulatorServer]
SESSIONS = 1000


@pytest.mark.slow
def test_a_thousand_sessions_each_poll_and_each_ask_gets_its_own_reply(serve: Serve) -> None:
    server = serve()
    agent_id = server.call(server.emulator.agent_id, "echo")
    sup = SessionSupervisor(server.url, config=SupervisorConfig(wait_for_data=60))

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
