"""What the backend and the drills need of a supervisor: one process's or a sharded one."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Protocol

from parlant.client.types import Event
from prometheus_client import CollectorRegistry

from actors import MessageDelta, Reply
from supervisor._statistics import StopSummary, SupervisorStatistics

__all__ = ["Supervising"]


class Supervising(Protocol):
    """The asyncio calls `SessionSupervisor` and `ShardedSupervisor` both answer."""

    registry: CollectorRegistry

    async def aensure_agents(self, names: Sequence[str]) -> dict[str, str]: ...

    async def acreate_customer(self, name: str) -> str: ...

    async def acreate_session(
        self, agent_id: str, *, customer_id: str | None = None, title: str | None = None
    ) -> str: ...

    async def aask(
        self, session_id: str, message: str, *, timeout: float | None = None
    ) -> Reply: ...

    def astream(
        self, session_id: str, message: str, *, timeout: float | None = None
    ) -> AsyncGenerator[Event | MessageDelta, None]: ...

    def astream_text(
        self, session_id: str, message: str, *, timeout: float | None = None
    ) -> AsyncIterator[str]: ...

    def aevents(
        self, session_id: str, *, since: int | None = None
    ) -> AsyncGenerator[Event, None]: ...

    async def ahistory(self, session_id: str, *, since: int = 0) -> list[Event]: ...

    async def aclose(self, session_id: str) -> None: ...

    async def acheck_parlant(self, *, timeout: float | None = None) -> None: ...

    def statistics(self) -> SupervisorStatistics: ...

    async def astop(self, timeout: float | None = None) -> StopSummary: ...
