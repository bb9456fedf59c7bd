"""The lean client's HTTP/1.1 on real sockets: what a response may look like, what each one
makes of the connection, and the request it sends."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from actors._wire import (
    MAX_HEAD,
    Connection,
    WireBodyTooLarge,
    WireError,
    WireTarget,
    _Response,
)

Answer = Callable[[bytes], bytes]


class Closing(bytes):
    """An answer after which the server closes the connection."""


@asynccontextmanager
async def serving(*answers: bytes | Answer) -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    """A server that answers the n-th request (on any connection) with `answers[n]` (bytes, or
    a function of the request's head), then keeps the connection open. Yields its URL, the
    request heads it read and how many connections it accepted."""
    heads: list[bytes] = []
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                heads.append(head + body)
                answer = answers[len(heads) - 1]
                writer.write(answer(head) if callable(answer) else answer)
                await writer.drain()
                if isinstance(answer, Closing):
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/base", heads, accepted


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]"


@pytest.mark.asyncio
async def test_a_request_carries_host_path_and_headers_and_a_json_body_its_length() -> None:
    async with serving(OK) as (url, heads, _):
        connection = Connection(WireTarget.of(url, {"Authorization": "Bearer t"}))
        response = await connection.request(
            b"POST", "/sessions/s1/events?x=1", connect_timeout=5, json_body=b'{"a": 1}'
        )
        connection.close()

    assert (response.status, response.reason, response.content) == (200, "OK", b"[]")
    assert heads[0].split(b"\r\n") == [
        b"POST /base/sessions/s1/events?x=1 HTTP/1.1",
        f"host: {url.split('/')[2]}".encode(),
        b"authorization: Bearer t",
        b"content-type: application/json",
        b"content-length: 8",
        b"",
        b'{"a": 1}',
    ]


@pytest.mark.asyncio
async def test_kept_alive_responses_reuse_the_connection_and_a_close_ends_it() -> None:
    closing = b"HTTP/1.1 504 Gateway Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    async with serving(OK, OK, closing, OK) as (url, _, accepted):
        connection = Connection(WireTarget.of(url, {}))
        statuses = [
            (await connection.request(b"GET", "/p", connect_timeout=5)).status for _ in range(4)
        ]
        connection.close()

    assert statuses == [200, 200, 504, 200]
    assert accepted == [2]  # the 504 said close: the fourth went on a new connection


@pytest.mark.asyncio
async def test_headers_are_lowercased_and_repeated_ones_joined() -> None:
    answer = (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nX-A: 1\r\nx-a: 2\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    async with serving(answer) as (url, _, _accepted):
        connection = Connection(WireTarget.of(url, {}))
        response = await connection.request(b"GET", "/p", connect_timeout=5)
        connection.close()

    assert response.headers["retry-after"] == "3"
    assert response.headers["x-a"] == "1, 2"


@pytest.mark.asyncio
async def test_a_chunked_body_is_read_whole() -> None:
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\n[\r\n1\r\n]\r\n0\r\n\r\n"
    async with serving(answer, OK) as (url, _, accepted):
        connection = Connection(WireTarget.of(url, {}))
        first = await connection.request(b"GET", "/p", connect_timeout=5)
        second = await connection.request(b"GET", "/p", connect_timeout=5)
        connection.close()

    assert (first.content, second.content, accepted) == (b"[]", b"[]", [1])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n[]", "closed", id="cut"),
        pytest.param(b"SMTP ready\r\n\r\n", "RemoteProtocolError", id="not-http"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n[]",
            "RemoteProtocolError",
            id="two-lengths",
        ),
    ],
)
async def test_a_response_that_does_not_end_properly_fails_and_closes_the_connection(
    answer: bytes, error: str
) -> None:
    async with serving(Closing(answer), OK) as (url, _, accepted):
        connection = Connection(WireTarget.of(url, {}))
        with pytest.raises(WireError, match=error):
            await connection.request(b"GET", "/p", connect_timeout=5)
        after = await connection.request(b"GET", "/p", connect_timeout=5)
        connection.close()

    assert (after.status, accepted) == (200, [2])  # the failed one's connection was dropped


@pytest.mark.asyncio
async def test_bytes_past_the_response_are_not_taken_for_the_next_one() -> None:
    late = b"HTTP/1.1 504 Gateway Timeout\r\ncontent-length: 3\r\n\r\nabc"
    async with serving(OK + late, OK + b"garbage", OK) as (url, _, accepted):
        connection = Connection(WireTarget.of(url, {}))
        answers = [await connection.request(b"GET", "/p", connect_timeout=5) for _ in range(3)]
        connection.close()

    assert [(a.status, a.reason, a.content) for a in answers] == [(200, "OK", b"[]")] * 3
    assert answers[0].headers["content-length"] == "2"  # nothing of the 504 mixed in
    assert accepted == [3]  # what nobody asked for closed each of the first two connections


@pytest.mark.asyncio
async def test_a_body_that_runs_until_the_close_ends_there() -> None:
    proxy_page = b"HTTP/1.0 503 Service Unavailable\r\nretry-after: 7\r\n\r\nsorry"
    async with serving(Closing(proxy_page)) as (url, _, _accepted):
        connection = Connection(WireTarget.of(url, {}))
        answer = await connection.request(b"GET", "/p", connect_timeout=5)
        connection.close()

    assert (answer.status, answer.headers["retry-after"], answer.content) == (503, "7", b"sorry")


def test_an_interim_response_is_skipped_however_the_bytes_are_split() -> None:
    interim = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]"
    for pieces in (
        [interim + final],
        [interim, final],
        [interim[:9], interim[9:] + final[:20], final[20:]],
    ):
        response = _Response()
        assert response.parser is not None
        for piece in pieces:
            assert not response.complete
            response.parser.feed_data(piece)

        assert response.complete
        assert (response.status, response.reason, response.messages) == (200, "OK", 1)
        assert "link" not in response.headers
        assert b"".join(response.chunks) == b"[]"


@pytest.mark.asyncio
async def test_a_head_that_never_ends_fails_past_its_bound() -> None:
    endless = b"HTTP/1.1 200 OK\r\nx-long: " + b"a" * (MAX_HEAD + 1)
    async with serving(endless) as (url, _, _accepted):
        connection = Connection(WireTarget.of(url, {}))
        with pytest.raises(WireError, match="head longer than"):
            await connection.request(b"GET", "/p", connect_timeout=5)


@pytest.mark.asyncio
async def test_a_body_past_the_bound_fails_as_too_large() -> None:
    big = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 100
    async with serving(big) as (url, _, _accepted):
        connection = Connection(WireTarget.of(url, {}, max_body=99))
        with pytest.raises(WireBodyTooLarge, match="larger than 99 bytes"):
            await connection.request(b"GET", "/p", connect_timeout=5)


@pytest.mark.asyncio
async def test_a_streamed_body_arrives_in_pieces_including_one_sent_with_the_head() -> None:
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"
    async with serving(answer) as (url, _, _accepted):
        connection = Connection(WireTarget.of(url, {}))
        response = await connection.stream(b"GET", "/p", connect_timeout=5)
        pieces = [piece async for piece in response.body()]
        connection.close()

    assert response.status == 200
    assert b"".join(pieces) == b"abcd"


def test_a_header_that_would_break_the_request_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="not a valid HTTP header"):
        WireTarget.of("http://127.0.0.1:9", {"X-Evil": "a\r\nx-injected: 1"})
    with pytest.raises(ValueError, match="not a valid HTTP header"):
        WireTarget.of("http://127.0.0.1:9", {"Bad Name": "v"})


@pytest.mark.asyncio
async def test_a_target_with_spaces_or_controls_is_refused_before_sending() -> None:
    async with serving(OK) as (url, heads, _accepted):
        connection = Connection(WireTarget.of(url, {}))
        with pytest.raises(WireError, match="must not hold spaces"):
            await connection.request(b"GET", "/a b", connect_timeout=5)
        connection.close()

    assert heads == []


@pytest.mark.asyncio
async def test_a_finished_exchange_leaves_no_garbage_for_the_cycle_collector() -> None:
    requests = 50
    async with serving(*[OK] * requests) as (url, _, _accepted):
        connection = Connection(WireTarget.of(url, {}))
        await connection.request(b"GET", "/p", connect_timeout=5)  # connected, warmed up
        gc.collect()
        gc.disable()
        try:
            for _ in range(requests - 1):
                await connection.request(b"GET", "/p", connect_timeout=5)
            unreachable = gc.collect()
        finally:
            gc.enable()
        connection.close()

    # freed by reference counting as each ends (a parser and its callbacks were a cycle each)
    assert unreachable < requests // 2
