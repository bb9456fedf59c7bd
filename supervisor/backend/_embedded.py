"""The embedded default: the two agents, scripted on the emulator, that `serve` runs without a
Parlant server. Their replies are canned (and say so), so a two-turn demo reads sensibly."""

from __future__ import annotations

from typing import Final

from supervisor.testing import EmulatedAgent, TurnContext

__all__ = ["EMBEDDED_AGENTS"]

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


def _answers(
    name: str,
    table: dict[str, str],
    fallback: str,
    *,
    preamble: bool = False,
    follow_up: str | None = None,
) -> EmulatedAgent:
    """An agent that answers from `table` (first key found in the message), else `fallback`."""

    async def script(turn: TurnContext) -> None:
        turn.status("typing")
        lowered = turn.message.lower()
        answer = next((text for key, text in table.items() if key in lowered), fallback)
        turn.say(f"{answer} {_DISCLAIMER}")
        if follow_up is not None:
            turn.follow_up(follow_up)

    return EmulatedAgent(name, script, preamble=preamble, intermediate_ready=True)


EMBEDDED_AGENTS: Final = (
    _answers(
        "ResearchPaperAgent",
        _RESEARCH,
        "I can summarise research papers on kidney disease; ask about a stage or a treatment.",
        preamble=True,
        follow_up="Would you like the full citations as well?",
    ),
    _answers(
        "MedicalWelfareAgent",
        _WELFARE,
        "I can explain welfare support for patients; ask about a treatment.",
    ),
)
"""The research-paper and medical-welfare agents of the embedded default."""
