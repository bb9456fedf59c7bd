"""Small helpers shared by the integration tests."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from typing import Any

import pytest

from supervisor import SessionSupervisor
from supervisor.testing import EmulatorServer
from supervisor.testing._parlant_server import INSTALL_HINT


def new_session(server: EmulatorServer, sup: SessionSupervisor, agent: str = "echo") -> str:
    """A new Parlant session with the emulator's agent called `agent`, opened by `sup`."""
    return sup.create_session(server.call(server.emulator.agent_id, agent))


def until_events(server: EmulatorServer, session_id: str, count: int) -> None:
    """Return once the session has at least `count` events on the server."""
    emulator = server.emulator
    server.run(emulator.until(lambda: len(emulator.session_events(session_id)) >= count))


def messages(events: Iterable[dict[str, Any]]) -> list[str]:
    """The texts of the message events among `events` (as the server sends them), in order."""
    return [event["data"]["message"] for event in events if event["kind"] == "message"]


def require_parlant() -> None:
    """Skip unless the `[parlant-server]` extra is installed; under CI=true, fail instead: CI
    installs it, so a skip there would hide that the real-server tests never ran."""
    if importlib.util.find_spec("parlant") is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
