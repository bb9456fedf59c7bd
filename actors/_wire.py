"""One session's long-poll connection: HTTP/1.1 (h11) on an asyncio stream, kept alive.

A long-poll is one GET that waits, answered with a small JSON body or a 504; what it needs is a
connection of its own, reused poll after poll, and a cancel that costs nothing. httpx gives that
through a pool of one, at the price of its request and response models, anyio task groups and
cancel scopes on every request, and a client object per session: py-spy showed that machinery to
be most of the I/O thread's work when thousands of sessions connect, re-poll and stop. h11 is
the parser httpcore itself uses.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Final, TypeVar, final
from urllib.parse import urlsplit

import h11

__all__ = [
    "PollConnection",
    "WireError",
    "WireResponse",
    "WireTarget",
    "is_open",
    "next_cycle",
    "read_message",
]

_READ_SIZE: Final = 65_536


class WireError(Exception):
    """The request failed on the wire (refused, reset, closed early, unparseable)."""


@final
@dataclass(frozen=True, slots=True)
class WireTarget:
    """Where the polls go: parsed once from the base URL, shared by every connection."""

    host: str
    port: int
    path_prefix: str
    host_header: bytes
    ssl_context: ssl.SSLContext | None
    headers: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def of(cls, base_url: str, headers: dict[str, str], ssl_context: ssl.SSLContext) -> WireTarget:
        parts = urlsplit(base_url)
        secure = parts.scheme == "https"
        host = parts.hostname or "localhost"
        port = parts.port or (443 if secure else 80)
        host_header = parts.netloc.rpartition("@")[2]
        return cls(
            host=host,
            port=port,
            path_prefix=parts.path.rstrip("/"),
            host_header=host_header.encode("idna"),
            ssl_context=ssl_context if secure else None,
            headers=tuple(
                (name.lower().encode(), value.encode()) for name, value in headers.items()
            ),
        )


@final
@dataclass(frozen=True, slots=True)
class WireResponse:
    """A complete response."""

    status: int
    reason: str
    headers: dict[str, str]
    content: bytes


@final
class PollConnection:
    """A keep-alive HTTP/1.1 connection for one session's polls, opened on first use.

    One request at a time. A request that fails, times out or is cancelled closes the
    connection (its state is unknown); the next one opens a new one.
    """

    def __init__(self, target: WireTarget) -> None:
        self._target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11: h11.Connection | None = None

    async def get(self, path: str, *, connect_timeout: float) -> WireResponse:
        """GET `path` (below the base URL's path); raises `WireError` on a wire failure.

        The caller bounds the whole request (`asyncio.timeout`); on any exit other than a
        complete response the connection is closed.
        """
        try:
            response = await self._exchange(path, connect_timeout)
        except BaseException:
            self.close()
            raise
        return response

    def close(self) -> None:
        """Close the connection now (no-op when none is open)."""
        writer, self._writer, self._reader, self._h11 = self._writer, None, None, None
        if writer is not None:
            writer.close()

    async def _exchange(self, path: str, connect_timeout: float) -> WireResponse:
        target = self._target
        reader, writer, connection = self._reader, self._writer, self._h11
        if reader is None or writer is None or connection is None or not is_open(reader, writer):
            self.close()
            reader, writer = await _connect(target, connect_timeout)
            connection = h11.Connection(h11.CLIENT)
            self._reader, self._writer, self._h11 = reader, writer, connection
        request = h11.Request(
            method="GET",
            target=(target.path_prefix + path).encode(),
            headers=[(b"host", target.host_header), *target.headers],
        )
        try:
            writer.write(connection.send(request) + connection.send(h11.EndOfMessage()))
            head, body = await read_message(reader, connection, h11.Response)
        except (OSError, h11.ProtocolError) as error:
            raise WireError(f"{type(error).__name__}: {error}") from error
        if head is None:
            raise WireError("RemoteProtocolError: the server closed the connection")
        if not next_cycle(connection):
            self.close()
        return WireResponse(
            status=head.status_code,
            reason=head.reason.decode(errors="replace"),
            headers={name.decode(): value.decode(errors="replace") for name, value in head.headers},
            content=b"".join(body),
        )


async def _connect(
    target: WireTarget, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(
                target.host,
                target.port,
                ssl=target.ssl_context,
                server_hostname=target.host if target.ssl_context else None,
            )
    except TimeoutError:
        raise WireError(f"ConnectTimeout: no connection within {timeout} s") from None
    except OSError as error:
        raise WireError(f"ConnectError: {error}") from error


def is_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether a kept-alive connection can carry another request: neither closed by us nor
    (while idle) by the peer; sending into a connection the peer closed fails the request."""
    return not writer.is_closing() and not reader.at_eof()


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
