"""What one poll answered with very many events costs the rest of the process: the I/O loop's
longest stall, and the slowest ask of another session, while the batch is read. Parsed a piece
at a time (`actors._events.parse_events_gradually`, the library) against in one call on a
worker thread (the baseline, what the library did before), in the same run.

    python -m bench.batch [--events 100000]

The emulator runs in a process of its own (its own GIL), with one session holding `--events`
agent messages of 180 characters and another that answers asks at once. Each client reads the
whole first session from offset 0 through `events()` while asking the other, one ask after the
other, and a task on the I/O loop measures how late its 5 ms sleeps wake.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from parlant.client.types import Event

import actors._poller
from actors._events import parse_events, parse_events_soon
from supervisor import SessionSupervisor, SupervisorConfig
from supervisor.testing import EmulatedAgent, EmulatorServer, ParlantEmulator


def serve(events: int) -> None:
    """The emulator's process: fill a session, say where it is, serve until stdin closes."""
    server = EmulatorServer(ParlantEmulator([EmulatedAgent("echo")]))
    emulator = server.emulator
    full = server.call(emulator.create_session, "echo")
    other = server.call(emulator.create_session, "echo")

    def fill() -> None:
        for i in range(events):
            emulator.post_agent_message(full, f"{i} " + "x" * 180)

    server.call(fill)
    print(json.dumps({"url": server.url, "full": full, "other": other}), flush=True)
    sys.stdin.read()
    server.stop()


async def _in_one_call(body: bytes) -> list[Event]:
    """The baseline: the whole body parsed and validated in one call, on a worker thread."""
    return await asyncio.to_thread(parse_events, body)


def measure(
    where: dict[str, str], events: int, parse: Callable[[bytes], Coroutine[Any, Any, list[Event]]]
) -> dict[str, float]:
    setattr(actors._poller, "parse_events_soon", parse)  # noqa: B010 (the one to measure)
    config = SupervisorConfig(max_response_bytes=128 * 2**20)
    with SessionSupervisor(where["url"], config=config) as sup:
        for i in range(5):
            sup.ask(where["other"], f"warm {i}", timeout=60)
        stall = [0.0]
        done = threading.Event()

        async def watch() -> None:
            loop = asyncio.get_running_loop()
            while not done.is_set():
                started = loop.time()
                await asyncio.sleep(0.005)
                stall[0] = max(stall[0], loop.time() - started - 0.005)

        watching = sup.runtime.io.submit(watch())
        read = [0.0]

        def read_all() -> None:
            started = time.perf_counter()
            for count, _ in enumerate(sup.events(where["full"], since=0), 1):
                if count >= events:
                    break
            read[0] = time.perf_counter() - started

        reader = threading.Thread(target=read_all)
        reader.start()
        asks = []
        while reader.is_alive():
            started = time.perf_counter()
            sup.ask(where["other"], "meanwhile", timeout=60)
            asks.append(time.perf_counter() - started)
        reader.join()
        done.set()
        watching.result(10)
    return {
        "loop_stall_s": stall[0],
        "slowest_ask_s": max(asks),
        "ask_p50_s": statistics.median(asks),
        "asks": len(asks),
        "read_s": read[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batch")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.events)
        return
    command = [sys.executable, "-m", "bench.batch", "--serve", "--events", str(args.events)]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    assert server.stdin is not None
    try:
        where = json.loads(server.stdout.readline())
        rows = {
            "baseline (one call, worker thread)": measure(where, args.events, _in_one_call),
            "library (a piece at a time)": measure(where, args.events, parse_events_soon),
        }
    finally:
        server.stdin.close()
        server.wait(60)
    print(f"one poll of {args.events:,} events (emulator in its own process)")
    print(f"{'':38}{'loop stall':>12}{'slowest ask':>13}{'ask p50':>10}{'asks':>6}{'read':>8}")
    for name, row in rows.items():
        print(
            f"{name:38}{row['loop_stall_s']:>11.2f}s{row['slowest_ask_s']:>12.2f}s"
            f"{row['ask_p50_s']:>9.3f}s{row['asks']:>6.0f}{row['read_s']:>7.1f}s"
        )
    base, lib = rows.values()
    print(f"stall ratio library/baseline: {lib['loop_stall_s'] / base['loop_stall_s']:.2f}")


if __name__ == "__main__":
    main()
