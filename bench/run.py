"""Benchmark this library against the hand-made asyncio baseline, in the same run.

    python -m bench.run [--sizes 100,1000] [--idle-seconds 30] [--timeout 900]
                        [--outage-sessions 1000] [--outage-seconds 10]
                        [--json bench/results/latest.json]

The emulator runs in a process of its own; each measurement runs in a fresh client process,
alternating library and baseline at each size, so RSS and threads are the client's alone.
Ratios are library / baseline: absolute times on a shared machine are noisy, ratios less so.
A client that fails or runs past `--timeout` is recorded as such (its figures n/a) and the run
goes on; the JSON is rewritten after every measurement, so an interrupted run keeps its rows.
Last, each client's recovery after an outage (`bench.client --outage`), at one size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

FIGURES = [
    ("sessions_polling", "sessions with an open poll", "{:.0f}"),
    ("rss_per_session_bytes", "RSS per session (KiB)", "{:.1f}"),
    ("threads", "threads", "{:.0f}"),
    ("idle_cpu_percent", "idle CPU (% of a core)", "{:.1f}"),
    ("latency_p50_ms", "delivery p50 (ms)", "{:.2f}"),
    ("latency_p99_ms", "delivery p99 (ms)", "{:.2f}"),
    ("floor_p50_ms", "raw long-poll p50 (ms)", "{:.2f}"),
    ("asks_per_s", "asks per second", "{:.0f}"),
    ("open_s", "open all (s)", "{:.2f}"),
    ("stop_s", "stop all (s)", "{:.2f}"),
]


OUTAGE_FIGURES = [
    ("recovery_s", "all polling again after the outage (s)", "{:.2f}"),
    ("peak_reconnects_per_s", "peak polls re-opened per second", "{:.0f}"),
]


def measure(
    impl: str,
    sessions: int,
    idle_seconds: float = 30.0,
    timeout: float = 900.0,
    *,
    outage_seconds: float | None = None,
) -> dict[str, Any]:
    """One client run against a fresh server (a dead client's polls linger on a reused one):
    the figures, or with `outage_seconds` the recovery after an outage that long.

    A client that fails or outlives `timeout` gives a row with `error` and no figures.
    """
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    command = [sys.executable, "-m", "bench.client", "--impl", impl, "--sessions", str(sessions)]
    if outage_seconds is not None:
        command += ["--outage", str(outage_seconds)]
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        completed = subprocess.run(
            [*command, "--url", url, "--idle-seconds", str(idle_seconds)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return {"impl": impl, "sessions": sessions, "error": f"did not finish in {timeout:.0f} s"}
    except subprocess.CalledProcessError as failed:
        last = (failed.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return {"impl": impl, "sessions": sessions, "error": f"failed: {last[0]}"}
    finally:
        server.terminate()
        server.wait(timeout=30)
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _cell(row: dict[str, Any], key: str, fmt: str, scale: float) -> str:
    value = row.get(key)
    return "n/a" if value is None else fmt.format(value / scale)


def _ratio(lib: dict[str, Any], base: dict[str, Any], key: str) -> str:
    if lib.get(key) is None or not base.get(key):
        return "n/a"
    return f"{lib[key] / base[key]:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000", help="comma-separated session counts")
    parser.add_argument("--json", type=Path, default=Path("bench/results/latest.json"))
    parser.add_argument(
        "--idle-seconds", type=float, default=30.0, help="window for the idle CPU figure"
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds one client run may take"
    )
    parser.add_argument(
        "--outage-sessions", type=int, default=1000, help="sessions in the outage (0: skip it)"
    )
    parser.add_argument("--outage-seconds", type=float, default=10.0, help="how long it lasts")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    console = Console(width=None if sys.stdout.isatty() else 160)
    results: list[dict[str, Any]] = []
    machine = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    outages: list[dict[str, Any]] = []

    def save() -> None:
        document = {"machine": machine, "results": results, "outages": outages}
        args.json.write_text(json.dumps(document, indent=2))

    with Progress(console=console, transient=True) as progress:
        total = 2 * len(sizes) + (2 if args.outage_sessions else 0)
        task = progress.add_task("measuring", total=total)
        for size in sizes:
            for impl in ("library", "baseline"):
                progress.update(task, description=f"{impl}, {size} sessions")
                results.append(measure(impl, size, args.idle_seconds, args.timeout))
                save()
                progress.advance(task)
        for impl in ("library", "baseline") if args.outage_sessions else ():
            progress.update(task, description=f"{impl}, {args.outage_sessions} sessions, outage")
            outages.append(
                measure(
                    impl,
                    args.outage_sessions,
                    timeout=args.timeout,
                    outage_seconds=args.outage_seconds,
                )
            )
            save()
            progress.advance(task)
    table = Table(
        title=f"library vs baseline ({machine['cores']} cores, Python {machine['python']})"
    )
    table.add_column("figure")
    for size in sizes:
        for column in ("library", "baseline", "ratio"):
            table.add_column(f"{size}: {column}", justify="right")
    for key, label, fmt in FIGURES:
        row = [label]
        for size in sizes:
            lib = next(r for r in results if r["impl"] == "library" and r["sessions"] == size)
            base = next(r for r in results if r["impl"] == "baseline" and r["sessions"] == size)
            scale = 1024 if key == "rss_per_session_bytes" else 1
            row += [_cell(lib, key, fmt, scale), _cell(base, key, fmt, scale)]
            row.append(_ratio(lib, base, key))
        table.add_row(*row)
    console.print(table)
    if outages:
        lib, base = outages
        recovery = Table(
            title=f"{args.outage_sessions} sessions, {args.outage_seconds:g} s outage, recovery"
        )
        for column in ("figure", "library", "baseline", "ratio"):
            recovery.add_column(column, justify="left" if column == "figure" else "right")
        for key, label, fmt in OUTAGE_FIGURES:
            cells = (_cell(lib, key, fmt, 1), _cell(base, key, fmt, 1), _ratio(lib, base, key))
            recovery.add_row(label, *cells)
        console.print(recovery)
    for result in [*results, *outages]:
        if "error" in result:
            console.print(f"[yellow]{result['impl']} at {result['sessions']}: {result['error']}[/]")
    console.print(f"written to {args.json}")


if __name__ == "__main__":
    main()
