"""`python -m supervisor serve` stopped by SIGTERM with asks and streams in flight, as an
orchestrator stops it: new requests refused at once, requests in flight finished or answered,
nothing cut mid-frame, no traceback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from supervisor.testing import EmulatedAgent, EmulatorServer, TurnContext

Serve = Callable[..., EmulatorServer]
Started = tuple[subprocess.Popen[str], str, Callable[[], str]]
ASKS = STREAMS = 20


def gated(name: str) -> EmulatedAgent:
    async def script(turn: TurnContext) -> None:
        await turn.gate("answer")
        turn.say(f"echo: {turn.message}")

    return EmulatedAgent(name, script)


@pytest.fixture
def backend_process(tmp_path: Path) -> Iterator[Callable[..., Started]]:
    """backend_process(*options) -> (the serve process, its URL, its log once it has exited),
    killed after the test; its conversations are kept in `tmp_path`. Its stderr is read all
    along: a pipe nobody reads fills (64 KiB of log) and blocks the backend mid-turn."""
    started: list[subprocess.Popen[str]] = []

    def start(*options: str) -> Started:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, "-m", "supervisor", "serve", "--port", str(port), *options]
        env = {**os.environ, "PARLANT_SUPERVISOR_DATA_DIR": str(tmp_path)}
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        started.append(process)
        stderr = process.stderr
        assert stderr is not None
        lines: list[str] = []
        for line in stderr:  # until uvicorn says it listens (or the process dies)
            lines.append(line)
            if f"Uvicorn running on http://127.0.0.1:{port}" in line:
                break
        reader = threading.Thread(target=lambda: lines.extend(stderr), daemon=True)
        reader.start()

        def log() -> str:
            process.wait(timeout=60)
            reader.join(timeout=10)
            return "".join(lines)

        return process, f"http://127.0.0.1:{port}", log

    yield start
    for process in started:
        process.kill()
        process.wait()


async def in_flight(url: str) -> tuple[list[asyncio.Task[httpx.Response]], httpx.AsyncClient]:
    client = httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=100))

    async def ask(i: int) -> httpx.Response:
        return await client.post("/api/chat", json={"message": f"ask {i}", "intent": intent})

    async def stream(i: int) -> httpx.Response:
        body = {"message": f"stream {i}", "intent": intent}
        return await client.post("/api/chat/stream", json=body)

    intent = "research_paper"
    tasks = [asyncio.ensure_future(ask(i)) for i in range(ASKS)]
    tasks += [asyncio.ensure_future(stream(i)) for i in range(STREAMS)]
    return tasks, client


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    frames = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if lines:
            fields = dict(line.split(": ", 1) for line in lines)
            frames.append((fields["event"], json.loads(fields["data"])))
    return frames


def sigterm_with_turns_in_flight(
    serve: Serve,
    backend_process: Callable[..., Started],
    drain_timeout: float,
    release: bool,
) -> tuple[list[httpx.Response], httpx.Response, subprocess.Popen[str], str]:
    """40 turns in flight (20 asks, 20 streams), then SIGTERM (and the agent released, or
    not); returns their answers, a request sent during the drain, the process and its log."""
    emulator = serve(gated("ResearchPaperAgent"), gated("MedicalWelfareAgent"))
    process, url, log = backend_process(
        "--parlant",
        emulator.url,
        "--drain-timeout",
        str(drain_timeout),
        "--new-conversations-per-minute",
        "0",  # 40 from one client at once
    )
    server = emulator.emulator

    def posted() -> int:
        return sum(
            1
            for session in server.session_ids()
            for event in server.session_events(session)
            if event["source"] == "customer"
        )

    async def run() -> tuple[list[httpx.Response], httpx.Response]:
        tasks, client = await in_flight(url)
        async with client:
            await asyncio.to_thread(emulator.run, server.until(lambda: posted() == 40), 60)
            process.send_signal(signal.SIGTERM)
            for _ in range(200):  # until the drain has begun (bounded: 10 s)
                late = await client.post(
                    "/api/chat", json={"message": "late", "intent": "research_paper"}
                )
                if late.status_code == 503:
                    break
                await asyncio.sleep(0.05)
            if release:
                emulator.call(server.release, "answer")
            return list(await asyncio.gather(*tasks)), late

    answers, late = asyncio.run(run())
    return answers, late, process, log()


def test_sigterm_refuses_new_requests_and_lets_turns_in_flight_finish(
    serve: Serve, backend_process: Callable[..., Started]
) -> None:
    answers, late, process, log = sigterm_with_turns_in_flight(
        serve, backend_process, drain_timeout=30, release=True
    )

    assert late.status_code == 503
    assert late.json()["detail"] == "the backend is shutting down"
    assert late.headers["retry-after"] == "5"
    asks, streams = answers[:ASKS], answers[ASKS:]
    assert [a.status_code for a in asks] == [200] * ASKS
    assert {a.json()["reply"] for a in asks} == {f"echo: ask {i}" for i in range(ASKS)}
    assert [sse_events(s.text)[-1][0] for s in streams] == ["end"] * STREAMS
    assert "Traceback" not in log
    assert "CancelledError" not in log
    assert process.returncode == -signal.SIGTERM


def test_turns_still_running_at_the_drain_timeout_get_503_json_and_an_error_event(
    serve: Serve, backend_process: Callable[..., Started]
) -> None:
    answers, late, process, log = sigterm_with_turns_in_flight(
        serve, backend_process, drain_timeout=1, release=False
    )

    assert late.status_code == 503
    asks, streams = answers[:ASKS], answers[ASKS:]
    assert {a.status_code for a in asks} == {503}
    assert {a.headers["content-type"] for a in asks} == {"application/json"}
    assert {a.headers["retry-after"] for a in asks} == {"5"}
    assert "shutting down" in asks[0].json()["detail"]
    for response in streams:
        events = sse_events(response.text)  # whole frames only: a cut one would not parse
        assert events[0][0] == "session"
        assert events[-1] == ("error", events[-1][1])
        assert events[-1][1]["status"] == 503
    assert "Traceback" not in log
    assert "CancelledError" not in log
    assert process.returncode == -signal.SIGTERM
