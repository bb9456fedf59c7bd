"""The reference backend on a real Parlant server: a conversation outlives the backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

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
