"""The benchmark harness works end to end at a small size (correctness, never speed)."""

from __future__ import annotations

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
