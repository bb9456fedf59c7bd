"""The README's main job, run the way a new user runs it."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from supervisor.sharding import INSTALL_HINT as SHARDING_HINT
from supervisor.testing import EmulatorServer
from tests.helpers import require_module, require_parlant


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_on_the_embedded_emulator_holds_every_conversation_and_exits_0() -> None:
    result = run_cli("demo")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "embedded emulator" in out
    assert "preamble: One moment." in out
    assert "status: ready (completed)" in out
    assert "follow-up after ready, in the history: Would you like the full citations" in out
    assert "sessions started" in out  # the metrics summary, read from GET /metrics
    assert "demo finished" in out
    assert "session.started" not in out  # info logs only with --verbose
    # a pipe is no terminal: long lines stay whole (they were cut at 80 columns)
    assert (
        "reply: Chronic kidney disease stage 3 means an eGFR of 30-59 mL/min/1.73m2. Papers "
        "worth reading: KDIGO 2024 CKD guideline;" in out
    )
    assert re.search(r"backend at http://127\.0\.0\.1:\d+ \(Parlant: the embedded emulator\)", out)


def test_demo_against_a_given_parlant_url_creates_its_agents_there(
    serve: Callable[..., EmulatorServer],
) -> None:
    server = serve()

    result = run_cli("demo", "--parlant", server.url, "--timeout", "30")

    assert result.returncode == 0, result.stderr
    assert "reply: echo: Tell me about CKD stage 3" in result.stdout
    names = [a["name"] for a in server.call(server.emulator.agents)]
    assert {"ResearchPaperAgent", "MedicalWelfareAgent"} <= set(names)


@pytest.mark.parametrize("parlant", ["embedded", "local", "embedded-sharded"])
def test_serve_answers_the_readme_curl_and_stops_cleanly_on_sigterm(
    parlant: str, tmp_path: Path
) -> None:
    if parlant == "local":
        require_parlant()
    options = ["--parlant", parlant]
    if parlant == "embedded-sharded":  # README, "Scaling out": 2 shards on a local Ray
        require_module("ray", SHARDING_HINT)
        options = ["--parlant", "embedded", "--shards", "2"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # As a shell starts a background job: SIGINT ignored, inherited by every child (a local
    # Parlant server must still stop).
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "supervisor",
                "serve",
                "--port",
                str(port),
                *options,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PARLANT_SUPERVISOR_DATA_DIR": str(tmp_path)},
        )
    finally:
        signal.signal(signal.SIGINT, interrupt)
    started: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:  # ends when uvicorn says it listens (or the process dies)
            started.append(line)
            if f"Uvicorn running on http://127.0.0.1:{port}" in line:
                break
        body = {"message": "Tell me about CKD stage 3", "intent": "research_paper"}
        response = httpx.post(f"http://127.0.0.1:{port}/api/chat", json=body, timeout=60)
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()

    assert response.status_code == 200
    assert response.json()["reply"].startswith("Chronic kidney disease stage 3")
    assert [m["preamble"] for m in response.json()["messages"]] == [True, False]
    assert "Application shutdown complete." in rest  # the lifespan stopped the supervisor
    logged = "".join(started) + rest
    # an embedded server's uvicorn lines repeated these (one logger for every uvicorn)
    assert logged.count("Started server process") == 1
    assert logged.count("Finished server process") == 1
    assert process.returncode == -signal.SIGTERM  # uvicorn re-raises it once drained
    if parlant == "local":
        local = re.search(r"local real server at (\S+) \(pid (\d+)\)", "".join(started))
        assert local is not None, started
        with pytest.raises(ProcessLookupError):  # stopped before serve exited, not orphaned
            os.kill(int(local.group(2)), 0)


def test_an_unknown_command_fails_with_usage() -> None:
    result = run_cli("frobnicate")

    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_serve_refuses_a_cors_origin_that_is_not_one_before_it_starts() -> None:
    result = run_cli("serve", "--cors-origin", "http://localhost:5173/app")

    assert result.returncode == 2
    assert "http://localhost:5173" in result.stderr  # what an origin looks like
    assert "Traceback" not in result.stderr


def test_serve_with_shards_but_without_ray_says_which_extra_in_a_few_lines() -> None:
    """It printed a 39-line traceback from the app's lifespan before the hint."""
    blocker = (
        "import importlib.abc, sys\n"
        "class NoRay(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'ray':\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, NoRay())\n"
        "import importlib.util\n"
        "importlib.util.find_spec = lambda name, *a: None if name.split('.')[0] == 'ray' "
        "else _find(name, *a)\n"
    )
    code = (
        "import importlib.util\n_find = importlib.util.find_spec\n"
        + blocker
        + "import sys\nsys.argv = ['supervisor', 'serve', '--shards', '2', '--port', '0']\n"
        "from supervisor.__main__ import main\nmain()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "[ray] extra" in result.stderr
    assert len(result.stderr.strip().splitlines()) < 10


def test_serve_on_a_corrupted_store_says_what_to_do_without_a_traceback(tmp_path: Path) -> None:
    """A conversations.db that is not a database aborted start-up with a traceback."""
    (tmp_path / "conversations.db").write_bytes(b"this is not an SQLite file" * 100)

    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PARLANT_SUPERVISOR_DATA_DIR": str(tmp_path)},
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "conversations.db cannot be used" in result.stderr
    assert "move it aside" in result.stderr


def test_serve_on_the_ipv6_any_address_serves_both_families_each_client_on_its_own_quota(
    tmp_path: Path,
) -> None:
    """`--host ::` refused IPv4 with one worker (asyncio binds IPv6 sockets IPv6-only), and
    with several counted every IPv4 client as one (`::ffff:a.b.c.d`, by its /64)."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "serve", "--host", "::", "--port", str(port),
         "--new-conversations-per-minute", "1"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PARLANT_SUPERVISOR_DATA_DIR": str(tmp_path)},
    )  # fmt: skip
    try:
        assert process.stderr is not None
        for line in process.stderr:  # until the app has started (or the process dies)
            if "Application startup complete" in line:
                break
        body = {"message": "hello", "intent": "research_paper"}
        answers = []
        for source, url in [
            ("127.0.0.1", f"http://127.0.0.1:{port}"),
            ("127.0.0.1", f"http://127.0.0.1:{port}"),  # its quota: one a minute
            ("127.0.0.2", f"http://127.0.0.1:{port}"),  # another IPv4 client
            ("::1", f"http://[::1]:{port}"),
        ]:
            transport = httpx.HTTPTransport(local_address=source)
            with httpx.Client(transport=transport, timeout=60) as http:
                answers.append(http.post(f"{url}/api/chat", json=body).status_code)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)

    assert answers == [200, 429, 200, 200]


def test_serve_takes_connections_from_the_moment_it_says_it_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uvicorn's `bind_socket` logs "Uvicorn running on ..." before the app has started, and
    the socket listened only after: clients that took the line at its word were refused (40
    turns sent on it, all `ConnectionRefusedError`). Now the kernel queues them meanwhile."""
    import uvicorn

    from supervisor.backend._serve import _listening

    config = uvicorn.Config("supervisor.backend:create_app", host="127.0.0.1", port=0)
    uvicorn_log = logging.getLogger("uvicorn")  # it does not propagate to pytest's handler
    uvicorn_log.addHandler(caplog.handler)
    try:
        with _listening(config) as sock:
            assert "Uvicorn running on" in caplog.text
            socket.create_connection(sock.getsockname(), timeout=1).close()  # not refused
    finally:
        uvicorn_log.removeHandler(caplog.handler)
