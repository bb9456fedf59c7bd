"""Every Python block of the README runs as written, or says plainly that it is a fragment.

A block that names a Parlant at `http://127.0.0.1:8800` (where the README's emulator command
listens) runs against an emulator on a free port instead; each runs in a fresh interpreter,
outside the tree's directory, and must exit 0.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from supervisor.testing import EmulatedAgent, EmulatorServer, ParlantEmulator, echo

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(
    r"(?:<!-- fragment: (?P<why>[^>]+) -->\n)?```python\n(?P<code>.*?)^```", re.DOTALL | re.M
)
README_URL = "http://127.0.0.1:8800"


class Block(NamedTuple):
    line: int
    code: str
    fragment: str | None


def blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(text.count("\n", 0, match.start()) + 1, match["code"], match["why"])
        for match in BLOCK.finditer(text)
    ]


RUNNABLE = [block for block in blocks() if block.fragment is None]


@pytest.fixture(scope="module")
def parlant() -> Iterator[EmulatorServer]:
    with EmulatorServer(ParlantEmulator([EmulatedAgent("Echo", echo())])) as server:
        yield server


def test_the_readme_has_runnable_blocks_and_every_fragment_says_why() -> None:
    found = blocks()
    assert len(RUNNABLE) >= 6
    assert all(block.fragment is None or len(block.fragment) > 10 for block in found)
    assert sum(1 for line in README.read_text().splitlines() if line == "```python") == len(found)


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"line {b.line}" for b in RUNNABLE])
def test_the_block_runs_as_written(block: Block, parlant: EmulatorServer, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(block.code.replace(README_URL, parlant.url))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"README line {block.line}:\n{result.stderr[-3000:]}"
