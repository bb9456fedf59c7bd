"""SessionCore with streamed messages and failed turns, fed with the real server's captures
(tests/data/parlant-samples: streamed_turn, streamed_turn_stock, error_turn) and by hand."""

from __future__ import annotations

from parlant.client.types import Event

from actors import AgentError, MessageDelta, Reply, SessionState, SupervisorStopped
from actors._messages import (
    CheckMessage,
    ConsumerKind,
    Deliver,
    EventsConsumed,
    Fail,
    FollowEnded,
    FollowMessage,
    MessageChecked,
    MessagePosted,
    MessageUpdated,
    Resolve,
    Schedule,
    StartPoll,
    Stop,
    StopFollowing,
    Subscribe,
    TimerFired,
    TimerKind,
)
from tests.factory import agent, customer, error, status, streamed
from tests.samples import poll_batches, sse_updates
from tests.unit.test_core import Driver, Handle


def delivered_items(d: Driver, consumer_id: int) -> list[Event | MessageDelta]:
    return [item for effect in d.of(Deliver, consumer_id) for item in effect.events]  # type: ignore[attr-defined]


def deltas(d: Driver, consumer_id: int) -> list[MessageDelta]:
    return [i for i in delivered_items(d, consumer_id) if isinstance(i, MessageDelta)]


def reply_of(d: Driver, consumer_id: int) -> Reply:
    [resolve] = d.of(Resolve, consumer_id)
    return resolve.reply  # type: ignore[attr-defined,no-any-return]


def asked(d: Driver, consumer_id: int, offset: int, kind: ConsumerKind = ConsumerKind.ASK) -> None:
    d.ask(consumer_id, kind)
    d.send(MessagePosted(consumer_id, offset))


# --- whole replies ----------------------------------------------------------------------------


def test_a_streamed_reply_resolves_whole_not_with_the_first_chunk_the_poll_saw() -> None:
    first, second, third = poll_batches("streamed_turn")
    updates = sse_updates("streamed_turn")
    d = Driver()
    d.start()
    asked(d, 1, 0)
    d.receive(*first)
    effects = d.receive(*second)  # the message arrives once, partial: "echo:"
    assert FollowMessage(second[1].id, 4) in effects
    d.receive(*third)  # both readys, while the message is still partial here
    assert d.of(Resolve) == []
    for update in updates:
        d.send(MessageUpdated(update))
    reply = reply_of(d, 1)
    assert reply.text == "echo: Tell me about CKD stage 3"
    assert [m.is_complete for m in reply.messages] == [True]
    assert [e.offset for e in reply.events] == [1, 2, 3, 4, 5, 6]


def test_at_the_completed_ready_a_message_still_partial_is_re_read_before_the_reply() -> None:
    first, second, third = poll_batches("streamed_turn")
    *_, complete = sse_updates("streamed_turn")
    d = Driver()
    d.start()
    asked(d, 1, 0)
    d.receive(*first, *second)
    effects = d.receive(*third)  # no update came (a follow that lags): the trace ended
    assert CheckMessage(complete.id, 4) in effects
    d.send(MessageChecked(complete.id, complete))
    assert reply_of(d, 1).text == "echo: Tell me about CKD stage 3"


def test_the_stock_policys_streamed_turn_keeps_its_preamble_and_its_whole_answer() -> None:
    batches = poll_batches("streamed_turn_stock")
    *_, complete = sse_updates("streamed_turn_stock")
    d = Driver()
    d.start()
    asked(d, 1, 0)
    for batch in batches:
        d.receive(*batch)
    d.send(MessageUpdated(complete))
    reply = reply_of(d, 1)
    assert [(m.text, m.is_preamble) for m in reply.messages] == [
        ("One moment.", True),
        ("echo: Tell me about CKD stage 3", False),
    ]
    assert reply.text == "echo: Tell me about CKD stage 3"


def test_a_reader_gets_the_streamed_message_once_whole_and_everything_in_offset_order() -> None:
    first, second, third = poll_batches("streamed_turn")
    updates = sse_updates("streamed_turn")
    d = Driver()
    d.start()
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))
    d.receive(*first, *second, *third)
    assert d.delivered(1) == [0, 1, 2, 3]  # held back from the partial message on
    for update in updates:
        d.send(MessageUpdated(update))
    assert d.delivered(1) == [0, 1, 2, 3, 4, 5, 6]
    [message] = [e for e in delivered_items(d, 1) if isinstance(e, Event) and e.offset == 4]
    assert message.data["chunks"][-1] is None
    assert deltas(d, 1) == []  # readers never get deltas


def test_polling_goes_on_while_a_message_streams_and_the_checkpoint_stays_on_it() -> None:
    first, second, third = poll_batches("streamed_turn")
    d = Driver()
    d.start()
    d.receive(*first, *second)
    assert d.poll == StartPoll(2, 5, 60, (60, 60), for_turn=True)  # a message is followed
    assert d.core.checkpoint == 0  # nobody read the events before it (the window holds them)
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))
    assert d.core.checkpoint == 4  # a restarted actor reads the message again
    d.receive(*third)
    assert d.poll == StartPoll(3, 7, 60, (60, 60), for_turn=True)
    assert d.core.checkpoint == 4
    assert d.core.snapshot().streaming == 1
    d.send(MessageUpdated(sse_updates("streamed_turn")[-1]))
    assert d.core.checkpoint == 7
    assert d.core.snapshot().streaming == 0


def test_an_unterminated_snapshot_never_reaches_anyone_as_if_it_were_the_message() -> None:
    d = Driver()
    d.start()
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))
    d.receive(customer(0), status(1, "T", "acknowledged"), streamed(2, "T", "Hel"))
    d.send(MessageUpdated(streamed(2, "T", "Hel", "lo")))
    assert d.delivered(1) == [0, 1]


def test_a_message_complete_at_first_sight_is_not_followed() -> None:
    d = Driver()
    d.start()
    effects = d.receive(customer(0), status(1, "T", "acknowledged"), streamed(2, "T", "Hi", None))
    assert not [e for e in effects if isinstance(e, FollowMessage)]
    assert d.core.snapshot().streaming == 0


def test_stale_and_repeated_snapshots_are_ignored() -> None:
    d = Driver()
    d.start()
    asked(d, 1, 0, ConsumerKind.STREAM)
    d.receive(customer(0), status(1, "T", "acknowledged"), streamed(2, "T", "a", " b"))
    d.send(MessageUpdated(streamed(2, "T", "a")))
    d.send(MessageUpdated(streamed(2, "T", "a", " b")))
    assert [x.text for x in deltas(d, 1)] == ["a b"]


# --- live text ------------------------------------------------------------------------------


def test_a_stream_gets_the_text_as_it_grows_then_the_whole_message_then_the_ready() -> None:
    first, second, third = poll_batches("streamed_turn")
    updates = sse_updates("streamed_turn")
    d = Driver()
    d.start()
    asked(d, 1, 0, ConsumerKind.STREAM)
    d.receive(*first, *second)
    d.send(MessageUpdated(updates[0]))
    d.receive(*third)
    for update in updates[1:]:
        d.send(MessageUpdated(update))
    items = delivered_items(d, 1)
    pieces = [i.delta for i in items if isinstance(i, MessageDelta)]
    assert pieces == ["echo:", " Tell", " me about", " CKD", " stage", " 3"]
    assert "".join(pieces) == "echo: Tell me about CKD stage 3"
    assert [i.done for i in items if isinstance(i, MessageDelta)] == [False] * 5 + [True]
    kinds = [i.offset if isinstance(i, Event) else "delta" for i in items]
    assert kinds == [1, 2, 3, *["delta"] * 6, 4, 5, 6]
    assert reply_of(d, 1).text == "echo: Tell me about CKD stage 3"


def test_a_stream_that_learns_its_offset_late_gets_the_text_so_far() -> None:
    d = Driver()
    d.start()
    d.ask(1, ConsumerKind.STREAM)
    d.receive(customer(0), status(1, "T", "acknowledged"), streamed(2, "T", "Hel"))
    d.send(MessageUpdated(streamed(2, "T", "Hel", "lo")))
    d.send(MessagePosted(1, 0))  # the post's answer came after the poll's
    items = delivered_items(d, 1)
    assert [i.offset for i in items if isinstance(i, Event)] == [1]
    [delta] = [i for i in items if isinstance(i, MessageDelta)]
    assert (delta.text, delta.done) == ("Hello", False)


def test_a_full_stream_misses_deltas_but_never_the_message() -> None:
    d = Driver()
    d.start()
    d.ask(1, ConsumerKind.STREAM, capacity=1)
    d.send(MessagePosted(1, 0))
    d.receive(customer(0), status(1, "T", "acknowledged"), streamed(2, "T", "a"))
    assert d.core.state is SessionState.PAUSED  # the acknowledgement filled it
    d.send(MessageUpdated(streamed(2, "T", "a", "b")))
    d.send(EventsConsumed(1, 1))
    d.send(MessageUpdated(streamed(2, "T", "a", "b", "c")))
    d.send(MessageUpdated(streamed(2, "T", "a", "b", "c", None)))
    assert [(x.text, x.done) for x in deltas(d, 1)] == [("abc", False), ("abc", True)]
    assert d.delivered(1) == [1, 2]


# --- messages Parlant never finishes -----------------------------------------------------------


def test_a_message_of_a_turn_cancelled_mid_stream_is_released_as_it_stands() -> None:
    # measured on Parlant 3.3.2: a customer message posted while the answer streams cancels the
    # turn; its message stays unterminated ("echo: one") for ever
    d = Driver()
    d.start()
    d.send(Subscribe(Handle(9, ConsumerKind.READER)))
    asked(d, 1, 0)
    d.receive(customer(0, "one two three"), status(1, "T1", "acknowledged"))
    d.receive(streamed(2, "T1", "echo:", " one"))
    asked(d, 2, 3)
    effects = d.receive(
        customer(3, "second"),
        status(4, "T1", "cancelled"),
        status(5, "T1", "ready", "completed"),
        status(6, "T2", "acknowledged"),
    )
    [check] = [e for e in effects if isinstance(e, CheckMessage)]
    d.send(MessageChecked(check.event_id, streamed(2, "T1", "echo:", " one")))
    assert d.core.snapshot().abandoned_total == 1
    assert d.delivered(9) == [0, 1, 2, 3, 4, 5, 6]
    d.receive(agent(7, "T2", "echo: second"), status(8, "T2", "ready"))
    d.receive(status(9, "T2", "ready", "completed"))
    assert reply_of(d, 1) is reply_of(d, 2)
    assert reply_of(d, 1).text == "echo: second"


def test_a_message_parlant_stops_writing_is_released_when_the_follow_ends() -> None:
    d = Driver()
    d.start()
    asked(d, 1, 0)
    d.receive(customer(0), status(1, "T", "acknowledged"), streamed(2, "T", "par"))
    d.receive(status(3, "H", "typing"))  # another trace's event waits behind it
    effects = d.send(FollowEnded(streamed(2, "T", "par").id))  # Parlant went quiet
    [check] = [e for e in effects if isinstance(e, CheckMessage)]
    d.send(MessageUpdated(streamed(2, "T", "par", "tial")))
    d.send(MessageChecked(check.event_id, streamed(2, "T", "par", "tial")))
    assert d.core.snapshot().abandoned_total == 1
    assert d.delivered(1) == []  # an ask takes its turn whole, at the end
    d.receive(status(4, "T", "ready", "completed"))
    d.send(TimerFired(TimerKind.FAILURE_GRACE, 1))
    [message] = reply_of(d, 1).messages
    assert (message.text, message.is_complete) == ("partial", False)


def test_stopping_stops_following() -> None:
    d = Driver()
    d.start()
    d.receive(customer(0), status(1, "T", "acknowledged"), streamed(2, "T", "par"))
    assert StopFollowing() in d.send(Stop(SupervisorStopped("stopping")))


def test_many_events_behind_a_message_being_written_pause_polling() -> None:
    d = Driver()
    d.start()
    d.receive(customer(0), status(1, "T", "acknowledged"), streamed(2, "T", "a"))
    d.receive(*(agent(3 + n, f"F{n}", "follow-up") for n in range(1000)))
    assert d.core.state is SessionState.PAUSED
    d.send(MessageUpdated(streamed(2, "T", "a", None)))
    assert d.core.state is SessionState.POLLING


# --- failed turns -----------------------------------------------------------------------------


def test_a_failed_turn_fails_its_ask_at_once_with_an_error_that_leaks_nothing() -> None:
    first, second = poll_batches("error_turn")
    d = Driver()
    d.start()
    asked(d, 1, 0)
    d.receive(*first, *second)  # ready (completed), then status: error, in one batch
    [fail] = d.of(Fail, 1)
    assert isinstance(fail.error, AgentError)  # type: ignore[attr-defined]
    message = str(fail.error)  # type: ignore[attr-defined]
    assert "sess1" in message
    assert "Traceback" not in message
    assert "secret-token-XYZ" not in message
    assert d.of(Resolve) == []
    assert d.core.snapshot().failed_turns_total == 1


def test_an_error_in_the_next_batch_still_fails_the_turn_within_the_grace() -> None:
    d = Driver()
    d.start()
    asked(d, 1, 0, ConsumerKind.STREAM)
    d.receive(customer(0), status(1, "T", "acknowledged"), status(2, "T", "ready", "completed"))
    d.receive(error(3, "T"))
    [fail] = d.of(Fail, 1)
    assert isinstance(fail.error, AgentError)  # type: ignore[attr-defined]
    assert 3 not in d.delivered(1)  # the traceback's event is not given to the stream
    d.send(TimerFired(TimerKind.FAILURE_GRACE, 1))  # the grace ends after: nothing more
    assert d.of(Resolve) == []
    assert len(d.of(Fail)) == 1


def test_a_stream_cut_by_the_model_provider_fails_its_turn_not_with_the_first_chunk() -> None:
    # measured on Parlant 3.3.2: the partial message is terminated, then the completed ready
    # and status: error, with no intermediate ready after the message
    d = Driver()
    d.start()
    asked(d, 1, 0)
    d.receive(customer(0), status(1, "T", "acknowledged"), streamed(2, "T", "echo:", None))
    d.receive(status(3, "T", "ready", "completed"), error(4, "T"))
    [fail] = d.of(Fail, 1)
    assert isinstance(fail.error, AgentError)  # type: ignore[attr-defined]


def test_a_turn_whose_message_parlant_confirmed_resolves_without_waiting() -> None:
    d = Driver()
    d.start()
    asked(d, 1, 0)
    effects = d.receive(
        customer(0),
        status(1, "T", "acknowledged"),
        streamed(2, "T", "hi", None),
        status(3, "T", "ready"),
        status(4, "T", "ready", "completed"),
    )
    assert reply_of(d, 1).text == "hi"
    assert not [e for e in effects if isinstance(e, Schedule)]


def test_an_error_after_the_grace_fails_nothing_already_answered() -> None:
    d = Driver()
    d.start()
    asked(d, 1, 0)
    d.receive(customer(0), status(1, "T", "acknowledged"), status(2, "T", "ready", "completed"))
    d.send(TimerFired(TimerKind.FAILURE_GRACE, 1))
    assert reply_of(d, 1).text == ""
    d.receive(error(3, "T"))
    assert d.of(Fail) == []
    assert d.core.snapshot().failed_turns_total == 1


def test_a_message_written_further_after_parlant_went_quiet_is_followed_again() -> None:
    d = Driver()
    d.start()
    d.receive(customer(0), status(1, "T", "acknowledged"), streamed(2, "T", "a"))
    d.send(FollowEnded(streamed(2, "T", "a").id))
    effects = d.send(MessageChecked(streamed(2, "T", "a").id, streamed(2, "T", "a", "b")))
    assert FollowMessage(streamed(2, "T", "a").id, 2) in effects
    assert d.core.snapshot().abandoned_total == 0


def test_a_message_written_for_longer_than_its_maximum_life_is_released_as_it_stands() -> None:
    """Chunks that never end held every later event back with no bound (a normal turn 70 s
    later timed out, issue 28)."""
    d = Driver(max_stream_life=300.0)
    d.start()
    reader = Handle(1, ConsumerKind.READER)
    d.send(Subscribe(reader))
    d.receive(streamed(0, "T", "Once"), agent(1, "U", "after it"))
    assert d.delivered(1) == []  # held behind the message being written
    [life] = [
        e for e in d.effects if isinstance(e, Schedule) and e.timer.kind is TimerKind.STREAM_LIFE
    ]
    assert life.at == 300.0

    d.now = 300.0
    d.send(life.timer)

    assert d.delivered(1) == [0, 1]
    assert d.core.snapshot().abandoned_total == 1
