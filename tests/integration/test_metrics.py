"""Metrics: what a conversation records, how it is exposed, and what the shipped rules use."""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import metrics
from supervisor import ReplyTimeout, SessionNotFound, SessionSupervisor
from supervisor.testing import EmulatedAgent, EmulatorServer, FakeClock, TurnContext, settle
from tests.helpers import failed_with, last_failure, new_session, until_events

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]
METRICS_DIR = Path(metrics.__file__).parent
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def converse(server: EmulatorServer, sup: SessionSupervisor) -> str:
    session_id = new_session(server, sup, "echo")
    assert sup.ask(session_id, "hello", timeout=30).text == "echo: hello"
    settle(sup)
    return session_id


def test_a_conversation_is_counted_and_exposed_without_session_ids(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url)
    session_id = converse(server, sup)

    found = samples(sup.registry)

    assert value(found, "parlant_supervisor_up") == 1
    assert value(found, "parlant_supervisor_sessions", state="dormant") == 1  # nobody waits
    assert value(found, "parlant_supervisor_open_polls") == 0
    assert value(found, "parlant_supervisor_sessions_started_total") == 1
    assert value(found, "parlant_supervisor_polls_total", outcome="events") >= 1
    assert value(found, "parlant_supervisor_replies_total", kind="ask", outcome="answered") == 1
    assert value(found, "parlant_supervisor_reply_latency_seconds_count") == 1
    assert value(found, "parlant_supervisor_events_received_total", kind="message") == 2
    assert value(found, "parlant_supervisor_session_buffered_events_count") == 1
    assert value(found, "parlant_supervisor_sessions_reactivated_total") == 0
    assert session_id not in generate_latest(sup.registry).decode()
    sup.close(session_id)
    sup.ask(session_id, "back again", timeout=30)  # re-activates the closed session
    found = samples(sup.registry)
    assert value(found, "parlant_supervisor_sessions_reactivated_total") == 1
    assert value(found, "parlant_supervisor_sessions_stopped_total") == 1


def test_failures_and_timeouts_are_counted_by_outcome(serve: Serve, supervise: Supervise) -> None:
    async def never(turn: TurnContext) -> None:
        await turn.gate("never")

    server = serve(EmulatedAgent("echo"), EmulatedAgent("never", never))
    clock = FakeClock()
    sup = supervise(server.url, clock=clock)
    session_id = server.call(server.emulator.create_session, "echo")
    server.call(server.emulator.inject_poll_failures, session_id, [500])
    reader = sup.events(session_id)  # someone waits on the session: it is polled
    with pytest.raises(SessionNotFound):
        sup.ask("NoSuchSession", "anyone?", timeout=30)
    silent = new_session(server, sup, "never")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sup.ask, silent, "hello?", timeout=5)
        failed_with(sup, session_id)
        assert last_failure(sup, session_id)[0] == "server_error"
        until_events(server, silent, 3)
        settle(sup)
        clock.advance(5)
        with pytest.raises(ReplyTimeout):
            pending.result(timeout=30)
    reader.close()
    settle(sup)

    found = samples(sup.registry)
    assert value(found, "parlant_supervisor_polls_total", outcome="server_error") == 1
    assert value(found, "parlant_supervisor_session_failures_total", reason="not_found") == 1
    assert value(found, "parlant_supervisor_replies_total", kind="ask", outcome="not_found") == 1
    assert value(found, "parlant_supervisor_replies_total", kind="ask", outcome="timeout") == 1
    assert value(found, "parlant_supervisor_sessions", state="failed") == 1


def test_promtool_finds_the_exposition_clean(serve: Serve, supervise: Supervise) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus package)")
    server = serve()
    sup = supervise(server.url)
    converse(server, sup)

    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(sup.registry),
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == b""  # no lint findings either


def test_the_http_endpoint_negotiates_openmetrics(serve: Serve, supervise: Supervise) -> None:
    server = serve()
    sup = supervise(server.url)
    converse(server, sup)
    endpoint = metrics.start_http_server(sup.registry)
    try:
        plain = httpx.get(endpoint.url)
        open_metrics = httpx.get(
            endpoint.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    finally:
        endpoint.close()

    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "parlant_supervisor_sessions{" in plain.text
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")


@pytest.mark.asyncio
async def test_the_asgi_app_serves_the_registry(serve: Serve, supervise: Supervise) -> None:
    server = serve()
    sup = supervise(server.url)
    app = metrics.make_asgi_app(sup.registry)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")

    assert response.status_code == 200
    assert "parlant_supervisor_up 1.0" in response.text


def test_supervisors_keep_to_their_own_registries_and_unregister_at_stop(serve: Serve) -> None:
    server = serve()
    shared = CollectorRegistry()
    first = SessionSupervisor(server.url, registry=shared)
    second = SessionSupervisor(server.url)  # its own registry: no clash with the first
    try:
        assert second.registry is not shared
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            SessionSupervisor(server.url, registry=shared)
    finally:
        first.stop()
        second.stop()

    assert generate_latest(shared) == b""
    SessionSupervisor(server.url, registry=shared).stop()  # the registry is reusable


def exposed_names(registry: CollectorRegistry) -> set[str]:
    return {name for name, _ in samples(registry)}


def test_dashboard_and_alert_rules_name_only_metrics_that_exist(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url)
    converse(server, sup)
    exposed = exposed_names(sup.registry)
    dashboard = json.loads((METRICS_DIR / "dashboard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queries.append(dashboard["templating"]["list"][1]["definition"])
    queries.append((METRICS_DIR / "alerts.yml").read_text())

    named = {n for query in queries for n in re.findall(r"parlant_supervisor_\w+", query)}

    assert len(dashboard["panels"]) >= 10
    assert named, "no query names a metric"
    assert named <= exposed, f"not exposed: {sorted(named - exposed)}"


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus package)")

    checked = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=METRICS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
