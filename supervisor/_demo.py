"""The demo conversation: two agents on the embedded emulator, or any Parlant server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from parlant.client import ParlantClient
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from supervisor._config import SupervisorConfig
from supervisor._facade import SessionSupervisor
from supervisor._statistics import SupervisorStatistics
from supervisor.testing import EmulatedAgent, EmulatorServer, ParlantEmulator, TurnContext

__all__ = ["DEMO_AGENTS", "run_demo"]

_DISCLAIMER: Final = "(scripted by the emulator; not medical advice)"

_RESEARCH: Final = {
    "ckd": (
        "Chronic kidney disease stage 3 means an eGFR of 30-59 mL/min/1.73m2. Papers worth "
        "reading: KDIGO 2024 CKD guideline; CREDENCE (canagliflozin); DAPA-CKD (dapagliflozin)."
    ),
    "symptom": (
        "Stage 3 is often silent; reported symptoms include fatigue, oedema and changes in "
        "urination. Cohort studies track eGFR slope rather than symptoms."
    ),
}
_WELFARE: Final = {
    "dialysis": (
        "Dialysis patients can usually claim transport to treatment, and may qualify for a "
        "disability allowance; a social worker at the renal unit can start the application."
    ),
    "cost": "Treatment costs are typically covered; ask your insurer about co-payments.",
}


def _answers(table: dict[str, str], fallback: str, follow_up: str | None = None) -> EmulatedAgent:
    async def script(turn: TurnContext) -> None:
        turn.status("typing")
        lowered = turn.message.lower()
        answer = next((text for key, text in table.items() if key in lowered), fallback)
        turn.say(f"{answer} {_DISCLAIMER}")
        if follow_up is not None:
            turn.follow_up(follow_up)

    return EmulatedAgent(
        "ResearchPaperAgent" if table is _RESEARCH else "MedicalWelfareAgent",
        script,
        preamble=table is _RESEARCH,
        intermediate_ready=True,
    )


DEMO_AGENTS: Final = (
    _answers(
        _RESEARCH,
        "I can summarise research papers on kidney disease; ask about a stage or a treatment.",
        follow_up="Would you like the full citations as well?",
    ),
    _answers(_WELFARE, "I can explain welfare support for patients; ask about a treatment."),
)
"""The research-paper and medical-welfare agents the demo (and the embedded default) serve."""


@dataclass(frozen=True, slots=True)
class _Turn:
    agent: str
    question: str
    stream: bool = False


_SCRIPT: Final = (
    _Turn("ResearchPaperAgent", "Tell me about CKD stage 3"),
    _Turn("ResearchPaperAgent", "What are the symptoms?", stream=True),
    _Turn("MedicalWelfareAgent", "What support is there for dialysis patients?"),
    _Turn("MedicalWelfareAgent", "And what about the cost?"),
)


def run_demo(console: Console, parlant_url: str | None, timeout: float) -> SupervisorStatistics:
    """Hold the demo conversations; returns the statistics taken before stopping."""
    server = None if parlant_url else EmulatorServer(ParlantEmulator(DEMO_AGENTS))
    url = parlant_url or (server.url if server else "")
    console.print(
        f"[bold]Parlant[/bold] at {url}" + (" [dim](embedded emulator)[/dim]" if server else "")
    )
    try:
        with SessionSupervisor(url, config=SupervisorConfig(wait_for_data=30)) as sup:
            agents = _agent_ids(url, server)
            sessions = {name: sup.create_session(agent_id) for name, agent_id in agents.items()}
            for turn in _SCRIPT:
                session_id = sessions[turn.agent]
                console.print(
                    Text.assemble("\n", (f"you -> {turn.agent}: ", "cyan"), turn.question)
                )
                if turn.stream:
                    _stream(console, sup, session_id, turn.question, timeout)
                else:
                    reply = sup.ask(session_id, turn.question, timeout=timeout)
                    for message in reply.messages:
                        label = "preamble" if message.is_preamble else "reply"
                        style = "dim italic" if message.is_preamble else "default"
                        console.print(
                            Text.assemble("  ", (f"{label}: ", "green"), (message.text, style))
                        )
            if server is not None:  # only the emulator's agent is scripted to follow up
                reader = sup.events(sessions["ResearchPaperAgent"])
                follow_up = next(
                    e for e in reader if e.kind == "message" and e.source == "ai_agent"
                )
                reader.close()
                text = follow_up.data.get("message") if isinstance(follow_up.data, dict) else ""
                console.print(
                    Text.assemble(
                        "\n", ("follow-up after ready, read with events(): ", "magenta"), str(text)
                    )
                )
            statistics = sup.statistics()
            console.print(_statistics_table(statistics))
        return statistics
    finally:
        if server is not None:
            server.stop()


def _agent_ids(url: str, server: EmulatorServer | None) -> dict[str, str]:
    """The demo agents' ids: the emulator's, or found (else created) by name on a server."""
    names = [agent.name for agent in DEMO_AGENTS]
    if server is not None:
        return {name: server.call(server.emulator.agent_id, name) for name in names}
    client = ParlantClient(base_url=url)
    existing = {agent.name: agent.id for agent in client.agents.list()}
    return {name: existing.get(name) or client.agents.create(name=name).id for name in names}


def _stream(
    console: Console, sup: SessionSupervisor, session_id: str, question: str, timeout: float
) -> None:
    for event in sup.stream(session_id, question, timeout=timeout):
        data = event.data if isinstance(event.data, dict) else {}
        if event.kind == "status":
            inner = data.get("data")
            stage = inner.get("stage") if isinstance(inner, dict) else None
            line = f"  status: {data.get('status')}" + (f" ({stage})" if stage else "")
            console.print(Text(line, style="dim"))
        elif event.kind == "message":
            console.print(Text.assemble("  ", ("streamed: ", "green"), str(data.get("message"))))


def _statistics_table(statistics: SupervisorStatistics) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    for state, count in statistics.sessions_by_state.items():
        if count:
            table.add_row(f"sessions {state.value}", str(count))
    table.add_row("sessions started", str(statistics.sessions_started_total))
    table.add_row("open polls", str(statistics.open_polls))
    table.add_row("buffered events", str(statistics.buffered_events))
    table.add_row("waiting replies", str(statistics.waiting_replies))
    table.add_row("failing sessions", str(statistics.failing_sessions))
    return Panel(table, title="statistics()", expand=False)
