"""A server behind a real link: a network namespace of its own, reached over a veth pair, whose
faults are the network's (netfilter rules in the namespace), not an application proxy's.

A proxy on loopback fails politely: it closes, it resets, it answers. A real network drops
packets without a word, forgets flows, and delivers a request the client gave up on once it
heals. This puts a server where that can happen to it, on this machine only: the namespace,
its veth pair and its addresses (10.254.N.0/30) are made here and removed at `close()`; its
rules live in the namespace's own tables, never the host's.

Needs root (`CAP_NET_ADMIN`), `ip` (iproute2) and `iptables`; `unavailable()` says why not
where it cannot run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import Final, Self, final

__all__ = ["NetworkNamespace", "unavailable"]

_SUBNETS: Final = itertools.count(1)
"""The N of 10.254.N.0/30, per namespace made by this process."""


def unavailable() -> str | None:
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
        index = next(_SUBNETS)
        if index > 250:
            raise RuntimeError("no 10.254.N.0/30 subnet left in this process")
        tag = f"{os.getpid() % 10_000}{index}"
        self.name = f"pss-{tag}"
        self._host_link = f"pss{tag}h"[:15]
        self._inner_link = f"pss{tag}n"[:15]
        self.host_address = f"10.254.{index}.1"
        self.address = f"10.254.{index}.2"
        self._made: list[list[str]] = []  # undo commands, last first
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
        self.inside("iptables", "-F")

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


def _run(command: Sequence[str]) -> str:
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done.stdout
