"""`python -m supervisor drill`: run the drills with a live display, then print the report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Final

from rich import box
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from actors import SessionState
from supervisor._drill import DrillOptions, Scenario, ScenarioReport, run_scenario
from supervisor._protocol import Supervising

__all__ = ["run_drills"]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


_ASKED: Final = (
    ("faults", "faults"),
    ("asks", "asks"),
    ("answered", "answered"),
    ("failed_clearly", "clear\nerror"),
    ("timed_out", "timed\nout"),
)
_SEEN: Final = (
    ("lost", "lost"),
    ("duplicated", "dup"),
    ("misattributed", "mis-\nattr"),
    ("partial", "partial"),
    ("duplicate_posts", "dup\nposts"),
)


def report_tables(reports: list[ScenarioReport]) -> tuple[Table, Table]:
    """Two tables of one row per scenario and the totals, each within 100 columns (one of all
    the figures needed about 190): what was asked and answered, then what the server's log
    says readers saw, with the recovery and the verdict."""
    ran = [r for r in reports if not r.skipped]
    asked = _table("failure drill: asks", [label for _, label in _ASKED])
    seen = _table(
        "failure drill: what readers saw, against the server's log",
        [*(label for _, label in _SEEN), "recovery s\np50/p99/max", "restarts", "result"],
    )
    for r in reports:
        result = (
            f"[yellow]skipped: {r.skipped}[/]"
            if r.skipped
            else ("[green]pass[/]" if r.passed else "[bold red]FAIL[/]")
        )
        recovery = "/".join(_seconds(v) for v in (r.recovery_p50, r.recovery_p99, r.recovery_max))
        asked.add_row(r.scenario, *(str(getattr(r, name)) for name, _ in _ASKED))
        seen.add_row(
            r.scenario,
            *(str(getattr(r, name)) for name, _ in _SEEN),
            recovery,
            str(r.restarts),
            result,
        )

    def totals(figures: tuple[tuple[str, str], ...]) -> list[str]:
        return [str(sum(getattr(r, name) for r in ran)) for name, _ in figures]

    asked.add_section()
    asked.add_row("total", *totals(_ASKED))
    seen.add_section()
    seen.add_row(
        "total",
        *totals(_SEEN),
        "",
        str(sum(r.restarts for r in ran)),
        "[green]pass[/]" if all(r.passed for r in ran) else "[bold red]FAIL[/]",
    )
    return asked, seen


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("scenario")
    for column in columns:
        table.add_column(column, justify="left" if column == "result" else "right")
    return table


def run_drills(
    console: Console, scenarios: list[Scenario], options: DrillOptions, json_path: Path | None
) -> bool:
    """Run `scenarios` one after the other; True if every one passed."""
    reports: list[ScenarioReport] = []
    progress = Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )
    with Live(progress, console=console, refresh_per_second=8):
        for scenario in scenarios:
            sized = scenario.sized(options)
            task = progress.add_task(scenario.name, total=sized.sessions * sized.turns, status="")
            reports.append(asyncio.run(run_scenario(scenario, options, _updater(progress, task))))
    for table in report_tables(reports):
        console.print(table)
    if json_path is not None:
        document = {
            "options": {
                "sessions": options.sessions,
                "turns": options.turns,
                "faults": options.faults,
                "seed": options.seed,
                "parlant_url": options.parlant_url,
            },
            "scenarios": [r.as_json() for r in reports],
            "passed": all(r.passed for r in reports if not r.skipped),
        }
        json_path.write_text(json.dumps(document, indent=2) + "\n")
    return all(r.passed for r in reports if not r.skipped)


def _updater(
    progress: Progress, task: TaskID
) -> Callable[[ScenarioReport, Supervising | None], None]:
    def update(report: ScenarioReport, supervisor: Supervising | None) -> None:
        states = ""
        if supervisor is not None:
            by_state = supervisor.statistics().sessions_by_state
            states = " ".join(
                f"{state.value} {count}"
                for state, count in by_state.items()
                if count and state is not SessionState.STOPPED
            )
        progress.update(task, completed=report.asks, status=f"faults {report.faults}  {states}")

    return update
