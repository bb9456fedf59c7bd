"""The benchmark's server: the emulator with a zero-delay echo agent, in a process of its own,
on uvloop with httptools (uvicorn's standard pair; asyncio and h11, the emulator's defaults in
tests, made it the limit of asks per second).

Prints its base URL on the first line of stdout, then serves until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import threading

import uvloop

from supervisor.testing import EmulatedAgent, EmulatorServer, ParlantEmulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = EmulatorServer(
        ParlantEmulator([EmulatedAgent("echo")]),
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
