"""Interest-driven polling: a session polls while someone waits on it, lingers, then is dormant.

Every waiting long-poll costs Parlant four reads of its session store a second
(docs/PARLANT.md, "What polling costs Parlant"), so a session nobody waits on must cost it
nothing, and nothing Parlant writes meanwhile may be lost.
"""

from __future__ import annotations

import pytest

from actors import SessionNotFound, SessionSettings, SessionState
from actors._messages import (
    ConsumerKind,
    EventsReceived,
    ExpectPoll,
    Fail,
    FailureKind,
    FinishPoll,
    MessagePosted,
    PollFailed,
    PollFailure,
    PollTimedOut,
    PostFailed,
    Reap,
    Resolve,
    Schedule,
    StartPoll,
    Subscribe,
    TimerFired,
    TimerKind,
    Unsubscribe,
)
from tests.factory import agent, customer, streamed, turn
from tests.unit.test_core import Driver, Handle

LINGER = 2.0


def lingering(**settings: object) -> Driver:
    return Driver(linger=LINGER, **settings)


def linger_timer(d: Driver) -> Schedule:
    [timer] = [
        e
        for e in d.of(Schedule)
        if e.timer.kind is TimerKind.LINGER  # type: ignore[attr-defined]
    ]
    return timer  # type: ignore[return-value]


def dormant_after_start(**settings: object) -> Driver:
    """A session started with nobody waiting, past its linger."""
    d = lingering(**settings)
    d.start(3)
    d.now = LINGER
    d.send(linger_timer(d).timer)
    d.send(PollTimedOut(1, "gateway_timeout"))
    assert d.core.state is SessionState.DORMANT
    d.effects.clear()
    return d


def test_a_session_nobody_waits_on_polls_for_its_linger_then_sends_nothing() -> None:
    d = lingering()
    effects = d.start(3)
    # the poll ends with the linger: Parlant goes on waiting for a poll its client left
    assert StartPoll(1, 3, 2, None) in effects
    assert Schedule(LINGER, TimerFired(TimerKind.LINGER, 0)) in effects

    d.now = LINGER
    # the poll is not cancelled (Parlant would wait on for it all the same): it ends
    assert d.send(TimerFired(TimerKind.LINGER, 0)) == []
    assert d.core.state is SessionState.POLLING
    assert d.send(PollTimedOut(1, "gateway_timeout")) == []
    assert d.core.state is SessionState.DORMANT
    assert d.core.snapshot().state is SessionState.DORMANT


def test_a_linger_poll_that_ends_first_is_told_and_the_session_goes_dormant() -> None:
    d = lingering()
    d.start()
    d.now = LINGER + 0.01
    assert d.send(PollTimedOut(1, "gateway_timeout")) == []  # no poll, no cancel
    assert d.core.state is SessionState.DORMANT


def test_an_ask_wakes_a_dormant_session_once_its_message_is_stored() -> None:
    d = dormant_after_start()
    effects = d.ask(1)
    # nothing the session could hear before its message is stored is the ask's: a poll
    # waiting beside a slow post costs Parlant and brings nothing
    assert d.of(StartPoll) == []
    assert d.core.state is SessionState.DORMANT
    effects = d.send(MessagePosted(1, 5))
    assert d.core.state is SessionState.POLLING
    # from where it stopped, a full wait (an ask waits on it), admitted first (`for_turn`)
    assert StartPoll(2, 3, 60, (60, 60), for_turn=True) in effects
    # and it must bring the stored message soon, or it is taken for dead (a lost flow)
    assert ExpectPoll(2) in effects


def test_a_dormant_session_whose_post_parlant_answers_404_fails() -> None:
    """It has no poll to hear it from: the post's 404 is Parlant's word on the session."""
    d = dormant_after_start()
    d.ask(1)
    error = SessionNotFound("gone", session_id="sess1")
    assert d.send(PostFailed(1, error)) == [Fail(1, error)]
    assert d.core.state is SessionState.FAILED
    failure = d.core.snapshot().last_failure
    assert failure is not None
    assert failure.kind is FailureKind.NOT_FOUND  # counted as such, not as a crash


def test_a_reader_waiting_beside_an_unposted_ask_wakes_the_session_at_once() -> None:
    d = dormant_after_start()
    d.ask(1)
    effects = d.send(Subscribe(Handle(2, ConsumerKind.READER)))
    assert StartPoll(2, 3, 60, (60, 60), for_turn=True) in effects


def test_what_parlant_wrote_while_dormant_reaches_the_next_reader_first() -> None:
    d = dormant_after_start()
    d.ask(1)
    d.send(MessagePosted(1, 5))
    # Parlant wrote a follow-up (3) and a human agent's message (4) while nobody polled
    d.receive(
        agent(3, "t0", "follow-up"), agent(4, "t0", "human"), customer(5), *turn(6, "t1", "hi")
    )
    assert any(isinstance(e, Resolve) and e.consumer_id == 1 for e in d.effects)
    d.send(Subscribe(Handle(2, ConsumerKind.READER)))
    assert d.delivered(2)[:2] == [3, 4]


def test_a_reader_that_subscribes_to_a_dormant_session_gets_what_was_written_meanwhile() -> None:
    d = dormant_after_start()
    effects = d.send(Subscribe(Handle(1, ConsumerKind.READER)))
    assert StartPoll(2, 3, 60, (60, 60)) in effects  # a reader's poll: not for a turn
    d.receive(agent(3, "t0", "written while dormant"))
    assert d.delivered(1) == [3]


def test_a_reader_keeps_the_session_polling_for_as_long_as_it_reads() -> None:
    d = lingering()
    d.start()
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))
    d.now = 1000.0
    d.send(TimerFired(TimerKind.LINGER, 0))  # the start's linger timer: stale now
    assert d.core.state is SessionState.POLLING
    effects = d.send(PollTimedOut(1, "gateway_timeout"))
    assert effects == [StartPoll(2, 0, 60, (60, 60))]


def test_after_the_last_consumer_the_session_lingers_with_short_polls_then_is_dormant() -> None:
    d = lingering()
    d.start()
    d.ask(1)
    d.send(MessagePosted(1, 0))
    d.now = 10.0
    effects = d.receive(customer(0), *turn(1, "t1", "hi"))
    assert any(isinstance(e, Resolve) for e in effects)
    # the turn is answered: nobody waits; a poll that ends with the linger, and its timer
    assert Schedule(10.0 + LINGER, TimerFired(TimerKind.LINGER, 0)) in effects
    assert effects[-1] == StartPoll(2, 6, 2, None)
    d.now = 10.0 + LINGER
    d.send(TimerFired(TimerKind.LINGER, 0))
    assert d.send(PollTimedOut(2, "gateway_timeout")) == []
    assert d.core.state is SessionState.DORMANT


def test_what_parlant_writes_during_the_linger_is_kept_for_the_next_reader() -> None:
    d = lingering()
    d.start()
    d.ask(1)
    d.send(MessagePosted(1, 0))
    d.receive(customer(0), *turn(1, "t1", "hi"))
    d.now = 1.0
    d.receive(agent(6, "t1", "one more thing"))  # a follow-up during the linger
    assert d.poll == StartPoll(3, 7, 1, None)  # the linger's rest, rounded up
    d.now = LINGER
    d.send(TimerFired(TimerKind.LINGER, 0))
    d.send(PollTimedOut(3, "gateway_timeout"))
    assert d.core.state is SessionState.DORMANT
    d.send(Subscribe(Handle(2, ConsumerKind.READER)))
    assert d.delivered(2) == [6]


def test_a_new_ask_during_the_linger_ends_it() -> None:
    d = lingering()
    d.start()
    d.ask(1)
    d.send(MessagePosted(1, 0))
    d.receive(customer(0), *turn(1, "t1", "hi"))
    d.ask(2)  # the poll of the linger is open: the ask's events come on it
    d.now = LINGER
    assert d.send(TimerFired(TimerKind.LINGER, 0)) == []
    assert d.core.state is SessionState.POLLING
    d.send(MessagePosted(2, 6))
    d.receive(customer(6))
    assert d.poll == StartPoll(3, 7, 60, (60, 60), for_turn=True)


def test_a_streamed_message_being_followed_keeps_the_session_polling() -> None:
    d = lingering()
    d.start()
    d.ask(1, ConsumerKind.STREAM)
    d.send(MessagePosted(1, 0))
    d.receive(customer(0), *turn(1, "t1", "hi")[:2], streamed(3, "t1", "Hel"))
    d.send(Unsubscribe(1))  # the caller stopped reading; the message is still followed
    d.now = 100.0
    d.send(TimerFired(TimerKind.LINGER, 0))
    assert d.core.state is SessionState.POLLING
    assert d.poll is not None
    assert d.poll.for_turn


def test_a_session_backing_off_with_nobody_waiting_goes_dormant_at_the_linger() -> None:
    d = lingering()
    d.start()
    [retry] = d.send(PollFailed(1, PollFailure(FailureKind.NETWORK, "refused")))
    assert d.core.state is SessionState.BACKING_OFF
    d.now = LINGER
    assert d.send(TimerFired(TimerKind.LINGER, 0)) == []
    assert d.core.state is SessionState.DORMANT
    assert d.send(retry.timer) == []  # type: ignore[attr-defined]
    assert d.core.state is SessionState.DORMANT


def test_without_a_linger_setting_the_session_polls_for_ever() -> None:
    d = Driver(linger=None)
    d.start()
    d.now = 10_000.0
    assert d.send(PollTimedOut(1, "gateway_timeout")) == [StartPoll(2, 0, 60, (60, 60))]
    assert not [e for e in d.effects if isinstance(e, Schedule)]


def test_a_zero_linger_is_dormant_as_soon_as_nobody_waits_and_its_poll_ended() -> None:
    d = Driver(linger=0.0)
    assert d.start() == []
    assert d.core.state is SessionState.DORMANT
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))
    assert d.core.state is SessionState.POLLING
    assert d.send(Unsubscribe(1)) == [FinishPoll()]
    assert d.send(EventsReceived(1, (agent(0, "t0", "late"),))) == []
    assert d.core.state is SessionState.DORMANT


def test_a_dormant_session_is_reaped_after_its_ttl() -> None:
    d = lingering(idle_ttl=60.0)
    d.start()
    [idle] = [e for e in d.of(Schedule) if e.timer.kind is TimerKind.IDLE]  # type: ignore[attr-defined]
    d.now = LINGER
    d.send(PollTimedOut(1, "gateway_timeout"))
    assert d.core.state is SessionState.DORMANT
    d.now = 60.0
    assert d.send(idle.timer) == [Reap()]  # type: ignore[attr-defined]


def test_a_dormant_session_resumes_at_its_checkpoint_with_nothing_new_unclaimed() -> None:
    d = dormant_after_start()
    assert d.core.checkpoint == 3
    assert d.core.resume_point().offset == 3


@pytest.mark.parametrize("linger", [-1.0, float("inf"), float("nan")])
def test_a_linger_must_be_a_finite_non_negative_time(linger: float) -> None:
    with pytest.raises(ValueError, match="linger"):
        SessionSettings(linger=linger)


def test_events_that_end_the_last_poll_are_kept_for_the_next_reader() -> None:
    d = lingering()
    d.start(3)
    d.now = LINGER
    d.send(TimerFired(TimerKind.LINGER, 0))
    assert d.send(EventsReceived(1, (agent(3, "t0", "just in"),))) == []
    assert d.core.state is SessionState.DORMANT
    assert d.core.snapshot().next_offset == 4
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))
    assert d.delivered(1) == [3]


def test_when_the_last_consumer_leaves_with_a_long_poll_open_that_poll_is_the_last() -> None:
    d = lingering()
    d.start()
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))  # a reader's long poll, repeated
    d.send(PollTimedOut(1, "gateway_timeout"))
    assert d.poll == StartPoll(2, 0, 60, (60, 60))
    d.now = 100.0
    effects = d.send(Unsubscribe(1))
    assert effects == [FinishPoll(), Schedule(100.0 + LINGER, TimerFired(TimerKind.LINGER, 0))]
    d.now = 100.0 + LINGER
    assert d.send(TimerFired(TimerKind.LINGER, 0)) == []  # the poll goes on to its end
    assert d.core.state is SessionState.POLLING
    assert d.send(PollTimedOut(2, "gateway_timeout")) == []
    assert d.core.state is SessionState.DORMANT
