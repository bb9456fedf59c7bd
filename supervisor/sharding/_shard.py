"""One shard: a `SessionSupervisor` inside a Ray actor (a process of its own).

Ray runs every method of this async actor on the actor's event loop, many at once; each
forwards to the supervisor's asyncio API. Streams and readers are async generators, which Ray
streams to the caller one event at a time (a Ray generator), never a whole turn at once.
When Ray restarts a dead shard it runs `__init__` again: a new supervisor that knows no session
until the driver opens them again, each from its durable checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Sequence

import structlog
from parlant.client.types import Event
from prometheus_client import generate_latest

from actors import MessageDelta, Reply
from supervisor._config import SupervisorConfig
from supervisor._facade import SessionSupervisor
from supervisor._statistics import StopSummary, SupervisorStatistics

__all__ = ["Shard"]


class Shard:
    """The body of a shard actor (wrapped with `ray.remote` by `ShardedSupervisor`)."""

    def __init__(
        self, name: str, parlant_url: str, config: SupervisorConfig, log_level: int
    ) -> None:
        # the shard is a process of its own: it decides what it logs (Ray forwards its output
        # to the driver, each line prefixed with the shard's pid)
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(log_level))
        logging.getLogger("pykka").setLevel(max(log_level, logging.WARNING))
        self.name = name
        self.incarnation = uuid.uuid4().hex  # a restarted shard has a new one
        self._supervisor = SessionSupervisor(parlant_url, config=config)

    async def ping(self) -> str:
        """This incarnation's id (it changes when Ray restarts the shard)."""
        return self.incarnation

    async def open(self, session_id: str, since: int | None) -> None:
        await asyncio.to_thread(self._supervisor.open, session_id, since=since)

    async def open_many(self, session_ids: list[str]) -> None:
        """Open each session from its checkpoint (a restarted shard's sessions)."""
        for session_id in session_ids:
            await asyncio.to_thread(self._supervisor.open, session_id)

    async def close(self, session_id: str) -> None:
        await self._supervisor.aclose(session_id)

    async def ask(
        self, session_id: str, message: str, timeout: float | None, key: str, maybe_sent: bool
    ) -> Reply:
        """An ask whose message is posted with `key`; `maybe_sent`: a dead incarnation of this
        shard may have posted it (the log tells: it is posted at most once)."""
        return await self._supervisor.aask(
            session_id, message, timeout=timeout, post_key=key, maybe_sent=maybe_sent
        )

    async def stream(
        self, session_id: str, message: str, timeout: float | None, key: str, maybe_sent: bool
    ) -> AsyncGenerator[Event | MessageDelta, None]:
        """A stream whose message is posted as `ask` says."""
        stream = self._supervisor.astream(
            session_id, message, timeout=timeout, post_key=key, maybe_sent=maybe_sent
        )
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()

    async def events(self, session_id: str, since: int | None) -> AsyncGenerator[Event | int, None]:
        """The reader's events, after one int: the offset no event of it is below. The events
        this shard takes are consumed here (its checkpoint moves past them) before its driver
        has them; if the shard dies then, the driver resumes the reader from that offset."""
        floor = self._supervisor.checkpoint(session_id) if since is None else since
        reader = self._supervisor.aevents(session_id, since=since)
        yield floor
        try:
            async for event in reader:
                yield event
        finally:
            await reader.aclose()

    async def create_session(
        self, agent_id: str, customer_id: str | None, title: str | None
    ) -> str:
        # created here, polled by the shard its id hashes to (which the driver opens it on)
        return await self._supervisor.acreate_session(
            agent_id, customer_id=customer_id, title=title, open=False
        )

    async def create_customer(self, name: str) -> str:
        return await self._supervisor.acreate_customer(name)

    async def ensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        return await self._supervisor.aensure_agents(names)

    async def history(self, session_id: str, since: int) -> list[Event]:
        return await self._supervisor.ahistory(session_id, since=since)

    async def check_parlant(self, timeout: float | None) -> None:
        await self._supervisor.acheck_parlant(timeout=timeout)

    async def sessions(self) -> list[str]:
        return await self._supervisor.asessions()

    async def statistics(self) -> SupervisorStatistics:
        return self._supervisor.statistics()

    async def metrics(self) -> bytes:
        """This shard's metrics in Prometheus' text format."""
        return generate_latest(self._supervisor.registry)

    async def rss(self) -> int:
        """This shard process' resident memory, in bytes (0 where /proc cannot tell)."""
        return _rss()

    async def stop(self, timeout: float | None) -> StopSummary:
        return await self._supervisor.astop(timeout)


def _rss() -> int:
    try:
        with open("/proc/self/status") as status:  # a memory read, never blocks
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
