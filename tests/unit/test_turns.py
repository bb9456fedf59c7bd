"""TurnTracker on the real server's captures and on the edge cases docs/PARLANT.md describes."""

from __future__ import annotations

from actors import TurnTracker
from actors._turns import CustomerSpoke, TurnCancelled, TurnCompleted, TurnProgressed
from tests.samples import events


def feed_all(tracker: TurnTracker, name: str) -> list[object]:
    return [tracker.feed(e) for e in events(name)]


def test_one_turn_completes_only_at_the_completed_ready() -> None:
    updates = feed_all(TurnTracker(), "one_turn")
    assert isinstance(updates[0], CustomerSpoke)
    # offsets 4 and 8 are intermediate readies (empty data): they do not complete the turn
    assert all(isinstance(u, TurnProgressed) for u in updates[1:9])
    completed = updates[9]
    assert isinstance(completed, TurnCompleted)
    assert completed.answers == (0,)
    assert [e.offset for e in completed.events] == list(range(1, 10))


def test_superseded_turn_answers_both_messages_and_strays_join_nothing() -> None:
    tracker = TurnTracker()
    feed_all(tracker, "one_turn")
    updates = {
        u_event.offset: u
        for u_event, u in zip(
            events("superseded_turn"), feed_all(tracker, "superseded_turn"), strict=True
        )
    }
    assert isinstance(updates[11], TurnProgressed)
    assert updates[11].answers == (10,)
    assert isinstance(updates[13], TurnCancelled)
    # the cancelled trace's own completed ready, and its later strays, belong to no turn
    for stray in (14, 19, 20, 21, 22):
        assert updates[stray] is None
    assert isinstance(updates[15], TurnProgressed)
    assert updates[15].answers == (10, 12)
    final = updates[27]
    assert isinstance(final, TurnCompleted)
    assert final.answers == (10, 12)
    assert [e.offset for e in final.events] == [15, 16, 17, 18, 23, 24, 25, 26, 27]


def test_open_turn_answering_reports_the_claiming_trace_and_its_events() -> None:
    tracker = TurnTracker()
    for event in events("one_turn")[:4]:
        tracker.feed(event)
    found = tracker.open_turn_answering(0)
    assert found is not None
    trace_id, turn_events = found
    assert trace_id == events("one_turn")[1].trace_id
    assert [e.offset for e in turn_events] == [1, 2, 3]
    assert tracker.open_turn_answering(99) is None


def test_agent_events_of_an_unknown_trace_without_acknowledgement_join_no_turn() -> None:
    tracker = TurnTracker()
    follow_up = events("one_turn")[7]  # an agent message, its trace never acknowledged here
    assert tracker.feed(follow_up) is None
