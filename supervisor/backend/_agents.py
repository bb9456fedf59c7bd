"""The agents the backend routes to: thin classes over the supervisor, no polling of their own."""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from typing import ClassVar

import structlog
from parlant.client.types import Event

from actors import AccessDenied, MessageDelta, Reply
from supervisor import Supervising

_log = structlog.get_logger("supervisor.backend")

__all__ = ["AGENTS", "ChatAgent", "Intent", "MedicalWelfareAgent", "ResearchPaperAgent"]


class Intent(enum.StrEnum):
    """Which agent a chat message is for."""

    RESEARCH_PAPER = "research_paper"
    MEDICAL_WELFARE = "medical_welfare"


class ChatAgent:
    """One Parlant agent, reached through the supervisor: the seed's `process` interface.

    Subclasses name the Parlant agent (`name`, found or created by that name) and the intent
    they serve. Sessions are Parlant session ids: mapping them to what clients see is the
    web layer's business.
    """

    name: ClassVar[str]
    intent: ClassVar[Intent]

    def __init__(self, supervisor: Supervising, agent_id: str, *, timeout: float) -> None:
        self.supervisor = supervisor
        self.agent_id = agent_id
        self.timeout = timeout
        self._guests = False  # Parlant refused to create customers: guest sessions since

    async def start(self) -> str:
        """A new conversation: a new Parlant customer and session with this agent; where
        Parlant forbids creating customers (its production policy), a guest session."""
        if not self._guests:
            try:
                customer_id = await self.supervisor.acreate_customer(f"{self.name} customer")
            except AccessDenied:
                self._guests = True  # for good: the policy does not change under us
                _log.info("backend.guest_sessions", agent=self.name)
            else:
                return await self.supervisor.acreate_session(self.agent_id, customer_id=customer_id)
        return await self.supervisor.acreate_session(self.agent_id)

    async def process(self, message: str, session_id: str) -> Reply:
        """Post `message` and return the turn that answers it (ReplyTimeout past `timeout`)."""
        return await self.supervisor.aask(session_id, message, timeout=self.timeout)

    def process_stream(
        self, message: str, session_id: str
    ) -> AsyncGenerator[Event | MessageDelta, None]:
        """Post `message` and yield the answering turn's events live (and its streamed
        messages' deltas), ending at its `ready`."""
        return self.supervisor.astream(session_id, message, timeout=self.timeout)


class ResearchPaperAgent(ChatAgent):
    """Summarises and finds research papers."""

    name = "ResearchPaperAgent"
    intent = Intent.RESEARCH_PAPER


class MedicalWelfareAgent(ChatAgent):
    """Explains welfare support for patients."""

    name = "MedicalWelfareAgent"
    intent = Intent.MEDICAL_WELFARE


AGENTS: tuple[type[ChatAgent], ...] = (ResearchPaperAgent, MedicalWelfareAgent)
"""The agent class of each intent."""
