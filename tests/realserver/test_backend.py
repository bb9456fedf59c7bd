"""The reference backend on a real Parlant server: a conversation outlives the backend."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from supervisor import RequestBudget, SupervisorConfig
from supervisor.testing import AppServer, ParlantServer


def test_a_conversation_continues_across_a_backend_restart_on_a_real_server(
    null_parlant: ParlantServer, backend: Callable[..., AppServer], tmp_path: Path
) -> None:
    first = backend(parlant_url=null_parlant.url, data_dir=tmp_path)
    body = {"message": "first message", "intent": "medical_welfare"}
    opened = httpx.post(f"{first.url}/api/chat", json=body, timeout=60)
    token = opened.json()["session_id"]
    first.stop()

    second = backend(parlant_url=null_parlant.url, data_dir=tmp_path)
    body = {"message": "second message", "intent": "medical_welfare", "session_id": token}
    continued = httpx.post(f"{second.url}/api/chat", json=body, timeout=60)
    history = httpx.get(f"{second.url}/api/sessions/{token}/messages", timeout=60).json()

    assert opened.status_code == continued.status_code == 200
    assert continued.json()["session_id"] == token
    assert "second message" in continued.json()["reply"]
    customer = [m["text"] for m in history if m["source"] == "customer"]
    assert customer == ["first message", "second message"]
    assert [m["source"] for m in history].count("ai_agent") >= 2


def test_the_backend_converses_under_parlants_production_policy(
    production_parlant: ParlantServer, backend: Callable[..., AppServer]
) -> None:
    """Parlant's stock production policy forbids creating customers and listing agents
    (403): the backend opens guest sessions, takes its agents' ids from its settings, is
    ready by a probe the policy allows, and keeps within its rate limits."""
    app = backend(
        parlant_url=production_parlant.url,
        agent_ids={"research_paper": "Echo", "medical_welfare": "StreamingEcho"},
        supervisor=SupervisorConfig(request_budget=RequestBudget.parlant_production()),
    )
    with httpx.Client(base_url=app.url, timeout=60) as http:
        ready = http.get("/readyz")
        opened = http.post("/api/chat", json={"message": "hello there", "intent": "research_paper"})
        token = opened.json().get("session_id")
        body = {"message": "and again", "intent": "research_paper", "session_id": token}
        continued = http.post("/api/chat", json=body)
        body = {"message": "stream this answer", "intent": "medical_welfare"}
        with http.stream("POST", "/api/chat/stream", json=body) as stream:
            frames = [line for line in stream.iter_lines() if line.startswith("event: ")]

    assert ready.status_code == 200, ready.text
    assert opened.status_code == 200, opened.text
    assert opened.json()["reply"] == "echo: hello there"
    assert continued.status_code == 200, continued.text
    assert continued.json()["reply"] == "echo: and again"
    assert frames[-1] == "event: end"
    assert "event: text-delta" in frames


def test_serve_as_the_readme_deploys_it_against_parlants_production_policy(
    production_parlant: ParlantServer, tmp_path: Path
) -> None:
    """README, "Putting it on the internet": the command for a Parlant under its production
    policy (agent ids given, requests shaped to the policy's rate limits)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "supervisor", "serve", "--port", str(port),
        "--parlant", production_parlant.url,
        "--request-budget", "parlant-production",
        "--agent-id", "research_paper=Echo", "--agent-id", "medical_welfare=StreamingEcho",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PARLANT_SUPERVISOR_DATA_DIR": str(tmp_path)},
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:  # until uvicorn listens (or the process dies)
            if f"Uvicorn running on http://127.0.0.1:{port}" in line:
                break
        body = {"message": "hello from production", "intent": "research_paper"}
        answer = httpx.post(f"http://127.0.0.1:{port}/api/chat", json=body, timeout=60)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)

    assert answer.status_code == 200, answer.text
    assert answer.json()["reply"] == "echo: hello from production"
    assert ready.status_code == 200, ready.text
