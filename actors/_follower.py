"""Following streamed messages as Parlant writes them, on the one I/O loop.

Parlant writes a streamed message once, at its first chunk, then updates it in place at the
same offset until its `chunks` end with `null`: a long-poll sees it once, partial. Its live
text comes from `GET /sessions/{id}/events/{event_id}?sse=true`, which sends the whole event
each time its chunks grow (the server re-checks every 0.1 s) and closes at the terminator, or
after `wait_for_data` seconds with nothing new (docs/PARLANT.md, measured on 3.3.2). Parlant's
production policy refuses `read_event` (403): there the message is re-read from the log
instead (`list_events(min_offset=<its offset>, wait_for_data=0)`) at a bounded interval.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import random
from collections.abc import Callable, Coroutine, Mapping
from typing import Final, final
from urllib.parse import quote

import pydantic
import structlog
from parlant.client.core.api_error import ApiError
from parlant.client.types import Event

from actors._backoff import Backoff
from actors._errors import SupervisorError
from actors._events import is_incomplete, parse_event, stream_size
from actors._io import IOLoop
from actors._messages import (
    CheckMessage,
    FollowEnded,
    FollowMessage,
    Message,
    MessageChecked,
    MessageUpdated,
)
from actors._parlant import ParlantApi
from actors._wire import CONNECT_TIMEOUT, Connection, SSEDecoder, WireError, WireTarget

__all__ = ["Follower"]

_log = structlog.get_logger("parlant_supervisor")

_EMPTY_ANSWERS: Final = 3
"""Answers in a row without a single event after which a follow ends (`FollowEnded`: the core
then reads the message from the log): Parlant answers a `read_event` for an event it does not
have with a 200 whose body it breaks off."""


class _End(enum.Enum):
    """How one attempt to follow a message ended."""

    COMPLETE = "complete"  # the terminated message was told
    QUIET = "quiet"  # Parlant wrote nothing new for wait_for_data
    EMPTY = "empty"  # not one event came: the event may not exist


_GONE: Final = frozenset({404, 410})


class _Refused(Exception):
    """Parlant refuses `read_event` (403): its production policy."""


@final
class Follower:
    """Runs `FollowMessage` and `CheckMessage` for every session, on the I/O loop. `follow`,
    `check` and `release` may be called from any thread.

    Guarantees: a follow tells `MessageUpdated` only for a snapshot newer than the last it told
    (more chunks), and ends having told the terminated message, or `FollowEnded` (Parlant wrote
    nothing new for `wait_for_data`, or does not have the event); a check tells exactly one
    `MessageChecked`; a released session's follows and checks tell nothing more. Transient
    failures (connection refused or cut, 429, 5xx) are retried with `backoff` for as long as the
    session lives; a cut stream is opened again (it sends the whole event: nothing is missed).
    """

    def __init__(
        self,
        io: IOLoop,
        api: ParlantApi,
        *,
        headers: Mapping[str, str] | None = None,
        wait_for_data: int,
        timeout_margin: float,
        reread_interval: float,
        backoff: Backoff,
        max_body: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        self._io = io
        self._api = api
        self._target = WireTarget.of(api.base_url, dict(headers or {}), max_body)
        self._wait_for_data = wait_for_data
        self._timeout_margin = timeout_margin
        self._reread_interval = reread_interval
        self._backoff = backoff
        self._rng = rng or random.Random()
        self._read_event_refused = False  # learned once, for the whole upstream
        # per session: each follow ("follow", event id) and check ("check", event id) running
        self._tasks: dict[str, dict[tuple[str, str], asyncio.Task[None]]] = {}
        self._owners: dict[str, str] = {}
        self._shut = False

    def follow(
        self, session_id: str, owner: str, follow: FollowMessage, tell: Callable[[Message], None]
    ) -> None:
        """Follow a streamed message on behalf of actor `owner`; outcomes go to `tell`."""
        if not self._shut:
            work = functools.partial(self._follow, session_id, follow, tell)
            self._io.call_soon(self._start, session_id, owner, ("follow", follow.event_id), work)

    def check(
        self, session_id: str, owner: str, check: CheckMessage, tell: Callable[[Message], None]
    ) -> None:
        """Re-read a message once from the log; `MessageChecked` goes to `tell`."""
        if not self._shut:
            work = functools.partial(self._check, session_id, check, tell)
            self._io.call_soon(self._start, session_id, owner, ("check", check.event_id), work)

    def release(self, session_id: str, owner: str | None, event_id: str | None = None) -> None:
        """Cancel the follow and check of message `event_id` (None: of every message of the
        session), if `owner` (None: anyone) owns the session.

        A crashed actor's release can arrive after its successor's first follow: ownership
        keeps it from cancelling the successor's.
        """
        if not self._shut:
            self._io.call_soon(self._release, session_id, owner, event_id)

    def shut(self) -> None:
        """Stop for good, every session at once (a whole supervisor's stop): one pass on the
        I/O loop; `follow`, `check` and `release` are dropped from now on, where they are
        called (10,000 retiring sessions would otherwise queue 10,000 releases)."""
        self._shut = True
        self._io.call_soon(self._release_all)

    async def aclose(self) -> None:
        """Cancel everything (on the I/O loop)."""
        self._release_all()

    # --- on the I/O loop ------------------------------------------------------------------

    def _release_all(self) -> None:
        for session_id in list(self._tasks):
            self._release(session_id, None)

    def _start(
        self,
        session_id: str,
        owner: str,
        key: tuple[str, str],
        work: Callable[[], Coroutine[None, None, None]],
    ) -> None:
        if self._owners.get(session_id, owner) != owner:
            self._release(session_id, None)  # a successor took over: the predecessor's go
        self._owners[session_id] = owner
        tasks = self._tasks.setdefault(session_id, {})
        running = tasks.pop(key, None)
        if running is not None:
            running.cancel()
        task = tasks[key] = self._io.loop.create_task(work())
        task.add_done_callback(
            lambda done: tasks.pop(key, None) if tasks.get(key) is done else None
        )

    def _release(self, session_id: str, owner: str | None, event_id: str | None = None) -> None:
        if owner is not None and self._owners.get(session_id, owner) != owner:
            return
        tasks = self._tasks.get(session_id, {})
        for key in [key for key in tasks if event_id is None or key[1] == event_id]:
            tasks.pop(key).cancel()
        if event_id is None:
            self._owners.pop(session_id, None)
            self._tasks.pop(session_id, None)

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(self._backoff.delay(attempt, self._rng))

    async def _follow(
        self, session_id: str, follow: FollowMessage, tell: Callable[[Message], None]
    ) -> None:
        try:
            await self._follow_until_done(session_id, follow, tell)
        except Exception:  # a bug here must not leave the message waiting: the log decides
            _log.exception("session.follow_crashed", session_id=session_id)
            tell(FollowEnded(follow.event_id))

    async def _follow_until_done(
        self, session_id: str, follow: FollowMessage, tell: Callable[[Message], None]
    ) -> None:
        progress = _Progress(tell)
        failures = empty = 0
        while True:
            told_before = progress.told
            try:
                if self._read_event_refused:
                    end = await self._reread(session_id, follow, progress)
                else:
                    end = await self._stream(session_id, follow, progress)
            except _Refused:
                self._read_event_refused = True
                _log.warning("session.read_event_refused", session_id=session_id)
                continue
            except (
                WireError,
                TimeoutError,
                ApiError,
                SupervisorError,
                pydantic.ValidationError,
            ) as error:
                if isinstance(error, ApiError) and error.status_code in _GONE:
                    break
                # refused, cut, 429, 5xx: Parlant is there or will be; the stream is retried
                # for as long as its session lives (like its polls)
                failures = 0 if progress.told > told_before else failures + 1
                _log.info("session.follow_failed", session_id=session_id, error=_describe(error))
                await self._pause(failures)
                continue
            if end is _End.COMPLETE:
                return
            if end is _End.QUIET:
                break
            empty += 1
            if empty >= _EMPTY_ANSWERS:
                break
            await self._pause(empty)
        tell(FollowEnded(follow.event_id))

    async def _stream(self, session_id: str, follow: FollowMessage, progress: _Progress) -> _End:
        """One `read_event?sse=true`. A stream cut before its first event counts as EMPTY (as
        Parlant answers for an event it does not have); one cut later raises `WireError`."""
        path = (
            f"/sessions/{quote(session_id, safe='')}/events/{quote(follow.event_id, safe='')}"
            f"?sse=true&wait_for_data={self._wait_for_data}"
        )
        connection = Connection(self._target)
        got_data = False
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT + self._timeout_margin):
                response = await connection.stream(b"GET", path, connect_timeout=CONNECT_TIMEOUT)
            if response.status == 403:
                raise _Refused
            if response.status != 200:
                raise ApiError(status_code=response.status, body=response.reason)
            decoder = SSEDecoder(self._target.max_body)
            pieces = aiter(response.body())
            while True:
                async with asyncio.timeout(self._wait_for_data + self._timeout_margin):
                    piece = await anext(pieces, None)
                if piece is None:
                    return _End.QUIET if got_data else _End.EMPTY
                for data in decoder.feed(piece):
                    got_data = True
                    if progress.saw(parse_event(data)):
                        return _End.COMPLETE
        except WireError:
            if got_data:
                raise
            return _End.EMPTY
        finally:
            connection.close()

    async def _reread(self, session_id: str, follow: FollowMessage, progress: _Progress) -> _End:
        """Re-read the message every `reread_interval` s, as `_stream` would follow it: QUIET
        when nothing new came for `wait_for_data` s, EMPTY when it is not in the log."""
        loop = asyncio.get_running_loop()
        news_at = loop.time()
        while loop.time() - news_at < self._wait_for_data:
            told_before = progress.told
            event = await self._read(session_id, follow.event_id, follow.offset)
            if event is None:
                return _End.EMPTY
            if progress.saw(event):
                return _End.COMPLETE
            if progress.told > told_before:
                news_at = loop.time()
            await asyncio.sleep(self._reread_interval)
        return _End.QUIET

    async def _read(self, session_id: str, event_id: str, offset: int) -> Event | None:
        """The event as the log holds it now (None: not there)."""
        events = await self._api.read_events(session_id, offset)
        return next((event for event in events if event.id == event_id), None)

    async def _check(
        self, session_id: str, check: CheckMessage, tell: Callable[[Message], None]
    ) -> None:
        attempt = 0
        while True:
            try:
                event = await self._read(session_id, check.event_id, check.offset)
            except ApiError as error:
                if error.status_code not in _GONE:
                    await self._pause(attempt)
                    attempt += 1
                    continue
                event = None
            except Exception as error:  # the supervisor's errors, the wire's: try again
                _log.info("session.check_failed", session_id=session_id, error=_describe(error))
                await self._pause(attempt)
                attempt += 1
                continue
            tell(MessageChecked(check.event_id, event))
            return


def _describe(error: Exception) -> str:
    """What went wrong, for a log line: a status, never a body (Parlant's 403 echoes the
    request's headers, credentials included)."""
    if isinstance(error, ApiError):
        return f"HTTP {error.status_code}"
    return f"{type(error).__name__}: {error}"


@final
class _Progress:
    """How far a follow has told a message: the chunks of the newest snapshot it told."""

    def __init__(self, tell: Callable[[Message], None]) -> None:
        self.told = 0
        self._tell = tell

    def saw(self, event: Event) -> bool:
        """Tell `event` if it is newer than what was told; True if it is the whole message."""
        size = stream_size(event)
        if size > self.told:
            self.told = size
            self._tell(MessageUpdated(event))
        return not is_incomplete(event)
