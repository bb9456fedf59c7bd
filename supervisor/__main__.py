"""The command line: `python -m supervisor demo` (also installed as `parlant-supervisor`)."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import structlog
import typer
from rich.console import Console

from supervisor._demo import run_demo

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Keep conversations with Parlant agents alive and correct.",
)


@app.callback()
def _root() -> None:
    """Keep conversations with Parlant agents alive and correct."""


@app.command()
def demo(
    parlant_url: Annotated[
        str | None,
        typer.Option(
            help="A Parlant server to talk to (default: $PARLANT_URL, else the embedded emulator).",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each reply may take.", min=1)] = 60.0,
    verbose: Annotated[bool, typer.Option(help="Show the supervisor's info logs.")] = False,
) -> None:
    """Hold a short conversation with a research-paper and a medical-welfare agent."""
    _configure_logging(verbose)
    console = Console()
    url = parlant_url or os.environ.get("PARLANT_URL") or None
    statistics = run_demo(console, url, timeout)
    if statistics.waiting_replies or statistics.failing_sessions:
        raise typer.Exit(1)
    console.print("[bold green]demo finished: every reply arrived, nothing left running[/]")


def _configure_logging(verbose: bool) -> None:
    """The CLI is an application, so it (not the library) decides what is logged."""
    level = logging.INFO if verbose else logging.WARNING
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))


def main() -> None:
    """Entry point of the `parlant-supervisor` console script."""
    app()


if __name__ == "__main__":
    main()
