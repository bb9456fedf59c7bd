"""The command line: `python -m supervisor serve | demo | drill` (installed as
`parlant-supervisor`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import structlog
import typer
import uvicorn
from rich.console import Console

from supervisor._config import SupervisorConfig
from supervisor._demo import run_demo
from supervisor._drill import SCENARIOS, DrillOptions, scenarios_named
from supervisor._drill_cli import run_drills
from supervisor.backend import BackendSettings, create_app

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Keep conversations with Parlant agents alive and correct.",
)


@app.callback()
def _root() -> None:
    """Keep conversations with Parlant agents alive and correct."""


_PARLANT_URL_HELP = "A Parlant server (default: $PARLANT_URL, else the embedded emulator)."


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(envvar="SUPERVISOR_HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="SUPERVISOR_PORT", min=0, max=65535, help="Port to listen on.")
    ] = 8000,
    parlant_url: Annotated[
        str | None, typer.Option(envvar="PARLANT_URL", help=_PARLANT_URL_HELP)
    ] = None,
    ask_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a chat request waits for its reply (then 504).")
    ] = 60.0,
    drain_timeout: Annotated[
        int, typer.Option(min=0, help="Seconds SIGINT/SIGTERM lets requests in flight finish.")
    ] = 10,
    verbose: Annotated[bool, typer.Option(help="Show the supervisor's info logs.")] = False,
) -> None:
    """Run the reference backend: POST /api/chat, /api/chat/stream, /metrics, /healthz, /readyz."""
    _configure_logging(verbose)
    where = parlant_url or "the embedded emulator (no Parlant server needed)"
    Console(stderr=True).print(f"[bold]parlant-supervisor[/bold] backend; Parlant: {where}")
    settings = BackendSettings(
        parlant_url=parlant_url, ask_timeout=ask_timeout, supervisor=SupervisorConfig()
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        timeout_graceful_shutdown=drain_timeout,
        log_level="info",
    )


@app.command()
def demo(
    parlant_url: Annotated[
        str | None, typer.Option(envvar="PARLANT_URL", help=_PARLANT_URL_HELP)
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each reply may take.", min=1)] = 60.0,
    verbose: Annotated[bool, typer.Option(help="Show the supervisor's info logs.")] = False,
) -> None:
    """Start the backend on a free port and hold two conversations through its HTTP API."""
    _configure_logging(verbose)
    console = Console()
    if not run_demo(console, parlant_url or None, timeout):
        raise typer.Exit(1)
    console.print("[bold green]demo finished: every reply arrived, nothing left running[/]")


@app.command()
def drill(
    scenario: Annotated[
        str, typer.Option(help="A scenario's name, or all. See the list with --list.")
    ] = "all",
    sessions: Annotated[int, typer.Option(min=1, help="Sessions per scenario.")] = 30,
    turns: Annotated[int, typer.Option(min=1, help="Asks per session.")] = 5,
    faults: Annotated[int, typer.Option(min=1, help="Faults each scenario aims at.")] = 120,
    seed: Annotated[int, typer.Option(help="Seeds every random choice.")] = 0,
    parlant_url: Annotated[
        str | None,
        typer.Option(
            envvar="PARLANT_URL",
            help="Drill against this Parlant server (the proxy goes in front of it); default: "
            "the embedded emulator.",
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
    list_scenarios: Annotated[
        bool, typer.Option("--list", help="List the scenarios and exit.")
    ] = False,
) -> None:
    """Inject faults into live conversations and prove nothing is lost or duplicated."""
    console = Console(width=None if sys.stdout.isatty() else 140)
    if list_scenarios:
        for known in SCENARIOS:
            console.print(f"[bold]{known.name:<22}[/] {known.description}")
        return
    try:
        chosen = scenarios_named(scenario)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--scenario") from None
    _configure_logging(verbose=False, quiet=True)
    options = DrillOptions(
        sessions=sessions, turns=turns, faults=faults, seed=seed, parlant_url=parlant_url
    )
    if not run_drills(console, chosen, options, json_path):
        console.print("[bold red]drill failed: see the rows marked FAIL[/]")
        raise typer.Exit(1)
    console.print("[bold green]drill passed: nothing lost, duplicated or mis-attributed[/]")


def _configure_logging(verbose: bool, quiet: bool = False) -> None:
    """The CLI is an application, so it (not the library) decides what is logged."""
    level = logging.INFO if verbose else logging.CRITICAL if quiet else logging.WARNING
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    if quiet:  # a drill's injected faults make servers log by design: only the report counts
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        logging.getLogger("pykka").setLevel(logging.CRITICAL)


def main() -> None:
    """Entry point of the `parlant-supervisor` console script."""
    app()


if __name__ == "__main__":
    main()
