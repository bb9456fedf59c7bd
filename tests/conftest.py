"""Fixtures: emulators on 127.0.0.1, supervisors that are always stopped, a log watcher."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from supervisor import SessionSupervisor, SupervisorConfig
from supervisor.backend import BackendSettings, create_app, harden_server
from supervisor.sharding import INSTALL_HINT
from supervisor.testing import (
    AppServer,
    EmulatedAgent,
    EmulatorServer,
    FaultProxy,
    ParlantEmulator,
)
from tests.helpers import require_module
from tests.logwatch import LogWatcher
from tests.postgresql import postgresql_server


@pytest.fixture(autouse=True)
def logs() -> Iterator[LogWatcher]:
    """Every test's structlog events, kept for inspection instead of printed."""
    watcher = LogWatcher()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, watcher])
    yield watcher
    structlog.reset_defaults()


@pytest.fixture
def serve() -> Iterator[Callable[..., EmulatorServer]]:
    """serve(*agents, **emulator_options) -> a running emulator server (stopped after the test)."""
    with contextlib.ExitStack() as running:

        def start(*agents: EmulatedAgent, **options: Any) -> EmulatorServer:
            emulator = ParlantEmulator(agents or (EmulatedAgent("echo"),), **options)
            return running.enter_context(EmulatorServer(emulator))

        yield start


@pytest.fixture
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., AppServer]]:
    """backend(**settings) -> the reference backend served on 127.0.0.1 (stopped after the test).

    Without `parlant_url` it runs on its embedded default, like `python -m supervisor serve`;
    without `data_dir` (or `store_url`) its conversations are in a new temporary directory.
    """
    with contextlib.ExitStack() as running:

        def start(**settings: Any) -> AppServer:
            config = SupervisorConfig(wait_for_data=30, wait_jitter=5)
            defaults = {"supervisor": config, "data_dir": tmp_path_factory.mktemp("backend")}
            chosen = BackendSettings(**{**defaults, **settings})
            served = AppServer(
                create_app(chosen), configure=lambda c: harden_server(c, chosen.limits)
            )
            return running.enter_context(served)

        yield start


@pytest.fixture
def proxy() -> Iterator[Callable[[str], FaultProxy]]:
    """proxy(upstream_url) -> a fault-injecting proxy in front of it (stopped after the test)."""
    with contextlib.ExitStack() as running:
        yield lambda upstream: running.enter_context(FaultProxy(upstream))


@pytest.fixture
def supervise() -> Iterator[Callable[..., SessionSupervisor]]:
    """supervise(url, clock=None, **config) -> a supervisor, stopped after the test.

    Teardown also checks that stopping met its deadline and left none of our threads alive.
    """
    supervisors: list[SessionSupervisor] = []

    def start(url: str, clock: Any = None, **config: Any) -> SessionSupervisor:
        settings: dict[str, Any] = {"wait_for_data": 30, "wait_jitter": 5, **config}
        supervisor = SessionSupervisor(url, config=SupervisorConfig(**settings), clock=clock)
        supervisors.append(supervisor)
        return supervisor

    yield start
    for supervisor in supervisors:
        summary = supervisor.stop()
        assert summary.deadline_met
        assert not any(thread.is_alive() for thread in supervisor.runtime.threads())


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[Any]:
    """`ray.init(num_cpus=2)`, offline: no dashboard, no usage stats, logs kept in the workers."""
    require_module("ray", INSTALL_HINT)
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def postgresql_base() -> Iterator[str]:
    """One real PostgreSQL server for the session (as `postgres` under root): its base URL,
    `postgresql+asyncpg://postgres@127.0.0.1:<port>` (append `/<database>`)."""
    with postgresql_server() as base:
        yield base
