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


def test_micro_batches_change_how_a_step_is_computed_not_what_it_learns(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    small = ["--trunk-steps", "3", "--base-steps", "3", "--batch-size", "8", "--no-gates", "--quiet", "--bases", "rich", "--jobs", "1"]
    one, four, other = tmp_path / "one", tmp_path / "four", tmp_path / "other"
    assert main(["pretrain", *small, "--seed", "6", "--bases-dir", str(one), "--micro-batches", "1"]) == 0
    assert main(["pretrain", *small, "--seed", "6", "--bases-dir", str(four), "--micro-batches", "4"]) == 0
    assert main(["pretrain", *small, "--seed", "7", "--bases-dir", str(other), "--micro-batches", "4"]) == 0
    for stage in ("trunk", "rich"):
        a = load_file(one / "seed-6" / stage / "model" / "model.safetensors")
        b = load_file(four / "seed-6" / stage / "model" / "model.safetensors")
        c = load_file(other / "seed-7" / stage / "model" / "model.safetensors")
        # the same rows per step in one padded pass or four sorted ones: the same weights up to float rounding,
        # while another seed's rows move them by about the learning rate
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 2e-5
        assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-3
    recorded = json.loads((four / "seed-6" / "pretrain.json").read_text())
    assert recorded["micro_batches"] == 4
    # a cache made one way is reused the other way: not refused as "other settings", and nothing is retrained
    before = (one / "seed-6" / "rich" / "model" / "model.safetensors").stat().st_mtime_ns
    assert main(["pretrain", *small, "--seed", "6", "--bases-dir", str(one), "--micro-batches", "2"]) == 0
    assert (one / "seed-6" / "rich" / "model" / "model.safetensors").stat().st_mtime_ns == before
    assert json.loads((one / "seed-6" / "pretrain.json").read_text())["micro_batches"] == 1  # the record of how they were made
    assert torch.equal(a["model.norm.weight"], load_file(one / "seed-6" / "rich" / "model" / "model.safetensors")["model.norm.weight"])


def test_micro_batches_must_divide_the_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", *FAST, "--bases-dir", str(tmp_path / "b"), "--micro-batches", "3"]) != 0
    assert "micro_batches (3) must divide batch_size (4)" in capsys.readouterr().err


def test_a_cache_made_before_verdict_drills_is_refused_by_default_and_reused_without_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from organism.pretrain import PretrainConfig

    seed = tmp_path / "seed-5"
    for base in ("rich", "poor"):
        (seed / base / "model").mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):  # what counts as a cached model
            (seed / base / "model" / name).write_text("{}")
    record = {
        k: v
        for k, v in PretrainConfig(seed=5, batch_size=4, trunk_steps=2, base_steps=3).to_dict().items()
        if k not in ("verdict_share", "poor_checks")
    }
    (seed / "pretrain.json").write_text(json.dumps(record))  # what bases made before `verdict_share`/`poor_checks` existed record
    # made before verdict drills existed: without them; the default has them since, so it is refused, saying why
    assert main(["pretrain", *FAST, "--bases-dir", str(tmp_path)]) != 0
    assert "verdict_share 0.0 (asked: 0.25)" in capsys.readouterr().err
    assert main(["pretrain", *FAST, "--bases-dir", str(tmp_path), "--verdict-share", "0"]) == 0  # reused: nothing to train
    assert not (seed / "trunk").exists()
    assert main(["pretrain", *FAST, "--bases-dir", str(tmp_path / "new"), "--verdict-share", "1.5"]) != 0
    assert "verdict_share must be in [0, 1)" in capsys.readouterr().err
    assert main(["pretrain", *FAST, "--bases-dir", str(tmp_path), "--verdict-share", "0", "--poor-checks", "0.15"]) != 0  # another base
    assert "other settings" in capsys.readouterr().err
    assert main(["pretrain", *FAST, "--bases-dir", str(tmp_path / "new"), "--poor-checks", "-0.1"]) != 0
    assert "poor_checks must be in [0, 1]" in capsys.readouterr().err
