"""Runtime: builds every part of one supervisor, in its start order, and stops them in reverse.

The facade (`SessionSupervisor`) validates calls and turns them into messages; everything it
runs on is built, wired and stopped here, in one place, and nothing is patched in after
construction. Start order (each part needs only those above it):

1. the metrics (counters and histograms on the caller's registry);
2. the I/O loop and its thread, then the clock (its timers run on that loop);
3. the request budget, then the Parlant API (posts, reads, checkpoints), the poller and the
   follower, which share it, all on the I/O loop;
4. the dispatcher's worker threads, the checkpoint memory and the board, then the
   `SessionRuntime` that every session actor shares (immutable);
5. the Supervisor actor (its own thread), which spawns session actors with itself as parent.

`stop()` takes them down in the reverse order; `docs/ARCHITECTURE.md` §4 says why each step
comes where it does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar, final

import pykka
from prometheus_client import CollectorRegistry

from actors import SessionSnapshot, SupervisorError, SupervisorStopped
from actors.runtime import (
    Barrier,
    Budget,
    Changes,
    CheckpointMemory,
    Clock,
    Deadline,
    Dispatcher,
    Follower,
    IOLoop,
    Kill,
    Message,
    ParlantApi,
    Poller,
    Recorder,
    Route,
    SessionActor,
    SessionBoard,
    SessionRuntime,
    SystemClock,
    notifying,
    translate_error,
)
from metrics import SupervisorMetrics
from supervisor._config import SupervisorConfig
from supervisor._statistics import SupervisorStatistics
from supervisor._supervisor import (
    Directory,
    SessionRefs,
    StopAll,
    Supervisor,
    WhichThread,
    tell_live,
)

__all__ = ["Runtime"]

T = TypeVar("T")
_ASK_TIMEOUT: Final = 10.0
"""Real seconds a tool's question to the Supervisor actor may take (it never blocks)."""


def _stopped_during(session_id: str | None) -> SupervisorStopped:
    return SupervisorStopped("the supervisor stopped during the call", session_id=session_id)


async def _nothing() -> None:
    """A coroutine that returns at once: it has run once everything queued before it has."""


@final
class Runtime:
    """The threads, loop and actors of one `SessionSupervisor` (see the module docstring).

    Reached through `SessionSupervisor.runtime`; for tools and tests (`supervisor.testing`'s
    `settle` and `kill_session_actor` use it), not for application code.

    Attributes:
        config: The configuration every part was built from.
        metrics: The counters and histograms.
        io: The I/O loop (its thread runs every request and timer).
        clock: The clock of the sessions' timers.
        api: Parlant's API, on the I/O loop.
        sessions: What every session actor shares.
    """

    def __init__(
        self,
        parlant_url: str,
        config: SupervisorConfig,
        registry: CollectorRegistry,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.metrics = SupervisorMetrics(registry)
        self.changes = Changes()
        recorder = notifying(self.metrics, self.changes)
        self.io = IOLoop()
        self.io.start()
        try:
            self._assemble(parlant_url, config, recorder, clock)
        except BaseException:
            # a part refused its configuration: nothing it started may outlive it
            supervisor: pykka.ActorRef[Supervisor] | None = getattr(self, "_supervisor", None)
            if supervisor is not None:
                supervisor.stop(block=False)
            sessions: SessionRuntime | None = getattr(self, "sessions", None)
            if sessions is not None:
                sessions.dispatcher.shutdown(_ASK_TIMEOUT)
            self.io.stop()
            self.metrics.unregister()
            raise

    def _assemble(
        self, parlant_url: str, config: SupervisorConfig, recorder: Recorder, clock: Clock | None
    ) -> None:
        self.clock = clock or SystemClock(self.io)
        # on the I/O thread, like every request it shapes
        budget = Budget(config.request_budget, self.io.loop.time, self.metrics.budget_waited)
        self.api = ParlantApi(
            parlant_url,
            headers=config.headers,
            concurrency=config.request_concurrency,
            retries=config.request_retries,
            max_body=config.max_response_bytes,
            request_timeout=config.request_timeout,
            post_grace=config.post_grace,
            budget=budget,
        )
        poller = Poller(
            self.io,
            parlant_url,
            recorder,
            headers=config.headers,
            timeout_margin=config.poll_timeout_margin,
            max_body=config.max_response_bytes,
            budget=budget,
            ceiling=config.poll_ceiling(),
        )
        follower = Follower(
            self.io,
            self.api,
            headers=config.headers,
            wait_for_data=config.wait_for_data,
            timeout_margin=config.poll_timeout_margin,
            reread_interval=config.stream_reread_interval,
            backoff=config.backoff,
            max_body=config.max_response_bytes,
        )
        self.sessions = SessionRuntime(
            io=self.io,
            dispatcher=Dispatcher(config.actor_threads),
            poller=poller,
            follower=follower,
            api=self.api,
            clock=self.clock,
            recorder=recorder,
            settings=config.session_settings(),
            checkpoints=CheckpointMemory(
                self.clock.now, capacity=config.max_checkpoints, ttl=config.checkpoint_ttl
            ),
            board=SessionBoard(),
            rng=random.Random(),
            changes=self.changes,
        )
        self._directory: Directory = {}
        self._supervisor = Supervisor.start(self.sessions, config.restart_policy, self._directory)
        thread = self._supervisor.ask(WhichThread(), block=True, timeout=_ASK_TIMEOUT)
        assert isinstance(thread, threading.Thread)
        self._supervisor_thread = thread

    # --- for the facade -------------------------------------------------------------------

    @property
    def supervisor(self) -> pykka.ActorRef[Supervisor]:
        """The Supervisor actor (it spawns, restarts and stops the session actors)."""
        return self._supervisor

    def tell(self, message: object, session_id: str | None = None) -> None:
        """Tell the Supervisor actor `message`.

        Raises:
            SupervisorStopped: The Supervisor actor is stopped.
        """
        try:
            self._supervisor.tell(message)
        except pykka.ActorDeadError:
            raise SupervisorStopped(
                "the supervisor is stopped; create a new one to continue", session_id=session_id
            ) from None

    def route(self, session_id: str, message: Message | Kill) -> None:
        """Deliver `message` to the session's actor: told directly while one lives, else
        through the Supervisor actor, which spawns one for a new consumer.

        Raises:
            SupervisorStopped: The Supervisor actor is stopped.
        """
        if not tell_live(self._directory, session_id, message):
            self.tell(Route(session_id, message), session_id)  # it knows what comes next

    def route_quietly(self, session_id: str, message: Message | Kill) -> None:
        """`route` for housekeeping: after shutdown there is nobody to tell, and nothing to."""
        with contextlib.suppress(SupervisorStopped):
            self.route(session_id, message)

    def call(self, coroutine: Coroutine[Any, Any, T], session_id: str | None = None) -> T:
        """Run one of the API's coroutines on the I/O loop and wait for it on this thread
        (no event loop of the caller's: none is started). Each request of it is bounded by
        `request_timeout` (and its retries by `request_retries`); a stop meanwhile ends the
        wait with `SupervisorStopped`.

        Raises:
            The library's error for a failed request (`translate_error`); SupervisorStopped
            when the loop stops meanwhile; RuntimeError on a running event loop, which the
            wait would block (the `a`-prefixed twins are for it).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coroutine.close()
            raise RuntimeError(
                "a blocking SessionSupervisor call was made on a running event loop; "
                "use its asyncio twin (the `a`-prefixed method) instead"
            )
        try:
            return self.io.submit(coroutine).result()
        except concurrent.futures.CancelledError:  # the loop stopped before it could finish
            raise _stopped_during(session_id) from None
        except SupervisorError:
            raise
        except Exception as error:
            raise self._failure(error, session_id) from error

    async def acall(self, coroutine: Coroutine[Any, Any, T], session_id: str | None = None) -> T:
        """Asyncio twin of `call`: await one of the API's coroutines, run on the I/O loop."""
        submitted = self.io.submit(coroutine)
        try:
            return await asyncio.wrap_future(submitted)
        except asyncio.CancelledError:
            if not submitted.cancelled():
                raise  # the caller's own cancellation
            raise _stopped_during(session_id) from None
        except SupervisorError:
            raise
        except Exception as error:
            raise self._failure(error, session_id) from error

    def _failure(self, error: Exception, session_id: str | None) -> SupervisorError:
        """The caller's error for a request on the I/O loop that failed."""
        if self.io.stopped:
            return _stopped_during(session_id)
        return translate_error(error, self.api.base_url, session_id)

    def statistics(self, *, running: bool) -> SupervisorStatistics:
        """The figures now, from what the parts publish (no actor is asked)."""
        board, poller = self.sessions.board, self.sessions.poller
        return SupervisorStatistics.collect(
            running=running,
            snapshots=board.snapshots(),
            mailbox_depths=list(board.mailbox_depths()),
            sessions_started_total=board.started_total,
            open_polls=poller.open_polls,
            upstream=poller.upstream_state.value,
            held_polls=poller.held_polls,
            waiting_polls=poller.waiting_polls,
            rotating_polls=poller.rotating_polls,
            poll_ceiling=poller.ceiling.max_waiting,
        )

    def stop(self, error: SupervisorError, budget: float) -> bool:
        """Stop everything, in the reverse of the start order, within `budget` real seconds.

        Returns:
            Whether every step finished in time (every thread joined).
        """
        deadline = Deadline(budget)
        sessions = self.sessions
        met = True
        sessions.poller.shut()  # every poll at once, not 10,000 releases one by one
        sessions.follower.shut()
        try:
            self._supervisor.ask(StopAll(error), block=True, timeout=budget)
        except pykka.ActorDeadError:
            pass  # the supervisor crashed and already stopped its sessions
        except pykka.Timeout:
            met = False
        met &= sessions.dispatcher.wait_all_stopped(deadline.remaining())
        with contextlib.suppress(pykka.Timeout):
            self._supervisor.stop(timeout=max(0.1, deadline.remaining()))
        try:
            # the final checkpoint writes finish inside the API's close
            self.io.submit(self._close_http()).result(timeout=max(0.1, deadline.remaining()))
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            met = False
        met &= self.io.stop(timeout=max(0.1, deadline.remaining()))
        met &= sessions.dispatcher.shutdown(max(0.1, deadline.remaining()))
        if self._supervisor_thread is not threading.current_thread():
            self._supervisor_thread.join(max(0.1, deadline.remaining()))
        met &= not any(thread.is_alive() for thread in self.threads())
        self.metrics.unregister()
        return met

    async def _close_http(self) -> None:
        await self.sessions.poller.aclose()
        await self.sessions.follower.aclose()
        await self.api.aclose()

    # --- for tools and tests --------------------------------------------------------------

    def threads(self) -> list[threading.Thread]:
        """Every thread this runtime started (after `stop()`, none is alive)."""
        return [self.io.thread, self._supervisor_thread, *self.sessions.dispatcher.threads]

    def quiet(self, deadline: Deadline) -> bool:
        """Pass a barrier through the Supervisor actor, every session actor and the I/O
        loop; True if every mailbox was empty afterwards (nothing was left to handle).

        Raises:
            TimeoutError: An actor or the loop did not answer before `deadline`.
        """
        try:
            refs: list[pykka.ActorRef[SessionActor]] = self._supervisor.ask(
                SessionRefs(), block=True, timeout=deadline.remaining()
            )
            for ref in refs:
                with contextlib.suppress(pykka.ActorDeadError):
                    ref.ask(Barrier(), timeout=deadline.remaining())
            self.io.submit(_nothing()).result(timeout=deadline.remaining())
        except (pykka.Timeout, concurrent.futures.TimeoutError) as error:
            raise TimeoutError("the actors are still busy") from error
        if not self._supervisor.actor_inbox.empty():
            return False
        return not any(self.sessions.board.mailbox_depths())

    def snapshot(self, session_id: str) -> SessionSnapshot | None:
        """The session's latest published snapshot (None: no live actor has published one)."""
        return self.sessions.board.snapshot(session_id)

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Block until `condition()` (which reads state: statistics, snapshots, metrics) is
        true, re-evaluated after each observable change; False if `timeout` came first."""
        return self.changes.wait_until(condition, timeout)

    def registry_figures(self) -> tuple[int, int]:
        """What the supervision holds: (live session actors, consumers they feed)."""
        refs: list[pykka.ActorRef[SessionActor]] = self._supervisor.ask(
            SessionRefs(), block=True, timeout=_ASK_TIMEOUT
        )
        registrations = 0
        for ref in refs:
            with contextlib.suppress(pykka.ActorDeadError):
                count: int = ref.ask(Barrier(), block=True, timeout=_ASK_TIMEOUT)
                registrations += count
        return len(refs), registrations
