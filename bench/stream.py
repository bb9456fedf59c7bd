"""Live text: the time from the server writing a streamed message's chunk to the caller holding
it as a `MessageDelta`, beside the floor, a raw `read_event?sse=true` reader of the same server.

    python -m bench.stream [--messages 20] [--chunks 40] [--pause 0.02] [--json PATH]

The emulator runs in a process of its own (`bench.serve`): its `clock` agent streams chunks that
are each the server's `time.monotonic()` when written (one clock for every process here), so a
chunk's latency is the reader's `time.monotonic()` when it holds it, minus the chunk. Three rows:
the raw reader (the floor), the library following by `read_event?sse=true`, and the library
where `read_event` is refused (Parlant's production policy), re-reading the log every 0.1 s.
The first chunk of each message is left out: it arrives with the long-poll, before anyone
follows the message.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import structlog

from bench.client import percentile
from supervisor import MessageDelta, SessionSupervisor, SupervisorConfig


def start_server(*flags: str) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.serve", *flags],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def clock_agent(http: httpx.Client) -> str:
    return next(str(a["id"]) for a in http.get("/agents").json() if a["name"] == "clock")


def raw_reader(url: str, messages: int, question: str) -> list[float]:
    """The floor: find the message with long-polls, then follow it with a bare SSE reader."""
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as http:
        agent = clock_agent(http)
        for _ in range(messages):
            session = http.post("/sessions", json={"agent_id": agent}).json()["id"]
            http.post(
                f"/sessions/{session}/events",
                json={"kind": "message", "source": "customer", "message": question},
            )
            message = next(_agent_message(http, session))
            seen = len(message["data"]["chunks"])
            path = f"/sessions/{session}/events/{message['id']}"
            with http.stream("GET", path, params={"sse": "true"}) as stream:
                for line in stream.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    now = time.monotonic()
                    chunks = json.loads(line[5:])["data"]["chunks"]
                    latencies += [now - float(c) for c in chunks[seen:] if c is not None]
                    seen = len(chunks)
    return latencies


def _agent_message(http: httpx.Client, session: str) -> Iterator[dict[str, Any]]:
    offset = 0
    while True:
        events = http.get(
            f"/sessions/{session}/events", params={"min_offset": offset, "wait_for_data": 30}
        ).json()
        for event in events:
            if event["kind"] == "message" and event["source"] == "ai_agent":
                yield event
                return
            offset = event["offset"] + 1


def library_reader(url: str, messages: int, question: str, **config: Any) -> list[float]:
    """The library's stream: each delta's chunks after the message's first."""
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as http:
        agent = clock_agent(http)
    with SessionSupervisor(url, config=SupervisorConfig(wait_for_data=30, **config)) as sup:
        for _ in range(messages):
            session = sup.create_session(agent)
            first = True
            for item in sup.stream(session, question, timeout=60):
                if not isinstance(item, MessageDelta):
                    continue
                now = time.monotonic()
                chunks = item.delta.split()
                if first:
                    chunks, first = chunks[1:], False
                latencies += [now - float(c) for c in chunks]
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "chunks": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--pause", type=float, default=0.02)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    question = f"clock {args.chunks} {args.pause}"
    rows: dict[str, dict[str, float]] = {}
    server, url = start_server()
    try:
        rows["raw read_event?sse=true (floor)"] = summary(raw_reader(url, args.messages, question))
        rows["library, read_event?sse=true"] = summary(library_reader(url, args.messages, question))
    finally:
        server.terminate()
        server.wait()
    server, url = start_server("--refuse-read-event")
    try:
        rows["library, re-reads every 0.1 s (read_event refused)"] = summary(
            library_reader(url, args.messages, question, stream_reread_interval=0.1)
        )
    finally:
        server.terminate()
        server.wait()
    print(f"{'reader':<52} {'chunks':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, row in rows.items():
        print(
            f"{name:<52} {row['chunks']:>7.0f} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.2f}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"messages": args.messages, "chunks": args.chunks, "pause": args.pause}
        args.json.write_text(json.dumps({**document, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
