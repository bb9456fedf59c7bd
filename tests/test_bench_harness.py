"""The benchmark harness works end to end at a small size (correctness, never speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import measure


@pytest.mark.parametrize("impl", ["library", "baseline"])
def test_each_client_reaches_every_session_and_measures_delivery(impl: str) -> None:
    result = measure(impl, 20, idle_seconds=1)

    assert result["sessions_polling"] == 20
    assert result["stop_deadline_met"]
    assert result["latency_p50_ms"] > 0
    assert result["floor_p50_ms"] > 0
    assert result["asks_per_s"] > 0  # 40 asks answered (the library checks each reply's text)
    assert result["idle_cpu_percent"] >= 0
    if impl == "library":
        assert result["threads_after_stop"] == 1  # only the main thread is left


def test_a_client_past_its_timeout_is_a_row_that_says_so_not_a_crash() -> None:
    result = measure("library", 20, idle_seconds=30, timeout=1)

    assert result == {"impl": "library", "sessions": 20, "error": "did not finish in 1 s"}


@pytest.mark.parametrize("impl", ["library", "baseline"])
def test_each_client_recovers_from_an_outage_and_the_rate_is_measured(impl: str) -> None:
    result = measure(impl, 20, outage_seconds=1)

    assert result["polling_after_budget"] == 20
    assert result["recovery_s"] is not None
    assert result["peak_reconnects_per_s"] > 0


def test_the_stream_benchmark_measures_every_chunk_each_way(tmp_path: Path) -> None:
    report = tmp_path / "stream.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.stream",
            "--messages",
            "2",
            "--chunks",
            "5",
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    rows = json.loads(report.read_text())["rows"]
    assert len(rows) == 3
    assert all(row["chunks"] == 8 for row in rows.values())  # the first of 5 left out, twice
    assert all(row["p50_ms"] > 0 for row in rows.values())


def test_the_phases_benchmark_splits_each_phase_between_client_and_server() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.phases", "--sessions", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    phases = [line.split()[0] for line in result.stdout.splitlines() if "client CPU" in line]
    assert phases == ["open", "asks", "stop"]
    assert "asks per second:" in result.stdout
