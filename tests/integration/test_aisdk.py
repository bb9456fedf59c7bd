"""The Vercel AI SDK's own client (`ai` from npm, tests/aisdk/chat.mjs) against the reference
backend: `DefaultChatTransport` posting to `/api/chat` as `useChat` does, its chunks folded by
`readUIMessageStream`, two turns and a resume. It read 0 of 40 frames of the backend's own
protocol, and its body got 422."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from supervisor.testing import FAIL_MARKER, AppServer, EmulatedAgent, EmulatorServer, TurnContext

PACKAGE = Path(__file__).parents[1] / "aisdk"
Serve = Callable[..., EmulatorServer]


async def research(turn: TurnContext) -> None:
    turn.say("Let me check.", preamble=True)
    if turn.message == "One more":
        await turn.gate("third")
    await turn.reply(f"echo: {turn.message}")


def node() -> str:
    """Node.js, with the SDK installed (`.ci/test` does both); without them the test is
    skipped, and under CI=true it fails: CI must run it."""
    found = shutil.which("node")
    if found is None or not (PACKAGE / "node_modules" / "ai").is_dir():
        missing = f"needs Node.js 20+ and `npm ci` in {PACKAGE} (.ci/test does both)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return found


def test_the_ai_sdk_holds_a_conversation_and_resumes_a_running_turn(
    serve: Serve, backend: Callable[..., AppServer]
) -> None:
    server = serve(
        EmulatedAgent("ResearchPaperAgent", research, output_mode="stream", chunk_delay=0.001)
    )
    app = backend(parlant_url=server.url)
    chat_id = secrets.token_hex(16)
    process = subprocess.Popen(
        [node(), "chat.mjs", app.url, chat_id],
        cwd=PACKAGE,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        waiting = process.stdout.readline()
        assert json.loads(waiting or "null") == {"waiting": True}, process.stderr.read()
        server.call(server.emulator.release, "third")
        process.stdin.write("go\n")
        process.stdin.flush()
        result, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    seen: dict[str, Any] = json.loads(result)

    preamble = {"text": "Let me check.", "preamble": True}
    replies = ["Tell me about CKD stage 3", "And stage 4?", "One more", "One more"]
    assert [t["texts"] for t in seen["turns"]] == [
        [preamble, {"text": f"echo: {text}", "preamble": False}] for text in replies
    ]  # the last twice: read directly, and replayed from its start by the resume
    assert all("ready" in t["statuses"] for t in seen["turns"])
    assert seen["idleResume"] is None  # 204: no turn ran
    assert seen["chunkTypes"] == [
        "data-parlant-status", "finish", "start", "text-delta", "text-end", "text-start",
    ]  # fmt: skip
    # one conversation: the chat id named it through every turn
    assert len(server.call(server.emulator.session_ids)) == 1


def test_a_chat_id_too_short_to_be_a_secret_is_refused_with_the_rule(
    backend: Callable[..., AppServer],
) -> None:
    app = backend()
    body = {
        "id": "chat-1",
        "messages": [{"id": "u0", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        "trigger": "submit-message",
        "intent": "research_paper",
    }
    answer = httpx.post(f"{app.url}/api/chat", json=body, timeout=30)
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["body", "id"]


def test_the_resume_of_a_chat_nobody_opened_is_204(backend: Callable[..., AppServer]) -> None:
    app = backend()
    answer = httpx.get(f"{app.url}/api/chat/{secrets.token_hex(16)}/stream", timeout=30)
    assert answer.status_code == 204


def post_ui_message(app: AppServer, chat_id: str, text: str) -> httpx.Response:
    """What the SDK's `DefaultChatTransport` posts for a user's new message in chat `chat_id`."""
    user = {"id": secrets.token_hex(4), "role": "user", "parts": [{"type": "text", "text": text}]}
    body = {"id": chat_id, "messages": [user], "trigger": "submit-message"}
    return httpx.post(f"{app.url}/api/chat", json={**body, "intent": "research_paper"}, timeout=60)


def chunks(answer: httpx.Response) -> list[Any]:
    """The chunks of a UI message stream, its closing `[DONE]` checked."""
    assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
    data = [line[len("data: ") :] for line in answer.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_a_failed_turn_ends_the_sdks_stream_with_its_error_chunk_and_the_chat_goes_on(
    serve: Serve, backend: Callable[..., AppServer]
) -> None:
    server = serve(EmulatedAgent("ResearchPaperAgent", output_mode="stream"))  # fails on the marker
    app = backend(parlant_url=server.url)
    chat_id = secrets.token_hex(16)

    failed = post_ui_message(app, chat_id, f"please {FAIL_MARKER} now")
    recovered = post_ui_message(app, chat_id, "hello again")

    *_, last = chunks(failed)
    assert last["type"] == "error"
    assert last["errorText"].startswith("the agent failed to answer")  # curated, nothing internal
    assert "Traceback" not in failed.text
    assert chunks(recovered)[-1] == {"type": "finish"}


def test_a_chat_whose_conversation_expired_opens_a_new_one(
    serve: Serve, backend: Callable[..., AppServer]
) -> None:
    """It got 404 until the expired conversation was deleted, each time after creating (and
    closing) a Parlant session, and a new conversation after."""
    server = serve(EmulatedAgent("ResearchPaperAgent", output_mode="stream"))
    now = [1_000_000.0]
    app = backend(parlant_url=server.url, clock=lambda: now[0], conversation_ttl=60)
    chat_id = secrets.token_hex(16)

    first = post_ui_message(app, chat_id, "hello")
    now[0] += 120  # past the conversation's ttl
    second = post_ui_message(app, chat_id, "hello again")

    assert (first.status_code, second.status_code) == (200, 200)
    text = "".join(c["delta"] for c in chunks(second) if c["type"] == "text-delta")
    assert text == "echo: hello again"
    assert len(server.call(server.emulator.session_ids)) == 2
