"""Streaming agents and failed turns, end to end on the emulator: whole replies, live text,
failed turns that fail cleanly (the same scenarios run on a real Parlant server in
tests/realserver/test_streaming.py)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import pytest
from parlant.client.types import Event

from supervisor import AgentError, MessageDelta, SessionSupervisor
from supervisor.testing import (
    CUT_MARKER,
    FAIL_MARKER,
    EmulatedAgent,
    EmulatorServer,
    FaultProxy,
    ResetMidResponse,
    TurnContext,
    echo,
    kill_session_actor,
    settle,
)
from tests.helpers import new_session, until_events
from tests.logwatch import LogWatcher

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]

QUESTION = "Tell me about CKD stage 3"
ANSWER = f"echo: {QUESTION}"


def streaming(name: str = "stream", **options: object) -> EmulatedAgent:
    return EmulatedAgent(name, echo(), output_mode="stream", chunk_delay=0.01, **options)  # type: ignore[arg-type]


@pytest.fixture(params=["read_event", "rereads"])
def server(request: pytest.FixtureRequest, serve: Serve) -> EmulatorServer:
    """A streaming agent, followed live (read_event?sse=true) or, where Parlant refuses
    read_event (its production policy), by re-reading the log."""
    return serve(streaming(), refuse_read_event=request.param == "rereads")


def test_an_ask_gets_the_whole_streamed_reply(server: EmulatorServer, supervise: Supervise) -> None:
    sup = supervise(server.url, stream_reread_interval=0.02)
    session_id = new_session(server, sup, "stream")

    reply = sup.ask(session_id, QUESTION, timeout=30)

    assert reply.text == ANSWER
    [message] = reply.messages
    assert message.is_complete
    assert message.event.data["chunks"][-1] is None


def test_a_stream_carries_the_text_as_it_grows_then_the_whole_message(
    server: EmulatorServer, supervise: Supervise
) -> None:
    sup = supervise(server.url, stream_reread_interval=0.02)
    session_id = new_session(server, sup, "stream")

    items = list(sup.stream(session_id, QUESTION, timeout=30))

    deltas = [i for i in items if isinstance(i, MessageDelta)]
    assert deltas, "no delta: the message came whole"
    assert "".join(d.delta for d in deltas) == ANSWER
    assert [d.done for d in deltas][-1] is True
    assert all(not d.done for d in deltas[:-1])
    events = [i for i in items if isinstance(i, Event)]
    [message] = [e for e in events if e.kind == "message"]
    assert message.data["message"] == ANSWER
    assert items.index(message) > items.index(deltas[-1])  # the event follows its deltas
    assert events[-1].data["data"]["stage"] == "completed"


def test_stream_text_joins_to_exactly_the_reply_text(serve: Serve, supervise: Supervise) -> None:
    async def two_messages(turn: TurnContext) -> None:
        turn.status("typing")
        await turn.stream("first part of the answer")
        turn.say("and a block-mode second")

    server = serve(
        EmulatedAgent("two", two_messages, preamble=True, output_mode="stream", chunk_delay=0.01)
    )
    sup = supervise(server.url)
    session_id = new_session(server, sup, "two")

    pieces = list(sup.stream_text(session_id, "go", timeout=30))
    reply = sup.ask(session_id, "go", timeout=30)

    assert len(pieces) > 2
    assert "".join(pieces) == reply.text == "first part of the answer\n\nand a block-mode second"


@pytest.mark.asyncio
async def test_the_asyncio_twins_stream_too(serve: Serve, supervise: Supervise) -> None:
    server = serve(streaming())
    sup = supervise(server.url)
    session_id = await sup.acreate_session(server.call(server.emulator.agent_id, "stream"))

    pieces = [piece async for piece in sup.astream_text(session_id, QUESTION, timeout=30)]
    items = [item async for item in sup.astream(session_id, QUESTION, timeout=30)]

    assert "".join(pieces) == ANSWER
    assert any(isinstance(item, MessageDelta) for item in items)


def test_a_reader_gets_a_streamed_message_once_and_whole(
    server: EmulatorServer, supervise: Supervise
) -> None:
    sup = supervise(server.url, stream_reread_interval=0.02)
    session_id = new_session(server, sup, "stream")
    reader = sup.events(session_id)

    reply = sup.ask(session_id, QUESTION, timeout=30)
    seen = [next(reader) for _ in range(len(reply.events) + 1)]

    assert [e.offset for e in seen] == list(range(len(reply.events) + 1))
    [message] = [e for e in seen if e.kind == "message" and e.source == "ai_agent"]
    assert message.data["message"] == ANSWER
    assert message.data["chunks"][-1] is None


def test_block_mode_agents_are_not_followed(serve: Serve, supervise: Supervise) -> None:
    server = serve(EmulatedAgent("echo"))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "echo")

    items = list(sup.stream(session_id, "hello", timeout=30))

    assert not any(isinstance(item, MessageDelta) for item in items)
    assert sup.statistics().streaming_messages == 0


# --- failed turns ----------------------------------------------------------------------------


@pytest.mark.parametrize("marker", [FAIL_MARKER, CUT_MARKER])
def test_a_failed_turn_fails_the_ask_with_a_clear_error_and_the_conversation_goes_on(
    marker: str, serve: Serve, supervise: Supervise, logs: LogWatcher
) -> None:
    server = serve(streaming(preamble=True))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "stream")

    with pytest.raises(AgentError) as failed:
        sup.ask(session_id, f"please {marker} now", timeout=30)

    assert session_id in str(failed.value)
    assert "Traceback" not in str(failed.value)
    assert sup.ask(session_id, QUESTION, timeout=30).text == ANSWER  # the next turn answers
    assert all("Traceback" not in str(entry) for entry in logs.events)
    assert sup.statistics().failed_turns_total == 1


def test_a_stream_of_a_failed_turn_ends_with_the_error_and_no_traceback(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve(streaming())
    sup = supervise(server.url)
    session_id = new_session(server, sup, "stream")
    items: list[object] = []

    with pytest.raises(AgentError):
        items.extend(sup.stream(session_id, f"please {CUT_MARKER} now", timeout=30))

    assert not [i for i in items if isinstance(i, Event) and i.data.get("status") == "error"]


def test_an_empty_reply_is_still_an_empty_reply(serve: Serve, supervise: Supervise) -> None:
    async def silent(turn: TurnContext) -> None:
        turn.status("typing")

    server = serve(EmulatedAgent("silent", silent))
    sup = supervise(server.url, failure_grace=0.05)
    session_id = new_session(server, sup, "silent")

    assert sup.ask(session_id, "anyone?", timeout=30).text == ""


# --- faults mid-message -----------------------------------------------------------------------


def test_a_turn_superseded_mid_stream_answers_both_messages(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve(EmulatedAgent("slow", echo(), output_mode="stream", chunk_delay=0.05))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "slow")
    long_question = " ".join(f"word{n}" for n in range(40))

    stream = sup.stream(session_id, long_question, timeout=30)
    first_delta = next(i for i in stream if isinstance(i, MessageDelta))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        second = pool.submit(sup.ask, session_id, "second question", timeout=30)
        rest = list(stream)
        reply = second.result(timeout=30)

    assert not first_delta.done
    assert reply.text == "echo: second question"
    assert rest[-1].offset == reply.events[-1].offset  # type: ignore[union-attr]
    settle(sup)
    assert sup.statistics().messages_abandoned_total == 1  # Parlant never finishes it


def test_a_stream_cut_mid_message_is_followed_again_and_nothing_is_lost(
    serve: Serve, supervise: Supervise, proxy: Callable[[str], FaultProxy]
) -> None:
    server = serve(EmulatedAgent("slow", echo(), output_mode="stream", chunk_delay=0.05))
    faults = proxy(server.url)
    faults.inject(ResetMidResponse(), ResetMidResponse(), method="GET", path=r"/events/[^/?]+$")
    sup = supervise(faults.url)
    session_id = new_session(server, sup, "slow")
    question = " ".join(f"word{n}" for n in range(12))

    items = list(sup.stream(session_id, question, timeout=30))

    deltas = [i for i in items if isinstance(i, MessageDelta)]
    assert "".join(d.delta for d in deltas) == f"echo: {question}"
    assert faults.records()


def test_an_actor_killed_mid_message_resumes_and_the_message_arrives_once(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve(EmulatedAgent("slow", echo(), output_mode="stream", chunk_delay=0.05))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "slow")
    reader = sup.events(session_id)
    question = " ".join(f"word{n}" for n in range(12))

    stream = sup.stream(session_id, question, timeout=30)
    next(i for i in stream if isinstance(i, MessageDelta))
    kill_session_actor(sup, session_id)
    items = list(stream)

    text = "".join(i.delta for i in items if isinstance(i, MessageDelta))
    assert f"echo: {question}".endswith(text)
    messages = [i for i in items if isinstance(i, Event) and i.kind == "message"]
    assert len(messages) == 1
    until_events(server, session_id, 7)  # customer, ack, processing, typing, message, 2 ready
    seen = [next(reader) for _ in range(7)]
    assert [e.offset for e in seen] == list(range(7))
