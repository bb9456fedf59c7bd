"""The backend's HTTP limits: what a hostile client cannot make it read, hold or wait for.

Two layers, each where it can be enforced:

- The app (any ASGI server): `BodyLimit` counts a request's body as it arrives and answers 413
  at the first byte past `HttpLimits.max_body` (a declared Content-Length past it is refused
  before a byte is read), and 408 when the body has not arrived within `body_timeout` (a
  Content-Length larger than what is sent).
- The server (uvicorn, `harden_server`): its pure-Python h11 implementation, which caps the
  request head (`max_header_bytes`, which also bounds how many headers fit) where httptools sets
  no limit, plus `GuardedH11Protocol`, a deadline on reading each request's head (uvicorn has
  none: a client trickling its headers held a connection for ever), and uvicorn's own
  concurrency limit (503 past it) and keep-alive timeout.

Why uvicorn's h11 and not Granian or Hypercorn: the limits above are enforced with one small
subclass on the server the library already runs (and tests) everywhere; Hypercorn's
`read_timeout` restarts at every byte, so it does not stop a trickle; Granian has a header read
timeout but runs the app in worker processes it spawns itself, which the backend's signal
handling and its tests' in-process servers would both have to be rebuilt around. h11's cost is
throughput (below httptools'), which a chat backend waiting seconds on an LLM does not feel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Final, final

import uvicorn
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["BodyLimit", "GuardedH11Protocol", "HttpLimits", "TokenRedaction", "harden_server"]

_BODYLESS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_HEADER_TIMEOUT: Final = 10.0


@final
@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one request may send, and how long it may take to send it.

    Attributes:
        max_body: Bytes of a request body (413 past it, at once).
        body_timeout: Seconds a request's body may take to arrive once its head has (408).
        max_header_bytes: Bytes of a request's head: request line and every header (the
            server answers 400 and closes past it).
        header_timeout: Seconds a request's head may take to arrive, from the connection's
            accept (and, on a kept-alive connection, from the next request's first byte); past
            it the connection is closed.
        max_concurrency: Connections and requests in flight past which new requests get 503.
            It counts connections still sending their head: one client holding many sockets
            can use it up for everyone, so cap connections per client address in the proxy in
            front (nginx `limit_conn`), as for any Python server.
        keep_alive: Seconds an idle kept-alive connection stays open.
        trusted_proxies: Addresses or networks of the proxies whose `X-Forwarded-For` and
            `X-Forwarded-Proto` are believed; from any other peer they are ignored. Empty: the
            client is always the connection's peer. (`*` trusts everyone, so anyone can name
            any client: never on a port the internet reaches.)
    """

    max_body: int = 1024 * 1024
    body_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    header_timeout: float = _HEADER_TIMEOUT
    max_concurrency: int = 1_000
    keep_alive: int = 5
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_body", "max_header_bytes", "max_concurrency", "keep_alive"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("body_timeout", "header_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


async def _refuse(send: Send, status: int, detail: str, receive: Receive | None = None) -> None:
    """An ErrorBody answer that closes the connection.

    Given `receive`, what the client still sends of its body is read and dropped for up to
    `_LINGER` seconds before the answer ends (the connection closes then): a socket closed with
    unread data in it resets the connection, which can destroy the answer before the client
    reads it (nginx's lingering close, for the same reason).
    """
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": receive is not None})
    if receive is None:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_LINGER):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body"):
                    break
    await send({"type": "http.response.body", "body": b""})


_LINGER: Final = 1.0


@final
class BodyLimit:
    """ASGI middleware: reads a request's body itself, counting it as it arrives, and hands the
    app the whole body only when it is within the limit and arrived in time."""

    def __init__(self, app: ASGIApp, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODYLESS:
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        too_large = f"the body is larger than {limit} bytes"
        if declared is not None and "transfer-encoding" in headers:
            # two framings: a proxy in front that honours the other one reads a different
            # request (smuggling). RFC 9112 6.1: refuse it or ignore the length, and close.
            detail = "Content-Length and Transfer-Encoding together: send one of them"
            await _refuse(send, 400, detail, receive)
            return
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            await _refuse(send, 400, "Content-Length is not a number", receive)
            return
        if declared is not None and int(declared) > limit:
            await _refuse(send, 413, too_large, receive)
            return
        body = bytearray()
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                while len(body) <= limit:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            detail = f"the body did not arrive within {self.limits.body_timeout:g} s"
            await _refuse(send, 408, detail)
            return
        if len(body) > limit:
            body.clear()
            await _refuse(send, 413, too_large, receive)
            return
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body read already, then what the connection says next (a
    disconnect, which streaming responses listen for)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request's head.

    The deadline starts when a connection is accepted (and at a kept-alive connection's next
    request's first byte) and ends when the head is complete; past it the connection is closed.
    Its length is the server config's `header_timeout` (set by `harden_server`).
    """

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._header_timeout: float = getattr(config, "header_timeout", _HEADER_TIMEOUT)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._arm()  # the head of a new request starts (a kept-alive connection's next)
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # its head is complete: the app has it

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self._header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def harden_server(config: uvicorn.Config, limits: HttpLimits) -> None:
    """Make a uvicorn server enforce `limits` on its side (before `uvicorn.Server(config)`)."""
    config.http = GuardedH11Protocol
    config.h11_max_incomplete_event_size = limits.max_header_bytes
    config.limit_concurrency = limits.max_concurrency
    config.timeout_keep_alive = limits.keep_alive
    config.header_timeout = limits.header_timeout  # type: ignore[attr-defined]
    config.proxy_headers = True
    config.forwarded_allow_ips = list(limits.trusted_proxies)


_TOKEN_IN_PATH: Final = re.compile(r"(/api/sessions/|/api/chat/(?!stream(?:[?#\s]|$)))[^/?#\s]+")
"""A conversation's token, or a chat's id (`/api/chat/<id>/stream`), in a request's path."""


@final
class TokenRedaction(logging.Filter):
    """A logging filter that writes `/api/sessions/<token>` for the conversation token in a
    request's path (`/api/chat/<token>/stream` for a chat's id): the token is the
    conversation's only credential, and access logs are read by more people, and kept longer,
    than the conversations they record.

    The backend puts it on uvicorn's access logger (`uvicorn.access`) while it runs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_PATH.sub(r"\1<token>", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        elif isinstance(record.msg, str):
            record.msg = _TOKEN_IN_PATH.sub(r"\1<token>", record.msg)
        return True
