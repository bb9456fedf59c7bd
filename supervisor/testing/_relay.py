"""A TCP relay that delays each chunk, in order: a link's delay and jitter where the kernel has
no netem (`FarEmulator` runs it in the server's namespace, in front of the server).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time
from collections.abc import Sequence

__all__ = ["main", "relay"]


async def relay(listen: str, upstream: str, delay: float, jitter: float, seed: int) -> None:
    """Forward every connection to `listen` to `upstream`, each chunk held `delay` seconds
    plus up to `jitter` more, never overtaking the chunk before it."""
    rng = random.Random(seed)

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await held.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not chunk:
                    writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        last = 0.0
        try:
            while True:
                chunk = await reader.read(65536)
                last = max(last, time.monotonic() + delay + rng.uniform(0, jitter))
                held.put_nowait((last, chunk))
                if not chunk:
                    break
            await delivering
        finally:
            delivering.cancel()

    async def serve(client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        host, port = upstream.rsplit(":", 1)
        try:
            server_reader, server = await asyncio.open_connection(host, int(port))
        except OSError:
            client.close()
            return
        try:
            await asyncio.gather(pump(client_reader, server), pump(server_reader, client))
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # the relay is stopping: end quietly (Python 3.11's streams log a handler task
            # that ends cancelled as an error)
            pass
        finally:
            for writer in (client, server):
                writer.close()

    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(serve, host, int(port))
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    sys.stdout.write(f"relaying {listen} to {upstream}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def main(arguments: Sequence[str]) -> None:
    """`python -m supervisor.testing._relay LISTEN UPSTREAM [--delay S] [--jitter S]`."""
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.testing._relay",
        description="A TCP relay that holds each chunk a while, in order (a link's delay).",
    )
    parser.add_argument("listen", help="host:port to listen on")
    parser.add_argument("upstream", help="host:port to forward to")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(arguments)
    asyncio.run(
        relay(options.listen, options.upstream, options.delay, options.jitter, options.seed)
    )


if __name__ == "__main__":
    main(sys.argv[1:])
