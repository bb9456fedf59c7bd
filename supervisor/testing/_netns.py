"""A server behind a real link: a network namespace of its own, reached over a veth pair, whose
faults are the network's (netfilter rules in the namespace), not an application proxy's.

A proxy on loopback fails politely: it closes, it resets, it answers. A real network drops
packets without a word, forgets flows, and delivers a request the client gave up on once it
heals. This puts a server where that can happen to it, on this machine only: the namespace,
its veth pair and its addresses (10.254.N.0/30) are made here and removed at `close()`; its
rules live in the namespace's own tables, never the host's.

Needs root (`CAP_NET_ADMIN`), `ip` (iproute2) and `iptables`; `namespaces_unavailable()` says
why not where it cannot run. `FarEmulator` is the Parlant emulator run there, optionally
behind a delay relay (this kernel has no netem: `python -m supervisor.testing._relay`
delays each chunk instead, in order).
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Final, Self, final

__all__ = ["FarEmulator", "NetworkNamespace", "namespaces_unavailable"]

_SUBNETS: Final = 16_384
"""10.254.0.0/16 in /30s: the N of 10.254.N/4.(N%64*4) (see `_free_subnet`)."""
_START_TIMEOUT: Final = 60.0
"""Seconds a server in the namespace has to say it listens."""


def namespaces_unavailable() -> str | None:
    """Why this machine cannot make a namespace with a veth pair and netfilter rules (None:
    it can)."""
    if os.geteuid() != 0:
        return "real-network faults need root (network namespaces, veth pairs, iptables)"
    for tool in ("ip", "iptables", "ss"):
        if shutil.which(tool) is None:
            return f"real-network faults need {tool} (Debian: iproute2, iptables)"
    name = f"pss-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"this machine cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@final
class NetworkNamespace:
    """A namespace reached from this one over a veth pair: `address` inside, `host_address`
    here. Run a server in it with `popen`; break the link with `partition`, `lose_flows`,
    `lose`; `heal` undoes them.
    """

    def __init__(self) -> None:
        index = _free_subnet()
        tag = f"{index}x{os.getpid() % 100_000}"
        self.name = f"pss-{tag}"
        self._host_link = f"pss{index}h"
        self._inner_link = f"pss{index}n"
        network = f"10.254.{index // 64}"
        self.host_address = f"{network}.{index % 64 * 4 + 1}"
        self.address = f"{network}.{index % 64 * 4 + 2}"
        self._made: list[list[str]] = []  # undo commands, last first
        self._dropped = 0  # packets dropped by rules already removed
        try:
            self._ip("netns", "add", self.name)
            self._made.append(["ip", "netns", "del", self.name])
            self._ip(
                "link", "add", self._host_link, "type", "veth", "peer", "name", self._inner_link
            )
            self._made.append(["ip", "link", "del", self._host_link])
            self._ip("link", "set", self._inner_link, "netns", self.name)
            self._ip("addr", "add", f"{self.host_address}/30", "dev", self._host_link)
            self._ip("link", "set", self._host_link, "up")
            self.inside("ip", "addr", "add", f"{self.address}/30", "dev", self._inner_link)
            self.inside("ip", "link", "set", self._inner_link, "up")
            self.inside("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    # --- running things inside ------------------------------------------------------------

    def inside(self, *command: str) -> str:
        """Run `command` in the namespace; its output (`RuntimeError` if it fails)."""
        return _run(["ip", "netns", "exec", self.name, *command])

    def popen(self, command: Sequence[str], **options: object) -> subprocess.Popen[str]:
        """Start `command` in the namespace (a server, typically)."""
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            ["ip", "netns", "exec", self.name, *command], text=True, **options
        )

    # --- faults ----------------------------------------------------------------------------

    def partition(self) -> None:
        """Drop every packet to and from the namespace, without a word (no RST, no ICMP)."""
        for chain in ("INPUT", "OUTPUT"):
            self.inside("iptables", "-A", chain, "!", "-i" if chain == "INPUT" else "-o", "lo",
                        "-j", "DROP")  # fmt: skip

    def lose_flows(self, port: int) -> int:
        """Forget every TCP flow to `port` in the namespace, as a NAT, a load balancer or
        conntrack that lost its state does: the server's sockets are destroyed and nothing is
        said (their RSTs dropped); the client's sockets stay open, and every packet of theirs
        is dropped from now on. New connections work. Returns how many flows were lost."""
        flows = self._flows(port)
        for client_port in flows:
            self.inside("iptables", "-A", "INPUT", "-p", "tcp", "--sport", str(client_port),
                        "--dport", str(port), "-j", "DROP")  # fmt: skip
            self.inside("iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", str(client_port),
                        "--sport", str(port), "-j", "DROP")  # fmt: skip
        if flows:
            self.inside("ss", "-K", "-t", "state", "established", f"( sport = :{port} )")
        return len(flows)

    def lose(self, probability: float) -> None:
        """Drop each packet, either way, with `probability` (netfilter's `statistic` match:
        this kernel has no netem)."""
        for chain in ("INPUT", "OUTPUT"):
            self.inside("iptables", "-A", chain, "!", "-i" if chain == "INPUT" else "-o", "lo",
                        "-m", "statistic", "--mode", "random", "--probability",
                        f"{probability:.4f}", "-j", "DROP")  # fmt: skip

    def heal(self) -> None:
        """Remove every rule: the link works again (lost flows stay lost: their sockets are
        gone on the server's side)."""
        self._dropped = self.dropped()
        self.inside("iptables", "-Z")
        self.inside("iptables", "-F")

    def dropped(self) -> int:
        """Packets the faults have dropped so far, healed ones included."""
        listing = self.inside("iptables", "-L", "-n", "-v", "-x")
        return self._dropped + sum(
            int(fields[0])
            for fields in map(str.split, listing.splitlines())
            if len(fields) > 2 and fields[0].isdigit() and fields[2] == "DROP"
        )

    def vanish(self) -> None:
        """The namespace's host is gone from the link (its interface down): packets to it go
        nowhere, new connections fail with "no route to host" once the neighbour is not found.
        The host's route stays (marked linkdown), so nothing leaves this machine."""
        self.inside("ip", "link", "set", self._inner_link, "down")

    def reappear(self) -> None:
        """The host is back on the link."""
        self.inside("ip", "link", "set", self._inner_link, "up")

    def _flows(self, port: int) -> list[int]:
        """The client ports of the established TCP flows to `port` in the namespace."""
        listing = self.inside("ss", "-Htn", "state", "established", f"( sport = :{port} )")
        ports = []
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) >= 4:
                ports.append(int(fields[-1].rsplit(":", 1)[1]))
        return ports

    # --- life ------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the veth pair and the namespace (its processes must be stopped first)."""
        while self._made:
            with contextlib.suppress(RuntimeError):
                _run(self._made.pop())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _ip(self, *arguments: str) -> str:
        return _run(["ip", *arguments])


def _free_subnet() -> int:
    """A /30 of 10.254.0.0/16 no interface of this machine is on (another process's
    namespace, a run killed before it cleaned up), counted from a point this process draws."""
    taken = set()
    for line in _run(["ip", "-o", "-4", "addr", "show"]).splitlines():
        for field in line.split():
            if field.startswith("10.254."):
                _, _, third, fourth = field.split("/")[0].split(".")
                taken.add(int(third) * 64 + int(fourth) // 4)
    links = _run(["ip", "-o", "link", "show"])
    start = random.randrange(_SUBNETS)
    for step in range(_SUBNETS):
        index = (start + step) % _SUBNETS
        if index not in taken and f"pss{index}h" not in links:
            return index
    raise RuntimeError("no free /30 left in 10.254.0.0/16")


@final
class FarEmulator:
    """The Parlant emulator (`python -m supervisor emulator`) in a namespace of its own,
    reached at `url` over a veth pair; with `delay`, behind a relay in the namespace that holds
    each chunk `delay` seconds plus up to `jitter` more (seeded), in order.
    """

    def __init__(
        self, *, port: int = 8800, delay: float = 0.0, jitter: float = 0.0, seed: int = 0
    ) -> None:
        self.namespace = NetworkNamespace()
        self.port = port
        self.url = f"http://{self.namespace.address}:{port}"
        self._processes: list[subprocess.Popen[str]] = []
        try:
            relayed = delay > 0 or jitter > 0
            host = "127.0.0.1" if relayed else self.namespace.address
            inner_port = port + 1 if relayed else port
            self._start(
                [sys.executable, "-m", "supervisor", "emulator", "--host", host,
                 "--port", str(inner_port)],
                "Parlant emulator on",
            )  # fmt: skip
            if relayed:
                self._start(
                    [sys.executable, "-m", "supervisor.testing._relay",
                     f"{self.namespace.address}:{port}", f"127.0.0.1:{inner_port}",
                     "--delay", str(delay), "--jitter", str(jitter), "--seed", str(seed)],
                    "relaying",
                )  # fmt: skip
        except BaseException:
            self.close()
            raise

    def _start(self, command: list[str], ready: str) -> None:
        process = self.namespace.popen(command, stdout=subprocess.PIPE)
        self._processes.append(process)
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], _START_TIMEOUT)
        first = process.stdout.readline() if readable else ""  # printed once it listens
        if ready not in first:
            raise RuntimeError(f"{' '.join(command)} did not start: {first!r}")

    def vanish(self) -> None:
        """The server's host is gone: off the link, its processes frozen."""
        self.namespace.vanish()
        for process in self._processes:
            process.send_signal(signal.SIGSTOP)

    def reappear(self) -> None:
        """The host is back, as it was (its processes resume)."""
        for process in self._processes:
            process.send_signal(signal.SIGCONT)
        self.namespace.reappear()

    def close(self) -> None:
        """Stop the processes and remove the namespace."""
        with contextlib.suppress(RuntimeError):
            self.namespace.heal()
            self.namespace.reappear()
        for process in reversed(self._processes):
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        self._processes.clear()
        self.namespace.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _run(command: Sequence[str]) -> str:
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done.stdout
