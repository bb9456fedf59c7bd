"""One-for-one supervision: crashed session actors restart from their checkpoint, and the
asks, streams and readers that outlived them get every event exactly once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import generate_latest

from actors import SessionCore
from actors._actor import SessionActor
from actors._messages import EventsReceived, Message
from actors._supervision import Barrier
from supervisor import RestartPolicy, SessionFailed, SessionSupervisor, SupervisorConfig
from supervisor._supervisor import ListSessions, SessionRefs, Supervisor
from supervisor.testing import (
    EmulatedAgent,
    EmulatorServer,
    FakeClock,
    echo,
    kill_session_actor,
    metric,
    settle,
    wait_until,
)
from tests.helpers import messages, new_session, until_events
from tests.logwatch import LogWatcher

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]


@pytest.fixture
def crash_on_agent_message(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Make a session actor crash when a poll brings an agent message, `budget` times."""
    state = {"budget": 1, "crashes": 0}
    handle = SessionCore.handle

    def crashing(self: SessionCore, message: Message, now: float) -> Any:
        if (
            state["budget"] > 0
            and isinstance(message, EventsReceived)
            and any(e.kind == "message" and e.source == "ai_agent" for e in message.events)
        ):
            state["budget"] -= 1
            state["crashes"] += 1
            raise RuntimeError("injected bug")
        return handle(self, message, now)

    monkeypatch.setattr(SessionCore, "handle", crashing)
    return state


def test_a_crash_mid_turn_restarts_from_the_checkpoint_and_loses_or_repeats_nothing(
    serve: Serve,
    supervise: Supervise,
    crash_on_agent_message: dict[str, int],
) -> None:
    server = serve(EmulatedAgent("stock", echo(), preamble=True))
    clock = FakeClock()
    sup = supervise(server.url, clock=clock)
    session_id = new_session(server, sup, "stock")
    reader = sup.events(session_id)

    stream = sup.stream(session_id, "Tell me about CKD stage 3", timeout=600)
    wait_until(sup, lambda: metric(sup, "session_crashes_total") >= 1)
    clock.advance(sup.config.restart_policy.backoff.cap)
    streamed = list(stream)
    read = [next(reader) for _ in range(10)]  # the customer message and the whole turn

    written = server.call(server.emulator.session_events, session_id)
    assert crash_on_agent_message["crashes"] == 1
    assert [e.offset for e in streamed] == [e["offset"] for e in written[1:10]]
    assert [e.offset for e in read] == [e["offset"] for e in written[:10]]
    assert streamed[-1].data["data"]["stage"] == "completed"
    assert sup.ask(session_id, "and now?", timeout=600).text == "echo: and now?"
    wait_until(sup, lambda: metric(sup, "session_restarts_total") >= 1)
    assert b"parlant_supervisor_session_restarts_total 1.0" in generate_latest(sup.registry)


def test_an_ask_waiting_through_a_crash_gets_its_reply(
    serve: Serve, supervise: Supervise, crash_on_agent_message: dict[str, int]
) -> None:
    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock)
    session_id = new_session(server, sup, "echo")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sup.ask, session_id, "survive this", timeout=600)
        wait_until(sup, lambda: metric(sup, "session_crashes_total") >= 1)
        clock.advance(sup.config.restart_policy.backoff.cap)
        reply = pending.result(timeout=30)

    assert reply.text == "echo: survive this"
    assert crash_on_agent_message["crashes"] == 1


def test_a_crash_loop_is_given_up_with_session_failed_until_reopened(
    serve: Serve, supervise: Supervise, crash_on_agent_message: dict[str, int]
) -> None:
    server = serve()
    clock = FakeClock()
    policy = RestartPolicy(max_restarts=2, restart_window=60)
    sup = supervise(server.url, clock=clock, restart_policy=policy)
    session_id = new_session(server, sup, "echo")
    crash_on_agent_message["budget"] = 3  # one more crash than the policy allows restarts

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sup.ask, session_id, "hello", timeout=600)
        for restarts in (1, 2):
            wait_until(sup, lambda n=restarts: metric(sup, "session_crashes_total") >= n)
            clock.advance(policy.backoff.cap)
        with pytest.raises(SessionFailed, match=rf"{session_id}.*3 times.*injected bug"):
            pending.result(timeout=30)

    wait_until(sup, lambda: metric(sup, "session_failures_total", reason="crashed") >= 1)
    with pytest.raises(SessionFailed):
        sup.ask(session_id, "still broken?", timeout=600)
    exposition = generate_latest(sup.registry).decode()
    assert 'parlant_supervisor_session_failures_total{reason="crashed"} 1.0' in exposition
    assert "parlant_supervisor_session_restarts_total 2.0" in exposition

    sup.open(session_id)  # the cause is fixed (the crash budget is spent): start again
    assert sup.ask(session_id, "better now?", timeout=600).text == "echo: better now?"
    settle(sup)


def test_a_call_stashed_by_a_crashed_actor_that_is_given_up_fails_with_session_failed(
    serve: Serve, supervise: Supervise, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold, held = holdable(monkeypatch, Supervisor)
    server = serve()
    sup = supervise(server.url, restart_policy=RestartPolicy(max_restarts=0))
    session_id = new_session(server, sup, "echo")
    sup.open(session_id)
    settle(sup)
    [actor] = sup.runtime.supervisor.ask(SessionRefs())
    sup.runtime.supervisor.tell("hold")  # its decision waits
    held.wait(30)
    kill_session_actor(sup, session_id, "a bug")
    reader = sup.events(session_id)  # told behind the crash: stashed
    assert actor.ask(Barrier(), timeout=30) == 0  # alive, and the reader not yet attached
    hold.set()

    with pytest.raises(SessionFailed, match=rf"{session_id}.*1 times.*a bug"):
        next(reader)
    with pytest.raises(SessionFailed):
        sup.ask(session_id, "still broken?", timeout=30)
    assert not actor.is_alive()
    assert server.call(server.emulator.session_events, session_id) == []  # nothing was sent


def test_a_session_asked_again_and_again_holds_a_few_timers_not_one_per_ask(
    serve: Serve, supervise: Supervise
) -> None:
    """A clock timer cannot be cancelled: one per ask's deadline and one per idle spell stayed
    pending for the whole timeout and TTL (each a handful of objects the garbage collector
    scans), 2 more for every ask of a busy session."""
    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock, idle_ttl=600)
    session_id = new_session(server, sup, "echo")
    for n in range(20):
        assert sup.ask(session_id, f"ask {n}", timeout=60).text == f"echo: ask {n}"
        settle(sup)
        clock.advance(1)

    assert clock.pending_timers <= 3


def test_a_reader_its_caller_gave_up_on_before_it_arrived_registers_nothing(
    serve: Serve, supervise: Supervise
) -> None:
    """A caller's messages to a session may take two paths (straight to the actor, or through
    the supervisor when the actor just stopped): a reader that arrives after its caller gave
    up (its Unsubscribe may have found no actor) must not be fed for ever, keeping its session
    paused once it fills."""
    from actors._messages import ConsumerKind, Subscribe
    from supervisor._consumers import EventConsumer

    server = serve()
    sup = supervise(server.url)
    session_id = new_session(server, sup)
    sup.open(session_id)
    settle(sup)

    def abandoned() -> EventConsumer:
        consumer = EventConsumer(ConsumerKind.READER, 10, lambda message: None)
        consumer.abandon()
        return consumer

    sup.runtime.route(session_id, Subscribe(abandoned()))  # to the live actor
    [actor] = sup.runtime.supervisor.ask(SessionRefs())
    assert actor.ask(Barrier(), timeout=30) == 0
    sup.close(session_id)
    sup.runtime.route(session_id, Subscribe(abandoned()))  # through the supervisor
    settle(sup)
    assert sup.sessions() == []  # no actor was started for it


def reaped_after_one_turn(
    serve: Serve, supervise: Supervise, **config: Any
) -> tuple[SessionSupervisor, FakeClock, str]:
    """A session (idle_ttl 300 s) that held one turn, then sat idle until it was reaped."""
    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock, idle_ttl=300, **config)
    session_id = new_session(server, sup, "echo")
    assert sup.ask(session_id, "first", timeout=600).text == "echo: first"
    settle(sup)
    clock.advance(300)
    wait_until(sup, lambda: metric(sup, "sessions_reaped_total") >= 1)
    return sup, clock, session_id


def test_an_idle_session_is_reaped_and_reactivated_transparently(
    serve: Serve, supervise: Supervise
) -> None:
    sup, _, session_id = reaped_after_one_turn(serve, supervise)

    assert sup.sessions() == []
    assert sup.statistics().open_polls == 0

    reader = sup.events(session_id)  # re-activates from the checkpoint: nothing old replayed
    assert sup.ask(session_id, "second", timeout=600).text == "echo: second"
    assert [next(reader).offset for _ in range(3)] == [7, 8, 9]  # the second turn, live
    exposition = generate_latest(sup.registry).decode()
    assert "parlant_supervisor_sessions_reaped_total 1.0" in exposition
    assert "parlant_supervisor_sessions_reactivated_total 1.0" in exposition


def test_an_ask_that_reaches_an_actor_as_it_reaps_itself_is_answered_by_the_next(
    serve: Serve, supervise: Supervise, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle actor stops itself; an ask told to it meanwhile is behind the stop in its
    mailbox. It goes back to the supervisor, which starts the session's next actor for it."""
    hold, held = holdable(monkeypatch, SessionActor)
    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock, idle_ttl=300)
    session_id = new_session(server, sup, "echo")
    assert sup.ask(session_id, "first", timeout=600).text == "echo: first"
    settle(sup)
    [reaped] = sup.runtime.supervisor.ask(SessionRefs())
    reaped.tell("hold")
    held.wait(30)
    clock.advance(300)  # its idle timer is told, behind the hold

    async def ask_behind_the_timer() -> str:
        asking = asyncio.ensure_future(sup.aask(session_id, "second", timeout=600))
        await asyncio.sleep(0)  # aask runs to its first wait: its message is told
        hold.set()
        return (await asking).text

    assert asyncio.run(ask_behind_the_timer()) == "echo: second"
    assert metric(sup, "sessions_reaped_total") == 1
    assert not reaped.is_alive()
    assert sup.runtime.supervisor.ask(SessionRefs()) != [reaped]
    posted = messages(server.call(server.emulator.session_events, session_id))
    assert posted == ["first", "echo: first", "second", "echo: second"]  # each sent once


def test_a_reaped_sessions_checkpoint_is_kept_for_its_ttl_then_it_starts_over(
    serve: Serve, supervise: Supervise
) -> None:
    sup, clock, session_id = reaped_after_one_turn(serve, supervise, checkpoint_ttl=3600)

    clock.advance(3600)  # the memory of where it stopped is gone: it starts over, from 0
    reader = sup.events(session_id)
    assert [next(reader).offset for _ in range(6)] == [0, 1, 2, 3, 4, 5]  # again, not lost
    assert sup.statistics().sessions == 1


def test_a_session_with_a_reader_or_a_waiting_ask_is_never_reaped(
    serve: Serve, supervise: Supervise
) -> None:
    async def never(turn: Any) -> None:
        await turn.gate("never")

    server = serve(EmulatedAgent("echo"), EmulatedAgent("never", never))
    clock = FakeClock()
    sup = supervise(server.url, clock=clock, idle_ttl=300)
    reading = new_session(server, sup, "echo")
    asking = new_session(server, sup, "never")
    reader = sup.events(reading)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sup.ask, asking, "hello?", timeout=None)
        until_events(server, asking, 3)
        settle(sup)
        clock.advance(3000)
        settle(sup)
        assert sorted(sup.sessions()) == sorted([reading, asking])
        assert metric(sup, "sessions_reaped_total") == 0
        server.call(server.emulator.release, "never")
        until_events(server, asking, 4)  # its completed ready, with no message:
        settle(sup)
        clock.advance(1)  # it waits out failure_grace for an error that does not come
        assert pending.result(timeout=30).text == ""
    reader.close()


def test_a_crash_of_the_supervisor_itself_stops_everything_with_a_clear_error(
    serve: Serve, logs: LogWatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    from supervisor import SupervisorStopped
    from supervisor._supervisor import Supervisor

    async def never(turn: Any) -> None:
        await turn.gate("never")

    server = serve(EmulatedAgent("never", never))
    sup = SessionSupervisor(server.url)
    session_id = new_session(server, sup, "never")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sup.ask, session_id, "hello?", timeout=None)
        server.run(
            server.emulator.until(lambda: len(server.emulator.session_events(session_id)) >= 3)
        )
        settle(sup)
        deliver = Supervisor._deliver

        def broken(self: Supervisor, session: str, message: Message) -> None:  # a bug
            if session == "trigger":
                raise RuntimeError("a bug in the supervisor")
            deliver(self, session, message)

        monkeypatch.setattr(Supervisor, "_deliver", broken)
        trigger = sup.events("trigger")  # routed by a tell: the supervisor's handler raises
        with pytest.raises(SupervisorStopped, match="supervisor crashed"):
            pending.result(timeout=30)
    [crashed] = logs.matching("supervisor.crashed")
    assert crashed["log_level"] == "error"

    assert list(trigger) == []  # its reader ends, as at any stop
    with pytest.raises(SupervisorStopped):
        sup.ask(session_id, "anyone?")
    summary = sup.stop()
    assert summary.deadline_met
    assert not any(thread.is_alive() for thread in sup.runtime.threads())


def test_a_restarted_backend_resumes_each_session_from_its_checkpoint_stored_in_parlant(
    serve: Serve,
) -> None:
    server = serve()
    config = SupervisorConfig(durable_checkpoints=True, wait_for_data=30)
    first = SessionSupervisor(server.url, config=config)
    session_id = new_session(server, first, "echo")
    first.ask(session_id, "one", timeout=30)
    first.ask(session_id, "two", timeout=30)
    first.stop()
    stored = server.call(server.emulator.session_consumption_offset, session_id)
    written = len(server.call(server.emulator.session_events, session_id))

    second = SessionSupervisor(server.url, config=config)  # the backend, restarted
    try:
        reader = second.events(session_id)
        server.call(server.emulator.post_agent_message, session_id, "while you were away")
        first_read = next(reader)
    finally:
        second.stop()

    assert stored == written  # everything up to here was consumed
    assert first_read.offset == written  # nothing old was replayed
    assert first_read.data["message"] == "while you were away"


def test_calls_that_reach_a_crashed_actor_before_its_restart_wait_for_it(
    serve: Serve, supervise: Supervise, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crashed actor lives on until its supervisor decides: a call that reaches it meanwhile
    is stashed and handled once it restarts, with the ask it was already answering. (A drill
    found the race when a crash replaced the actor: a message that reached the dead one was
    dropped, or spawned a fresh actor that knew nothing of the calls waiting on the old.)"""
    hold, held = holdable(monkeypatch, Supervisor)
    server = serve(EmulatedAgent("gated", gated_echo("go")))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "gated")
    reader = sup.events(session_id)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(sup.ask, session_id, "first", timeout=20)
        until_events(server, session_id, 3)  # the first turn is under way, held at its gate
        [actor] = sup.runtime.supervisor.ask(SessionRefs())
        sup.runtime.supervisor.tell("hold")  # its decision waits
        held.wait(30)
        kill_session_actor(sup, session_id, "a bug")
        second = sup.stream(session_id, "second", timeout=20)  # told behind the crash
        assert actor.ask(Barrier(), timeout=30) == 2  # alive, the reader and first ask kept
        hold.set()
        emulator = server.emulator
        server.run(emulator.until(lambda: "second" in str(emulator.session_events(session_id))))
        server.call(emulator.release, "go")
        streamed = list(second)
        answer = first.result(timeout=60)

    assert sup.runtime.supervisor.ask(SessionRefs()) == [actor]  # the same ref throughout
    assert answer.text == "echo: second"  # the turn that superseded the first answers both
    assert [e.data["message"] for e in streamed if e.kind == "message"] == [answer.text]
    written = server.call(server.emulator.session_events, session_id)
    assert [next(reader).offset for _ in written] == [e["offset"] for e in written]


def holdable(
    monkeypatch: pytest.MonkeyPatch, actor_class: type[Any]
) -> tuple[threading.Event, threading.Event]:
    """Actors of `actor_class` told "hold" stop handling messages (so that the test can stack
    messages in their mailbox) until the first event is set; the second is set once held."""
    hold, held = threading.Event(), threading.Event()
    receive = actor_class.on_receive

    def holding(self: Any, message: Any) -> Any:
        if message == "hold":
            held.set()
            hold.wait(30)
            return None
        return receive(self, message)

    monkeypatch.setattr(actor_class, "on_receive", holding)
    return hold, held


def gated_echo(gate: str) -> Any:
    async def script(turn: Any) -> None:
        await turn.gate(gate)
        turn.say(f"echo: {turn.message}")

    return script


def test_an_ask_left_in_a_crashed_actors_mailbox_is_sent_by_its_successor(
    serve: Serve, supervise: Supervise, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages behind the one that kills an actor die with it (pykka drops them): the other
    race the drill found. The ask behind the crash must still be posted, once."""
    hold, held = holdable(monkeypatch, SessionActor)
    server = serve()
    sup = supervise(server.url)
    session_id = new_session(server, sup)
    [actor] = sup.runtime.supervisor.ask(SessionRefs())

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        actor.tell("hold")
        held.wait(30)
        kill_session_actor(sup, session_id, "a bug")
        asking = pool.submit(sup.ask, session_id, "are you there?", timeout=20)
        sup.runtime.supervisor.ask(
            ListSessions()
        )  # both are now in the actor's mailbox, Kill first
        hold.set()
        reply = asking.result(timeout=60)

    assert reply.text == "echo: are you there?"
    posted = messages(server.call(server.emulator.session_events, session_id))
    assert posted == ["are you there?", "echo: are you there?"]  # sent once, not twice
