"""What each way of talking to Parlant costs a real Parlant server, measured in the same run.

    python -m bench.upstream [--sizes 100,400,1000,2000] [--clients "library;continuous;seed;floor"]
                             [--period 30 | --rate 2] [--warmup 35] [--window 60]
                             [--idle 400] [--json bench/results/upstream.json]
                             [--plot docs/upstream.png]
    python -m bench.upstream waiting [--polls 200,1000,2000] [--reads 200]
    python -m bench.upstream plot bench/results/upstream.json docs/upstream.png

Every run gets a fresh real Parlant server (`supervisor.testing.ParlantServer`, the null
perceived-performance policy, transient stores: one Python process, as Parlant always runs) and
N sessions created up front on it, then one client, in a process of its own, holds N
conversations: each asks every `period` seconds (+-20 %, the first at a random moment of the
first period; with `--rate R`, every N / R seconds: R asks a second in all, whatever N) with an
agent that answers at once, each ask bounded by 60 s (the reference backend's default). After
`warmup` seconds, for `window` seconds: Parlant's CPU, read from its process
(/proc/PID/stat), the long-polls the client keeps waiting (sampled each second), the latency
of the asks started in the window (those still running when it closes are waited for; a
timed-out ask counts as its 60 s), and the client's requests a second by Parlant operation.

The clients:
- `library`: `SessionSupervisor` with its defaults (a session polls while an ask waits on it,
  then is dormant; at most 100 polls wait at once). `library:linger=2,max_waiting_polls=50`
  sets its config.
- `continuous`: the same with `linger=None, max_waiting_polls=None`: every session polled for
  as long as it lives (the library's behaviour before).
- `seed`: the hand-made pattern the library replaces: a task per session polling forever
  (`wait_for_data=60`), a queue per session (its ask reads to its own turn's completed
  `ready`, so that its latencies compare; the seed stopped at the first `ready`).
- `floor`: posts, then long-polls only during its own turn, up to the turn's completed `ready`:
  the least a client that wants its replies can ask of Parlant.
- any of them `@module`: against a server with `supervisor.parlant_module`.

`--idle N` adds: N conversations asked once each, Parlant's CPU a minute after the last reply
(`continuous` and `library`).

`waiting` measures what waiting itself costs, with Parlant's listener and with
`supervisor.parlant_module`: Parlant's CPU while N long-polls (or N `read_event`s of streamed
messages still being written) wait, and the time from a write to the poll waiting for it.

The sessions are created before the client starts, so a client that saturates Parlant is
measured, not stuck creating them; a client that cannot finish its window in time is a row
that says so. The JSON is rewritten after every run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import structlog
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.client import percentile

CLIENTS: Final = ("library", "continuous", "seed", "floor")
ASK_TIMEOUT: Final = 60.0
SEED_WAIT: Final = 60  # parlant-client's default, and the seed's
SETUP_CONCURRENCY: Final = 8


@dataclass(frozen=True)
class Workload:
    """What every conversation does, and when the figures are taken."""

    period: float = 30.0
    warmup: float = 35.0
    window: float = 60.0
    idle: bool = False  # ask once each, then measure a minute after the last reply

    def jittered(self, rng: random.Random) -> float:
        return self.period * rng.uniform(0.8, 1.2)

    @classmethod
    def at_rate(cls, rate: float, sessions: int, **options: Any) -> Workload:
        """`rate` asks a second in all, whatever the number of conversations."""
        return cls(period=sessions / rate, **options)


# --- the clients (each in a process of its own) ------------------------------------------


@dataclass
class Tally:
    """What a client counts of itself: asks, their latencies, requests, polls waiting."""

    latencies: list[float] = field(default_factory=list)
    timed_out: int = 0
    failed: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    waiting: int = 0  # polls waiting on Parlant now (the raw clients count their own)


class Client:
    """One way of holding conversations: `ask` answers once the session's turn completed."""

    tally: Tally

    async def start(self, sessions: list[str]) -> None: ...

    async def ask(self, session_id: str, text: str) -> None:
        raise NotImplementedError

    def waiting_polls(self) -> int:
        return self.tally.waiting

    def requests(self) -> Counter[str]:
        return Counter(self.tally.requests)

    async def stop(self) -> None: ...


class LibraryClient(Client):
    """This library, with its defaults or polling every session for ever."""

    def __init__(self, url: str, *, continuous: bool, overrides: dict[str, str]) -> None:
        from supervisor import SessionSupervisor, SupervisorConfig

        settings: dict[str, Any] = {"linger": None, "max_waiting_polls": None} if continuous else {}
        for name, value in overrides.items():
            settings[name] = None if value == "None" else json.loads(value)
        self.supervisor = SessionSupervisor(url, config=SupervisorConfig(**settings))
        self.tally = Tally()

    async def start(self, sessions: list[str]) -> None:
        for session_id in sessions:  # as `create_session` does
            self.supervisor.open(session_id, since=0)

    async def ask(self, session_id: str, text: str) -> None:
        self.tally.requests["create_customer_event"] += 1
        reply = await self.supervisor.aask(session_id, text, timeout=ASK_TIMEOUT)
        if reply.text != f"echo: {text}":
            raise RuntimeError(f"{session_id}: another reply: {reply.text!r}")

    def waiting_polls(self) -> int:
        return self.supervisor.statistics().waiting_polls

    def requests(self) -> Counter[str]:
        polls = sum(
            sample.value
            for family in self.supervisor.registry.collect()
            if family.name == "parlant_supervisor_polls"
            for sample in family.samples
            if sample.name.endswith("_total")
        )
        counted = super().requests()
        counted["list_events"] = round(polls)
        return counted

    async def stop(self) -> None:
        await self.supervisor.astop(timeout=30)


class RawClient(Client):
    """Plain HTTP to Parlant (one pool, unbounded, as the seed's)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url,
            timeout=SEED_WAIT + 10,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        )
        self.tally = Tally()

    async def post(self, session_id: str, text: str) -> int:
        self.tally.requests["create_customer_event"] += 1
        response = await self.http.post(
            f"/sessions/{session_id}/events",
            json={"kind": "message", "source": "customer", "message": text},
        )
        response.raise_for_status()
        offset: int = response.json()["offset"]
        return offset

    async def events(self, session_id: str, min_offset: int) -> list[dict[str, Any]] | None:
        """One long-poll: the events, or None at its 504."""
        self.tally.requests["list_events"] += 1
        self.tally.waiting += 1
        try:
            response = await self.http.get(
                f"/sessions/{session_id}/events",
                params={"min_offset": min_offset, "wait_for_data": SEED_WAIT},
            )
        finally:
            self.tally.waiting -= 1
        if response.status_code == 504:
            return None
        response.raise_for_status()
        events: list[dict[str, Any]] = response.json()
        return events

    async def stop(self) -> None:
        await self.http.aclose()


def _completes(event: dict[str, Any]) -> bool:
    data = event.get("data") or {}
    return (
        event["kind"] == "status"
        and data.get("status") == "ready"
        and (data.get("data") or {}).get("stage") == "completed"
    )


class FloorClient(RawClient):
    """Post, then long-poll from the message on, to its turn's completed `ready`; then nothing."""

    async def ask(self, session_id: str, text: str) -> None:
        offset = await self.post(session_id, text) + 1
        while True:
            events = await self.events(session_id, offset)
            for event in events or ():
                offset = event["offset"] + 1
                if _completes(event):
                    return


class SeedClient(RawClient):
    """A task per session polling for ever, a queue per session; an ask reads its queue to the
    first `ready` (the pattern the library replaces, its known faults kept)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, sessions: list[str]) -> None:
        for session_id in sessions:
            self.queues[session_id] = asyncio.Queue()
            self.tasks.append(asyncio.create_task(self._poll(session_id)))

    async def _poll(self, session_id: str) -> None:
        offset = 0
        while True:
            try:
                events = await self.events(session_id, offset)
            except httpx.HTTPError:
                await asyncio.sleep(1)
                continue
            for event in events or ():
                offset = event["offset"] + 1
                await self.queues[session_id].put(event)

    async def ask(self, session_id: str, text: str) -> None:
        """Read the session's queue to the completed `ready` of a turn after the message (the
        seed stopped at the first `ready`, often the last turn's: its latencies would not
        compare; its polling, what this benchmark is about, is the seed's)."""
        offset = await self.post(session_id, text)
        queue = self.queues[session_id]
        while True:
            event = await queue.get()
            if event["offset"] > offset and _completes(event):
                return

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await super().stop()


def make_client(kind: str, url: str) -> Client:
    """A client by name; `library:linger=0.5,max_waiting_polls=50` sets the library's config."""
    name, _, settings = kind.partition(":")
    if name in ("library", "continuous"):
        overrides = dict(setting.split("=", 1) for setting in settings.split(",") if setting)
        return LibraryClient(url, continuous=name == "continuous", overrides=overrides)
    if kind == "seed":
        return SeedClient(url)
    if kind == "floor":
        return FloorClient(url)
    raise ValueError(f"unknown client {kind!r}; choose among {list(CLIENTS)}")


def _say(**line: Any) -> None:
    """A line to the harness (stdout is its pipe)."""
    print(json.dumps(line), flush=True)


async def converse(kind: str, url: str, sessions: list[str], workload: Workload) -> dict[str, Any]:
    """Hold the conversations, tell the harness when the window starts and ends, and return
    what the client counted of itself in it."""
    client = make_client(kind, url)
    rng = random.Random(7)
    loop = asyncio.get_running_loop()
    started = loop.time()
    window = (started + workload.warmup, started + workload.warmup + workload.window)
    tally = client.tally
    await client.start(sessions)

    async def timed(session_id: str, n: int) -> float:
        asked = loop.time()
        try:
            await asyncio.wait_for(client.ask(session_id, f"hello {n}"), ASK_TIMEOUT)
        except TimeoutError:
            if window[0] <= asked < window[1]:
                tally.timed_out += 1
            return ASK_TIMEOUT
        except Exception:
            if window[0] <= asked < window[1]:
                tally.failed += 1
            raise
        took = loop.time() - asked
        if window[0] <= asked < window[1]:
            tally.latencies.append(took)
        return took

    async def conversation(session_id: str) -> None:
        """Ask every period until the window ends (an ask started in it is waited for)."""
        pause = rng.uniform(0, workload.period)
        n = 0
        while True:
            await asyncio.sleep(max(0.0, min(pause, window[1] - loop.time())))
            if loop.time() >= window[1]:
                return
            took = ASK_TIMEOUT
            with contextlib.suppress(Exception):  # counted in the tally
                took = await timed(session_id, n)
            pause = workload.jittered(rng) - took
            n += 1

    async def asked_once(session_id: str, gate: asyncio.Semaphore) -> None:
        async with gate:
            await timed(session_id, 0)

    if workload.idle:
        gate = asyncio.Semaphore(50)
        await asyncio.gather(*(asked_once(s, gate) for s in sessions), return_exceptions=True)
        window = (loop.time() + workload.warmup, loop.time() + workload.warmup + workload.window)
        talking: list[asyncio.Task[None]] = []
    else:
        talking = [asyncio.create_task(conversation(s)) for s in sessions]
    await asyncio.sleep(window[0] - loop.time())
    _say(window="start")
    before = client.requests()
    waiting: list[int] = []
    while loop.time() < window[1]:
        waiting.append(client.waiting_polls())
        await asyncio.sleep(min(1.0, max(0.0, window[1] - loop.time())))
    spent = client.requests()
    _say(window="end")
    # the asks started in the window end (answered or timed out) before the figures are made
    _, late = await asyncio.wait(talking, timeout=ASK_TIMEOUT + 5) if talking else ((), ())
    for task in late:
        task.cancel()
    await asyncio.gather(*talking, return_exceptions=True)
    await client.stop()
    requests = {op: (spent[op] - before[op]) / workload.window for op in spent}
    latencies = tally.latencies + [ASK_TIMEOUT] * tally.timed_out
    return {
        "asks": len(latencies),
        "answered": len(tally.latencies),
        "timed_out": tally.timed_out,
        "failed": tally.failed,
        "ask_p50_s": statistics.median(latencies) if latencies else None,
        "ask_p99_s": percentile(latencies, 99) if latencies else None,
        "waiting_polls": statistics.fmean(waiting) if waiting else 0.0,
        "requests_per_s": {op: round(rate, 2) for op, rate in sorted(requests.items())},
    }


# --- the harness ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_sessions(url: str, count: int) -> list[str]:
    """`count` customers, each with a session with the server's first agent."""

    async def create() -> list[str]:
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            agent = (await http.get("/agents")).json()[0]["id"]

            async def one(n: int) -> str:
                async with gate:
                    customer = await http.post("/customers", json={"name": f"bench {n}"})
                    session = await http.post(
                        "/sessions",
                        json={"agent_id": agent, "customer_id": customer.json()["id"]},
                    )
                    session.raise_for_status()
                    session_id: str = session.json()["id"]
                    return session_id

            return await asyncio.gather(*(one(n) for n in range(count)))

    return asyncio.run(create())


def measure(
    kind: str, sessions: int, workload: Workload, *, slack: float = 180.0
) -> dict[str, Any]:
    """One client against a fresh real Parlant server: the row of figures (or why there is
    none)."""
    from supervisor.testing import ParlantServer

    row: dict[str, Any] = {"client": kind, "sessions": sessions, "idle": workload.idle}
    client, _, server = kind.partition("@")  # "@module": a server with supervisor.parlant_module
    notified = server == "module"
    with (
        ParlantServer(policy="null", parlant_module=notified) as parlant,
        tempfile.TemporaryDirectory() as scratch,
    ):
        assert parlant.pid is not None
        started = time.perf_counter()
        ids = create_sessions(parlant.url, sessions)
        row["setup_s"] = round(time.perf_counter() - started, 1)
        listed = Path(scratch) / "sessions.json"
        listed.write_text(json.dumps(ids))
        command = [
            sys.executable,
            "-m",
            "bench.upstream",
            "client",
            client,
            "--url",
            parlant.url,
            "--sessions-file",
            str(listed),
            "--workload",
            json.dumps(asdict(workload)),
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        limit = time.monotonic() + workload.warmup + workload.window + slack
        if workload.idle:
            limit += 300  # asking each once first, on a Parlant that may be saturated
        cpu_start = window_start = None
        try:
            assert process.stdout is not None
            for line in process.stdout:
                said = json.loads(line)
                if said.get("window") == "start":
                    cpu_start, window_start = cpu_seconds(parlant.pid), time.monotonic()
                elif said.get("window") == "end" and cpu_start is not None:
                    assert window_start is not None
                    elapsed = time.monotonic() - window_start
                    used = cpu_seconds(parlant.pid) - cpu_start
                    row["parlant_cpu_percent"] = round(100 * used / elapsed, 1)
                elif "asks" in said:
                    row.update(said)
                if time.monotonic() > limit:
                    raise TimeoutError
            process.wait(timeout=max(1.0, limit - time.monotonic()))
        except (TimeoutError, subprocess.TimeoutExpired):
            row["error"] = "did not finish in time"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if process.returncode and "error" not in row:
            assert process.stderr is not None
            last = process.stderr.read().strip().splitlines()[-1:] or ["no output"]
            row["error"] = f"failed: {last[0]}"
    return row


def _saturated(row: dict[str, Any]) -> bool:
    return bool(row.get("timed_out")) or (row.get("parlant_cpu_percent") or 0) >= 95


def table(rows: list[dict[str, Any]], console: Console) -> None:
    figures = Table(title="What each client costs a real Parlant server (same run)")
    for column in (
        "sessions",
        "client",
        "Parlant CPU %",
        "waiting polls",
        "ask p50 (s)",
        "ask p99 (s)",
        "asks (timed out)",
        "list_events/s",
        "posts/s",
    ):
        figures.add_column(column, justify="left" if column == "client" else "right")
    for row in rows:
        if row.get("idle"):
            continue
        if "error" in row:
            figures.add_row(str(row["sessions"]), row["client"], row["error"])
            continue
        requests = row.get("requests_per_s", {})
        figures.add_row(
            str(row["sessions"]),
            row["client"] + (" (saturated)" if _saturated(row) else ""),
            f"{row.get('parlant_cpu_percent', float('nan')):.1f}",
            f"{row['waiting_polls']:.0f}",
            f"{row['ask_p50_s']:.2f}" if row["ask_p50_s"] is not None else "n/a",
            f"{row['ask_p99_s']:.2f}" if row["ask_p99_s"] is not None else "n/a",
            f"{row['asks']} ({row['timed_out']})",
            f"{requests.get('list_events', 0):.1f}",
            f"{requests.get('create_customer_event', 0):.1f}",
        )
    console.print(figures)
    idle = [row for row in rows if row.get("idle")]
    if idle:
        quiet = Table(title="Idle conversations, a minute after the last reply")
        for column in ("sessions", "client", "Parlant CPU %", "waiting polls"):
            quiet.add_column(column, justify="left" if column == "client" else "right")
        for row in idle:
            quiet.add_row(
                str(row["sessions"]),
                row["client"],
                row.get("error") or f"{row.get('parlant_cpu_percent', float('nan')):.1f}",
                f"{row.get('waiting_polls', 0):.0f}",
            )
        console.print(quiet)


def workload_label(workload: dict[str, Any]) -> str:
    """What the conversations did, for an axis: the harness's `machine.workload`."""
    if "rate" in workload:
        return f"conversations ({workload['rate']:g} asks a second in all)"
    return f"conversations (each asks every ~{workload['period']:g} s)"


def plot(rows: list[dict[str, Any]], path: Path, workload: dict[str, Any]) -> None:
    """Parlant's CPU and the ask p99 by sessions, a line per client."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (cpu, p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    for client in dict.fromkeys(row["client"] for row in rows):
        points = sorted(
            (
                (row["sessions"], row)
                for row in rows
                if row["client"] == client and not row.get("idle") and "error" not in row
            ),
            key=lambda point: point[0],
        )
        if not points:
            continue
        sizes = [size for size, _ in points]
        cpu.plot(sizes, [row["parlant_cpu_percent"] for _, row in points], marker="o", label=client)
        p99.plot(sizes, [row["ask_p99_s"] for _, row in points], marker="o", label=client)
    label = workload_label(workload)
    cpu.set(xlabel=label, ylabel="Parlant CPU (% of a core)")
    cpu.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    p99.set(xlabel=label, ylabel="ask p99 (s)", yscale="log")
    for axes in (cpu, p99):
        axes.set_xscale("log")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.suptitle("What each client costs a real Parlant 3.3.2 server")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def harness(args: argparse.Namespace) -> None:
    sizes = [int(size) for size in args.sizes.split(",") if size]
    clients = [client for client in args.clients.split(";") if client]
    unknown = sorted({c.partition("@")[0].partition(":")[0] for c in clients} - set(CLIENTS))
    if unknown:
        raise SystemExit(f"unknown clients {unknown}; choose among {list(CLIENTS)}")
    workload = Workload(period=args.period, warmup=args.warmup, window=args.window)
    console = Console(width=None if sys.stdout.isatty() else 160)
    rows: list[dict[str, Any]] = []
    described: dict[str, Any] = asdict(workload) if args.rate is None else {"rate": args.rate}
    machine = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "workload": described,
    }

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))

    def workload_of(size: int) -> Workload:
        if args.rate is None:
            return workload
        return Workload.at_rate(args.rate, size, warmup=args.warmup, window=args.window)

    runs = [(client, size, workload_of(size)) for size in sizes for client in clients]
    if args.idle:
        quiet = Workload(warmup=60.0, window=20.0, idle=True)
        runs += [(c, args.idle, quiet) for c in ("continuous", "library")]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("measuring", total=len(runs))
        for client, size, chosen in runs:
            what = "asked once, idle" if chosen.idle else "conversing"
            progress.update(task, description=f"{client}, {size} sessions, {what}")
            rows.append(measure(client, size, chosen))
            save()
            progress.advance(task)
    table(rows, console)
    if args.plot is not None:
        plot(rows, args.plot, described)
        console.print(f"plot: {args.plot}")
    console.print(f"written to {args.json}")


# --- what waiting costs, with Parlant's listener and with supervisor.parlant_module ---------


def _open_polls(http: httpx.AsyncClient, sessions: list[str]) -> list[asyncio.Task[Any]]:
    return [
        asyncio.create_task(
            http.get(f"/sessions/{s}/events", params={"min_offset": 0, "wait_for_data": 60})
        )
        for s in sessions
    ]


async def _settled(parlant: Any, count: int) -> None:
    """Until `count` requests wait (the module's listener counts them; Parlant's own does not:
    a few seconds then)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        waiting = (await asyncio.to_thread(parlant.listener)).waiting
        if waiting is None:
            await asyncio.sleep(5)
            return
        if waiting >= count:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"fewer than {count} requests waiting after 60 s")


def _cpu_over(pid: int, seconds: float) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)  # a measuring window, not a wait for something to happen
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


def waiting_cost(
    count: int, *, module: bool, reads: bool, window: float, samples: int
) -> dict[str, Any]:
    """Parlant's CPU while `count` requests wait on it (long-polls, or with `reads`
    `read_event`s of streamed messages still being written), and for long-polls the time from
    a write to its waiting client, `samples` times."""
    from supervisor.testing import ParlantServer

    row: dict[str, Any] = {
        "waiting": "read_event" if reads else "list_events",
        "count": count,
        "module": module,
    }
    # a streamed answer of 40 words, a word every 60 s: its message is written for long
    options: dict[str, Any] = (
        {
            "agents": {"StreamingEcho": "Answers word by word."},
            "streaming": ["StreamingEcho"],
            "chunk_delay": 60.0,
            "reply": "bench.upstream:long_reply",
        }
        if reads
        else {}
    )
    with ParlantServer(parlant_module=module, **options) as parlant:
        pid = parlant.pid
        assert pid is not None
        sessions = create_sessions(parlant.url, count)

        async def scenario() -> None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            async with httpx.AsyncClient(base_url=parlant.url, timeout=90, limits=limits) as http:
                if reads:
                    targets = [await _streaming_message(http, s) for s in sessions]
                    tasks = [
                        asyncio.create_task(
                            http.get(
                                f"/sessions/{s}/events/{e}",
                                params={"wait_for_completion": "true", "wait_for_data": 60},
                            )
                        )
                        for s, e in targets
                    ]
                else:
                    tasks = _open_polls(http, sessions)
                await _settled(parlant, count)
                row["parlant_cpu_percent"] = round(
                    await asyncio.to_thread(_cpu_over, pid, window), 1
                )
                if not reads:
                    latencies = []
                    for index in range(min(samples, count)):
                        started = time.perf_counter()
                        await http.post(
                            f"/sessions/{sessions[index]}/events",
                            json={
                                "kind": "message",
                                "source": "human_agent",
                                "message": "now",
                                "participant": {"display_name": "bench"},
                            },
                        )
                        await tasks[index]
                        latencies.append(time.perf_counter() - started)
                    row["write_to_client_p50_ms"] = round(statistics.median(latencies) * 1000, 1)
                    row["write_to_client_p99_ms"] = round(percentile(latencies, 99) * 1000, 1)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(scenario())
    return row


def long_reply(utterance: Any) -> str:
    """The streaming agent's answer in `waiting_cost`: 40 words (written a word a minute)."""
    return " ".join(["word"] * 40)


async def _streaming_message(http: httpx.AsyncClient, session_id: str) -> tuple[str, str]:
    """Start a streamed answer in the session; (session, its message's event id) once written."""
    posted = await http.post(
        f"/sessions/{session_id}/events",
        json={"kind": "message", "source": "customer", "message": "tell me"},
    )
    offset = posted.json()["offset"] + 1
    while True:  # bounded: each poll by its wait_for_data, the answer's first word comes at once
        events = (
            await http.get(
                f"/sessions/{session_id}/events",
                params={"min_offset": offset, "wait_for_data": 30},
            )
        ).json()
        for event in events:
            offset = event["offset"] + 1
            if event["kind"] == "message" and event["source"] == "ai_agent":
                return session_id, event["id"]


def waiting(args: argparse.Namespace) -> None:
    console = Console(width=None if sys.stdout.isatty() else 160)
    runs = [(n, module, False) for n in args.polls for module in (False, True)]
    runs += [(n, module, True) for n in args.reads for module in (False, True)]
    rows: list[dict[str, Any]] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("measuring", total=len(runs))
        for count, module, reads in runs:
            what = "read_event" if reads else "list_events"
            listener = "the module" if module else "Parlant's listener"
            progress.update(task, description=f"{count} waiting {what}, {listener}")
            rows.append(
                waiting_cost(
                    count, module=module, reads=reads, window=args.window, samples=args.samples
                )
            )
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"rows": rows}, indent=2))
            progress.advance(task)
    figures = Table(title="What waiting costs a real Parlant server")
    for column in ("waiting", "count", "listener", "Parlant CPU %", "write->client p50 / p99 (ms)"):
        figures.add_column(column, justify="left" if column in ("waiting", "listener") else "right")
    for row in rows:
        latency = (
            f"{row['write_to_client_p50_ms']} / {row['write_to_client_p99_ms']}"
            if "write_to_client_p50_ms" in row
            else "n/a"
        )
        figures.add_row(
            row["waiting"],
            str(row["count"]),
            "supervisor.parlant_module" if row["module"] else "Parlant's (polling)",
            f"{row['parlant_cpu_percent']:.1f}",
            latency,
        )
    console.print(figures)
    console.print(f"written to {args.json}")


def _sizes(value: str) -> list[int]:
    return [int(size) for size in value.split(",") if size]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    client = sub.add_parser("client", help="one client's run (the harness starts it)")
    client.add_argument("kind", help=f"one of {list(CLIENTS)} (library:NAME=VALUE,... too)")
    client.add_argument("--url", required=True)
    client.add_argument("--sessions-file", type=Path, required=True)
    client.add_argument("--workload", required=True, help="a Workload, as JSON")
    costs = sub.add_parser(
        "waiting", help="Parlant's CPU while requests wait on it, with and without the module"
    )
    costs.add_argument("--polls", type=_sizes, default=[200, 1000, 2000])
    costs.add_argument("--reads", type=_sizes, default=[200])
    costs.add_argument("--window", type=float, default=20.0)
    costs.add_argument("--samples", type=int, default=100, help="writes timed to their client")
    costs.add_argument("--json", type=Path, default=Path("bench/results/waiting.json"))
    drawing = sub.add_parser("plot", help="draw a run's figures again from its JSON")
    drawing.add_argument("results", type=Path, help="the JSON a run wrote (--json)")
    drawing.add_argument("png", type=Path)
    parser.add_argument("--sizes", default="100,400,1000,2000")
    parser.add_argument(
        "--clients",
        default=";".join(CLIENTS),
        help="';'-separated; library:NAME=VALUE,... sets the library's config; a client "
        "@module runs against a server with supervisor.parlant_module",
    )
    parser.add_argument("--period", type=float, default=30.0, help="seconds between two asks")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="asks a second in all, whatever the sessions (the period is sessions / rate)",
    )
    parser.add_argument("--warmup", type=float, default=35.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--idle", type=int, default=0, help="sessions of the idle figure (0: none)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/upstream.json"))
    parser.add_argument("--plot", type=Path, default=None, help="a PNG of the figures")
    args = parser.parse_args(argv)
    if args.command == "client":
        # errors only; with $BENCH_CLIENT_LOG, everything from info on, as JSON lines there
        # (to see why a row is what it is: upstream transitions, retried posts, restarts)
        log_path = os.environ.get("BENCH_CLIENT_LOG")
        if log_path:
            structlog.configure(
                processors=[
                    structlog.processors.TimeStamper(),
                    structlog.processors.JSONRenderer(),
                ],
                wrapper_class=structlog.make_filtering_bound_logger(20),
                logger_factory=structlog.WriteLoggerFactory(
                    Path(log_path).open("a")  # noqa: SIM115 (open for the process' life)
                ),
            )
        else:
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
        sessions = json.loads(args.sessions_file.read_text())
        workload = Workload(**json.loads(args.workload))
        result = asyncio.run(converse(args.kind, args.url, sessions, workload))
        _say(**result)
        return
    if args.command == "waiting":
        waiting(args)
        return
    if args.command == "plot":
        document = json.loads(args.results.read_text())
        plot(document["rows"], args.png, document["machine"]["workload"])
        return
    harness(args)


if __name__ == "__main__":
    main()
