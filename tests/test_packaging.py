"""What a core install (no extras) can import, and what it says about the rest: the
library must not drag a web framework into the application that embeds it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

EXTRAS_ONLY = [
    "fastapi",
    "starlette",
    "uvicorn",
    "sse_starlette",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "limits",
    "typer",
    "rich",
    "ray",
]
"""Top-level modules that only the extras install (parlant-client brings none of them)."""


TEST_ONLY = ["uvloop", "pytest", "hypothesis", "schemathesis", "ray", "asyncpg"]
"""Modules that only the [test], [ray] and [postgresql] extras install."""


def without_extras(
    code: str, *args: str, blocked: list[str] = EXTRAS_ONLY
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter where no module in `blocked` can be imported."""
    blocker = f"""
        import importlib.abc, sys
        class NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {blocked!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, NotInstalled())
    """
    program = textwrap.dedent(blocker) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_library_imports_and_runs_without_any_extra() -> None:
    result = without_extras(
        """
        import actors, metrics, supervisor
        from supervisor import SessionSupervisor, SupervisorConfig
        sup = SessionSupervisor("http://127.0.0.1:9", config=SupervisorConfig())
        sup.stop()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in NOT_LOADED)
        print("loaded:", loaded)
    """.replace("NOT_LOADED", repr(EXTRAS_ONLY))
    )

    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout


@pytest.mark.parametrize(
    ("module", "extra"), [("supervisor.backend", "backend"), ("supervisor.testing", "testing")]
)
def test_a_part_that_needs_an_extra_names_it(module: str, extra: str) -> None:
    result = without_extras(f"import {module}")

    assert result.returncode == 1
    assert f"needs the [{extra}] extra" in result.stderr
    assert f"pip install '<your clone or wheel>[{extra}]'" in result.stderr


def test_the_command_line_without_its_extra_says_how_to_install_it() -> None:
    result = without_extras("import runpy; runpy.run_module('supervisor', run_name='__main__')")

    assert result.returncode == 1
    assert "pip install '<your clone or wheel>[backend]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_help_names_extras_in_brackets() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "drill", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0
    assert "[parlant-server] extra" in result.stdout


def test_the_backend_extra_serves_the_embedded_default_without_the_test_extra() -> None:
    result = without_extras(
        """
        from supervisor.backend import BackendSettings, create_app
        from supervisor.testing import AppServer
        import httpx, tempfile, pathlib
        with tempfile.TemporaryDirectory() as data:
            settings = BackendSettings(data_dir=pathlib.Path(data))
            with AppServer(create_app(settings)) as backend:
                body = {"message": "hi", "intent": "medical_welfare"}
                answer = httpx.post(f"{backend.url}/api/chat", json=body, timeout=60)
                print("status", answer.status_code)
        """,
        blocked=TEST_ONLY,
    )

    assert result.returncode == 0, result.stderr
    assert "status 200" in result.stdout
