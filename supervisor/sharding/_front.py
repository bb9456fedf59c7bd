"""ShardedSupervisor: `SessionSupervisor`'s calls, with the sessions spread over Ray actors.

Each shard is a Ray actor (a process) hosting one `SessionSupervisor`; a session lives on the
shard that rendezvous hashing gives it (`_placement`). Ray restarts a shard that dies; the
driver notices (a failed call, or its watcher seeing a new incarnation) and opens the shard's
sessions again, each from its durable checkpoint in Parlant. What a call in flight on a dead
shard does:

- idempotent calls (`close`, `ensure_agents`, `history`, `check_parlant`, `statistics`,
  `sessions`) are sent again, transparently, once the shard is back; `open` is a message not
  waited for, and the restarted shard opens every session it hosted again;
- `events()` readers resume on the restarted shard from the offset after the last event they
  yielded, or where they started if they yielded none (re-read from Parlant), so each event
  still reaches them exactly once;
- `ask` and `stream` are handed to the restarted shard with their message's post key
  (`_Handover`): it learns from the session's log whether the dead one had posted the message
  (then it follows that turn) or not (then it posts it), so the message is posted once; a
  resumed stream yields each event and each piece of text once (`_TurnCursor`);
- `create_session` and `create_customer` fail with `ShardLost` (a `TransientError`): the dead
  shard may have created it, under an id the driver never learnt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from types import TracebackType
from typing import Any, Final, Self, TypeVar, final

from parlant.client.types import Event
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from actors import (
    InvalidInput,
    MessageDelta,
    Reply,
    ReplyTimeout,
    ShardLost,
    SupervisorError,
    SupervisorStopped,
)
from supervisor._config import SupervisorConfig
from supervisor._consumers import new_post_key
from supervisor._extras import install_command
from supervisor._statistics import StopSummary, SupervisorStatistics
from supervisor._text import answer_text, answer_text_async
from supervisor._validation import require_ask, require_id, require_since
from supervisor.sharding._placement import shard_of
from supervisor.sharding._shard import Shard

__all__ = ["INSTALL_HINT", "ShardLost", "ShardedSupervisor"]

T = TypeVar("T")

INSTALL_HINT: Final = f"the sharded supervisor runs on Ray: {install_command('ray')}"
_PING_TIMEOUT: Final = 5.0
_METRICS_TIMEOUT: Final = 5.0


class _ShardDied(Exception):
    """Internal: Ray said the shard's actor died (or is restarting) during a call."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return ray


@final
class ShardedSupervisor:
    """`SessionSupervisor`'s calls over `shards` Ray actors, each hosting a `SessionSupervisor`.

    Args:
        parlant_url: The Parlant server every shard talks to.
        shards: How many shards (Ray actors, each a process of its own).
        config: Each shard's supervisor settings; durable checkpoints are required (they are
            what a restarted shard resumes its sessions from) and on by default here.
        address: The Ray cluster to join (`"auto"`, `"ray://head:10001"`); None joins the one
            this process already joined, else starts a local instance (stopped by `stop()`).
        name: Prefix of the shards' actor names (unique per Ray namespace).
        cpus_per_shard: CPUs Ray reserves for each shard (a shard is one process: 1 uses a
            core; less packs more shards on a machine).
        max_restarts: How often Ray restarts a dead shard (-1: always).
        restart_timeout: Seconds a call waits for a dead shard to come back before failing.
        watch_interval: Seconds between two checks that every shard is alive (a restarted
            shard's sessions are opened again at once, not at their next call).
        stream_buffer: Events a stream or reader may have in flight from its shard before the
            shard waits for the caller (then the session's polling pauses: lossless
            backpressure, as `consumer_capacity` gives on one process).
        log_level: What each shard logs (`logging.INFO` for every session's events); Ray
            forwards it to this process' output, prefixed with the shard's pid.

    Example:
        >>> with ShardedSupervisor("http://127.0.0.1:8800", shards=2) as sup:
        ...     reply = sup.ask(session_id, "Tell me about CKD stage 3", timeout=120)
    """

    def __init__(
        self,
        parlant_url: str,
        *,
        shards: int = 2,
        config: SupervisorConfig | None = None,
        address: str | None = None,
        name: str = "parlant-supervisor",
        cpus_per_shard: float = 1.0,
        max_restarts: int = -1,
        restart_timeout: float = 60.0,
        watch_interval: float = 1.0,
        stream_buffer: int = 256,
        log_level: int = logging.WARNING,
    ) -> None:
        if shards < 1:
            raise InvalidInput(f"a sharded supervisor needs at least 1 shard, got {shards}")
        config = config or SupervisorConfig(durable_checkpoints=True)
        if not config.durable_checkpoints:
            raise InvalidInput(
                "a restarted shard resumes its sessions from their durable checkpoints: "
                "use a SupervisorConfig with durable_checkpoints=True"
            )
        ray = self._ray = _import_ray()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(address=address, include_dashboard=False)
        self.parlant_url = parlant_url.rstrip("/")
        self.config = config
        self._restart_timeout = restart_timeout
        self._stream_options = {"_generator_backpressure_num_objects": stream_buffer}
        self._names = [f"{name}-shard-{n}" for n in range(shards)]
        actor = ray.remote(Shard)
        self._shards: list[Any] = [
            actor.options(
                name=shard_name,
                max_restarts=max_restarts,
                max_task_retries=0,
                num_cpus=cpus_per_shard,
                max_concurrency=10_000,  # every open stream and reader holds one
            ).remote(shard_name, self.parlant_url, config, log_level)
            for shard_name in self._names
        ]
        self._incarnations: list[str | None] = [None] * shards
        self._opened: list[set[str]] = [set() for _ in range(shards)]
        self._recovering = [threading.Lock() for _ in range(shards)]
        self._lock = threading.Lock()
        self._stopped = False
        self._round_robin = 0
        self._wake = threading.Event()
        self._down: set[int] = set()  # shards seen dead and not yet recovered
        try:
            for index in range(shards):
                self._incarnations[index] = self._ping(index, restart_timeout)
        except BaseException:
            self._abandon()
            raise
        self.registry = CollectorRegistry()
        self.registry.register(_ShardMetrics(self))
        self._watcher = threading.Thread(
            target=self._watch, args=(watch_interval,), name="shard-watcher", daemon=True
        )
        self._watcher.start()

    # --- placement --------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """Whether `stop()` was called."""
        return self._stopped

    @property
    def shards(self) -> int:
        """How many shards there are."""
        return len(self._shards)

    def shard_of(self, session_id: str) -> int:
        """The index of the shard hosting `session_id`."""
        return shard_of(session_id, self._names)

    def shard_actor(self, index: int) -> Any:
        """The Ray actor handle of shard `index`, for operations tools (`ray.kill` it, as
        `supervisor.testing.kill_shard` does; Ray restarts it)."""
        return self._shards[index]

    def _track(self, session_id: str) -> int:
        """The session's shard, which will open it again if it restarts."""
        self._check_running()
        require_id("session_id", session_id)
        index = self.shard_of(session_id)
        with self._lock:
            self._opened[index].add(session_id)
        return index

    def _any_shard(self) -> int:
        with self._lock:
            self._round_robin = (self._round_robin + 1) % len(self._shards)
            return self._round_robin

    # --- sessions ---------------------------------------------------------------------------

    def create_session(
        self,
        agent_id: str,
        *,
        customer_id: str | None = None,
        title: str | None = None,
        open: bool = True,
    ) -> str:
        """Create a Parlant session and open it on its shard (unless `open=False`), as
        `SessionSupervisor.create_session` does."""
        self._check_running()
        require_id("agent_id", agent_id)
        creating = self._any_shard()
        session_id: str = self._once(
            creating, lambda shard: shard.create_session.remote(agent_id, customer_id, title)
        )
        if open:
            self.open(session_id, since=0)
        return session_id

    async def acreate_session(
        self,
        agent_id: str,
        *,
        customer_id: str | None = None,
        title: str | None = None,
        open: bool = True,
    ) -> str:
        """Asyncio twin of `create_session`."""
        self._check_running()
        require_id("agent_id", agent_id)
        creating = self._any_shard()
        session_id: str = await self._aonce(
            creating, lambda shard: shard.create_session.remote(agent_id, customer_id, title)
        )
        if open:
            self.open(session_id, since=0)  # a message: nothing to wait for
        return session_id

    def create_customer(self, name: str) -> str:
        """Create a Parlant customer; returns its id."""
        self._check_running()
        require_id("name", name)
        index = self._any_shard()
        customer_id: str = self._once(index, lambda shard: shard.create_customer.remote(name))
        return customer_id

    async def acreate_customer(self, name: str) -> str:
        """Asyncio twin of `create_customer`."""
        self._check_running()
        require_id("name", name)
        index = self._any_shard()
        customer_id: str = await self._aonce(
            index, lambda shard: shard.create_customer.remote(name)
        )
        return customer_id

    def ensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        """Each named agent's id, found by name, else created (name -> id)."""
        self._check_running()
        for name in names:
            require_id("name", name)
        ids: dict[str, str] = self._again(
            self._any_shard(), lambda shard: shard.ensure_agents.remote(names)
        )
        return ids

    async def aensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        """Asyncio twin of `ensure_agents`."""
        return await asyncio.to_thread(self.ensure_agents, names)

    def history(self, session_id: str, *, since: int = 0) -> list[Event]:
        """The session's events from offset `since`, read once from the server."""
        self._check_running()
        require_id("session_id", session_id)
        require_since(since, session_id)
        index = self.shard_of(session_id)
        events: list[Event] = self._again(
            index, lambda shard: shard.history.remote(session_id, since)
        )
        return events

    async def ahistory(self, session_id: str, *, since: int = 0) -> list[Event]:
        """Asyncio twin of `history`."""
        return await asyncio.to_thread(self.history, session_id, since=since)

    def check_parlant(self, *, timeout: float | None = None) -> None:
        """Raise `ParlantUnavailable` unless Parlant answers (asked through a shard)."""
        self._check_running()
        self._again(self._any_shard(), lambda shard: shard.check_parlant.remote(timeout))

    async def acheck_parlant(self, *, timeout: float | None = None) -> None:
        """Asyncio twin of `check_parlant`."""
        await asyncio.to_thread(self.check_parlant, timeout=timeout)

    def open(self, session_id: str, *, since: int | None = None) -> None:
        """Start polling the session on its shard (see `SessionSupervisor.open`).

        Like `SessionSupervisor.open`, a message sent, not a call waited for: opening 10,000
        sessions one round trip each took 55 s. Ray runs one caller's calls to a shard in the
        order they were sent, and a shard that dies opens its sessions again when it is back.
        """
        require_id("session_id", session_id)
        require_since(since, session_id)
        index = self._track(session_id)
        self._shards[index].open.remote(session_id, since)

    def close(self, session_id: str) -> None:
        """Stop the session's actor on its shard; its waiting calls fail with `SessionClosed`."""
        index = self._track(session_id)
        with self._lock:
            self._opened[index].discard(session_id)
        self._again(index, lambda shard: shard.close.remote(session_id))

    async def aclose(self, session_id: str) -> None:
        """Asyncio twin of `close`."""
        await asyncio.to_thread(self.close, session_id)

    def sessions(self) -> list[str]:
        """Ids of the sessions with a live actor, on every shard."""
        self._check_running()
        return [
            session_id
            for index in range(len(self._shards))
            for session_id in self._again(index, lambda shard: shard.sessions.remote())
        ]

    async def asessions(self) -> list[str]:
        """Asyncio twin of `sessions`."""
        return await asyncio.to_thread(self.sessions)

    # --- conversations ----------------------------------------------------------------------

    def ask(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> Reply:
        """Post `message` and return the turn that answers it (see `SessionSupervisor.ask`,
        also for `post_key` and `maybe_sent`).

        If the session's shard dies meanwhile, the ask is handed to the restarted shard with
        its post key: that one learns from the session's log whether the message was posted
        (and follows its turn) or not (and posts it), so it is posted once either way.

        Raises:
            ReplyTimeout: The deadline passed while the shard was restarting.
            ShardLost: The shard did not come back within `restart_timeout`.
        """
        self._check_ask(session_id, message, timeout, post_key)
        index = self._track(session_id)
        handover = _Handover(session_id, timeout, post_key, maybe_sent)
        while True:
            try:
                reply: Reply = self._once(index, lambda shard: handover.send(shard.ask, message))
                return reply
            except ShardLost:
                handover.lost()
                self._recover(index)

    async def aask(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> Reply:
        """Asyncio twin of `ask`."""
        self._check_ask(session_id, message, timeout, post_key)
        index = self._track(session_id)
        handover = _Handover(session_id, timeout, post_key, maybe_sent)
        while True:
            try:
                reply: Reply = await self._aonce(
                    index, lambda shard: handover.send(shard.ask, message)
                )
                return reply
            except ShardLost:
                handover.lost()
                await asyncio.to_thread(self._recover, index)

    def stream(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> Generator[Event | MessageDelta, None, None]:
        """Post `message` and yield the answering turn's events live, and its streamed
        messages' deltas (see `SessionSupervisor.stream`). If the session's shard dies, the
        stream goes on on the restarted shard as `ask` does, each event and each piece of
        text yielded once."""
        self._check_ask(session_id, message, timeout, post_key)
        index = self._track(session_id)
        if index in self._down:
            self._recover(index)
        handover = _Handover(session_id, timeout, post_key, maybe_sent)
        refs = handover.send(self._stream_method(index), message)
        return self._handed_over(index, handover, message, refs)

    def _handed_over(
        self, index: int, handover: _Handover, message: str, refs: Any
    ) -> Generator[Event | MessageDelta, None, None]:
        cursor = _TurnCursor()
        while True:
            try:
                for item in self._relay(index, refs):
                    fresh = cursor.fresh(item)
                    if fresh is not None:
                        yield fresh
                return
            except ShardLost:
                handover.lost()
                self._recover(index)
            refs = handover.send(self._stream_method(index), message)

    def astream(
        self,
        session_id: str,
        message: str,
        *,
        timeout: float | None = None,
        post_key: str | None = None,
        maybe_sent: bool = False,
    ) -> AsyncGenerator[Event | MessageDelta, None]:
        """Asyncio twin of `stream` (on a shard known to be down, the message is posted once
        it is back, at the first iteration)."""
        self._check_ask(session_id, message, timeout, post_key)
        index = self._track(session_id)
        handover = _Handover(session_id, timeout, post_key, maybe_sent)
        refs = None if index in self._down else handover.send(self._stream_method(index), message)
        return self._ahanded_over(index, handover, message, refs)

    async def _ahanded_over(
        self, index: int, handover: _Handover, message: str, refs: Any
    ) -> AsyncGenerator[Event | MessageDelta, None]:
        cursor = _TurnCursor()
        while True:
            if refs is None:
                await asyncio.to_thread(self._recover, index)
                refs = handover.send(self._stream_method(index), message)
            relay = self._arelay(index, refs)
            try:
                async for item in relay:
                    fresh = cursor.fresh(item)
                    if fresh is not None:
                        yield fresh
                return
            except ShardLost:
                handover.lost()
                refs = None
            finally:
                await relay.aclose()

    def _check_ask(
        self, session_id: str, message: str, timeout: float | None, post_key: str | None
    ) -> None:
        """Refuse a bad ask or stream here, before any shard is called (as one process does)."""
        self._check_running()
        require_ask(session_id, message, timeout, post_key, self.config.max_message_length)

    def _stream_method(self, index: int) -> Any:
        return self._shards[index].stream.options(**self._stream_options)

    def stream_text(
        self, session_id: str, message: str, *, timeout: float | None = None
    ) -> Iterator[str]:
        """Post `message` and yield the answer's text as it is generated (see
        `SessionSupervisor.stream_text`)."""
        return answer_text(self.stream(session_id, message, timeout=timeout))

    def astream_text(
        self, session_id: str, message: str, *, timeout: float | None = None
    ) -> AsyncIterator[str]:
        """Asyncio twin of `stream_text`."""
        return answer_text_async(self.astream(session_id, message, timeout=timeout))

    def events(self, session_id: str, *, since: int | None = None) -> Generator[Event, None, None]:
        """Yield every event of the session as it arrives (see `SessionSupervisor.events`).

        Subscribed at once, like `SessionSupervisor.events`. If the session's shard dies, the
        reader goes on on the restarted shard from the event after the last one it yielded:
        each event is yielded once.
        """
        require_since(since, session_id)
        index = self._track(session_id)
        refs = self._shard_stream(index, "events", session_id, since)
        return self._resuming(index, session_id, since, refs)

    def _resuming(
        self, index: int, session_id: str, since: int | None, refs: Any
    ) -> Generator[Event, None, None]:
        cursor = _Cursor(since)
        while True:
            try:
                yield from filter(cursor.fresh, self._relay(index, refs))
                return
            except ShardLost:
                self._recover(index)
            refs = self._shard_stream(index, "events", session_id, cursor.next_offset)

    def aevents(self, session_id: str, *, since: int | None = None) -> AsyncGenerator[Event, None]:
        """Asyncio twin of `events`."""
        require_since(since, session_id)
        index = self._track(session_id)
        refs = self._shard_stream(index, "events", session_id, since)
        return self._aresuming(index, session_id, since, refs)

    async def _aresuming(
        self, index: int, session_id: str, since: int | None, refs: Any
    ) -> AsyncGenerator[Event, None]:
        cursor = _Cursor(since)
        while True:
            relay = self._arelay(index, refs)
            try:
                async for event in relay:
                    if cursor.fresh(event):
                        yield event
                return
            except ShardLost:
                await asyncio.to_thread(self._recover, index)
            finally:
                await relay.aclose()
            refs = self._shard_stream(index, "events", session_id, cursor.next_offset)

    # --- figures and lifecycle --------------------------------------------------------------

    def statistics(self) -> SupervisorStatistics:
        """Every shard's figures, combined (`SupervisorStatistics.combine`)."""
        if self._stopped:
            return dataclasses.replace(SupervisorStatistics.combine([]), running=False)
        return SupervisorStatistics.combine(
            [
                self._again(index, lambda shard: shard.statistics.remote())
                for index in range(len(self._shards))
            ]
        )

    def stop(self, timeout: float | None = None) -> StopSummary:
        """Stop every shard's supervisor, then the shards (and Ray, if this started it).

        Idempotent. The summary adds up the shards'.
        """
        with self._lock:
            if self._stopped:
                return StopSummary(0, 0, deadline_met=True)
            self._stopped = True
        self._wake.set()
        self._watcher.join(_PING_TIMEOUT)
        budget = self.config.stop_timeout if timeout is None else timeout
        stopping = [shard.stop.remote(budget) for shard in self._shards]  # all at once
        summaries: list[StopSummary] = []
        met = True
        for index, ref in enumerate(stopping):
            try:
                summaries.append(self._get(index, ref, timeout=budget + _PING_TIMEOUT))
            except (ShardLost, self._ray.exceptions.GetTimeoutError):
                met = False
        self._abandon()
        return StopSummary(
            sessions_stopped=sum(s.sessions_stopped for s in summaries),
            calls_failed=sum(s.calls_failed for s in summaries),
            deadline_met=met and all(s.deadline_met for s in summaries),
        )

    def _abandon(self) -> None:
        """Kill every shard for good (and Ray, if this started it)."""
        for shard in self._shards:
            with contextlib.suppress(Exception):
                self._ray.kill(shard, no_restart=True)
        if self._owns_ray:
            self._ray.shutdown()

    async def astop(self, timeout: float | None = None) -> StopSummary:
        """Asyncio twin of `stop`."""
        return await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def shard_memory(self) -> dict[int, int]:
        """Each live shard process' resident memory in bytes, by shard index (Linux; 0 where
        the process cannot tell)."""
        return self._from_live_shards("rss")

    def shard_metrics(self) -> dict[int, bytes]:
        """Each live shard's metrics in Prometheus' text format, by shard index (a dead or
        silent shard is left out)."""
        return self._from_live_shards("metrics")

    def _from_live_shards(self, method: str) -> dict[int, Any]:
        """Each shard's answer to `method()`, by index; one dead or silent is left out."""
        answers = {}
        for index, shard in enumerate(self._shards):
            with contextlib.suppress(ShardLost, self._ray.exceptions.GetTimeoutError):
                call = getattr(shard, method).remote()
                answers[index] = self._get(index, call, timeout=_METRICS_TIMEOUT)
        return answers

    # --- calling shards ---------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._stopped:
            raise SupervisorStopped("the sharded supervisor is stopped; no call can complete")

    def _shard_stream(self, index: int, method: str, *args: Any) -> Any:
        return getattr(self._shards[index], method).options(**self._stream_options).remote(*args)

    def _get(self, index: int, ref: Any, timeout: float | None = None) -> Any:
        """`ray.get`, with the shard's own error re-raised as itself and its death as
        `ShardLost` (after waking the watcher, which opens its sessions again)."""
        try:
            return self._ray.get(ref, timeout=timeout)
        except self._ray.exceptions.RayError as error:
            raise self._translated(index, error) from None

    async def _aget(self, index: int, ref: Any) -> Any:
        try:
            return await ref
        except self._ray.exceptions.RayError as error:
            raise self._translated(index, error) from None
        except asyncio.CancelledError:
            # the caller gave up: so does the shard (else its ask waits on, to its deadline)
            with contextlib.suppress(Exception):
                self._ray.cancel(ref)
            raise

    def _translated(self, index: int, error: Exception) -> BaseException:
        exceptions = self._ray.exceptions
        if isinstance(error, exceptions.RayActorError):
            self._down.add(index)
            self._wake.set()
            return ShardLost(
                f"shard {self._names[index]} died during the call ({type(error).__name__}); "
                "Ray restarts it and its sessions resume from their checkpoints"
            )
        if isinstance(error, exceptions.RayTaskError):
            cause = getattr(error, "cause", None)
            if isinstance(cause, BaseException):
                return cause
        return error

    def _once(self, index: int, call: Callable[[Any], Any]) -> Any:
        """A call that must not be sent twice: sent once its shard is up (it waits for a shard
        known to be down to come back), `ShardLost` if the shard dies meanwhile."""
        if index in self._down:
            self._recover(index)
        return self._get(index, call(self._shards[index]))

    async def _aonce(self, index: int, call: Callable[[Any], Any]) -> Any:
        if index in self._down:
            await asyncio.to_thread(self._recover, index)
        return await self._aget(index, call(self._shards[index]))

    def _again(self, index: int, call: Callable[[Any], Any]) -> Any:
        """An idempotent call, sent again (once the shard is back) if its shard dies."""
        deadline = time.monotonic() + self._restart_timeout
        while True:
            try:
                return self._get(index, call(self._shards[index]))
            except ShardLost:
                if time.monotonic() > deadline:
                    raise
                self._recover(index)

    def _relay(self, index: int, refs: Any) -> Generator[Any, None, None]:
        """The items of a shard's generator (events, deltas, a reader's floor), errors
        translated as `_get` does; closing it early cancels the shard's generator."""
        finished = False
        try:
            while True:
                try:
                    ref = next(refs)
                except StopIteration:
                    finished = True
                    return
                except self._ray.exceptions.RayError as error:
                    raise self._translated(index, error) from None
                yield self._get(index, ref)
        finally:
            if not finished:
                with contextlib.suppress(Exception):
                    self._ray.cancel(refs)

    async def _arelay(self, index: int, refs: Any) -> AsyncGenerator[Any, None]:
        finished = False
        try:
            while True:
                try:
                    ref = await refs.__anext__()
                except StopAsyncIteration:
                    finished = True
                    return
                except self._ray.exceptions.RayError as error:
                    raise self._translated(index, error) from None
                yield await self._aget(index, ref)
        finally:
            if not finished:
                with contextlib.suppress(Exception):
                    self._ray.cancel(refs)

    # --- failover ---------------------------------------------------------------------------

    def _ping(self, index: int, timeout: float) -> str:
        """The shard's incarnation, waiting up to `timeout` for it to answer (a restarting
        shard answers once its constructor has run again)."""
        ray = self._ray
        deadline = time.monotonic() + timeout
        while True:
            try:
                incarnation: str = ray.get(self._shards[index].ping.remote(), timeout=_PING_TIMEOUT)
                return incarnation
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise ShardLost(
                        f"shard {self._names[index]} did not come back within {timeout:g} s"
                    ) from None
                time.sleep(0.1)  # Ray is restarting it: ask again shortly

    def _recover(self, index: int) -> None:
        """Wait for the shard to answer; if it is a new incarnation, open its sessions again
        (each resumes from its durable checkpoint). A shard that dies again meanwhile is waited
        for again, up to `restart_timeout`. Safe to call from many threads."""
        deadline = time.monotonic() + self._restart_timeout
        with self._recovering[index]:
            while True:
                try:
                    self._recover_once(index, max(0.0, deadline - time.monotonic()))
                    return
                except ShardLost:
                    if time.monotonic() > deadline:
                        raise

    def _recover_once(self, index: int, timeout: float) -> None:
        incarnation = self._ping(index, timeout)
        if incarnation == self._incarnations[index]:
            self._down.discard(index)
            return
        with self._lock:
            sessions = list(self._opened[index])
        self._get(index, self._shards[index].open_many.remote(sessions))
        self._incarnations[index] = incarnation
        self._down.discard(index)

    def _watch(self, interval: float) -> None:
        while not self._stopped:
            self._wake.wait(interval)
            self._wake.clear()
            for index in range(len(self._shards)):
                if self._stopped:
                    return
                with contextlib.suppress(ShardLost, SupervisorError):
                    self._recover(index)


@final
class _Handover:
    """An ask or stream in flight on a shard: its message's post key and its deadline, so that
    it can be sent again to the shard's next incarnation, which finds out from the session's
    log whether the dead one had posted it."""

    def __init__(
        self, session_id: str, timeout: float | None, key: str | None, maybe_sent: bool
    ) -> None:
        self.session_id = session_id
        self.key = key if key is not None else new_post_key()
        self.maybe_sent = maybe_sent
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def lost(self) -> None:
        """The shard died with it: it may have been posted."""
        self.maybe_sent = True

    def send(self, method: Any, message: str) -> Any:
        """Call the shard's `method` (`ask` or `stream`) for it, with what time is left."""
        return method.remote(self.session_id, message, self._remaining(), self.key, self.maybe_sent)

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise ReplyTimeout(
                f"session {self.session_id}: no completed reply before the deadline (its "
                "shard died and restarted meanwhile); the reply will still reach the "
                "session's events() readers",
                session_id=self.session_id,
            )
        return left


@final
class _TurnCursor:
    """What a stream has yielded: the offset after its last event, and how much of each
    streamed message's text, so that a stream resumed on a restarted shard (which gives the
    turn again from its start) yields each event and each piece of text once."""

    def __init__(self) -> None:
        self._next_offset: int | None = None
        self._texts: dict[str, tuple[int, bool]] = {}  # message id -> (characters, done)

    def fresh(self, item: Event | MessageDelta) -> Event | MessageDelta | None:
        """`item` as the caller should see it now, or None if it saw it already."""
        if self._next_offset is not None and item.offset < self._next_offset:
            return None
        if isinstance(item, MessageDelta):
            given, done = self._texts.get(item.event_id, (0, False))
            if len(item.text) < given or (len(item.text) == given and (done or not item.done)):
                return None  # nothing new (its last delta may add no text, only `done`)
            self._texts[item.event_id] = (len(item.text), item.done)
            piece = item.text[given:]
            return item if piece == item.delta else dataclasses.replace(item, delta=piece)
        self._next_offset = item.offset + 1
        self._texts.pop(item.id, None)
        return item


@final
class _Cursor:
    """Where a reader is: the offset after the last event it yielded (None: none yet), so that
    a reader resumed on a restarted shard yields each event once."""

    def __init__(self, since: int | None) -> None:
        self.next_offset = since

    def fresh(self, item: Event | int) -> bool:
        """Whether `item` is an event new to the reader (it then moves past it). An int is the
        shard's word that no event of this reader is below it: where a reader that yielded
        nothing yet resumes (events its dead shard took but never sent would be lost else)."""
        if isinstance(item, int):
            if self.next_offset is None:
                self.next_offset = item
            return False
        if self.next_offset is not None and item.offset < self.next_offset:
            return False
        self.next_offset = item.offset + 1
        return True


@final
class _ShardMetrics(Collector):
    """Every live shard's metrics, each sample labelled with its shard (no per-session label)."""

    def __init__(self, sharded: ShardedSupervisor) -> None:
        self._sharded = sharded

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        if self._sharded.stopped:
            return []
        for shard, text in self._sharded.shard_metrics().items():
            for family in text_string_to_metric_families(text.decode()):
                metric = merged.get(family.name)
                if metric is None:
                    metric = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    labels = {**sample.labels, "shard": str(shard)}
                    metric.add_sample(sample.name, labels, sample.value, sample.timestamp)
        return merged.values()
