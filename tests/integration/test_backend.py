"""The reference backend over real HTTP: uvicorn on 127.0.0.1, the supervisor in its lifespan."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from supervisor.testing import AppServer, EmulatedAgent, EmulatorServer, TurnContext, echo

Backend = Callable[..., AppServer]
Serve = Callable[..., EmulatorServer]
CHAT = "/api/chat"


def chat(server: AppServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{CHAT}", json=body, timeout=60)


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of each Server-Sent Event in a response body (comments left out)."""
    return [(event, data) for event, data, _ in sse_with_ids(text)]


def sse_with_ids(text: str) -> list[tuple[str, dict[str, Any], str]]:
    """(event, data, id) of each Server-Sent Event in a response body (comments left out)."""
    frames = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        frames.append((fields["event"], json.loads(fields["data"]), fields["id"]))
    return frames


def gated(name: str, gate: str) -> EmulatedAgent:
    async def script(turn: TurnContext) -> None:
        await turn.gate(gate)
        turn.say(f"echo: {turn.message}")

    return EmulatedAgent(name, script)


def test_two_turn_conversations_with_both_agents_on_the_embedded_default(
    backend: Backend,
) -> None:
    server = backend()

    first = chat(server, message="Tell me about CKD stage 3", intent="research_paper")
    token = first.json()["session_id"]
    second = chat(
        server, message="What are the symptoms?", intent="research_paper", session_id=token
    )
    welfare = chat(server, message="What support is there for dialysis?", intent="medical_welfare")
    cost = chat(
        server,
        message="And the cost?",
        intent="medical_welfare",
        session_id=welfare.json()["session_id"],
    )

    assert first.status_code == second.status_code == welfare.status_code == cost.status_code == 200
    assert first.json()["reply"].startswith("Chronic kidney disease stage 3 means an eGFR")
    assert [m["preamble"] for m in first.json()["messages"]] == [True, False]
    assert second.json()["session_id"] == token
    assert second.json()["reply"].startswith("Stage 3 is often silent")
    assert welfare.json()["reply"].startswith("Dialysis patients can usually claim transport")
    assert cost.json()["reply"].startswith("Treatment costs are typically covered")
    history = httpx.get(f"{server.url}/api/sessions/{token}/messages").json()
    assert [(m["source"], m["preamble"]) for m in history][:3] == [
        ("customer", False),
        ("ai_agent", True),
        ("ai_agent", False),
    ]


def test_conversations_in_parallel_each_get_their_own_replies(
    backend: Backend, serve: Serve
) -> None:
    emulator = serve()
    server = backend(parlant_url=emulator.url)

    async def converse(client: httpx.AsyncClient, n: int) -> list[str]:
        intent = "research_paper" if n % 2 else "medical_welfare"
        first = await client.post(CHAT, json={"message": f"hello {n}", "intent": intent})
        token = first.json()["session_id"]
        body = {"message": f"again {n}", "intent": intent, "session_id": token}
        second = await client.post(CHAT, json=body)
        return [first.json()["reply"], second.json()["reply"]]

    async def all_of_them() -> list[list[str]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(converse(client, n) for n in range(20)))

    replies = asyncio.run(all_of_them())

    assert replies == [[f"echo: hello {n}", f"echo: again {n}"] for n in range(20)]
    assert len(emulator.call(emulator.emulator.session_ids)) == 20


def test_a_streamed_turn_arrives_as_typed_server_sent_events_ending_at_ready(
    backend: Backend,
) -> None:
    server = backend()
    body = {"message": "Tell me about CKD stage 3", "intent": "research_paper"}

    response = httpx.post(f"{server.url}{CHAT}/stream", json=body, timeout=60)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = sse(response.text)
    kinds = [kind for kind, _ in frames]
    assert (kinds[0], kinds[-1]) == ("session", "end")
    assert frames[0][1]["session_id"] == frames[-1][1]["session_id"]
    texts = [data["text"] for kind, data in frames if kind == "text-end"]
    assert texts[0] == "One moment."
    assert texts[-1].startswith("Chronic kidney disease stage 3")
    assert kinds.count("text-delta") > 2  # the embedded agents stream their answers
    last_status = [data for kind, data in frames if kind == "status"][-1]
    assert last_status == {"status": "ready", "stage": "completed"}


def test_tokens_are_opaque_and_parlant_ids_open_nothing(backend: Backend, serve: Serve) -> None:
    emulator = serve()
    server = backend(parlant_url=emulator.url)

    mine = chat(server, message="my private question", intent="medical_welfare")
    [parlant_session] = emulator.call(emulator.emulator.session_ids)
    token = mine.json()["session_id"]

    assert len(token) >= 43  # 256 random bits, url-safe base64
    assert parlant_session not in mine.text
    for guess in (parlant_session, token[:-1] + ("A" if token[-1] != "A" else "B"), "s1"):
        hijack = chat(server, message="show me", intent="medical_welfare", session_id=guess)
        read = httpx.get(f"{server.url}/api/sessions/{guess}/messages")
        assert (hijack.status_code, read.status_code) == (404, 404)
        assert hijack.json() == {"detail": "unknown session_id", "session_id": guess}
    events = emulator.call(emulator.emulator.session_events, parlant_session)
    assert [e["data"]["message"] for e in events if e["kind"] == "message"] == [
        "my private question",
        "echo: my private question",
    ]


@pytest.mark.parametrize(
    ("send", "status", "detail"),
    [
        pytest.param(
            {"json": {"message": "", "intent": "research_paper"}}, 422, "at least 1", id="empty"
        ),
        pytest.param(
            {"json": {"message": "  \n", "intent": "research_paper"}}, 422, "blank", id="blank"
        ),
        pytest.param(  # a form feed: whitespace as Python strips it (schemathesis found it)
            {"json": {"message": "\f", "intent": "research_paper"}}, 422, "blank", id="form-feed"
        ),
        pytest.param(
            {"json": {"message": "x" * 32_769, "intent": "research_paper"}},
            422,
            "at most",
            id="too-long",
        ),
        pytest.param(
            {"json": {"message": "hi", "intent": "astrology"}}, 422, "research_paper", id="intent"
        ),
        pytest.param({"json": {"message": "hi"}}, 422, "intent", id="no-intent"),
        pytest.param(
            {"json": {"message": "hi", "intent": "research_paper", "extra": 1}},
            422,
            "extra",
            id="extra",
        ),
        pytest.param(
            {"content": b'{"message": "hi", ', "headers": {"content-type": "application/json"}},
            422,
            "JSON",
            id="malformed-json",
        ),
        pytest.param(
            {
                "content": b"message=hi",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            415,
            "application/json",
            id="content-type",
        ),
        pytest.param(
            {"json": {"message": "hi", "intent": "research_paper", "session_id": "nope"}},
            404,
            "unknown session_id",
            id="unknown-session",
        ),
    ],
)
@pytest.mark.parametrize("path", [CHAT, f"{CHAT}/stream"])
def test_bad_input_is_a_4xx_that_says_what_is_wrong_and_posts_nothing(
    backend: Backend, serve: Serve, send: dict[str, Any], status: int, detail: str, path: str
) -> None:
    emulator = serve()
    server = backend(parlant_url=emulator.url)

    response = httpx.post(f"{server.url}{path}", timeout=30, **send)

    assert response.status_code == status
    assert detail in json.dumps(response.json()["detail"])
    assert emulator.call(emulator.emulator.session_ids) == []


def test_a_token_used_with_the_other_agent_is_a_conflict(backend: Backend) -> None:
    server = backend()
    token = chat(server, message="hi", intent="research_paper").json()["session_id"]

    response = chat(server, message="hi", intent="medical_welfare", session_id=token)

    assert response.status_code == 409
    assert "research_paper" in response.json()["detail"]


def test_parlant_unreachable_is_a_503_with_a_reason_not_a_hang(backend: Backend) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = backend(parlant_url=f"http://127.0.0.1:{port}")

    response = chat(server, message="anyone?", intent="research_paper")
    ready = httpx.get(f"{server.url}/readyz")

    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]
    assert response.headers["retry-after"] == "5"
    assert ready.status_code == 503
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_an_ask_past_its_deadline_is_a_504_naming_the_session_and_the_late_reply_can_be_read(
    backend: Backend, serve: Serve
) -> None:
    emulator = serve(gated("ResearchPaperAgent", "slow"))
    server = backend(parlant_url=emulator.url, ask_timeout=0.5)

    late = chat(server, message="take your time", intent="research_paper")
    token = late.json()["session_id"]
    emulator.call(emulator.emulator.release, "slow")
    [session_id] = emulator.call(emulator.emulator.session_ids)
    events = emulator.emulator
    emulator.run(events.until(lambda: len(events.session_events(session_id)) >= 5))
    history = httpx.get(f"{server.url}/api/sessions/{token}/messages").json()

    assert late.status_code == 504
    assert "deadline" in late.json()["detail"]
    assert [m["text"] for m in history] == ["take your time", "echo: take your time"]


def test_a_closed_conversation_is_gone(backend: Backend) -> None:
    server = backend()
    token = chat(server, message="hi", intent="research_paper").json()["session_id"]

    closed = httpx.delete(f"{server.url}/api/sessions/{token}")
    after = chat(server, message="still there?", intent="research_paper", session_id=token)
    again = httpx.delete(f"{server.url}/api/sessions/{token}")

    assert (closed.status_code, after.status_code, again.status_code) == (204, 404, 404)


def test_metrics_health_and_readiness(backend: Backend) -> None:
    server = backend()
    chat(server, message="hi", intent="research_paper")

    metrics = httpx.get(f"{server.url}/metrics")
    ready = httpx.get(f"{server.url}/readyz")

    assert metrics.status_code == 200
    assert "parlant_supervisor_sessions_started_total 1.0" in metrics.text
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


def test_shutdown_drains_requests_in_flight_then_stops_the_supervisor(
    backend: Backend, serve: Serve
) -> None:
    emulator = serve(
        gated("ResearchPaperAgent", "drain"), EmulatedAgent("MedicalWelfareAgent", echo())
    )
    server = backend(parlant_url=emulator.url)
    events = emulator.emulator

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pending = pool.submit(chat, server, message="finish me", intent="research_paper")
        emulator.run(
            events.until(lambda: any(events.session_events(s) for s in events.session_ids()))
        )
        supervisor = server.app.state.backend.supervisor
        stopping = pool.submit(server.stop)  # uvicorn stops accepting, waits for `pending`
        emulator.call(events.release, "drain")
        response = pending.result(timeout=30)
        stopping.result(timeout=30)

    assert response.status_code == 200
    assert response.json()["reply"] == "echo: finish me"
    assert not supervisor.statistics().running
    assert not any(thread.is_alive() for thread in supervisor.runtime.threads())
