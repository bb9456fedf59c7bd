"""Lean HTTP/1.1 on asyncio streams, kept alive: each session's long-poll connection, and the
small pool that posts customer messages. Responses are parsed by httptools (llhttp, the parser
uvicorn serves Parlant with); requests, which this module builds from trusted parts, are
formatted directly.

A long-poll is one GET that waits, answered with a small JSON body or a 504; what it needs is a
connection of its own, reused poll after poll, and a cancel that costs nothing. httpx gives that
through a pool of one, at the price of its request and response models, anyio task groups and
cancel scopes on every request, and a client object per session: py-spy showed that machinery to
be most of the I/O thread's work when thousands of sessions connect, re-poll and stop. Posting a
customer message is the other hot request (one per ask); through parlant-client's httpx pool it
was two thirds of the I/O thread's time while 1,000 sessions asked at once (py-spy), most of
it httpcore checking every pooled connection for expiry on every request. h11 (the parser
httpcore itself uses) was the next cost: a request and its 504 through h11 took 0.29 ms of
client CPU, through httptools and a formatted request 0.18 ms (`bench.phases`' server, one
connection, 3,000 requests); at 15,000 idle sessions those exchanges are nearly all the
client's work. (`supervisor.testing.FaultProxy`, which must also read requests, uses h11.)

Following a streamed message is the third: one `read_event?sse=true` per streamed message, a
response read as it arrives (`Connection.stream`) and decoded by `SSEDecoder`. httpx-sse, the
field's SSE client, decodes httpx responses only; the part of the SSE format Parlant uses
(`data:` lines, events ended by a blank line) is a few lines on top of the response reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import ssl
import struct
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Final, final
from urllib.parse import urlsplit

import httptools

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_BODY",
    "MAX_HEAD",
    "Connection",
    "ConnectionPool",
    "SSEDecoder",
    "StreamedResponse",
    "WireBodyTooLarge",
    "WireConnectError",
    "WireError",
    "WireResponse",
    "WireSilenced",
    "WireTarget",
    "WireTimeout",
    "WireTlsError",
    "check_headers",
    "is_open",
    "plain_http_answered",
    "retry_after_seconds",
]

_READ_SIZE: Final = 65_536
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FORBIDDEN: Final = re.compile(r"[\x00\r\n]")
CONNECT_TIMEOUT: Final = 10.0
"""Seconds to connect before a request fails as never sent (polls and short requests)."""
MAX_HEAD: Final = 64 * 1024
"""Bytes a response's status line and headers may take (h11's bound was 16 KiB; llhttp has
none of its own): a server or proxy that never ends its head fails, not fills memory."""
KEEPALIVE: Final = (5, 2, 3)
"""TCP keepalive on every connection: probe after 5 s of silence, every 2 s, 3 times. A flow a
middlebox forgot (a NAT, a load balancer, conntrack: no RST, no FIN) is then noticed within
~11 s, where a long-poll waiting 60 s (and more under a request budget) otherwise heard nothing
until its own timeout. Each idle connection sends one probe every 5 s (measured: see
BENCHMARKS.md, issue 28)."""

USER_TIMEOUT_MS: Final = 11_000
"""`TCP_USER_TIMEOUT`: data (a request, a keepalive probe) left unacknowledged this long
closes the connection; the same ~11 s as the keepalive, also while a request is unsent."""

_ABORT: Final = struct.pack("ii", 1, 0)
"""`SO_LINGER` on, 0 s: `close()` resets the connection and discards what is unsent."""


def tune(sock: socket.socket) -> None:
    """Keepalive and a user timeout on a TCP socket (see `KEEPALIVE`)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        for level, option, value in socket_options():
            with contextlib.suppress(OSError):  # checked by `socket_options`; never fatal
                sock.setsockopt(level, option, value)


@functools.cache
def socket_options() -> tuple[tuple[int, int, int], ...]:
    """`tune`'s options as (level, option, value), for clients that take them (httpx): those
    this platform has and accepts (tried once on a socket of its own: a sandbox that refuses
    `TCP_USER_TIMEOUT` must not fail every connection), the others gone without."""
    idle, interval, count = KEEPALIVE
    wanted: list[tuple[int, int, int]] = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, setting in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", interval),
        ("TCP_KEEPCNT", count),
        ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
    ):
        number = getattr(socket, name, None)
        if number is not None:
            wanted.append((socket.IPPROTO_TCP, number, setting))
    accepted = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as trial:
        for level, option, value in wanted:
            try:
                trial.setsockopt(level, option, value)
            except OSError:
                continue
            accepted.append((level, option, value))
    return tuple(accepted)


def abort(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a reset (RST), dropping what it has not sent: a request given up
    on must not be delivered later. A normal close (FIN) leaves the kernel retransmitting the
    unsent request through a partition, and Parlant storing it once the network heals, after
    the client decided it was not there (measured: a post stored twice, issue 28)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # closed already
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
    writer.transport.abort()


MAX_BODY: Final = 64 * 1024 * 1024
"""Bytes a response body (or one streamed event) may have before it fails as too large: a
generous bound on what a hostile or broken server can make this process hold."""


class WireError(Exception):
    """The request failed on the wire (refused, reset, closed early, unparseable, too slow)."""


class WireConnectError(WireError):
    """No connection was made: the request was certainly not sent."""


class WireTlsError(WireError):
    """The TLS handshake failed: typically an https URL to a plain-HTTP server (or the reverse),
    or a certificate refused. Retrying the same URL cannot help."""


class WireSilenced(WireError):
    """The connection died of silence: the peer acknowledged nothing for the user timeout, or
    keepalive probes went unanswered (ETIMEDOUT). The path to the server was lost (a partition,
    a flow a middlebox forgot), which says nothing yet of the server: a new connection tells."""


class WireTimeout(WireError):
    """No complete answer within the request's timeout (its connection was reset)."""


class WireBodyTooLarge(WireError):
    """The response (or one streamed event) was larger than the target's `max_body`."""


@final
@dataclass(frozen=True, slots=True)
class WireTarget:
    """Where the polls go: parsed once from the base URL, shared by every connection."""

    host: str
    port: int
    path_prefix: str
    ssl_context: ssl.SSLContext | None
    head: bytes
    """The header lines every request sends (`host`, then the configured ones), formatted
    once."""
    max_body: int = MAX_BODY

    @classmethod
    def of(cls, base_url: str, headers: dict[str, str], max_body: int = 0) -> WireTarget:
        """The target of `base_url`; an https one gets a default TLS context of its own
        (created only then: loading the CA bundle costs about a megabyte). Responses (and
        each streamed event) larger than `max_body` bytes fail (0: `MAX_BODY`)."""
        parts = urlsplit(base_url)
        secure = parts.scheme == "https"
        host = parts.hostname or "localhost"
        port = parts.port or (443 if secure else 80)
        host_header = parts.netloc.rpartition("@")[2]
        check_headers(headers)
        lines = [
            (b"host", host_header.encode("idna")),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ]
        return cls(
            host=host,
            port=port,
            path_prefix=parts.path.rstrip("/"),
            ssl_context=ssl.create_default_context() if secure else None,
            head=b"".join(name + b": " + value + b"\r\n" for name, value in lines),
            max_body=max_body or MAX_BODY,
        )


def check_headers(headers: Mapping[str, str]) -> None:
    """Raise `ValueError` for a header that would break the requests it is sent with: a name
    that is not an HTTP token, a value holding CR, LF or NUL (header injection)."""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or _FORBIDDEN.search(value):
            raise ValueError(f"header {name!r}: not a valid HTTP header name and value")


@final
@dataclass(frozen=True, slots=True)
class WireResponse:
    """A complete response."""

    status: int
    reason: str
    headers: dict[str, str]
    content: bytes


@final
class _Response:
    """httptools' callbacks for one response: its head, its body's pieces, whether it ended.

    Interim responses (1xx but 101) are skipped: the final one follows on the same connection
    (h11 reported them apart, and a client must expect them: RFC 9110 15.2). Whatever follows
    the final response is not ours: it is counted (`messages`), never mixed into it.
    """

    __slots__ = (
        "chunks",
        "complete",
        "head_bytes",
        "head_done",
        "headers",
        "keep_alive",
        "messages",
        "parser",
        "reason",
        "size",
        "status",
    )

    def __init__(self) -> None:
        # The parser holds this object's callbacks, and this object the parser: `release`
        # breaks the cycle, so that a finished response is freed at once, not by the cyclic
        # garbage collector (each exchange's pair left for it made collections 5 times as
        # frequent at 15,000 idle sessions).
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.status = 0
        self.keep_alive = False
        self.head_bytes = 0
        self.messages = 0
        self.head_done = False
        self.complete = False
        self._clear()

    def _clear(self) -> None:
        """Forget what the message so far said (at the start, and after an interim one)."""
        self.headers: dict[str, str] = {}
        self.reason = ""
        self.chunks: list[bytes] = []
        self.size = 0

    def release(self) -> None:
        """Drop the parser (the response is complete, or abandoned)."""
        self.parser = None

    @property
    def framed(self) -> bool:
        """Whether the head says where the body ends (else it runs until the connection
        closes: an HTTP/1.0-style answer, e.g. a proxy's error page)."""
        return "content-length" in self.headers or "transfer-encoding" in self.headers

    def on_message_begin(self) -> None:
        self.messages += 1  # a second one is bytes past the response: nothing we asked for

    def on_status(self, status: bytes) -> None:
        if not self.complete:
            self.reason += status.decode(errors="replace")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        key = name.decode(errors="replace").lower()
        text = value.decode(errors="replace")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        if self.complete or self.parser is None:
            return
        # asked here: once the message is complete, the parser has moved on to the next one
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # interim: its end starts the final response over (on_message_complete)
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.size += len(body)
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.complete:
            return
        if not self.head_done:  # an interim response ended: the final one comes next
            self.messages -= 1
            self._clear()
            return
        self.complete = True


@final
class StreamedResponse:
    """A response whose body is read as it arrives (`Connection.stream`)."""

    def __init__(self, response: _Response, reader: asyncio.StreamReader) -> None:
        self.status = response.status
        self.reason = response.reason
        self.headers = response.headers
        self._response = response
        self._reader = reader

    async def body(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive, until its end; raises `WireError` if the peer
        breaks off mid-body. The caller bounds the waits (`asyncio.timeout`)."""
        response = self._response
        try:
            while True:
                pieces, response.chunks = response.chunks, []
                for piece in pieces:
                    yield piece
                if response.complete:
                    return
                await _feed(self._reader, response)
        finally:
            response.release()


@final
class SSEDecoder:
    """Server-Sent Events from a byte stream: feed it the body's pieces, get each complete
    event's `data` (its `data:` lines joined by newlines; events with none are skipped).

    Lines may end with CRLF, LF or CR, and may be split anywhere across pieces (the WHATWG
    event-stream format); `event:`, `id:`, `retry:` and comment lines carry nothing Parlant
    sends, so they are ignored.
    """

    def __init__(self, max_event: int = MAX_BODY) -> None:
        self._pending = b""
        self._data: list[str] = []
        self._size = 0
        self._max_event = max_event

    def feed(self, piece: bytes) -> list[str]:
        """The data of every event that `piece` completes, in order; `WireBodyTooLarge` when
        one event grows past `max_event` bytes."""
        self._pending += piece
        self._size += len(piece)
        if self._size > self._max_event:
            raise WireBodyTooLarge(f"a streamed event is larger than {self._max_event} bytes")
        complete: list[str] = []
        while True:
            cut = _line_end(self._pending)
            if cut is None:
                return complete
            end, after = cut
            line = self._pending[:end].decode("utf-8", errors="replace")
            self._pending = self._pending[after:]
            if not line:
                if self._data:
                    complete.append("\n".join(self._data))
                    self._data = []
                self._size = len(self._pending)
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line of `buffer` ends, and where the next starts (None: no whole line
    yet; a CR at the very end may be the first half of a CRLF)."""
    for index, byte in enumerate(buffer):
        if byte == 0x0A:
            return index, index + 1
        if byte == 0x0D:
            if index + 1 == len(buffer):
                return None
            return index, index + (2 if buffer[index + 1] == 0x0A else 1)
    return None


@final
class Connection:
    """A keep-alive HTTP/1.1 connection, opened on first use (one session's polls use one).

    One request at a time. A request that fails, times out or is cancelled closes the
    connection (its state is unknown); the next one opens a new one. A response must say
    where it ends (Content-Length or chunked, as Parlant's always do): one that runs until
    the connection closes fails as cut short.
    """

    def __init__(self, target: WireTarget) -> None:
        self._target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._streamed: _Response | None = None  # released when the connection closes

    async def request(
        self, method: bytes, path: str, *, connect_timeout: float, json_body: bytes | None = None
    ) -> WireResponse:
        """Send `method path` (below the base URL's path), with a JSON body if given; raises
        `WireError` on a wire failure.

        The caller bounds the whole request (`asyncio.timeout`); on any exit other than a
        complete response the connection is closed.
        """
        try:
            response = await self._exchange(method, path, connect_timeout, json_body)
        except BaseException:
            self.close(reset=True)  # given up on: nothing of it may reach the server later
            raise
        return response

    def close(self, *, reset: bool = False) -> None:
        """Close the connection now (no-op when none is open); with `reset`, by an RST that
        drops whatever is still unsent (`abort`)."""
        writer, self._writer, self._reader = self._writer, None, None
        if self._streamed is not None:
            self._streamed.release()
            self._streamed = None
        if writer is not None:
            if reset:
                abort(writer)
            else:
                writer.close()

    async def stream(self, method: bytes, path: str, *, connect_timeout: float) -> StreamedResponse:
        """Send `method path` and return once the response's head has arrived; its body is
        read as it arrives (`StreamedResponse.body`). Raises `WireError` on a wire failure.

        The connection is the response's until it is closed: close it when done (a streamed
        response is not kept alive).
        """
        try:
            reader = await self._send(method, path, connect_timeout, None)
            response = self._streamed = _Response()
            await _read(reader, response, until_head=True)
            return StreamedResponse(response, reader)
        except BaseException:
            self.close(reset=True)
            raise

    async def _send(
        self, method: bytes, path: str, connect_timeout: float, json_body: bytes | None
    ) -> asyncio.StreamReader:
        """Connect if needed and write the request; the reader to read the answer from."""
        target = self._target
        reader, writer = self._reader, self._writer
        if reader is None or writer is None or not is_open(reader, writer):
            self.close()
            reader, writer = await _connect(target, connect_timeout)
            self._reader, self._writer = reader, writer
        request_target = (target.path_prefix + path).encode()
        if _FORBIDDEN_IN_TARGET.search(request_target):
            raise WireError(f"a request target must not hold spaces or controls: {path!r}")
        head = [method, b" ", request_target, b" HTTP/1.1\r\n", target.head]
        if json_body is not None:
            head += [
                b"content-type: application/json\r\ncontent-length: ",
                str(len(json_body)).encode(),
                b"\r\n",
            ]
        head.append(b"\r\n")
        if json_body:
            head.append(json_body)
        try:
            writer.write(b"".join(head))
        except OSError as error:
            raise WireError(f"{type(error).__name__}: {error}") from error
        return reader

    async def _exchange(
        self, method: bytes, path: str, connect_timeout: float, json_body: bytes | None
    ) -> WireResponse:
        reader = await self._send(method, path, connect_timeout, json_body)
        response = _Response()
        try:
            await _read(reader, response, max_body=self._target.max_body)
        finally:
            response.release()
        if response.messages > 1 or not response.keep_alive:
            self.close()  # the server closes it, or sent what nobody asked for
        return WireResponse(
            status=response.status,
            reason=response.reason,
            headers=response.headers,
            content=b"".join(response.chunks),
        )


_FORBIDDEN_IN_TARGET: Final = re.compile(rb"[\x00-\x20\x7f]")


async def _read(
    reader: asyncio.StreamReader,
    response: _Response,
    *,
    until_head: bool = False,
    max_body: int | None = None,
) -> None:
    """Feed `response`'s parser from `reader` until the response is complete (or, with
    `until_head`, its head); `WireError` when the peer closes first or breaks the protocol, and
    `WireBodyTooLarge` once the body passes `max_body` bytes (the rest is not read).

    A body past `LARGE_RESPONSE` bytes reads on only while it holds one of the loop's
    `LARGE_RESPONSES` slots: the bytes in flight across every connection stay bounded (one
    100,000-event answer took the process from 52 to 414 MB; several at once had no bound)."""
    slot: asyncio.Semaphore | None = None
    try:
        while not (response.head_done if until_head else response.complete):
            await _feed(reader, response)
            if max_body is not None and response.size > max_body:
                raise WireBodyTooLarge(f"the response body is larger than {max_body} bytes")
            if slot is None and response.size > LARGE_RESPONSE and not until_head:
                slots = _large_slots()
                await slots.acquire()  # cancelled while waiting: it holds no slot to give back
                slot = slots
    finally:
        if slot is not None:
            slot.release()


LARGE_RESPONSE: Final = 1024 * 1024
"""Bytes past which a response body counts as large (see `_read`)."""
LARGE_RESPONSES: Final = 4
"""Large bodies read at once, per event loop: with `max_response_bytes` (64 MiB), at most
256 MiB of large bodies in flight."""
_large: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _large_slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _large.get(loop)
    if slots is None:
        slots = _large[loop] = asyncio.Semaphore(LARGE_RESPONSES)
    return slots


async def _feed(reader: asyncio.StreamReader, response: _Response) -> None:
    """One read from `reader` into `response`'s parser; `WireError` when the peer closed the
    connection first, broke the protocol or sent a head past `MAX_HEAD` bytes."""
    parser = response.parser
    if parser is None:
        raise WireError("the response was abandoned: its connection is closed")
    try:
        data = await reader.read(_READ_SIZE)
    except TimeoutError as error:  # ETIMEDOUT from the kernel, not an asyncio deadline
        raise WireSilenced(f"{type(error).__name__}: {error}") from error
    except OSError as error:
        raise WireError(f"{type(error).__name__}: {error}") from error
    if not data:
        if response.head_done and not response.framed:
            response.complete, response.keep_alive = True, False  # its body ran until the close
            return
        raise WireError("RemoteProtocolError: the server closed the connection")
    if not response.head_done:
        response.head_bytes += len(data)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade as error:
        raise WireError("RemoteProtocolError: the server switched protocols") from error
    except httptools.HttpParserError as error:
        if response.complete:  # garbage after a whole response: keep it, drop the connection
            response.messages += 1
            return
        raise WireError(f"RemoteProtocolError: {type(error).__name__}: {error}") from error
    if not response.head_done and response.head_bytes > MAX_HEAD:
        raise WireError(f"RemoteProtocolError: a response head longer than {MAX_HEAD} bytes")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The `Retry-After` header in seconds, when it is given in seconds (dates are ignored)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


CONNECTS_IN_FLIGHT: Final = 256
"""Connection attempts in flight at once on one event loop; more wait their turn (not counted
against their connect timeout). Opening 15,000 sessions at once otherwise sends 15,000 SYNs
together: the server's accept queue (capped by the kernel's somaxconn, 4096 here) overflows,
the dropped SYNs are retried a second and more later, connects time out (10 s), and the
upstream is taken for down (bench: opening 15,000 sessions took 24-36 s, 1.6-2.4 ms each
against 0.7-1.1 at 1,000)."""
_connect_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


async def _connect(
    target: WireTarget, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    slots = _connect_slots.get(loop)
    if slots is None:
        slots = _connect_slots[loop] = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
    async with slots:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    target.host,
                    target.port,
                    ssl=target.ssl_context,
                    server_hostname=target.host if target.ssl_context else None,
                )
                sock = writer.get_extra_info("socket") if writer is not None else None
                if sock is not None:
                    tune(sock)
                return reader, writer
        except TimeoutError:
            raise WireConnectError(f"ConnectTimeout: no connection within {timeout} s") from None
        except ssl.SSLError as error:
            if not plain_http_answered(error):  # a certificate, an alert: may be fixed there
                raise WireConnectError(
                    f"TLS with {target.host}:{target.port} failed ({error.reason or error})"
                ) from error
            raise WireTlsError(
                f"TLS with {target.host}:{target.port} failed ({error.reason or error}): it "
                "speaks plain HTTP there; use http:// (or the port that serves https)"
            ) from error
        except OSError as error:
            raise WireConnectError(f"ConnectError: {error}") from error


_PLAIN_HTTP: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"}
)
"""OpenSSL's reasons for a TLS handshake answered by something that is not TLS (a plain-HTTP
server answers `HTTP/1.1 400` to the ClientHello: WRONG_VERSION_NUMBER)."""


def plain_http_answered(error: BaseException) -> bool:
    """Whether `error` (or what caused it: httpx wraps it) is a TLS handshake that a plain-HTTP
    server answered: a URL that says https where the server does not. Other TLS failures (a
    certificate not trusted, an alert from a busy terminator) are not taken for a wrong URL:
    they may be mended there, and are retried."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError) and current.reason in _PLAIN_HTTP:
            return True
        current = current.__cause__ or current.__context__
    return False


@final
class ConnectionPool:
    """Up to `size` keep-alive connections for short requests; more requests wait their turn.

    Taking and returning a connection is O(1) (a free list), whatever the number waiting.
    Use it on one event loop.
    """

    def __init__(self, target: WireTarget, size: int) -> None:
        self._target = target
        self._size = size
        self._idle: list[Connection] = []
        self._slots: asyncio.Semaphore | None = None

    async def request(
        self,
        method: bytes,
        path: str,
        *,
        timeout: float,
        connect_timeout: float,
        json_body: bytes | None = None,
    ) -> WireResponse:
        """One request on a free connection, the whole of it within `timeout` seconds (waiting
        for a free connection not counted); raises `WireError` on a wire failure or timeout."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        async with self._slots:
            connection = self._idle.pop() if self._idle else Connection(self._target)
            try:
                async with asyncio.timeout(timeout):
                    return await connection.request(
                        method, path, connect_timeout=connect_timeout, json_body=json_body
                    )
            except TimeoutError:
                raise WireTimeout(f"ReadTimeout: no complete answer within {timeout} s") from None
            finally:
                # a failed request closed its connection; it reopens on its next use
                self._idle.append(connection)

    def close(self) -> None:
        """Close every idle connection."""
        for connection in self._idle:
            connection.close()


def is_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether a kept-alive connection can carry another request: neither closed by us nor
    (while idle) by the peer; sending into a connection the peer closed fails the request."""
    return not writer.is_closing() and not reader.at_eof()
