"""A Parlant-compatible server: the reference backend's embedded default, and the test double
of tests, demos and benchmarks (an ASGI app).

It speaks the subset of Parlant's HTTP API that conversations use, with the JSON shapes and
long-poll semantics measured on a real 3.3.2 server (docs/PARLANT.md): 504 after `wait_for_data`
with no data, 404 for unknown or deleted sessions (open polls included), customer messages
traced `<main>`, agent turns that open with `acknowledged` and complete with a `ready` whose
`data.stage` is `completed`, an intermediate `ready` after every agent message, preambles,
superseded turns whose cancelled trace keeps emitting (and whose message being streamed is
never finished), streamed messages (written at their first chunk, then updated in place until
their `chunks` end with `null`; `read_event` with `sse` or `wait_for_completion` follows them,
or answers 403 like Parlant's production policy), and failed turns (a completed `ready`, then
`status: error` with a traceback). parlant-client talks to it unchanged.

Agents are scripted in Python: a script receives a `TurnContext` and writes the turn's events;
a script that raises fails its turn, as Parlant's engine does when its model provider fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import re
import string
import traceback
import uuid
from collections import Counter
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pprint import pformat
from typing import Any, Final, Literal, Protocol, final

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from actors.events import PREAMBLE_TAG
from supervisor.emulator._markers import CUT_MARKER, FAIL_MARKER

__all__ = [
    "AgentScript",
    "EmulatedAgent",
    "ModelFailure",
    "ParlantCost",
    "ParlantEmulator",
    "TurnContext",
    "echo",
    "scripted",
]

MAIN_TRACE: Final = "<main>"
_POLL_RECHECK: Final = 0.25
"""Seconds between two reads of the store by a waiting `list_events` on Parlant 3.3
(`PollingSessionListener.wait_for_more_events`)."""
_READ_EVENT_RECHECK: Final = 0.1
"""The same for a waiting `read_event` (`wait_for_event_completion`, streaming chunks)."""
_ID_ALPHABET: Final = string.ascii_letters + string.digits


def _now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _not_found(what: str, ident: str) -> JSONResponse:
    return JSONResponse({"detail": f"{what} not found (id='{ident}')"}, status_code=404)


def _refused(detail: str) -> JSONResponse:
    """A 422 as the real server's handlers raise it (a plain `detail`, unlike a body that
    fails validation)."""
    return JSONResponse({"detail": detail}, status_code=422)


def _unprocessable(message: str) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"type": "value_error", "loc": ["body"], "msg": message}]},
        status_code=422,
    )


@final
class TurnContext:
    """What an agent script sees of the turn it is writing.

    Attributes:
        session_id: The session.
        messages: Texts of the customer messages this turn answers, oldest first.
        trace_id: The turn's trace id.
    """

    def __init__(
        self,
        emulator: ParlantEmulator,
        session: _Session,
        trace_id: str,
        messages: list[str],
        agent: EmulatedAgent,
    ) -> None:
        self._emulator = emulator
        self._session = session
        self._agent = agent
        self.session_id = session.id
        self.trace_id = trace_id
        self.messages = messages

    @property
    def message(self) -> str:
        """The latest customer message (the one the turn mostly answers)."""
        return self.messages[-1]

    def status(self, name: str, **data: Any) -> None:
        """Write an agent status event (`typing`, `processing`, an intermediate `ready`...)."""
        self._session.append_status(self.trace_id, name, data)

    @property
    def streaming(self) -> bool:
        """Whether the agent streams its messages (`output_mode="stream"`)."""
        return self._agent.output_mode == "stream"

    def say(self, text: str, *, preamble: bool = False) -> None:
        """Write an agent message in this turn, whole (a preamble is tagged `__preamble__`),
        and the intermediate `ready` Parlant's engine writes after each message it sends."""
        self._session.append_agent_message(self.trace_id, text, preamble=preamble)
        self.status("ready")

    async def stream(self, text: str | AsyncIterable[str], *, cut_after: int | None = None) -> None:
        """Write an agent message as Parlant streams one: at its first chunk, then updated in
        place at each next one, then terminated (`null`), then an intermediate `ready`.

        Args:
            text: The whole message, sent one word a chunk (spaces leading) every
                `chunk_delay` seconds of the agent; or the chunks themselves, each written
                as the iterable yields it.
            cut_after: Fail after this many chunks, as a model provider that cuts the stream:
                the message is terminated as it stands and `ModelFailure` is raised (the turn
                then fails).
        """
        pieces = self._words(text) if isinstance(text, str) else text
        event: dict[str, Any] | None = None
        chunks: list[str | None] = []
        cut = False
        async for piece in pieces:
            if cut_after is not None and len(chunks) >= cut_after:
                cut = True
                break
            chunks.append(piece)
            if event is None:
                event = self._session.append_streamed_message(self.trace_id, chunks)
            else:
                self._session.update_message(event, chunks)
        if event is None:  # nothing to say: a message with no text, as Parlant's empty stream
            event = self._session.append_streamed_message(self.trace_id, [""])
        chunks.append(None)
        self._session.update_message(event, chunks)
        if cut:
            raise ModelFailure("the emulated model provider cut the stream")
        self.status("ready")

    async def _words(self, text: str) -> AsyncIterator[str]:
        for index, word in enumerate(re.findall(r"\s*\S+", text) or [""]):
            if index:
                await asyncio.sleep(self._agent.chunk_delay)
            yield word
        await asyncio.sleep(self._agent.chunk_delay)

    async def reply(self, text: str) -> None:
        """Write the answer the agent's way: streamed if it streams, else whole."""
        if self.streaming:
            await self.stream(text)
        else:
            self.say(text)

    def follow_up(self, text: str) -> None:
        """After this turn completes, write an agent message outside any turn (its own trace)."""
        self._session.follow_ups.append(text)

    async def sleep(self, seconds: float) -> None:
        """Take this long (server-side time: models a slow agent)."""
        await asyncio.sleep(seconds)

    async def gate(self, name: str) -> None:
        """Wait until the test calls `ParlantEmulator.release(name)`."""
        await self._emulator.gate(name).wait()


class ModelFailure(RuntimeError):
    """Raised by a script to fail its turn as a model provider's outage would."""


class AgentScript(Protocol):
    """Writes one turn's events between the emulator's `acknowledged` and completed `ready`.

    Any `async def script(turn: TurnContext) -> None` is one. A script that raises fails its
    turn: the completed `ready`, then `status: error` with the traceback, as Parlant writes.
    """

    def __call__(self, turn: TurnContext, /) -> Awaitable[None]:
        """Write the turn (`turn.status`, `turn.say`, ...); may await gates and sleeps."""
        ...


async def _answer(turn: TurnContext, texts: Sequence[str]) -> None:
    """Write the answer, failing on the same markers as `ParlantServer`'s deterministic model:
    `FAIL_MARKER` fails the turn before any message, `CUT_MARKER` cuts a streamed answer after
    its first chunk."""
    turn.status("typing")
    if FAIL_MARKER in turn.message:
        raise ModelFailure("the emulated model fails on purpose (failure marker)")
    for text in texts:
        if turn.streaming and CUT_MARKER in turn.message:
            await turn.stream(text, cut_after=1)  # raises
        else:
            await turn.reply(text)


def echo(prefix: str = "echo: ") -> AgentScript:
    """An agent that answers each turn with its latest customer message, prefixed.

    Like `ParlantServer`'s model, a message with `FAIL_MARKER` fails the turn and one with
    `CUT_MARKER` cuts a streamed answer after its first chunk.
    """

    async def script(turn: TurnContext) -> None:
        await _answer(turn, [f"{prefix}{turn.message}"])

    return script


def scripted(replies: Mapping[str, str | Sequence[str]], default: str) -> AgentScript:
    """An agent with fixed answers: the first key found in the message (case-insensitive) wins.

    A value that is a sequence is sent as several messages in one turn. The failure markers
    work as in `echo`.
    """

    async def script(turn: TurnContext) -> None:
        lowered = turn.message.lower()
        answer: str | Sequence[str] = default
        for key, value in replies.items():
            if key.lower() in lowered:
                answer = value
                break
        await _answer(turn, [answer] if isinstance(answer, str) else answer)

    return script


@final
@dataclass(frozen=True, slots=True)
class ParlantCost:
    """What the requests served so far would have cost a real Parlant 3.3 server, counted the
    way Parlant spends it (docs/PARLANT.md, "What polling costs Parlant").

    Parlant answers a waiting `list_events` by re-reading its session store every 0.25 s until
    data arrives or `wait_for_data` passes, and a waiting `read_event` every 0.1 s: that is
    what a client that keeps sessions polled costs it, per waiting second, whether or not
    anyone reads the answers. A poll whose client hung up waits on, as on Parlant (neither
    server notices a client that left a long-poll).

    Attributes:
        requests: Requests served, by Parlant operation (`list_events`,
            `create_customer_event`, `read_event`, `read_session`...): about 2.3 ms of
            Parlant's CPU each, measured.
        store_reads: Reads of the session store made by `list_events` and `read_event`:
            a `list_events` that waits reads its session, then its events at once and every
            0.25 s while it waits, then once more to answer with events; without waiting, once.
            A `read_event` reads once, and every 0.1 s while it waits. Requests still waiting
            count up to now.
        poll_seconds: Seconds `list_events` requests spent waiting, summed.
        waiting_polls: `list_events` requests waiting now.
        waiting_reads: `read_event` requests waiting now (following a streamed message).
    """

    requests: Mapping[str, int]
    store_reads: int
    poll_seconds: float
    waiting_polls: int
    waiting_reads: int

    def since(self, earlier: ParlantCost) -> ParlantCost:
        """What was spent since `earlier` (the waiting counts are now's)."""
        operations = self.requests.keys() | earlier.requests.keys()
        requests = {op: self.requests.get(op, 0) - earlier.requests.get(op, 0) for op in operations}
        return ParlantCost(
            requests={op: n for op, n in sorted(requests.items()) if n},
            store_reads=self.store_reads - earlier.store_reads,
            poll_seconds=self.poll_seconds - earlier.poll_seconds,
            waiting_polls=self.waiting_polls,
            waiting_reads=self.waiting_reads,
        )


@dataclass(slots=True)
class _Ledger:
    """The cost counters behind `ParlantCost`, on the server's loop."""

    requests: Counter[str] = field(default_factory=Counter)
    store_reads: int = 0
    poll_seconds: float = 0.0
    # requests waiting now: token -> (started, seconds between two store reads, poll?)
    waiting: dict[object, tuple[float, float, bool]] = field(default_factory=dict)

    @contextlib.contextmanager
    def wait(self, now: Callable[[], float], recheck: float, *, poll: bool) -> Iterator[None]:
        """Count a request's waiting: one store read each `recheck` seconds while it waits."""
        token = object()
        started = now()
        self.waiting[token] = (started, recheck, poll)
        try:
            yield
        finally:
            del self.waiting[token]
            waited = now() - started
            self.store_reads += int(waited / recheck)
            if poll:
                self.poll_seconds += waited

    def snapshot(self, now: float) -> ParlantCost:
        live_reads = live_seconds = 0.0
        for started, recheck, poll in self.waiting.values():
            live_reads += int((now - started) / recheck)
            live_seconds += (now - started) if poll else 0.0
        return ParlantCost(
            requests=dict(sorted(self.requests.items())),
            store_reads=self.store_reads + int(live_reads),
            poll_seconds=self.poll_seconds + live_seconds,
            waiting_polls=sum(1 for *_, poll in self.waiting.values() if poll),
            waiting_reads=sum(1 for *_, poll in self.waiting.values() if not poll),
        )


@final
@dataclass(frozen=True, slots=True)
class EmulatedAgent:
    """An agent the emulator serves.

    Attributes:
        name: Its name (`GET /agents` lists it).
        script: Writes each turn.
        description: Free text.
        preamble: Like the stock server, send "One moment." and an intermediate `ready`
            before the script runs.
        output_mode: `"stream"` to stream the answer (`TurnContext.reply`), as an agent with
            Parlant's `output_mode=STREAM`; `"block"` writes each message whole.
        chunk_delay: Seconds between two chunks of a streamed message.
        delay: Seconds between `acknowledged` (or the preamble) and the script (a thinking
            agent; the stock server's main answer comes 1-2 s after its preamble).
        preamble_delay: Seconds between `acknowledged` and the preamble (the stock server
            waits about 2 s): a customer message posted meanwhile supersedes the turn before
            any preamble, as on the real server.
    """

    name: str
    script: AgentScript = field(default_factory=echo)
    description: str = ""
    preamble: bool = False
    output_mode: Literal["block", "stream"] = "block"
    chunk_delay: float = 0.02
    delay: float = 0.0
    preamble_delay: float = 0.0


@dataclass(slots=True)
class _Session:
    id: str
    agent_id: str
    customer_id: str
    title: str | None
    creation_utc: str = field(default_factory=_now_utc)
    events: list[dict[str, Any]] = field(default_factory=list)
    consumption_offsets: dict[str, int] = field(default_factory=lambda: {"client": 0})
    metadata: dict[str, Any] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    updated: asyncio.Event = field(default_factory=asyncio.Event)  # an event changed in place
    deleted: bool = False
    turn_task: asyncio.Task[None] | None = None
    turn_trace: str | None = None
    unanswered: list[str] = field(default_factory=list)
    follow_ups: list[str] = field(default_factory=list)
    customer_name: str = "customer"
    agent_name: str = "agent"
    on_change: Callable[[], None] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "customer_id": self.customer_id,
            "creation_utc": self.creation_utc,
            "title": self.title,
            "mode": "auto",
            "consumption_offsets": dict(self.consumption_offsets),
            "metadata": dict(self.metadata),
            "labels": [],
        }

    def append(
        self,
        source: str,
        kind: str,
        trace_id: str,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event = {
            "id": _new_id(),
            "source": source,
            "kind": kind,
            "offset": len(self.events),
            "creation_utc": _now_utc(),
            "trace_id": trace_id,
            "correlation_id": trace_id,
            "data": data,
            "metadata": dict(metadata or {}),
            "deleted": False,
        }
        self.events.append(event)
        self.wake()
        return event

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()
        self.updated.set()
        self.updated = asyncio.Event()
        if self.on_change is not None:
            self.on_change()

    def append_status(self, trace_id: str, name: str, data: dict[str, Any]) -> None:
        self.append("ai_agent", "status", trace_id, {"status": name, "data": data})

    def append_agent_message(self, trace_id: str, text: str, *, preamble: bool) -> None:
        data: dict[str, Any] = {
            "message": text,
            "participant": {"id": self.agent_id, "display_name": self.agent_name},
        }
        if preamble:
            data["tags"] = [PREAMBLE_TAG]
        self.append("ai_agent", "message", trace_id, data)

    def append_streamed_message(self, trace_id: str, chunks: list[str | None]) -> dict[str, Any]:
        """A streamed message's event, written at its first chunk (no tags, like Parlant's)."""
        data: dict[str, Any] = {
            "message": "".join(c for c in chunks if c is not None),
            "participant": {"id": self.agent_id, "display_name": self.agent_name},
            "chunks": list(chunks),
        }
        return self.append("ai_agent", "message", trace_id, data)

    def update_message(self, event: dict[str, Any], chunks: list[str | None]) -> None:
        """Parlant's in-place update: the same event (id, offset), its text and chunks so far."""
        if self.deleted:
            return
        event["data"] = {
            **event["data"],
            "message": "".join(c for c in chunks if c is not None),
            "chunks": list(chunks),
        }
        self.updated.set()
        self.updated = asyncio.Event()
        if self.on_change is not None:
            self.on_change()


_rng = random.Random()


def _new_id() -> str:
    return "".join(_rng.choices(_ID_ALPHABET, k=10))


@final
class ParlantEmulator:
    """The emulator's state and its ASGI app (`emulator.app`); serve it with `EmulatorServer`.

    All state lives on the event loop that serves the app; from other threads use
    `EmulatorServer.call`.
    """

    def __init__(
        self,
        agents: Sequence[EmulatedAgent] = (),
        *,
        stray_events: bool = True,
        refuse_read_event: bool = False,
        authorization: Literal["development", "production"] = "development",
        rate_limits: Mapping[str, int] | None = None,
        rate_window: float = 60.0,
    ) -> None:
        """Create an emulator serving `agents` (ids are assigned; see `agent_id`).

        Args:
            agents: Agents created up front. More can be created over HTTP (`POST /agents`).
            stray_events: Like the real server, let a superseded turn's trace keep emitting
                (`typing`, a preamble, an empty `ready`, `processing`) after its cancellation.
            refuse_read_event: Answer `read_event` with 403, as Parlant's production policy
                does (streamed messages can then only be followed by re-reading the log).
            authorization: `"production"` enforces Parlant's production policy: only reading
                agents and sessions, guest sessions, listing events and customer messages are
                permitted (403 for the rest), each rate-limited per client IP (the first
                `X-Forwarded-For` entry, else `X-Real-IP`, `CF-Connecting-IP`, the peer) with
                moving windows (429 beyond, with no `Retry-After`, as Parlant answers). Needs
                the `limits` package.
            rate_limits: Requests per window and client IP, by Parlant operation name
                (default: Parlant's, `PRODUCTION_LIMITS`; `other` for operations not named).
            rate_window: The windows' length in seconds (Parlant's: 60).
        """
        self._agents: dict[str, tuple[dict[str, Any], EmulatedAgent]] = {}
        self._customers: dict[str, dict[str, Any]] = {}
        self._sessions: dict[str, _Session] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._stray_events = stray_events
        self._refuse_read_event = refuse_read_event
        self._policy = (
            _ProductionPolicy(rate_limits or PRODUCTION_LIMITS, rate_window)
            if authorization == "production"
            else None
        )
        self._open_polls = 0
        self._ledger = _Ledger()
        self._closing = False
        self._injected: dict[str, list[int]] = {}
        self._served: Counter[tuple[str, int]] = Counter()
        self._progress = asyncio.Event()
        for agent in agents:
            self._add_agent(agent)
        self.app = Starlette(
            routes=[
                self._route("/agents", "POST", self._create_agent, "create_agent"),
                self._route("/agents", "GET", self._list_agents, "list_agents"),
                self._route("/agents/{agent_id}", "GET", self._read_agent, "read_agent"),
                self._route("/customers", "POST", self._create_customer, "create_customer"),
                self._route(
                    "/customers/{customer_id}", "GET", self._read_customer, "read_customer"
                ),
                self._route("/sessions", "POST", self._create_session, _session_creation),
                self._route("/sessions/{session_id}", "GET", self._read_session, "read_session"),
                self._route(
                    "/sessions/{session_id}", "PATCH", self._update_session, "update_session"
                ),
                self._route(
                    "/sessions/{session_id}", "DELETE", self._delete_session, "delete_session"
                ),
                self._route(
                    "/sessions/{session_id}/events", "GET", self._list_events, "list_events"
                ),
                self._route(
                    "/sessions/{session_id}/events", "POST", self._create_event, _event_creation
                ),
                self._route(
                    "/sessions/{session_id}/events/{event_id}",
                    "GET",
                    self._read_event,
                    "read_event",
                ),
                Route("/healthz", self._health, methods=["GET"]),
                Route("/_emulator/stats", self._stats, methods=["GET"]),
            ],
            # a client that hangs up mid-request is no error of the server's
            exception_handlers={ClientDisconnect: _client_gone},
        )

    def _route(
        self,
        path: str,
        method: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        operation: str | Callable[[Request], Awaitable[str]],
    ) -> Route:
        """A route whose requests the production policy (if enforced) authorizes first, as
        Parlant's handlers do: permission (403), then the client's rate limit (429)."""

        async def authorized(request: Request) -> Response:
            name = operation if isinstance(operation, str) else await operation(request)
            self._ledger.requests[name] += 1
            if self._policy is not None:
                refusal = self._policy.authorize(request, name)
                if refusal is not None:
                    if name == "list_events":  # a poll answered, for `served`
                        self._served[(request.path_params["session_id"], refusal.status_code)] += 1
                    return refusal
            return await endpoint(request)

        return Route(path, authorized, methods=[method])

    # --- for tests (call on the server's loop) ----------------------------------------------

    def agent_id(self, name: str) -> str:
        """The id of the agent called `name`."""
        for agent_id, (body, _) in self._agents.items():
            if body["name"] == name:
                return agent_id
        raise KeyError(f"no emulated agent named {name!r}")

    def gate(self, name: str) -> asyncio.Event:
        """The gate a script waits on with `TurnContext.gate(name)`."""
        return self._gates.setdefault(name, asyncio.Event())

    def release(self, name: str) -> None:
        """Open a gate: every script waiting on it goes on."""
        self.gate(name).set()

    def session_ids(self) -> list[str]:
        """Every session's id, oldest first."""
        return list(self._sessions)

    def session_events(self, session_id: str) -> list[dict[str, Any]]:
        """Every event the session has, as the JSON the server sends."""
        return list(self._sessions[session_id].events)

    def customers(self) -> list[dict[str, Any]]:
        """Every customer, as the JSON the server sends, in order of creation."""
        return list(self._customers.values())

    def session_consumption_offset(self, session_id: str) -> int:
        """The session's stored `consumption_offsets.client`."""
        return self._sessions[session_id].consumption_offsets["client"]

    def post_agent_message(self, session_id: str, text: str) -> dict[str, Any]:
        """Write an agent message outside any turn (a follow-up, as a scheduled task would)."""
        session = self._sessions[session_id]
        trace_id = uuid.uuid4().hex
        session.append_agent_message(trace_id, text, preamble=False)
        return session.events[-1]

    def close(self) -> None:
        """Answer every open long-poll with 503 and stop every agent turn (server shutdown)."""
        self._closing = True
        for session in self._sessions.values():
            if session.turn_task is not None:
                session.turn_task.cancel()
            session.wake()
        for task in self._background:
            task.cancel()

    def reopen(self) -> None:
        """Serve again after `close()` (a restart on a new loop, sessions kept), and re-run the
        turns `close()` interrupted, as a server re-processing pending messages at boot would:
        each interrupted trace is cancelled (so its claim returns) and a new turn starts."""
        self._closing = False
        for session in self._sessions.values():
            if session.unanswered and session.turn_trace is not None:
                self._supersede(session, session.turn_trace)
                session.turn_task = None
                self._start_turn(session)

    def create_session(self, agent_name: str) -> str:
        """Create a session directly (no client involved yet); returns its id."""
        agent_id = self.agent_id(agent_name)
        session = _Session(_new_id(), agent_id, "guest", None)
        session.on_change = self._note_progress
        session.agent_name = agent_name
        self._sessions[session.id] = session
        return session.id

    def inject_poll_failures(self, session_id: str, statuses: Sequence[int]) -> None:
        """Answer the session's next polls with these statuses (e.g. [500, 503, 429]), in order.

        A 429 or 503 carries `Retry-After: 1`; a 200 has a body that is not a list of events.
        Inject before any client polls the session: a cancelled poll's request may still reach
        the server later and take an injected answer.
        """
        self._injected.setdefault(session_id, []).extend(statuses)

    def pending_failures(self, session_id: str) -> int:
        """Injected poll failures not served yet."""
        return len(self._injected.get(session_id, ()))

    def served(self, session_id: str, status: int) -> int:
        """How many polls of the session were answered with `status`."""
        return self._served[(session_id, status)]

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait (on the server's loop) until `predicate()` holds; it is re-checked whenever a
        poll starts waiting or is answered, an event is written, or an offset is stored."""
        while not predicate():
            self._progress.clear()
            await self._progress.wait()

    def _note_progress(self) -> None:
        self._progress.set()

    def open_polls(self) -> int:
        """How many long-polls are waiting now (for lifecycle tests)."""
        return self._open_polls

    def cost(self) -> ParlantCost:
        """What the requests served so far would have cost a real Parlant server (see
        `ParlantCost`); `ParlantCost.since` gives a scenario's share."""
        return self._ledger.snapshot(asyncio.get_running_loop().time())

    # --- agents, customers, sessions ------------------------------------------------------

    def _add_agent(self, agent: EmulatedAgent) -> dict[str, Any]:
        agent_id = _new_id()
        body: dict[str, Any] = {
            "id": agent_id,
            "name": agent.name,
            "description": agent.description,
            "max_engine_iterations": 3,
            "composition_mode": "fluid",
            "message_output_mode": agent.output_mode,
            "tags": [],
        }
        self._agents[agent_id] = (body, agent)
        return body

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _stats(self, request: Request) -> Response:
        """Not Parlant's API: what harnesses in another process need to see."""
        cost = self.cost()
        return JSONResponse(
            {
                "open_polls": self._open_polls,
                "sessions": len(self._sessions),
                "requests": dict(cost.requests),
                "store_reads": cost.store_reads,
                "poll_seconds": cost.poll_seconds,
                "waiting_polls": cost.waiting_polls,
                "waiting_reads": cost.waiting_reads,
            }
        )

    async def _create_agent(self, request: Request) -> Response:
        payload = await _json_object(request)
        if payload is None:
            return _unprocessable("body must be a JSON object")
        name = payload.get("name") or "Unnamed Agent"
        description = payload.get("description") or ""
        output_mode: Literal["block", "stream"] = (
            "stream" if payload.get("message_output_mode") == "stream" else "block"
        )
        agent = EmulatedAgent(str(name), description=str(description), output_mode=output_mode)
        body = self._add_agent(agent)
        return JSONResponse(body, status_code=201)

    def agents(self) -> list[dict[str, Any]]:
        """Every agent, as the JSON the server sends."""
        return [body for body, _ in self._agents.values()]

    async def _list_agents(self, request: Request) -> Response:
        return JSONResponse(self.agents())

    async def _read_agent(self, request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        if agent_id not in self._agents:
            return _not_found("Agent", agent_id)
        return JSONResponse(self._agents[agent_id][0])

    async def _create_customer(self, request: Request) -> Response:
        payload = await _json_object(request)
        if payload is None:
            return _unprocessable("body must be a JSON object")
        customer_id = payload.get("id") or _new_id()
        if not isinstance(customer_id, str):
            return _unprocessable("id must be a string")
        if customer_id in self._customers:  # Parlant's store raises; its API answers 500
            return PlainTextResponse("Internal Server Error", status_code=500)
        body: dict[str, Any] = {
            "id": customer_id,
            "creation_utc": _now_utc(),
            "name": str(payload.get("name") or "customer"),
            "metadata": payload.get("metadata") or {},
            "tags": payload.get("tags") or [],
        }
        self._customers[customer_id] = body
        return JSONResponse(body, status_code=201)

    async def _read_customer(self, request: Request) -> Response:
        customer_id = request.path_params["customer_id"]
        if customer_id not in self._customers:
            return JSONResponse({"detail": f"Item '{customer_id}' not found"}, status_code=404)
        return JSONResponse(self._customers[customer_id])

    async def _create_session(self, request: Request) -> Response:
        payload = await _json_object(request)
        if payload is None or not isinstance(payload.get("agent_id"), str):
            return _unprocessable("agent_id is required")
        agent_id = payload["agent_id"]
        if agent_id not in self._agents:
            return _not_found("Agent", agent_id)
        customer_id = payload.get("customer_id") or "guest"
        if customer_id != "guest" and customer_id not in self._customers:
            return _not_found("Customer", customer_id)
        session = _Session(_new_id(), agent_id, customer_id, payload.get("title"))
        session.on_change = self._note_progress
        if customer_id in self._customers:
            session.customer_name = self._customers[customer_id]["name"]
        session.metadata = payload.get("metadata") or {}
        session.agent_name = self._agents[agent_id][0]["name"]
        self._sessions[session.id] = session
        return JSONResponse(session.to_json(), status_code=201)

    def _session(self, request: Request) -> _Session | None:
        session = self._sessions.get(request.path_params["session_id"])
        return None if session is None or session.deleted else session

    async def _read_session(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _not_found("Session", request.path_params["session_id"])
        return JSONResponse(session.to_json())

    async def _update_session(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _not_found("Session", request.path_params["session_id"])
        payload = await _json_object(request)
        if payload is None:
            return _unprocessable("body must be a JSON object")
        offsets = payload.get("consumption_offsets")
        if isinstance(offsets, dict) and isinstance(offsets.get("client"), int):
            session.consumption_offsets["client"] = offsets["client"]
            self._note_progress()
        if isinstance(payload.get("title"), str):
            session.title = payload["title"]
        return JSONResponse(session.to_json())

    async def _delete_session(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _not_found("Session", request.path_params["session_id"])
        session.deleted = True
        if session.turn_task is not None:
            session.turn_task.cancel()
        session.wake()
        del self._sessions[session.id]
        return Response(status_code=204)

    # --- events ---------------------------------------------------------------------------

    async def _list_events(self, request: Request) -> Response:
        response = await self._answer_poll(request)
        session_id = request.path_params["session_id"]
        self._served[(session_id, response.status_code)] += 1
        self._note_progress()
        return response

    async def _answer_poll(self, request: Request) -> Response:
        injected = self._injected.get(request.path_params["session_id"])
        if injected:
            status = injected.pop(0)
            if status == 200:  # a 200 whose body is not a list of events
                return JSONResponse({"detail": "injected malformed body"}, 200)
            headers = {"Retry-After": "1"} if status in (429, 503) else None
            return JSONResponse({"detail": f"injected {status}"}, status, headers=headers)
        session = self._session(request)
        if session is None:
            return _not_found("Session", request.path_params["session_id"])
        query = request.query_params
        try:
            min_offset = int(query.get("min_offset", "0"))
            wait_for_data = int(query.get("wait_for_data", "60"))
        except ValueError:
            return _unprocessable("min_offset and wait_for_data must be integers")
        if query.get("sse", "false").lower() == "true":
            return JSONResponse(
                {"detail": "the emulator serves long-polling only; sse=true is not emulated"},
                status_code=501,
            )
        kinds = {k for k in query.get("kinds", "").split(",") if k}
        source = query.get("source")
        trace_id = query.get("trace_id")

        def matching() -> list[dict[str, Any]]:
            return [
                e
                for e in session.events[max(min_offset, 0) :]
                if (not kinds or e["kind"] in kinds)
                and (source is None or e["source"] == source)
                and (trace_id is None or e["trace_id"] == trace_id)
            ]

        found = matching()
        if wait_for_data <= 0:
            self._ledger.store_reads += 1
            return _events_response(found)
        # Parlant reads the session, then its events (again each 0.25 s while it waits), then
        # the events it answers with once more
        self._ledger.store_reads += 3 if found else 2
        if found:
            return _events_response(found)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_for_data
        self._open_polls += 1
        self._note_progress()
        try:
            with self._ledger.wait(loop.time, _POLL_RECHECK, poll=True):
                answer = await self._await_events(session, deadline, matching)
        finally:
            self._open_polls -= 1
        if isinstance(answer, Response):
            return answer
        self._ledger.store_reads += 1
        return _events_response(answer)

    async def _await_events(
        self,
        session: _Session,
        deadline: float,
        matching: Callable[[], list[dict[str, Any]]],
    ) -> list[dict[str, Any]] | Response:
        """Wait until `matching()` finds events (a 504 at `deadline`, a 404 if the session is
        deleted, a 503 if the server closes meanwhile)."""
        loop = asyncio.get_running_loop()
        found: list[dict[str, Any]] = []
        while not found:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return JSONResponse({"detail": "Request timed out"}, status_code=504)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.changed.wait(), remaining)
            if session.deleted:
                return _not_found("Session", session.id)
            if self._closing:
                return JSONResponse({"detail": "Server shutting down"}, status_code=503)
            found = matching()
        return found

    async def _read_event(self, request: Request) -> Response:
        """`read_event`: one event; with `wait_for_completion`, once its stream is complete;
        with `sse`, the event each time its chunks grow, until complete or `wait_for_data`
        seconds without news (as Parlant 3.3.2 does)."""
        if self._refuse_read_event:
            detail = "Authorization failed: OPERATION=read_event (emulated production policy)"
            return JSONResponse({"detail": detail}, status_code=403)
        session = self._session(request)
        if session is None:
            return _not_found("Session", request.path_params["session_id"])
        query = request.query_params
        try:
            wait_for_data = int(query.get("wait_for_data", "60"))
        except ValueError:
            return _unprocessable("wait_for_data must be an integer")
        event_id = request.path_params["event_id"]
        event = next((e for e in session.events if e["id"] == event_id), None)
        ledger = self._ledger
        ledger.store_reads += 1
        if query.get("sse", "false").lower() == "true":
            # for an event it does not have, Parlant answers 200 and breaks the stream off
            updates = (
                _updates(session, event, wait_for_data, ledger) if event is not None else _none()
            )
            return StreamingResponse(updates, media_type="text/event-stream")
        if event is None:
            return _not_found("Event", event_id)
        if query.get("wait_for_completion", "false").lower() == "true":
            loop = asyncio.get_running_loop()
            with (
                ledger.wait(loop.time, _READ_EVENT_RECHECK, poll=False),
                contextlib.suppress(TimeoutError),
            ):
                async with asyncio.timeout(wait_for_data):
                    while _streaming(event):
                        await session.updated.wait()
        return JSONResponse(event)

    async def _create_event(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _not_found("Session", request.path_params["session_id"])
        payload = await _json_object(request)
        if payload is None:
            return _unprocessable("body must be a JSON object")
        kind, source, text = payload.get("kind"), payload.get("source"), payload.get("message")
        if kind != "message" or source not in _POSTABLE_SOURCES:
            return _unprocessable(
                'only kind=message from "customer", "human_agent" and '
                '"human_agent_on_behalf_of_ai_agent" is supported'
            )
        if not isinstance(text, str):
            return _unprocessable("message must be a string")
        metadata = payload.get("metadata") or {}
        if not isinstance(metadata, dict):
            return _unprocessable("metadata must be a JSON object")
        if source != "customer":
            if not text:
                return _refused("Missing 'message' field for event")
            # Like the real server: written under the "<main>" trace, starting no turn.
            participant = payload.get("participant")
            if source == "human_agent_on_behalf_of_ai_agent":
                participant = {"id": session.agent_id, "display_name": session.agent_name}
            elif not isinstance(participant, dict) or not participant.get("display_name"):
                return _refused("Missing 'participant' with 'display_name' for human agent message")
            else:
                participant = {
                    "id": participant.get("id") or None,
                    "display_name": participant["display_name"],
                }
            data: dict[str, Any] = {"message": text, "participant": participant}
            event = session.append(source, "message", MAIN_TRACE, data, metadata)
            return JSONResponse(event, status_code=201)
        data = {
            "message": text,
            "participant": {"id": session.customer_id, "display_name": session.customer_name},
            "flagged": False,
            "tags": [],
        }
        event = session.append("customer", "message", MAIN_TRACE, data, metadata)
        session.unanswered.append(text)
        self._start_turn(session)
        return JSONResponse(event, status_code=201)

    # --- turns ----------------------------------------------------------------------------

    def _start_turn(self, session: _Session) -> None:
        running = session.turn_task
        if running is not None and not running.done() and session.turn_trace is not None:
            running.cancel()
            self._supersede(session, session.turn_trace)
        trace_id = uuid.uuid4().hex
        session.turn_trace = trace_id
        session.append_status(trace_id, "acknowledged", {})
        messages = list(session.unanswered)
        task = asyncio.get_running_loop().create_task(self._run_turn(session, trace_id, messages))
        session.turn_task = task

    def _supersede(self, session: _Session, trace_id: str) -> None:
        """What the real server does to a turn overtaken by a newer customer message."""
        session.append_status(trace_id, "cancelled", {})
        session.append_status(trace_id, "ready", {"stage": "completed", **_GUIDELINE_DATA})
        if self._stray_events:
            task = asyncio.get_running_loop().create_task(self._strays(session, trace_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _strays(self, session: _Session, trace_id: str) -> None:
        """The captured strays: typing, a preamble, an empty ready, processing."""
        for step in range(4):
            await asyncio.sleep(0)
            if session.deleted:
                return
            if step == 0:
                session.append_status(trace_id, "typing", {})
            elif step == 1:
                session.append_agent_message(trace_id, "One moment.", preamble=True)
            elif step == 2:
                session.append_status(trace_id, "ready", {})
            else:
                session.append_status(trace_id, "processing", {"stage": "Interpreting"})

    async def _run_turn(self, session: _Session, trace_id: str, messages: list[str]) -> None:
        agent = self._agents[session.agent_id][1]
        context = TurnContext(self, session, trace_id, messages, agent)
        failure: Exception | None = None
        try:
            if agent.preamble:
                if agent.preamble_delay:
                    await asyncio.sleep(agent.preamble_delay)
                context.status("typing")
                if FAIL_MARKER in context.message:  # the model generates the preamble too
                    raise ModelFailure("the emulated model fails on purpose (failure marker)")
                context.say("One moment.", preamble=True)
            if agent.delay:
                await asyncio.sleep(agent.delay)
            context.status("processing", stage="Interpreting")
            await agent.script(context)
        except Exception as error:  # the engine's `except Exception`: the turn fails
            failure = error
        session.unanswered.clear()
        session.turn_trace = None
        context.status("ready", stage="completed", **_GUIDELINE_DATA)
        if failure is not None:  # what Parlant writes: the completed ready, then the error
            context.status("error", exception=pformat(traceback.format_exception(failure)))
            return
        follow_ups, session.follow_ups = session.follow_ups, []
        for text in follow_ups:
            session.append_agent_message(uuid.uuid4().hex, text, preamble=False)


_POSTABLE_SOURCES: Final = ("customer", "human_agent", "human_agent_on_behalf_of_ai_agent")

_GUIDELINE_DATA: Final[dict[str, Any]] = {
    "matched_guidelines": [],
    "matched_journeys": [],
    "matched_journey_states": [],
}


PRODUCTION_LIMITS: Final[Mapping[str, int]] = {
    "read_agent": 30,
    "create_guest_session": 10,
    "read_session": 30,
    "list_events": 240,
    "create_customer_event": 30,
    "other": 100,
}
"""Parlant 3.3's production rate limits: requests a minute per client IP, by operation."""

_PERMITTED: Final = frozenset(
    {"read_agent", "create_guest_session", "read_session", "list_events", "create_customer_event"}
)


@final
class _ProductionPolicy:
    """Parlant's `ProductionAuthorizationPolicy`: its permissions and per-IP moving windows
    (the `limits` library, which Parlant itself uses)."""

    def __init__(self, limits: Mapping[str, int], window: float) -> None:
        from limits import RateLimitItemPerSecond  # the emulator's production mode only
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        per_window = {**PRODUCTION_LIMITS, **limits}
        seconds = max(1, round(window))
        self._items = {op: RateLimitItemPerSecond(n, seconds) for op, n in per_window.items()}
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def authorize(self, request: Request, operation: str) -> Response | None:
        if operation not in _PERMITTED:
            detail = f"Authorization failed: OPERATION={operation} (emulated production policy)"
            return JSONResponse({"detail": detail}, status_code=403)
        item = self._items.get(operation, self._items["other"])
        if not self._limiter.hit(item, _client_ip(request), operation):
            detail = f"Rate limit exceeded: OPERATION={operation} (emulated production policy)"
            return JSONResponse({"detail": detail}, status_code=429)
        return None


def _client_ip(request: Request) -> str:
    """The client IP Parlant's rate limiter keys on (`BasicRateLimiter._get_client_ip`)."""
    headers = request.headers
    if forwarded := headers.get("x-forwarded-for"):
        return forwarded.split(",")[0].strip()
    for header in ("x-real-ip", "cf-connecting-ip"):
        if value := headers.get(header):
            return value.strip()
    return request.client.host if request.client is not None else "unknown"


async def _session_creation(request: Request) -> str:
    payload = await _json_object(request)
    customer = payload.get("customer_id") if payload is not None else None
    return "create_customer_session" if customer else "create_guest_session"


async def _event_creation(request: Request) -> str:
    payload = await _json_object(request)
    source = payload.get("source") if payload is not None else None
    return "create_customer_event" if source == "customer" else "create_human_agent_event"


def _streaming(event: dict[str, Any]) -> bool:
    chunks = event["data"].get("chunks") if isinstance(event["data"], dict) else None
    return isinstance(chunks, list) and (not chunks or chunks[-1] is not None)


async def _updates(
    session: _Session, event: dict[str, Any], wait_for_data: int, ledger: _Ledger
) -> AsyncIterator[str]:
    # Parlant re-reads the event every 0.1 s for as long as it streams it (until the client
    # leaves: a stream, unlike a long-poll, notices that)
    with ledger.wait(asyncio.get_running_loop().time, _READ_EVENT_RECHECK, poll=False):
        sent = -1
        while True:
            chunks = event["data"].get("chunks")
            size = len(chunks) if isinstance(chunks, list) else 0
            if size > sent:
                sent = size
                yield f"data: {json.dumps(event, separators=(',', ':'))}\n\n"
            if not _streaming(event) or session.deleted:
                return
            try:
                async with asyncio.timeout(wait_for_data):
                    await session.updated.wait()
            except TimeoutError:
                return


async def _none() -> AsyncIterator[str]:
    return
    yield


async def _client_gone(request: Request, error: Exception) -> Response:
    return Response(status_code=499)


def _events_response(events: list[dict[str, Any]]) -> Response:
    return Response(json.dumps(events), media_type="application/json")


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        payload = await request.json()
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None
