"""`--report-to` (trackers beside metrics.jsonl), `--trl-set` over the lab's own TRL options, and the GRPO reward's logging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from countdown_env import DEFAULT_RULES
from lab.cli import main
from tests.rl.conftest import fast_args

pytest.importorskip("tensorboardX")  # the dev extra's TensorBoard writer


def _event_files(root: Path) -> list[Path]:
    return sorted(root.rglob("events.out.tfevents.*"))


def test_ppo_reports_to_tensorboard_and_still_writes_metrics(tiny_model, tmp_path):
    out = tmp_path / "ppo"
    assert main(fast_args(tiny_model, out, "--max-steps", 1, "--report-to", "tensorboard")) == 0
    assert _event_files(out / "runs")
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1]


def test_grpo_reports_to_tensorboard(tiny_model, tmp_path):
    out = tmp_path / "grpo"
    assert main(fast_args(tiny_model, out, "--max-steps", 1, "--algo", "grpo", "--report-to", "tensorboard")) == 0
    assert _event_files(out / "trl")


def test_trl_set_wins_over_the_labs_own_options_with_a_note(tmp_path, capsys):
    from rl.config import load_config
    from rl.trl_algos import trl_config

    config = load_config("tiny-cpu", {"model": "m"})
    args = trl_config("grpo", config, tmp_path, 1, {"report_to": "none", "bf16": False, "logging_steps": 7}, "tensorboard")
    assert args.logging_steps == 7 and args.bf16 is False and args.report_to in ("none", [], ["none"])
    err = capsys.readouterr().err
    assert "--trl-set report_to='none' replaces the lab's report_to='tensorboard'" in err and "logging_steps=7" in err
    assert "bf16" not in err  # the same value as the lab's: nothing to note


def test_reward_logs_accuracy_through_trl_and_keeps_a_bounded_sample():
    from rl.trl_algos import CountdownReward

    logged: list[tuple[str, float]] = []
    reward = CountdownReward(DEFAULT_RULES, keep=2)
    completions = ["<answer>3 + 5</answer>", "<answer>3 * 5</answer>", "nothing"]
    numbers, target = [[3, 5]] * 3, [8] * 3
    assert reward(["p"] * 3, completions, numbers, target, log_metric=lambda k, v: logged.append((k, v))) == [1.0, 0.1, 0.0]
    assert [v for k, v in logged if k == "accuracy"] == [1.0, 0.0, 0.0]
    assert [v for k, v in logged if k == "format_rate"] == [1.0, 1.0, 0.0]
    assert len(reward.pending) == 2  # bounded, whatever the rank and however long between logs


def test_reward_scores_a_completion_that_ran_out_of_tokens_zero():
    """`truncated: zero` under TRL: a completion at the budget without a stop token scores 0 (TRL only masks)."""
    from rl.trl_algos import CountdownReward

    eos = 2
    right = "<answer>3 + 5</answer>"
    ids = [[7, 7, 7, eos], [7, 7, 7, 7], [7, 7, eos]]  # finished at the budget, cut at the budget, finished early
    zero = CountdownReward(DEFAULT_RULES, zero_truncated=4, stop_ids=[eos])
    assert zero(["p"] * 3, [right] * 3, [[3, 5]] * 3, [8] * 3, completion_ids=ids) == [1.0, 0.0, 1.0]
    assert [r["reward"] for r in zero.pending] == [1.0, 0.0, 1.0]
    keep = CountdownReward(DEFAULT_RULES)  # `mask` and `keep`: scored as written
    assert keep(["p"] * 3, [right] * 3, [[3, 5]] * 3, [8] * 3, completion_ids=ids) == [1.0, 1.0, 1.0]


def test_reward_pending_is_drained_on_every_process(tmp_path):
    from types import SimpleNamespace

    from rl.config import load_config
    from rl.trl_algos import CountdownReward, RunDirLogger
    from runtime.run_dir import RunDir

    config = load_config("tiny-cpu", {"model": "m", "eval_every": 0})
    reward = CountdownReward(DEFAULT_RULES)
    reward(["p"], ["<answer>3 + 5</answer>"], [[3, 5]], [8])
    logger = RunDirLogger(RunDir(tmp_path), config, reward, 1, [], None, 0, 0.0)
    other_rank = SimpleNamespace(is_world_process_zero=False, global_step=1)
    logger.on_log(None, other_rank, None, logs={"reward": 1.0, "accuracy": 1.0})
    assert reward.pending == [] and not (tmp_path / "metrics.jsonl").exists()
    reward(["p"], ["<answer>3 + 5</answer>"], [[3, 5]], [8])
    logger.on_log(None, SimpleNamespace(is_world_process_zero=True, global_step=1), None, logs={"reward": 1.0, "accuracy": 0.5})
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["reward/accuracy"] == 0.5 and reward.pending == []
