"""Streaming agents and failed turns against a real Parlant 3.3.2 server (its streamed messages
are written once and updated in place; failed turns end in `status: error`): the behaviours the
library relies on, seen on the real thing (the emulator runs the same in
tests/integration/test_streaming.py; tests/realserver/test_conformance.py compares the two)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import httpx
import pytest
from parlant.client.types import Event

from supervisor import AgentError, MessageDelta, SessionSupervisor
from supervisor.testing import CUT_MARKER, FAIL_MARKER, ParlantServer, settle
from tests.helpers import session_with

Supervise = Callable[..., SessionSupervisor]

QUESTION = "Tell me about CKD stage 3 and what to read about it first"
ANSWER = f"echo: {QUESTION}"  # 14 words at 0.1 s: a poll sees it partial


def test_a_long_poll_sees_a_streamed_message_once_and_partial(
    null_parlant: ParlantServer, supervise: Supervise
) -> None:
    """The measured fact the rest rests on: min_offset=last+1 polling sees the message once,
    before its terminator; a re-read of the log at its offset has the whole message."""
    sup = supervise(null_parlant.url)
    session_id = session_with(sup, "StreamingEcho")
    sup.close(session_id)
    client = httpx.Client(base_url=null_parlant.url, timeout=30)
    client.post(
        f"/sessions/{session_id}/events",
        json={"kind": "message", "source": "customer", "message": QUESTION},
    )
    seen: list[dict[str, object]] = []
    offset = 0
    while not any(
        e["kind"] == "status" and e["data"]["data"].get("stage") == "completed" for e in seen
    ):  # type: ignore[index,union-attr]
        response = client.get(
            f"/sessions/{session_id}/events", params={"min_offset": offset, "wait_for_data": 10}
        )
        assert response.status_code == 200
        seen.extend(response.json())
        offset = seen[-1]["offset"] + 1  # type: ignore[operator]

    [message] = [e for e in seen if e["kind"] == "message" and e["source"] == "ai_agent"]
    assert message["data"]["chunks"][-1] is not None  # type: ignore[index]
    reread = client.get(
        f"/sessions/{session_id}/events",
        params={"min_offset": message["offset"], "wait_for_data": 0},
    ).json()
    assert reread[0]["data"]["message"] == ANSWER
    assert reread[0]["data"]["chunks"][-1] is None


@pytest.mark.parametrize("policy", ["null", "stock"])
def test_an_ask_gets_the_whole_streamed_reply_and_a_stream_its_text_live(
    policy: str, request: pytest.FixtureRequest, supervise: Supervise
) -> None:
    parlant: ParlantServer = request.getfixturevalue(f"{policy}_parlant")
    sup = supervise(parlant.url)
    session_id = session_with(sup, "StreamingEcho")

    reply = sup.ask(session_id, QUESTION, timeout=60)
    items = list(sup.stream(session_id, QUESTION, timeout=60))
    pieces = list(sup.stream_text(session_id, QUESTION, timeout=60))

    assert reply.text == ANSWER
    assert [m.is_complete for m in reply.messages if not m.is_preamble] == [True]
    deltas = [i for i in items if isinstance(i, MessageDelta)]
    assert len(deltas) > 1
    assert "".join(d.delta for d in deltas) == ANSWER
    assert deltas[-1].done
    [message] = [
        i for i in items if isinstance(i, Event) and i.kind == "message" and not i.data.get("tags")
    ]
    assert message.data["chunks"][-1] is None
    assert "".join(pieces) == ANSWER


def test_where_read_event_is_refused_the_message_is_re_read_and_still_whole(
    production_parlant: ParlantServer, supervise: Supervise
) -> None:
    sup = supervise(production_parlant.url, stream_reread_interval=0.1)
    session_id = sup.create_session("StreamingEcho")  # a guest session: all this policy allows
    refused = httpx.get(f"{production_parlant.url}/sessions/{session_id}/events/x")
    assert refused.status_code == 403

    items = list(sup.stream(session_id, QUESTION, timeout=60))

    deltas = [i for i in items if isinstance(i, MessageDelta)]
    assert deltas
    assert "".join(d.delta for d in deltas) == ANSWER
    assert sup.history(session_id)[-1].data["data"]["stage"] == "completed"


def test_a_reader_gets_the_streamed_message_whole(
    null_parlant: ParlantServer, supervise: Supervise
) -> None:
    sup = supervise(null_parlant.url)
    session_id = session_with(sup, "StreamingEcho")
    reader = sup.events(session_id)

    reply = sup.ask(session_id, QUESTION, timeout=60)
    seen = [next(reader) for _ in range(len(reply.events) + 1)]

    [message] = [e for e in seen if e.kind == "message" and e.source == "ai_agent"]
    assert message.data["message"] == ANSWER
    assert [e.offset for e in seen] == list(range(len(seen)))


@pytest.mark.parametrize(
    ("policy", "agent", "marker"),
    [("stock", "Echo", FAIL_MARKER), ("null", "StreamingEcho", CUT_MARKER)],
    ids=["model-down", "stream-cut"],
)
def test_a_failed_turn_fails_its_ask_cleanly_and_the_next_one_answers(
    policy: str, agent: str, marker: str, request: pytest.FixtureRequest, supervise: Supervise
) -> None:
    parlant: ParlantServer = request.getfixturevalue(f"{policy}_parlant")
    sup = supervise(parlant.url)
    session_id = session_with(sup, agent)

    with pytest.raises(AgentError) as failed:
        sup.ask(session_id, f"please {marker} now", timeout=60)

    assert session_id in str(failed.value)
    assert "Traceback" not in str(failed.value)
    errors = [
        e for e in sup.history(session_id) if e.kind == "status" and e.data["status"] == "error"
    ]
    assert len(errors) == 1
    assert "Traceback" in str(errors[0].data)  # what Parlant writes, and we never repeat
    assert sup.ask(session_id, "hello again", timeout=60).text == "echo: hello again"
    settle(sup)
    assert sup.statistics().failed_turns_total == 1


def test_a_turn_superseded_mid_stream_abandons_its_message_and_the_next_answers_both(
    null_parlant: ParlantServer, supervise: Supervise
) -> None:
    sup = supervise(null_parlant.url)
    session_id = session_with(sup, "StreamingEcho")
    long_question = " ".join(f"word{n}" for n in range(30))

    stream = sup.stream(session_id, long_question, timeout=60)
    next(i for i in stream if isinstance(i, MessageDelta))  # the answer is being written
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        second = pool.submit(sup.ask, session_id, "second question", timeout=60)
        list(stream)
        reply = second.result(timeout=60)

    assert reply.text == "echo: second question"
    assert len(reply.answers) == 2
    abandoned = [
        e
        for e in sup.history(session_id)
        if e.kind == "message" and e.source == "ai_agent" and e.trace_id != reply.trace_id
    ]
    assert abandoned[0].data["chunks"][-1] is not None  # Parlant never finishes it
    settle(sup)
    assert sup.statistics().messages_abandoned_total == 1
