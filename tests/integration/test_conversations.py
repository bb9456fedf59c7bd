"""The seed's scenarios and the delivery guarantees, over real HTTP against the emulator."""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator

import httpx
import pytest

from supervisor import (
    InvalidInput,
    Reply,
    ReplyTimeout,
    SessionClosed,
    SessionNotFound,
    SessionState,
    SessionSupervisor,
    SupervisorStopped,
)
from supervisor.testing import (
    EmulatedAgent,
    EmulatorServer,
    FakeClock,
    TurnContext,
    echo,
    metric,
    settle,
    wait_until,
)
from tests.helpers import failed_with, last_failure, new_session, post_as_human_agent, until_events
from tests.logwatch import LogWatcher

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]


@contextlib.contextmanager
def asking(
    server: EmulatorServer, sup: SessionSupervisor, session_id: str, text: str, timeout: float = 60
) -> Iterator[concurrent.futures.Future[Reply]]:
    """An ask on another thread, yielded once the turn answering it is under way on the server
    (its message, `acknowledged` and `processing` are written)."""
    written = len(server.call(server.emulator.session_events, session_id))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sup.ask, session_id, text, timeout=timeout)
        until_events(server, session_id, written + 3)
        yield pending


def gated(name: str) -> EmulatedAgent:
    """An echo agent whose every turn waits for `release("<name>")` before answering."""

    async def script(turn: TurnContext) -> None:
        await turn.gate(name)
        turn.status("typing")
        turn.say(f"echo: {turn.message}")

    return EmulatedAgent(name, script)


# --- the seed's scenarios --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("linger", "state", "polls"),
    [(None, SessionState.POLLING, 1), (0.0, SessionState.DORMANT, 0)],
    ids=["polled-all-along", "dormant-by-default"],
)
def test_a_single_message_gets_its_reply_and_what_comes_after_ready_is_not_missed(
    linger: float | None, state: SessionState, polls: int, serve: Serve, supervise: Supervise
) -> None:
    """The naive client stops at the first `ready` and misses what the agent says next. A
    session polled all along reads it at once; a dormant one (nobody waits: the default)
    reads it when its next reader comes, and gives it to that reader."""
    server = serve()
    sup = supervise(server.url, linger=linger)
    session_id = new_session(server, sup)

    reply = sup.ask(session_id, "Tell me about CKD stage 3", timeout=30)

    assert reply.text == "echo: Tell me about CKD stage 3"
    assert reply.session_id == session_id
    settle(sup)
    stats = sup.statistics()
    assert stats.sessions_by_state[state] == 1
    assert stats.open_polls == polls
    server.call(server.emulator.post_agent_message, session_id, "one more thing")
    follow_up = next(sup.events(session_id))
    assert follow_up.data["message"] == "one more thing"


def test_several_messages_in_sequence_share_one_polling_loop(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url)
    session_id = new_session(server, sup)

    texts = [sup.ask(session_id, f"question {i}", timeout=30).text for i in range(5)]

    assert texts == [f"echo: question {i}" for i in range(5)]
    assert sup.statistics().sessions_started_total == 1


def test_session_lifecycle_open_use_close_leaves_nothing_running(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url)
    session_id = new_session(server, sup)
    assert sup.ask(session_id, "hello", timeout=30).text == "echo: hello"
    reader = sup.events(session_id)

    sup.close(session_id)

    settle(sup)
    stats = sup.statistics()
    assert (stats.sessions, stats.open_polls) == (0, 0)
    assert sup.sessions() == []
    assert list(reader) == []  # a reader's iteration ends when its session is closed
    # using the session again re-opens it where it stopped: nothing old is replayed
    assert sup.ask(session_id, "again", timeout=30).text == "echo: again"
    assert sup.statistics().sessions_started_total == 2


def test_a_failing_poll_is_retried_with_backoff_and_reported(
    serve: Serve, supervise: Supervise, logs: LogWatcher
) -> None:
    server = serve()
    clock = FakeClock()
    # polled with nobody waiting for longer than a linger: the backoff is what is under test
    sup = supervise(server.url, clock=clock, linger=None)
    session_id = server.call(server.emulator.create_session, "echo")
    server.call(server.emulator.inject_poll_failures, session_id, [500, 503])

    sup.open(session_id)
    failed_with(sup, session_id)
    assert last_failure(sup, session_id) == ("server_error", "HTTP 500 Internal Server Error")
    stats = sup.statistics()
    assert stats.sessions_by_state[SessionState.BACKING_OFF] == 1
    assert stats.failing_sessions == 1

    clock.advance(sup.config.backoff.cap)
    failed_with(sup, session_id, 2)
    clock.advance(sup.config.backoff.cap)
    assert sup.ask(session_id, "still there?").text == "echo: still there?"
    assert server.emulator.served(session_id, 500) == 1
    assert server.emulator.served(session_id, 503) == 1
    assert sup.statistics().failing_sessions == 0


def test_a_504_is_normal_and_the_session_keeps_polling(
    serve: Serve, supervise: Supervise, logs: LogWatcher
) -> None:
    server = serve(gated("slow"))
    sup = supervise(server.url, wait_for_data=1, wait_jitter=0)
    session_id = new_session(server, sup, "slow")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sup.ask, session_id, "take your time", timeout=60)
        emulator = server.emulator
        server.run(emulator.until(lambda: emulator.served(session_id, 504) >= 2))
        server.call(emulator.release, "slow")
        reply = pending.result(timeout=30)

    assert reply.text == "echo: take your time"
    assert logs.matching("session.poll_failed") == []


def test_an_ask_past_its_deadline_raises_and_its_late_reply_reaches_events(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve(gated("late"))
    clock = FakeClock()
    sup = supervise(server.url, clock=clock)
    session_id = new_session(server, sup, "late")

    with asking(server, sup, session_id, "are you there?", timeout=120) as pending:
        settle(sup)
        clock.advance(120)
        with pytest.raises(ReplyTimeout, match=session_id):
            pending.result(timeout=30)

    server.call(server.emulator.release, "late")
    reader = sup.events(session_id)
    late = next(e for e in reader if e.kind == "message" and e.source == "ai_agent")
    assert late.data["message"] == "echo: are you there?"
    assert next(reader).data["status"] == "ready"  # the late turn, complete, in order


# --- delivery guarantees ---------------------------------------------------------------------


def test_a_preamble_and_intermediate_readies_do_not_end_the_reply(
    serve: Serve, supervise: Supervise
) -> None:
    stock = EmulatedAgent("stock", echo(), preamble=True)
    server = serve(stock)
    sup = supervise(server.url)
    session_id = new_session(server, sup, "stock")

    reply = sup.ask(session_id, "Tell me about CKD stage 3", timeout=30)

    assert [(m.text, m.is_preamble) for m in reply.messages] == [
        ("One moment.", True),
        ("echo: Tell me about CKD stage 3", False),
    ]
    assert reply.text == "echo: Tell me about CKD stage 3"
    statuses = [e.data["status"] for e in reply.events if e.kind == "status"]
    assert statuses.count("ready") == 3  # two intermediate, one completed (the last event)
    assert reply.events[-1].data["data"]["stage"] == "completed"


def test_concurrent_asks_in_a_superseded_turn_both_resolve_with_the_turn_that_answers_them(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve(gated("busy"))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "busy")

    with (
        asking(server, sup, session_id, "first question") as first,
        asking(server, sup, session_id, "second question") as second,  # supersedes the first
    ):
        server.call(server.emulator.release, "busy")
        replies = [first.result(timeout=30), second.result(timeout=30)]

    assert replies[0] == replies[1]
    assert replies[0].text == "echo: second question"
    assert len(replies[0].answers) == 2
    # the superseded trace's cancellation, its completed ready and its strays joined no reply
    first_trace = server.call(server.emulator.session_events, session_id)[1]["trace_id"]
    assert all(e.trace_id != first_trace for e in replies[0].events)


def test_a_stale_ready_of_an_earlier_turn_does_not_end_a_later_stream(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve(gated("busy"))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "busy")

    with asking(server, sup, session_id, "first") as first:
        stream = sup.stream(session_id, "second", timeout=60)
        until_events(server, session_id, 6)  # the first turn's completed ready is now stale
        server.call(server.emulator.release, "busy")
        events = list(stream)
        first.result(timeout=30)

    assert events[-1].data["data"]["stage"] == "completed"
    messages = [e.data["message"] for e in events if e.kind == "message"]
    assert messages == ["echo: second"]
    assert len({e.trace_id for e in events}) == 1


def test_a_follow_up_after_ready_with_nobody_asking_reaches_the_next_reader(
    serve: Serve, supervise: Supervise
) -> None:
    async def script(turn: TurnContext) -> None:
        turn.say(f"echo: {turn.message}")
        turn.follow_up("Anything else I can help with?")

    server = serve(EmulatedAgent("chatty", script))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "chatty")

    assert sup.ask(session_id, "hi", timeout=30).text == "echo: hi"
    follow_up = next(sup.events(session_id))

    assert follow_up.kind == "message"
    assert follow_up.data["message"] == "Anything else I can help with?"


def test_a_human_agent_writing_during_a_turn_reaches_readers_and_joins_no_reply(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve(gated("busy"))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "busy")
    reader = sup.events(session_id)

    with asking(server, sup, session_id, "is anyone there?") as pending:
        posted = post_as_human_agent(server.url, session_id, "Dana here, I'm looking into it.")
        server.call(server.emulator.release, "busy")
        reply = pending.result(timeout=30)

    assert posted.status_code == 201
    assert posted.json()["trace_id"] == "<main>"  # as on the real server: no turn's trace
    assert reply.text == "echo: is anyone there?"
    assert all(e.source != "human_agent" for e in reply.events)
    seen = [next(reader) for _ in range(len(reply.events) + 2)]
    human = [e for e in seen if e.source == "human_agent"]
    assert [e.data["message"] for e in human] == ["Dana here, I'm looking into it."]


def test_a_slow_stream_pauses_polling_and_resumes_with_nothing_lost(
    serve: Serve, supervise: Supervise
) -> None:
    parts = [f"part {i}" for i in range(20)]

    async def verbose(turn: TurnContext) -> None:
        await turn.gate("first half")
        for part in parts[:10]:
            turn.say(part)
        await turn.gate("second half")
        for part in parts[10:]:
            turn.say(part)

    server = serve(EmulatedAgent("verbose", verbose))
    # 3: the turn's two events before the first gate (acknowledged, processing) cannot fill it
    sup = supervise(server.url, consumer_capacity=3)
    session_id = new_session(server, sup, "verbose")

    stream = sup.stream(session_id, "tell me everything", timeout=60)
    first = next(stream)  # `acknowledged`: the stream is attached to its turn
    server.call(server.emulator.release, "first half")
    # nobody reads: once the first half is delivered, the stream is over capacity
    wait_until(sup, lambda: metric(sup, "backpressure_pauses_total") >= 1)
    server.call(server.emulator.release, "second half")
    until_events(server, session_id, 44)  # the whole turn is written on the server...
    settle(sup)
    stats = sup.statistics()
    assert stats.sessions_by_state[SessionState.PAUSED] == 1
    assert stats.open_polls == 0  # ...and the second half waits there: no poll is open
    events = [first, *stream]

    offsets = [e.offset for e in events]
    assert offsets == list(range(1, 44))  # each message is followed by a `ready`
    assert [e.data["message"] for e in events if e.kind == "message"] == parts
    assert events[-1].data["data"]["stage"] == "completed"
    settle(sup)
    stats = sup.statistics()
    assert stats.backpressure_pauses_total >= 1
    assert stats.sessions_by_state[SessionState.PAUSED] == 0
    assert stats.sessions_by_state[SessionState.DORMANT] == 1  # its reader is gone


def test_a_reader_that_stops_reading_pauses_polling_and_loses_nothing(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url, consumer_capacity=3)
    session_id = new_session(server, sup)
    reader = sup.events(session_id)

    for i in range(10):
        server.call(server.emulator.post_agent_message, session_id, f"news {i}")
    wait_until(sup, lambda: metric(sup, "backpressure_pauses_total") >= 1)
    received = [next(reader) for _ in range(10)]

    assert [e.data["message"] for e in received] == [f"news {i}" for i in range(10)]
    assert [e.offset for e in received] == list(range(10))


def test_events_since_an_offset_re_reads_the_session_from_the_server(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url)
    session_id = new_session(server, sup)
    sup.ask(session_id, "one", timeout=30)
    sup.ask(session_id, "two", timeout=30)
    written = server.call(server.emulator.session_events, session_id)

    reader = sup.events(session_id, since=0)
    history = [next(reader) for _ in written]

    assert [e.offset for e in history] == [e["offset"] for e in written]
    server.call(server.emulator.post_agent_message, session_id, "live")
    assert next(reader).data["message"] == "live"


# --- errors and shutdown ---------------------------------------------------------------------


def test_bad_input_is_refused_and_nothing_is_posted(serve: Serve, supervise: Supervise) -> None:
    server = serve()
    sup = supervise(server.url)
    session_id = new_session(server, sup)

    for bad in ("", "   "):
        with pytest.raises(InvalidInput, match="empty"):
            sup.ask(session_id, bad)
    with pytest.raises(InvalidInput, match="max_message_length"):
        sup.ask(session_id, "x" * (sup.config.max_message_length + 1))
    with pytest.raises(InvalidInput, match="timeout"):
        sup.ask(session_id, "hi", timeout=0)
    with pytest.raises(InvalidInput, match="session_id"):
        sup.ask("", "hi")
    assert server.call(server.emulator.session_events, session_id) == []


def test_an_unknown_session_fails_with_a_clear_error(serve: Serve, supervise: Supervise) -> None:
    server = serve()
    sup = supervise(server.url)

    with pytest.raises(SessionNotFound, match="NoSuchSession"):
        sup.ask("NoSuchSession", "hello?", timeout=30)
    settle(sup)
    assert sup.statistics().sessions_by_state[SessionState.FAILED] == 1


def test_a_session_deleted_during_an_open_poll_fails_its_waiting_ask(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve(gated("never"))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "never")

    with asking(server, sup, session_id, "hello") as pending:
        server.run(_delete(server, session_id))
        with pytest.raises(SessionNotFound, match=session_id):
            pending.result(timeout=30)


async def _delete(server: EmulatorServer, session_id: str) -> None:

    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.delete(f"/sessions/{session_id}")
        assert response.status_code == 204


def test_stop_fails_waiting_calls_and_refuses_new_ones(serve: Serve, supervise: Supervise) -> None:
    server = serve(gated("never"))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "never")

    with asking(server, sup, session_id, "hello") as pending:
        settle(sup)
        summary = sup.stop()
        with pytest.raises(SupervisorStopped):
            pending.result(timeout=30)

    assert summary.deadline_met
    assert (summary.sessions_stopped, summary.calls_failed) == (1, 1)
    with pytest.raises(SupervisorStopped):
        sup.ask(session_id, "anyone?")
    assert sup.stop().sessions_stopped == 0  # idempotent


def test_closing_a_session_fails_its_waiting_ask(serve: Serve, supervise: Supervise) -> None:
    server = serve(gated("never"))
    sup = supervise(server.url)
    session_id = new_session(server, sup, "never")

    with asking(server, sup, session_id, "hello") as pending:
        settle(sup)
        sup.close(session_id)
        with pytest.raises(SessionClosed, match=session_id):
            pending.result(timeout=30)


def test_a_bug_inside_a_poll_is_reported_and_retried_not_left_hanging(
    serve: Serve, supervise: Supervise, logs: LogWatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actors._poller import Poller

    server = serve()
    clock = FakeClock()
    sup = supervise(server.url, clock=clock, linger=None)  # polled from its start
    real_outcome = Poller._outcome
    calls = {"n": 0}

    async def buggy_once(self: Poller, session_id: str, poll: object, **options: bool) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("a bug")
        return await real_outcome(self, session_id, poll, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(Poller, "_outcome", buggy_once)
    session_id = new_session(server, sup)

    [crash] = logs.wait_for("session.poll_crashed", session_id=session_id)
    failed_with(sup, session_id)
    assert last_failure(sup, session_id)[0] == "internal"
    clock.advance(sup.config.backoff.cap)
    assert sup.ask(session_id, "still alive?").text == "echo: still alive?"
    assert crash["log_level"] == "error"


def test_a_late_answer_for_a_closed_session_does_not_reopen_it(
    serve: Serve, supervise: Supervise
) -> None:
    from actors._messages import MessagePosted

    server = serve()
    sup = supervise(server.url)
    session_id = new_session(server, sup)
    sup.close(session_id)

    # what a POST answered after close() routes to the session (timing decides when in real life)
    sup.runtime.route_quietly(session_id, MessagePosted(consumer_id=10**9, offset=0))
    settle(sup)

    assert sup.sessions() == []
    assert sup.statistics().sessions_started_total == 1


def test_an_idle_sessions_polls_time_out_and_go_again_without_a_message_to_its_actor(
    serve: Serve, supervise: Supervise, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll that times out changes nothing for its session: the poller sends it again itself
    (at 15,000 idle sessions, a round trip through each actor per cycle was most of the idle
    CPU). The session still answers, from the same offset."""
    from actors._actor import SessionActor
    from actors._messages import PollTimedOut

    told: list[object] = []
    receive = SessionActor.on_receive

    def counting(self: SessionActor, message: object) -> object:
        if isinstance(message, PollTimedOut):
            told.append(message)
        return receive(self, message)

    monkeypatch.setattr(SessionActor, "on_receive", counting)
    server = serve()
    # a session polled with nobody waiting (a reader's session polls the same way)
    sup = supervise(server.url, wait_for_data=1, wait_jitter=0, linger=None)
    session_id = new_session(server, sup)

    server.run(server.emulator.until(lambda: server.emulator.served(session_id, 504) >= 3))
    settle(sup)

    assert told == []
    assert sup.ask(session_id, "still there?", timeout=30).text == "echo: still there?"
