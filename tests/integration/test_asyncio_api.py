"""The asyncio twins: aask, astream, aevents, async with, from one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

import supervisor._facade
from supervisor import SessionSupervisor, SessionUnresponsive, SupervisorConfig, SupervisorStopped
from supervisor.testing import EmulatedAgent, EmulatorServer, FakeClock, TurnContext, settle
from tests.helpers import new_session

Serve = Callable[..., EmulatorServer]


@pytest.mark.asyncio
async def test_the_asyncio_api_holds_a_conversation(serve: Serve) -> None:
    async def script(turn: TurnContext) -> None:
        turn.say(f"echo: {turn.message}")
        turn.follow_up("by the way")

    server = serve(EmulatedAgent("echo", script))
    agent_id = server.call(server.emulator.agent_id, "echo")
    config = SupervisorConfig(wait_for_data=30)

    async with SessionSupervisor(server.url, config=config) as sup:
        session_id = await sup.acreate_session(agent_id)
        reply = await sup.aask(session_id, "hello", timeout=30)
        streamed = [event async for event in sup.astream(session_id, "stream this", timeout=30)]
        reader = sup.aevents(session_id)
        follow_ups = [await anext(reader), await anext(reader)]

    assert reply.text == "echo: hello"
    assert streamed[-1].data["data"]["stage"] == "completed"
    assert [e.data["message"] for e in streamed if e.kind == "message"] == ["echo: stream this"]
    assert [e.data["message"] for e in follow_ups] == ["by the way", "by the way"]
    with pytest.raises(SupervisorStopped):
        await sup.aask(session_id, "still there?")


@pytest.mark.asyncio
async def test_many_concurrent_aasks_from_one_loop_each_get_their_own_reply(serve: Serve) -> None:
    server = serve()
    agent_id = server.call(server.emulator.agent_id, "echo")
    async with SessionSupervisor(server.url) as sup:
        sessions = await asyncio.gather(*(sup.acreate_session(agent_id) for _ in range(50)))
        replies = await asyncio.gather(
            *(sup.aask(sid, f"question for {sid}", timeout=60) for sid in sessions)
        )
        settle(sup)
        assert sup.statistics().sessions == 50

    assert [r.text for r in replies] == [f"echo: question for {sid}" for sid in sessions]


def test_a_blocking_call_on_a_running_loop_is_refused_with_a_pointer_to_the_twin(
    serve: Serve,
) -> None:
    server = serve()
    agent_id = server.call(server.emulator.agent_id, "echo")

    async def misuse() -> None:
        with SessionSupervisor(server.url) as sup, pytest.raises(RuntimeError, match="twin"):
            sup.create_session(agent_id)

    asyncio.run(misuse())


@pytest.mark.parametrize("call", ["ask", "aask", "stream", "astream"])
def test_a_caller_is_not_left_waiting_if_the_session_never_answers_its_deadline(
    serve: Serve,
    supervise: Callable[..., SessionSupervisor],
    monkeypatch: pytest.MonkeyPatch,
    call: str,
) -> None:
    async def never(turn: TurnContext) -> None:
        await turn.gate("never")

    monkeypatch.setattr(supervisor._facade, "_SAFETY_MARGIN", 0.2)
    server = serve(EmulatedAgent("never", never))
    sup = supervise(server.url, clock=FakeClock())  # frozen: the actor never sees the deadline
    session_id = new_session(server, sup, "never")

    async def consume(events: AsyncIterator[object]) -> None:
        async for _ in events:
            pass

    def wait_for_the_answer() -> None:
        if call == "ask":
            sup.ask(session_id, "hello?", timeout=0.3)
        elif call == "aask":
            asyncio.run(sup.aask(session_id, "hello?", timeout=0.3))
        elif call == "stream":
            list(sup.stream(session_id, "hello?", timeout=0.3))
        else:
            asyncio.run(consume(sup.astream(session_id, "hello?", timeout=0.3)))

    with pytest.raises(SessionUnresponsive, match="did not answer"):
        wait_for_the_answer()
