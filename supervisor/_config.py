"""SupervisorConfig: every knob, with the defaults a production backend wants."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, final

from actors import Backoff, RequestBudget, RestartPolicy, SessionSettings
from actors.runtime import DEFAULTS, PollCeiling, check_headers

_SESSION: Final = SessionSettings()
_CEILING: Final = PollCeiling()
"""Each default is stated once, by the part it configures: the per-session ones by the core,
the request ones by the API, poller and wire (`actors.runtime.DEFAULTS`)."""

__all__ = ["SupervisorConfig"]


@final
@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """How the supervisor polls, buffers and shuts down.

    Attributes:
        wait_for_data: Seconds each long-poll asks Parlant to wait (Parlant's default is 60).
        wait_jitter: Polls wait uniformly in [wait_for_data - wait_jitter, wait_for_data], so
            sessions opened together do not re-poll together.
        window_size: Unclaimed events (follow-ups, late replies) kept per session for the next
            `events()` reader; older ones are evicted from memory but stay on the server.
        consumer_capacity: Events a stream or reader may leave unread before its session's
            polling pauses (lossless backpressure).
        backoff: Retry delays for failed polls.
        headers: HTTP headers sent on every request (e.g. authorization).
        request_concurrency: Short requests (posting a message, creating a session, re-reading
            history) in flight at once, over as many pooled connections. Long-polls do not count:
            each session has its own connection.
        request_budget: Requests a window this client sends Parlant, per operation, shaped
            before the server refuses them: `RequestBudget.parlant_production()` for Parlant's
            production policy (240 `list_events` a minute per client IP...). Long-polls then
            wait longer (`wait_for_data` rises) when the sessions need it. None: no budget
            (a 429 still pauses every request of its kind).
        request_timeout: Seconds a short request (posting a message, creating a session or a
            customer, reading history or a checkpoint, finding agents) may take in all before
            it fails with `ParlantUnavailable` naming it. A server that accepts connections and
            never answers must not hang a caller.
        request_retries: Times a short request other than a post (creating a session or a
            customer, reading history) is sent again when it certainly had no effect: the
            connection was refused, or Parlant answered 429 or 503. Posts are not counted:
            each goes on until its ask's deadline (see `post_grace`).
        post_grace: Seconds after a post's request was cut (reset, timed out, 5xx) before a
            read of the session's log can prove the message absent and it is sent again, with
            the same key: every post carries a key in its metadata, so a message is stored
            once however often its request fails, and an ask rides out every transient fault
            until its own deadline. Longer is safer against a server that stalls mid-request;
            shorter recovers sooner.
        max_message_length: Longest customer message accepted, in characters.
        actor_threads: Threads that run every session's actor (one actor per session, a
            few threads for all of them; handlers never block, so two keep up on two cores).
        stop_timeout: Default deadline, in seconds, for `stop()`.
        restart_policy: How often a session's actor may crash (and be restarted from its
            checkpoint, after a jittered delay) before the session is given up.
        linger: Seconds a session keeps polling after the last ask, stream or reader of it
            ended, so that what Parlant writes after a turn is read at once; then it is
            dormant: it sends Parlant nothing until someone waits on it again, and what
            Parlant wrote meanwhile goes to its next reader, as any unclaimed event (a linger
            changes when such events are read, never who gets them). 0 by default: measured
            on a real Parlant with 1,000 conversations and 2 turns a second, each second of
            linger added ~3 % of Parlant's core (bench.upstream); a turn's own late
            `status: error` is waited for by its asks (`failure_grace`) all the same. None:
            poll every session for as long as its actor lives (until `idle_ttl`), whoever
            waits.
        max_stream_life: Seconds a streamed message may go on being written before it is
            released as it stands (`ReplyMessage.is_complete` False, counted in
            `messages_abandoned_total`): the events behind it go on.
        max_waiting_polls: Polls kept waiting on Parlant at once (None: no ceiling). Each
            costs Parlant four reads of its store a second (about 0.1 % of its one core,
            measured: 100 cost ~10 %). Polls for a turn (an ask, a stream) always go; readers
            and lingering sessions share what they leave, and those beyond it are read in
            rotation (`rotation_rate`). Under a `request_budget` it is at most what the
            budget's background share of `list_events` lets wait `wait_for_data` seconds.
        rotation_rate: Reads a second, in all, of the sessions beyond `max_waiting_polls`
            (each a `list_events` without waiting, about 2.3 ms of Parlant's CPU): each of
            them is read every (their number / rotation_rate) seconds, and takes its turn at
            a waiting poll as slots free. What Parlant writes to them (follow-ups, a human
            agent) reaches their readers that much later.
        idle_ttl: Seconds a session may sit with no ask, stream, reader or unclaimed event
            before its actor is reaped; the next call re-activates it from its checkpoint.
            None: never reap.
        durable_checkpoints: Store each session's checkpoint in Parlant (the session's
            `consumption_offsets.client`), so a backend that restarts resumes every session
            where it stopped. Costs one request per `checkpoint_interval` per active session.
        checkpoint_interval: Seconds between two checkpoint writes of one session (one more
            is written when the session stops).
        max_checkpoints: Stopped (reaped, closed, given-up) sessions whose checkpoint is kept
            in memory, so that the next call resumes them where they stopped; past it the least
            recently stopped are forgotten. A forgotten session starts over like a new one
            (from offset 0, or from Parlant with durable checkpoints): a new `events()` reader
            may see its history again, but nothing is lost.
        checkpoint_ttl: Seconds a stopped session's checkpoint is kept in memory (None: until
            `max_checkpoints` pushes it out).
        poll_timeout_margin: Seconds a poll waits for its answer past `wait_for_data` before
            the connection is taken for hung and the poll is opened again (Parlant's own 504
            normally comes first).
        failure_grace: Seconds a completed turn that did not show it succeeded (no agent
            message, or a last message Parlant did not confirm with a `ready`) waits for the
            `status: error` that fails it (`AgentError`), before it resolves as it is. Parlant
            writes that error a few ms after the turn's completed `ready`; turns that answered
            never wait.
        max_response_bytes: The largest response body (or streamed event) read from Parlant:
            a larger one fails, as malformed, instead of growing this process without bound.
        stream_reread_interval: Seconds between two re-reads of a streamed message where
            Parlant refuses `read_event` (its production policy), which then stands in for
            following it live. Each costs one `list_events` of Parlant's rate limit (240 a
            minute per client IP in its production policy).
    """

    wait_for_data: int = _SESSION.wait_for_data
    wait_jitter: int = _SESSION.wait_jitter
    window_size: int = _SESSION.window_size
    consumer_capacity: int = 1000
    backoff: Backoff = field(default_factory=Backoff)
    headers: Mapping[str, str] = field(default_factory=dict)
    request_concurrency: int = DEFAULTS.request_concurrency
    request_budget: RequestBudget | None = None
    request_timeout: float = DEFAULTS.request_timeout
    request_retries: int = 5
    post_grace: float = DEFAULTS.post_grace
    max_message_length: int = 32_768
    actor_threads: int = 2
    stop_timeout: float = 10.0
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    linger: float | None = _SESSION.linger
    max_stream_life: float = _SESSION.max_stream_life
    max_waiting_polls: int | None = _CEILING.max_waiting
    rotation_rate: float = _CEILING.rotation_rate
    idle_ttl: float | None = 600.0
    durable_checkpoints: bool = False
    checkpoint_interval: float = 5.0
    max_checkpoints: int = 100_000
    checkpoint_ttl: float | None = 24 * 3600.0
    poll_timeout_margin: float = DEFAULTS.poll_timeout_margin
    failure_grace: float = _SESSION.failure_grace
    stream_reread_interval: float = 0.5
    max_response_bytes: int = DEFAULTS.max_response_bytes

    def __post_init__(self) -> None:
        if self.post_grace < 0:
            raise ValueError(f"post_grace must be >= 0 seconds, got {self.post_grace}")
        if self.max_response_bytes < 1024:
            raise ValueError(f"max_response_bytes must be >= 1024, got {self.max_response_bytes}")
        if self.stream_reread_interval <= 0:
            raise ValueError(
                f"stream_reread_interval must be > 0 seconds, got {self.stream_reread_interval}"
            )
        if self.consumer_capacity < 1:
            raise ValueError(f"consumer_capacity must be >= 1, got {self.consumer_capacity}")
        if self.request_concurrency < 1:
            raise ValueError(f"request_concurrency must be >= 1, got {self.request_concurrency}")
        if self.actor_threads < 1:
            raise ValueError(f"actor_threads must be >= 1, got {self.actor_threads}")
        if self.request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0 seconds, got {self.request_timeout}")
        if self.request_retries < 0:
            raise ValueError(f"request_retries must be >= 0, got {self.request_retries}")
        if self.max_message_length < 1:
            raise ValueError(f"max_message_length must be >= 1, got {self.max_message_length}")
        if self.poll_timeout_margin <= 0:
            raise ValueError(f"poll_timeout_margin must be > 0, got {self.poll_timeout_margin}")
        if self.max_checkpoints < 1:
            raise ValueError(f"max_checkpoints must be >= 1, got {self.max_checkpoints}")
        if self.checkpoint_ttl is not None and self.checkpoint_ttl <= 0:
            raise ValueError(f"checkpoint_ttl must be > 0 or None, got {self.checkpoint_ttl}")
        if self.stop_timeout <= 0:
            raise ValueError(f"stop_timeout must be > 0, got {self.stop_timeout}")
        check_headers(self.headers)  # here, not at the first request: a clear error at once
        self.session_settings()  # validates the polling knobs
        self.poll_ceiling()

    def poll_ceiling(self) -> PollCeiling:
        """The ceiling of waiting polls, within what the request budget lets wait (the two
        agree: the budget never has to stretch `wait_for_data` for the polls it allows)."""
        limit = self.max_waiting_polls
        within = (
            self.request_budget.polls_within(self.wait_for_data) if self.request_budget else None
        )
        if within is not None:
            limit = within if limit is None else min(limit, within)
        return PollCeiling(max_waiting=limit, rotation_rate=self.rotation_rate)

    def session_settings(self) -> SessionSettings:
        """The per-session part of the configuration."""
        return SessionSettings(
            wait_for_data=self.wait_for_data,
            wait_jitter=self.wait_jitter,
            window_size=self.window_size,
            backoff=self.backoff,
            idle_ttl=self.idle_ttl,
            linger=self.linger,
            max_stream_life=self.max_stream_life,
            checkpoint_interval=self.checkpoint_interval if self.durable_checkpoints else None,
            failure_grace=self.failure_grace,
        )
