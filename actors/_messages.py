"""What a SessionActor is told (messages) and what its core decides (effects).

Commands are named in the imperative, facts in the past tense. Every one is a frozen,
slotted dataclass: messages cross threads, so nothing in them may change.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, final

from parlant.client.types import Event

from actors._errors import (
    AccessDenied,
    InvalidInput,
    ParlantMisconfigured,
    ParlantUnavailable,
    SessionNotFound,
    SupervisorError,
)
from actors._reply import MessageDelta, Reply

__all__ = [
    "AwaitReply",
    "CancelPoll",
    "CheckMessage",
    "CheckpointLoaded",
    "Consumer",
    "ConsumerKind",
    "Deliver",
    "Effect",
    "EventsConsumed",
    "EventsReceived",
    "ExpectPoll",
    "Fail",
    "FailureKind",
    "FetchHistory",
    "FinishPoll",
    "FollowEnded",
    "FollowMessage",
    "HistoryFetched",
    "LoadCheckpoint",
    "Message",
    "MessageChecked",
    "MessagePosted",
    "MessageUpdated",
    "PollFailed",
    "PollFailure",
    "PollTimedOut",
    "PostFailed",
    "PostMessage",
    "Reap",
    "Resolve",
    "Resume",
    "ResumeReply",
    "SaveCheckpoint",
    "Schedule",
    "Start",
    "StartPoll",
    "Stop",
    "StopFollowing",
    "StreamItem",
    "Subscribe",
    "TimerFired",
    "TimerKind",
    "Unsubscribe",
]


@final
class ConsumerKind(enum.Enum):
    """ASK: one turn, resolved whole. STREAM: one turn, live. READER: every event, live."""

    ASK = "ask"
    STREAM = "stream"
    READER = "reader"


StreamItem = Event | MessageDelta
"""What streams carry: the session's events, and the live text of streamed messages."""


class Consumer(Protocol):
    """A caller-side receiver of a session's events. It outlives the actor that feeds it.

    The actor calls these methods from its own thread; they must not block.
    """

    @property
    def consumer_id(self) -> int:
        """Unique within the process."""
        ...

    @property
    def kind(self) -> ConsumerKind:
        """What the consumer waits for."""
        ...

    @property
    def capacity(self) -> int:
        """Undelivered events it may hold before its session's polling pauses."""
        ...

    @property
    def finished(self) -> bool:
        """True once it was resolved or failed, or its caller abandoned it."""
        ...

    post_started: bool
    """Whether an actor has sent its customer message to Parlant (written by that actor
    alone, kept across restarts: a successor re-sends a message that a crashed actor never
    sent, and never one it did). What became of the message is the supervisor's record."""

    post_key: str
    """The key its customer message is posted with (in the event's metadata): a copy of it in
    the log is this message, whoever sent it."""

    maybe_sent: bool
    """Whether its message may have been sent already, by a process now gone (a shard that
    died): the log is searched for `post_key` before anything is sent."""

    asked_at: float | None
    """Clock time it was asked (None for readers): reply latency is measured from it."""

    @property
    def next_offset(self) -> int | None:
        """The first offset it has not received (None until it received one, and for asks)."""
        ...

    def rebase(self) -> None:
        """A new actor (counting flow from zero) takes over feeding it."""
        ...

    def deliver(self, events: Sequence[StreamItem]) -> None:
        """Queue events (and, for streams, message deltas) for the caller (never blocks); what
        it already had (an offset it received, text it was given) is dropped."""
        ...

    def resolve(self, reply: Reply) -> None:
        """The turn this consumer waited for completed."""
        ...

    def fail(self, error: SupervisorError) -> None:
        """The consumer will get nothing more; `error` says why."""
        ...


# --- messages -------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Resume:
    """Where a session's new actor picks up what an earlier one left (after a reap, a close or
    a crash): poll from `offset`; of the events below `seen_until` that it reads again, only
    those in `unclaimed` are news to an `events()` reader subscribing without `since` (the
    others an ask, a stream or a reader took already).

    Attributes:
        offset: The checkpoint: the first offset anyone may still need.
        seen_until: The earlier actor had handled every event below it.
        unclaimed: The offsets, below `seen_until`, that it held for the next reader.
    """

    offset: int
    seen_until: int = 0
    unclaimed: frozenset[int] = frozenset()


@final
@dataclass(frozen=True, slots=True)
class Start:
    """Begin polling at `from_offset`; None: at the checkpoint stored in Parlant (load it).

    `resume` (from an earlier actor of the session) says which of the events read again are
    news (see `Resume`); its offset is `from_offset`.
    """

    from_offset: int | None = 0
    resume: Resume | None = None


@final
@dataclass(frozen=True, slots=True)
class CheckpointLoaded:
    """The checkpoint stored in Parlant (None: none stored, or it could not be read)."""

    offset: int | None


@final
@dataclass(frozen=True, slots=True)
class Stop:
    """Stop polling and fail every consumer with `error` (the actor then stops)."""

    error: SupervisorError


@final
@dataclass(frozen=True, slots=True)
class EventsReceived:
    """Poll `generation` returned these events (offset order)."""

    generation: int
    events: tuple[Event, ...]


@final
@dataclass(frozen=True, slots=True)
class PollTimedOut:
    """Poll `generation` ended with no events: 504, an empty 200, the client's own timeout,
    or its connection dying of silence.

    Attributes:
        reason: `gateway_timeout`, `empty`, `stale` (only offsets already seen),
            `client_timeout` or `connection_lost`.
    """

    generation: int
    reason: str


@final
class FailureKind(enum.Enum):
    """Why a request to Parlant failed: the one place that says what an HTTP status means
    (`of_status`) and which error it is to a caller (`error`), for polls and short requests
    alike. For polls, TERMINAL kinds end the session; the others back off and retry.

    INTERNAL is a bug in the poll itself: reported (logged, counted) and retried like the rest.
    """

    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"
    NETWORK = "network"
    MALFORMED = "malformed"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    REJECTED = "rejected"
    MISCONFIGURED = "misconfigured"
    INTERNAL = "internal"

    @classmethod
    def of_status(cls, status: int | None) -> FailureKind:
        """What an HTTP status other than 200 (and 504 for a long-poll) means (None: an answer
        without one)."""
        if status is None:
            return FailureKind.SERVER_ERROR
        return _STATUS_KINDS.get(status, FailureKind.SERVER_ERROR)

    @property
    def is_terminal(self) -> bool:
        """True when retrying cannot help (the session is gone or forbidden)."""
        return self in (FailureKind.NOT_FOUND, FailureKind.FORBIDDEN, FailureKind.MISCONFIGURED)

    @property
    def error(self) -> type[SupervisorError]:
        """The error a caller gets for it."""
        return _KIND_ERRORS.get(self, ParlantUnavailable)


_STATUS_KINDS: dict[int, FailureKind] = {
    401: FailureKind.FORBIDDEN,
    403: FailureKind.FORBIDDEN,
    404: FailureKind.NOT_FOUND,
    422: FailureKind.REJECTED,  # Parlant's validation error: the request, not the server
    429: FailureKind.RATE_LIMITED,
    # a redirect: the URL is not Parlant's API itself (redirects are not followed: a 301 was
    # taken for a server error and retried for ever)
    **dict.fromkeys((301, 302, 303, 307, 308), FailureKind.MISCONFIGURED),
}
_KIND_ERRORS: dict[FailureKind, type[SupervisorError]] = {
    FailureKind.NOT_FOUND: SessionNotFound,
    FailureKind.FORBIDDEN: AccessDenied,
    FailureKind.REJECTED: InvalidInput,
    FailureKind.MISCONFIGURED: ParlantMisconfigured,
}


@final
@dataclass(frozen=True, slots=True)
class PollFailure:
    """What went wrong with a poll.

    Attributes:
        kind: The class of failure.
        detail: A short description (status line or exception text), never a message body.
        status: The HTTP status, when there was one.
        retry_after: Seconds the server asked us to wait (429/503 `Retry-After`).
    """

    kind: FailureKind
    detail: str
    status: int | None = None
    retry_after: float | None = None


@final
@dataclass(frozen=True, slots=True)
class PollFailed:
    """Poll `generation` failed."""

    generation: int
    failure: PollFailure


@final
@dataclass(frozen=True, slots=True)
class MessageUpdated:
    """A streamed message the core follows was written further: `event` is its newer snapshot
    (more chunks, or the terminator). Stale and repeated snapshots are ignored."""

    event: Event


@final
@dataclass(frozen=True, slots=True)
class FollowEnded:
    """Following a streamed message ended before its terminator: Parlant wrote nothing new for
    `wait_for_data` seconds, or the event is gone."""

    event_id: str


@final
@dataclass(frozen=True, slots=True)
class MessageChecked:
    """The answer to `CheckMessage`: the message as Parlant's log holds it now (None: the event
    is not in the log any more)."""

    event_id: str
    event: Event | None


@final
@dataclass(frozen=True, slots=True)
class AwaitReply:
    """Post `text` as the customer, then give `consumer` the turn that answers it.

    Attributes:
        consumer: An ASK or STREAM consumer.
        text: The customer's message.
        deadline: Clock time by which the turn must complete, or None to wait forever.
    """

    consumer: Consumer
    text: str
    deadline: float | None


@final
@dataclass(frozen=True, slots=True)
class ResumeReply:
    """Re-attach an ask or stream that survived its session actor's crash; nothing is posted.

    Attributes:
        consumer: The surviving consumer.
        customer_offset: Its message's offset, if the dead actor had learned it (else the
            `MessagePosted` still on its way will say).
        deadline: Its deadline, as before.
    """

    consumer: Consumer
    customer_offset: int | None
    deadline: float | None


@final
@dataclass(frozen=True, slots=True)
class MessagePosted:
    """Parlant stored the consumer's customer message at `offset`; its post took `took`
    seconds (how responsive Parlant is now: see `ExpectPoll`)."""

    consumer_id: int
    offset: int
    took: float = 0.0


@final
@dataclass(frozen=True, slots=True)
class PostFailed:
    """Posting the consumer's customer message failed; nothing was stored."""

    consumer_id: int
    error: SupervisorError


@final
@dataclass(frozen=True, slots=True)
class Subscribe:
    """Give a READER every event from now on; first the unclaimed window, or history.

    Attributes:
        consumer: A READER consumer.
        since: Re-read the session from this offset (from the server) instead of the window.
    """

    consumer: Consumer
    since: int | None = None


@final
@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """The caller abandoned the consumer (stopped iterating, closed it)."""

    consumer_id: int


@final
@dataclass(frozen=True, slots=True)
class HistoryFetched:
    """The events a reader asked to re-read, [min_offset, before_offset), or the error."""

    consumer_id: int
    events: tuple[Event, ...]
    error: SupervisorError | None = None


@final
@dataclass(frozen=True, slots=True)
class EventsConsumed:
    """The consumer's caller has taken `taken` events in all so far."""

    consumer_id: int
    taken: int


@final
class TimerKind(enum.Enum):
    """What a timer is for."""

    RETRY_POLL = "retry_poll"
    DEADLINE = "deadline"
    IDLE = "idle"
    CHECKPOINT = "checkpoint"
    FAILURE_GRACE = "failure_grace"
    LINGER = "linger"
    STREAM_LIFE = "stream_life"


@final
@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer the core scheduled came due. A stale one (old `generation`) is ignored.

    Attributes:
        kind: What it is for.
        generation: The poll generation (RETRY_POLL), consumer id (DEADLINE) or held turn
            (FAILURE_GRACE) it concerns. LINGER and IDLE are wake-ups only (0): the core
            decides from the clock whether the linger or the idle TTL is over.
    """

    kind: TimerKind
    generation: int


Message = (
    Start
    | CheckpointLoaded
    | Stop
    | EventsReceived
    | PollTimedOut
    | PollFailed
    | MessageUpdated
    | FollowEnded
    | MessageChecked
    | AwaitReply
    | ResumeReply
    | MessagePosted
    | PostFailed
    | Subscribe
    | Unsubscribe
    | HistoryFetched
    | EventsConsumed
    | TimerFired
)

# --- effects --------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class StartPoll:
    """Open `GET /events?min_offset=..&wait_for_data=..`; tell the outcome with `generation`.

    With `repeat_wait` (lowest, highest), a poll that ends without events (Parlant's 504, an
    empty answer, or our own timeout) is sent again at once with a wait drawn from that range,
    and nothing is told: an idle session's poll cycles cost no message to its actor. Without
    it, every outcome is told.

    `for_turn`: an ask or stream waits on the poll, or a streamed message is followed. Such
    polls always go out; the others (readers, a linger) share what is left of the upstream's
    ceiling of waiting polls (see `Poller`).
    """

    generation: int
    min_offset: int
    wait_for_data: int
    repeat_wait: tuple[int, int] | None = None
    for_turn: bool = False


@final
@dataclass(frozen=True, slots=True)
class CancelPoll:
    """Cancel the open poll, if any."""


@final
@dataclass(frozen=True, slots=True)
class ExpectPoll:
    """A message of the session's was just stored at or past the open poll's `min_offset`
    (generation `generation`): the poll must bring it soon after its request is sent (Parlant
    answers a waiting poll within 0.25 s of a write), or it is dead (a flow lost without a
    word) and the poller sends it again on a new connection. `took`: how long the message's
    post took; a Parlant that slow answers its polls slowly too, and is given as long
    (several times it), not taken for a lost flow."""

    generation: int
    took: float = 0.0


@final
@dataclass(frozen=True, slots=True)
class FinishPoll:
    """Let the open poll be the last: it is not repeated when it times out, and its outcome,
    whatever it is, is told (nobody waits on the session any more; a poll cancelled instead
    would go on costing Parlant until its `wait_for_data` all the same)."""


@final
@dataclass(frozen=True, slots=True)
class FollowMessage:
    """Follow the streamed message `event_id` (at `offset`) as Parlant writes it: tell
    `MessageUpdated` for each newer snapshot, until its terminator; `FollowEnded` if Parlant
    writes nothing new for `wait_for_data` seconds or the event is gone."""

    event_id: str
    offset: int


@final
@dataclass(frozen=True, slots=True)
class CheckMessage:
    """Read the message `event_id` (at `offset`) once from the session's log; tell
    `MessageChecked`. Retried until it is read or the session stops."""

    event_id: str
    offset: int


@final
@dataclass(frozen=True, slots=True)
class StopFollowing:
    """Stop following (and checking) the message `event_id`; None: every message of the
    session."""

    event_id: str | None = None


@final
@dataclass(frozen=True, slots=True)
class PostMessage:
    """Post the consumer's text as a customer message, exactly once (no copy of it can be
    below offset `since`); tell `MessagePosted` or `PostFailed`. No request of it outlives
    `deadline` (clock time; None: none): then the post is settled and told (`PostFailed` with
    why it was not stored, or with `DeliveryUnknown`; `MessagePosted` if it was)."""

    consumer_id: int
    text: str
    since: int
    deadline: float | None = None


@final
@dataclass(frozen=True, slots=True)
class FetchHistory:
    """Read events [min_offset, before_offset) once; tell `HistoryFetched`."""

    consumer_id: int
    min_offset: int
    before_offset: int


@final
@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand events (and, to streams, message deltas) to a consumer."""

    consumer_id: int
    events: tuple[StreamItem, ...]


@final
@dataclass(frozen=True, slots=True)
class Resolve:
    """The consumer's turn completed."""

    consumer_id: int
    reply: Reply


@final
@dataclass(frozen=True, slots=True)
class Fail:
    """The consumer gets `error` and nothing more."""

    consumer_id: int
    error: SupervisorError


@final
@dataclass(frozen=True, slots=True)
class LoadCheckpoint:
    """Read the session's checkpoint stored in Parlant; tell `CheckpointLoaded`."""


@final
@dataclass(frozen=True, slots=True)
class SaveCheckpoint:
    """Store `offset` as the session's checkpoint in Parlant (its consumption offset)."""

    offset: int


@final
@dataclass(frozen=True, slots=True)
class Reap:
    """The session has been idle for its TTL: ask the supervisor to stop it (it resumes from
    its checkpoint on next use)."""


@final
@dataclass(frozen=True, slots=True)
class Schedule:
    """Tell `timer` to this actor at clock time `at`."""

    at: float
    timer: TimerFired


Effect = (
    StartPoll
    | CancelPoll
    | ExpectPoll
    | FinishPoll
    | FollowMessage
    | CheckMessage
    | StopFollowing
    | PostMessage
    | FetchHistory
    | Deliver
    | Resolve
    | Fail
    | Schedule
    | Reap
    | LoadCheckpoint
    | SaveCheckpoint
)
