"""`python -m supervisor drill`: run the drills with a live display, then print the report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

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


def report_table(reports: list[ScenarioReport]) -> Table:
    """One row per scenario, and the totals."""
    table = Table(title="failure drill", title_justify="left")
    for column in (
        "scenario",
        "faults",
        "asks",
        "answered",
        "clear error",
        "timed out",
        "lost",
        "dup",
        "mis-attr",
        "partial",
        "dup posts",
        "recovery s p50/p99/max",
        "restarts",
        "result",
    ):
        table.add_column(column, justify="left" if column in ("scenario", "result") else "right")
    for r in reports:
        result = (
            f"[yellow]skipped: {r.skipped}[/]"
            if r.skipped
            else ("[green]pass[/]" if r.passed else "[bold red]FAIL[/]")
        )
        recovery = "/".join(_seconds(v) for v in (r.recovery_p50, r.recovery_p99, r.recovery_max))
        table.add_row(
            r.scenario,
            str(r.faults),
            str(r.asks),
            str(r.answered),
            str(r.failed_clearly),
            str(r.timed_out),
            str(r.lost),
            str(r.duplicated),
            str(r.misattributed),
            str(r.partial),
            str(r.duplicate_posts),
            recovery,
            str(r.restarts),
            result,
        )
    ran = [r for r in reports if not r.skipped]
    table.add_section()
    table.add_row(
        "total",
        *(
            str(sum(getattr(r, name) for r in ran))
            for name in (
                "faults",
                "asks",
                "answered",
                "failed_clearly",
                "timed_out",
                "lost",
                "duplicated",
                "misattributed",
                "partial",
                "duplicate_posts",
            )
        ),
        "",
        str(sum(r.restarts for r in ran)),
        "[green]pass[/]" if all(r.passed for r in ran) else "[bold red]FAIL[/]",
    )
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
    console.print(report_table(reports))
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
