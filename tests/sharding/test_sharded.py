"""ShardedSupervisor on a local Ray instance, against the emulator: the same calls as one
process, sessions spread over shards, and a shard that dies loses and repeats nothing."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from parlant.client.types import Event

from supervisor import MessageDelta, SessionNotFound, SupervisorConfig
from supervisor.sharding import ShardedSupervisor
from supervisor.testing import EmulatedAgent, EmulatorServer, TurnContext, echo, kill_shard

Serve = Callable[..., EmulatorServer]
Shard = Callable[..., ShardedSupervisor]


def agent_id(server: EmulatorServer, name: str = "echo") -> str:
    return server.call(server.emulator.agent_id, name)


def customer_messages(server: EmulatorServer, session_id: str) -> list[str]:
    events = server.call(server.emulator.session_events, session_id)
    return [e["data"]["message"] for e in events if e["source"] == "customer"]


def written_offsets(server: EmulatorServer, session_id: str) -> list[int]:
    return [e["offset"] for e in server.call(server.emulator.session_events, session_id)]


class Readers:
    """An `events()` reader per session, each on a thread, recording the offsets it yields."""

    def __init__(self, sharded: ShardedSupervisor, sessions: list[str]) -> None:
        self.seen: dict[str, list[int]] = {session_id: [] for session_id in sessions}
        self._changed = threading.Condition()
        self._readers = [sharded.events(session_id) for session_id in sessions]
        self._threads = [
            threading.Thread(target=self._read, args=(sid, reader), daemon=True)
            for sid, reader in zip(sessions, self._readers, strict=True)
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, session_id: str, reader: Any) -> None:
        for event in reader:
            with self._changed:
                self.seen[session_id].append(event.offset)
                self._changed.notify_all()

    def wait_for(self, server: EmulatorServer, timeout: float = 60) -> None:
        """Until every reader has as many events as its session's log (bounded)."""

        def caught_up() -> bool:
            return all(
                len(seen) >= len(written_offsets(server, sid)) for sid, seen in self.seen.items()
            )

        with self._changed:
            assert self._changed.wait_for(caught_up, timeout), self.seen


def test_conversations_spread_over_shards_and_each_gets_its_own_replies(
    serve: Serve, shard: Shard
) -> None:
    server = serve()
    sharded = shard(server.url, shards=3)
    sessions: list[str] = []
    while len(sessions) < 60 and len({sharded.shard_of(s) for s in sessions}) < 3:
        sessions.append(sharded.create_session(agent_id(server)))  # ids are random: 3 shards
    sessions += [sharded.create_session(agent_id(server)) for _ in range(6)]

    for turn in range(2):
        for session_id in sessions:
            reply = sharded.ask(session_id, f"{session_id} turn {turn}", timeout=30)
            assert reply.text == f"echo: {session_id} turn {turn}"

    assert len({sharded.shard_of(s) for s in sessions}) == 3
    assert sorted(sharded.sessions()) == sorted(sessions)
    statistics = sharded.statistics()
    assert statistics.sessions == len(sessions)
    assert statistics.running
    samples = [
        (sample.labels.get("shard"), sample.value)
        for family in sharded.registry.collect()
        if family.name == "parlant_supervisor_sessions"
        for sample in family.samples
    ]
    assert {shard_label for shard_label, _ in samples} == {"0", "1", "2"}
    assert not any(
        "session_id" in f.samples[0].labels for f in sharded.registry.collect() if f.samples
    )


def test_a_stream_crosses_the_ray_boundary_event_by_event(serve: Serve, shard: Shard) -> None:
    server = serve()
    sharded = shard(server.url, shards=2)
    session_id = sharded.create_session(agent_id(server))

    events: list[Event] = list(sharded.stream(session_id, "hello", timeout=30))

    kinds = [(e.kind, e.data.get("status") if isinstance(e.data, dict) else None) for e in events]
    assert kinds[0] == ("status", "acknowledged")
    assert kinds[-1] == ("status", "ready")
    assert [e.data["message"] for e in events if e.kind == "message"] == ["echo: hello"]


def test_a_streamed_answer_crosses_the_ray_boundary_delta_by_delta(
    serve: Serve, shard: Shard
) -> None:
    server = serve(EmulatedAgent("stream", echo(), output_mode="stream", chunk_delay=0.01))
    sharded = shard(server.url, shards=2)
    session_id = sharded.create_session(server.call(server.emulator.agent_id, "stream"))

    items = list(sharded.stream(session_id, "tell me more", timeout=30))
    pieces = list(sharded.stream_text(session_id, "and more", timeout=30))

    deltas = [i for i in items if isinstance(i, MessageDelta)]
    assert "".join(d.delta for d in deltas) == "echo: tell me more"
    assert "".join(pieces) == "echo: and more"


def test_a_shards_error_reaches_the_caller_as_itself(serve: Serve, shard: Shard) -> None:
    server = serve()
    sharded = shard(server.url, shards=2)

    with pytest.raises(SessionNotFound) as raised:
        sharded.ask("no-such-session", "hello?", timeout=30)
    assert raised.value.session_id == "no-such-session"


def test_a_shard_killed_mid_conversation_loses_and_repeats_no_event(
    serve: Serve, shard: Shard
) -> None:
    server = serve()
    sharded = shard(server.url, shards=3)
    sessions = [sharded.create_session(agent_id(server)) for _ in range(9)]
    readers = Readers(sharded, sessions)
    victim = sharded.shard_of(sessions[0])

    for turn in range(4):
        if turn == 2:
            kill_shard(sharded, victim)
        for session_id in sessions:
            reply = sharded.ask(session_id, f"{session_id} turn {turn}", timeout=30)
            assert reply.text == f"echo: {session_id} turn {turn}"

    readers.wait_for(server)
    for session_id in sessions:
        assert readers.seen[session_id] == written_offsets(server, session_id), session_id
        customer = customer_messages(server, session_id)
        assert customer == [f"{session_id} turn {turn}" for turn in range(4)]  # each once


def test_an_ask_in_flight_on_a_dying_shard_is_handed_to_its_successor_and_answered_once(
    serve: Serve, shard: Shard
) -> None:
    async def gated(turn: TurnContext) -> None:
        await turn.gate("answer")
        turn.say(f"echo: {turn.message}")

    server = serve(EmulatedAgent("gated", gated))
    sharded = shard(server.url, shards=2)
    session_id = sharded.create_session(agent_id(server, "gated"))
    outcome: list[BaseException | str] = []

    def ask() -> None:
        try:
            outcome.append(sharded.ask(session_id, "are you there?", timeout=60).text)
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    asking = threading.Thread(target=ask)
    asking.start()
    emulator = server.emulator
    server.run(emulator.until(lambda: len(emulator.session_events(session_id)) >= 2))
    kill_shard(sharded, sharded.shard_of(session_id))  # the message posted, its turn waiting
    server.call(emulator.release, "answer")
    asking.join(60)

    assert outcome == ["echo: are you there?"]
    assert customer_messages(server, session_id) == ["are you there?"]  # not posted again
    assert sharded.ask(session_id, "and now?", timeout=30).text == "echo: and now?"


def test_a_stream_in_flight_on_a_dying_shard_goes_on_and_yields_each_piece_once(
    serve: Serve, shard: Shard
) -> None:
    words = " ".join(f"w{n}" for n in range(12))

    async def halting(turn: TurnContext) -> None:
        async def chunks() -> Any:
            for n, piece in enumerate(f" {words}".split(" ")[1:]):
                if n == 4:
                    await turn.gate("rest")  # a third of the answer streamed, then a halt
                yield piece if n == 0 else f" {piece}"

        await turn.stream(chunks())

    server = serve(EmulatedAgent("halting", halting, output_mode="stream"))
    sharded = shard(server.url, shards=2)
    session_id = sharded.create_session(agent_id(server, "halting"))
    stream = sharded.stream_text(session_id, "go on", timeout=60)
    pieces = [next(stream)]  # the first words, live

    kill_shard(sharded, sharded.shard_of(session_id))
    server.call(server.emulator.release, "rest")
    pieces += list(stream)

    assert "".join(pieces) == words  # nothing repeated, nothing missing
    assert customer_messages(server, session_id) == ["go on"]


def test_sharding_needs_durable_checkpoints(ray_instance: Any) -> None:
    with pytest.raises(ValueError, match="durable_checkpoints=True"):
        ShardedSupervisor("http://127.0.0.1:9", config=SupervisorConfig())


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an absent package imports as
    with pytest.raises(ImportError, match=r"pip install .*\[ray\]"):
        ShardedSupervisor("http://127.0.0.1:9")


def test_a_reader_whose_shard_dies_before_it_read_anything_still_gets_what_the_shard_took(
    serve: Serve, shard: Shard
) -> None:
    server = serve()
    emulator = server.emulator
    sharded = shard(server.url, shards=2)
    session_id = sharded.create_session(agent_id(server))
    assert sharded.ask(session_id, "first", timeout=30).text == "echo: first"
    reader = sharded.events(session_id)  # subscribed at once, not read yet
    written = server.call(emulator.post_agent_message, session_id, "while nobody reads")

    # the shard's side of the reader took it: the checkpoint stored in Parlant moved past it
    server.run(
        emulator.until(lambda: emulator.session_consumption_offset(session_id) > written["offset"])
    )
    kill_shard(sharded, sharded.shard_of(session_id))

    first = next(reader)  # resumed on the restarted shard from where the reader started
    reader.close()
    assert (first.offset, first.data["message"]) == (written["offset"], "while nobody reads")
