"""The distribution as users install it: a wheel built from the tree, installed with its extras
into a fresh virtual environment, imported and run from outside the tree.

Every other test runs from the tree itself, where a package the wheel leaves out is still
importable: this one is what would have seen the wheel without `supervisor.emulator`.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "supervisor", "metrics")

IMPORTABLE = [
    "actors",
    "actors.events",
    "actors.runtime",
    "metrics",
    "supervisor",
    "supervisor.backend",
    "supervisor.emulator",
    "supervisor.testing",
]
"""The public modules a `[backend,testing]` install imports."""

NEEDS_MORE = {
    "supervisor.sharding": (
        "from supervisor.sharding import ShardedSupervisor; ShardedSupervisor('http://127.0.0.1:9')",
        "[ray]",
    ),
    "supervisor.parlant_module": ("import supervisor.parlant_module", "inside a Parlant server"),
}
"""Public modules that need what that install leaves out: using them, and what the error says
(the sharded supervisor imports without Ray, for its names; it needs Ray to start)."""


def run(*command: str | Path, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the python of a fresh venv it is installed in with [backend,testing])."""
    work = tmp_path_factory.mktemp("wheel")
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", work / "dist", ROOT, cwd=work
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (work / "dist").glob("*.whl")
    created = run(sys.executable, "-m", "venv", work / "venv", cwd=work)
    assert created.returncode == 0, created.stderr
    python = work / "venv" / "bin" / "python"
    install = run(
        python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        f"{wheel}[backend,testing]", cwd=work,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    return wheel, python


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_file_of_the_tree(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    in_tree = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert in_tree - in_wheel == set()


@pytest.mark.slow
@pytest.mark.parametrize("module", IMPORTABLE)
def test_each_public_module_imports_from_outside_the_tree(
    installed: tuple[Path, Path], module: str, tmp_path: Path
) -> None:
    _, python = installed
    code = f"import {module}, sys; print({module}.__file__)"
    result = run(python, "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "site-packages" in result.stdout  # the installed copy, not the tree


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(NEEDS_MORE))
def test_a_module_that_needs_more_says_what(
    installed: tuple[Path, Path], module: str, tmp_path: Path
) -> None:
    _, python = installed
    using, says = NEEDS_MORE[module]
    result = run(python, "-c", using, cwd=tmp_path)
    assert result.returncode != 0
    assert says in result.stderr.splitlines()[-1]


@pytest.mark.slow
def test_the_installed_demo_runs(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, python = installed
    result = run(python, "-m", "supervisor", "demo", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo finished" in result.stdout
