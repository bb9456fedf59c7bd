"""SessionSupervisor: the thread-safe facade a backend embeds for its lifetime."""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Generator, Iterator, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar, final

import pykka
import structlog
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
    Kill,
    Message,
    ParlantApi,
    Subscribe,
    Unsubscribe,
)
from metrics import StatisticsCollector
from supervisor._config import SupervisorConfig
from supervisor._consumers import Ended, EventConsumer, ReplyConsumer
from supervisor._runtime import Runtime
from supervisor._statistics import StopSummary, SupervisorStatistics
from supervisor._supervisor import Close, ListSessions, Open
from supervisor._text import answer_text, answer_text_async
from supervisor._validation import require_ask, require_id, require_since

__all__ = ["SessionSupervisor"]

T = TypeVar("T")
_log = structlog.get_logger("parlant_supervisor")
_SAFETY_MARGIN: Final = 30.0
"""Real seconds a blocked caller waits past its deadline before giving up on the actor."""


class _Lifecycle(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@final
class SessionSupervisor:
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
        self.config = config or SupervisorConfig()
        self.parlant_url = parlant_url.rstrip("/")
        self._lifecycle = _Lifecycle.RUNNING
        self._lock = threading.Lock()
        self.registry = registry if registry is not None else CollectorRegistry()
        self._runtime = Runtime(self.parlant_url, self.config, self.registry, clock)
        self._clock = self._runtime.clock
        # registered once there is something to collect: a scrape may come at once
        self._collector = StatisticsCollector(self.statistics)
        self.registry.register(self._collector)
        _log.info("supervisor.started", parlant_url=self.parlant_url)

    @property
    def runtime(self) -> Runtime:
        """The threads, loop and actors this supervisor runs on, for tools and tests
        (`supervisor.testing`); application code needs only the calls below."""
        return self._runtime

    # --- sessions -------------------------------------------------------------------------

    def create_session(
        self,
        agent_id: str,
        *,
        customer_id: str | None = None,
        title: str | None = None,
        open: bool = True,
    ) -> str:
        """Create a Parlant session with `agent_id` (a guest customer if none) and open it
        (unless `open=False`: create only, e.g. for another supervisor to poll).

        Returns:
            The new session's id.
        """
        session_id = self._runtime.call(self._creating(agent_id, customer_id, title))
        if open:
            self.open(session_id, since=0)
        return session_id

    async def acreate_session(
        self,
        agent_id: str,
        *,
        customer_id: str | None = None,
        title: str | None = None,
        open: bool = True,
    ) -> str:
        """Asyncio twin of `create_session`."""
        session_id = await self._runtime.acall(self._creating(agent_id, customer_id, title))
        if open:
            self.open(session_id, since=0)
        return session_id

    def _creating(
        self, agent_id: str, customer_id: str | None, title: str | None
    ) -> Coroutine[Any, Any, str]:
        self._check_running()
        require_id("agent_id", agent_id)
        return self._api.create_session(agent_id, customer_id, title)

    def create_customer(self, name: str) -> str:
        """Create a Parlant customer; returns its id."""
        return self._runtime.call(self._creating_customer(name))

    async def acreate_customer(self, name: str) -> str:
        """Asyncio twin of `create_customer`."""
        return await self._runtime.acall(self._creating_customer(name))

    def _creating_customer(self, name: str) -> Coroutine[Any, Any, str]:
        self._check_running()
        require_id("name", name)
        return self._api.create_customer(name)

    def ensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        """Each named agent's id on the server, found by name, else created (name -> id)."""
        return self._runtime.call(self._ensuring(names))

    async def aensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        """Asyncio twin of `ensure_agents`."""
        return await self._runtime.acall(self._ensuring(names))

    def _ensuring(self, names: Sequence[str]) -> Coroutine[Any, Any, dict[str, str]]:
        self._check_running()
        for name in names:
            require_id("name", name)
        return self._api.ensure_agents(names)

    def history(self, session_id: str, *, since: int = 0) -> list[Event]:
        """The session's events from offset `since`, read from the server once (no waiting).

        Unlike `events()`, nothing is consumed: it is a plain read of the log, e.g. to fetch
        a reply that came after its ask's deadline.
        """
        return self._runtime.call(self._reading(session_id, since), session_id)

    async def ahistory(self, session_id: str, *, since: int = 0) -> list[Event]:
        """Asyncio twin of `history`."""
        return await self._runtime.acall(self._reading(session_id, since), session_id)

    def _reading(self, session_id: str, since: int) -> Coroutine[Any, Any, list[Event]]:
        self._check_running()
        require_id("session_id", session_id)
        require_since(since, session_id)
        return self._api.read_events(session_id, since)

    def check_parlant(self, *, timeout: float | None = None) -> None:
        """Return if Parlant answers a request within `timeout` seconds (default
        `request_timeout`); else raise `ParlantUnavailable` (or `AccessDenied` when it refuses
        the configured credentials: 401). It lists agents; a 403 for that, as Parlant's
        production policy answers every client, is an answer too."""
        self._check_running()
        self._runtime.call(self._api.ping(timeout))

    async def acheck_parlant(self, *, timeout: float | None = None) -> None:
        """Asyncio twin of `check_parlant`."""
        self._check_running()
        await self._runtime.acall(self._api.ping(timeout))

    def open(self, session_id: str, *, since: int | None = None) -> None:
        """Start polling a session now rather than on first use.

        Args:
            session_id: The Parlant session.
            since: Offset to start reading at. By default a session is read from where this
                supervisor last stopped reading it, or from its beginning.
        """
        self._check_running()
        require_id("session_id", session_id)
        require_since(since, session_id)
        self._runtime.tell(Open(session_id, since), session_id)

    def close(self, session_id: str) -> None:
        """Stop polling a session; its waiting calls fail with `SessionClosed`.

        The session stays on the server; using it again re-opens it where it stopped. Waits at
        most `config.stop_timeout` in all.
        """
        deadline = Deadline(self.config.stop_timeout)
        future = self._close_future(session_id, deadline)
        if future is not None:
            try:
                future.get(timeout=max(0.0, deadline.remaining()))
            except pykka.Timeout:
                raise self._unanswered(session_id, "close") from None

    async def aclose(self, session_id: str) -> None:
        """Asyncio twin of `close` (waits on a worker thread, never on the caller's loop)."""
        self._check_running()
        require_id("session_id", session_id)
        await asyncio.to_thread(self.close, session_id)

    def _close_future(self, session_id: str, deadline: Deadline) -> pykka.Future[Any] | None:
        self._check_running()
        require_id("session_id", session_id)
        error = SessionClosed(
            f"session {session_id} was closed while this call waited; open it again to continue",
            session_id=session_id,
        )
        try:
            future: pykka.Future[Any] | None = self._runtime.supervisor.ask(
                Close(session_id, error), block=True, timeout=max(0.0, deadline.remaining())
            )
        except pykka.ActorDeadError:
            return None  # stopped meanwhile: every session with it
        except pykka.Timeout:
            raise self._unanswered(session_id, "close") from None
        return future

    def _unanswered(self, session_id: str | None, call: str) -> SessionUnresponsive:
        return SessionUnresponsive(
            f"the supervisor did not answer {call}() within stop_timeout="
            f"{self.config.stop_timeout:g} s; it is likely overloaded",
            session_id=session_id,
        )

    def checkpoint(self, session_id: str) -> int:
        """The session's checkpoint here: every event below it was consumed (0 when it has no
        live actor). No `events()` reader subscribing now without `since` gets an event below
        it, so a reader that must resume elsewhere (a sharded reader whose shard died) resumes
        from it. Cheap: no actor is asked."""
        self._check_running()
        require_id("session_id", session_id)
        snapshot = self._runtime.sessions.board.snapshot(session_id)
        return snapshot.checkpoint if snapshot is not None else 0

    def sessions(self) -> list[str]:
        """Ids of the sessions with a live actor."""
        self._check_running()
        try:
            sessions: list[str] = self._runtime.supervisor.ask(
                ListSessions(), block=True, timeout=self.config.stop_timeout
            )
        except pykka.ActorDeadError:
            raise SupervisorStopped("the supervisor stopped during the call") from None
        except pykka.Timeout:
            raise self._unanswered(None, "sessions") from None
        return sessions

    async def asessions(self) -> list[str]:
        """Asyncio twin of `sessions` (asks on a worker thread, never on the caller's loop)."""
        return await asyncio.to_thread(self.sessions)

    # --- conversations --------------------------------------------------------------------

    def ask(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> Reply:
        """Post `message` as the customer and return the agent turn that answers it.

        Args:
            session_id: The Parlant session.
            message: The customer's message.
            timeout: Seconds until `ReplyTimeout`; None waits as long as it takes.
            post_key: The key the message is posted with, in its metadata (default: a new
                one). A message of the session's log with this key is this message.
            maybe_sent: The message may have been posted with `post_key` already, by a call
                whose outcome is unknown (a process that died, a client that retried): the
                log is searched for the key first, and a message found there is answered,
                not posted again.

        Raises:
            ReplyTimeout: No completed reply in time (it will still reach `events()`).
            SessionNotFound, AccessDenied: Parlant refused the session.
            ParlantUnavailable: The message could not be posted before the deadline (it is
                posted once however its requests fail: each carries a key, and a cut one is
                settled from the session's log; see `SupervisorConfig.post_grace`).
            SessionUnresponsive: Its actor did not answer 30 s past the deadline (overload).
            SessionClosed, SupervisorStopped, InvalidInput: as named.
        """
        consumer = ReplyConsumer(
            self.config.consumer_capacity, post_key=post_key, maybe_sent=maybe_sent
        )
        self._await_reply(session_id, message, timeout, consumer)
        try:
            return consumer.wait(None if timeout is None else timeout + _SAFETY_MARGIN)
        except TimeoutError:
            raise self._unresponsive(session_id) from None

    async def aask(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> Reply:
        """Asyncio twin of `ask`."""
        consumer = ReplyConsumer(
            self.config.consumer_capacity, post_key=post_key, maybe_sent=maybe_sent
        )
        self._await_reply(session_id, message, timeout, consumer)
        guard = None if timeout is None else timeout + _SAFETY_MARGIN
        try:
            return await asyncio.wait_for(consumer.wait_async(), guard)
        except TimeoutError:
            raise self._unresponsive(session_id) from None

    def stream(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> Generator[Event | MessageDelta, None, None]:
        """Post `message` and yield the answering turn's events live, ending at its `ready`.

        A message the agent streams (`output_mode=STREAM`) comes as `MessageDelta`s while
        Parlant writes it, then as its event, whole; a block-mode message only as its event.
        The message is posted at once, before the first `next()`. Close the iterator (or
        finish it) to release it; an abandoned one pauses its session when full.

        `post_key` and `maybe_sent` as `ask` says.

        Raises:
            AgentError: Parlant failed the turn (`status: error`); the iteration ends with it.
            ReplyTimeout, SessionNotFound, ...: as `ask`.
        """
        consumer = self._event_consumer(
            session_id, ConsumerKind.STREAM, post_key=post_key, maybe_sent=maybe_sent
        )
        self._await_reply(session_id, message, timeout, consumer)
        return self._iterate(session_id, consumer, timeout)

    def astream(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> AsyncGenerator[Event | MessageDelta, None]:
        """Asyncio twin of `stream`."""
        consumer = self._event_consumer(
            session_id, ConsumerKind.STREAM, post_key=post_key, maybe_sent=maybe_sent
        )
        self._await_reply(session_id, message, timeout, consumer)
        return self._aiterate(session_id, consumer, timeout)

    def stream_text(
        self, session_id: str, message: str, *, timeout: float | None = None
    ) -> Iterator[str]:
        """Post `message` and yield the answer's text as Parlant generates it.

        The pieces join to exactly the `Reply.text` that `ask` would return: the turn's agent
        messages but preambles, a blank line between two, a streamed message piece by piece,
        a block-mode one whole. (One exception: when a newer message supersedes the turn while
        its text streams, Parlant abandons that text and answers both messages in a new turn,
        whose text follows.)

        Raises:
            AgentError, ReplyTimeout, SessionNotFound, ...: as `stream`.
        """
        return answer_text(self.stream(session_id, message, timeout=timeout))

    def astream_text(
        self, session_id: str, message: str, *, timeout: float | None = None
    ) -> AsyncIterator[str]:
        """Asyncio twin of `stream_text`."""
        return answer_text_async(self.astream(session_id, message, timeout=timeout))

    def events(self, session_id: str, *, since: int | None = None) -> Generator[Event, None, None]:
        """Yield every event of the session as it arrives, follow-ups after `ready` included.

        First come the events that arrived while nobody was reading and that no ask or stream
        took (follow-ups, human-agent messages, late replies); with `since`, instead, every
        event from that offset is re-read from the server. Each event is yielded once, and a
        streamed message only once Parlant has written it whole. The iteration ends when the
        session is closed or the supervisor stops.
        """
        consumer = self._event_consumer(session_id, ConsumerKind.READER)
        require_since(since, session_id)
        self._route(session_id, Subscribe(consumer, since))
        return _only_events(self._iterate(session_id, consumer, None))

    def aevents(self, session_id: str, *, since: int | None = None) -> AsyncGenerator[Event, None]:
        """Asyncio twin of `events`."""
        consumer = self._event_consumer(session_id, ConsumerKind.READER)
        require_since(since, session_id)
        self._route(session_id, Subscribe(consumer, since))
        return _only_events_async(self._aiterate(session_id, consumer, None))

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
            self.config.consumer_capacity,
            lambda message: self._route_quietly(session_id, message),
            post_key=post_key,
            maybe_sent=maybe_sent,
        )

    def _await_reply(
        self,
        session_id: str,
        message: str,
        timeout: float | None,
        consumer: ReplyConsumer | EventConsumer,
    ) -> None:
        self._check_running()
        require_ask(session_id, message, timeout, consumer.post_key, self.config.max_message_length)
        consumer.asked_at = self._clock.now()
        deadline = None if timeout is None else consumer.asked_at + timeout
        self._route(session_id, AwaitReply(consumer, message, deadline))

    def _iterate(
        self, session_id: str, consumer: EventConsumer, timeout: float | None
    ) -> Generator[StreamItem, None, None]:
        guard = None if timeout is None else timeout + _SAFETY_MARGIN
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
        guard = None if timeout is None else timeout + _SAFETY_MARGIN
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
            self._route_quietly(session_id, Unsubscribe(consumer.consumer_id))

    # --- figures and lifecycle ------------------------------------------------------------

    def statistics(self) -> SupervisorStatistics:
        """The supervisor's figures now (cheap: no actor is asked)."""
        return self._runtime.statistics(running=self._lifecycle is _Lifecycle.RUNNING)

    def stop(self, timeout: float | None = None) -> StopSummary:
        """Refuse new calls, fail waiting ones with `SupervisorStopped`, stop every thread.

        Idempotent. Returns what was stopped and whether `timeout` (default
        `config.stop_timeout`) held.
        """
        with self._lock:
            if self._lifecycle is not _Lifecycle.RUNNING:
                return StopSummary(0, 0, deadline_met=True)
            self._lifecycle = _Lifecycle.STOPPING
        budget = self.config.stop_timeout if timeout is None else timeout
        before = self.statistics()
        error = SupervisorStopped("the supervisor is stopping; no call can complete")
        met = self._runtime.stop(error, budget)
        self._lifecycle = _Lifecycle.STOPPED
        self.registry.unregister(self._collector)
        summary = StopSummary(
            sessions_stopped=before.sessions,
            calls_failed=before.waiting_replies + before.readers,
            deadline_met=met,
        )
        _log.info(
            "supervisor.stopped",
            sessions_stopped=summary.sessions_stopped,
            calls_failed=summary.calls_failed,
            deadline_met=summary.deadline_met,
        )
        return summary

    async def astop(self, timeout: float | None = None) -> StopSummary:
        """Asyncio twin of `stop` (runs it on a worker thread)."""
        return await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.astop()

    # --- plumbing -------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._lifecycle is not _Lifecycle.RUNNING:
            raise SupervisorStopped("the supervisor is stopped; create a new one to continue")

    @property
    def _api(self) -> ParlantApi:
        return self._runtime.api

    def _route(self, session_id: str, message: Message) -> None:
        self._runtime.route(session_id, message)

    def _route_quietly(self, session_id: str, message: Message | Kill) -> None:
        """Route a housekeeping message; after shutdown there is nobody to tell."""
        self._runtime.route_quietly(session_id, message)

    def _unresponsive(self, session_id: str) -> SessionUnresponsive | SupervisorStopped:
        if self._lifecycle is not _Lifecycle.RUNNING:
            return SupervisorStopped(
                "the supervisor stopped while this call waited", session_id=session_id
            )
        state = self._runtime.sessions.board.snapshot(session_id)
        where = state.state.value if state is not None else SessionState.STOPPED.value
        return SessionUnresponsive(
            f"session {session_id}: its actor did not answer {_SAFETY_MARGIN:.0f} s past the "
            f"deadline (state {where}); the supervisor is likely overloaded",
            session_id=session_id,
        )


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
