"""The two agents of the reference backend, scripted: on the emulator (`serve`, the embedded
default) and on a real Parlant server started locally (`serve --parlant local`). Their replies
are canned (and say so), the same on both, so a two-turn demo reads sensibly."""

from __future__ import annotations

from typing import Final

from supervisor.emulator import EmulatedAgent, TurnContext
from supervisor.testing import ParlantServer, Utterance

__all__ = ["EMBEDDED_AGENTS", "answer", "local_parlant"]

_DISCLAIMER: Final = "(scripted; not medical advice)"


class _Agent:
    def __init__(self, name: str, description: str, table: dict[str, str], fallback: str) -> None:
        self.name = name
        self.description = description
        self.table = table
        self.fallback = fallback

    def answer(self, message: str) -> str:
        """The answer of the first key found in `message` (case-insensitive), else the
        fallback."""
        lowered = message.lower()
        text = next((text for key, text in self.table.items() if key in lowered), self.fallback)
        return f"{text} {_DISCLAIMER}"


_RESEARCH: Final = _Agent(
    "ResearchPaperAgent",
    "Summarises and finds research papers on kidney disease.",
    {
        "ckd": (
            "Chronic kidney disease stage 3 means an eGFR of 30-59 mL/min/1.73m2. Papers worth "
            "reading: KDIGO 2024 CKD guideline; CREDENCE (canagliflozin); DAPA-CKD "
            "(dapagliflozin)."
        ),
        "symptom": (
            "Stage 3 is often silent; reported symptoms include fatigue, oedema and changes in "
            "urination. Cohort studies track eGFR slope rather than symptoms."
        ),
    },
    "I can summarise research papers on kidney disease; ask about a stage or a treatment.",
)
_WELFARE: Final = _Agent(
    "MedicalWelfareAgent",
    "Explains welfare support for patients.",
    {
        "dialysis": (
            "Dialysis patients can usually claim transport to treatment, and may qualify for a "
            "disability allowance; a social worker at the renal unit can start the application."
        ),
        "cost": "Treatment costs are typically covered; ask your insurer about co-payments.",
    },
    "I can explain welfare support for patients; ask about a treatment.",
)
_AGENTS: Final = {agent.name: agent for agent in (_RESEARCH, _WELFARE)}


_CHUNK_DELAY: Final = 0.03
"""Seconds between two words of a streamed answer."""


def answer(utterance: Utterance) -> str:
    """The scripted answer of the agent named in `utterance` (a local Parlant server's reply
    function; an agent of another name echoes)."""
    agent = _AGENTS.get(utterance.agent)
    return agent.answer(utterance.message) if agent else f"echo: {utterance.message}"


def _emulated(agent: _Agent, *, preamble: bool, follow_up: str | None) -> EmulatedAgent:
    async def script(turn: TurnContext) -> None:
        turn.status("typing")
        await turn.reply(agent.answer(turn.message))
        if follow_up is not None:
            turn.follow_up(follow_up)

    return EmulatedAgent(
        agent.name,
        script,
        description=agent.description,
        preamble=preamble,
        output_mode="stream",  # as chat UIs run Parlant: the answer is streamed
        chunk_delay=_CHUNK_DELAY,
    )


EMBEDDED_AGENTS: Final = (
    _emulated(_RESEARCH, preamble=True, follow_up="Would you like the full citations as well?"),
    _emulated(_WELFARE, preamble=False, follow_up=None),
)
"""The research-paper and medical-welfare agents of the embedded default."""


def local_parlant(*, parlant_module: bool = True) -> ParlantServer:
    """A real Parlant server on 127.0.0.1 (the `[parlant-server]` extra) serving the same two
    agents with the same scripted answers, under Parlant's stock perceived-performance policy
    (a preamble and an intermediate `ready`; 3-4 s per turn), with `supervisor.parlant_module`
    loaded unless told otherwise (waiting on it costs nothing)."""
    return ParlantServer(
        agents={agent.name: agent.description for agent in _AGENTS.values()},
        policy="stock",
        reply=f"{__name__}:answer",
        streaming=list(_AGENTS),
        chunk_delay=_CHUNK_DELAY,
        parlant_module=parlant_module,
    )
