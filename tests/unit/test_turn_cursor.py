"""`TurnCursor`: what a caller gets when the actor or the shard that feeds it starts over.

A restarted actor (from its resume point) or a restarted shard (from its checkpoint) gives
events and message text again; each event and each piece of text reaches the caller once.
The local consumers and the sharded driver use this one cursor.
"""

from __future__ import annotations

from actors import MessageDelta
from actors.events import StreamItem
from supervisor._consumers import TurnCursor
from tests.factory import agent, status


def _delta(text: str, given: str = "", *, done: bool = False) -> MessageDelta:
    return MessageDelta(
        event_id="ev00000002",
        offset=2,
        trace_id="t1",
        text=text,
        delta=text[len(given) :],
        preamble=False,
        done=done,
    )


def _seen(cursor: TurnCursor, items: list[StreamItem]) -> list[StreamItem]:
    return [fresh for item in items if (fresh := cursor.fresh(item)) is not None]


def test_a_turn_given_again_from_its_start_yields_only_what_the_caller_had_not() -> None:
    cursor = TurnCursor()
    first: list[StreamItem] = [
        status(0, "t1", "acknowledged"),
        _delta("Hel"),
        _delta("Hello, wo", "Hel"),
    ]
    again: list[StreamItem] = [
        status(0, "t1", "acknowledged"),
        _delta("Hello, wo"),  # the new feed's first delta holds the whole text so far
        _delta("Hello, world", "Hello, wo", done=True),
        agent(2, "t1", "Hello, world"),
        status(3, "t1", "ready"),
    ]

    assert _seen(cursor, first) == first
    seen = _seen(cursor, again)

    assert seen[0] == _delta("Hello, world", "Hello, wo", done=True)  # only the new text
    assert [getattr(item, "offset", None) for item in seen[1:]] == [2, 3]
    assert cursor.next_offset == 4


def test_a_last_delta_that_adds_no_text_still_says_the_message_is_done_once() -> None:
    cursor = TurnCursor()

    assert cursor.fresh(_delta("Hi")) is not None
    done = cursor.fresh(_delta("Hi", "Hi", done=True))
    assert done == _delta("Hi", "Hi", done=True)  # no text, but `done`
    assert cursor.fresh(_delta("Hi", "Hi", done=True)) is None
    assert cursor.fresh(_delta("H")) is None  # an older snapshot


def test_a_delta_of_a_message_already_given_whole_is_dropped() -> None:
    cursor = TurnCursor()
    cursor.fresh(agent(2, "t1", "Hello"))

    assert cursor.fresh(_delta("Hello", done=True)) is None


def test_a_reader_with_no_event_yet_starts_at_its_floor_one_with_events_keeps_its_place() -> None:
    fresh_reader = TurnCursor()
    fresh_reader.floor(5)
    assert fresh_reader.fresh(agent(4, "t1", "taken by an ask")) is None
    assert fresh_reader.fresh(agent(5, "t1", "new")) is not None

    reading = TurnCursor(since=0)
    reading.fresh(agent(0, "t1", "a"))
    reading.floor(5)  # the restarted shard's floor: the reader already knows where it is
    assert reading.fresh(agent(1, "t1", "b")) is not None
