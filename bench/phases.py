"""Where the time of opening, asking and stopping goes at N sessions: the wall time of each
phase beside the CPU the client and the bench's server each spent in it, the client's time in
the garbage collector and the polls it finished, optionally with a py-spy profile of each phase
(collapsed stacks, for flame graphs or `--top`).

    python -m bench.phases --sessions 15000 [--profile DIR] [--top 20] [--idle 40]
                           [--no-asks] [--request-concurrency 64] [--wait-for-data 2]

A client that waits on a server it saturates shows server CPU near a core; a client whose own
cost grows with N shows client CPU per session growing. py-spy (`pip install py-spy`) slows
what it samples: compare profiled runs with profiled runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry

from bench.client import ASK_BUDGET, WAIT_FOR_DATA, Server, asks_per_second
from metrics import PREFIX
from supervisor import SessionSupervisor, SupervisorConfig


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def polls(registry: CollectorRegistry) -> dict[str, float]:
    """Long-polls the supervisor finished so far, by outcome (its own counter)."""
    return {
        sample.labels["outcome"]: sample.value
        for metric in registry.collect()
        if metric.name == f"{PREFIX}_polls"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


class Collections:
    """Time this process spent in the cyclic garbage collector, by generation (`gc.callbacks`)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._began
            self.counts[generation] += 1

    def __str__(self) -> str:
        return ", ".join(
            f"gen{g} {self.counts[g]}x {self.seconds[g]:.2f} s" for g in range(3) if self.counts[g]
        )


class Phase:
    """Times a phase: wall, client CPU, server CPU; profiles it with py-spy if asked."""

    def __init__(
        self,
        name: str,
        server_pid: int,
        profile: Path | None,
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.server_pid = server_pid
        self.profile = profile
        self.registry = registry
        self._spy: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Phase:
        if self.profile is not None:
            beside = Path(sys.executable).parent / "py-spy"  # in this venv, not on PATH
            spy = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
            if spy is None:
                raise SystemExit("--profile needs py-spy: pip install py-spy")
            output = self.profile / f"{self.name}.txt"
            command = [spy, "record", "--pid", str(os.getpid()), "--format", "raw"]
            self._spy = subprocess.Popen(
                [*command, "--rate", "200", "-o", str(output)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # py-spy attaches
        self._polls = polls(self.registry)
        self._collections = Collections()
        gc.callbacks.append(self._collections)
        self._client = cpu_seconds(os.getpid())
        self._server = cpu_seconds(self.server_pid)
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        client = cpu_seconds(os.getpid()) - self._client
        server = cpu_seconds(self.server_pid) - self._server
        gc.callbacks.remove(self._collections)
        print(
            f"{self.name:<5} wall {wall:7.2f} s   client CPU {client:7.2f} s   "
            f"server CPU {server:7.2f} s",
            flush=True,
        )
        print(f"      garbage collection: {str(self._collections) or 'none'}", flush=True)
        now = polls(self.registry)
        sent = {k: int(v - self._polls.get(k, 0)) for k, v in now.items()}
        done = ", ".join(f"{k} {v:,}" for k, v in sorted(sent.items()) if v)
        print(f"      polls finished: {done or 'none'}", flush=True)
        if self.name == "idle" and sent.get("gateway_timeout"):
            per_cycle = client / sent["gateway_timeout"] * 1000
            print(f"      client CPU per 504-and-repeat cycle: {per_cycle:.3f} ms", flush=True)
        if self._spy is not None:
            self._spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
            self._spy.wait(timeout=120)


def top(path: Path, count: int) -> None:
    """The functions with the most samples of their own in a py-spy raw profile."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if frames:
            own[frames[-1]] += int(samples)
            total += int(samples)
    print(f"-- {path.name}: {total} samples; most of their own:")
    for frame, taken in own.most_common(count):
        print(f"{taken / total * 100:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--profile", type=Path, help="write a py-spy profile per phase here")
    parser.add_argument("--top", type=int, default=0, help="print each profile's top N")
    parser.add_argument(
        "--idle", type=float, default=0.0, help="seconds of an idle phase after open (polls cycle)"
    )
    parser.add_argument(
        "--no-asks", action="store_true", help="open, then stop (a stop with nothing in flight)"
    )
    parser.add_argument(
        "--request-concurrency", type=int, default=None, help="SupervisorConfig's (default: its)"
    )
    parser.add_argument(
        "--wait-for-data",
        type=int,
        default=WAIT_FOR_DATA,
        help=f"each long-poll's wait (default: the bench's {WAIT_FOR_DATA} s); short, the idle "
        "phase measures many 504-and-repeat cycles",
    )
    options = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if options.profile is not None:
        options.profile.mkdir(parents=True, exist_ok=True)
    serving = subprocess.Popen(
        [sys.executable, "-m", "bench.serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert serving.stdout is not None
        url = serving.stdout.readline().strip()
        server = Server(url)
        sessions = server.create_sessions(options.sessions)
        count = len(sessions)
        print(f"{count} sessions", flush=True)
        wait = options.wait_for_data
        jitter = min(SupervisorConfig().wait_jitter, wait // 2)  # the default, where it fits
        # every session polled, none beyond a ceiling: the client's side of N open polls
        config = SupervisorConfig(
            wait_for_data=wait, wait_jitter=jitter, linger=None, max_waiting_polls=None
        )
        if options.request_concurrency is not None:
            config = dataclasses.replace(config, request_concurrency=options.request_concurrency)
        sup = SessionSupervisor(url, config=config)
        with Phase("open", serving.pid, options.profile, sup.registry):
            for session_id in sessions:
                sup.open(session_id, since=0)
            server.wait_for_open_polls(count)

        async def ask(session_id: str, text: str) -> bool:
            reply = await sup.aask(session_id, text, timeout=ASK_BUDGET)
            return reply.text == f"echo: {text}"

        if options.idle:
            with Phase("idle", serving.pid, options.profile, sup.registry):
                time.sleep(options.idle)  # the polls time out and are sent again meanwhile
        rate = None
        if not options.no_asks:
            with Phase("asks", serving.pid, options.profile, sup.registry):
                rate = asyncio.run(asks_per_second(ask, sessions))
        with Phase("stop", serving.pid, options.profile, sup.registry):
            sup.stop(timeout=60)
        if rate is not None:
            print(f"asks per second: {rate:.0f}", flush=True)
    finally:
        assert serving.stdin is not None
        serving.stdin.close()
        serving.wait(timeout=60)
    if options.profile is not None and options.top:
        names = ["open", *(["idle"] if options.idle else []), "stop"]
        if not options.no_asks:
            names.insert(-1, "asks")
        for name in names:
            top(options.profile / f"{name}.txt", options.top)


if __name__ == "__main__":
    main()
