"""The backend's stream protocol: one turn as typed Server-Sent Events, resumable.

```
event: session      data: {"session_id": <token>}
event: status       data: {"status": "acknowledged" | "processing" | "typing" | "ready" | ...,
                           "stage"?: "Interpreting" | "completed" | ...}
event: text-start   data: {"id": "msg-7", "preamble": false}
event: text-delta   data: {"id": "msg-7", "delta": " Tell"}
event: text-end     data: {"id": "msg-7", "text": "echo: Tell me about CKD stage 3"}
event: end          data: {"session_id": <token>}
event: error        data: {"status": 502, "detail": "..."}
```

After the Vercel AI SDK's UI message stream (text-start / text-delta / text-end around each
message) and OpenAI's Responses events (typed, one name per kind). Only these fields leave the
backend: no Parlant ids, participants, matched guidelines or journeys, tool data or tracebacks.
Every event has an `id:`, ordered within its turn; a client that reconnects with
`Last-Event-ID` resumes after the last event it got, nothing twice (`TurnLog`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final, final

from parlant.client.types import Event

from actors import MessageDelta
from actors.events import StreamItem, agent_status, is_message, is_preamble, message_text

__all__ = ["Frame", "Position", "TurnFramer", "TurnLog", "TurnLogs"]


@final
@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where an event stands in its turn's stream: the turn (`origin`, the offset of its first
    event), the Parlant offset it is about, and a part that orders the events of one offset
    (a message's start, its text so far in characters, its end). Sent as the SSE `id:`."""

    origin: int
    offset: int
    part: int

    def id(self) -> str:
        """The SSE id (opaque to clients)."""
        return f"{self.origin}-{self.offset}-{self.part}"

    @classmethod
    def parse(cls, text: str) -> Position | None:
        """The position an SSE id names (None: not one of ours)."""
        pieces = text.strip().split("-")
        if len(pieces) != 3 or not all(
            p.isascii() and p.isdigit() and len(p) <= 18 for p in pieces
        ):
            return None
        origin, offset, part = (int(p) for p in pieces)
        return cls(origin, offset, part)


@final
@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE event: its position (`id:`), name (`event:`) and JSON data."""

    position: Position
    event: str
    data: dict[str, Any]


@final
class TurnFramer:
    """Turns one turn's stream items (events and message deltas) into frames."""

    def __init__(self, token: str, origin: int) -> None:
        self._token = token
        self._origin = origin
        self._last = Position(origin, origin, 0)
        self._texts: dict[int, str] = {}  # message offset -> its text sent so far

    def start(self) -> Frame:
        """The first frame: which conversation this is."""
        return self._frame(self._origin, 0, "session", {"session_id": self._token})

    def frames(self, item: StreamItem) -> list[Frame]:
        """What `item` adds to the stream."""
        if isinstance(item, MessageDelta):
            return self._text(item.offset, item.text, item.preamble, done=False)
        if is_message(item):
            if item.source == "customer":
                return []
            return self._text(item.offset, message_text(item), is_preamble(item), done=True)
        status = agent_status(item)
        if status is None:
            return []  # tool, custom and other events stay inside the backend
        data: dict[str, Any] = {"status": status}
        stage = _stage(item)
        if stage is not None:
            data["stage"] = stage
        return [self._frame(item.offset, 1, "status", data)]

    def end(self) -> Frame:
        """The last frame of a turn that completed (placed after its last event)."""
        return self._frame(self._last.offset + 1, 0, "end", {"session_id": self._token})

    def error(self, status: int, detail: str) -> Frame:
        """The last frame of a turn that failed (placed after its last event)."""
        data = {"status": status, "detail": detail}
        return self._frame(self._last.offset + 1, 0, "error", data)

    def _text(self, offset: int, text: str, preamble: bool, *, done: bool) -> list[Frame]:
        message_id = f"msg-{offset}"
        frames: list[Frame] = []
        sent = self._texts.get(offset)
        if sent is None:
            sent = self._texts[offset] = ""
            frames.append(
                self._frame(offset, 1, "text-start", {"id": message_id, "preamble": preamble})
            )
        if len(text) > len(sent) and text.startswith(sent):
            delta = {"id": message_id, "delta": text[len(sent) :]}
            frames.append(self._frame(offset, 1 + len(text), "text-delta", delta))
            self._texts[offset] = text
        if done:
            end = {"id": message_id, "text": text}
            frames.append(self._frame(offset, 2 + len(text), "text-end", end))
        return frames

    def _frame(self, offset: int, part: int, event: str, data: dict[str, Any]) -> Frame:
        position = Position(self._origin, offset, part)
        self._last = max(self._last, position)
        return Frame(position, event, data)


def _stage(event: Event) -> str | None:
    inner = event.data.get("data") if isinstance(event.data, dict) else None
    stage = inner.get("stage") if isinstance(inner, dict) else None
    return stage if isinstance(stage, str) else None


@final
class TurnLog:
    """The frames of a conversation's latest streamed turn, kept while it runs and for a while
    after, so that a client whose connection broke resumes where it was (`after`)."""

    def __init__(self, origin: int, now: Callable[[], float] = time.monotonic) -> None:
        self.origin = origin
        self.finished_at: float | None = None
        self.size = 0
        """About how many bytes its frames hold (what they send, plus each frame's own)."""
        self._now = now
        self._frames: list[Frame] = []
        self._changed = asyncio.Event()

    def append(self, frame: Frame) -> None:
        """Add the next frame (positions only grow)."""
        self._frames.append(frame)
        self.size += _FRAME_OVERHEAD + sum(len(str(value)) for value in frame.data.values())
        self._wake()

    def finish(self) -> None:
        """No more frames: the turn ended (or its producer stopped)."""
        if self.finished_at is None:
            self.finished_at = self._now()
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def has_after(self, position: Position | None) -> bool:
        """A frame after `position` is in the log (any frame, with None)."""
        if position is None:
            return bool(self._frames)
        return bool(self._frames) and self._frames[-1].position > position

    async def after(self, position: Position | None) -> AsyncIterator[Frame]:
        """Every frame after `position` (all with None), then each new one as it comes, until
        the log is finished."""
        index = 0
        if position is not None:
            index = next(
                (i for i, frame in enumerate(self._frames) if frame.position > position),
                len(self._frames),
            )
        while True:
            while index < len(self._frames):
                yield self._frames[index]
                index += 1
            if self.finished_at is not None:
                return
            await self._changed.wait()


_FRAME_OVERHEAD: Final = 360
"""Bytes a frame costs besides its data's text (the Frame, its Position, its dict; measured
with tracemalloc: 2,000 deltas of one word took ~0.75 MB)."""


@final
class TurnLogs:
    """Each conversation's latest turn log, by conversation key (`Conversation.key`, the
    token's hash): at most `capacity` (the least recently started forgotten first); a finished
    one for `keep` seconds, and finished ones, oldest first, beyond `max_bytes` in all. A turn
    still running is kept whatever its size: its stream reads it. `sweep` (on a timer) applies
    the bounds; looking a log up applies its age."""

    def __init__(
        self,
        capacity: int = 10_000,
        keep: float = 300.0,
        now: Callable[[], float] = time.monotonic,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._logs: OrderedDict[str, TurnLog] = OrderedDict()
        self._capacity = capacity
        self._keep = keep
        self._now = now
        self._max_bytes = max_bytes

    @property
    def keep(self) -> float:
        """Seconds a finished turn's log is kept."""
        return self._keep

    def size(self) -> int:
        """About how many bytes the kept logs hold."""
        return sum(log.size for log in self._logs.values())

    def sweep(self) -> int:
        """Forget the finished logs past their `keep`, then, oldest finished first, those past
        `max_bytes` in all; returns how many were forgotten."""
        now = self._now()
        finished = sorted(
            (log.finished_at, key) for key, log in self._logs.items() if log.finished_at is not None
        )
        total = self.size()
        forgotten = 0
        for finished_at, key in finished:
            if now - finished_at <= self._keep and total <= self._max_bytes:
                break
            total -= self._logs.pop(key).size
            forgotten += 1
        return forgotten

    def start(self, key: str, origin: int) -> TurnLog:
        """A new turn of the conversation (its previous turn's log is dropped)."""
        log = self._logs[key] = TurnLog(origin, self._now)
        self._logs.move_to_end(key)
        while len(self._logs) > self._capacity:
            self._logs.popitem(last=False)
        return log

    def find(self, key: str) -> TurnLog | None:
        """The conversation's latest turn log, if it is still kept."""
        log = self._logs.get(key)
        finished = log.finished_at if log is not None else None
        if finished is not None and self._now() - finished > self._keep:
            del self._logs[key]
            return None
        return log

    def forget(self, key: str) -> None:
        """The conversation ended."""
        self._logs.pop(key, None)
