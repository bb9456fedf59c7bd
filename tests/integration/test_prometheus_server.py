"""A real Prometheus server scrapes the supervisor and sees what statistics() says."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

import metrics
from supervisor import SessionNotFound, SessionState, SessionSupervisor
from supervisor.testing import EmulatorServer, wait_until

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]
DEADLINE = 60.0  # Prometheus' first scrape comes ~5 s after it starts


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """prometheus(target_port) -> base URL of a Prometheus scraping 127.0.0.1:target_port."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (.ci/run installs Debian's prometheus package)")
    processes: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        rules = Path(metrics.__file__).parent / "alerts.yml"
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{rules}']\n"
            "scrape_configs:\n  - job_name: supervisor\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        port = free_port()
        processes.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def query(base: str, expression: str) -> dict[str, float] | None:
    """{state-or-'': value} for an instant query, or None while Prometheus is not ready."""
    try:
        response = httpx.get(f"{base}/api/v1/query", params={"query": expression}, timeout=5)
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    results = response.json()["data"]["result"]
    return {r["metric"].get("state", ""): float(r["value"][1]) for r in results}


def test_prometheus_scrapes_what_statistics_says(
    serve: Serve, supervise: Supervise, prometheus: Callable[[int], str]
) -> None:
    server = serve()
    # short polls: one open when the last consumer leaves is not cut short, but ends by itself
    sup = supervise(server.url, wait_for_data=2, wait_jitter=0)
    agent_id = server.call(server.emulator.agent_id, "echo")
    sessions = [sup.create_session(agent_id) for _ in range(3)]
    for session_id in sessions:
        sup.ask(session_id, "hello", timeout=30)
    with pytest.raises(SessionNotFound):
        sup.ask("NoSuchSession", "hello", timeout=30)
    # answered, nobody waits: each lingers, then sends Parlant nothing
    wait_until(
        sup,
        lambda: sup.statistics().sessions_by_state[SessionState.DORMANT] == 3,
        what="the answered sessions dormant",
    )
    endpoint = metrics.start_http_server(sup.registry)
    try:
        base = prometheus(endpoint.port)
        expected = {
            state.value: float(count) for state, count in sup.statistics().sessions_by_state.items()
        }
        answered = {"": 3.0}
        seen: dict[str, float] | None = None
        seen_answered: dict[str, float] | None = None
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            seen = query(base, "parlant_supervisor_sessions")
            seen_answered = query(
                base, 'sum(parlant_supervisor_replies_total{kind="ask",outcome="answered"})'
            )
            if seen == expected and seen_answered == answered:
                break
            time.sleep(0.5)  # polling an external server's API, bounded by the deadline
        rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
    finally:
        endpoint.close()

    assert seen == expected
    assert expected["dormant"] == 3
    assert expected["failed"] == 1
    assert seen_answered == answered
    assert len(rules[0]["rules"]) == 6  # the shipped alert rules load in a real server
    assert all(rule["health"] != "err" for rule in rules[0]["rules"])
