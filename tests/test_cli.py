"""The README's main job, run the way a new user runs it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from supervisor.testing import EmulatorServer


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_on_the_embedded_emulator_holds_every_conversation_and_exits_0() -> None:
    result = run_cli("demo")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "embedded emulator" in out
    assert "preamble: One moment." in out
    assert "status: ready (completed)" in out
    assert "follow-up after ready, read with events(): Would you like the full citations" in out
    assert "demo finished" in out
    assert "session.started" not in out  # info logs only with --verbose


def test_demo_against_a_given_parlant_url_creates_its_agents_there(
    serve: Callable[..., EmulatorServer],
) -> None:
    server = serve()

    result = run_cli("demo", "--parlant-url", server.url, "--timeout", "30")

    assert result.returncode == 0, result.stderr
    assert "reply: echo: Tell me about CKD stage 3" in result.stdout
    names = [a["name"] for a in server.call(server.emulator.agents)]
    assert {"ResearchPaperAgent", "MedicalWelfareAgent"} <= set(names)


def test_an_unknown_command_fails_with_usage() -> None:
    result = run_cli("frobnicate")

    assert result.returncode == 2
    assert "No such command" in result.stderr
