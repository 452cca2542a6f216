"""`countdown-lab pretrain`: the two bases side by side after the shared trunk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cli import main

FAST = ["--trunk-steps", "2", "--base-steps", "3", "--batch-size", "4", "--no-gates", "--quiet", "--seed", "5"]


def test_bases_train_side_by_side_and_as_one_after_the_other(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    side, serial = tmp_path / "side", tmp_path / "serial"
    assert main(["pretrain", *FAST, "--bases-dir", str(side), "--jobs", "2"]) == 0
    assert main(["pretrain", *FAST, "--bases-dir", str(serial), "--jobs", "1"]) == 0
    for stage in ("trunk", "rich", "poor"):
        a = load_file(side / "seed-5" / stage / "model" / "model.safetensors")
        b = load_file(serial / "seed-5" / stage / "model" / "model.safetensors")
        # the same seed gives the same weights whether the bases train in two processes or one after the other
        assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert json.loads((side / "seed-5" / "pretrain.json").read_text())["seed"] == 5


def test_jobs_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", *FAST, "--bases-dir", str(tmp_path / "b"), "--jobs", "0"]) != 0
    assert "--jobs must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
