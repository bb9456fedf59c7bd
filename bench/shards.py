"""Sessions per shard: a `ShardedSupervisor` on a local Ray instance, against the benchmark's
emulator (in a process of its own).

    python -m bench.shards [--shards 2] [--sessions 10000] [--json bench/results/shards.json]

Opens every session (spread over the shards by their ids), waits until each has an open poll
on the server, then reports the sessions per shard, each shard's RSS, the time to open them all,
one ask per session, all at once (asks per second), and the time to stop (each session's
final durable checkpoint written). Needs the [ray] extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.client import ASK_BUDGET, WAIT_FOR_DATA, Server
from supervisor import SupervisorConfig
from supervisor.sharding import ShardedSupervisor

CHECKPOINT_INTERVAL = 30.0  # durable checkpoints (required), written at most every 30 s


def measure(shards: int, sessions: int, console: Console) -> dict[str, Any]:
    """One run: a fresh emulator, a fresh local Ray instance, `sessions` over `shards`."""
    server_process = subprocess.Popen(
        [sys.executable, "-m", "bench.serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server_process.stdout is not None
        url = server_process.stdout.readline().strip()
        server = Server(url)
        with console.status(f"creating {sessions} sessions"):
            ids = server.create_sessions(sessions)
        with console.status(f"starting {shards} shards on a local Ray instance"):
            sharded = ShardedSupervisor(
                url,
                shards=shards,
                config=SupervisorConfig(
                    wait_for_data=WAIT_FOR_DATA,
                    # every session polled: the figures are of N open polls over shards
                    linger=None,
                    max_waiting_polls=None,
                    durable_checkpoints=True,
                    checkpoint_interval=CHECKPOINT_INTERVAL,
                ),
                cpus_per_shard=1.0,
            )
        try:
            idle_rss = list(sharded.shard_memory().values())  # Ray's worker + the library
            with console.status(f"opening {sessions} sessions"):
                started = time.perf_counter()
                for session_id in ids:
                    sharded.open(session_id, since=0)
                server.wait_for_open_polls(sessions, timeout=600)
                opened = time.perf_counter() - started
            polling = server.open_polls()
            rss = list(sharded.shard_memory().values())
            placed = Counter(sharded.shard_of(session_id) for session_id in ids)

            async def ask_each() -> float:
                started = time.perf_counter()
                replies = await asyncio.gather(
                    *(sharded.aask(sid, f"ask {sid}", timeout=ASK_BUDGET) for sid in ids)
                )
                if any(r.text != f"echo: ask {sid}" for r, sid in zip(replies, ids, strict=True)):
                    raise RuntimeError("an ask got another session's reply")
                return len(ids) / (time.perf_counter() - started)

            with console.status(f"{sessions} asks at once"):
                asks = asyncio.run(ask_each())
            with console.status("stopping"):
                started = time.perf_counter()
                summary = sharded.stop(timeout=60)
                stopped = time.perf_counter() - started
        finally:
            sharded.stop()
        return {
            "shards": shards,
            "sessions": sessions,
            "sessions_polling": polling,
            "sessions_per_shard": [placed[index] for index in range(shards)],
            "rss_per_shard_mib": [r / 2**20 for r in rss],
            "rss_per_shard_before_sessions_mib": [r / 2**20 for r in idle_rss],
            "rss_per_session_kib": (sum(rss) - sum(idle_rss)) / sessions / 1024,
            "open_s": opened,
            "asks_per_s": asks,
            "stop_s": stopped,
            "stop_deadline_met": summary.deadline_met,
        }
    finally:
        server_process.terminate()
        server_process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=Path("bench/results/shards.json"))
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    console = Console(width=None if sys.stdout.isatty() else 120)
    result = measure(args.shards, args.sessions, console)
    machine = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "result": result}, indent=2))
    table = Table(title=f"{args.sessions} sessions over {args.shards} Ray shards")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        shown = (
            ", ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in value)
            if isinstance(value, list)
            else f"{value:.2f}"
            if isinstance(value, float)
            else str(value)
        )
        table.add_row(key.replace("_", " "), shown)
    console.print(table)
    console.print(f"written to {args.json}")


if __name__ == "__main__":
    main()
