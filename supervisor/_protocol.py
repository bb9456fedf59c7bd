"""Supervising: the calls every supervisor answers, one process's or a sharded one."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from typing import Protocol, runtime_checkable

from parlant.client.types import Event
from prometheus_client import CollectorRegistry

from actors import MessageDelta, Reply
from supervisor._statistics import StopSummary, SupervisorStatistics

__all__ = ["Supervising"]


@runtime_checkable
class Supervising(Protocol):
    """The calls `SessionSupervisor` and `supervisor.sharding.ShardedSupervisor` both answer,
    with the same arguments, errors and behaviour: both are one facade, which checks and
    documents each call, over a different host (`tests/contract/` runs one suite against
    both). Code written against it (the reference backend, the failure drills) runs on either.

    Every blocking call has an `a`-prefixed asyncio twin; `SessionSupervisor` documents each.
    """

    registry: CollectorRegistry
    """Where the supervisor's metrics are registered."""

    def ensure_agents(self, names: Sequence[str]) -> dict[str, str]: ...

    async def aensure_agents(self, names: Sequence[str]) -> dict[str, str]: ...

    def create_customer(self, name: str) -> str: ...

    async def acreate_customer(self, name: str) -> str: ...

    def create_session(
        self,
        agent_id: str,
        *,
        customer_id: str | None = None,
        title: str | None = None,
        open: bool = True,
    ) -> str: ...

    async def acreate_session(
        self,
        agent_id: str,
        *,
        customer_id: str | None = None,
        title: str | None = None,
        open: bool = True,
    ) -> str: ...

    def open(self, session_id: str, *, since: int | None = None) -> None: ...

    def close(self, session_id: str) -> None: ...

    async def aclose(self, session_id: str) -> None: ...

    def sessions(self) -> list[str]: ...

    async def asessions(self) -> list[str]: ...

    def ask(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> Reply: ...

    async def aask(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> Reply: ...

    def stream(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> Generator[Event | MessageDelta, None, None]: ...

    def astream(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> AsyncGenerator[Event | MessageDelta, None]: ...

    def stream_text(
        self, session_id: str, message: str, *, timeout: float | None = None
    ) -> Iterator[str]: ...

    def astream_text(
        self, session_id: str, message: str, *, timeout: float | None = None
    ) -> AsyncIterator[str]: ...

    def events(
        self, session_id: str, *, since: int | None = None
    ) -> Generator[Event, None, None]: ...

    def aevents(
        self, session_id: str, *, since: int | None = None
    ) -> AsyncGenerator[Event, None]: ...

    def history(self, session_id: str, *, since: int = 0) -> list[Event]: ...

    async def ahistory(self, session_id: str, *, since: int = 0) -> list[Event]: ...

    def check_parlant(self, *, timeout: float | None = None) -> None: ...

    async def acheck_parlant(self, *, timeout: float | None = None) -> None: ...

    def statistics(self) -> SupervisorStatistics: ...

    def stop(self, timeout: float | None = None) -> StopSummary: ...

    async def astop(self, timeout: float | None = None) -> StopSummary: ...
