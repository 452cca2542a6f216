"""docs/architecture.md stays current: it names every module, and every file it names exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "architecture.md").read_text()


def modules() -> list[str]:
    """The project's Python modules as git tracks them (test files aside: the doc describes tests/ by folder)."""
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [m for m in out if not (m.startswith("tests/") and Path(m).name.startswith("test_")) and (REPO / m).exists()]


def test_every_module_is_named() -> None:
    unnamed = [m for m in modules() if f"`{m}`" not in DOC and not (m.startswith("tests/") and m.endswith("__init__.py"))]
    assert unnamed == [], "add these to docs/architecture.md's module map"


def test_every_file_named_exists() -> None:
    named = set(re.findall(r"`([\w/.-]+\.(?:py|md|yaml))`", DOC))
    assert sorted(name for name in named if not (REPO / name).exists()) == []
