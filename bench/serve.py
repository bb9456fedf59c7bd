"""The benchmark's server: the emulator with a zero-delay echo agent, in a process of its own,
on uvloop with httptools (uvicorn's standard pair; asyncio and h11, the emulator's defaults in
tests, made it the limit of asks per second). A second agent, `clock`, streams its answer: for
"clock N S" it writes N chunks S seconds apart, each the server's `time.monotonic()` at the
moment it is written (the same clock on every process of this machine), for `bench.stream`.

Prints its base URL on the first line of stdout, then serves until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator

import uvloop

from supervisor.emulator import EmulatedAgent, EmulatorServer, ParlantEmulator, TurnContext


async def clock(turn: TurnContext) -> None:
    """Stream chunks that say when they were written."""
    _, count, pause = turn.message.split()

    async def ticks() -> AsyncIterator[str]:
        for index in range(int(count)):
            if index:
                await asyncio.sleep(float(pause))
            yield f" {time.monotonic():.6f}"

    turn.status("typing")
    await turn.stream(ticks())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--refuse-read-event", action="store_true", help="answer read_event with 403"
    )
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = EmulatorServer(
        ParlantEmulator(
            [EmulatedAgent("echo"), EmulatedAgent("clock", clock, output_mode="stream")],
            refuse_read_event=args.refuse_read_event,
        ),
        port=args.port,
        http="httptools",
        loop_factory=uvloop.new_event_loop,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def until_stdin_closes() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    print(server.url, flush=True)
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
