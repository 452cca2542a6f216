"""`countdown-lab pretrain`: the bases side by side after the shared trunk, and batches grouped by length."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cli import main
from organism.pretrain import PretrainConfig

FAST = ["--trunk-steps", "2", "--base-steps", "3", "--batch-size", "4", "--no-gates", "--quiet", "--seed", "5"]


def test_grouped_bases_train_side_by_side_and_are_recorded(tmp_path: Path) -> None:
    bases = tmp_path / "b"
    assert main(["pretrain", *FAST, "--bases-dir", str(bases), "--group-by-length", "--jobs", "2"]) == 0
    root = bases / "seed-5"
    for stage in ("trunk", "rich", "poor"):
        assert (root / stage / "model" / "model.safetensors").is_file()
        # what reached TRL's SFTConfig: transformers' length-grouped sampler
        assert json.loads((root / stage / "config.json").read_text())["extra"] == {"train_sampling_strategy": "group_by_length"}
    assert json.loads((root / "pretrain.json").read_text())["group_by_length"] is True
    # the same folder with random batches is other settings: refused, not mixed
    assert main(["pretrain", *FAST, "--bases-dir", str(bases), "--jobs", "1"]) != 0


def test_the_default_records_no_grouping_as_the_shipped_bases_do() -> None:
    assert "group_by_length" not in PretrainConfig(seed=0).to_dict()
    assert PretrainConfig(seed=0, group_by_length=True).to_dict()["group_by_length"] is True


def test_jobs_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", *FAST, "--bases-dir", str(tmp_path / "b"), "--jobs", "0"]) != 0
    assert "--jobs must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
