"""One measured client, in a process of its own: this library, or the hand-made baseline.

`python -m bench.client --impl library|baseline --sessions N --url URL [--idle-seconds S]` prints
one JSON line: sessions reached with an open poll, RSS and threads per session, CPU used while
every session sits idle polling for S seconds, delivery latency of an event written on the server
to the consumer holding it (p50/p99, all other sessions idle and polling), the same for a raw
single long-poll (the floor), asks per second (every session asks at once, twice, zero-delay
agent), open and stop times.

With `--outage S` it measures recovery instead: every session polls through a `FaultProxy`,
which refuses connections (and resets those open) for S seconds; then the time until every
session polls again and the peak rate of polls re-opened per second (jitter should spread it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import resource
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import structlog
from parlant.client import AsyncParlantClient
from parlant.client.errors import GatewayTimeoutError
from parlant.client.types import Event

from supervisor import SessionSupervisor, SupervisorConfig
from supervisor.testing import FaultProxy

WAIT_FOR_DATA = 30


def polled() -> SupervisorConfig:
    """Every session polled for as long as it lives, none beyond a ceiling: this benchmark
    measures the client's side of holding N polls open (the cost to Parlant: bench.upstream)."""
    return SupervisorConfig(wait_for_data=WAIT_FOR_DATA, linger=None, max_waiting_polls=None)


SAMPLES = 200  # a p99 of 60 samples is their maximum
ASK_ROUNDS = 2
ASK_BUDGET = 120.0
RECOVERY_BUDGET = 120.0
RECOVERY_SAMPLE_S = 0.1


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Server:
    """Plain HTTP to the emulator: setup, writing sample events, counting open polls."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        self.agent_id = self.http.get("/agents").json()[0]["id"]

    def create_sessions(self, count: int) -> list[str]:
        return [
            self.http.post("/sessions", json={"agent_id": self.agent_id}).json()["id"]
            for _ in range(count)
        ]

    def write(self, session_id: str, text: str) -> None:
        response = self.http.post(
            f"/sessions/{session_id}/events",
            json={
                "kind": "message",
                "source": "human_agent",
                "message": text,
                "participant": {"display_name": "bench"},
            },
        )
        response.raise_for_status()

    def open_polls(self) -> int:
        return int(self.http.get("/_emulator/stats").json()["open_polls"])

    def wait_for_open_polls(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.open_polls() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.open_polls()} of {count} polls open")
            time.sleep(0.05)


def floor_latency(server: Server, session_id: str) -> list[float]:
    """A raw single long-poll: write an event, time until the open poll returns it."""
    samples = []
    with httpx.Client(base_url=str(server.http.base_url), timeout=60) as raw:
        offset = len(raw.get(f"/sessions/{session_id}/events", params={"wait_for_data": 0}).json())
        for i in range(SAMPLES):
            result: dict[str, float] = {}

            def poll(at: int = offset, out: dict[str, float] = result) -> None:
                raw.get(
                    f"/sessions/{session_id}/events",
                    params={"min_offset": at, "wait_for_data": WAIT_FOR_DATA},
                )
                out["t"] = time.perf_counter()

            thread = threading.Thread(target=poll)
            thread.start()
            wait_until_polled(server, 1)
            start = time.perf_counter()
            server.write(session_id, f"floor {i}")
            thread.join(timeout=WAIT_FOR_DATA + 10)
            samples.append(result["t"] - start)
            offset += 1
    return samples


def wait_until_polled(server: Server, count: int) -> None:
    server.wait_for_open_polls(count)


# --- this library -----------------------------------------------------------------------------


def run_library(server: Server, sessions: list[str], idle_seconds: float) -> dict[str, Any]:
    sup = SessionSupervisor(str(server.http.base_url), config=polled())
    started = time.perf_counter()
    for session_id in sessions:
        sup.open(session_id, since=0)
    server.wait_for_open_polls(len(sessions))
    opened = time.perf_counter() - started
    measured = measure_open(server)
    samples = []
    sampled = random.Random(1).sample(sessions, min(SAMPLES, len(sessions)))
    for i, session_id in enumerate(sampled):
        reader = sup.events(session_id)
        start = time.perf_counter()
        server.write(session_id, f"sample {i}")
        next(reader)
        samples.append(time.perf_counter() - start)
        reader.close()
    measured["idle_cpu_percent"] = idle_cpu_percent(idle_seconds)

    async def ask(session_id: str, text: str) -> bool:
        reply = await sup.aask(session_id, text, timeout=ASK_BUDGET)
        return reply.text == f"echo: {text}"

    asks_per_s = asyncio.run(asks_per_second(ask, sessions))
    started = time.perf_counter()
    summary = sup.stop(timeout=60)
    return {
        **measured,
        "asks_per_s": asks_per_s,
        "open_s": opened,
        "latency": samples,
        "stop_s": time.perf_counter() - started,
        "stop_deadline_met": summary.deadline_met,
        "threads_after_stop": threading.active_count(),
    }


# --- the hand-made baseline -------------------------------------------------------------------


class Baseline:
    """The pattern this library replaces, written faithfully: a task and a queue per session.

    Its known bugs are kept (it stops reading a reply at the first `ready`, events of two
    waiters share one queue, nothing supervises the tasks). Its pool is unbounded: with
    httpx's default limit of 100 connections it could not hold more than 100 polls open.
    """

    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(
            timeout=WAIT_FOR_DATA + 10,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        )
        self.client = AsyncParlantClient(base_url=url, httpx_client=self.http)
        self.queues: dict[str, asyncio.Queue[Event]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def open(self, session_id: str) -> None:
        self.queues[session_id] = asyncio.Queue()
        self.tasks[session_id] = asyncio.create_task(self._poll(session_id))

    async def _poll(self, session_id: str) -> None:
        offset = 0
        while True:
            try:
                events = await self.client.sessions.list_events(
                    session_id, min_offset=offset, wait_for_data=WAIT_FOR_DATA
                )
            except GatewayTimeoutError:
                continue
            except httpx.HTTPError:
                await asyncio.sleep(1)
                continue
            for event in events:
                await self.queues[session_id].put(event)
                offset = event.offset + 1

    async def ask(self, session_id: str, text: str) -> bool:
        """Post, then read the session's queue up to the first `ready` (the naive pattern: it
        cannot tell whose reply it read, so it is taken as right)."""
        await self.client.sessions.create_event(
            session_id, kind="message", source="customer", message=text
        )
        queue = self.queues[session_id]
        while True:
            event = await queue.get()
            data = event.data if isinstance(event.data, dict) else {}
            if event.kind == "status" and data.get("status") == "ready":
                return True

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self.http.aclose()


def run_baseline(server: Server, sessions: list[str], idle_seconds: float) -> dict[str, Any]:
    async def scenario() -> dict[str, Any]:
        baseline = Baseline(str(server.http.base_url))
        started = time.perf_counter()
        for session_id in sessions:
            baseline.open(session_id)
        await asyncio.to_thread(server.wait_for_open_polls, len(sessions))
        opened = time.perf_counter() - started
        measured = await asyncio.to_thread(measure_open, server)
        samples = []
        sampled = random.Random(1).sample(sessions, min(SAMPLES, len(sessions)))
        for i, session_id in enumerate(sampled):
            queue = baseline.queues[session_id]
            start = time.perf_counter()
            await asyncio.to_thread(server.write, session_id, f"sample {i}")
            await queue.get()
            samples.append(time.perf_counter() - start)
        measured["idle_cpu_percent"] = await asyncio.to_thread(idle_cpu_percent, idle_seconds)
        asks_per_s = await asks_per_second(baseline.ask, sessions)
        started = time.perf_counter()
        await baseline.stop()
        return {
            **measured,
            "asks_per_s": asks_per_s,
            "open_s": opened,
            "latency": samples,
            "stop_s": time.perf_counter() - started,
            "stop_deadline_met": True,
            "threads_after_stop": threading.active_count() - 1,  # asyncio.to_thread's worker
        }

    return asyncio.run(scenario())


# --- recovery after an outage ------------------------------------------------------------------


def outage_and_recovery(proxy: FaultProxy, count: int, outage_s: float) -> dict[str, Any]:
    """With `count` polls open through `proxy`: refuse connections for `outage_s` seconds, then
    sample how many polls are open again every RECOVERY_SAMPLE_S until all are (or the budget
    runs out)."""
    with proxy.outage():
        time.sleep(outage_s)  # the outage itself, not a wait for something to happen
    started = time.perf_counter()
    samples = [(0.0, proxy.in_flight)]
    while samples[-1][1] < count and samples[-1][0] < RECOVERY_BUDGET:
        time.sleep(RECOVERY_SAMPLE_S)  # a sampling period
        samples.append((time.perf_counter() - started, proxy.in_flight))
    rates = [(b - a) / (tb - ta) for (ta, a), (tb, b) in itertools.pairwise(samples)]
    recovered = samples[-1][1] >= count
    return {
        "recovery_s": samples[-1][0] if recovered else None,
        "polling_after_budget": samples[-1][1],
        "peak_reconnects_per_s": max(rates, default=0.0),
    }


def run_outage(impl: str, server: Server, sessions: list[str], outage_s: float) -> dict[str, Any]:
    """Open every session through a fault proxy, then `outage_and_recovery`."""
    with FaultProxy(str(server.http.base_url)) as proxy:

        def all_polling() -> None:
            deadline = time.monotonic() + 300
            while proxy.in_flight < len(sessions):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {proxy.in_flight} of {len(sessions)} polls open")
                time.sleep(0.05)

        if impl == "library":
            config = polled()
            sup = SessionSupervisor(proxy.url, config=config)
            for session_id in sessions:
                sup.open(session_id, since=0)
            all_polling()
            result = outage_and_recovery(proxy, len(sessions), outage_s)
            sup.stop(timeout=60)
            return result

        async def baseline() -> dict[str, Any]:
            client = Baseline(proxy.url)
            for session_id in sessions:
                client.open(session_id)
            await asyncio.to_thread(all_polling)
            result = await asyncio.to_thread(outage_and_recovery, proxy, len(sessions), outage_s)
            await client.stop()
            return result

        return asyncio.run(baseline())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def asks_per_second(ask: Callable[[str, str], Awaitable[bool]], sessions: list[str]) -> float:
    """Every session asks at once, ASK_ROUNDS times; answers per second, counting what was
    answered within ASK_BUDGET seconds (the rest is cancelled: a client that cannot keep up
    must still finish the benchmark)."""
    started = time.perf_counter()
    answered = 0
    for round_ in range(ASK_ROUNDS):
        remaining = ASK_BUDGET - (time.perf_counter() - started)
        if remaining <= 0:
            break
        tasks = [asyncio.ensure_future(ask(sid, f"ask {round_} {sid}")) for sid in sessions]
        done, pending = await asyncio.wait(tasks, timeout=remaining)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if not all(task.result() for task in done):
            raise RuntimeError("an ask got another session's reply")
        answered += len(done)
    return answered / (time.perf_counter() - started)


def measure_open(server: Server) -> dict[str, Any]:
    """Figures right after every session opened its poll."""
    return {
        "sessions_polling": server.open_polls(),
        "rss_bytes": rss_bytes(),
        "threads": threading.active_count(),
    }


def idle_cpu_percent(seconds: float) -> float:
    """CPU used while every session sits polling and nothing happens (only re-polls after
    504s), in percent of one core."""
    before = cpu_seconds()
    time.sleep(seconds)  # a measuring window, not a wait for something to happen
    return 100 * (cpu_seconds() - before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--impl", choices=["library", "baseline"], required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument(
        "--outage", type=float, metavar="S", help="measure recovery after an S-second outage"
    )
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    server = Server(args.url)
    sessions = server.create_sessions(args.sessions)
    if args.outage is not None:
        outcome = run_outage(args.impl, server, sessions, args.outage)
        print(json.dumps({"impl": args.impl, "sessions": args.sessions, **outcome}))
        return
    floor = floor_latency(server, sessions[0])
    baseline_rss, baseline_threads = rss_bytes(), threading.active_count()
    run = run_library if args.impl == "library" else run_baseline
    result = run(server, sessions, args.idle_seconds)
    latency = result.pop("latency")
    print(
        json.dumps(
            {
                "impl": args.impl,
                "sessions": args.sessions,
                "sessions_polling": result["sessions_polling"],
                "rss_per_session_bytes": (result["rss_bytes"] - baseline_rss) / args.sessions,
                "threads": result["threads"] - baseline_threads,
                "idle_cpu_percent": result["idle_cpu_percent"],
                "asks_per_s": result["asks_per_s"],
                "latency_p50_ms": statistics.median(latency) * 1000,
                "latency_p99_ms": percentile(latency, 99) * 1000,
                "floor_p50_ms": statistics.median(floor) * 1000,
                "floor_p99_ms": percentile(floor, 99) * 1000,
                "open_s": result["open_s"],
                "stop_s": result["stop_s"],
                "stop_deadline_met": result["stop_deadline_met"],
                "threads_after_stop": result["threads_after_stop"],
            }
        )
    )


if __name__ == "__main__":
    main()
