"""One facade over a host: the calls a backend makes, validated once, run where the sessions live.

`HostedSupervisor` is every call of `Supervising`: it checks its arguments and its lifecycle,
then hands the call to its `Host`. `SessionSupervisor` runs the sessions in this process (a
local host: the actors); `supervisor.sharding.ShardedSupervisor` spreads them over Ray actors
(a Ray host: the shards, their failover and the hand-over of calls in flight). A host is never
given a call that is invalid or made after `stop()`.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, final

import structlog
from parlant.client.types import Event

from actors import MessageDelta, Reply, SupervisorStopped
from supervisor._config import SupervisorConfig
from supervisor._consumers import new_post_key
from supervisor._statistics import StopSummary, SupervisorStatistics
from supervisor._text import answer_text, answer_text_async
from supervisor._validation import require_ask, require_id, require_since

__all__ = ["Ask", "Host", "HostedSupervisor"]

_log = structlog.get_logger("parlant_supervisor")


@final
@dataclass(frozen=True, slots=True)
class Ask:
    """An ask or a stream, validated: its message is posted with `post_key` (made here when the
    caller gave none), and `maybe_sent` says the log must be searched for it first."""

    session_id: str
    message: str
    timeout: float | None
    post_key: str
    maybe_sent: bool


class Host(Protocol):
    """Where a supervisor's sessions live. Each call is valid and made while running; the
    asyncio twins never block their caller's loop."""

    def create_session(self, agent_id: str, customer_id: str | None, title: str | None) -> str:
        """Create the session on the server (without opening it)."""
        ...

    async def acreate_session(
        self, agent_id: str, customer_id: str | None, title: str | None
    ) -> str: ...

    def create_customer(self, name: str) -> str: ...

    async def acreate_customer(self, name: str) -> str: ...

    def ensure_agents(self, names: Sequence[str]) -> dict[str, str]: ...

    async def aensure_agents(self, names: Sequence[str]) -> dict[str, str]: ...

    def history(self, session_id: str, since: int) -> list[Event]: ...

    async def ahistory(self, session_id: str, since: int) -> list[Event]: ...

    def check_parlant(self, timeout: float | None) -> None: ...

    async def acheck_parlant(self, timeout: float | None) -> None: ...

    def open(self, session_id: str, since: int | None) -> None:
        """Start polling the session (a message sent, not waited for)."""
        ...

    def close(self, session_id: str) -> None: ...

    def sessions(self) -> list[str]: ...

    def ask(self, call: Ask) -> Reply: ...

    async def aask(self, call: Ask) -> Reply: ...

    def stream(self, call: Ask) -> Generator[Event | MessageDelta, None, None]:
        """Post at once; the generator yields the turn."""
        ...

    def astream(self, call: Ask) -> AsyncGenerator[Event | MessageDelta, None]: ...

    def events(self, session_id: str, since: int | None) -> Generator[Event, None, None]:
        """Subscribe at once; the generator yields the events."""
        ...

    def aevents(self, session_id: str, since: int | None) -> AsyncGenerator[Event, None]: ...

    def statistics(self) -> SupervisorStatistics: ...

    def stop(self, timeout: float) -> StopSummary:
        """Fail every waiting call with `SupervisorStopped` and release everything, within
        `timeout` seconds if it can; called once."""
        ...


class _Lifecycle(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class HostedSupervisor:
    """Every call of `Supervising`, validated here once and run by a `Host`.

    Thread-safe; every blocking call has an `a`-prefixed asyncio twin. Use it as a context
    manager (or `async with`), or call `stop()`: its host owns threads.
    """

    def __init__(self, host: Host, parlant_url: str, config: SupervisorConfig) -> None:
        self.parlant_url = parlant_url
        self.config = config
        self._host = host
        self._lifecycle = _Lifecycle.RUNNING
        self._lock = threading.Lock()
        _log.info("supervisor.started", parlant_url=parlant_url)

    @property
    def stopped(self) -> bool:
        """Whether `stop()` was called."""
        return self._lifecycle is not _Lifecycle.RUNNING

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
        self._require("agent_id", agent_id)
        session_id = self._host.create_session(agent_id, customer_id, title)
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
        self._require("agent_id", agent_id)
        session_id = await self._host.acreate_session(agent_id, customer_id, title)
        if open:
            self.open(session_id, since=0)  # a message: nothing to wait for
        return session_id

    def create_customer(self, name: str) -> str:
        """Create a Parlant customer; returns its id."""
        self._require("name", name)
        return self._host.create_customer(name)

    async def acreate_customer(self, name: str) -> str:
        """Asyncio twin of `create_customer`."""
        self._require("name", name)
        return await self._host.acreate_customer(name)

    def ensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        """Each named agent's id on the server, found by name, else created (name -> id)."""
        self._require_names(names)
        return self._host.ensure_agents(names)

    async def aensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        """Asyncio twin of `ensure_agents`."""
        self._require_names(names)
        return await self._host.aensure_agents(names)

    def history(self, session_id: str, *, since: int = 0) -> list[Event]:
        """The session's events from offset `since`, read from the server once (no waiting).

        Unlike `events()`, nothing is consumed: it is a plain read of the log, e.g. to fetch
        a reply that came after its ask's deadline.
        """
        self._require_since(session_id, since)
        return self._host.history(session_id, since)

    async def ahistory(self, session_id: str, *, since: int = 0) -> list[Event]:
        """Asyncio twin of `history`."""
        self._require_since(session_id, since)
        return await self._host.ahistory(session_id, since)

    def check_parlant(self, *, timeout: float | None = None) -> None:
        """Return if Parlant answers a request within `timeout` seconds (default
        `request_timeout`); else raise `ParlantUnavailable` (or `AccessDenied` when it refuses
        the configured credentials: 401). It lists agents; a 403 for that, as Parlant's
        production policy answers every client, is an answer too."""
        self._check_running()
        self._host.check_parlant(timeout)

    async def acheck_parlant(self, *, timeout: float | None = None) -> None:
        """Asyncio twin of `check_parlant`."""
        self._check_running()
        await self._host.acheck_parlant(timeout)

    def open(self, session_id: str, *, since: int | None = None) -> None:
        """Start polling a session now rather than on first use.

        A message sent, not a call waited for.

        Args:
            session_id: The Parlant session.
            since: Offset to start reading at. By default a session is read from where this
                supervisor last stopped reading it, or from its beginning.
        """
        self._require_since(session_id, since)
        self._host.open(session_id, since)

    def close(self, session_id: str) -> None:
        """Stop polling a session; its waiting calls fail with `SessionClosed`.

        The session stays on the server; using it again re-opens it where it stopped. Waits at
        most `config.stop_timeout` in all.
        """
        self._require("session_id", session_id)
        self._host.close(session_id)

    async def aclose(self, session_id: str) -> None:
        """Asyncio twin of `close` (waits on a worker thread, never on the caller's loop)."""
        self._require("session_id", session_id)
        await asyncio.to_thread(self._host.close, session_id)

    def sessions(self) -> list[str]:
        """Ids of the sessions with a live actor."""
        self._check_running()
        return self._host.sessions()

    async def asessions(self) -> list[str]:
        """Asyncio twin of `sessions` (asks on a worker thread, never on the caller's loop)."""
        self._check_running()
        return await asyncio.to_thread(self._host.sessions)

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
        return self._host.ask(self._ask(session_id, message, timeout, post_key, maybe_sent))

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
        call = self._ask(session_id, message, timeout, post_key, maybe_sent)
        return await self._host.aask(call)

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
        return self._host.stream(self._ask(session_id, message, timeout, post_key, maybe_sent))

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
        return self._host.astream(self._ask(session_id, message, timeout, post_key, maybe_sent))

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
        streamed message only once Parlant has written it whole. The reader subscribes at
        once, before the first `next()`. The iteration ends when the session is closed or the
        supervisor stops.
        """
        self._require_since(session_id, since)
        return self._host.events(session_id, since)

    def aevents(self, session_id: str, *, since: int | None = None) -> AsyncGenerator[Event, None]:
        """Asyncio twin of `events`."""
        self._require_since(session_id, since)
        return self._host.aevents(session_id, since)

    # --- figures and lifecycle ------------------------------------------------------------

    def statistics(self) -> SupervisorStatistics:
        """The supervisor's figures now."""
        return self._host.statistics()

    def stop(self, timeout: float | None = None) -> StopSummary:
        """Refuse new calls, fail waiting ones with `SupervisorStopped`, stop every thread.

        Idempotent. Returns what was stopped and whether `timeout` (default
        `config.stop_timeout`) held.
        """
        with self._lock:
            if self._lifecycle is not _Lifecycle.RUNNING:
                return StopSummary(0, 0, deadline_met=True)
            self._lifecycle = _Lifecycle.STOPPING
        summary = self._host.stop(self.config.stop_timeout if timeout is None else timeout)
        self._lifecycle = _Lifecycle.STOPPED
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

    # --- validation -----------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._lifecycle is not _Lifecycle.RUNNING:
            raise SupervisorStopped("the supervisor is stopped; create a new one to continue")

    def _require(self, name: str, value: str) -> None:
        self._check_running()
        require_id(name, value)

    def _require_names(self, names: Sequence[str]) -> None:
        self._check_running()
        for name in names:
            require_id("name", name)

    def _require_since(self, session_id: str, since: int | None) -> None:
        self._require("session_id", session_id)
        require_since(since, session_id)

    def _ask(
        self,
        session_id: str,
        message: str,
        timeout: float | None,
        post_key: str | None,
        maybe_sent: bool,
    ) -> Ask:
        self._check_running()
        require_ask(session_id, message, timeout, post_key, self.config.max_message_length)
        key = post_key if post_key is not None else new_post_key()
        return Ask(session_id, message, timeout, key, maybe_sent)
