"""Small helpers shared by the integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import httpx
import pytest

from supervisor import SessionSupervisor
from supervisor._extras import missing_modules
from supervisor.testing import EmulatorServer, wait_until
from supervisor.testing._parlant_server import INSTALL_HINT


def new_session(server: EmulatorServer, sup: SessionSupervisor, agent: str = "echo") -> str:
    """A new Parlant session with the emulator's agent called `agent`, opened by `sup`."""
    return sup.create_session(server.call(server.emulator.agent_id, agent))


def until_events(server: EmulatorServer, session_id: str, count: int) -> None:
    """Return once the session has at least `count` events on the server."""
    emulator = server.emulator
    server.run(emulator.until(lambda: len(emulator.session_events(session_id)) >= count))


def failures(sup: SessionSupervisor, session_id: str) -> int:
    """The session's failed polls since its last good one (0 without a live actor)."""
    snapshot = sup.runtime.snapshot(session_id)
    return snapshot.consecutive_failures if snapshot is not None else 0


def failed_with(sup: SessionSupervisor, session_id: str, count: int = 1) -> None:
    """Return once the session has handled `count` failed polls in a row (then settled)."""
    wait_until(
        sup,
        lambda: failures(sup, session_id) >= count,
        what=f"{count} failed poll(s) of {session_id}",
    )


def last_failure(sup: SessionSupervisor, session_id: str) -> tuple[str, str]:
    """The kind and detail of the session's latest failed poll."""
    snapshot = sup.runtime.snapshot(session_id)
    assert snapshot is not None
    assert snapshot.last_failure is not None, snapshot
    return snapshot.last_failure.kind.value, snapshot.last_failure.detail


def session_with(sup: SessionSupervisor, agent: str = "Echo") -> str:
    """A new customer and session with the agent called `agent` (found by name, on any
    server), opened by `sup`."""
    agent_id = sup.ensure_agents([agent])[agent]
    return sup.create_session(agent_id, customer_id=sup.create_customer("test customer"))


def post_as_human_agent(url: str, session_id: str, text: str, name: str = "Dana") -> Any:
    """A human agent writes into the session, outside any customer turn (the httpx response)."""
    return httpx.post(
        f"{url}/sessions/{session_id}/events",
        json={
            "kind": "message",
            "source": "human_agent",
            "message": text,
            "participant": {"display_name": name},
        },
    )


def messages(events: Iterable[dict[str, Any]]) -> list[str]:
    """The texts of the message events among `events` (as the server sends them), in order."""
    return [event["data"]["message"] for event in events if event["kind"] == "message"]


def require_parlant() -> None:
    """Skip unless the `[parlant-server]` extra is installed (see `require_module`)."""
    require_module("parlant.sdk", INSTALL_HINT)  # `parlant` alone is parlant-client's too


def require_module(module: str, hint: str) -> None:
    """Skip unless `module` (an extra's) is installed; under CI=true, fail instead: CI installs
    every extra, so a skip there would hide that the tests needing it never ran."""
    if missing_modules(module):
        if os.environ.get("CI"):
            pytest.fail(hint)
        pytest.skip(hint)
