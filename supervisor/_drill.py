"""Failure-recovery drills: conversations under injected faults, checked against the server's log.

Each scenario opens `sessions` Parlant sessions behind a `FaultProxy`, holds `turns` asks in
each (every message unique) with an `events()` reader per session, and injects its faults while
they run. The accounting never trusts the supervisor: it reads every session's event log from
the server directly (not through the proxy) and checks each reader's offsets against it (lost,
duplicated), each answered ask against the agent messages the server wrote after that very
customer message (mis-attributed), and, with a streaming agent, each message a reader got
against the whole message in the log (partial). A drill passes when nothing was lost,
duplicated, mis-attributed or partial and every ask was answered or failed with a clear error
before its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Literal

import httpx

from actors import (
    Backoff,
    ReplyTimeout,
    RequestBudget,
    RestartPolicy,
    SessionNotFound,
    SupervisorError,
    SupervisorStopped,
)
from actors.events import METADATA_NAMESPACE, PREAMBLE_TAG, message_text
from supervisor._config import SupervisorConfig
from supervisor._facade import SessionSupervisor
from supervisor._protocol import Supervising
from supervisor.testing import (
    Delay,
    Drop,
    EmulatedAgent,
    EmulatorServer,
    FarEmulator,
    Fault,
    FaultProxy,
    Hang,
    ParlantEmulator,
    ProxyRecord,
    Reset,
    ResetMidResponse,
    Respond,
    echo,
    kill_session_actor,
    kill_shard,
    namespaces_unavailable,
)

__all__ = ["SCENARIOS", "DrillOptions", "ScenarioReport", "run_scenario"]

_AGENT: Final = "DrillEchoAgent"
_STREAMING_AGENT: Final = "DrillStreamingAgent"
"""Streams its answers (`output_mode=STREAM`), one word a chunk."""
_POLLS: Final = r"^/sessions/[^/]+/events$"
_POLLS_AND_FOLLOWS: Final = r"^/sessions/[^/]+/events(/[^/]+)?$"
"""Long-polls, and the `read_event?sse=true` streams that follow streamed messages."""
_SETTLE_TIMEOUT: Final = 60.0


@dataclass(frozen=True, slots=True)
class DrillOptions:
    """The size of a drill.

    Attributes:
        sessions: Sessions per scenario, conversing concurrently.
        turns: Asks per session, one after the other.
        faults: Faults each scenario aims to inject (scenarios bounded by the sessions inject
            fewer: one deletion or one outage per session at most).
        seed: Seeds every random choice (faults, which sessions, message nonces).
        parlant_url: A Parlant server to drill against; None starts the emulator.
        ask_timeout: Each ask's deadline, in seconds.
    """

    sessions: int = 30
    turns: int = 5
    faults: int = 120
    seed: int = 0
    parlant_url: str | None = None
    ask_timeout: float = 60.0


@dataclass(slots=True)
class ScenarioReport:
    """What one scenario did and found."""

    scenario: str
    faults: int = 0
    asks: int = 0
    answered: int = 0
    failed_clearly: int = 0
    timed_out: int = 0
    lost: int = 0
    duplicated: int = 0
    misattributed: int = 0
    partial: int = 0
    duplicate_posts: int = 0
    recovery_p50: float | None = None
    recovery_p99: float | None = None
    recovery_max: float | None = None
    restarts: int = 0
    seconds: float = 0.0
    skipped: str | None = None
    errors: dict[str, int] = field(default_factory=dict)
    expected_errors: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """Nothing lost, duplicated, mis-attributed or partial, no message stored twice;
        every ask answered, or failed with an error its scenario expects (a deleted session's
        `SessionNotFound`: every other fault is transient, and an ask rides it out); and at
        least one fault met (a scenario that injected none proved nothing)."""
        clean = (
            self.lost == self.duplicated == self.misattributed == self.partial == 0
            and self.timed_out == self.duplicate_posts == 0
        )
        expected = all(error in self.expected_errors for error in self.errors)
        return (
            clean
            and expected
            and self.asks == self.answered + self.failed_clearly
            and self.faults > 0
        )

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        return {**asdict(self), "passed": self.passed}


@dataclass(slots=True)
class _Ask:
    session_id: str
    message: str
    reply: str | None = None
    error: str | None = None
    timed_out: bool = False


@dataclass(slots=True)
class _Rig:
    """What a scenario's fault injector may touch."""

    options: DrillOptions
    rng: random.Random
    wire: FaultProxy | None  # None when the faults are a real link's (`far`)
    supervisor: Supervising
    truth: httpx.AsyncClient
    sessions: list[str]
    emulator: EmulatorServer | None
    finished: asyncio.Event
    far: FarEmulator | None = None
    faults: int = 0
    marks: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    answers: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    deleted: set[str] = field(default_factory=set)
    completed: int = 0  # asks that ended, however
    dropped: int = 0  # packets the link dropped, counted in faults

    @property
    def proxy(self) -> FaultProxy:
        """The fault proxy between the supervisor and the server (proxy scenarios only)."""
        if self.wire is None:
            raise RuntimeError("this scenario's faults are a real link's: it has no proxy")
        return self.wire

    @property
    def link(self) -> FarEmulator:
        """The server across a real link (`far` scenarios only)."""
        if self.far is None:
            raise RuntimeError("this scenario has no real link")
        return self.far

    def injected(self) -> int:
        """Faults so far: the injectors' own (packets the link dropped among them) and the
        proxy's."""
        return self.faults + (self.wire.injected.total() if self.wire is not None else 0)

    async def count_drops(self) -> None:
        """Add the packets the link dropped since the last count to the faults."""
        dropped = await asyncio.to_thread(self.link.namespace.dropped)
        self.faults += dropped - self.dropped
        self.dropped = dropped

    def mark_all(self) -> None:
        """Every session met a fault now (an outage, a restart)."""
        now = time.monotonic()
        for session_id in self.sessions:
            self.marks[session_id].append(now)
        self.faults += len(self.sessions)

    async def pause(self, seconds: float) -> bool:
        """Sleep unless the conversations finish first; True if they are still running."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.finished.wait(), seconds)
        return not self.finished.is_set()


Injector = Callable[[_Rig], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named way of failing: its faults, and the supervisor settings it needs.

    Attributes:
        inject: Runs beside the conversations, injecting faults until they finish.
        config: Adjusts the drill's supervisor settings (e.g. a short idle TTL).
        readers: "live" readers from the start, "final" ones reading the whole log after the
            conversations (so that sessions can go idle), or "stalled" ones that subscribe but
            do not read for a second (their sessions pause polling).
        pause_between_turns: A customer's think time; 0 draws one at random (50-300 ms).
        needs_emulator: Only the embedded emulator can do it (it restarts the server).
        shards: Run the conversations on a `ShardedSupervisor` of this many shards (on a
            local Ray instance) instead of one `SessionSupervisor`.
        streaming: Converse with an agent that streams its answers; every other turn is then
            read live (`astream_text`) instead of asked.
        production: The emulator enforces Parlant's production policy (on `RATE_WINDOW`),
            and the supervisor runs the same budget (`RequestBudget.parlant_production`).
        sessions: Sessions for this scenario (None: the drill's `--sessions`).
        turns: Turns per session for this scenario (None: the drill's `--turns`).
        expected_errors: The errors (class names) that may fail an ask here; any other
            fails the scenario.
        far: The server runs in a network namespace of its own, reached over a veth pair
            (needs root, iproute2 and iptables), with no proxy: the faults are the link's.
    """

    name: str
    description: str
    inject: Injector
    config: Callable[[SupervisorConfig], SupervisorConfig] = lambda config: config
    readers: Literal["live", "final", "stalled"] = "live"
    pause_between_turns: float = 0.0
    needs_emulator: bool = False
    shards: int = 0
    streaming: bool = False
    production: bool = False
    sessions: int | None = None
    turns: int | None = None
    expected_errors: tuple[str, ...] = ()
    far: FarLink | None = None

    def sized(self, options: DrillOptions) -> DrillOptions:
        """`options` with this scenario's own sessions and turns, where it has them."""
        return replace(
            options, sessions=self.sessions or options.sessions, turns=self.turns or options.turns
        )


@dataclass(frozen=True, slots=True)
class FarLink:
    """A far scenario's link: with a `delay`, a relay in the server's namespace holds each
    chunk that long plus up to `jitter` more (this kernel has no netem)."""

    delay: float = 0.0
    jitter: float = 0.0


RATE_WINDOW: Final = 3.0
"""The `rate-budget` scenario's policy: Parlant's production limits per 3 s instead of per
minute, the same shaping 20 times faster (30 customer messages a window: its 100 sessions need
four windows, so the budget must hold requests back)."""


def _chaos(
    faults: Sequence[Fault], rate: float, post_rate: float = 0.0, path: str = _POLLS
) -> Injector:
    """Faults drawn at random (seeded) for `rate` of the polls (the GETs `path` matches), up to
    the fault budget; with `post_rate`, that share of the budget is also aimed at message
    posts."""

    async def inject(rig: _Rig) -> None:
        seed = rig.rng.randrange(2**32)
        rig.proxy.chaos(rate, faults, seed=seed, limit=rig.options.faults, method="GET", path=path)
        await rig.finished.wait()
        rig.proxy.calm()

    async def inject_with_posts(rig: _Rig) -> None:
        # a post broken on the wire may or may not have been written: its ask fails with a
        # clear error, and its reply (if any) still reaches the readers
        rig.proxy.inject(
            *[rig.rng.choice(faults) for _ in range(max(1, int(post_rate * rig.options.faults)))],
            method="POST",
            path=_POLLS,
        )
        await inject(rig)

    return inject_with_posts if post_rate else inject


async def _kill_actors(rig: _Rig, budget: int | None = None) -> None:
    assert isinstance(rig.supervisor, SessionSupervisor)
    kills = budget if budget is not None else rig.options.faults
    while kills > 0 and await rig.pause(rig.rng.uniform(0.005, 0.03)):
        session_id = rig.rng.choice(rig.sessions)
        kill_session_actor(rig.supervisor, session_id, "killed by the drill")
        rig.marks[session_id].append(time.monotonic())
        rig.faults += 1
        kills -= 1


async def _outages(
    rig: _Rig,
    count: int = 3,
    pause: tuple[float, float] = (0.2, 0.6),
    down: tuple[float, float] = (0.3, 0.8),
) -> None:
    """`count` outages, each after a pause and lasting `down` seconds (uniform in the ranges)."""
    for _ in range(count):
        if not await rig.pause(rig.rng.uniform(*pause)):
            return
        rig.mark_all()
        rig.proxy.refuse()
        await asyncio.sleep(rig.rng.uniform(*down))
        rig.proxy.accept()


async def _server_restarts(rig: _Rig) -> None:
    assert rig.emulator is not None
    for _ in range(2):
        if not await rig.pause(rig.rng.uniform(0.2, 0.6)):
            return
        rig.mark_all()  # down for a while: the proxy answers 502
        await asyncio.to_thread(rig.emulator.restart, rig.rng.uniform(0.1, 0.4))


async def _delete_sessions(rig: _Rig) -> None:
    victims = rig.rng.sample(rig.sessions, max(1, len(rig.sessions) // 4))
    for session_id in victims:
        if not await rig.pause(rig.rng.uniform(0.05, 0.3)):
            return
        response = await rig.truth.delete(f"/sessions/{session_id}")
        if response.status_code in (200, 204):
            rig.deleted.add(session_id)
            rig.faults += 1


async def _kill_shards(rig: _Rig) -> None:
    """Kill a shard's process every second or two (Ray restarts it) while the conversations
    run; every session it hosted met the fault."""
    from supervisor.sharding import ShardedSupervisor

    sharded = rig.supervisor
    assert isinstance(sharded, ShardedSupervisor)
    pause = (0.2, 0.6)  # the first while the first turns run
    while await rig.pause(rig.rng.uniform(*pause)):
        victim = rig.rng.randrange(sharded.shards)
        now = time.monotonic()
        hosted = [s for s in rig.sessions if sharded.shard_of(s) == victim]
        for session_id in hosted:
            rig.marks[session_id].append(now)
        rig.faults += len(hosted)
        await asyncio.to_thread(kill_shard, sharded, victim)
        pause = (1.5, 3.0)  # then each shard has time to come back


_PARTITION: Final = 8.0
"""Seconds a partition lasts: longer than the far scenarios' `request_timeout` (3 s), so that
posts and polls are cut by their deadlines mid-partition (issue 28's stored-twice case)."""
_VANISHED: Final = 13.0
"""Seconds the server's host is gone: longer than the connections' user timeout (11 s), so
that TCP gives up on the established ones."""


def _far_config(config: SupervisorConfig) -> SupervisorConfig:
    return replace(config, request_timeout=3.0)


def _healed(rig: _Rig) -> None:
    """Every session's link works again now: recovery counts from here."""
    now = time.monotonic()
    for session_id in rig.sessions:
        rig.marks[session_id].append(now)


async def _partitions(rig: _Rig, count: int = 2) -> None:
    """Silent partitions (every packet dropped both ways), each `_PARTITION` seconds."""
    namespace = rig.link.namespace
    pause = (0.3, 1.0)  # the first while the first turns run
    for _ in range(count):
        if not await rig.pause(rig.rng.uniform(*pause)):
            return
        pause = (1.5, 3.0)  # then the conversations have time to go on
        await asyncio.to_thread(namespace.partition)
        await asyncio.sleep(_PARTITION)  # the fault's length, not a wait for something
        await rig.count_drops()
        await asyncio.to_thread(namespace.heal)
        _healed(rig)


async def _lost_flows(rig: _Rig, count: int = 5) -> None:
    """Every TCP flow to the server forgotten, silently, while it stays up (a NAT, a load
    balancer or conntrack losing its state), every second or so."""
    far = rig.link
    for _ in range(count):
        if not await rig.pause(rig.rng.uniform(0.5, 1.5)):
            break
        lost = await asyncio.to_thread(far.namespace.lose_flows, far.port)
        rig.faults += lost
        _healed(rig)  # new connections work at once
    await rig.finished.wait()
    await rig.count_drops()
    await asyncio.to_thread(far.namespace.heal)


async def _lossy(rig: _Rig) -> None:
    """A share of the packets lost, either way, for the whole conversation (the link's
    delay and jitter are the relay's)."""
    namespace = rig.link.namespace
    await asyncio.to_thread(namespace.lose, 0.05)
    while await rig.pause(1.0):
        await rig.count_drops()
    await rig.count_drops()
    await asyncio.to_thread(namespace.heal)


async def _vanishing(rig: _Rig, count: int = 2) -> None:
    """The server's host gone from the link (its processes frozen) for `_VANISHED` seconds,
    then back as it was."""
    far = rig.link
    pause = (0.3, 1.0)
    for _ in range(count):
        if not await rig.pause(rig.rng.uniform(*pause)):
            return
        pause = (1.5, 3.0)
        await asyncio.to_thread(far.vanish)
        rig.faults += len(rig.sessions)
        await asyncio.sleep(_VANISHED)  # the fault's length, not a wait for something
        await asyncio.to_thread(far.reappear)
        _healed(rig)


def _counter(supervisor: Supervising, name: str) -> int:
    """A counter of the supervisor's metrics registry (0 before its first increment)."""
    return int(supervisor.registry.get_sample_value(f"parlant_supervisor_{name}_total") or 0)


def _counting(name: str, *, labelled: bool = False) -> Injector:
    """For scenarios whose faults the supervisor meets by itself (reaps, backpressure pauses,
    requests the budget held back): count them from its metrics once the conversations are
    over (summed over its labels when `labelled`)."""

    async def count(rig: _Rig) -> None:
        await rig.finished.wait()
        if labelled:
            rig.faults += _labelled_counter(rig.supervisor, name)
        else:
            rig.faults += _counter(rig.supervisor, name)

    return count


def _labelled_counter(supervisor: Supervising, name: str) -> int:
    """A labelled counter of the supervisor's registry, summed over its labels."""
    total = 0.0
    for family in supervisor.registry.collect():
        if family.name == f"parlant_supervisor_{name}":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


async def _mixed(rig: _Rig) -> None:
    faults: list[Fault] = [
        Reset(),
        ResetMidResponse(),
        Drop(),
        Delay(0.2),
        Respond(500),
        Respond(503, retry_after=0.2),
        Respond(429, retry_after=0.2),
        Respond(200, body=b"<html>maintenance</html>"),
        Hang(),
    ]
    seed = rig.rng.randrange(2**32)
    limit = rig.options.faults // 2
    rig.proxy.chaos(0.3, faults, seed=seed, limit=limit, method="GET", path=_POLLS)
    kills = asyncio.ensure_future(_kill_actors(rig, budget=rig.options.faults // 4))
    await _outages(rig, count=1, pause=(0.2, 0.5), down=(0.5, 0.5))
    await rig.finished.wait()
    await kills
    rig.proxy.calm()


def _small_buffers(config: SupervisorConfig) -> SupervisorConfig:
    return replace(config, consumer_capacity=4)


def _short_ttl(config: SupervisorConfig) -> SupervisorConfig:
    return replace(config, idle_ttl=0.2)


SCENARIOS: Final[tuple[Scenario, ...]] = (
    Scenario("actor-crash", "session actors killed mid-turn", _kill_actors),
    Scenario("server-outage", "connections refused (open ones reset), then back", _outages),
    Scenario(
        "server-restart",
        "the server restarts (sessions and offsets kept)",
        _server_restarts,
        needs_emulator=True,
    ),
    Scenario(
        "5xx-burst", "500/502/503 on polls", _chaos([Respond(500), Respond(502), Respond(503)], 0.5)
    ),
    Scenario("slow-responses", "polls answered late", _chaos([Delay(0.1), Delay(0.4)], 0.5)),
    Scenario("hung-connections", "polls never answered", _chaos([Hang()], 0.3)),
    Scenario(
        "connection-resets",
        "resets before and mid-response, clean drops (a few posts too)",
        _chaos([Reset(), ResetMidResponse(), Drop()], 0.4, post_rate=0.05),
    ),
    Scenario(
        "malformed-bodies",
        "200 answers that are not events",
        _chaos([Respond(200, body=b"<html>maintenance</html>")], 0.5),
    ),
    Scenario(
        "rate-limited",
        "429 with Retry-After on polls",
        _chaos([Respond(429, retry_after=0.2)], 0.4),
    ),
    Scenario(
        "session-deleted",
        "sessions deleted mid-conversation (404)",
        _delete_sessions,
        expected_errors=("SessionNotFound",),
    ),
    Scenario(
        "ttl-expiry-mid-turn",
        "idle sessions reaped between turns, re-activated by the next ask",
        _counting("sessions_reaped"),
        config=_short_ttl,
        readers="final",
        pause_between_turns=0.5,
    ),
    Scenario(
        "buffer-full",
        "readers that stop reading (polling pauses, then resumes)",
        _counting("backpressure_pauses"),
        config=_small_buffers,
        readers="stalled",
    ),
    Scenario("mixed", "all of the above at random, with the seed", _mixed),
    Scenario(
        "rate-budget",
        "Parlant's production policy (rate limits per IP, 20x faster): the budget shapes it",
        _counting("budget_waits", labelled=True),
        production=True,
        sessions=100,
        turns=1,
        needs_emulator=True,
    ),
    Scenario(
        "stream-cuts",
        "a streaming agent; its message streams and the polls cut mid-message",
        _chaos([ResetMidResponse(), Reset(), Drop(), Delay(0.05)], 0.3, path=_POLLS_AND_FOLLOWS),
        streaming=True,
    ),
    Scenario(
        "net-partition",
        f"a real link silently partitioned for {_PARTITION:.0f} s, past request_timeout, twice",
        _partitions,
        config=_far_config,
        far=FarLink(),
    ),
    Scenario(
        "net-lost-flows",
        "every TCP flow forgotten silently, the server up (a NAT or balancer losing state)",
        _lost_flows,
        config=_far_config,
        far=FarLink(),
        pause_between_turns=1.0,  # conversations long enough for several losses
        turns=10,
    ),
    Scenario(
        "net-lossy",
        "a real link with 5% packet loss either way, 20-60 ms delay",
        _lossy,
        config=_far_config,
        far=FarLink(delay=0.02, jitter=0.04),
        pause_between_turns=0.3,
        turns=10,
    ),
    Scenario(
        "net-host-vanishes",
        f"the server's host gone from the link for {_VANISHED:.0f} s, twice, then back",
        _vanishing,
        config=_far_config,
        far=FarLink(),
    ),
    *(
        [
            Scenario(
                "shard-crash",
                "a shard's process killed mid-conversation (sessions on 2 Ray shards)",
                _kill_shards,
                shards=2,
                pause_between_turns=0.5,  # conversations long enough for several kills
            )
        ]
        if importlib.util.find_spec("ray") is not None
        else []
    ),
)
"""Every scenario, in the order `--scenario all` runs them (`shard-crash` with the [ray]
extra only)."""

_drill_names = itertools.count()


def drill_config() -> SupervisorConfig:
    """Settings that make recovery quick enough to drill hundreds of faults in seconds."""
    return SupervisorConfig(
        wait_for_data=2,
        wait_jitter=1,
        poll_timeout_margin=1.0,
        backoff=Backoff(base=0.05, cap=0.5),
        restart_policy=RestartPolicy(
            max_restarts=10_000, restart_window=60, backoff=Backoff(base=0.01, cap=0.2)
        ),
        idle_ttl=None,
    )


async def run_scenario(
    scenario: Scenario,
    options: DrillOptions,
    progress: Callable[[ScenarioReport, Supervising | None], None] = lambda r, s: None,
) -> ScenarioReport:
    """Run one scenario and account for every ask and every event."""
    report = ScenarioReport(scenario.name, expected_errors=scenario.expected_errors)
    if scenario.needs_emulator and options.parlant_url is not None:
        report.skipped = "needs the embedded emulator (it restarts the server)"
        return report
    if scenario.far is not None:
        if options.parlant_url is not None:
            report.skipped = "runs its own server in a network namespace"
            return report
        if (reason := await asyncio.to_thread(namespaces_unavailable)) is not None:
            report.skipped = reason
            return report
    started = time.monotonic()
    rng = random.Random(f"{options.seed}/{scenario.name}")
    emulator: EmulatorServer | None = None
    far: FarEmulator | None = None
    proxy: FaultProxy | None = None
    supervisor: Supervising | None = None
    truth: httpx.AsyncClient | None = None
    options = scenario.sized(options)
    try:
        if scenario.far is not None:
            link = scenario.far
            far = await asyncio.to_thread(
                lambda: FarEmulator(delay=link.delay, jitter=link.jitter, seed=rng.randrange(2**32))
            )
            upstream = far.url
        elif options.parlant_url is None:
            emulator = EmulatorServer(_emulator(scenario))
            upstream = emulator.url
        else:
            upstream = options.parlant_url
        if far is None:
            proxy = FaultProxy(upstream)
        supervisor = _supervisor(scenario, proxy.url if proxy is not None else upstream)
        # the accounting reads the server's log as another client would: its own IP, its own
        # limits, a connection of its own each time (a far link's faults must not cut it)
        truth = httpx.AsyncClient(
            base_url=upstream,
            timeout=30,
            headers={"X-Forwarded-For": "198.51.100.7"},
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        if scenario.production:
            assert emulator is not None
            # the sessions exist already, as if their users (each their own IP) had opened
            # them: the policy allows one client 10 guest sessions a window
            sessions = [
                emulator.call(emulator.emulator.create_session, _AGENT)
                for _ in range(options.sessions)
            ]
        else:
            agent_id = await _agent(truth, _STREAMING_AGENT if scenario.streaming else _AGENT)
            sessions = [await supervisor.acreate_session(agent_id) for _ in range(options.sessions)]
        rig = _Rig(options, rng, proxy, supervisor, truth, sessions, emulator, asyncio.Event(), far)
        await _run(rig, scenario, report, progress)
        report.faults = rig.injected()
        report.recovery_p50, report.recovery_p99, report.recovery_max = _recovery(
            proxy.records() if proxy is not None else [],
            rig.marks,
            rig.answers if far is not None else {},
        )
        report.restarts = max(0, _counter(supervisor, "sessions_started") - len(sessions))
    finally:
        if truth is not None:
            await truth.aclose()
        if supervisor is not None:
            await supervisor.astop()
        if proxy is not None:
            await asyncio.to_thread(proxy.stop)
        if emulator is not None:
            await asyncio.to_thread(emulator.stop)
        if far is not None:
            await asyncio.to_thread(far.close)
    report.seconds = time.monotonic() - started
    return report


def _emulator(scenario: Scenario) -> ParlantEmulator:
    if not scenario.production:
        return ParlantEmulator()
    return ParlantEmulator(
        [EmulatedAgent(_AGENT, echo())], authorization="production", rate_window=RATE_WINDOW
    )


async def _agent(truth: httpx.AsyncClient, name: str) -> str:
    """The drill agent's id, found by name on the server, else created (the streaming one
    with `message_output_mode: stream`; the emulator and Parlant both honour it)."""
    response = await truth.get("/agents")
    response.raise_for_status()
    for agent in response.json():
        if agent["name"] == name:
            return str(agent["id"])
    mode = "stream" if name == _STREAMING_AGENT else "block"
    body = {"name": name, "description": "Echoes, for drills.", "message_output_mode": mode}
    created = await truth.post("/agents", json=body)
    created.raise_for_status()
    return str(created.json()["id"])


def _supervisor(scenario: Scenario, url: str) -> Supervising:
    config = scenario.config(drill_config())
    if scenario.production:
        budget = replace(RequestBudget.parlant_production(), window=RATE_WINDOW)
        config = replace(config, request_budget=budget)
    if not scenario.shards:
        return SessionSupervisor(url, config=config)
    from supervisor.sharding import ShardedSupervisor

    return ShardedSupervisor(
        url,
        shards=scenario.shards,
        config=replace(config, durable_checkpoints=True, checkpoint_interval=0.2),
        name=f"drill-{next(_drill_names)}",
        cpus_per_shard=0.5,
        watch_interval=0.2,
        log_level=logging.CRITICAL,  # faults are injected by design: only the report counts
    )


async def _run(
    rig: _Rig,
    scenario: Scenario,
    report: ScenarioReport,
    progress: Callable[[ScenarioReport, Supervising | None], None],
) -> None:
    supervisor = rig.supervisor
    seen: dict[str, list[int]] = defaultdict(list)
    texts: dict[str, dict[int, str]] = defaultdict(dict)
    readers = (
        {
            sid: asyncio.ensure_future(_read(rig, sid, seen, texts, scenario.readers))
            for sid in rig.sessions
        }
        if scenario.readers != "final"
        else {}
    )
    injector = asyncio.ensure_future(scenario.inject(rig))
    conversations = asyncio.gather(
        *(
            _converse(rig, sid, scenario.pause_between_turns, streams=scenario.streaming)
            for sid in rig.sessions
        )
    )
    ticker = asyncio.ensure_future(_tick(rig, report, conversations, progress))
    asks: list[_Ask] = [ask for asked in await conversations for ask in asked]
    rig.finished.set()
    await injector
    await ticker
    if rig.wire is not None:
        rig.wire.calm()
    written = {sid: await _written(rig, sid) for sid in rig.sessions if sid not in rig.deleted}
    if scenario.readers == "final":
        for session_id in written:
            readers[session_id] = asyncio.ensure_future(
                _read(rig, session_id, seen, texts, "final")
            )
    await _caught_up(seen, written)
    for reader in readers.values():
        reader.cancel()
    await asyncio.gather(*readers.values(), return_exceptions=True)
    _account(report, asks, written, seen, texts)
    progress(report, supervisor)


async def _converse(rig: _Rig, session_id: str, pause: float, *, streams: bool) -> list[_Ask]:
    asks = []
    timeout = rig.options.ask_timeout
    for turn in range(rig.options.turns):
        message = f"drill {session_id} turn {turn} #{rig.rng.randrange(10**9)}"
        ask = _Ask(session_id, message)
        asks.append(ask)
        try:
            if streams and turn % 2:  # read live: the pieces must join to the whole answer
                pieces = rig.supervisor.astream_text(session_id, message, timeout=timeout)
                ask.reply = "".join([piece async for piece in pieces])
            else:
                ask.reply = (await rig.supervisor.aask(session_id, message, timeout=timeout)).text
            rig.answers[session_id].append(time.monotonic())
        except (ReplyTimeout, SupervisorStopped):  # no answer in time: what drills must not see
            ask.timed_out = True
        except SupervisorError as error:
            ask.error = type(error).__name__
            if isinstance(error, SessionNotFound):
                break
        finally:
            rig.completed += 1
        # a customer's think time: conversations then span the scenario's fault windows
        await asyncio.sleep(pause or rig.rng.uniform(0.05, 0.3))
    return asks


async def _read(
    rig: _Rig,
    session_id: str,
    seen: dict[str, list[int]],
    texts: dict[str, dict[int, str]],
    mode: str,
) -> None:
    events = rig.supervisor.aevents(session_id, since=0 if mode == "final" else None)
    if mode == "stalled":
        await asyncio.sleep(1.0)  # subscribed, but not reading: its session pauses polling
    try:
        async for event in events:
            seen[session_id].append(event.offset)
            if event.kind == "message":
                texts[session_id][event.offset] = message_text(event)
    except SupervisorError:
        pass  # a deleted session's reader ends with its error
    finally:
        await events.aclose()


async def _written(rig: _Rig, session_id: str) -> list[dict[str, Any]]:
    """The session's whole log, read from the server itself, not through the supervisor."""
    response = await rig.truth.get(
        f"/sessions/{session_id}/events", params={"min_offset": 0, "wait_for_data": 0}
    )
    response.raise_for_status()
    events: list[dict[str, Any]] = response.json()
    return events


async def _caught_up(seen: dict[str, list[int]], written: dict[str, list[dict[str, Any]]]) -> None:
    """Wait (bounded) until every reader has as many events as its session has."""
    deadline = time.monotonic() + _SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        if all(len(seen[sid]) >= len(events) for sid, events in written.items()):
            return
        await asyncio.sleep(0.05)


async def _tick(
    rig: _Rig,
    report: ScenarioReport,
    conversations: asyncio.Future[Any],
    progress: Callable[[ScenarioReport, Supervising | None], None],
) -> None:
    while not conversations.done():
        report.faults = rig.injected()
        report.asks = rig.completed
        progress(report, rig.supervisor)
        await asyncio.sleep(0.2)


def _account(
    report: ScenarioReport,
    asks: list[_Ask],
    written: dict[str, list[dict[str, Any]]],
    seen: dict[str, list[int]],
    texts: dict[str, dict[int, str]],
) -> None:
    report.asks = len(asks)
    for ask in asks:
        if ask.timed_out:
            report.timed_out += 1
        elif ask.error is not None:
            report.failed_clearly += 1
            report.errors[ask.error] = report.errors.get(ask.error, 0) + 1
        else:
            report.answered += 1
            events = written.get(ask.session_id)
            if events is not None and ask.reply != _answer_in_log(events, ask.message):
                report.misattributed += 1
    for session_id, events in written.items():
        keys = [key for key in map(_post_key, events) if key is not None]
        report.duplicate_posts += len(keys) - len(set(keys))
        offsets = [event["offset"] for event in events]
        got = seen.get(session_id, [])
        report.lost += len(set(offsets) - set(got))
        report.duplicated += len(got) - len(set(got))
        read = texts.get(session_id, {})
        report.partial += sum(
            1
            for event in events
            if event["kind"] == "message"
            and event["offset"] in read
            and read[event["offset"]] != event["data"].get("message")
        )


def _post_key(event: dict[str, Any]) -> str | None:
    """The key this library posted a customer message with, as the server logged it."""
    if event["kind"] != "message" or event["source"] != "customer":
        return None
    ours = (event.get("metadata") or {}).get(METADATA_NAMESPACE)
    key = ours.get("post") if isinstance(ours, dict) else None
    return key if isinstance(key, str) else None


def _answer_in_log(events: list[dict[str, Any]], message: str) -> str | None:
    """The agent's answer to `message` as the server logged it: the non-preamble agent messages
    after that customer message, up to the next customer message."""
    answer: list[str] | None = None
    for event in events:
        if event["kind"] != "message":
            continue
        data = event["data"]
        if event["source"] == "customer":
            if answer is not None:
                break
            if data.get("message") == message:
                answer = []
        elif (
            answer is not None
            and event["source"] == "ai_agent"
            and PREAMBLE_TAG not in (data.get("tags") or [])
        ):
            answer.append(str(data.get("message")))
    return "\n\n".join(answer) if answer is not None else None


def _recovery(
    records: list[ProxyRecord], marks: dict[str, list[float]], answers: dict[str, list[float]]
) -> tuple[float | None, float | None, float | None]:
    """Seconds from the first failure of each failing streak of a session's polls to its next
    good poll (or, where the faults are a link's and no proxy sees the polls, from the last
    heal to the session's next answered ask): p50, p99 and max."""
    timeline: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for record in records:
        if record.method != "GET" or not record.path.endswith("/events"):
            continue
        session_id = record.path.split("/")[2]
        good = record.fault in (None, "delay") and record.status in (200, 504)
        timeline[session_id].append((record.at, good))
    for session_id, times in marks.items():
        timeline[session_id].extend((at, False) for at in times)
    for session_id, times in answers.items():
        timeline[session_id].extend((at, True) for at in times)
    durations = []
    for entries in timeline.values():
        failing_since: float | None = None
        for at, good in sorted(entries):
            if not good and (failing_since is None or answers):
                failing_since = at  # a link's fault counts from its last heal
            elif good and failing_since is not None:
                durations.append(at - failing_since)
                failing_since = None
    if not durations:
        return None, None, None
    durations.sort()
    p99 = durations[min(len(durations) - 1, int(0.99 * len(durations)))]
    return statistics.median(durations), p99, durations[-1]


def scenarios_named(name: str) -> list[Scenario]:
    """`all`, or the scenario called `name` (ValueError naming the choices otherwise)."""
    if name == "all":
        return list(SCENARIOS)
    for scenario in SCENARIOS:
        if scenario.name == name:
            return [scenario]
    choices = ", ".join(["all", *(s.name for s in SCENARIOS)])
    raise ValueError(f"unknown scenario {name!r}; choose one of: {choices}")
