"""SessionCore: every state transition and delivery rule, fed by hand (no threads, no clock)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from parlant.client.types import Event

from actors import (
    AccessDenied,
    Backoff,
    DeliveryUnknown,
    IllegalTransition,
    ParlantUnavailable,
    Reply,
    ReplyTimeout,
    SessionClosed,
    SessionCore,
    SessionNotFound,
    SessionSettings,
    SessionState,
    SupervisorError,
)
from actors._messages import (
    AwaitReply,
    CancelPoll,
    CheckpointLoaded,
    ConsumerKind,
    Deliver,
    Effect,
    EventsConsumed,
    EventsReceived,
    ExpectPoll,
    Fail,
    FailureKind,
    FetchHistory,
    HistoryFetched,
    LoadCheckpoint,
    MessagePosted,
    PollFailed,
    PollFailure,
    PollTimedOut,
    PostFailed,
    PostMessage,
    Reap,
    Resolve,
    Resume,
    SaveCheckpoint,
    Schedule,
    Start,
    StartPoll,
    Stop,
    Subscribe,
    TimerFired,
    TimerKind,
    Unsubscribe,
)
from tests.factory import agent, customer, status, turn
from tests.samples import events

SID = "sess1"


@dataclass(frozen=True)
class Handle:
    consumer_id: int
    kind: ConsumerKind
    capacity: int = 100
    maybe_sent: bool = False

    def deliver(self, events: Sequence[Event]) -> None: ...
    def resolve(self, reply: Reply) -> None: ...
    def fail(self, error: SupervisorError) -> None: ...


class Driver:
    """Feeds a core and answers its polls the way the poller would."""

    def __init__(self, **settings: object) -> None:
        # polling for as long as the session lives unless a test says otherwise: dormancy
        # has tests of its own (test_interest.py)
        merged: dict[str, object] = {
            "wait_for_data": 60,
            "wait_jitter": 0,
            "linger": None,
            **settings,
        }
        self.core = SessionCore(SID, SessionSettings(**merged), random.Random(7))  # type: ignore[arg-type]
        self.now = 0.0
        self.poll: StartPoll | None = None
        self.effects: list[Effect] = []

    def send(self, message: object) -> list[Effect]:
        effects = self.core.handle(message, self.now)  # type: ignore[arg-type]
        for effect in effects:
            if isinstance(effect, StartPoll):
                self.poll = effect
        self.effects.extend(effects)
        return effects

    def start(self, from_offset: int = 0) -> list[Effect]:
        return self.send(Start(from_offset))

    def receive(self, *evs: Event) -> list[Effect]:
        assert self.poll is not None
        return self.send(EventsReceived(self.poll.generation, tuple(evs)))

    def ask(
        self, consumer_id: int, kind: ConsumerKind = ConsumerKind.ASK, **kw: object
    ) -> list[Effect]:
        return self.send(AwaitReply(Handle(consumer_id, kind, **kw), "question", None))  # type: ignore[arg-type]

    def of(self, kind: type, consumer_id: int | None = None) -> list[object]:
        return [
            e
            for e in self.effects
            if isinstance(e, kind)
            and (consumer_id is None or getattr(e, "consumer_id", None) == consumer_id)
        ]

    def delivered(self, consumer_id: int) -> list[int]:
        """Offsets of the events (not the message deltas) given to the consumer."""
        return [
            ev.offset
            for d in self.of(Deliver, consumer_id)
            for ev in d.events  # type: ignore[attr-defined]
            if isinstance(ev, Event)
        ]


# --- transitions ----------------------------------------------------------------------------


def test_start_opens_the_first_poll_at_the_start_offset() -> None:
    d = Driver()
    assert d.core.state is SessionState.STARTING
    assert d.start(5) == [StartPoll(1, 5, 60, (60, 60))]
    assert d.core.state is SessionState.POLLING


def test_polling_continues_after_events_and_after_a_completed_ready() -> None:
    d = Driver()
    d.start()
    effects = d.receive(*events("one_turn"))
    assert effects[-1] == StartPoll(2, 10, 60, (60, 60))
    assert d.core.state is SessionState.POLLING


@pytest.mark.parametrize("reason", ["gateway_timeout", "empty", "client_timeout"])
def test_an_empty_poll_is_normal_and_polls_again_at_once_from_the_same_offset(reason: str) -> None:
    d = Driver()
    d.start(3)
    assert d.send(PollTimedOut(1, reason)) == [StartPoll(2, 3, 60, (60, 60))]


def test_wait_for_data_is_jittered_within_its_bounds() -> None:
    d = Driver(wait_jitter=15)
    d.start()
    waits = set()
    for _ in range(200):
        assert d.poll is not None
        d.send(PollTimedOut(d.poll.generation, "gateway_timeout"))
        waits.add(d.poll.wait_for_data)
    assert min(waits) >= 45
    assert max(waits) <= 60
    assert len(waits) > 5


def test_a_stale_or_duplicate_outcome_is_ignored() -> None:
    d = Driver()
    d.start()
    d.send(PollTimedOut(1, "empty"))
    assert d.send(EventsReceived(1, (customer(0),))) == []  # generation 1 is closed
    assert d.send(PollFailed(1, PollFailure(FailureKind.NETWORK, "reset"))) == []
    assert d.core.state is SessionState.POLLING


def test_a_redelivered_offset_is_dropped() -> None:
    d = Driver()
    d.start()
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))
    d.receive(customer(0), customer(1))
    d.receive(customer(1), customer(2))
    assert d.delivered(1) == [0, 1, 2]


@pytest.mark.parametrize(
    "kind",
    [
        FailureKind.SERVER_ERROR,
        FailureKind.NETWORK,
        FailureKind.MALFORMED,
        FailureKind.RATE_LIMITED,
    ],
)
def test_a_transient_failure_backs_off_then_polls_again(kind: FailureKind) -> None:
    d = Driver()
    d.start()
    d.now = 100.0
    effects = d.send(PollFailed(1, PollFailure(kind, "boom")))
    assert d.core.state is SessionState.BACKING_OFF
    [schedule] = effects
    assert isinstance(schedule, Schedule)
    assert schedule.timer == TimerFired(TimerKind.RETRY_POLL, 1)
    assert 100.0 <= schedule.at <= 100.0 + Backoff().base
    assert d.core.snapshot().consecutive_failures == 1
    # after a failure the core hears how the next poll ends (it forgets the failures then)
    assert d.send(schedule.timer) == [StartPoll(2, 0, 60)]
    assert d.core.state is SessionState.POLLING


def test_backoff_grows_with_consecutive_failures_and_honours_retry_after() -> None:
    d = Driver()
    d.start()
    ceilings = []
    for attempt in range(6):
        assert d.poll is not None
        [schedule] = d.send(
            PollFailed(d.poll.generation, PollFailure(FailureKind.SERVER_ERROR, "503"))
        )
        assert isinstance(schedule, Schedule)
        ceilings.append(min(30.0, 0.5 * 2**attempt))
        assert schedule.at - d.now <= ceilings[-1]
        d.send(schedule.timer)
    assert d.poll is not None
    [schedule] = d.send(
        PollFailed(
            d.poll.generation, PollFailure(FailureKind.RATE_LIMITED, "429", 429, retry_after=42.0)
        )
    )
    assert isinstance(schedule, Schedule)
    assert schedule.at - d.now >= 42.0


def test_a_good_poll_resets_the_failure_count() -> None:
    d = Driver()
    d.start()
    [schedule] = d.send(PollFailed(1, PollFailure(FailureKind.NETWORK, "refused")))
    d.send(schedule.timer)  # type: ignore[attr-defined]
    d.send(PollTimedOut(2, "gateway_timeout"))
    assert d.core.snapshot().consecutive_failures == 0


def test_a_stale_retry_timer_is_ignored() -> None:
    d = Driver()
    d.start()
    d.send(PollFailed(1, PollFailure(FailureKind.NETWORK, "refused")))
    assert d.send(TimerFired(TimerKind.RETRY_POLL, 0)) == []
    assert d.core.state is SessionState.BACKING_OFF


@pytest.mark.parametrize(
    ("kind", "error"),
    [(FailureKind.NOT_FOUND, SessionNotFound), (FailureKind.FORBIDDEN, AccessDenied)],
)
def test_not_found_or_forbidden_is_terminal_and_fails_every_consumer(
    kind: FailureKind, error: type
) -> None:
    d = Driver()
    d.start()
    d.ask(1)
    d.send(Subscribe(Handle(2, ConsumerKind.READER)))
    effects = d.send(PollFailed(1, PollFailure(kind, "404 Session not found", 404)))
    assert d.core.state is SessionState.FAILED
    failed = {e.consumer_id: e.error for e in effects if isinstance(e, Fail)}
    assert set(failed) == {1, 2}
    assert all(isinstance(err, error) and SID in str(err) for err in failed.values())
    assert not any(isinstance(e, StartPoll) for e in effects)
    [late] = d.ask(3)
    assert isinstance(late, Fail)
    assert isinstance(late.error, error)


def test_a_full_consumer_pauses_polling_and_reading_resumes_it() -> None:
    d = Driver()
    d.start()
    d.send(Subscribe(Handle(1, ConsumerKind.READER, capacity=2)))
    effects = d.receive(customer(0), customer(1), customer(2))
    assert not any(isinstance(e, StartPoll) for e in effects)
    assert d.core.state is SessionState.PAUSED
    assert d.core.snapshot().pauses_total == 1
    assert d.send(EventsConsumed(1, 1)) == []  # still 2 outstanding: stays paused
    assert d.send(EventsConsumed(1, 3)) == [StartPoll(2, 3, 60, (60, 60))]
    assert d.core.state is SessionState.POLLING
    assert d.delivered(1) == [0, 1, 2]


@pytest.mark.parametrize("setup", ["starting", "polling", "paused", "backing_off", "failed"])
def test_stop_from_every_state_fails_consumers_and_cancels_an_open_poll(setup: str) -> None:
    d = Driver()
    if setup != "starting":
        d.start()
    if setup == "paused":
        d.send(Subscribe(Handle(9, ConsumerKind.READER, capacity=1)))
        d.receive(customer(0))
    if setup == "backing_off":
        d.send(PollFailed(1, PollFailure(FailureKind.NETWORK, "refused")))
    if setup == "failed":
        d.send(PollFailed(1, PollFailure(FailureKind.NOT_FOUND, "404")))
    d.ask(1)
    closed = SessionClosed("closed", session_id=SID)
    effects = d.send(Stop(closed))
    assert d.core.state is SessionState.STOPPED
    assert (CancelPoll() in effects) is (setup == "polling")
    assert not any(isinstance(e, StartPoll) for e in effects)
    if setup != "failed":
        assert Fail(1, closed) in effects
    assert d.send(Stop(closed)) == []  # idempotent


def test_illegal_transitions_raise() -> None:
    d = Driver()
    d.send(Stop(SessionClosed("closed")))
    with pytest.raises(IllegalTransition):
        d.start()


# --- replies ---------------------------------------------------------------------------------


def test_an_ask_posts_its_message_and_schedules_its_deadline() -> None:
    d = Driver()
    d.start()
    effects = d.send(AwaitReply(Handle(1, ConsumerKind.ASK), "hi", 120.0))
    assert effects == [
        PostMessage(1, "hi", 0, 120.0),  # every copy of it is at offset 0 or after
        Schedule(120.0, TimerFired(TimerKind.DEADLINE, 1)),
    ]


def test_an_ask_resolves_at_the_completed_ready_not_at_intermediate_readies() -> None:
    d = Driver()
    d.start()
    d.ask(1)
    d.send(MessagePosted(1, 0))
    turn_events = events("one_turn")
    d.receive(*turn_events[:9])  # includes two intermediate readies
    assert d.of(Resolve) == []
    d.receive(turn_events[9])
    [resolve] = d.of(Resolve)
    reply = resolve.reply  # type: ignore[attr-defined]
    assert reply.answers == (0,)
    assert reply.text == "echo: Tell me about CKD stage 3"
    assert [(m.text, m.is_preamble) for m in reply.messages] == [
        ("One moment.", True),
        ("echo: Tell me about CKD stage 3", False),
    ]


def test_a_turn_that_arrives_before_the_post_is_acknowledged_still_resolves_the_ask() -> None:
    d = Driver()
    d.start()
    d.ask(1)
    d.receive(*events("one_turn"))  # the poll outran the POST's answer
    assert d.of(Resolve) == []
    d.send(MessagePosted(1, 0))
    [resolve] = d.of(Resolve, 1)
    assert resolve.reply.text == "echo: Tell me about CKD stage 3"  # type: ignore[attr-defined]


def test_a_stream_posted_late_gets_the_open_turn_so_far_then_the_rest_live() -> None:
    d = Driver()
    d.start()
    d.ask(1, ConsumerKind.STREAM)
    d.receive(*events("one_turn")[:5])
    d.send(MessagePosted(1, 0))
    assert d.delivered(1) == [1, 2, 3, 4]
    d.receive(*events("one_turn")[5:])
    assert d.delivered(1) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert len(d.of(Resolve, 1)) == 1


def test_a_superseded_turn_resolves_both_asks_with_the_next_turn() -> None:
    d = Driver()
    d.start(10)
    d.ask(1)
    d.send(MessagePosted(1, 10))
    d.ask(2, ConsumerKind.STREAM)
    d.send(MessagePosted(2, 12))
    d.receive(*events("superseded_turn"))
    replies = {r.consumer_id: r.reply for r in d.of(Resolve)}  # type: ignore[attr-defined]
    assert set(replies) == {1, 2}
    assert replies[1] is replies[2]
    assert replies[1].answers == (10, 12)
    assert replies[1].text == "echo: second question"
    # the stream saw its answering turn live (message 12 was never claimed by the cancelled one)
    assert d.delivered(2) == [15, 16, 17, 18, 23, 24, 25, 26, 27]


def test_a_stale_ready_of_an_earlier_turn_does_not_end_a_later_ask() -> None:
    d = Driver()
    d.start()
    d.receive(customer(0, "first"), *turn(1, "T1", "answer one")[:2])  # turn 1 still open
    d.ask(2)
    d.send(MessagePosted(2, 3))
    d.receive(customer(3, "second"), *turn(1, "T1", "answer one")[2:])  # T1 completes
    assert d.of(Resolve) == []
    d.receive(*turn(6, "T2", "answer two"))
    [resolve] = d.of(Resolve)
    assert resolve.reply.text == "answer two"  # type: ignore[attr-defined]
    assert resolve.reply.answers == (3,)  # type: ignore[attr-defined]


def test_a_turn_with_no_agent_message_is_an_empty_reply_once_no_error_followed() -> None:
    d = Driver()
    d.start()
    d.ask(1)
    d.send(MessagePosted(1, 0))
    d.now = 10.0
    effects = d.receive(
        customer(0), status(1, "T", "acknowledged"), status(2, "T", "ready", "completed")
    )
    assert d.of(Resolve) == []  # Parlant writes a failed turn's error just after this ready
    [grace] = [e for e in effects if isinstance(e, Schedule)]
    assert grace.at == 10.5
    assert grace.timer.kind is TimerKind.FAILURE_GRACE
    d.send(grace.timer)
    [resolve] = d.of(Resolve)
    assert resolve.reply.messages == ()
    assert resolve.reply.text == ""


def test_a_failed_post_fails_the_ask() -> None:
    d = Driver()
    d.start()
    d.ask(1)
    error = AccessDenied("this client may not post here", session_id=SID)
    assert d.send(PostFailed(1, error)) == [Fail(1, error)]
    assert d.core.snapshot().waiting_replies == 0
    assert d.core.state is SessionState.POLLING  # the session may still be read


def test_a_post_parlant_answers_404_fails_the_session_as_a_polls_404_does() -> None:
    d = Driver()
    d.start()
    d.ask(1)
    d.send(Subscribe(Handle(2, ConsumerKind.READER)))
    error = SessionNotFound("gone", session_id=SID)

    effects = d.send(PostFailed(1, error))

    assert effects == [Fail(1, error), CancelPoll(), Fail(2, error)]
    assert d.core.state is SessionState.FAILED
    [late] = d.ask(3)  # and whoever comes next, without a request
    assert isinstance(late, Fail)
    assert late.error is error


def test_the_deadline_fails_the_ask_and_its_late_reply_reaches_the_next_reader() -> None:
    d = Driver()
    d.start()
    d.ask(1)
    d.send(MessagePosted(1, 0))
    d.receive(customer(0), *turn(1, "T", "late")[:2])
    [fail] = d.send(TimerFired(TimerKind.DEADLINE, 1))
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, ReplyTimeout)
    assert SID in str(fail.error)
    d.receive(*turn(1, "T", "late")[2:])
    d.send(Subscribe(Handle(2, ConsumerKind.READER)))
    assert d.delivered(2) == [1, 2, 3, 4, 5]  # the whole late turn; the own message was claimed
    assert d.send(TimerFired(TimerKind.DEADLINE, 1)) == []  # a second firing is stale


def test_at_its_deadline_an_ask_whose_post_is_unsettled_waits_for_what_the_post_proves() -> None:
    """No request of a post outlives its ask's deadline; the post then reads the log and says
    what became of the message. "Not sent" is its word, never a guess at the deadline."""
    d = Driver()
    d.start()
    d.receive(customer(0), *turn(1, "T", "earlier"))
    d.ask(1)
    assert d.of(PostMessage) == [PostMessage(1, "question", 6)]

    waiting = d.send(TimerFired(TimerKind.DEADLINE, 1))  # the post was still being retried
    assert not [e for e in waiting if isinstance(e, Fail)]
    proven = ParlantUnavailable("session sess1: ... it was not sent", session_id=SID)
    [fail] = d.send(PostFailed(1, proven))

    assert isinstance(fail, Fail)
    assert fail.error is proven


def test_an_ask_whose_post_never_settles_gives_up_on_knowing() -> None:
    d = Driver()
    d.start()
    d.ask(1)
    [settle] = d.send(TimerFired(TimerKind.DEADLINE, 1))
    assert isinstance(settle, Schedule)

    [fail] = d.send(settle.timer)

    assert isinstance(fail, Fail)
    assert isinstance(fail.error, DeliveryUnknown)
    assert "may have been stored" in str(fail.error)


def test_a_post_settled_as_stored_past_the_deadline_times_the_ask_out() -> None:
    d = Driver()
    d.start()
    d.ask(1)
    d.send(TimerFired(TimerKind.DEADLINE, 1))
    [fail] = [e for e in d.send(MessagePosted(1, 0)) if isinstance(e, Fail)]
    assert isinstance(fail.error, ReplyTimeout)


def test_an_ask_resumed_after_its_turn_was_read_is_answered_from_the_log_read_again() -> None:
    d = Driver()
    d.start()
    earlier = [customer(0, "q", key="k1"), *turn(1, "T", "echo: q")]
    d.receive(*earlier)  # a process now gone posted it; this actor read its whole turn

    d.send(AwaitReply(Handle(1, ConsumerKind.ASK, maybe_sent=True), "q", None))
    assert d.of(PostMessage) == [PostMessage(1, "q", 0)]  # looked for from the start
    d.send(MessagePosted(1, 0))  # found in the log at offset 0
    assert d.of(FetchHistory) == [FetchHistory(1, 0, 6)]
    d.send(HistoryFetched(1, tuple(earlier)))

    [resolve] = d.of(Resolve)
    assert resolve.reply.answers == (0,)  # type: ignore[attr-defined]
    assert resolve.reply.text == "echo: q"  # type: ignore[attr-defined]


def test_a_post_key_met_at_a_second_offset_counts_as_a_duplicate_post() -> None:
    d = Driver()
    d.start()
    d.receive(customer(0, key="k1"), customer(1, key="k2"), customer(2))
    assert d.core.snapshot().duplicate_posts_total == 0

    d.receive(customer(3, key="k1"))  # stored twice
    assert d.core.snapshot().duplicate_posts_total == 1


def test_the_own_message_of_an_ask_that_timed_out_before_its_post_returned_stays_unread() -> None:
    d = Driver()
    d.start()
    d.ask(1)
    d.send(TimerFired(TimerKind.DEADLINE, 1))  # the deadline beat the POST's answer
    d.send(MessagePosted(1, 0))
    d.receive(customer(0), agent(1, "F", "unrelated"))
    d.send(Subscribe(Handle(2, ConsumerKind.READER)))
    assert d.delivered(2) == [1]


# --- readers and the unclaimed window --------------------------------------------------------


def test_a_follow_up_after_ready_with_nobody_asking_waits_for_the_next_reader() -> None:
    d = Driver()
    d.start()
    d.ask(1)
    d.send(MessagePosted(1, 0))
    d.receive(customer(0), *turn(1, "T", "answer"))
    d.receive(agent(6, "F", "a follow-up"))
    assert d.core.snapshot().buffered == 1  # the answered turn was claimed by the ask
    d.send(Subscribe(Handle(2, ConsumerKind.READER)))
    assert d.delivered(2) == [6]
    d.receive(agent(7, "F", "another"))
    assert d.delivered(2) == [6, 7]
    assert d.core.snapshot().buffered == 0


def test_a_reader_sees_every_event_while_it_reads() -> None:
    d = Driver()
    d.start()
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))
    d.ask(2)
    d.send(MessagePosted(2, 0))
    d.receive(customer(0), *turn(1, "T", "answer"))
    assert d.delivered(1) == [0, 1, 2, 3, 4, 5]
    assert len(d.of(Resolve, 2)) == 1


def test_the_window_is_bounded_and_counts_evictions() -> None:
    d = Driver(window_size=3)
    d.start()
    d.receive(*(agent(i, "F", f"m{i}") for i in range(5)))
    snapshot = d.core.snapshot()
    assert (snapshot.buffered, snapshot.evicted_total) == (3, 2)
    assert d.core.state is SessionState.POLLING  # unclaimed events never stop polling
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))
    assert d.delivered(1) == [2, 3, 4]


def test_a_reader_since_an_offset_gets_history_from_the_server_then_live_events() -> None:
    d = Driver()
    d.start()
    d.receive(*(agent(i, "F", f"m{i}") for i in range(4)))
    [fetch] = d.send(Subscribe(Handle(1, ConsumerKind.READER), since=1))
    assert fetch == FetchHistory(1, 1, 4)
    assert d.core.checkpoint == 0  # event 0 still waits, unclaimed, for a later reader
    d.receive(agent(4, "F", "live"))  # arrives while the history is being read
    assert d.delivered(1) == []
    d.send(HistoryFetched(1, tuple(agent(i, "F", f"m{i}") for i in range(6))))
    assert d.delivered(1) == [1, 2, 3, 4]


def test_a_reader_whose_history_fails_gets_the_error() -> None:
    d = Driver()
    d.start()
    d.receive(agent(0, "F", "m"))
    d.send(Subscribe(Handle(1, ConsumerKind.READER), since=0))
    error = SessionNotFound("gone", session_id=SID)
    assert d.send(HistoryFetched(1, (), error)) == [Fail(1, error)]


def test_unsubscribe_forgets_the_consumer() -> None:
    d = Driver()
    d.start()
    d.send(Subscribe(Handle(1, ConsumerKind.READER, capacity=1)))
    d.receive(customer(0))
    assert d.core.state is SessionState.PAUSED
    assert d.send(Unsubscribe(1)) == [StartPoll(2, 1, 60, (60, 60))]
    assert d.core.snapshot().readers == 0


def test_checkpoint_is_the_lowest_offset_a_live_consumer_or_the_window_needs() -> None:
    d = Driver()
    d.start()
    d.receive(agent(0, "F", "unclaimed follow-up"))
    assert d.core.checkpoint == 0  # the window's follow-up must survive a restart
    d.send(Subscribe(Handle(9, ConsumerKind.READER)))  # takes it; later events go to it too
    d.receive(customer(1))
    assert d.core.checkpoint == 2
    d.ask(1)  # registered at 2, not yet posted
    d.receive(customer(2), customer(3))
    assert d.core.checkpoint == 2
    d.send(MessagePosted(1, 3))
    assert d.core.checkpoint == 3


# --- idleness --------------------------------------------------------------------------------


def idle_timers(effects: list[Effect]) -> list[Schedule]:
    return [e for e in effects if isinstance(e, Schedule) and e.timer.kind is TimerKind.IDLE]


def test_an_idle_session_arms_its_ttl_and_is_reaped_when_it_fires() -> None:
    d = Driver(idle_ttl=300.0)
    [timer] = idle_timers(d.start())
    assert timer.at == 300.0
    d.send(PollTimedOut(1, "gateway_timeout"))  # a 504 is not activity
    d.now = 300.0
    assert d.send(timer.timer) == [Reap()]


def test_activity_moves_the_reaping_to_a_ttl_after_it_ended() -> None:
    d = Driver(idle_ttl=300.0)
    [first] = idle_timers(d.start())
    d.ask(1)
    d.send(MessagePosted(1, 0))
    d.now = 50.0
    assert idle_timers(d.receive(customer(0), *turn(1, "T", "answer"))) == []  # one pending
    d.now = 300.0
    [second] = idle_timers(d.send(first.timer))  # idle since 50 only: armed again
    assert second.at == 350.0  # counted from the end of the activity
    d.send(Subscribe(Handle(2, ConsumerKind.READER)))
    d.now = 350.0
    assert d.send(second.timer) == []  # a reader came: not idle


def test_a_session_asked_again_and_again_keeps_one_idle_timer_pending() -> None:
    """Timers cannot be cancelled: one per idle spell stayed pending for the whole TTL."""
    d = Driver(idle_ttl=300.0)
    scheduled = idle_timers(d.start())
    for n in range(1, 11):
        d.now = 10.0 * n
        d.ask(n)
        d.send(MessagePosted(n, 6 * (n - 1)))
        scheduled += idle_timers(
            d.receive(customer(6 * (n - 1)), *turn(6 * (n - 1) + 1, f"T{n}", "a"))
        )

    assert [timer.at for timer in scheduled] == [300.0]
    d.now = 300.0
    [again] = idle_timers(d.send(scheduled[0].timer))
    assert again.at == 400.0  # idle since the last turn, at 100
    d.now = 400.0
    assert d.send(again.timer) == [Reap()]


def test_a_follow_up_nobody_reads_does_not_keep_a_session_from_being_reaped() -> None:
    d = Driver(idle_ttl=300.0)
    [timer] = idle_timers(d.start())
    d.ask(1)
    d.send(MessagePosted(1, 0))
    d.receive(customer(0), *turn(1, "T", "answer"))
    d.receive(agent(6, "F", "follow-up nobody read"))  # no work: the timer still stands

    d.now = 300.0
    assert d.send(timer.timer) == [Reap()]
    assert d.core.resume_point() == Resume(6, 7, frozenset({6}))  # where its reader starts


def test_a_successor_reading_again_gives_readers_only_what_was_still_unclaimed() -> None:
    d = Driver()
    d.send(Start(0, Resume(0, 7, frozenset({6}))))  # an earlier actor handled 0..6
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))  # a new reader: the news only
    d.send(Subscribe(Handle(2, ConsumerKind.READER), since=0))  # a re-read: everything
    d.receive(
        customer(0), *turn(1, "T", "answer"), agent(6, "F", "follow-up"), agent(7, "G", "new")
    )

    assert d.delivered(1) == [6, 7]
    assert d.delivered(2) == [0, 1, 2, 3, 4, 5, 6, 7]


def test_a_successor_keeps_only_the_unclaimed_for_the_next_reader() -> None:
    d = Driver()
    d.send(Start(0, Resume(0, 7, frozenset({6}))))
    d.receive(customer(0), *turn(1, "T", "answer"), agent(6, "F", "follow-up"))
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))

    assert d.delivered(1) == [6]


def test_a_core_that_has_not_caught_up_passes_on_what_the_earlier_one_had_seen() -> None:
    """A restarted core that crashes again before reading all its predecessor handled must
    not make the rest news to the next one."""
    d = Driver()
    d.send(Start(0, Resume(0, 7, frozenset({6}))))  # an earlier core handled 0..6
    d.receive(customer(0), *turn(1, "T", "answer"))  # read again up to 5 so far

    resume = d.core.resume_point()
    assert resume.seen_until == 7
    assert 6 in resume.unclaimed
    assert not set(range(6)) & resume.unclaimed


def test_without_a_ttl_a_session_is_never_reaped() -> None:
    d = Driver()
    assert idle_timers(d.start()) == []


# --- durable checkpoints ---------------------------------------------------------------------


def test_without_a_start_offset_the_session_loads_its_stored_checkpoint_before_polling() -> None:
    d = Driver(checkpoint_interval=5.0)
    assert d.send(Start(None)) == [LoadCheckpoint()]
    assert d.core.state is SessionState.STARTING
    d.ask(1)  # calls are taken meanwhile; nothing is polled yet
    assert d.poll is None
    d.send(CheckpointLoaded(12))
    assert d.poll == StartPoll(1, 12, 60, (60, 60), for_turn=True)


def test_a_reader_with_since_subscribed_while_the_checkpoint_loads_gets_the_history() -> None:
    d = Driver(checkpoint_interval=5.0)
    d.send(Start(None))
    d.send(Subscribe(Handle(1, ConsumerKind.READER), 3))  # from 3, before the load ends
    d.send(Subscribe(Handle(2, ConsumerKind.READER)))  # from now on: no history

    effects = d.send(CheckpointLoaded(12))

    assert FetchHistory(1, 3, 12) in effects  # 3..11 lie before where polling starts
    assert not [e for e in effects if isinstance(e, FetchHistory) and e.consumer_id == 2]
    d.send(HistoryFetched(1, tuple(customer(o) for o in range(3, 12)), None))
    d.receive(customer(12))
    assert d.delivered(1) == list(range(3, 13))
    assert d.delivered(2) == [12]


def test_an_unreadable_or_missing_checkpoint_starts_from_the_beginning() -> None:
    d = Driver(checkpoint_interval=5.0)
    d.send(Start(None))
    d.send(CheckpointLoaded(None))
    assert d.poll == StartPoll(1, 0, 60, (60, 60))


def test_checkpoints_are_saved_at_most_once_per_interval_and_once_at_the_end() -> None:
    d = Driver(checkpoint_interval=5.0)
    d.start()
    d.now = 10.0
    d.receive(customer(0))  # unclaimed: the checkpoint stays 0, nothing to save
    d.send(Subscribe(Handle(1, ConsumerKind.READER)))
    assert d.of(SaveCheckpoint) == [SaveCheckpoint(1)]
    d.now = 11.0
    effects = d.receive(customer(1))
    [timer] = [e for e in effects if isinstance(e, Schedule)]
    assert timer.at == 15.0
    assert d.of(SaveCheckpoint) == [SaveCheckpoint(1)]
    d.now = 15.0
    d.send(timer.timer)
    assert d.of(SaveCheckpoint) == [SaveCheckpoint(1), SaveCheckpoint(2)]
    d.now = 16.0
    d.receive(customer(2))
    d.send(Stop(SessionClosed("closed")))
    assert d.of(SaveCheckpoint)[-1] == SaveCheckpoint(3)


def test_a_post_that_succeeds_while_backing_off_ends_the_backoff_at_once() -> None:
    d = Driver()
    d.start()
    d.now = 100.0
    [schedule] = d.send(PollFailed(1, PollFailure(FailureKind.NETWORK, "refused")))
    assert isinstance(schedule, Schedule)
    d.ask(1)

    assert d.send(MessagePosted(1, 0)) == [  # Parlant is back: poll now, for the stored message
        StartPoll(2, 0, 60, for_turn=True),
        ExpectPoll(2),
    ]
    assert d.core.state is SessionState.POLLING
    assert d.send(schedule.timer) == []  # the retry timer is stale now


def test_a_post_that_succeeds_does_not_cut_short_a_servers_retry_after() -> None:
    d = Driver()
    d.start()
    d.now = 100.0
    failure = PollFailure(FailureKind.RATE_LIMITED, "429", 429, retry_after=42.0)
    [schedule] = d.send(PollFailed(1, failure))
    assert isinstance(schedule, Schedule)
    d.ask(1)

    assert d.send(MessagePosted(1, 0)) == []
    assert d.core.state is SessionState.BACKING_OFF
    assert d.send(schedule.timer) == [
        StartPoll(2, 0, 60, for_turn=True),
        ExpectPoll(2),  # it must bring our message
    ]


# --- polls that cannot be alive ----------------------------------------------------------


def test_a_poll_open_when_a_message_is_stored_is_expected_to_bring_it() -> None:
    """A flow a middlebox forgot: the post went out on another connection and was stored,
    the poll heard nothing (54-69 s of deafness measured). The poller is told the open poll
    must bring it (and restarts it if it does not, see test_failure_table)."""
    d = Driver()
    d.start()
    d.ask(1)

    assert ExpectPoll(1) in d.send(MessagePosted(1, 0))
    d.effects.clear()
    d.receive(customer(0))  # it came: the next poll expects nothing
    assert d.of(ExpectPoll) == []
