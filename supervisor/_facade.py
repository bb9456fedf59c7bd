"""SessionSupervisor: the thread-safe facade a backend embeds for its lifetime, over the
local host (every session's actor in this process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any, Final, TypeVar, final

import pykka
from parlant.client.types import Event
from prometheus_client import CollectorRegistry

from actors import (
    InvalidInput,
    MessageDelta,
    Reply,
    SessionClosed,
    SessionState,
    SessionUnresponsive,
    SupervisorStopped,
)
from actors.events import StreamItem
from actors.runtime import (
    AwaitReply,
    Clock,
    ConsumerKind,
    Deadline,
    ParlantApi,
    Subscribe,
    Unsubscribe,
)
from metrics import StatisticsCollector
from supervisor._config import SupervisorConfig
from supervisor._consumers import Ended, EventConsumer, ReplyConsumer
from supervisor._host import Ask, HostedSupervisor
from supervisor._runtime import Runtime
from supervisor._statistics import StopSummary, SupervisorStatistics
from supervisor._supervisor import Close, ListSessions, Open

__all__ = ["SessionSupervisor"]

C = TypeVar("C", ReplyConsumer, EventConsumer)
_SAFETY_MARGIN: Final = 30.0
"""Real seconds a blocked caller waits past its deadline before giving up on the actor."""


@final
class SessionSupervisor(HostedSupervisor):
    """Keeps Parlant conversations alive: one supervised actor per session, polling continuously.

    Thread-safe; every blocking call has an `a`-prefixed asyncio twin. Use it as a context
    manager (or `async with`), or call `stop()`: it owns threads.

    Example:
        >>> with SessionSupervisor("http://127.0.0.1:8800") as sup:
        ...     reply = sup.ask(session_id, "Tell me about CKD stage 3", timeout=120)
        ...     print(reply.text)
    """

    def __init__(
        self,
        parlant_url: str,
        *,
        config: SupervisorConfig | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Start the I/O thread and the Supervisor actor (sessions start on first use).

        Args:
            parlant_url: Base URL of the Parlant server, e.g. `http://127.0.0.1:8800`.
            config: Polling, buffering and shutdown settings.
            clock: A clock to use instead of the system's (tests pass a `FakeClock`).
            registry: Where the metrics are registered: by default a registry of this
                supervisor's own (`self.registry`); pass `prometheus_client.REGISTRY` for the
                global one. One supervisor per registry; `stop()` unregisters them.
        """
        if not parlant_url.startswith(("http://", "https://")):
            raise InvalidInput(f"parlant_url must be an http(s) URL, got {parlant_url!r}")
        config = config or SupervisorConfig()
        parlant_url = parlant_url.rstrip("/")
        self.registry = registry if registry is not None else CollectorRegistry()
        runtime = Runtime(parlant_url, config, self.registry, clock)
        self._local = _LocalHost(runtime, config, self.registry)
        super().__init__(self._local, parlant_url, config)

    @property
    def runtime(self) -> Runtime:
        """The threads, loop and actors this supervisor runs on, for tools and tests
        (`supervisor.testing`); application code needs only the calls below."""
        return self._local.runtime

    def checkpoint(self, session_id: str) -> int:
        """The session's checkpoint here: every event below it was consumed (0 when it has no
        live actor). No `events()` reader subscribing now without `since` gets an event below
        it, so a reader that must resume elsewhere (a sharded reader whose shard died) resumes
        from it. Cheap: no actor is asked."""
        self._require("session_id", session_id)
        snapshot = self.runtime.sessions.board.snapshot(session_id)
        return snapshot.checkpoint if snapshot is not None else 0


@final
class _LocalHost:
    """The sessions in this process: one `SessionActor` each, on the runtime's threads."""

    def __init__(
        self, runtime: Runtime, config: SupervisorConfig, registry: CollectorRegistry
    ) -> None:
        self.runtime = runtime
        self._config = config
        self._registry = registry
        self._clock = runtime.clock
        self._stopping = False
        # registered once there is something to collect: a scrape may come at once
        self._collector = StatisticsCollector(self.statistics)
        registry.register(self._collector)

    # --- requests to Parlant --------------------------------------------------------------

    def create_session(self, agent_id: str, customer_id: str | None, title: str | None) -> str:
        return self.runtime.call(self._api.create_session(agent_id, customer_id, title))

    async def acreate_session(
        self, agent_id: str, customer_id: str | None, title: str | None
    ) -> str:
        return await self.runtime.acall(self._api.create_session(agent_id, customer_id, title))

    def create_customer(self, name: str) -> str:
        return self.runtime.call(self._api.create_customer(name))

    async def acreate_customer(self, name: str) -> str:
        return await self.runtime.acall(self._api.create_customer(name))

    def ensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        return self.runtime.call(self._api.ensure_agents(names))

    async def aensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        return await self.runtime.acall(self._api.ensure_agents(names))

    def history(self, session_id: str, since: int) -> list[Event]:
        return self.runtime.call(self._api.read_events(session_id, since), session_id)

    async def ahistory(self, session_id: str, since: int) -> list[Event]:
        return await self.runtime.acall(self._api.read_events(session_id, since), session_id)

    def check_parlant(self, timeout: float | None) -> None:
        self.runtime.call(self._api.ping(timeout))

    async def acheck_parlant(self, timeout: float | None) -> None:
        await self.runtime.acall(self._api.ping(timeout))

    @property
    def _api(self) -> ParlantApi:
        return self.runtime.api

    # --- sessions -------------------------------------------------------------------------

    def open(self, session_id: str, since: int | None) -> None:
        self.runtime.tell(Open(session_id, since), session_id)

    def close(self, session_id: str) -> None:
        deadline = Deadline(self._config.stop_timeout)
        error = SessionClosed(
            f"session {session_id} was closed while this call waited; open it again to continue",
            session_id=session_id,
        )
        try:
            # answered at once with the stopping actor's future, if the session had one
            stopping: pykka.Future[Any] | None = self.runtime.supervisor.ask(
                Close(session_id, error), block=True, timeout=max(0.0, deadline.remaining())
            )
            if stopping is not None:
                stopping.get(timeout=max(0.0, deadline.remaining()))
        except pykka.ActorDeadError:
            return  # stopped meanwhile: every session with it
        except pykka.Timeout:
            raise self._unanswered(session_id, "close") from None

    def sessions(self) -> list[str]:
        try:
            sessions: list[str] = self.runtime.supervisor.ask(
                ListSessions(), block=True, timeout=self._config.stop_timeout
            )
        except pykka.ActorDeadError:
            raise SupervisorStopped("the supervisor stopped during the call") from None
        except pykka.Timeout:
            raise self._unanswered(None, "sessions") from None
        return sessions

    def _unanswered(self, session_id: str | None, call: str) -> SessionUnresponsive:
        return SessionUnresponsive(
            f"the supervisor did not answer {call}() within stop_timeout="
            f"{self._config.stop_timeout:g} s; it is likely overloaded",
            session_id=session_id,
        )

    # --- conversations --------------------------------------------------------------------

    def ask(self, call: Ask) -> Reply:
        consumer = self._await_reply(call, self._reply_consumer(call))
        try:
            return consumer.wait(_guard(call.timeout))
        except TimeoutError:
            raise self._unresponsive(call.session_id) from None

    async def aask(self, call: Ask) -> Reply:
        consumer = self._await_reply(call, self._reply_consumer(call))
        try:
            return await asyncio.wait_for(consumer.wait_async(), _guard(call.timeout))
        except TimeoutError:
            raise self._unresponsive(call.session_id) from None

    def stream(self, call: Ask) -> Generator[StreamItem, None, None]:
        consumer = self._await_reply(call, self._stream_consumer(call))
        return self._iterate(call.session_id, consumer, call.timeout)

    def astream(self, call: Ask) -> AsyncGenerator[StreamItem, None]:
        consumer = self._await_reply(call, self._stream_consumer(call))
        return self._aiterate(call.session_id, consumer, call.timeout)

    def events(self, session_id: str, since: int | None) -> Generator[Event, None, None]:
        consumer = self._event_consumer(session_id, ConsumerKind.READER)
        self.runtime.route(session_id, Subscribe(consumer, since))
        return _only_events(self._iterate(session_id, consumer, None))

    def aevents(self, session_id: str, since: int | None) -> AsyncGenerator[Event, None]:
        consumer = self._event_consumer(session_id, ConsumerKind.READER)
        self.runtime.route(session_id, Subscribe(consumer, since))
        return _only_events_async(self._aiterate(session_id, consumer, None))

    def _reply_consumer(self, call: Ask) -> ReplyConsumer:
        return ReplyConsumer(
            self._config.consumer_capacity, post_key=call.post_key, maybe_sent=call.maybe_sent
        )

    def _stream_consumer(self, call: Ask) -> EventConsumer:
        return self._event_consumer(
            call.session_id, ConsumerKind.STREAM, post_key=call.post_key, maybe_sent=call.maybe_sent
        )

    def _event_consumer(
        self,
        session_id: str,
        kind: ConsumerKind,
        *,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> EventConsumer:
        return EventConsumer(
            kind,
            self._config.consumer_capacity,
            lambda message: self.runtime.route_quietly(session_id, message),
            post_key=post_key,
            maybe_sent=maybe_sent,
        )

    def _await_reply(self, call: Ask, consumer: C) -> C:
        consumer.asked_at = self._clock.now()
        deadline = None if call.timeout is None else consumer.asked_at + call.timeout
        self.runtime.route(call.session_id, AwaitReply(consumer, call.message, deadline))
        return consumer

    def _iterate(
        self, session_id: str, consumer: EventConsumer, timeout: float | None
    ) -> Generator[StreamItem, None, None]:
        guard = _guard(timeout)
        try:
            while True:
                try:
                    yield consumer.get(guard)
                except Ended:
                    return
                except TimeoutError:
                    raise self._unresponsive(session_id) from None
        finally:
            self._release(session_id, consumer)

    async def _aiterate(
        self, session_id: str, consumer: EventConsumer, timeout: float | None
    ) -> AsyncGenerator[StreamItem, None]:
        guard = _guard(timeout)
        try:
            while True:
                try:
                    yield await asyncio.wait_for(consumer.get_async(), guard)
                except Ended:
                    return
                except TimeoutError:
                    raise self._unresponsive(session_id) from None
        finally:
            self._release(session_id, consumer)

    def _release(self, session_id: str, consumer: EventConsumer) -> None:
        """The caller stopped iterating: its session stops feeding the consumer."""
        if not consumer.finished:
            consumer.abandon()
            self.runtime.route_quietly(session_id, Unsubscribe(consumer.consumer_id))

    def _unresponsive(self, session_id: str) -> SessionUnresponsive | SupervisorStopped:
        if self._stopping:
            return SupervisorStopped(
                "the supervisor stopped while this call waited", session_id=session_id
            )
        state = self.runtime.sessions.board.snapshot(session_id)
        where = state.state.value if state is not None else SessionState.STOPPED.value
        return SessionUnresponsive(
            f"session {session_id}: its actor did not answer {_SAFETY_MARGIN:.0f} s past the "
            f"deadline (state {where}); the supervisor is likely overloaded",
            session_id=session_id,
        )

    # --- figures and lifecycle ------------------------------------------------------------

    def statistics(self) -> SupervisorStatistics:
        """Cheap: no actor is asked."""
        return self.runtime.statistics(running=not self._stopping)

    def stop(self, timeout: float) -> StopSummary:
        self._stopping = True
        before = self.statistics()
        error = SupervisorStopped("the supervisor is stopping; no call can complete")
        met = self.runtime.stop(error, timeout)
        self._registry.unregister(self._collector)
        return StopSummary(
            sessions_stopped=before.sessions,
            calls_failed=before.waiting_replies + before.readers,
            deadline_met=met,
        )


def _guard(timeout: float | None) -> float | None:
    """How long a caller waits for its actor: past the call's deadline by a safety margin."""
    return None if timeout is None else timeout + _SAFETY_MARGIN


def _only_events(items: Generator[StreamItem, None, None]) -> Generator[Event, None, None]:
    """A reader's items: events only (its session never gives a reader a delta)."""
    try:
        for item in items:
            assert not isinstance(item, MessageDelta)
            yield item
    finally:
        items.close()


async def _only_events_async(
    items: AsyncGenerator[StreamItem, None],
) -> AsyncGenerator[Event, None]:
    """Asyncio twin of `_only_events`."""
    try:
        async for item in items:
            assert not isinstance(item, MessageDelta)
            yield item
    finally:
        await items.aclose()
