"""The backend's stream protocol over real HTTP: typed events, ids to resume after, keep-alive
comments, whitelisted fields only, failed turns as errors (502 for `/api/chat`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from supervisor.testing import (
    CUT_MARKER,
    FAIL_MARKER,
    AppServer,
    EmulatedAgent,
    EmulatorServer,
    TurnContext,
    echo,
)
from tests.integration.test_backend import CHAT, sse_with_ids

Backend = Callable[..., AppServer]
Serve = Callable[..., EmulatorServer]

EVENTS = {"session", "status", "text-start", "text-delta", "text-end", "end", "error"}
FIELDS = {
    "session": {"session_id"},
    "status": {"status", "stage"},
    "text-start": {"id", "preamble"},
    "text-delta": {"id", "delta"},
    "text-end": {"id", "text"},
    "end": {"session_id"},
    "error": {"status", "detail"},
}


def streaming_agents(script: Any = None) -> tuple[EmulatedAgent, ...]:
    """The backend's two agents, on the emulator, streaming (and failing on the markers)."""
    return tuple(
        EmulatedAgent(name, script or echo(), output_mode="stream", chunk_delay=0.01)
        for name in ("ResearchPaperAgent", "MedicalWelfareAgent")
    )


def position(event_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in event_id.split("-"))


def test_every_event_is_typed_ordered_and_carries_only_whitelisted_fields(
    backend: Backend, serve: Serve
) -> None:
    emulator = serve(*streaming_agents(), stray_events=False)
    server = backend(parlant_url=emulator.url)
    body = {"message": "Tell me about CKD stage 3", "intent": "research_paper"}

    streamed = httpx.post(f"{server.url}{CHAT}/stream", json=body, timeout=60)
    token = sse_with_ids(streamed.text)[0][1]["session_id"]
    again = httpx.post(f"{server.url}{CHAT}", json={**body, "session_id": token}, timeout=60)

    frames = sse_with_ids(streamed.text)
    assert {event for event, _, _ in frames} <= EVENTS
    for event, data, _ in frames:
        assert set(data) <= FIELDS[event], (event, data)
    ids = [position(event_id) for _, _, event_id in frames]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    deltas = "".join(data["delta"] for event, data, _ in frames if event == "text-delta")
    [end] = [data["text"] for event, data, _ in frames if event == "text-end"]
    assert deltas == end == "echo: Tell me about CKD stage 3"
    assert again.json()["reply"] == "echo: Tell me about CKD stage 3"
    for leak in ("participant", "trace_id", "matched_guidelines", emulator_agent_ids(emulator)):
        assert leak not in streamed.text


def emulator_agent_ids(emulator: EmulatorServer) -> str:
    return emulator.call(emulator.emulator.agent_id, "ResearchPaperAgent")


@pytest.mark.parametrize("marker", [FAIL_MARKER, CUT_MARKER])
def test_a_failed_turn_is_an_error_event_and_a_502_with_no_traceback_and_the_talk_goes_on(
    marker: str, backend: Backend, serve: Serve
) -> None:
    emulator = serve(*streaming_agents())
    server = backend(parlant_url=emulator.url)
    failing = {"message": f"please {marker} now", "intent": "research_paper"}

    streamed = httpx.post(f"{server.url}{CHAT}/stream", json=failing, timeout=60)
    if streamed.headers["content-type"].startswith("text/event-stream"):
        token = sse_with_ids(streamed.text)[0][1]["session_id"]
        event, data, _ = sse_with_ids(streamed.text)[-1]
        assert (event, data["status"]) == ("error", 502)
    else:  # the turn failed before its first event reached the stream: an HTTP error
        assert streamed.status_code == 502
        token = streamed.json()["session_id"]
    asked = httpx.post(f"{server.url}{CHAT}", json={**failing, "session_id": token}, timeout=60)
    after = {"message": "hello again", "intent": "research_paper", "session_id": token}
    recovered = httpx.post(f"{server.url}{CHAT}", json=after, timeout=60)

    assert asked.status_code == 502
    assert asked.json()["detail"].startswith("the agent failed to answer")
    for body in (streamed.text, asked.text):
        assert "Traceback" not in body
        assert "exception" not in body
    assert recovered.status_code == 200
    assert recovered.json()["reply"] == "echo: hello again"


def test_a_client_that_reconnects_with_last_event_id_resumes_with_nothing_twice(
    backend: Backend, serve: Serve
) -> None:
    async def halves(turn: TurnContext) -> None:
        turn.status("typing")
        await turn.stream("first half of the answer")
        await turn.gate("second half")
        await turn.stream("and the second half")

    emulator = serve(*streaming_agents(halves))
    server = backend(parlant_url=emulator.url)
    body = {"message": "go", "intent": "research_paper"}
    seen: list[str] = []

    with httpx.stream("POST", f"{server.url}{CHAT}/stream", json=body, timeout=60) as first:
        for line in first.iter_lines():
            seen.append(line)
            if line.startswith("data:") and "first half of the answer" in line:
                break  # the first message ended: the connection drops here
    before = sse_with_ids("\n".join(seen) + "\n\n")
    token, last_id = before[0][1]["session_id"], before[-1][2]
    emulator.call(emulator.emulator.release, "second half")
    resumed = httpx.get(
        f"{server.url}/api/sessions/{token}/stream",
        headers={"Last-Event-ID": last_id},
        timeout=60,
    )
    whole = httpx.get(f"{server.url}/api/sessions/{token}/stream", timeout=60)

    after = sse_with_ids(resumed.text)
    assert resumed.status_code == 200
    assert [i for _, _, i in before] + [i for _, _, i in after] == [
        i for _, _, i in sse_with_ids(whole.text)
    ]
    texts = [d["text"] for e, d, _ in before + after if e == "text-end"]
    assert texts == ["first half of the answer", "and the second half"]
    assert after[-1][0] == "end"


def test_resuming_a_turn_no_longer_kept_says_where_to_read_instead(
    backend: Backend, serve: Serve
) -> None:
    emulator = serve(*streaming_agents())
    server = backend(parlant_url=emulator.url)
    reply = httpx.post(f"{server.url}{CHAT}", json={"message": "hi", "intent": "research_paper"})
    token = reply.json()["session_id"]

    never_streamed = httpx.get(f"{server.url}/api/sessions/{token}/stream", timeout=60)
    forged = httpx.get(
        f"{server.url}/api/sessions/{token}/stream", headers={"Last-Event-ID": "x"}, timeout=60
    )
    unknown = httpx.get(f"{server.url}/api/sessions/nope/stream", timeout=60)

    assert never_streamed.status_code == 410
    assert "/messages" in never_streamed.json()["detail"]
    assert forged.status_code == 422
    assert unknown.status_code == 404


def test_a_quiet_turn_sends_keep_alive_comments(backend: Backend, serve: Serve) -> None:
    async def thinking(turn: TurnContext) -> None:
        await turn.gate("think")
        await turn.reply("done thinking")

    emulator = serve(*streaming_agents(thinking))
    server = backend(parlant_url=emulator.url, stream_keep_alive=0.2)
    body = {"message": "think hard", "intent": "research_paper"}

    with httpx.stream("POST", f"{server.url}{CHAT}/stream", json=body, timeout=60) as response:
        received: list[str] = []
        stream = response.iter_lines()
        for line in stream:
            received.append(line)
            if line.startswith(":"):
                emulator.call(emulator.emulator.release, "think")
                break
        received.extend(stream)

    text = "\n".join(received)
    assert any(line.startswith(":") for line in received)  # a comment while nothing happened
    assert [data["text"] for event, data, _ in sse_with_ids(text) if event == "text-end"] == [
        "done thinking"
    ]


def test_a_conversations_messages_say_whether_each_is_complete(
    backend: Backend, serve: Serve
) -> None:
    emulator = serve(*streaming_agents())
    server = backend(parlant_url=emulator.url)
    reply = httpx.post(f"{server.url}{CHAT}", json={"message": "hi", "intent": "research_paper"})
    token = reply.json()["session_id"]

    history = httpx.get(f"{server.url}/api/sessions/{token}/messages").json()

    assert [(m["source"], m["text"], m["complete"]) for m in history] == [
        ("customer", "hi", True),
        ("ai_agent", "echo: hi", True),
    ]
    assert json.dumps(history).count("chunks") == 0


def test_a_bug_mid_stream_ends_it_with_an_error_event_and_frees_the_conversation(
    backend: Backend, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: an exception other than the library's left the stream without its last frame
    (the client waited until it gave up) and the conversation held until its lease lapsed."""
    from supervisor.backend._stream import TurnFramer

    frames = TurnFramer.frames
    calls = 0

    def broken(self: TurnFramer, item: Any) -> Any:  # a bug on the second item
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug in the framer")
        return frames(self, item)

    monkeypatch.setattr(TurnFramer, "frames", broken)
    emulator = serve(*streaming_agents())
    server = backend(parlant_url=emulator.url)
    body = {"message": "Tell me about CKD stage 3", "intent": "research_paper"}

    streamed = httpx.post(f"{server.url}{CHAT}/stream", json=body, timeout=60)
    token = sse_with_ids(streamed.text)[0][1]["session_id"]
    event, data, _ = sse_with_ids(streamed.text)[-1]
    monkeypatch.setattr(TurnFramer, "frames", frames)
    after = httpx.post(f"{server.url}{CHAT}", json={**body, "session_id": token}, timeout=60)

    assert (event, data["status"]) == ("error", 500)
    assert "a bug in the framer" not in streamed.text
    assert after.status_code == 200


def test_a_client_with_the_whole_ended_turn_gets_204_and_the_stream_says_its_retry(
    backend: Backend, serve: Serve
) -> None:
    """An EventSource left open after `end` reconnected every ~3 s for ever: the resume answered
    200 with nothing. 204 is what stops a browser's EventSource (the SSE spec)."""
    emulator = serve(*streaming_agents())
    server = backend(parlant_url=emulator.url)
    body = {"message": "hi", "intent": "research_paper"}

    streamed = httpx.post(f"{server.url}{CHAT}/stream", json=body, timeout=60)
    frames = sse_with_ids(streamed.text)
    token, last_id = frames[0][1]["session_id"], frames[-1][2]
    again = httpx.get(
        f"{server.url}/api/sessions/{token}/stream",
        headers={"Last-Event-ID": last_id},
        timeout=60,
    )
    replayed = httpx.get(f"{server.url}/api/sessions/{token}/stream", timeout=60)

    assert frames[-1][0] == "end"
    assert again.status_code == 204
    assert replayed.status_code == 200  # from its start, without Last-Event-ID
    assert sse_with_ids(replayed.text) == frames
    first_block = streamed.text.replace("\r\n", "\n").split("\n\n", 1)[0]
    assert "retry: 3000" in first_block.splitlines()


@pytest.mark.parametrize("origin", ["http://localhost:5173", "https://evil.example"])
def test_only_the_configured_origins_may_call_the_api_from_a_browser(
    origin: str, backend: Backend, serve: Serve
) -> None:
    emulator = serve(*streaming_agents())
    server = backend(parlant_url=emulator.url, cors_origins=("http://localhost:5173",))
    allowed = origin == "http://localhost:5173"
    preflight = httpx.options(
        f"{server.url}{CHAT}/stream",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=30,
    )
    body = {"message": "hi", "intent": "research_paper"}
    streamed = httpx.post(
        f"{server.url}{CHAT}/stream", json=body, headers={"Origin": origin}, timeout=60
    )

    assert preflight.status_code == (200 if allowed else 400)
    granted = streamed.headers.get("access-control-allow-origin")
    assert granted == (origin if allowed else None)
    assert sse_with_ids(streamed.text)[-1][0] == "end"  # CORS is the browser's to enforce


def test_no_origin_is_allowed_by_default(backend: Backend) -> None:
    server = backend()
    preflight = httpx.options(
        f"{server.url}{CHAT}",
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert "access-control-allow-origin" not in preflight.headers
