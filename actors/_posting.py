"""Posting a customer message exactly once, though the request carrying it may be cut.

A post whose request was reset, timed out or answered 5xx may or may not have been stored:
sending it again could make the agent answer it twice, giving up fails an ask for a fault the
system could ride out. Parlant keeps a customer message's `metadata` and returns it with the
event on every read, so each post carries a key there (`{"parlant_supervisor": {"post":
key}}`), and "did it land?" becomes a fact read from the session's own log.

One post moves between three states until it lands or nobody waits for it any more:

```
SENDING ──stored (201, its offset)──────────────────────────────────────────> posted
SENDING ──certainly not sent (connection refused, 429, 503)──> SENDING again, after a pause
SENDING ──fate unknown (reset, timeout, other 5xx, a malformed answer)──> UNCERTAIN
UNCERTAIN ──a read of the log, begun `grace` after the failure, holds the key──> posted there
UNCERTAIN ──that read does not hold it──> SENDING (same key)
UNCERTAIN ──the read failed──> UNCERTAIN, after a pause
any ──404, 401/403, 422──> failed (the server said no: sending again would not change it)
any ──nobody waits (it was closed, the supervisor stops)──> dropped
any ──the ask's deadline passed──> settled: not sent (nothing could land, or a read proves it
      absent), posted (a read finds it), or unknown (the read failed: `DeliveryUnknown`)
```

A request given up on (its deadline, a timeout) is aborted with a reset, never closed
gracefully: a graceful close leaves the kernel retransmitting the unsent request through a
partition, and Parlant storing it once the network heals, after a read proved it absent
(measured: 2 of 2 posts stored twice across a 45-s partition). So once its last request was
cut, what the log says after `grace` is final, and the ask is told the truth: "not sent" only
when that is proven.

Why the read proves absence. Parlant stores the event before it answers: a request that
reached the server and finished is in the log, whatever became of its answer. One that did
not finish is either lost (the connection broke before the server had it whole, the server
died) or still being handled. The read must therefore begin after any handling of the cut
request could have ended: `grace` seconds after the failure (2 s by default, where Parlant
stores a message in milliseconds). A cut request still in flight longer than that (a proxy
that forwards it late, a server stalled in mid-request) can land after the read and then be in
the log twice; that is the one case this cannot exclude. It is not hidden: the session's actor
sees every customer message, counts a key it meets at a second offset
(`duplicate_posts_total`, `session.duplicate_post`), and the drill fails on any.

A pause is the upstream's (while Parlant is down, a post waits for it to answer again, as the
polls do) and then a jittered, capped backoff; a post has no retry limit but its ask's.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

import httpx
import structlog
from parlant.client.core.api_error import ApiError
from parlant.client.types import Event

from actors._backoff import Backoff
from actors._errors import DeliveryUnknown
from actors._wire import WireConnectError, WireTlsError, plain_http_answered

__all__ = [
    "METADATA_NAMESPACE",
    "PostDropped",
    "PostExpired",
    "PostTransport",
    "key_of",
    "message_body",
    "post_exactly_once",
]

_log = structlog.get_logger("parlant_supervisor")

METADATA_NAMESPACE: Final = "parlant_supervisor"
"""The customer event's `metadata` entry that holds our key: `{"parlant_supervisor":
{"post": key}}` (other entries are the application's)."""

T = TypeVar("T")

_CERTAINLY_NOT_SENT: Final = frozenset({429, 503})
_PERMANENT_STATUSES: Final = frozenset({301, 302, 303, 307, 308, 400, 401, 403, 404, 409, 413, 422})


class PostDropped(Exception):
    """Nobody waits for the post any more; it is not sent again."""


class PostExpired(Exception):
    """The ask's deadline passed and the message is proven not stored: nothing sent could land
    (every request was refused, or none left), or a read of the log after the last was cut
    found it absent. It is not sent again."""


class PostTransport(Protocol):
    """The two requests a post needs, each tried once (`ParlantApi` implements them)."""

    async def send_customer_message(self, session_id: str, body: bytes) -> int:
        """Send the message's JSON body; the stored event's offset."""
        ...

    async def read_customer_messages(self, session_id: str, min_offset: int) -> list[Event]:
        """The customer messages at or after `min_offset`, without waiting, in one request."""
        ...


def message_body(text: str, key: str) -> bytes:
    """The customer message's JSON body, carrying `key` in its metadata."""
    return json.dumps(
        {
            "kind": "message",
            "source": "customer",
            "message": text,
            "metadata": {METADATA_NAMESPACE: {"post": key}},
        }
    ).encode()


def key_of(event: Event) -> str | None:
    """The key a customer message was posted with by this library, if any."""
    if event.kind != "message" or event.source != "customer":
        return None
    metadata: Any = event.metadata
    ours = metadata.get(METADATA_NAMESPACE) if isinstance(metadata, dict) else None
    key = ours.get("post") if isinstance(ours, dict) else None
    return key if isinstance(key, str) else None


def certainly_not_sent(error: Exception) -> bool:
    """Whether a failed request certainly had no effect: no connection was made, or the
    server refused it outright (429 Too Many Requests, 503 Service Unavailable)."""
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | WireConnectError):
        return True
    return isinstance(error, ApiError) and error.status_code in _CERTAINLY_NOT_SENT


def refused_for_good(error: Exception) -> bool:
    """Whether the server said no in a way that sending again would not change (a TLS
    handshake that fails included: the URL is wrong)."""
    if isinstance(error, WireTlsError) or plain_http_answered(error):
        return True
    return isinstance(error, ApiError) and error.status_code in _PERMANENT_STATUSES


def _found(events: Sequence[Event], key: str) -> int | None:
    return next((event.offset for event in events if key_of(event) == key), None)


async def post_exactly_once(
    transport: PostTransport,
    session_id: str,
    text: str,
    key: str,
    *,
    since: int,
    wanted: Callable[[], bool],
    maybe_sent: bool = False,
    grace: float,
    backoff: Backoff,
    rng: random.Random,
    now: Callable[[], float],
    until_up: Callable[[], Awaitable[None]],
    retried: Callable[[str], None] = lambda reason: None,
    unreachable: Callable[[], None] = lambda: None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    deadline: float | None = None,
    due: Callable[[], bool] = lambda: False,
    settle_read: float = 10.0,
) -> int:
    """Post `text` with `key` until it is stored once; its offset.

    Args:
        since: An offset no copy of it can be below (the session's next offset when it was
            asked): the log is read from there.
        wanted: Whether someone still waits for it; once not, `PostDropped`.
        maybe_sent: It may have been sent already (another process, now gone, was sending
            it): look in the log first.
        grace: Seconds after a failure before a read of the log can prove it absent.
        until_up: Waits while the upstream is down.
        now, sleep: The clock (monotonic seconds) and how to wait on it.
        retried: Told why each retry happens: `refused` (certainly not sent), `found` (its
            answer was lost but it is in the log), `absent` (proved absent: sent again).
        unreachable: Told when a request of it could not connect (the server is not there:
            the session's polls are to wait too, and the post waits with them).
        deadline: When its ask gives up (on `now`'s clock): no request outlives it (one in
            flight then is cut with a reset), and the post is settled: see `PostExpired`.
        due: Whether the ask's deadline has passed on the clock that decides it (the
            supervisor's, which tests inject): checked between requests, it settles the post
            as the deadline does.
        settle_read: Seconds the settling read of the log may take.

    Raises:
        PostDropped: Nobody waits for it any more.
        PostExpired: The deadline passed; the message is proven not stored.
        DeliveryUnknown: The deadline passed and the log could not be read to tell whether the
            message was stored (a request of it may have landed).
        Exception: The last failure, when the server said no for good (`refused_for_good`).
    """
    body = message_body(text, key)
    failed_at: float | None = now() if maybe_sent else None
    pauses = 0
    refusals = 0
    landed_maybe = maybe_sent  # a request of it may have reached Parlant

    def remaining() -> float | None:
        return None if deadline is None else deadline - now()

    async def bounded(request: Awaitable[T]) -> T:
        """The request, cut (its connection reset) at the deadline."""
        left = remaining()
        if left is None:
            return await request
        async with asyncio.timeout(max(0.0, left)):
            return await request

    def note(reason: str, error: Exception | None = None) -> None:
        nonlocal refusals
        retried(reason)
        if reason == "refused":
            refusals += 1
            if refusals > 1:
                return  # said once a post: an outage would say it for every pause
        detail = None if error is None else f"{type(error).__name__}: {error}"[:200]
        _log.info("session.post_retried", session_id=session_id, reason=reason, detail=detail)

    async def pause() -> None:
        nonlocal pauses
        await until_up()
        await sleep(backoff.delay(pauses, rng))
        pauses += 1

    while True:
        if not wanted():
            raise PostDropped(f"session {session_id}: nobody waits for the post any more")
        left = remaining()
        if (left is not None and left <= 0) or due():
            return await _settle(
                transport, session_id, key, since, landed_maybe, failed_at, grace, now, sleep,
                settle_read,
            )  # fmt: skip
        if failed_at is not None:
            early = failed_at + grace - now()
            if early > 0:
                await sleep(early if left is None else min(early, left))
                continue
            try:
                events = await bounded(transport.read_customer_messages(session_id, since))
            except TimeoutError:
                continue  # the deadline: settled above
            except Exception as error:
                if refused_for_good(error):
                    raise
                await pause()
                continue
            offset = _found(events, key)
            if offset is not None:
                note("found")
                return offset
            note("absent")
            failed_at = None
            landed_maybe = False  # every request of it so far is proven absent
        try:
            return await bounded(transport.send_customer_message(session_id, body))
        except TimeoutError:
            failed_at, landed_maybe = now(), True  # cut in flight at the deadline
            continue
        except Exception as error:
            if refused_for_good(error):
                raise
            if certainly_not_sent(error):
                note("refused", error)
                if isinstance(error, WireConnectError | httpx.ConnectError):
                    unreachable()
            else:
                failed_at, landed_maybe = now(), True
                _log.info(
                    "session.post_uncertain",
                    session_id=session_id,
                    detail=f"{type(error).__name__}: {error}"[:200],
                )
            await pause()


async def _settle(
    transport: PostTransport,
    session_id: str,
    key: str,
    since: int,
    landed_maybe: bool,
    failed_at: float | None,
    grace: float,
    now: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    settle_read: float,
) -> int:
    """The deadline passed: the message's offset if it was stored, else why not."""
    if not landed_maybe:
        raise PostExpired(
            f"session {session_id}: the message could not be posted before the deadline, and "
            "none of its requests can land: it was not sent"
        )
    if failed_at is not None and failed_at + grace > now():
        await sleep(failed_at + grace - now())  # the cut request's handling could end by then
    try:
        async with asyncio.timeout(settle_read):
            events = await transport.read_customer_messages(session_id, since)
    except Exception as error:
        if refused_for_good(error):
            raise  # the session is gone, or this client may not read it: that is the answer
        raise DeliveryUnknown(
            f"session {session_id}: the message's post was cut and its ask's deadline passed "
            f"before the log could be read ({type(error).__name__}): it may have been stored. "
            "Read the conversation before sending it again (or, if you gave the ask a "
            "post_key, ask again with it and maybe_sent=True: a stored copy is found, not "
            "posted twice)",
            session_id=session_id,
        ) from error
    offset = _found(events, key)
    if offset is None:
        raise PostExpired(
            f"session {session_id}: the message could not be posted before the deadline; its "
            "requests were cut and the log shows none of them stored: it was not sent"
        )
    return offset
