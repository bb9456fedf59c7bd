"""RequestBudget and Budget: Parlant's moving windows mirrored client-side (pure: a fake now)."""

from __future__ import annotations

import asyncio

import pytest

from actors import RequestBudget
from actors._budget import Budget


class Now:
    def __init__(self) -> None:
        self.value = 100.0

    def __call__(self) -> float:
        return self.value


def take_now(budget: Budget, operation: str) -> None:
    """`take` for a request that may go at once."""
    assert budget.delay(operation) <= 0
    asyncio.run(budget.take(operation))


def test_a_window_holds_its_limit_less_the_headroom_then_frees_as_it_moves() -> None:
    now = Now()
    budget = Budget(RequestBudget({"list_events": 10}, window=60, headroom=0.9), now)
    for _ in range(9):
        take_now(budget, "list_events")
        now.value += 1
    assert budget.delay("list_events") == pytest.approx(51)  # the first leaves at 160
    now.value = 160
    take_now(budget, "list_events")
    assert budget.delay("create_customer_event") <= 0  # unlimited


def test_a_429_pauses_its_operation_for_everyone_even_without_a_budget() -> None:
    now = Now()
    budget = Budget(None, now)
    budget.refused("list_events", retry_after=2.5)
    assert budget.delay("list_events") == pytest.approx(2.5)
    assert budget.delay("create_customer_event") <= 0
    budget.refused("create_customer_event", None)  # Parlant sends no Retry-After
    assert budget.delay("create_customer_event") == pytest.approx(1.0)


def test_long_polls_wait_longer_when_the_sessions_need_it() -> None:
    production = RequestBudget.parlant_production()
    assert production.allowed("list_events") == 216
    # idle polls take half of it (108 a minute), turns in progress the other half
    assert production.poll_wait(100, 60) == 60  # 100 re-polls a minute: within 108
    assert production.poll_wait(1000, 60) == 556  # ceil(1000 * 60 / 108)
    assert RequestBudget().poll_wait(1000, 60) == 60  # no budget: as asked
    assert RequestBudget({"list_events": 100}, idle_share=1.0).poll_wait(1000, 60) == 667


def test_a_scaled_budget_multiplies_every_limit_and_bad_ones_are_refused() -> None:
    assert RequestBudget.parlant_production().scaled(10).limits["create_customer_event"] == 300
    with pytest.raises(ValueError, match="unknown operations"):
        RequestBudget({"list_agents": 5})
    with pytest.raises(ValueError, match=">= 1"):
        RequestBudget({"list_events": 0})
    with pytest.raises(ValueError, match="headroom"):
        RequestBudget(headroom=0)
