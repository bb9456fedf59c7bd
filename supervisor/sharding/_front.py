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
    Callable,
    Generator,
    Iterable,
    Sequence,
)
from typing import Any, Final, final

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
)
from supervisor._config import SupervisorConfig
from supervisor._consumers import TurnCursor
from supervisor._extras import install_command
from supervisor._host import Ask, HostedSupervisor
from supervisor._statistics import StopSummary, SupervisorStatistics
from supervisor.sharding._placement import shard_of
from supervisor.sharding._shard import Shard

__all__ = ["INSTALL_HINT", "ShardLost", "ShardedSupervisor"]


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
class ShardedSupervisor(HostedSupervisor):
    """`SessionSupervisor`'s calls over `shards` Ray actors, each hosting a `SessionSupervisor`.

    Every call is validated here, as `SessionSupervisor` validates it, before any shard is
    called. How each call survives a shard's death is this module's docstring; beyond
    `SessionSupervisor`'s errors, a call raises `ShardLost` when its shard does not come back
    within `restart_timeout`, and an ask or stream `ReplyTimeout` when its deadline passes while
    its shard restarts.

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
        parlant_url = parlant_url.rstrip("/")
        self._ray_host = _RayHost(
            parlant_url,
            config,
            [f"{name}-shard-{n}" for n in range(shards)],
            address=address,
            cpus_per_shard=cpus_per_shard,
            max_restarts=max_restarts,
            restart_timeout=restart_timeout,
            watch_interval=watch_interval,
            stream_buffer=stream_buffer,
            log_level=log_level,
        )
        super().__init__(self._ray_host, parlant_url, config)
        self.registry = CollectorRegistry()
        self.registry.register(_ShardMetrics(self))

    @property
    def shards(self) -> int:
        """How many shards there are."""
        return len(self._ray_host.names)

    def shard_of(self, session_id: str) -> int:
        """The index of the shard hosting `session_id`."""
        return self._ray_host.shard_of(session_id)

    def shard_actor(self, index: int) -> Any:
        """The Ray actor handle of shard `index`, for operations tools (`ray.kill` it, as
        `supervisor.testing.kill_shard` does; Ray restarts it)."""
        return self._ray_host.actors[index]

    def shard_memory(self) -> dict[int, int]:
        """Each live shard process' resident memory in bytes, by shard index (Linux; 0 where
        the process cannot tell)."""
        return self._ray_host.from_live_shards("rss")

    def shard_metrics(self) -> dict[int, bytes]:
        """Each live shard's metrics in Prometheus' text format, by shard index (a dead or
        silent shard is left out)."""
        return self._ray_host.from_live_shards("metrics")


@final
class _RayHost:
    """The sessions on Ray actors (`Shard`s), each session on the shard its id hashes to."""

    def __init__(
        self,
        parlant_url: str,
        config: SupervisorConfig,
        names: list[str],
        *,
        address: str | None,
        cpus_per_shard: float,
        max_restarts: int,
        restart_timeout: float,
        watch_interval: float,
        stream_buffer: int,
        log_level: int,
    ) -> None:
        ray = self._ray = _import_ray()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(address=address, include_dashboard=False)
        self.names = names
        self._restart_timeout = restart_timeout
        self._stream_options = {"_generator_backpressure_num_objects": stream_buffer}
        actor = ray.remote(Shard)
        self.actors: list[Any] = [
            actor.options(
                name=shard_name,
                max_restarts=max_restarts,
                max_task_retries=0,
                num_cpus=cpus_per_shard,
                max_concurrency=10_000,  # every open stream and reader holds one
            ).remote(shard_name, parlant_url, config, log_level)
            for shard_name in names
        ]
        shards = len(names)
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
        self._watcher = threading.Thread(
            target=self._watch, args=(watch_interval,), name="shard-watcher", daemon=True
        )
        self._watcher.start()

    # --- placement --------------------------------------------------------------------------

    def shard_of(self, session_id: str) -> int:
        return shard_of(session_id, self.names)

    def _track(self, session_id: str) -> int:
        """The session's shard, which will open it again if it restarts."""
        index = self.shard_of(session_id)
        with self._lock:
            self._opened[index].add(session_id)
        return index

    def _any_shard(self) -> int:
        with self._lock:
            self._round_robin = (self._round_robin + 1) % len(self.actors)
            return self._round_robin

    # --- requests to Parlant, through a shard -----------------------------------------------

    def create_session(self, agent_id: str, customer_id: str | None, title: str | None) -> str:
        # created by any shard, polled by the one its id hashes to (the facade opens it there)
        session_id: str = self._once(
            self._any_shard(),
            lambda shard: shard.create_session.remote(agent_id, customer_id, title),
        )
        return session_id

    async def acreate_session(
        self, agent_id: str, customer_id: str | None, title: str | None
    ) -> str:
        session_id: str = await self._aonce(
            self._any_shard(),
            lambda shard: shard.create_session.remote(agent_id, customer_id, title),
        )
        return session_id

    def create_customer(self, name: str) -> str:
        customer_id: str = self._once(
            self._any_shard(), lambda shard: shard.create_customer.remote(name)
        )
        return customer_id

    async def acreate_customer(self, name: str) -> str:
        customer_id: str = await self._aonce(
            self._any_shard(), lambda shard: shard.create_customer.remote(name)
        )
        return customer_id

    def ensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        ids: dict[str, str] = self._again(
            self._any_shard(), lambda shard: shard.ensure_agents.remote(names)
        )
        return ids

    async def aensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        return await asyncio.to_thread(self.ensure_agents, names)

    def history(self, session_id: str, since: int) -> list[Event]:
        events: list[Event] = self._again(
            self.shard_of(session_id), lambda shard: shard.history.remote(session_id, since)
        )
        return events

    async def ahistory(self, session_id: str, since: int) -> list[Event]:
        return await asyncio.to_thread(self.history, session_id, since)

    def check_parlant(self, timeout: float | None) -> None:
        self._again(self._any_shard(), lambda shard: shard.check_parlant.remote(timeout))

    async def acheck_parlant(self, timeout: float | None) -> None:
        await asyncio.to_thread(self.check_parlant, timeout)

    # --- sessions ---------------------------------------------------------------------------

    def open(self, session_id: str, since: int | None) -> None:
        # a message, not a call waited for: opening 10,000 sessions one round trip each took
        # 55 s. Ray runs one caller's calls to a shard in the order they were sent.
        index = self._track(session_id)
        self.actors[index].open.remote(session_id, since)

    def close(self, session_id: str) -> None:
        index = self.shard_of(session_id)
        with self._lock:
            self._opened[index].discard(session_id)
        self._again(index, lambda shard: shard.close.remote(session_id))

    def sessions(self) -> list[str]:
        return [
            session_id
            for index in range(len(self.actors))
            for session_id in self._again(index, lambda shard: shard.sessions.remote())
        ]

    # --- conversations ----------------------------------------------------------------------

    def ask(self, call: Ask) -> Reply:
        index = self._track(call.session_id)
        handover = _Handover(call)
        while True:
            try:
                reply: Reply = self._once(index, lambda shard: handover.send(shard.ask))
                return reply
            except ShardLost:
                handover.lost()
                self._recover(index)

    async def aask(self, call: Ask) -> Reply:
        index = self._track(call.session_id)
        handover = _Handover(call)
        while True:
            try:
                reply: Reply = await self._aonce(index, lambda shard: handover.send(shard.ask))
                return reply
            except ShardLost:
                handover.lost()
                await asyncio.to_thread(self._recover, index)

    def stream(self, call: Ask) -> Generator[Event | MessageDelta, None, None]:
        index = self._track(call.session_id)
        if index in self._down:
            self._recover(index)
        handover = _Handover(call)
        refs = handover.send(self._stream_method(index))
        return self._handed_over(index, handover, refs)

    def _handed_over(
        self, index: int, handover: _Handover, refs: Any
    ) -> Generator[Event | MessageDelta, None, None]:
        cursor = TurnCursor()
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
            refs = handover.send(self._stream_method(index))

    def astream(self, call: Ask) -> AsyncGenerator[Event | MessageDelta, None]:
        # on a shard known to be down, the message is posted once it is back, at the first
        # iteration
        index = self._track(call.session_id)
        handover = _Handover(call)
        refs = None if index in self._down else handover.send(self._stream_method(index))
        return self._ahanded_over(index, handover, refs)

    async def _ahanded_over(
        self, index: int, handover: _Handover, refs: Any
    ) -> AsyncGenerator[Event | MessageDelta, None]:
        cursor = TurnCursor()
        while True:
            if refs is None:
                await asyncio.to_thread(self._recover, index)
                refs = handover.send(self._stream_method(index))
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

    def _stream_method(self, index: int) -> Any:
        return self.actors[index].stream.options(**self._stream_options)

    def events(self, session_id: str, since: int | None) -> Generator[Event, None, None]:
        # subscribed at once; if the shard dies, the reader goes on on the restarted shard
        # from the event after the last one it yielded
        index = self._track(session_id)
        refs = self._shard_stream(index, "events", session_id, since)
        return self._resuming(index, session_id, since, refs)

    def _resuming(
        self, index: int, session_id: str, since: int | None, refs: Any
    ) -> Generator[Event, None, None]:
        cursor = TurnCursor(since)
        while True:
            try:
                for item in self._relay(index, refs):
                    event = _reader_event(cursor, item)
                    if event is not None:
                        yield event
                return
            except ShardLost:
                self._recover(index)
            refs = self._shard_stream(index, "events", session_id, cursor.next_offset)

    def aevents(self, session_id: str, since: int | None) -> AsyncGenerator[Event, None]:
        index = self._track(session_id)
        refs = self._shard_stream(index, "events", session_id, since)
        return self._aresuming(index, session_id, since, refs)

    async def _aresuming(
        self, index: int, session_id: str, since: int | None, refs: Any
    ) -> AsyncGenerator[Event, None]:
        cursor = TurnCursor(since)
        while True:
            relay = self._arelay(index, refs)
            try:
                async for item in relay:
                    event = _reader_event(cursor, item)
                    if event is not None:
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
                for index in range(len(self.actors))
            ]
        )

    def stop(self, timeout: float) -> StopSummary:
        """Stop every shard's supervisor, then the shards (and Ray, if this started it); the
        summary adds up the shards'."""
        self._stopped = True
        self._wake.set()
        self._watcher.join(_PING_TIMEOUT)
        stopping = [shard.stop.remote(timeout) for shard in self.actors]  # all at once
        summaries: list[StopSummary] = []
        met = True
        for index, ref in enumerate(stopping):
            try:
                summaries.append(self._get(index, ref, timeout=timeout + _PING_TIMEOUT))
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
        for shard in self.actors:
            with contextlib.suppress(Exception):
                self._ray.kill(shard, no_restart=True)
        if self._owns_ray:
            self._ray.shutdown()

    def from_live_shards(self, method: str) -> dict[int, Any]:
        """Each shard's answer to `method()`, by index; one dead or silent is left out."""
        answers = {}
        for index, shard in enumerate(self.actors):
            with contextlib.suppress(ShardLost, self._ray.exceptions.GetTimeoutError):
                call = getattr(shard, method).remote()
                answers[index] = self._get(index, call, timeout=_METRICS_TIMEOUT)
        return answers

    # --- calling shards ---------------------------------------------------------------------

    def _shard_stream(self, index: int, method: str, *args: Any) -> Any:
        return getattr(self.actors[index], method).options(**self._stream_options).remote(*args)

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
                f"shard {self.names[index]} died during the call ({type(error).__name__}); "
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
        return self._get(index, call(self.actors[index]))

    async def _aonce(self, index: int, call: Callable[[Any], Any]) -> Any:
        if index in self._down:
            await asyncio.to_thread(self._recover, index)
        return await self._aget(index, call(self.actors[index]))

    def _again(self, index: int, call: Callable[[Any], Any]) -> Any:
        """An idempotent call, sent again (once the shard is back) if its shard dies."""
        deadline = time.monotonic() + self._restart_timeout
        while True:
            try:
                return self._get(index, call(self.actors[index]))
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
                incarnation: str = ray.get(self.actors[index].ping.remote(), timeout=_PING_TIMEOUT)
                return incarnation
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise ShardLost(
                        f"shard {self.names[index]} did not come back within {timeout:g} s"
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
        self._get(index, self.actors[index].open_many.remote(sessions))
        self._incarnations[index] = incarnation
        self._down.discard(index)

    def _watch(self, interval: float) -> None:
        while not self._stopped:
            self._wake.wait(interval)
            self._wake.clear()
            for index in range(len(self.actors)):
                if self._stopped:
                    return
                with contextlib.suppress(ShardLost, SupervisorError):
                    self._recover(index)


@final
class _Handover:
    """An ask or stream in flight on a shard: its message's post key and its deadline, so that
    it can be sent again to the shard's next incarnation, which finds out from the session's
    log whether the dead one had posted it (the recovery a restarted actor runs too:
    `maybe_sent` with the post key)."""

    def __init__(self, call: Ask) -> None:
        self._call = call
        self.maybe_sent = call.maybe_sent
        self._deadline = None if call.timeout is None else time.monotonic() + call.timeout

    def lost(self) -> None:
        """The shard died with it: it may have been posted."""
        self.maybe_sent = True

    def send(self, method: Any) -> Any:
        """Call the shard's `method` (`ask` or `stream`) for it, with what time is left."""
        call = self._call
        return method.remote(
            call.session_id, call.message, self._remaining(), call.post_key, self.maybe_sent
        )

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            session_id = self._call.session_id
            raise ReplyTimeout(
                f"session {session_id}: no completed reply before the deadline (its "
                "shard died and restarted meanwhile); the reply will still reach the "
                "session's events() readers",
                session_id=session_id,
            )
        return left


def _reader_event(cursor: TurnCursor, item: Event | int) -> Event | None:
    """A reader's item from its shard as the caller should see it: an event new to it, or
    None. An int is the shard's word that no event of this reader is below it: where a reader
    that yielded nothing yet resumes (events its dead shard took but never sent would be lost
    else)."""
    if isinstance(item, int):
        cursor.floor(item)
        return None
    fresh = cursor.fresh(item)
    assert fresh is None or isinstance(fresh, Event)
    return fresh


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
