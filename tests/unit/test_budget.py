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
    assert production.poll_wait(200, 60) == 112  # ceil(200 * 60 / 108)
    # past the longest wait a middlebox lets live (it was 556 s at 1,000 polls): the ceiling
    # of waiting polls keeps them within the budget instead (`SupervisorConfig.poll_ceiling`)
    assert production.poll_wait(1000, 60) == 240
    assert RequestBudget().poll_wait(1000, 60) == 60  # no budget: as asked
    assert RequestBudget({"list_events": 100}, idle_share=1.0).poll_wait(1000, 60) == 240


def test_a_scaled_budget_multiplies_every_limit_and_bad_ones_are_refused() -> None:
    assert RequestBudget.parlant_production().scaled(10).limits["create_customer_event"] == 300
    with pytest.raises(ValueError, match="unknown operations"):
        RequestBudget({"list_agents": 5})
    with pytest.raises(ValueError, match=">= 1"):
        RequestBudget({"list_events": 0})
    with pytest.raises(ValueError, match="headroom"):
        RequestBudget(headroom=0)


def test_background_requests_take_only_their_share_and_leave_room_for_turns() -> None:
    now = Now()
    budget = Budget(RequestBudget({"list_events": 20}, window=60, headroom=1.0), now)
    for _ in range(10):  # idle_share 0.5: 10 of 20 for readers and lingering sessions
        assert budget.delay("list_events", background=True) <= 0
        asyncio.run(budget.take("list_events", background=True))
    assert budget.delay("list_events", background=True) == pytest.approx(60)
    for _ in range(10):  # a turn's polls still go
        take_now(budget, "list_events")
    assert budget.delay("list_events") == pytest.approx(60)


def test_the_ceiling_of_waiting_polls_agrees_with_the_production_budget() -> None:
    """Parlant's production policy allows 240 list_events a minute per client IP: its
    background share (108) lets 108 polls wait 60 s each, so the default ceiling (100) fits and
    no wait has to stretch; with 30-s waits the ceiling comes down to what fits (54)."""
    from supervisor import SupervisorConfig

    production = RequestBudget.parlant_production()
    assert production.polls_within(60) == 108
    config = SupervisorConfig(request_budget=production)
    ceiling = config.poll_ceiling().max_waiting
    assert ceiling == 100
    assert production.poll_wait(ceiling, config.wait_for_data) == config.wait_for_data
    short = SupervisorConfig(request_budget=production, wait_for_data=30, wait_jitter=5)
    assert short.poll_ceiling().max_waiting == 54
    assert production.poll_wait(54, 30) == 30
    unbounded = SupervisorConfig(request_budget=production, max_waiting_polls=None)
    assert unbounded.poll_ceiling().max_waiting == 108
    assert SupervisorConfig().poll_ceiling().max_waiting == 100  # no budget: as configured


def test_a_wait_longer_than_a_middlebox_lets_live_is_refused_with_the_reason() -> None:
    from actors import SessionSettings

    with pytest.raises(ValueError, match="smallest common idle timeout"):
        SessionSettings(wait_for_data=300)
