"""The reference backend: `POST /api/chat` routed to an agent, on one SessionSupervisor (or a
ShardedSupervisor over Ray, with `BackendSettings.shards`).

The supervisor is owned by the app's lifespan: created at start-up, stopped at shutdown (after
the requests in flight were drained: `Backend.drain`). Parlant's ids never leave the process:
clients hold opaque conversation tokens, kept in a `ConversationStore` (SQLite by default,
PostgreSQL for several machines) that a restarted backend and every worker process share.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import ipaddress
import json
import logging
import math
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar, final

import pykka
import structlog
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import ASGIApp, Receive, Scope, Send

from actors import (
    AccessDenied,
    AgentError,
    DeliveryUnknown,
    InvalidInput,
    ParlantMisconfigured,
    ParlantUnavailable,
    ReplyTimeout,
    SessionClosed,
    SessionFailed,
    SessionNotFound,
    SupervisorError,
    SupervisorStopped,
    TransientError,
)
from actors.events import StreamItem, is_incomplete, is_preamble
from supervisor import Supervising
from supervisor._config import SupervisorConfig
from supervisor._facade import SessionSupervisor
from supervisor.backend._agents import AGENTS, ChatAgent, Intent
from supervisor.backend._embedded import EMBEDDED_AGENTS
from supervisor.backend._http import BodyLimit, HttpLimits, TokenRedaction
from supervisor.backend._store import Conversation, ConversationStore
from supervisor.backend._stream import Frame, Position, TurnFramer, TurnLog, TurnLogs
from supervisor.backend._uistream import DONE as UI_DONE
from supervisor.backend._uistream import HEADERS as UI_HEADERS
from supervisor.backend._uistream import chunks as ui_chunks
from supervisor.emulator import EmulatorServer, ParlantEmulator

__all__ = ["BackendSettings", "create_app"]

T = TypeVar("T")
_log = structlog.get_logger("supervisor.backend")

_LEASE_MARGIN: Final = 35.0
"""Seconds past the ask's deadline a turn's hold on its conversation is renewed at most (more
than the supervisor's own margin past it, 30 s): a turn never holds it longer, whatever befalls
its release."""
_HOLD: Final = 15.0
"""Seconds a turn's hold on its conversation lasts unless its worker renews it (every `_RENEW`
s while the turn runs). A worker killed mid-turn held its conversation for the whole lease,
`ask_timeout` + 35 s: its client got 409 for ~100 s though the turn had answered in 4 s (issue
30). Now at most 15 s: three renewals missed in a row, which a live worker does not miss (a
worker whose event loop stalls 10 s is failing its other requests too); were it to, the cost
is two turns in flight at once, each still answered with its own reply."""
_RENEW: Final = 5.0
"""Seconds between two renewals of a turn's hold."""
_RETRY: Final = {"Retry-After": "5"}
"""What every 503 says: try again in 5 s."""
_SHUTTING_DOWN_MID_TURN: Final = (
    "the backend is shutting down; the message was sent and the agent's reply will be in the "
    "conversation (GET /api/sessions/{session_id}/messages)"
)
_READY_TIMEOUT: Final = 5.0
"""Seconds `/readyz` waits for Parlant: a readiness probe must answer before its own timeout."""
_MAX_OFFSET: Final = 2**53
"""The largest offset a query may name (what a JSON number holds exactly)."""
_STORE_TIMEOUT: Final = 5.0
"""Seconds the store has to take a write before a new conversation (and `/readyz`) is refused:
an SQLite file another process keeps locked would otherwise hold each request for the store's
busy timeout (30 s), then fail it."""


@final
@dataclass(frozen=True, slots=True)
class BackendSettings:
    """How the backend runs.

    Attributes:
        parlant_url: The Parlant server; None starts the embedded emulator in-process, with
            the two agents scripted for a meaningful demo.
        ask_timeout: Seconds a chat request waits for the agent's reply before its 504.
        supervisor: The supervisor's configuration (each shard's, when sharded).
        store_url: Where conversations are kept: an SQLAlchemy URL,
            `postgresql+asyncpg://user:password@host/db` (the `[postgresql]` extra) for
            backends on several machines, or `sqlite+aiosqlite:///path/file.db`. None: SQLite
            in `data_dir`.
        data_dir: The directory of the default SQLite store (a `str` or a path); None:
            `$PARLANT_SUPERVISOR_DATA_DIR`, else `$XDG_DATA_HOME/parlant-supervisor`
            (`~/.local/share/parlant-supervisor`).
        conversation_ttl: Seconds without use (a message, a read, any request with its token)
            after which a conversation expires: its token stops working and its session stops
            being polled.
        one_turn_at_a_time: A message to a conversation whose previous turn is still in flight
            (in any worker) gets 409, instead of a second turn racing the first. The turn's
            worker renews its hold while it runs; a worker killed mid-turn holds its
            conversation for at most 15 s more.
        clock: The time, in epoch seconds (tests inject theirs).
        shards: 0 runs one `SessionSupervisor` in this process; N > 0 a `ShardedSupervisor`
            of N shards on Ray (the `[ray]` extra), with durable checkpoints.
        ray_address: The Ray cluster the shards run on (`"auto"`, `"ray://head:10001"`); None
            starts a local Ray instance. Shards elsewhere need a Parlant URL they can reach:
            the embedded emulator listens on this machine's loopback only.
        shard_log_level: What each shard logs (Ray forwards it to this process' output).
        stream_keep_alive: Seconds of silence after which a stream sends an SSE comment
            (proxies and load balancers drop connections idle for longer, often 30-60 s).
        limits: What one request may send and how long it may take (bodies are enforced by
            the app; heads, connections and concurrency by the server: `harden_server`).
        agent_ids: The Parlant agent of each intent (`{"research_paper": "<agent id>", ...}`);
            intents left out are found by their agent's name (listing agents) and created if
            missing. Give them where Parlant forbids listing agents (its production policy).
        new_conversations_per_minute: New conversations one client address may start in any
            minute (a moving window; 429 with Retry-After past it; 0: no limit). Each is a
            Parlant customer and session, and each message an LLM turn. The address is the
            connection's peer, or what `X-Forwarded-For` says when the peer is one of
            `limits.trusted_proxies`. Counted in each worker process.
        history_reads_per_minute: `GET /api/sessions/{id}/messages` calls one conversation
            may make in any minute, and one client address four times that (429 with
            Retry-After past either; 0: no limit). Each is a read of the session's log from
            Parlant, from the backend's one address: 300 calls on one token pushed Parlant's
            per-IP limit into 429s, and every conversation paused (a turn took 50 s instead of
            0.01 s). Counted in each worker process.
        cors_origins: The browser origins (`https://app.example.com`, `http://localhost:5173`)
            whose pages may call the API and read its streams; none by default (same-origin
            pages need none).
    """

    parlant_url: str | None = None
    ask_timeout: float = 60.0
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    store_url: str | None = None
    data_dir: str | os.PathLike[str] | None = None
    conversation_ttl: float = 86_400.0
    one_turn_at_a_time: bool = True
    clock: Callable[[], float] = time.time
    shards: int = 0
    ray_address: str | None = None
    shard_log_level: int = logging.WARNING
    stream_keep_alive: float = 15.0
    limits: HttpLimits = field(default_factory=HttpLimits)
    new_conversations_per_minute: int = 30
    agent_ids: Mapping[str, str] = field(default_factory=dict)
    history_reads_per_minute: int = 30
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # as browsers send them: lower case (a host is case-insensitive; a mismatch never matches)
        object.__setattr__(self, "cors_origins", tuple(o.lower() for o in self.cors_origins))
        for origin in self.cors_origins:
            if origin == "*" or not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    f"a CORS origin is a scheme and host (with its port), like "
                    f"https://app.example.com or http://localhost:5173; got {origin!r}"
                )
        intents = {intent.value for intent in Intent}
        unknown = sorted(set(self.agent_ids) - intents)
        if unknown:
            raise ValueError(
                f"agent_ids names unknown intents {unknown}; choose among {sorted(intents)}"
            )
        if not all(isinstance(i, str) and i for i in self.agent_ids.values()):
            raise ValueError(
                f"every agent id must be a non-empty string, got {dict(self.agent_ids)}"
            )
        object.__setattr__(self, "agent_ids", dict(self.agent_ids))  # ours: a caller's may change


_MAX_MESSAGE: Final = 32_768


class ChatRequest(BaseModel):
    """A customer's message for one of the agents."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(
        min_length=1,
        max_length=_MAX_MESSAGE,
        # the schema says what `_text` checks (a message of whitespace alone is blank), and
        # `_text` says it in words rather than as a pattern mismatch
        json_schema_extra={"pattern": r"\S"},
        description="The customer's message (not whitespace alone).",
    )
    intent: Intent = Field(description="Which agent answers.")
    session_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The conversation to continue (from an earlier response); none starts one.",
    )

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        """One error for fields it does not know, however many: pydantic's own check makes
        one per field, and 80,000 of them (870 KB, under the body limit) cost 0.23 s of the
        event loop per request to list (measured), a few requests a second pinning it."""
        return _known_only(cls, data)

    @field_validator("message")
    @classmethod
    def _text(cls, message: str) -> str:
        return _checked_text(message)


def _known_only(model: type[BaseModel], data: Any) -> Any:
    if isinstance(data, dict):
        unknown = [key for key in data if key not in model.model_fields]
        if unknown:
            named = ", ".join(_quoted(str(key), 32) for key in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise ValueError(f"unknown fields: {named}{more}")
    return data


def _checked_text(message: str) -> str:
    if not message.strip():
        raise ValueError("message must not be blank")
    if _SURROGATE.search(message):  # JSON's \ud800 escapes decode to them; UTF-8 has none
        raise ValueError("message must be Unicode text (it has a lone surrogate)")
    return message


_SURROGATE: Final = re.compile("[\ud800-\udfff]")

CHAT_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{16,128}$"
"""A chat id names its conversation and is its only credential, as a token is: at least 16
characters of [A-Za-z0-9_-]. The backend cannot tell how random it is: give useChat an `id`
from a cryptographic source (`crypto.randomUUID()` without its dashes: 122 bits), not its
default ids (16 alphanumerics from `Math.random`). Hashed in the store, never logged."""


class UIMessage(BaseModel):
    """A message of the AI SDK's chat (`UIMessage`); only a user message's text parts are read."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(max_length=256)
    role: Literal["user", "assistant", "system"]
    parts: list[dict[str, Any]] = Field(max_length=1000)


class UIChatRequest(BaseModel):
    """What the Vercel AI SDK's `DefaultChatTransport` sends (`useChat`), with the intent in its
    `body` option: the chat's id names the conversation, its last message is the new one."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        pattern=CHAT_ID_PATTERN,
        description="The chat's id: the conversation's name and credential (16-128 of "
        "[A-Za-z0-9_-], from a cryptographic source); the first message opens the "
        "conversation.",
    )
    messages: list[UIMessage] = Field(
        min_length=1,
        max_length=10_000,
        description="The chat so far; the last one, the user's, is the new message (its text "
        "parts, not blank).",
    )
    trigger: Literal["submit-message"] = Field(
        description="Only 'submit-message': Parlant answers each message once (send a "
        "message again instead of regenerating its answer)."
    )
    messageId: str | None = Field(default=None, max_length=256)  # the SDK's name
    intent: Intent = Field(description="Which agent answers (the transport's `body`).")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        """One error for fields it does not know (see `ChatRequest`)."""
        return _known_only(cls, data)

    @model_validator(mode="after")
    def _last_is_the_users(self) -> UIChatRequest:
        last = self.messages[-1]
        if last.role != "user":
            raise ValueError("the last message must be the user's (role 'user')")
        text = _checked_text(self.text())
        if len(text) > _MAX_MESSAGE:
            raise ValueError(f"the last message must be at most {_MAX_MESSAGE} characters")
        return self

    def text(self) -> str:
        """The new message's text: its text parts, joined."""
        parts = self.messages[-1].parts
        return "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


class AgentMessage(BaseModel):
    """One message of the agent's turn."""

    text: str
    preamble: bool = Field(description="A filler message sent while the reply was prepared.")


class ChatResponse(BaseModel):
    """The agent's turn answering the message."""

    session_id: str = Field(description="Send it back to continue this conversation.")
    intent: Intent
    reply: str = Field(description="The agent's answer, preambles left out.")
    messages: list[AgentMessage] = Field(description="Every agent message of the turn.")


class ConversationMessage(BaseModel):
    """One message of a conversation, the customer's or the agent's."""

    offset: int
    source: str = Field(description="`customer`, `ai_agent`, `human_agent`, ...")
    text: str
    preamble: bool
    complete: bool = Field(
        description="False while the agent is still writing it (a streamed message), or if it "
        "never finished it (its turn was superseded)."
    )


class ErrorBody(BaseModel):
    """What went wrong, and the conversation it concerns when there is one."""

    detail: str
    session_id: str | None = None


_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "The body could not be parsed at all (e.g. it is not UTF-8).",
        404: "Unknown session_id (or the conversation is gone).",
        409: "The session_id belongs to another intent's agent, or a turn is in flight in "
        "this conversation already.",
        410: "No stream of this conversation's latest turn is kept to resume.",
        408: "The request body did not arrive in time.",
        413: "The request body is too large.",
        415: "The body is not JSON.",
        429: "Too many new conversations from this client (see Retry-After).",
        502: "The agent failed to answer (the conversation goes on), or Parlant refused the "
        "backend's credentials.",
        503: "Parlant is unreachable, or the backend is shutting down.",
        504: "No reply within the deadline; the late reply stays in the conversation.",
    }.items()
}


class _Refused(Exception):
    """A request refused with a status and a reason (rendered as ErrorBody)."""

    def __init__(
        self,
        status: int,
        detail: str,
        session_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.session_id = session_id
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body = ErrorBody(detail=self.detail, session_id=self.session_id)
        return JSONResponse(
            body.model_dump(exclude_none=True), status_code=self.status, headers=self.headers
        )


def _unknown(token: str) -> _Refused:
    """The same answer for a forged, guessed, closed or forgotten token: it reveals nothing."""
    return _Refused(404, "unknown session_id", token)


def _refusal(error: SupervisorError, token: str | None) -> _Refused:
    """The HTTP answer to a supervisor error. Its message names Parlant's session id, which must
    not reach the client: the detail is written here, in terms of the client's token."""
    if isinstance(error, ReplyTimeout):
        return _Refused(504, "no reply within the deadline; it stays in the conversation", token)
    if isinstance(error, DeliveryUnknown):
        detail = (
            "the message may have been delivered (the connection to Parlant broke while it was "
            "sent): read the conversation (GET /api/sessions/{session_id}/messages) before "
            "sending it again"
        )
        # no Retry-After: it would invite the very retry that could store the message twice
        return _Refused(503, detail, token)
    if isinstance(error, ParlantUnavailable):
        detail = "Parlant is unreachable; nothing was sent, try again shortly"
        return _Refused(503, detail, token, _RETRY)
    if isinstance(error, SupervisorStopped):
        return _Refused(503, "the backend is shutting down", token, _RETRY)
    if isinstance(error, SessionNotFound | SessionClosed):
        return _Refused(404, "this conversation no longer exists", token)
    if isinstance(error, InvalidInput):
        detail = str(error)
        if error.session_id:
            detail = detail.replace(f"session {error.session_id}", "this conversation")
        return _Refused(422, detail, token)
    if isinstance(error, SessionFailed):
        return _Refused(503, "this conversation failed repeatedly; try again later", token)
    if isinstance(error, AgentError):
        detail = "the agent failed to answer this message; the conversation goes on: send it again"
        return _Refused(502, detail, token)
    if isinstance(error, AccessDenied):
        return _Refused(502, "Parlant refused the backend's credentials", token)
    if isinstance(error, ParlantMisconfigured):
        return _Refused(502, "the backend's Parlant URL is misconfigured", token)
    if isinstance(error, TransientError):  # SessionUnresponsive (overload), ShardLost
        return _Refused(503, "the backend is overloaded; try again shortly", token, _RETRY)
    return _Refused(500, f"unexpected error: {type(error).__name__}", token)


@final
class Backend:
    """What the routes share: the supervisor, the agents (found lazily) and the tokens."""

    def __init__(
        self, supervisor: Supervising, store: ConversationStore, settings: BackendSettings
    ) -> None:
        self.supervisor = supervisor
        self.settings = settings
        self.store = store
        self.turns = TurnLogs()
        self._agents: dict[Intent, ChatAgent] = {}
        self._finding: asyncio.Future[None] | None = None
        self._producers: set[asyncio.Task[None]] = set()
        self._renewals: set[asyncio.Task[None]] = set()  # turns' holds being renewed
        self._requests = 0
        self._no_requests = asyncio.Event()
        self._no_requests.set()
        self.draining = False
        self._drain_over = asyncio.Event()
        self._starts = MovingWindowRateLimiter(MemoryStorage())
        self._start_quota = RateLimitItemPerMinute(max(settings.new_conversations_per_minute, 1))
        reads = max(settings.history_reads_per_minute, 1)
        self._reads = MovingWindowRateLimiter(MemoryStorage())
        self._read_quotas = (
            RateLimitItemPerMinute(reads, namespace="conversation"),
            RateLimitItemPerMinute(4 * reads, namespace="client"),
        )

    async def admit_new_conversation(self, client: str) -> None:
        """Count a new conversation against its client's quota; 429 past it."""
        if self.settings.new_conversations_per_minute <= 0:
            return
        if await self._starts.hit(self._start_quota, client):
            return
        stats = await self._starts.get_window_stats(self._start_quota, client)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        detail = (
            f"at most {self.settings.new_conversations_per_minute} new conversations a minute "
            "from one client; continue one you have, or start one later"
        )
        raise _Refused(429, detail, headers={"Retry-After": str(wait)})

    async def admit_history_read(self, conversation: Conversation, client: str) -> None:
        """Count a read of a conversation's messages against its quota and its client's;
        429 past either (the client's counts only reads its conversation's quota let
        through)."""
        if self.settings.history_reads_per_minute <= 0:
            return
        per_conversation, per_client = self._read_quotas
        for quota, who in ((per_conversation, conversation.key), (per_client, client)):
            if not await self._reads.hit(quota, who):
                stats = await self._reads.get_window_stats(quota, who)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                detail = (
                    f"at most {quota.amount} reads of the messages a minute from one "
                    f"{quota.namespace}; read with ?since= the offset after the last message "
                    "you have, and stream turns (/api/chat/stream) rather than poll for them"
                )
                raise _Refused(429, detail, conversation.token, {"Retry-After": str(wait)})

    def entered(self) -> None:
        """A request (past `_DrainGate`) began."""
        self._requests += 1
        self._no_requests.clear()

    def left(self) -> None:
        """A request's response ended."""
        self._requests -= 1
        if not self._requests:
            self._no_requests.set()

    async def drain(self, timeout: float) -> None:
        """Shut down gently: new requests are refused from now on (503), the requests in flight
        (asks and streams among them) get `timeout` seconds to finish; then each ask still
        waiting answers 503 (its reply stays in the conversation) and each stream ends with an
        `error` event, which `_DRAIN_GRACE` more seconds let their clients receive."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._no_requests.wait()
        self._drain_over.set()
        await self.aclose()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_GRACE):
                await self._no_requests.wait()

    async def answer(self, turn: Coroutine[Any, Any, T], token: str) -> T:
        """The result of an ask, unless the backend's drain ends first (503)."""
        if self._drain_over.is_set():  # it came too late: nothing was sent
            turn.close()
            raise _Refused(503, "the backend is shutting down", token, _RETRY)
        ask = asyncio.ensure_future(turn)
        over = asyncio.ensure_future(self._drain_over.wait())
        try:
            done, _ = await asyncio.wait({ask, over}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            over.cancel()
            if not ask.done():
                ask.cancel()
        if ask in done:
            return ask.result()
        raise _Refused(503, _SHUTTING_DOWN_MID_TURN, token, _RETRY)

    def stream(
        self, turn: _Turn, first: StreamItem, rest: AsyncGenerator[StreamItem, None]
    ) -> TurnLog:
        """Start writing a turn's frames into a new log of the conversation, on a task of its
        own: a client that loses its connection does not stop the turn, and resumes from the
        log (`Last-Event-ID`). The turn's hold on its conversation ends before its last frame
        (a client that sends its next message at `end` is not refused)."""
        conversation = turn.conversation
        log = self.turns.start(conversation.key, first.offset)
        framer = TurnFramer(conversation.token, first.offset)
        # past the drain, it ends at once with its error (a task cancelled before its first
        # step would never run, and its log would never end)
        drained = self._drain_over.is_set()
        work = _produce(log, framer, first, rest, lambda: self.release(turn), drained=drained)
        task = asyncio.get_running_loop().create_task(work)
        self._producers.add(task)
        task.add_done_callback(self._producers.discard)
        return log

    async def find(self, token: str) -> Conversation:
        """The conversation a token stands for (404 for an unknown, forged or expired one)."""
        conversation = await self.store.find(token, self.settings.clock())
        if conversation is None:
            raise _unknown(token)
        return conversation

    async def claim(self, conversation: Conversation, agent: ChatAgent) -> _Turn:
        """Hold the conversation for one turn (409 if a turn holds it already, in any worker);
        the hold lapses by itself past the ask's deadline, should its holder die."""
        if not self.settings.one_turn_at_a_time:
            return _Turn(conversation, agent, None)
        claim = await self.store.claim_turn(conversation.token, self.settings.clock(), _HOLD)
        if claim is None:
            detail = (
                "a turn is in flight in this conversation: send the next message once it is "
                "answered (or read it with GET /api/sessions/{session_id}/messages)"
            )
            raise _Refused(409, detail, conversation.token, {"Retry-After": "1"})
        renewing = asyncio.get_running_loop().create_task(self._renew(conversation.token, claim))
        self._renewals.add(renewing)
        renewing.add_done_callback(self._renewals.discard)
        return _Turn(conversation, agent, claim, renewing)

    async def _renew(self, token: str, claim: str) -> None:
        """Keep the turn's hold while it runs (`_HOLD`), up to `ask_timeout` + `_LEASE_MARGIN`
        (a release that never came must not hold the conversation for ever)."""
        clock = self.settings.clock
        until = clock() + self.settings.ask_timeout + _LEASE_MARGIN
        while True:
            await asyncio.sleep(_RENEW)
            now = clock()
            if now >= until:
                return
            try:
                held = await self.store.renew_turn(token, claim, now, min(_HOLD, until - now))
            except Exception as error:  # the store's driver raises its own errors
                _log.warning("backend.renew_failed", error=type(error).__name__)
                continue  # the hold still runs: the next renewal may succeed
            if not held:
                _log.warning("backend.hold_lost")  # it lapsed: a later turn may have it
                return

    async def release(self, turn: _Turn) -> None:
        """End the turn's hold on its conversation (`claim`). Never raises: a store that
        fails here leaves the hold to lapse by itself, and must not turn an answered turn
        into an error."""
        if turn.claim is None:
            return
        if turn.renewing is not None:
            turn.renewing.cancel()
        try:
            await asyncio.shield(self.store.release_turn(turn.conversation.token, turn.claim))
        except Exception as error:  # the store's driver raises its own errors, not only ours
            _log.warning("backend.release_failed", error=type(error).__name__)

    async def expire(self) -> int:
        """Forget the conversations unused for `conversation_ttl` and stop polling their
        sessions; returns how many."""
        expired = await self.store.expire(self.settings.clock())
        for conversation in expired:
            await self._ended(conversation)
        return len(expired)

    async def end(self, token: str) -> Conversation | None:
        """End the conversation a token stands for (None if it stands for none): the token
        stops working, its turn log goes and its session stops being polled."""
        conversation = await self.store.forget(token)
        if conversation is not None:
            await self._ended(conversation)
        return conversation

    async def _ended(self, conversation: Conversation) -> None:
        self.turns.forget(conversation.key)
        await self._close_quietly(conversation.session_id)

    async def keep_sweeping(self) -> None:
        """Forget finished turn logs past their age or the logs' byte bound, at a tenth of
        their age (at most every 30 s), for ever: they were freed only when their
        conversation was looked up again (2,000 streamed turns of 2,000 deltas held 1.29 GB an
        hour later)."""
        interval = min(self.turns.keep / 10, 30.0)
        while True:
            await asyncio.sleep(interval)
            self.turns.sweep()

    async def keep_expiring(self) -> None:
        """`expire` at a tenth of the TTL (at most every minute), for ever; a failure (the
        store unreachable, a session slow to close) is logged and tried again next time."""
        interval = min(self.settings.conversation_ttl / 10, 60.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire()
            except Exception as error:  # the store's driver raises its own errors too
                _log.warning("backend.expiry_failed", error=type(error).__name__)

    async def _close_quietly(self, session_id: str) -> None:
        with contextlib.suppress(SupervisorError, pykka.Timeout):
            await self.supervisor.aclose(session_id)

    async def aclose(self) -> None:
        """Stop every turn still being streamed (their clients get an `error` event)."""
        await asyncio.sleep(0)  # a task cancelled before its first step would never end its log
        for task in list(self._producers):
            task.cancel()
        await asyncio.gather(*self._producers, return_exceptions=True)
        for task in list(self._renewals):  # holds left to lapse: their turns are over here
            task.cancel()
        await asyncio.gather(*self._renewals, return_exceptions=True)

    async def refusal(self, error: SupervisorError, conversation: Conversation) -> _Refused:
        """The HTTP answer to an error of the conversation's session; a session Parlant no
        longer has (deleted, or an emulator that was restarted) is forgotten for good."""
        if isinstance(error, SessionNotFound):
            await self.store.forget(conversation.token)
            self.turns.forget(conversation.key)
        return _refusal(error, conversation.token)

    async def agent(self, intent: Intent) -> ChatAgent:
        """The agent for an intent, found (else created) by name on first use.

        One lookup at a time, shared by every request that needs it: when it fails (Parlant
        down), they all get the failure at once, and the next request looks again.
        """
        if not self._agents:
            finding = self._finding
            if finding is None:
                finding = self._finding = asyncio.ensure_future(self._find_agents())
            try:
                await asyncio.shield(finding)  # a client that leaves cancels only its wait
            except SupervisorError as error:
                if self._finding is finding:
                    self._finding = None
                raise _refusal(error, None) from None
        return self._agents[intent]

    async def _find_agents(self) -> None:
        given = self.settings.agent_ids
        missing = [a.name for a in AGENTS if a.intent.value not in given]
        found = await self.supervisor.aensure_agents(missing) if missing else {}
        ids = {a.intent: given.get(a.intent.value) or found[a.name] for a in AGENTS}
        timeout = self.settings.ask_timeout
        self._agents = {
            a.intent: a(self.supervisor, ids[a.intent], timeout=timeout) for a in AGENTS
        }

    async def check_store(self) -> None:
        """503 unless the conversation store takes a write within `_STORE_TIMEOUT`."""
        try:
            await self.store.check_writable(self.settings.clock(), _STORE_TIMEOUT)
        except (SQLAlchemyError, OSError) as error:
            _log.warning("backend.store_unwritable", error=type(error).__name__)
            detail = f"the conversation store does not take writes ({type(error).__name__})"
            raise _Refused(503, detail, headers=_RETRY) from None

    async def turn(self, request: ChatRequest, client: str) -> _Turn:
        """The conversation a request continues (or a new one), held for this turn, and the
        agent it is with. A new conversation is held too: a stream hands its token out at once.
        """
        if request.session_id is None:
            return await self._open(request.intent, client)
        return await self._continue(await self.find(request.session_id), request.intent)

    async def chat_turn(self, request: UIChatRequest, client: str) -> _Turn:
        """The same for the AI SDK's chat: its id names the conversation, which its first
        message opens (`CHAT_ID_PATTERN`)."""
        conversation = await self.store.find(request.id, self.settings.clock())
        if conversation is None:
            return await self._open(request.intent, client, token=request.id)
        return await self._continue(conversation, request.intent)

    async def _open(self, intent: Intent, client: str, token: str | None = None) -> _Turn:
        await self.admit_new_conversation(client)
        # before anything is created in Parlant: a store that cannot keep the
        # conversation left an orphan customer and session per refused request
        await self.check_store()
        agent = await self.agent(intent)
        try:
            session_id = await agent.start()
        except SupervisorError as error:
            raise _refusal(error, None) from None
        try:
            opened = await self._opened(session_id, intent, token)
        except BaseException:
            await self._close_quietly(session_id)  # nobody could ever reach it
            raise
        if isinstance(opened, _Taken):  # the same chat's first message, twice at once
            await self._close_quietly(session_id)
            return await self._continue(opened.conversation, intent)
        return await self.claim(opened, agent)

    async def _opened(
        self, session_id: str, intent: Intent, token: str | None
    ) -> Conversation | _Taken:
        """The new conversation; for a chat id another request has just opened, that one. A
        chat whose conversation expired (not deleted yet) opens anew, as it would once the
        expired one is deleted."""
        now = self.settings.clock()
        try:
            return await self.store.open(session_id, intent, now, token=token)
        except IntegrityError:
            if token is None:  # 256 random bits collided: not a case to handle
                raise
        taken = await self.store.find(token, now)
        if taken is not None:
            return _Taken(taken)
        await self.end(token)  # expired, not deleted yet
        return await self.store.open(session_id, intent, now, token=token)

    async def _continue(self, conversation: Conversation, intent: Intent) -> _Turn:
        if conversation.intent is not intent:
            detail = f"this conversation is with the {conversation.intent.value} agent"
            raise _Refused(409, detail, conversation.token)
        return await self.claim(conversation, await self.agent(conversation.intent))


@final
@dataclass(frozen=True, slots=True)
class _Taken:
    """A chat id's conversation, opened by another request a moment before."""

    conversation: Conversation


@final
@dataclass(frozen=True, slots=True)
class _Turn:
    """A turn about to be taken: its conversation, its agent, and the hold on the
    conversation (`claim`; None when turns are not held)."""

    conversation: Conversation
    agent: ChatAgent
    claim: str | None
    renewing: asyncio.Task[None] | None = None


def _client(request: Request) -> str:
    """Who sent a request, for quotas: the peer, or the client a trusted proxy names (uvicorn's
    proxy-headers middleware has put it in the scope)."""
    if request.client is None:
        return "unknown"
    return client_of(request.client.host)


def client_of(host: str) -> str:
    """The client an address stands for, for quotas: an IPv4 address; an IPv6 one's /64 (one
    subscriber gets a /64); an IPv4 client reaching a dual-stack socket as `::ffff:a.b.c.d`,
    its IPv4 address (counted by its /64 they were all one client)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network((address, 64), strict=False))
    return str(address)


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _json_body(request: Request) -> None:
    """Refuse non-JSON bodies (their size is capped as they arrive: `BodyLimit`)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        detail = f"send JSON (Content-Type: application/json), not {_quoted(content_type)!r}"
        raise _Refused(415, detail)


def _quoted(text: str, limit: int = 64) -> str:
    """A client's text repeated in an answer: cut to `limit` characters, non-ASCII escaped (a
    lone surrogate cannot be encoded)."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return cut.encode("ascii", "backslashreplace").decode()


def _invalid(error: RequestValidationError) -> JSONResponse:
    """422 naming each problem by place and kind, never echoing the input: FastAPI's default
    answer repeats every invalid value (a 100 MiB field came back whole, and a lone surrogate,
    which JSON cannot encode, turned the 422 into a 500)."""
    problems = [
        {
            "loc": [
                part if isinstance(part, int) else _quoted(str(part))
                for i, part in enumerate(e["loc"])
                if not (i == 1 and part in _BODY_KINDS)  # which body it was read as
            ],
            "msg": _message(e),
            "type": e["type"],
        }
        for e in error.errors()[:_MAX_PROBLEMS]
    ]
    return JSONResponse({"detail": problems}, status_code=422)


def _message(problem: Mapping[str, Any]) -> str:
    """A problem in words: a body that is not JSON says why and where (pydantic says only
    "JSON decode error", its place a bare character index)."""
    if problem["type"] != "json_invalid":
        return str(problem["msg"])
    reason = str((problem.get("ctx") or {}).get("error") or "not JSON")
    where = problem["loc"][-1] if problem["loc"] else None
    at = f" at character {where}" if isinstance(where, int) else ""
    return f"the body is not valid JSON: {_quoted(reason, 120)}{at}"


_MAX_PROBLEMS: Final = 10


BackendDep = Annotated[Backend, Depends(_backend)]


def _body_kind(data: Any) -> str:
    """Which of the two bodies `/api/chat` takes a request's is: the AI SDK's has messages."""
    return "ai-sdk" if isinstance(data, dict) and "messages" in data else "json"


ChatBody = Annotated[
    Annotated[ChatRequest, Tag("json")] | Annotated[UIChatRequest, Tag("ai-sdk")],
    Discriminator(_body_kind),
]
_BODY_KINDS: Final = ("json", "ai-sdk")


async def _produce(
    log: TurnLog,
    framer: TurnFramer,
    first: StreamItem,
    rest: AsyncGenerator[StreamItem, None],
    release: Callable[[], Coroutine[Any, Any, None]],
    *,
    drained: bool = False,
) -> None:
    """Write a turn's frames into its log, to its end (or its error: whatever happens, the
    log ends); the turn's hold on its conversation ends before the last frame. `drained`: the
    drain's deadline has passed, the turn ends at once with its error."""
    log.append(framer.start())
    cancelled = False
    try:
        if drained:
            raise asyncio.CancelledError
        for frame in framer.frames(first):
            log.append(frame)
        async for item in rest:
            for frame in framer.frames(item):
                log.append(frame)
        last = framer.end()
    except SupervisorError as error:
        refusal = _refusal(error, None)
        last = framer.error(refusal.status, refusal.detail)
    except asyncio.CancelledError:
        cancelled = not drained
        last = framer.error(503, _SHUTTING_DOWN_MID_TURN)
    except Exception as error:  # a bug of ours: the client is told, never left waiting
        _log.error("backend.stream_failed", error=repr(error))
        last = framer.error(500, "the backend failed while streaming this turn")
    try:
        await rest.aclose()
        await release()
    finally:
        log.append(last)
        log.finish()
    if cancelled:
        raise asyncio.CancelledError


@final
class _DrainGate:
    """ASGI middleware: while the backend drains, every request but the liveness probe and
    the metrics is answered 503 at once (a load balancer sends it elsewhere)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        backend: Backend | None = getattr(scope["app"].state, "backend", None)
        if (
            scope["type"] == "http"
            and backend is not None
            and backend.draining
            and scope["path"] not in _SERVED_WHILE_DRAINING
        ):
            refusal = _Refused(503, "the backend is shutting down", headers=_RETRY)
            await refusal.response()(scope, receive, send)
            return
        if backend is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        backend.entered()
        try:
            await self.app(scope, receive, send)
        finally:
            backend.left()


_SERVED_WHILE_DRAINING: Final = frozenset({"/healthz", "/metrics"})
_DRAIN_GRACE: Final = 2.0
"""Seconds after the drain's deadline for the answers it forced (503s, `error` events) to be
sent, before uvicorn's own shutdown."""


def _event_stream(frames: AsyncIterator[Frame], keep_alive: float) -> EventSourceResponse:
    async def events() -> AsyncIterator[ServerSentEvent]:
        retry: int | None = _RETRY_MS  # said once, with the first event
        async for frame in frames:
            data = json.dumps(frame.data, separators=(",", ":"), ensure_ascii=False)
            yield ServerSentEvent(
                data, event=frame.event, id=frame.position.id(), retry=retry, sep="\n"
            )
            retry = None

    return EventSourceResponse(events(), ping=keep_alive, sep="\n")


_RETRY_MS: Final = 3000
"""The `retry:` an EventSource waits before it reconnects (the browsers' own default, said)."""


def _ui_stream(frames: AsyncIterator[Frame], keep_alive: float) -> EventSourceResponse:
    """A turn in the AI SDK's UI message stream protocol (`_uistream`)."""

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for frame in frames:
            for chunk in ui_chunks(frame):
                data = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
                yield ServerSentEvent(data, id=frame.position.id(), sep="\n")
        yield ServerSentEvent(UI_DONE, sep="\n")

    return EventSourceResponse(events(), ping=keep_alive, sep="\n", headers=UI_HEADERS)


async def _start_stream(backend: Backend, turn: _Turn, message: str) -> TurnLog:
    """Start a turn whose reply streams (its frames written into a new log of the
    conversation); errors before the turn starts are HTTP errors."""
    conversation = turn.conversation
    items: AsyncGenerator[StreamItem, None] | None = None
    try:
        items = turn.agent.process_stream(message, conversation.session_id)
        first = await anext(items)
    except BaseException as error:
        if items is not None:
            await items.aclose()
        await backend.release(turn)
        if isinstance(error, SupervisorError):
            raise await backend.refusal(error, conversation) from None
        raise
    return backend.stream(turn, first, items)  # released when the turn ends


def _supervisor(url: str, settings: BackendSettings) -> Supervising:
    if not settings.shards:
        return SessionSupervisor(url, config=settings.supervisor)
    from supervisor.sharding import ShardedSupervisor  # needs the [ray] extra

    return ShardedSupervisor(
        url,
        shards=settings.shards,
        config=replace(settings.supervisor, durable_checkpoints=True),
        address=settings.ray_address,
        log_level=settings.shard_log_level,
    )


def default_data_dir() -> Path:
    """Where the default SQLite store lives: `$PARLANT_SUPERVISOR_DATA_DIR`, else
    `$XDG_DATA_HOME/parlant-supervisor`, else `~/.local/share/parlant-supervisor`."""
    if chosen := os.environ.get("PARLANT_SUPERVISOR_DATA_DIR"):
        return Path(chosen)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "parlant-supervisor"


async def prepare_store(settings: BackendSettings) -> None:
    """Open the conversation store once and make its table: a store that cannot be used fails
    here (`StoreUnusable`), with a message, before any server starts."""
    store = _store(settings)
    try:
        await store.start()
    finally:
        await store.aclose()


def _store(settings: BackendSettings) -> ConversationStore:
    ttl = settings.conversation_ttl
    if settings.store_url is not None:
        return ConversationStore(settings.store_url, ttl=ttl)
    chosen = settings.data_dir
    return ConversationStore.sqlite(
        Path(chosen) if chosen is not None else default_data_dir(), ttl=ttl
    )


def create_app(settings: BackendSettings | None = None) -> FastAPI:
    """The backend as an ASGI app; serve it with uvicorn (`python -m supervisor serve`)."""
    settings = settings or BackendSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        emulator = None
        url = settings.parlant_url
        if url is None:
            emulator = EmulatorServer(ParlantEmulator(EMBEDDED_AGENTS))
            url = emulator.url
        store = _store(settings)
        await store.start()
        supervisor = await asyncio.to_thread(_supervisor, url, settings)
        app.state.backend = backend = Backend(supervisor, store, settings)
        app.state.embedded = emulator
        expiring = asyncio.ensure_future(backend.keep_expiring())
        sweeping = asyncio.ensure_future(backend.keep_sweeping())
        redaction = TokenRedaction()
        access_log = logging.getLogger("uvicorn.access")
        access_log.addFilter(redaction)
        try:
            yield
        finally:
            access_log.removeFilter(redaction)
            expiring.cancel()
            sweeping.cancel()
            await asyncio.gather(expiring, sweeping, return_exceptions=True)
            await backend.aclose()
            await supervisor.astop()
            await store.aclose()
            if emulator is not None:
                await asyncio.to_thread(emulator.stop)

    app = FastAPI(
        title="parlant-session-supervisor reference backend",
        summary="Chat with a research-paper or a medical-welfare agent over Parlant.",
        version="0.1.0",
        lifespan=lifespan,
    )

    @app.exception_handler(_Refused)
    async def refused(request: Request, error: _Refused) -> JSONResponse:
        return error.response()

    async def store_failed(request: Request, error: Exception) -> JSONResponse:
        _log.warning("backend.store_failed", error=type(error).__name__)
        detail = "the conversation store is unavailable; try again shortly"
        return _Refused(503, detail, headers=_RETRY).response()

    # SQLAlchemy wraps what its drivers raise in a statement, but not every failure to
    # connect (asyncpg's refused connection is a bare OSError).
    app.add_exception_handler(SQLAlchemyError, store_failed)
    app.add_exception_handler(OSError, store_failed)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return _invalid(error)

    app.add_middleware(BodyLimit, limits=settings.limits)
    app.add_middleware(_DrainGate)  # a draining backend reads no body
    if settings.cors_origins:  # outermost: refusals (413, 503) are readable by the page too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["content-type", "last-event-id"],
            expose_headers=["retry-after", "x-vercel-ai-ui-message-stream"],
            max_age=600,
        )

    @app.post(
        "/api/chat",
        response_model=ChatResponse,
        responses={
            **_ERRORS,
            200: {
                "content": {"text/event-stream": {}},
                "description": "The reply (JSON), or, to the AI SDK's body, the turn live in "
                "its UI message stream protocol (v1).",
            },
        },
        dependencies=[Depends(_json_body)],
    )
    async def chat(body: ChatBody, request: Request, backend: BackendDep) -> Any:
        """Send a message to the intent's agent; returns its reply and the conversation token.
        The Vercel AI SDK's chat (`useChat` with `DefaultChatTransport`, `body: {intent}`)
        posts here too: its chat id names the conversation, and the turn streams back in the
        SDK's UI message stream protocol."""
        if isinstance(body, UIChatRequest):
            turn = await backend.chat_turn(body, _client(request))
            log = await _start_stream(backend, turn, body.text())
            return _ui_stream(log.after(None), settings.stream_keep_alive)
        turn = await backend.turn(body, _client(request))
        conversation = turn.conversation
        try:
            reply = await backend.answer(
                turn.agent.process(body.message, conversation.session_id), conversation.token
            )
        except SupervisorError as error:
            raise await backend.refusal(error, conversation) from None
        finally:
            await backend.release(turn)
        return ChatResponse(
            session_id=conversation.token,
            intent=conversation.intent,
            reply=reply.text,
            messages=[AgentMessage(text=m.text, preamble=m.is_preamble) for m in reply.messages],
        )

    @app.post(
        "/api/chat/stream",
        responses={
            **_ERRORS,
            200: {
                "content": {"text/event-stream": {}},
                "description": "The turn, live: session, status, text-start, text-delta, "
                "text-end, then end (or error); each event with an id to resume after.",
            },
        },
        response_class=EventSourceResponse,
        dependencies=[Depends(_json_body)],
    )
    async def chat_stream(
        body: ChatRequest, request: Request, backend: BackendDep
    ) -> EventSourceResponse:
        """The same, as Server-Sent Events: `session`, then the turn live (`status`, and each
        agent message as `text-start`, `text-delta`s as it is written, `text-end`), then `end`
        (or `error`). A client whose connection breaks resumes with `GET
        /api/sessions/{session_id}/stream` and `Last-Event-ID`."""
        turn = await backend.turn(body, _client(request))
        log = await _start_stream(backend, turn, body.message)
        return _event_stream(log.after(None), settings.stream_keep_alive)

    @app.get(
        "/api/chat/{chat_id}/stream",
        responses={
            204: {"description": "No turn of this chat is running."},
            200: {
                "content": {"text/event-stream": {}},
                "description": "The running turn from its start, then live (a replay, as "
                "the AI SDK's DefaultChatTransport expects).",
            },
        },
        response_class=EventSourceResponse,
    )
    async def resume_chat(chat_id: str, backend: BackendDep) -> Response:
        """The AI SDK's resume (`useChat({resume: true})`): the chat's running turn, replayed
        from its start, or 204 when none runs (also for a chat not opened yet)."""
        conversation = await backend.store.find(chat_id, settings.clock())
        log = backend.turns.find(conversation.key) if conversation is not None else None
        if log is None or log.finished_at is not None:
            return Response(status_code=204)
        return _ui_stream(log.after(None), settings.stream_keep_alive)

    @app.get(
        "/api/sessions/{session_id}/stream",
        responses={
            404: _ERRORS[404],
            410: _ERRORS[410],
            204: {"description": "The turn has ended and the client has all of it."},
            200: {"content": {"text/event-stream": {}}, "description": "The turn, resumed."},
        },
        response_class=EventSourceResponse,
    )
    async def resume_stream(
        session_id: str,
        backend: BackendDep,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The stream of the conversation's latest turn, after the event `Last-Event-ID` names
        (from its start without one), then live until it ends: nothing twice, nothing lost;
        204 when the turn has ended and the client has every event of it."""
        conversation = await backend.find(session_id)
        log = backend.turns.find(conversation.key)
        position = Position.parse(last_event_id) if last_event_id is not None else None
        if last_event_id is not None and position is None:
            raise _Refused(422, "Last-Event-ID is not an id this backend sent", session_id)
        if log is None or (position is not None and position.origin != log.origin):
            detail = (
                "no stream of this conversation's latest turn is kept; read the conversation "
                "with GET /api/sessions/{session_id}/messages"
            )
            raise _Refused(410, detail, session_id)
        if log.finished_at is not None and not log.has_after(position):
            # the turn ended and the client has it all: 204 stops an EventSource (a 200
            # with nothing made it reconnect every ~3 s for ever)
            return Response(status_code=204)
        return _event_stream(log.after(position), settings.stream_keep_alive)

    @app.delete("/api/sessions/{session_id}", status_code=204, responses={404: _ERRORS[404]})
    async def close_session(session_id: str, backend: BackendDep) -> Response:
        """End a conversation: its token stops working and its session stops being polled."""
        if await backend.end(session_id) is None:
            raise _unknown(session_id)
        return Response(status_code=204)

    @app.get(
        "/api/sessions/{session_id}/messages",
        response_model=list[ConversationMessage],
        responses={
            404: _ERRORS[404],
            429: {"model": ErrorBody, "description": "Too many reads (see Retry-After)."},
            503: _ERRORS[503],
        },
    )
    async def conversation_messages(
        session_id: str,
        request: Request,
        backend: BackendDep,
        since: Annotated[
            int,
            Query(
                ge=0,
                le=_MAX_OFFSET,
                description="The first offset wanted: 0 for all, the "
                "offset after the last message you have for what came since.",
            ),
        ] = 0,
        limit: Annotated[
            int, Query(ge=1, le=1000, description="At most this many messages, oldest first.")
        ] = 100,
    ) -> list[ConversationMessage]:
        """The conversation's messages from offset `since`, oldest first, at most `limit`
        (e.g. a reply that came after its 504): page on with `since` = the last offset + 1.
        Each call reads the session's log from Parlant: a conversation may read it
        `history_reads_per_minute` times a minute (30), a client four times that (429)."""
        conversation = await backend.find(session_id)
        await backend.admit_history_read(conversation, _client(request))
        try:
            events = await backend.supervisor.ahistory(conversation.session_id, since=since)
        except SupervisorError as error:
            raise await backend.refusal(error, conversation) from None
        messages = [
            ConversationMessage(
                offset=event.offset,
                source=event.source,
                text=str(event.data.get("message", "")),
                preamble=is_preamble(event),
                complete=not is_incomplete(event),
            )
            for event in events
            if event.kind == "message" and isinstance(event.data, dict)
        ]
        return messages[:limit]

    page = importlib.resources.files("supervisor.backend").joinpath("chat.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        """A chat page for a person: pick the agent, type, watch the answer stream in."""
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/metrics", response_class=Response)
    async def metrics(backend: BackendDep) -> Response:
        """The supervisor's Prometheus metrics (collected on a worker thread: a sharded
        supervisor's come from its shards, a blocking call each)."""
        text = await asyncio.to_thread(generate_latest, backend.supervisor.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorBody}})
    async def readyz(backend: BackendDep) -> dict[str, str]:
        """The supervisor runs, the conversation store takes writes and Parlant answers."""
        figures = await asyncio.to_thread(backend.supervisor.statistics)  # may ask shards
        if not figures.running:
            raise _Refused(503, "the supervisor is not running")
        await backend.check_store()
        try:
            await backend.supervisor.acheck_parlant(timeout=_READY_TIMEOUT)
        except SupervisorError as error:
            raise _Refused(503, f"Parlant does not answer: {type(error).__name__}") from None
        return {"status": "ready"}

    return app
