"""The failure drill: its accounting catches what it must, and the command runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor._drill import (
    _PARTITION,
    SCENARIOS,
    ScenarioReport,
    _account,
    _answer_in_log,
    _Ask,
    _recovery,
    drill_config,
)
from supervisor.testing import ProxyRecord


def message(offset: int, source: str, text: str) -> dict[str, object]:
    return {"offset": offset, "kind": "message", "source": source, "data": {"message": text}}


def status(offset: int) -> dict[str, object]:
    return {"offset": offset, "kind": "status", "source": "ai_agent", "data": {"status": "ready"}}


LOG = [
    message(0, "customer", "one"),
    status(1),
    message(2, "ai_agent", "echo: one"),
    message(3, "customer", "two"),
    message(4, "ai_agent", "echo: two"),
]


def test_the_answer_to_a_message_is_what_the_server_logged_after_it() -> None:
    assert _answer_in_log(LOG, "one") == "echo: one"
    assert _answer_in_log(LOG, "two") == "echo: two"
    assert _answer_in_log(LOG, "never sent") is None


def test_the_accounting_counts_lost_duplicated_misattributed_and_partial() -> None:
    report = ScenarioReport("check")
    asks = [
        _Ask("s", "one", reply="echo: two"),  # someone else's answer
        _Ask("s", "two", reply="echo: two"),
        _Ask("s", "three", error="ParlantUnavailable"),
        _Ask("s", "four", timed_out=True),
    ]

    seen = {"s": [0, 1, 1, 3, 4]}  # 2 lost, 1 twice
    texts = {"s": {0: "one", 3: "two", 4: "echo:"}}  # 4 read before it was whole

    _account(report, asks, {"s": LOG}, seen, texts)

    assert (report.lost, report.duplicated, report.misattributed) == (1, 1, 1)
    assert report.partial == 1
    assert (report.answered, report.failed_clearly, report.timed_out) == (2, 1, 1)
    assert not report.passed


def test_a_scenario_that_met_no_fault_did_not_pass() -> None:
    report = ScenarioReport("check", asks=1, answered=1)
    assert not report.passed  # nothing was drilled: a clean result would prove nothing
    report.faults = 1
    assert report.passed


def test_a_message_stored_twice_is_counted_from_the_servers_log_and_fails_the_scenario() -> None:
    keyed = {"parlant_supervisor": {"post": "k1"}}
    log = [
        {**message(0, "customer", "one"), "metadata": keyed},
        message(1, "ai_agent", "echo: one"),
        {**message(2, "customer", "one"), "metadata": keyed},  # the same post, again
        {**message(3, "customer", "two"), "metadata": {"parlant_supervisor": {"post": "k2"}}},
    ]
    report = ScenarioReport("check", faults=1)

    _account(report, [_Ask("s", "one", reply="echo: one")], {"s": log}, {"s": [0, 1, 2, 3]}, {})

    assert report.duplicate_posts == 1
    assert not report.passed


def test_an_ask_failed_by_an_error_its_scenario_does_not_expect_fails_it() -> None:
    asks = [_Ask("s", "one", reply="echo: one"), _Ask("s", "two", error="ParlantUnavailable")]
    transient = ScenarioReport("outage", faults=1)
    deleted = ScenarioReport("deleted", faults=1, expected_errors=("SessionNotFound",))
    for report in (transient, deleted):
        _account(report, asks, {"s": LOG}, {"s": [0, 1, 2, 3, 4]}, {})
    assert not transient.passed  # a transient fault: the ask should have ridden it out
    assert not deleted.passed  # not the error a deletion gives

    deleted.errors = {"SessionNotFound": 1}
    assert deleted.passed


def test_recovery_runs_from_a_streaks_first_failure_to_the_next_good_poll() -> None:
    path = "/sessions/s/events"
    records = [
        ProxyRecord(1.0, "GET", path, "reset", None),
        ProxyRecord(1.5, "GET", path, "respond_503", 503),
        ProxyRecord(2.0, "GET", path, None, 200),
        ProxyRecord(3.0, "GET", path, None, 504),
        ProxyRecord(4.0, "POST", path, "reset", None),  # posts are not polls
    ]

    p50, p99, worst = _recovery(records, {"s": [2.5]}, {})  # a kill at 2.5, back at 3.0

    assert (p50, worst) == (0.75, 1.0)
    assert p99 == 1.0


def test_a_links_recovery_runs_from_its_last_heal_to_the_next_answer() -> None:
    """No proxy sees a far scenario's polls: its marks are heals, its good times answers. A
    second fault healed before any answer restarts the count (the time in between was the
    fault's, not the recovery's)."""
    heals = {"s": [10.0, 20.0], "t": [10.0]}
    answers = {"s": [5.0, 20.5, 21.0], "t": [12.0]}

    p50, p99, worst = _recovery([], heals, answers)

    assert (p50, worst) == (1.25, 2.0)
    assert p99 == 2.0


def test_every_real_link_scenario_runs_its_server_in_a_namespace() -> None:
    far = [s for s in SCENARIOS if s.far is not None]

    assert {s.name for s in far} == {
        "net-partition", "net-lost-flows", "net-lossy", "net-host-vanishes"
    }  # fmt: skip
    assert all(s.config(drill_config()).request_timeout < _PARTITION for s in far)


@pytest.mark.parametrize("scenario", ["actor-crash", "stream-cuts"])
def test_the_drill_command_runs_a_scenario_and_writes_its_report(
    scenario: str, tmp_path: Path
) -> None:
    report = tmp_path / "drill.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor",
            "drill",
            "--scenario",
            scenario,
            "--sessions",
            "5",
            "--turns",
            "2",
            "--faults",
            "10",
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "drill passed" in result.stdout
    document = json.loads(report.read_text())
    [row] = document["scenarios"]
    assert row["scenario"] == scenario
    assert row["partial"] == 0
    assert row["faults"] >= 1
    assert row["asks"] == 10
    assert document["passed"] is True


def test_an_unknown_scenario_is_refused_with_the_choices() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "drill", "--scenario", "meteor"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "unknown scenario 'meteor'" in result.stderr
    assert "server-outage" in result.stderr


def test_the_report_fits_in_100_columns_without_cutting_a_header() -> None:
    """One table of every figure needed about 190 columns, and cut its headers at 100."""
    import io

    from rich.console import Console

    from supervisor._drill import SCENARIOS, ScenarioReport
    from supervisor._drill_cli import report_tables

    reports = [
        ScenarioReport(s.name, 1600, 2000, 1995, 5, 0, 0, 0, 0, 0, 0, 0.25, 11.1, 20.0, 30)
        for s in SCENARIOS
    ]
    out = io.StringIO()
    console = Console(file=out, width=100)
    for table in report_tables(reports):
        console.print(table)
    text = out.getvalue()

    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" not in text
    for header in ("clear", "timed", "mis-", "posts", "p50/p99/max", "restarts", "result"):
        assert header in text
