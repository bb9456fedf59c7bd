"""Parsing a large body of events a piece at a time gives what one parse gives: the same
events for every real capture, the same error for every body that is not a list of events."""

from __future__ import annotations

import json

import pydantic
import pytest

from actors._events import parse_events, parse_events_gradually
from tests.samples import SAMPLES, raw


def bodies() -> list[bytes]:
    """Every real answer of a long-poll captured from Parlant, as the bytes it sent."""
    found = []
    for path in sorted(SAMPLES.glob("*.json")):
        capture = raw(path.stem)
        if isinstance(capture, dict):
            for poll in capture.get("polls", []):
                if poll.get("status") == 200:
                    found.append(json.dumps(poll["body"], indent=1).encode())
    return found


def test_every_real_poll_answer_parses_to_the_same_events_either_way() -> None:
    answers = bodies()
    assert len(answers) >= 10
    for body in answers:
        assert parse_events_gradually(body) == parse_events(body)
    whole = b"[" + b",".join(body.strip()[1:-1] for body in answers if body.strip() != b"[]") + b"]"
    assert parse_events_gradually(whole) == parse_events(whole)  # many, and on many lines


@pytest.mark.parametrize(
    "body",
    [
        *(b"", b"{}", b"[", b"[1,]", b'[{"kind": "message"}]', b"[NaN]", b"[] []", b"[1] x"),
        b"\xff",
        b'["\\ud800"]',  # a lone surrogate, escaped: JSON can say it, Unicode text cannot
        b"[" + b"[" * 500 + b"]" * 500 + b"]",  # deeper than pydantic parses
        b"[" + b"[" * 5000 + b"]" * 5000 + b"]",  # deeper than Python recurses
    ],
    ids=[
        *("empty", "object", "unclosed", "trailing comma", "not an event", "NaN", "two"),
        *("after", "not UTF-8", "lone surrogate", "deep", "deeper than Python recurses"),
    ],
)
def test_a_body_that_is_not_a_list_of_events_fails_as_one_parse_does(body: bytes) -> None:
    with pytest.raises(pydantic.ValidationError) as whole:
        parse_events(body)
    with pytest.raises(pydantic.ValidationError) as gradual:
        parse_events_gradually(body)

    def said(error: pydantic.ValidationError) -> list[tuple[object, ...]]:
        return [(e["loc"], e["type"], e["msg"]) for e in error.errors()]  # NaN != NaN

    assert said(gradual.value) == said(whole.value)


def test_an_empty_list_is_no_events() -> None:
    assert parse_events_gradually(b" [ ] \n") == parse_events(b" [ ] \n") == []
