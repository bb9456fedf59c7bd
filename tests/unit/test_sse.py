"""SSEDecoder: the event-stream format as servers send it, cut anywhere."""

from __future__ import annotations

import pytest

from actors._wire import SSEDecoder

STREAM = (
    b": a comment\r\n"
    b"event: update\r\n"
    b'data: {"a":\r\n'
    b"data: 1}\r\n"
    b"\r\n"
    b"id: 7\n"
    b"data:no space\n"
    b"\n"
    b"retry: 100\r"
    b"\r"
    b"data: last\r\r\n"  # a CR, then a CRLF
)


def decode(pieces: list[bytes]) -> list[str]:
    decoder = SSEDecoder()
    return [data for piece in pieces for data in decoder.feed(piece)]


def test_events_are_their_data_lines_joined_whatever_the_line_endings() -> None:
    assert decode([STREAM]) == ['{"a":\n1}', "no space", "last"]


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_pieces_cut_anywhere_give_the_same_events(size: int) -> None:
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert decode(pieces) == ['{"a":\n1}', "no space", "last"]


def test_an_event_not_yet_ended_by_a_blank_line_is_not_given() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: half") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == ["half"]
    assert decoder.feed(b"data: maybe\r\r") == []  # the last CR may be half of a CRLF
    assert decoder.feed(b"\n") == ["maybe"]
