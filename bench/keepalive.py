"""What TCP keepalive (`actors._wire.KEEPALIVE`) costs: N idle connections held open for a while,
with and without it, in the same run.

    python -m bench.keepalive [--connections 15000] [--seconds 30]

Every connection the library holds (a waiting poll's, a pooled one) has keepalive: after 5 s of
silence, a probe every 5 s, answered by the peer's kernel. Probes are kernel work (no process
wakes up for them), so the figures are the machine's: its CPU (`/proc/stat`, all cores, both
ends of every connection being on loopback) and the TCP segments it sends (`/proc/net/snmp`)
while the connections sit idle. The accepting end runs in a process of its own (a process may
hold about 20,000 files here).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from actors._wire import socket_options


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _out_segments() -> int:
    lines = Path("/proc/net/snmp").read_text().splitlines()
    header, values = [line.split() for line in lines if line.startswith("Tcp:")][:2]
    return int(values[header.index("OutSegs")])


def _raise_file_limit(files: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, files)), hard))


def _accept(connections: int) -> None:
    """The accepting end: listen, say the port, accept and hold until stdin closes."""
    _raise_file_limit(connections + 100)
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    print(listener.getsockname()[1], flush=True)
    held = [listener.accept()[0] for _ in range(connections)]
    print("held", flush=True)
    sys.stdin.read()
    for sock in held:
        sock.close()


def _hold(connections: int, seconds: float, keepalive: bool) -> tuple[float, float]:
    """(% of a core, TCP segments a second) while `connections` sit idle."""
    _raise_file_limit(connections + 100)
    acceptor = subprocess.Popen(
        [sys.executable, "-m", "bench.keepalive", "--accept", str(connections)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert acceptor.stdout is not None
    assert acceptor.stdin is not None
    port = int(acceptor.stdout.readline())
    clients = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        if keepalive:
            for level, option, value in socket_options():
                sock.setsockopt(level, option, value)
        clients.append(sock)
    assert acceptor.stdout.readline().strip() == "held"
    time.sleep(6)  # past keepalive's idle time: the probes run from now on
    busy0, total0 = _cpu_jiffies()
    segments0 = _out_segments()
    time.sleep(seconds)  # the measurement's window
    busy1, total1 = _cpu_jiffies()
    segments1 = _out_segments()
    for sock in clients:
        sock.close()
    acceptor.stdin.close()
    acceptor.wait(timeout=60)
    cores = os.cpu_count() or 1
    return (
        100.0 * cores * (busy1 - busy0) / max(1, total1 - total0),
        (segments1 - segments0) / seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=15_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--accept", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.accept:
        _accept(args.accept)
        return
    for keepalive in (False, True):
        cpu, segments = _hold(args.connections, args.seconds, keepalive)
        state = "on " if keepalive else "off"
        print(
            f"{args.connections} idle connections, keepalive {state}: "
            f"{cpu:.2f} % of a core (the whole machine), {segments:.0f} TCP segments/s"
        )


if __name__ == "__main__":
    main()
