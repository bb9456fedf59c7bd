"""The demo: the reference backend on a free port, two conversations held through its HTTP API."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from supervisor._config import SupervisorConfig
from supervisor.backend import BackendSettings, create_app
from supervisor.emulator import AppServer

__all__ = ["run_demo"]


@dataclass(frozen=True, slots=True)
class _Turn:
    intent: str
    question: str
    stream: bool = False


_SCRIPT: Final = (
    _Turn("research_paper", "Tell me about CKD stage 3"),
    _Turn("research_paper", "What are the symptoms?", stream=True),
    _Turn("medical_welfare", "What support is there for dialysis patients?"),
    _Turn("medical_welfare", "And what about the cost?"),
)

_SUMMARY: Final = (
    ("parlant_supervisor_sessions_started_total", "sessions started"),
    ("parlant_supervisor_open_polls", "open polls"),
    ("parlant_supervisor_reply_latency_seconds_count", "replies"),
    ("parlant_supervisor_buffered_events", "buffered events"),
    ("parlant_supervisor_session_restarts_total", "restarts"),
    ("parlant_supervisor_turns_failed_total", "failed turns"),
)


def run_demo(console: Console, parlant_url: str | None, timeout: float) -> bool:
    """Hold the demo conversations through the backend; True if every turn was answered."""
    with tempfile.TemporaryDirectory(prefix="parlant-supervisor-demo-") as data_dir:
        settings = BackendSettings(
            parlant_url=parlant_url,
            ask_timeout=timeout,
            supervisor=SupervisorConfig(wait_for_data=30),
            data_dir=Path(data_dir),  # the demo's conversations are not worth keeping
        )
        return _converse(console, settings, parlant_url, timeout)


def _converse(
    console: Console, settings: BackendSettings, parlant_url: str | None, timeout: float
) -> bool:
    with AppServer(create_app(settings)) as backend:
        where = parlant_url or "the embedded emulator"
        # (no comma after the URL: rich would underline it as part of it)
        console.print(f"[bold]backend[/bold] at {backend.url} (Parlant: {where})")
        console.print(f"chat page: {backend.url}/ (while the demo runs; `serve` keeps one up)")
        with httpx.Client(base_url=backend.url, timeout=timeout + 30) as client:
            tokens: dict[str, str] = {}
            for turn in _SCRIPT:
                console.print(
                    Text.assemble("\n", (f"you -> {turn.intent}: ", "cyan"), turn.question)
                )
                body: dict[str, Any] = {"message": turn.question, "intent": turn.intent}
                if turn.intent in tokens:
                    body["session_id"] = tokens[turn.intent]
                token = (_stream if turn.stream else _ask)(console, client, body)
                if token is None:
                    return False
                tokens[turn.intent] = token
            _show_follow_up(console, client, tokens["research_paper"])
            console.print(_metrics_table(client.get("/metrics").text))
    return True


def _ask(console: Console, client: httpx.Client, body: dict[str, Any]) -> str | None:
    response = client.post("/api/chat", json=body)
    if response.status_code != 200:
        console.print(f"[red]HTTP {response.status_code}: {response.text}[/red]")
        return None
    answer = response.json()
    for message in answer["messages"]:
        label = "preamble" if message["preamble"] else "reply"
        style = "dim italic" if message["preamble"] else "default"
        console.print(Text.assemble("  ", (f"{label}: ", "green"), (message["text"], style)))
    return str(answer["session_id"])


def _stream(console: Console, client: httpx.Client, body: dict[str, Any]) -> str | None:
    """The turn through `/api/chat/stream`, printed as it arrives: each message's text as the
    agent writes it (the embedded agents stream their answers, a word at a time)."""
    token: str | None = None
    with client.stream("POST", "/api/chat/stream", json=body) as response:
        if response.status_code != 200:
            console.print(f"[red]HTTP {response.status_code}: {response.read().decode()}[/red]")
            return None
        kind = style_of = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                if kind == "session":
                    token = data["session_id"]
                elif kind == "status":
                    stage = f" ({data['stage']})" if data.get("stage") else ""
                    console.print(Text(f"  status: {data['status']}{stage}", style="dim"))
                elif kind == "text-start":
                    preamble = data["preamble"]
                    label, style_of = ("preamble", "dim italic") if preamble else ("streamed", "")
                    console.print(Text.assemble("  ", (f"{label}: ", "green")), end="")
                elif kind == "text-delta":
                    console.print(Text(data["delta"], style=style_of), end="")
                elif kind == "text-end":
                    console.print()
                elif kind == "error":
                    console.print(f"[red]stream failed: {data['detail']}[/red]")
                    return None
    return token


def _show_follow_up(console: Console, client: httpx.Client, token: str) -> None:
    """The research agent follows up after its `ready`: the conversation's history has it."""
    history = client.get(f"/api/sessions/{token}/messages").json()
    agent_messages = [m["text"] for m in history if m["source"] == "ai_agent" and not m["preamble"]]
    follow_ups = [text for text in agent_messages if text.startswith("Would you like")]
    if follow_ups:
        console.print(
            Text.assemble(
                "\n", ("follow-up after ready, in the history: ", "magenta"), follow_ups[0]
            )
        )


def _metrics_table(exposition: str) -> Panel:
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if not sample.labels
    }
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, label in _SUMMARY:
        if name in values:
            table.add_row(label, f"{values[name]:g}")
    replies = values.get("parlant_supervisor_reply_latency_seconds_count", 0.0)
    if replies:
        total = values["parlant_supervisor_reply_latency_seconds_sum"]
        table.add_row("mean reply latency", f"{1000 * total / replies:.1f} ms")
    return Panel(table, title="GET /metrics (summary)", expand=False)
