"""The package's import cost: every CLI command imports it, so it must not pull in pandas (or the judge's HTTP stack)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import behavior_classifier

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "matplotlib", "torch", "openai")


def test_import_does_not_load_pandas() -> None:
    code = f"import sys, json, behavior_classifier; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


def test_frequency_names_still_public() -> None:
    from behavior_classifier import behavior_frequencies, read_classified
    from behavior_classifier.frequencies import behavior_frequencies as direct

    assert behavior_frequencies is direct and callable(read_classified)
    assert all(callable(getattr(behavior_classifier, name)) for name in behavior_classifier.__all__ if name[0].islower())
    with pytest.raises(AttributeError, match="no attribute 'frequency_table'"):
        behavior_classifier.frequency_table  # noqa: B018  (attribute access is the test)
