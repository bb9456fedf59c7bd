"""A real Parlant server in a subprocess, answering through the deterministic NLP service."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, NamedTuple, Self

import httpx

from supervisor._extras import install_command, missing_modules
from supervisor._net import http_url
from supervisor.emulator import CUT_MARKER, FAIL_MARKER

__all__ = [
    "CUT_MARKER",
    "FAIL_MARKER",
    "ParlantListener",
    "ParlantServer",
    "ParlantServerError",
    "ReplyFunction",
    "Utterance",
    "echo_reply",
]

INSTALL_HINT: Final = (
    f"a real Parlant server needs the [parlant-server] extra: {install_command('parlant-server')}"
)

ECHO_AGENTS: Final[Mapping[str, str]] = {"Echo": "Answers with what it was told."}


class Utterance(NamedTuple):
    """What a reply is derived from: the agent's name and the customer's latest message."""

    agent: str
    message: str


ReplyFunction = Callable[[Utterance], str]
"""Derives an agent's reply from what the customer said (pure and deterministic)."""


def echo_reply(utterance: Utterance) -> str:
    """The default reply: the customer's message, prefixed (as the emulator's `echo()`)."""
    return f"echo: {utterance.message}"


class ParlantListener(NamedTuple):
    """The `SessionListener` a `ParlantServer` runs.

    Attributes:
        name: `PollingSessionListener` (Parlant's own: waiting requests re-read the store on a
            timer) or `NotifyingSessionListener` (`supervisor.parlant_module`).
        observed: The module's listener sees the store's writes (else it re-reads on timers).
        waiting: Requests waiting on it now (None for Parlant's own, which does not count).
    """

    name: str
    observed: bool
    waiting: int | None


class ParlantServerError(RuntimeError):
    """The Parlant server did not start (the message ends with the tail of its log)."""


class ParlantServer:
    """A real Parlant server (PyPI `parlant`, the `[parlant-server]` extra) on 127.0.0.1, in a
    process of its own, whose agents answer without a model.

    Its NLP service is deterministic: each agent message is `reply(Utterance(agent, message))`,
    where `reply` names a function as `"module:function"` (default: `"echo: <message>"`);
    every other request of Parlant's engine (guideline matching, tool calls ...) gets an empty
    answer. Agents named in `streaming` stream their replies (`output_mode=STREAM`), one word a
    chunk. A customer message containing `FAIL_MARKER` makes the model fail, one containing
    `CUT_MARKER` cuts a streamed reply after its first chunk. Stores are transient: `restart()`
    and `kill()` forget every customer and session.

    The constructor returns once the server answers `/healthz` with the agents created. `stop()`
    (or leaving the `with` block) ends the process and waits for it: nothing is left running,
    and the process also ends by itself if the one that started it dies.

    Args:
        agents: Agents to create at start-up (name -> description).
        policy: `"null"`, no deliberate delays (a turn takes ~0.3 s), or `"stock"`, Parlant's
            default perceived-performance policy (an intermediate `ready`, 2-4 s per turn).
        reply: The reply function, as `"module:function"`, importable from this process (it
            runs in the server's, with this sys.path).
        streaming: Names (among `agents`) of the agents that stream their replies.
        chunk_delay: Seconds between two chunks of a streamed reply.
        authorization: `"development"`, Parlant's default (everything permitted), or
            `"production"`, its production policy (`PARLANT_ENV=production`): no customer,
            session, PATCH, DELETE or `read_event` (403) but guest sessions, and per-IP rate
            limits (429).
        parlant_module: Load `supervisor.parlant_module`: requests waiting on a session are
            woken by its writes instead of re-reading Parlant's store every 0.25 s.
        port: The API port (0: a free one); `tool_port` the same for its tool service.
        startup_timeout: Seconds to wait for the server to become healthy.

    Example:
        >>> with ParlantServer() as parlant:
        ...     with SessionSupervisor(parlant.url) as supervisor:
        ...         agent = supervisor.ensure_agents(["Echo"])["Echo"]
    """

    def __init__(
        self,
        *,
        agents: Mapping[str, str] = ECHO_AGENTS,
        policy: Literal["null", "stock"] = "null",
        reply: str = "supervisor.testing._parlant_server:echo_reply",
        streaming: Collection[str] = (),
        chunk_delay: float = 0.02,
        authorization: Literal["development", "production"] = "development",
        parlant_module: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        tool_port: int = 0,
        startup_timeout: float = 180.0,
    ) -> None:
        # parlant-client installs a `parlant` namespace package: look for the server itself
        if missing_modules("parlant.sdk"):
            raise ParlantServerError(INSTALL_HINT)
        for name in agents:
            if not name or "=" in name:
                raise ValueError(f"an agent's name must be non-empty without '=', got {name!r}")
        unknown = sorted(set(streaming) - set(agents))
        if unknown:
            raise ValueError(f"streaming names agents that are not in agents: {unknown}")
        if chunk_delay < 0:
            raise ValueError(f"chunk_delay must be >= 0 seconds, got {chunk_delay}")
        self.host = host
        self.port = _check_free(host, port) if port else _free_port(host)
        self.tool_port = (
            _check_free(host, tool_port) if tool_port else _free_port(host, other_than=self.port)
        )
        self.policy = policy
        self._startup_timeout = startup_timeout
        self._home = tempfile.TemporaryDirectory(prefix="parlant-server-")
        self.log_path = Path(self._home.name) / "server.log"
        """The server's own log (stdout and stderr), kept until `stop()`."""
        self._command = [
            sys.executable,
            "-m",
            "supervisor.testing._parlant_main",
            f"--host={host}",
            f"--port={self.port}",
            f"--tool-port={self.tool_port}",
            f"--policy={policy}",
            f"--reply={reply}",
            f"--chunk-delay={chunk_delay}",
            f"--authorization={authorization}",
            *(f"--agent={name}={description}" for name, description in agents.items()),
            *(f"--stream={name}" for name in streaming),
            *(["--parlant-module"] if parlant_module else []),
        ]
        self._process: subprocess.Popen[bytes] | None = None
        self._start()

    @property
    def url(self) -> str:
        """The server's base URL."""
        return http_url(self.host, self.port)

    def listener(self) -> ParlantListener:
        """Which `SessionListener` the server runs, from a route of this harness's own
        (`GET /_harness/listener`, not Parlant's)."""
        answer = httpx.get(f"{self.url}/_harness/listener", timeout=10).json()
        return ParlantListener(answer["listener"], answer["observed"], answer["waiting"])

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns when the process is gone."""
        self._end(signal.SIGTERM, timeout)
        self._home.cleanup()

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        self._end(signal.SIGKILL, timeout=15.0)

    def restart(self) -> None:
        """Kill the server and start it again on the same ports, with empty stores."""
        self.kill()
        self._start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start(self) -> None:
        environment = {
            **os.environ,
            # `reply` names a function importable here: make it importable there (a test's
            # own package is often on sys.path only through the current directory).
            "PYTHONPATH": os.pathsep.join(entry or os.getcwd() for entry in sys.path),
            "PARLANT_HOME": self._home.name,
            "PYTHONUNBUFFERED": "1",
            # the server's own `rich` progress bars and colours would only garble the log
            "TERM": "dumb",
            "NO_COLOR": "1",
        }
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._home.name,
                env=environment,
            )
        try:
            self._wait_healthy()
        except BaseException:
            self._end(signal.SIGKILL, timeout=15.0)
            raise

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise ParlantServerError(
                        f"the Parlant server exited with {self._process.returncode} while "
                        f"starting\n{self._log_tail()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                time.sleep(0.1)  # bounded by `deadline`; the server has no readiness push
        raise ParlantServerError(
            f"the Parlant server was not healthy after {self._startup_timeout} s\n"
            f"{self._log_tail()}"
        )

    def _end(self, how: signal.Signals, timeout: float) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(how)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _check_free(host: str, port: int) -> int:
    """`port`, if the server could listen on it; else a clear error now, rather than a
    traceback in the server's log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ParlantServerError(f"cannot listen on {host}:{port}: {error}") from None
    return port


def _free_port(host: str, other_than: int = 0) -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port: int = probe.getsockname()[1]
        if port != other_than:
            return port
