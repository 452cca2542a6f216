"""The measures of `countdown-lab analyze` (lab/analysis/metrics.py, lab/analysis/run.py) and the task families it uses.
Intervals, the default k range and the CLI's noise table: tests/lab/test_analysis_intervals.py."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from countdown_env import TaskConfig, all_solutions, canonical_form, generate_tasks, preset_rules, subset_config, unseen_range_config
from lab.analysis import metrics as analysis


# ---- canonical form ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("3+5", "5 + 3"),
        ("(1+2)+3", "1+(2+3)"),
        ("(1+2)+3", "3+(2+1)"),
        ("2*3*4", "4*(3*2)"),
        ("(3+5) = 8", "5+3"),
        ("(7-2)+4", "4+(7-2)"),
        ("(2+3)*4", "4*(3+2)"),
    ],
)
def test_canonical_form_merges_commuted_and_reassociated_answers(a, b):
    assert canonical_form(a) is not None
    assert canonical_form(a) == canonical_form(b)


@pytest.mark.parametrize(("a", "b"), [("5-3", "3-5"), ("6/2", "2/6"), ("(2+3)*4", "2+3*4"), ("1+2+3", "1+2*3")])
def test_canonical_form_keeps_different_solutions_apart(a, b):
    assert canonical_form(a) != canonical_form(b)


@pytest.mark.parametrize("bad", ["", "foo", "3 +", "2**3", "(((", "<answer>"])
def test_canonical_form_is_none_for_what_does_not_parse(bad):
    assert canonical_form(bad) is None


def test_distinct_solutions_agree_with_the_solver():
    # every solution the solver lists is one canonical form, and no two coincide
    for numbers, target in [((1, 2, 3, 4), 10), ((2, 3, 5), 11), ((4, 6, 8), 24)]:
        sols = all_solutions(numbers, target)
        assert analysis.distinct_solutions(sols) == len(sols)
        assert analysis.distinct_solutions(sols + [s.replace(" ", "") for s in sols]) == len(sols)


def test_distinct_solutions_counts_commuted_answers_once():
    assert analysis.distinct_solutions(["3+5", "5+3", "(5+3)=8", None, "nonsense"]) == 1
    assert analysis.distinct_solutions(["9-1", "1-9"]) == 2


# ---- pass@k -----------------------------------------------------------------------------
def _brute_pass_at_k(correct: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("c", [0, 1, 3, 7, 8])
def test_pass_at_k_matches_a_brute_force_count_over_subsets(c):
    n = 8
    correct = [True] * c + [False] * (n - c)
    curve = analysis.pass_at_k_curve([c], n, range(1, n + 1))  # every k, asked for: k > n/2 is allowed when explicit
    assert sorted(curve) == list(range(1, n + 1))
    assert sorted(analysis.pass_at_k_curve([c], n)) == list(range(1, n // 2 + 1))  # the default stops at n/2
    for k in range(1, n + 1):
        assert curve[k] == pytest.approx(_brute_pass_at_k(correct, k), abs=1e-12)


def test_pass_at_k_curve_averages_tasks_and_rises_with_k():
    curve = analysis.pass_at_k_curve([0, 4, 16], 16, range(1, 17))
    assert curve[1] == pytest.approx((0 + 4 / 16 + 1) / 3)
    assert curve[16] == pytest.approx(2 / 3)
    assert all(curve[k] <= curve[k + 1] + 1e-12 for k in range(1, 16))
    with pytest.raises(ValueError):
        analysis.pass_at_k_curve([], 16)


# ---- reflection and length ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("Wait, let me check this again.", 3),  # wait, check, again
        ("Hmm. Actually 3+5=8 is wrong, try again", 3),  # hmm, actually, try again
        ("3+5=8 so the answer is 8", 0),
        ("5*2=10 [10 1] 10+1=11, 28-11=17 no; 9-2=7 [7 4] 7*4=28, 28-28=0 ok", 3),  # no ; ok
        ("nothing checked: notice nobody knows", 0),  # words containing `no` and `check` are not matches
        ("", 0),
    ],
)
def test_reflection_count_counts_the_documented_list(text, count):
    assert analysis.reflection_count(text) == count


def test_reflection_ratio_is_per_word():
    assert analysis.reflection_ratio("wait a b c") == 0.25
    assert analysis.reflection_ratio("") == 0.0


def test_split_mean_by_correct_and_wrong():
    out = analysis.split_mean([1, 2, 3, 6], [True, False, True, False])
    assert out == {"all": 3.0, "correct": 2.0, "wrong": 4.0}
    assert analysis.split_mean([1.0], [True])["wrong"] is None
    with pytest.raises(ValueError):
        analysis.split_mean([1.0], [])


def test_degradation_is_flagged_only_when_accuracy_falls_while_length_and_reflection_rise():
    flags = analysis.degradation_flags([0, 10, 20, 30], [0.5, 0.4, 0.3, 0.2], [10, 20, 20, 30], [0.1, 0.2, 0.3, 0.2])
    assert [(f.step, f.flagged) for f in flags] == [(10, True), (20, False), (30, False)]


# ---- drift from the base -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models():
    from runtime.models import build_model, prepare_tokenizer

    model, tokenizer = build_model("qwen2", "tiny", seed=0)
    other, _ = build_model("qwen2", "tiny", seed=1, tokenizer=tokenizer)
    return model.eval(), other.eval(), prepare_tokenizer(tokenizer)


def _samples(model, tokenizer):
    import torch

    from runtime.generation import generate

    torch.manual_seed(0)
    prompts = ["Numbers: 3 5 7\nTarget: 22\n", "Numbers: 1 2\nTarget: 3\n", "Numbers: 10 9 8\nTarget: 27\n"]
    return prompts, generate(model, tokenizer, prompts, 12, do_sample=True)


def test_kl_of_a_model_to_itself_is_exactly_zero(tiny_models):
    import copy

    model, _, tokenizer = tiny_models
    _, gen = _samples(model, tokenizer)
    kl = analysis.token_kl(model, model, gen.query, gen.query_mask, gen.response, gen.response_mask)
    assert kl.shape == gen.response.shape
    assert float(kl.abs().max()) == 0.0
    twin = copy.deepcopy(model)  # a separate copy of the same weights: the same numbers, computed twice
    kl_twin = analysis.token_kl(model, twin, gen.query, gen.query_mask, gen.response, gen.response_mask)
    assert float(kl_twin.abs().max()) == 0.0


def test_kl_to_another_model_is_positive_and_zero_on_padding(tiny_models):
    model, other, tokenizer = tiny_models
    _, gen = _samples(model, tokenizer)
    kl = analysis.token_kl(model, other, gen.query, gen.query_mask, gen.response, gen.response_mask, batch_size=2)
    assert float((kl * gen.response_mask).sum()) > 0
    assert float(kl.min()) >= -1e-6  # exact KL is non-negative (up to float rounding)
    assert float((kl * (1 - gen.response_mask)).abs().sum()) == 0.0


def test_hidden_shift_is_zero_for_the_same_model_and_positive_for_another(tiny_models):
    model, other, tokenizer = tiny_models
    prompts, _ = _samples(model, tokenizer)
    base = analysis.mean_hidden_states(model, tokenizer, prompts, batch_size=2)
    assert base.shape == (3, model.config.hidden_size)
    # batching (and so left padding) does not change a prompt's state
    assert np.allclose(base, analysis.mean_hidden_states(model, tokenizer, prompts, batch_size=1), atol=1e-5)
    same = analysis.hidden_shift(base, analysis.mean_hidden_states(model, tokenizer, prompts))
    assert same["l2"] == pytest.approx(0.0, abs=1e-5) and same["cosine"] == pytest.approx(1.0, abs=1e-5)
    moved = analysis.hidden_shift(base, analysis.mean_hidden_states(other, tokenizer, prompts))
    assert moved["l2"] > 0.1 and moved["relative"] > 0


def test_pca_2d_projects_every_group_on_two_axes():
    rng = np.random.default_rng(0)
    coords = analysis.pca_2d({0: rng.normal(size=(5, 8)), 10: rng.normal(size=(5, 8)) + 3})
    assert {k: v.shape for k, v in coords.items()} == {0: (5, 2), 10: (5, 2)}
    # the groups' offset is the main direction of variation: separated along PC 1
    assert abs(coords[0][:, 0].mean() - coords[10][:, 0].mean()) > 3


# ---- task families -------------------------------------------------------------------------
def test_unseen_range_tasks_keep_the_count_of_numbers_and_leave_the_target_range():
    base = TaskConfig.preset("organism")
    tasks = generate_tasks(50, seed=0, config=unseen_range_config(base))
    assert all(len(t.numbers) == 3 for t in tasks)
    assert all(t.target > base.target_range[1] for t in tasks)
    assert generate_tasks(50, seed=0, preset="organism-unseen") == tasks


def test_subset_family_needs_only_some_numbers_and_is_scored_so():
    from countdown_env import score_response

    config = subset_config(TaskConfig.preset("organism"))
    assert config.rules.use_all_numbers is False and preset_rules("organism-subset") == config.rules
    tasks = generate_tasks(100, seed=0, config=config)
    assert any(t.solution and len(t.solution.split()) < 5 for t in tasks)  # some solutions use 2 of the 3 numbers
    task = next(t for t in tasks if t.solution and len(t.solution.split()) < 5)
    completion = f"<think></think>\n<answer>{task.solution}</answer>"
    assert score_response(completion, task, config.rules).correct
    assert not score_response(completion, task, preset_rules("organism")).correct


def test_pass_at_k_estimator_is_the_unbiased_formula():
    assert analysis.pass_at_k_curve([2], 4, [2])[2] == pytest.approx(1 - math.comb(2, 2) / math.comb(4, 2))


# ---- the run analysis ---------------------------------------------------------------------
def _fake_run(root, steps=(1, 2), evaluated=(0, 1, 2)):
    from runtime.models import init_model

    for step, seed in zip(steps, itertools.count(1), strict=False):
        init_model(root / "checkpoints" / f"step-{step:06d}" / "policy", "qwen2", "tiny", seed=seed)
    rows = [{"step": s, **({"eval/accuracy": 0.0} if s in evaluated else {})} for s in range(max(steps) + 1)]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "config.json").write_text(json.dumps({"task_preset": "organism", "prompt_style": "compact", "max_response_length": 6}))
    return root


def test_analyze_writes_every_metric_per_step_and_resumes(tmp_path):
    from lab.analysis.run import METRICS, AnalyzeConfig, analyze, run_settings
    from runtime.models import init_model

    base = init_model(tmp_path / "base", "qwen2", "tiny", seed=0)
    run = _fake_run(tmp_path / "run")
    config = AnalyzeConfig(**run_settings(run), num_tasks=2, num_ood_tasks=2)
    assert config.max_new_tokens == 6
    out = tmp_path / "out"
    logs: list[str] = []
    report = analyze(run, str(base), out, config, log=logs.append)
    data = json.loads((out / "analysis.json").read_text())
    assert set(METRICS) <= set(data) and data == json.loads(json.dumps(report))
    for key in METRICS:
        assert [row["step"] for row in data[key]] == [0, 1, 2], key
        assert all("value" in row for row in data[key])
    assert data["kl_to_base"][0]["value"] == 0.0 and data["hidden_state_shift"][0]["value"] == 0.0
    assert data["kl_to_base"][1]["value"] > 0 and data["hidden_state_shift"][1]["value"] > 0
    assert [f"pass@{k}" in data["pass_at_k"][0] for k in range(1, 17)] == [True] * 16  # 32 samples: k <= 16
    assert "pass@17" not in data["pass_at_k"][0] and data["pass_at_k"][0]["k"] == 16
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert all(len(row["per_task"]["correct"]) == 2 for row in steps)  # per-task counts, for the paired changes
    for png in ("reflection_ratio", "pass_at_k_curves", "hidden_state_pca", "kl_to_base"):
        assert (out / f"{png}.png").stat().st_size > 0
    # resume: a second call measures nothing again
    lines = (out / "steps.jsonl").read_text().count("\n")
    logs.clear()
    analyze(run, str(base), out, config, log=logs.append)
    assert (out / "steps.jsonl").read_text().count("\n") == lines
    assert any("0 to go" in line for line in logs)


def test_analyze_cli_writes_intervals_and_prints_which_changes_are_outside_the_noise(tmp_path, capsys):
    import csv

    from lab.cli import main
    from runtime.models import init_model

    base = init_model(tmp_path / "base", "qwen2", "tiny", seed=0)
    run = _fake_run(tmp_path / "run", steps=(1,), evaluated=(0, 1))
    out = tmp_path / "out"
    args = ["analyze", str(run), "--base-model", str(base), "--output-dir", str(out), "--num-tasks", "3", "--num-ood-tasks", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pass@1 [95%]" in printed and "pass@16 [95%]" in printed and "distinct [95%]" in printed
    assert "outside the noise" in printed and "analysis.csv" in printed
    rows = list(csv.DictReader((out / "analysis.csv").open()))
    assert [r["step"] for r in rows] == ["0", "1"] and rows[0]["tasks"] == "3" and rows[0]["samples"] == "32"
    for name in ("pass@1", "pass@16", "distinct_solutions"):
        assert float(rows[1][f"{name}_lo"]) <= float(rows[1][name]) <= float(rows[1][f"{name}_hi"]), name
    for column in ("pass@1_change", "pass@16_change_lo", "distinct_solutions_change_hi"):
        float(rows[1][column])  # a number at step 1, empty at step 0 (the reference)
        assert rows[0][column] == ""
    assert rows[1]["pass@16_outside_noise"] in ("True", "False") and "pass@17" not in rows[1]
    data = json.loads((out / "analysis.json").read_text())
    assert {"value_lo", "value_hi", "pass@1_lo", "pass@16_hi", "pass@1_change"} <= set(data["pass_at_k"][1])
    assert {"value_lo", "value_hi", "change", "outside_noise"} <= set(data["distinct_solutions"][1])


def test_plan_keeps_evaluated_checkpoints_and_lists_the_ones_not_saved(tmp_path):
    from lab.analysis.run import plan

    run = _fake_run(tmp_path / "run", steps=(2, 4), evaluated=(0, 2, 3))
    p = plan(run, "BASE")
    assert sorted(p.models) == [0, 2] and p.models[0] == "BASE" and p.skipped == [3]


def test_analyze_cli_errors_on_a_bad_run_dir(tmp_path, capsys):
    from lab.cli import main

    assert main(["analyze", str(tmp_path / "missing"), "--base-model", "x", "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["analyze", str(tmp_path / "empty"), "--base-model", "x", "--output", str(tmp_path / "o")]) == 2
    assert "no checkpoints" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2
    assert "--base-model" in capsys.readouterr().err
    assert main(["self-improve", "--model", "x", "--rounds", "0", "--output-dir", str(tmp_path / "si")]) == 2


def test_keep_correct_keeps_each_correct_text_once():
    from lab.analysis.self_improve import keep_correct

    rows = [
        {"prompt": "p", "completion": "a", "correct": True},
        {"prompt": "p", "completion": "a", "correct": True},
        {"prompt": "p", "completion": "b", "correct": False},
        {"prompt": "q", "completion": "a", "correct": True},
    ]
    assert [(r["prompt"], r["completion"]) for r in keep_correct(rows)] == [("p", "a"), ("q", "a")]


@pytest.mark.slow  # SFT through TRL and an analysis: ~20 s
def test_self_improve_trains_a_round_resumes_and_analyses_rounds_as_steps(tmp_path):
    from pathlib import Path

    from lab.analysis.run import AnalyzeConfig, analyze
    from lab.analysis.self_improve import SelfImproveConfig, round_dir, self_improve

    base = str(Path(__file__).resolve().parents[2] / "organism" / "bases" / "seed-0" / "rich" / "model")
    config = SelfImproveConfig(rounds=1, num_tasks=12, samples=4, sft_steps=2, batch_size=4)
    models = self_improve(base, tmp_path, config, log=lambda line: None)
    assert models == [round_dir(tmp_path, 1) / "model"] and (models[0] / "config.json").is_file()
    rows = [json.loads(line) for line in (round_dir(tmp_path, 1) / "rows.jsonl").read_text().splitlines()]
    assert rows and len({(r["prompt"], r["completion"]) for r in rows}) == len(rows)
    logs: list[str] = []
    self_improve(base, tmp_path, config, log=logs.append)
    assert logs == ["self-improve: round 1 done already"]
    report = analyze(
        tmp_path, base, tmp_path / "analysis", AnalyzeConfig(num_tasks=2, num_ood_tasks=2, max_new_tokens=64), log=lambda line: None
    )
    assert [r["step"] for r in report["pass_at_k"]] == [0, 1]


def test_the_analysis_imports_neither_the_training_loop_nor_its_setup():
    """Every import in lab/analysis, those inside functions included: the log-prob helpers come from runtime."""
    import ast
    from pathlib import Path

    found = []
    for path in sorted((Path(__file__).resolve().parents[2] / "lab" / "analysis").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{path.name}: {name}" for name in names if name in ("rl.train", "rl.setup")]
    assert found == []


@pytest.mark.parametrize(
    ("config", "budget"),
    [
        ({"task_preset": "tiny", "rollouts_per_prompt": 4, "max_new_tokens": 96}, 96),  # an RL run
        ({"task_preset": "tiny", "rollouts_per_prompt": 4, "max_response_length": 64}, 64),  # an RL run from before the rename
        ({"prompt_style": "compact", "max_new_tokens": 224, "samples": 8}, 224),  # self-improve: its sampling budget
        ({"data": "d", "max_length": 320, "max_new_tokens": 512}, None),  # SFT: only its evaluation's budget
    ],
)
def test_run_settings_take_the_runs_token_budget(tmp_path, config, budget):
    from lab.analysis.run import run_settings

    (tmp_path / "config.json").write_text(json.dumps(config))
    assert run_settings(tmp_path).get("max_new_tokens") == budget
