"""A fault-injecting HTTP proxy on 127.0.0.1, in front of the emulator or any Parlant URL.

It parses HTTP/1.1 on both sides with h11 (keep-alive connections carry many requests, and a
fault belongs to one request, not to one connection), forwards each request upstream on a
connection of its own per client connection, and, for the requests a rule or the random
"chaos" picks, injects a fault instead: a reset before or in the middle of the response, a
clean close without an answer, a hang, a delay, or a synthetic status (5xx, 429 with
Retry-After, a malformed 200). `refuse()` makes the port refuse connections until `accept()`.

Toxiproxy is the maintained tool for this, but it is a Go server that PyPI does not ship and it
works on byte streams, so it cannot aim a fault at "the next poll of session X" on a keep-alive
connection; mitmproxy can, but it is a heavy dependency for a test helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, TypeAlias, TypeVar, final
from urllib.parse import urlsplit

import h11

from actors.runtime import is_open
from supervisor._net import LoopThread, http_url, listening_socket

__all__ = [
    "Delay",
    "Drop",
    "Fault",
    "FaultProxy",
    "Hang",
    "ProxyRecord",
    "Reset",
    "ResetMidResponse",
    "Respond",
]

T = TypeVar("T")

_READ_SIZE: Final = 65536


def next_cycle(connection: h11.Connection) -> bool:
    """After an exchange: ready `connection` for the next one; False if it must be closed
    (the peer asked to, or the exchange did not complete)."""
    if connection.our_state is h11.DONE and connection.their_state is h11.DONE:
        connection.start_next_cycle()
        return True
    return False


H = TypeVar("H", h11.Request, h11.Response)


async def read_message(
    reader: asyncio.StreamReader, connection: h11.Connection, head_type: type[H]
) -> tuple[H | None, list[bytes]]:
    """One whole HTTP message from the peer: its head and its body in the pieces it came.

    The head is None when the peer closed the connection first; a peer that breaks the protocol
    (or closes mid-message) raises `h11.RemoteProtocolError`.
    """
    head: H | None = None
    chunks: list[bytes] = []
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await reader.read(_READ_SIZE))
        elif isinstance(event, head_type):
            head = event
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return head, chunks
        elif isinstance(event, h11.ConnectionClosed):
            return None, chunks


_BACKLOG: Final = 16384
_RECORDS: Final = 200_000


@final
@dataclass(frozen=True, slots=True)
class Reset:
    """Reset the connection (TCP RST) as soon as the request arrives; nothing is forwarded."""


@final
@dataclass(frozen=True, slots=True)
class ResetMidResponse:
    """Forward the request, send the response's head and half its body, then reset.

    The server did the work (a posted message exists, a poll's events were read) but the
    client never learns the outcome.
    """


@final
@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection cleanly without answering; nothing is forwarded."""


@final
@dataclass(frozen=True, slots=True)
class Hang:
    """Never answer: nothing is forwarded; the connection stays open until the client leaves."""


@final
@dataclass(frozen=True, slots=True)
class Delay:
    """Forward the request and hold its response back for `seconds`."""

    seconds: float


@final
@dataclass(frozen=True, slots=True)
class Respond:
    """Answer with `status` (and `body`) instead of forwarding the request.

    Example: `Respond(429, retry_after=2)`, `Respond(503)`, or a malformed 200 with
    `Respond(200, body=b"<html>maintenance</html>")`.
    """

    status: int
    body: bytes = b'{"detail": "injected by FaultProxy"}'
    retry_after: float | None = None


Fault: TypeAlias = Reset | ResetMidResponse | Drop | Hang | Delay | Respond
"""One fault, met by one request."""


def fault_name(fault: Fault) -> str:
    """A short label for counting faults: `reset`, `respond_503`, `delay`, ..."""
    if isinstance(fault, Respond):
        return f"respond_{fault.status}"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(fault).__name__).lower()


@dataclass(slots=True)
class _Rule:
    method: str | None
    path: re.Pattern[str] | None
    faults: deque[Fault]

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or self.path.search(path) is not None
        )


@dataclass(slots=True)
class _Chaos:
    rate: float
    faults: tuple[Fault, ...]
    rng: random.Random
    rule: _Rule
    left: int | None

    def draw(self, method: str, path: str) -> Fault | None:
        """A fault for this request, or None (the request is forwarded untouched)."""
        if self.left == 0 or not self.rule.matches(method, path):
            return None
        if self.rng.random() >= self.rate:
            return None
        if self.left is not None:
            self.left -= 1
        return self.rng.choice(self.faults)


@final
@dataclass(frozen=True, slots=True)
class ProxyRecord:
    """One request the proxy handled: when it ended (`time.monotonic()`), what it was, the fault
    it met (None: forwarded untouched) and the status the client got (None: no answer)."""

    at: float
    method: str
    path: str
    fault: str | None
    status: int | None


@dataclass(slots=True)
class _State:
    rules: list[_Rule] = field(default_factory=list)
    chaos: _Chaos | None = None
    injected: Counter[str] = field(default_factory=Counter)
    forwarded: int = 0
    in_flight: int = 0
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    records: deque[ProxyRecord] = field(default_factory=lambda: deque(maxlen=_RECORDS))


class _ClientGone(Exception):
    """The client closed its connection while its request was being served."""


class _UpstreamDown(Exception):
    """The upstream refused the connection: nothing was forwarded."""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _cancelled(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _response_head(status: int, headers: list[tuple[bytes, bytes]]) -> h11.Response:
    return h11.Response(status_code=status, headers=headers)


@final
class FaultProxy:
    """An HTTP/1.1 proxy on a free loopback port that injects faults into chosen requests.

    Faults are queued by `inject` for the next requests that match, or drawn at random by
    `chaos` with a seed; `refuse()` / `accept()` (or `with proxy.outage():`) make the port
    refuse connections. All methods may be called from any thread.

    Example:
        >>> with FaultProxy(server.url) as proxy:
        ...     proxy.inject(ResetMidResponse(), Respond(503), method="GET", path="/events")
        ...     sup = SessionSupervisor(proxy.url)
    """

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"FaultProxy forwards to an http:// URL, got {upstream!r}")
        self._upstream = (parts.hostname, parts.port or 80)
        self.host = host
        self._state = _State()
        self._thread = LoopThread("fault-proxy")
        self._socket = listening_socket(host, port, _BACKLOG)
        self.port: int = self._socket.getsockname()[1]
        self._server: asyncio.Server | None = self._thread.run(self._listen(self._socket))

    @property
    def url(self) -> str:
        """The base URL to give a Parlant client instead of the upstream's."""
        return http_url(self.host, self.port)

    # --- what to inject (any thread) --------------------------------------------------------

    def inject(self, *faults: Fault, method: str | None = None, path: str | None = None) -> None:
        """Queue `faults`, one each for the next requests that match.

        Args:
            faults: Met in order by successive matching requests.
            method: Match only this HTTP method (e.g. "GET" for polls, "POST" for messages).
            path: A regular expression searched in the request's path (without the query).
        """
        rule = _Rule(method, re.compile(path) if path is not None else None, deque(faults))
        self._thread.call(self._state.rules.append, rule)

    def chaos(
        self,
        rate: float,
        faults: Sequence[Fault],
        *,
        seed: int,
        limit: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """From now on, each matching request meets a fault drawn from `faults` with
        probability `rate` (seeded), until `limit` faults were injected or `calm()`."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {rate}")
        if not faults:
            raise ValueError("chaos needs at least one fault to draw from")
        rule = _Rule(method, re.compile(path) if path is not None else None, deque())
        chaos = _Chaos(rate, tuple(faults), random.Random(seed), rule, limit)
        self._thread.call(setattr, self._state, "chaos", chaos)

    def calm(self) -> None:
        """Stop the chaos and drop every queued fault not yet met."""

        def clear() -> None:
            self._state.chaos = None
            self._state.rules.clear()

        self._thread.call(clear)

    @property
    def pending(self) -> int:
        """Queued faults that no request has met yet."""
        return self._thread.call(lambda: sum(len(rule.faults) for rule in self._state.rules))

    @property
    def injected(self) -> Counter[str]:
        """Faults injected so far, by kind (`reset`, `hang`, `respond_503`, `refused`, ...)."""
        return self._thread.call(lambda: Counter(self._state.injected))

    def records(self) -> list[ProxyRecord]:
        """The requests handled so far (the latest 200,000), oldest first."""
        return self._thread.call(lambda: list(self._state.records))

    @property
    def forwarded(self) -> int:
        """Requests forwarded upstream so far (with or without a delay or a reset)."""
        return self._thread.call(lambda: self._state.forwarded)

    @property
    def in_flight(self) -> int:
        """Requests forwarded upstream and not answered yet (open long-polls among them)."""
        return self._thread.call(lambda: self._state.in_flight)

    # --- outages ------------------------------------------------------------------------

    def refuse(self) -> None:
        """Stop listening (new connections are refused) and reset every open connection."""
        self._thread.run(self._refuse())

    def accept(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            self._socket = listening_socket(self.host, self.port, _BACKLOG)
            self._server = self._thread.run(self._listen(self._socket))

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Refuse connections for the duration of the block."""
        self.refuse()
        try:
            yield
        finally:
            self.accept()

    def stop(self) -> None:
        """Close every connection and the listening socket, and join the proxy's thread."""
        if self._thread.alive:
            self._thread.run(self._refuse(count=False))
        self._thread.stop()
        self._socket.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- on the proxy's loop ------------------------------------------------------------

    async def _listen(self, sock: socket.socket) -> asyncio.Server:
        return await asyncio.start_server(self._serve, sock=sock, backlog=_BACKLOG)

    async def _refuse(self, *, count: bool = True) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if count:
            self._state.injected["refused"] += 1
        for writer in list(self._state.writers):
            _reset(writer)

    def _record(self, record: ProxyRecord) -> None:
        self._state.records.append(record)

    def _fault_for(self, method: str, path: str) -> Fault | None:
        state = self._state
        fault: Fault | None
        for rule in state.rules:
            if rule.faults and rule.matches(method, path):
                fault = rule.faults.popleft()
                break
        else:
            fault = state.chaos.draw(method, path) if state.chaos is not None else None
        state.rules = [rule for rule in state.rules if rule.faults]
        if fault is not None:
            state.injected[fault_name(fault)] += 1
        return fault

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._state.writers.add(writer)
        upstream = _Upstream(*self._upstream)
        try:
            await _Exchange(self, reader, writer, upstream).run()
        except (ConnectionError, _ClientGone, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            self._state.writers.discard(writer)
            upstream.close()
            writer.close()


@final
class _Upstream:
    """One connection to the upstream server, opened on first use and again after a close."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._h11 = h11.Connection(h11.CLIENT)

    async def send(self, request: h11.Request, body: bytes) -> h11.Response:
        """Send the request; return the response's head (read its body with `body`)."""
        if self._streams is not None and not is_open(*self._streams):
            self.close()
        if self._streams is None:
            try:
                self._streams = await asyncio.open_connection(*self._address)
            except OSError as error:
                raise _UpstreamDown(f"{type(error).__name__}: {error}") from error
            self._h11 = h11.Connection(h11.CLIENT)
        reader, writer = self._streams
        conn = self._h11
        writer.write(conn.send(request) or b"")
        if body:
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_SIZE))
            elif isinstance(event, h11.Response):
                return event
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("upstream closed the connection mid-response")

    async def body(self) -> AsyncIterator[bytes]:
        """The body of the response `send` returned, piece by piece as it arrives."""
        assert self._streams is not None
        reader, conn = self._streams[0], self._h11
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_SIZE))
            elif isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                if not next_cycle(conn):
                    self.close()
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("upstream closed the connection mid-response")

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


@final
class _Exchange:
    """One client connection: read each request, inject its fault or forward it."""

    def __init__(
        self,
        proxy: FaultProxy,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: _Upstream,
    ) -> None:
        self._proxy = proxy
        self._reader = reader
        self._writer = writer
        self._upstream = upstream
        self._h11 = h11.Connection(h11.SERVER)

    async def run(self) -> None:
        while True:
            received = await self._request()
            if received is None:
                return
            request, body = received
            method = request.method.decode()
            path = request.target.decode().split("?", 1)[0]
            fault = self._proxy._fault_for(method, path)
            status: int | None = None
            try:
                if isinstance(fault, Reset):
                    _reset(self._writer)
                    return
                if isinstance(fault, Drop):
                    return
                if isinstance(fault, Hang):
                    await self._until_client_leaves()
                    return
                if isinstance(fault, Respond):
                    await self._respond(fault)
                    status = fault.status
                else:
                    status = await self._forward(request, body, fault)
                    if status is None:
                        return
            finally:
                name = fault_name(fault) if fault is not None else None
                self._proxy._record(ProxyRecord(time.monotonic(), method, path, name, status))
            if not next_cycle(self._h11):
                return

    async def _request(self) -> tuple[h11.Request, bytes] | None:
        request, body = await read_message(self._reader, self._h11, h11.Request)
        return None if request is None else (request, b"".join(body))

    async def _until_client_leaves(self) -> None:
        while await self._reader.read(_READ_SIZE):
            pass

    async def _while_client_stays(self, work: Coroutine[Any, Any, T]) -> T:
        """The result of `work`; raise _ClientGone (and cancel it) if the client leaves first."""
        waiting = asyncio.ensure_future(work)
        leaving = asyncio.ensure_future(self._until_client_leaves())
        try:
            await asyncio.wait([waiting, leaving], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancelled(leaving)  # the reader is free again before the next request
        if not waiting.done():
            await _cancelled(waiting)
            raise _ClientGone
        return waiting.result()

    async def _forward(self, request: h11.Request, body: bytes, fault: Fault | None) -> int | None:
        """Forward the request and relay (or break) its response: the status the client got,
        or None if the connection ended without a whole answer. An event stream is relayed as
        it arrives (a `ResetMidResponse` then breaks it after its first piece); any other
        response is read whole first."""
        state = self._proxy._state
        state.forwarded += 1
        state.in_flight += 1
        try:
            head = await self._while_client_stays(self._upstream.send(request, body))
            chunks = (
                []
                if _is_event_stream(head)
                else await self._while_client_stays(_collect(self._upstream.body()))
            )
        except _UpstreamDown:
            # nothing reached the upstream: say so the way Envoy does ("upstream connect
            # error"), so that a client may safely send the request again
            await self._respond(Respond(503, body=b'{"detail": "upstream connect error"}'))
            return 503
        except (OSError, h11.ProtocolError) as error:
            self._upstream.close()
            detail = f'{{"detail": "bad gateway: {type(error).__name__}"}}'.encode()
            await self._respond(Respond(502, body=detail))
            return 502
        finally:
            state.in_flight -= 1
        if isinstance(fault, Delay):
            await self._while_client_stays(asyncio.sleep(fault.seconds))
        headers = [(name, value) for name, value in head.headers if name != b"connection"]
        if _is_event_stream(head):
            return await self._relay(head, headers, cut=isinstance(fault, ResetMidResponse))
        data = b"".join(chunks)
        if isinstance(fault, ResetMidResponse):
            framed = [
                (n, v) for n, v in headers if n not in (b"content-length", b"transfer-encoding")
            ]
            framed.append((b"content-length", str(len(data)).encode()))
            self._writer.write(self._h11.send(_response_head(head.status_code, framed)) or b"")
            self._writer.write(self._h11.send(h11.Data(data=data[: len(data) // 2])) or b"")
            await self._writer.drain()
            _reset(self._writer)
            return None
        self._writer.write(self._h11.send(_response_head(head.status_code, headers)) or b"")
        if data:
            self._writer.write(self._h11.send(h11.Data(data=data)) or b"")
        self._writer.write(self._h11.send(h11.EndOfMessage()) or b"")
        await self._writer.drain()
        return int(head.status_code)

    async def _relay(
        self, head: h11.Response, headers: list[tuple[bytes, bytes]], *, cut: bool
    ) -> int | None:
        """Relay an event stream piece by piece, as it arrives (`cut`: reset the connection
        after its first piece)."""
        self._writer.write(self._h11.send(_response_head(head.status_code, headers)) or b"")
        await self._writer.drain()
        pieces = aiter(self._upstream.body())
        try:
            while (piece := await self._while_client_stays(anext(pieces, None))) is not None:
                self._writer.write(self._h11.send(h11.Data(data=piece)) or b"")
                await self._writer.drain()
                if cut:
                    _reset(self._writer)
                    self._upstream.close()
                    return None
        except (OSError, h11.ProtocolError):
            self._upstream.close()
            _reset(self._writer)
            return None
        self._writer.write(self._h11.send(h11.EndOfMessage()) or b"")
        await self._writer.drain()
        return int(head.status_code)

    async def _respond(self, fault: Respond) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(fault.body)).encode()),
        ]
        if fault.retry_after is not None:
            headers.append((b"retry-after", f"{fault.retry_after:g}".encode()))
        self._writer.write(self._h11.send(_response_head(fault.status, headers)) or b"")
        self._writer.write(self._h11.send(h11.Data(data=fault.body)) or b"")
        self._writer.write(self._h11.send(h11.EndOfMessage()) or b"")
        await self._writer.drain()


def _is_event_stream(head: h11.Response) -> bool:
    return any(
        name == b"content-type" and value.startswith(b"text/event-stream")
        for name, value in head.headers
    )


async def _collect(pieces: AsyncIterator[bytes]) -> list[bytes]:
    return [piece async for piece in pieces]
