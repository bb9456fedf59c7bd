"""Conformance: the same scripted conversations against the emulator and a real Parlant server
give the library's consumers the same view.

Compared: every event's kind, source, status, stage, text and preamble tag, grouped by turn
(trace ids relabelled in order of appearance), which reply answers which customer message, and
the messages outside any turn. A cancelled turn's trace is compared up to its completed `ready`:
what it emits after (the strays the real server writes) joins no reply, and its timing differs
from run to run on the real server itself.
"""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from supervisor import AgentError, Reply, SessionSupervisor
from supervisor.testing import (
    CUT_MARKER,
    FAIL_MARKER,
    EmulatedAgent,
    EmulatorServer,
    ParlantServer,
    echo,
)
from tests.helpers import post_as_human_agent, session_with
from tests.realserver.conftest import CHUNK_DELAY

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]

# The emulator's agents for each of the real server's perceived-performance policies (the real
# servers' agents: tests/realserver/conftest.py). Both write an empty `ready` after each message;
# with the stock policy a preamble comes ~2 s after `acknowledged`, the answer ~1.5 s after it.
NULL_AGENTS = (
    EmulatedAgent("Echo", echo()),
    EmulatedAgent("StreamingEcho", echo(), output_mode="stream", chunk_delay=CHUNK_DELAY),
)
STOCK = {"preamble": True, "preamble_delay": 1.5, "delay": 1.5}
STOCK_AGENTS = (
    EmulatedAgent("Echo", echo(), **STOCK),  # type: ignore[arg-type]
    EmulatedAgent(  # type: ignore[misc]
        "StreamingEcho", echo(), output_mode="stream", chunk_delay=CHUNK_DELAY, **STOCK
    ),
)


@dataclass
class View:
    """What the library's consumers saw of one conversation, with ids made comparable."""

    turns: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    outside: list[tuple[Any, ...]] = field(default_factory=list)
    replies: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)


class Observer:
    """Relabels trace ids (T1, T2 ... in order of appearance) and customer messages (their
    index) so that two servers' conversations compare equal when they mean the same."""

    def __init__(self) -> None:
        self.view = View()
        self._traces: dict[str, str] = {}
        self._customer_offsets: list[int] = []
        self._finished: set[str] = set()

    def saw(self, event: Any) -> None:
        data = event.data
        if event.source == "customer":
            self._customer_offsets.append(event.offset)
            self.view.outside.append(("customer", data["message"]))
            return
        if event.source == "human_agent":
            self.view.outside.append(
                ("human_agent", data["message"], data["participant"]["display_name"])
            )
            return
        label = self._label(event.trace_id)
        if label in self._finished and not (event.kind == "status" and data["status"] == "error"):
            return  # after its completed ready: strays of a cancelled turn (an error is news)
        if event.kind == "status":
            stage = (data.get("data") or {}).get("stage")
            self.view.turns[label].append(("status", data["status"], stage))
            if stage == "completed":
                self._finished.add(label)
        else:
            preamble = "__preamble__" in (data.get("tags") or [])
            self.view.turns[label].append((event.kind, event.source, data["message"], preamble))

    def replied(self, reply: Reply) -> None:
        answers = tuple(self._customer_offsets.index(offset) for offset in reply.answers)
        self.view.replies.append((reply.text, answers, self._label(reply.trace_id)))

    def _label(self, trace_id: str) -> str:
        if trace_id not in self._traces:
            self._traces[trace_id] = f"T{len(self._traces) + 1}"
            self.view.turns[self._traces[trace_id]] = []
        return self._traces[trace_id]


def read_until(reader: Iterator[Any], observer: Observer, done: Callable[[Any], bool]) -> None:
    for event in reader:
        observer.saw(event)
        if done(event):
            return


def completes(reply: Reply) -> Callable[[Any], bool]:
    return lambda event: event.offset == reply.events[-1].offset


def two_turns_and_a_human(sup: SessionSupervisor, url: str, agent: str = "Echo") -> View:
    session_id = session_with(sup, agent)
    observer = Observer()
    reader = sup.events(session_id)
    for text in ("hello", "and a second question"):
        reply = sup.ask(session_id, text, timeout=60)
        read_until(reader, observer, completes(reply))
        observer.replied(reply)
    response = post_as_human_agent(url, session_id, "Dana from support here.")
    assert response.status_code == 201, response.text
    read_until(reader, observer, lambda event: event.source == "human_agent")
    return observer.view


def streamed_turns(sup: SessionSupervisor, url: str) -> View:
    """Two turns of a streaming agent: readers see each message once, whole."""
    return two_turns_and_a_human(sup, url, "StreamingEcho")


def failed_then_answered(agent: str, marker: str) -> Callable[[SessionSupervisor, str], View]:
    def scenario(sup: SessionSupervisor, url: str) -> View:
        session_id = session_with(sup, agent)
        observer = Observer()
        reader = sup.events(session_id)
        try:
            sup.ask(session_id, f"please {marker} now", timeout=60)
        except AgentError:
            observer.view.replies.append(("AgentError", (0,), "T1"))
        read_until(reader, observer, lambda e: e.kind == "status" and e.data["status"] == "error")
        reply = sup.ask(session_id, "and now?", timeout=60)
        read_until(reader, observer, completes(reply))
        observer.replied(reply)
        return observer.view

    return scenario


def superseded(sup: SessionSupervisor, url: str) -> View:
    session_id = session_with(sup)
    observer = Observer()
    reader = sup.events(session_id)
    stream = sup.stream(session_id, "first question", timeout=60)
    assert next(stream).data["status"] == "acknowledged"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        second = pool.submit(sup.ask, session_id, "second question", timeout=60)
        streamed = list(stream)
        reply = second.result(timeout=60)
    assert streamed[-1].offset == reply.events[-1].offset
    read_until(reader, observer, completes(reply))
    observer.replied(reply)
    observer.replied(reply)  # the stream's message is answered by the same turn
    return observer.view


@pytest.mark.parametrize(
    ("policy", "agents", "scenario"),
    [
        ("null", NULL_AGENTS, two_turns_and_a_human),
        ("stock", STOCK_AGENTS, two_turns_and_a_human),
        ("stock", STOCK_AGENTS, superseded),
        ("null", NULL_AGENTS, streamed_turns),
        ("stock", STOCK_AGENTS, streamed_turns),
        ("stock", STOCK_AGENTS, failed_then_answered("Echo", FAIL_MARKER)),
        ("null", NULL_AGENTS, failed_then_answered("StreamingEcho", CUT_MARKER)),
    ],
    ids=[
        "null-two-turns",
        "stock-two-turns",
        "stock-superseded",
        "null-streamed",
        "stock-streamed",
        "stock-model-down",
        "null-stream-cut",
    ],
)
@pytest.mark.parametrize("waiting", ["polled", "notified"])
def test_the_emulator_and_the_real_server_look_the_same_to_consumers(
    policy: str,
    agents: tuple[EmulatedAgent, ...],
    scenario: Callable[[SessionSupervisor, str], View],
    waiting: str,
    request: pytest.FixtureRequest,
    serve: Serve,
    supervise: Supervise,
) -> None:
    """On Parlant as it ships, and with `supervisor.parlant_module` (`notified`)."""
    suffix = "_notified" if waiting == "notified" else ""
    real: ParlantServer = request.getfixturevalue(f"{policy}_parlant{suffix}")
    emulator = serve(*agents)

    on_real = scenario(supervise(real.url), real.url)
    on_emulator = scenario(supervise(emulator.url), emulator.url)

    assert on_emulator == on_real
    assert on_real.replies  # the scenario ran turns, not nothing


def production_policy(url: str, agent_id: str, ip: str) -> dict[str, Any]:
    """What a client at `ip` is allowed under the production policy, and where it stops."""
    with httpx.Client(base_url=url, headers={"X-Forwarded-For": ip}, timeout=30) as http:
        session_id = http.post("/sessions", json={"agent_id": agent_id}).json()["id"]
        statuses = {
            "list agents": http.get("/agents").status_code,
            "read agent": http.get(f"/agents/{agent_id}").status_code,
            "create customer": http.post("/customers", json={"name": "x"}).status_code,
            "read session": http.get(f"/sessions/{session_id}").status_code,
            "update session": http.patch(f"/sessions/{session_id}", json={}).status_code,
            "list events": http.get(
                f"/sessions/{session_id}/events", params={"wait_for_data": 0}
            ).status_code,
            "read event": http.get(f"/sessions/{session_id}/events/x").status_code,
            "delete session": http.delete(f"/sessions/{session_id}").status_code,
        }
        # 10 guest sessions a minute per IP: the first took one
        more = [http.post("/sessions", json={"agent_id": agent_id}) for _ in range(10)]
        elsewhere = http.post(
            "/sessions", json={"agent_id": agent_id}, headers={"X-Forwarded-For": f"{ip}0"}
        )
    refused = more[-1]
    return {
        **statuses,
        "guest sessions": [r.status_code for r in more],
        "refusal": refused.json()["detail"].split(":")[0],
        "retry-after": refused.headers.get("retry-after"),
        "another IP": elsewhere.status_code,
    }


@pytest.mark.parametrize("waiting", ["polled", "notified"])
def test_the_emulator_enforces_parlants_production_policy_as_parlant_does(
    waiting: str, request: pytest.FixtureRequest, serve: Serve
) -> None:
    suffix = "_notified" if waiting == "notified" else ""
    production_parlant: ParlantServer = request.getfixturevalue(f"production_parlant{suffix}")
    emulator = serve(EmulatedAgent("Echo"), authorization="production")

    on_real = production_policy(production_parlant.url, "Echo", "203.0.113.5")
    agent_id = emulator.call(emulator.emulator.agent_id, "Echo")
    on_emulator = production_policy(emulator.url, agent_id, "203.0.113.5")

    assert on_emulator == on_real
    assert on_real["guest sessions"] == [201] * 9 + [429]


def keyed_posts(url: str, agent_id: str) -> dict[str, Any]:
    """Two posts with one key, and what the log says of them (Parlant does not deduplicate:
    exactly-once posting rests on the key coming back unchanged with every read)."""
    metadata = {"parlant_supervisor": {"post": "k-1"}, "app": {"n": 1, "tags": ["a"]}}
    with httpx.Client(base_url=url, timeout=30) as http:
        session_id = http.post("/sessions", json={"agent_id": agent_id}).json()["id"]
        posted = [
            http.post(
                f"/sessions/{session_id}/events",
                json={
                    "kind": "message",
                    "source": "customer",
                    "message": "hi",
                    "metadata": metadata,
                },
            ).json()
            for _ in range(2)
        ]
        log = http.get(
            f"/sessions/{session_id}/events",
            params={"min_offset": 0, "wait_for_data": 0, "source": "customer", "kinds": "message"},
        ).json()
    return {
        "answered with": [p["metadata"] for p in posted],
        "in the log": [event["metadata"] for event in log],
    }


def test_a_customer_messages_metadata_comes_back_unchanged_and_is_not_deduplicated(
    null_parlant: ParlantServer, serve: Serve
) -> None:
    emulator = serve(*NULL_AGENTS)

    on_real = keyed_posts(null_parlant.url, "Echo")
    on_emulator = keyed_posts(emulator.url, emulator.call(emulator.emulator.agent_id, "Echo"))

    assert on_emulator == on_real
    assert len(on_real["in the log"]) == 2


def customer_with_an_id_of_ours(url: str) -> dict[str, Any]:
    """Customers created with a given id: once, then refused; read back by it."""
    with httpx.Client(base_url=url, timeout=30) as http:
        first = http.post("/customers", json={"name": "Ada", "id": "our-id-1"})
        again = http.post("/customers", json={"name": "Ada", "id": "our-id-1"})
        found = http.get("/customers/our-id-1")
        missing = http.get("/customers/our-id-2")
    return {
        "created": (first.status_code, first.json()["id"]),
        "again": again.status_code,
        "read": (found.status_code, found.json()["name"]),
        "missing": missing.status_code,
    }


def test_a_customer_id_chosen_by_the_client_is_kept_and_cannot_be_taken_twice(
    own_parlant: ParlantServer, serve: Serve
) -> None:
    on_real = customer_with_an_id_of_ours(own_parlant.url)
    on_emulator = customer_with_an_id_of_ours(serve().url)

    assert on_emulator == on_real
    assert on_real["created"] == (201, "our-id-1")


def expired_polls_on_one_connection(url: str, session_id: str, count: int) -> list[int]:
    """`count` long-polls past the end of the log with `wait_for_data=1`, one after the other
    on one kept-alive connection: the status of each (the connection closing fails the test)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    statuses = []
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        for _ in range(count):
            request = (
                f"GET /sessions/{session_id}/events?min_offset=1000&wait_for_data=1 HTTP/1.1\r\n"
                f"Host: {host}\r\n\r\n"
            )
            connection.sendall(request.encode())
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(65_536)
                assert chunk, "the server closed the connection after an expired long-poll"
                received += chunk
            head, body = received.split(b"\r\n\r\n", 1)
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += connection.recv(65_536)
            statuses.append(int(head.split(b" ", 2)[1]))
    return statuses


def test_an_expired_long_poll_is_a_504_and_its_connection_carries_the_next_one(
    null_parlant: ParlantServer, serve: Serve, supervise: Callable[..., SessionSupervisor]
) -> None:
    """What the poller's own repetition of a timed-out poll rests on (`StartPoll.repeat_wait`):
    the answer of an expired poll, and a kept-alive connection for the next. Meanwhile the
    supervisor's own polls (1 s) expire and are repeated by the poller; the session answers."""
    emulator = serve(*NULL_AGENTS)
    seen = {}
    for name, url in (("real", null_parlant.url), ("emulator", emulator.url)):
        sup = supervise(url, wait_for_data=1, wait_jitter=0)
        session_id = session_with(sup)
        statuses = expired_polls_on_one_connection(url, session_id, 2)
        reply = sup.ask(session_id, "still there?", timeout=30)
        seen[name] = (statuses, reply.text)

    assert seen["emulator"] == seen["real"]
    assert seen["real"] == ([504, 504], "echo: still there?")
