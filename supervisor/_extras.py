"""Optional parts of the distribution and the extra that installs each: a missing one is named
with the command that installs it, instead of a bare `No module named 'fastapi'`."""

from __future__ import annotations

import importlib.util

__all__ = ["install_command", "missing_modules", "require_extra"]

DISTRIBUTION = "parlant-session-supervisor"


def install_command(extra: str) -> str:
    """The command that adds `extra` to this distribution: it is not on PyPI, but installed
    from a clone or from a wheel built from one, so the user names where theirs is."""
    return f"pip install '<your clone or wheel>[{extra}]'"


def missing_modules(*modules: str) -> list[str]:
    """Which of `modules` cannot be imported here."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def require_extra(extra: str, *modules: str, what: str) -> None:
    """Raise ModuleNotFoundError naming `extra` if one of `modules` is not installed."""
    missing = missing_modules(*modules)
    if missing:
        raise ModuleNotFoundError(
            f"{what} needs the [{extra}] extra ({', '.join(missing)} not installed): "
            f"{install_command(extra)}",
            name=missing[0],
        )
