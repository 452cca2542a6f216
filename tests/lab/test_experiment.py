import json

import pandas as pd
import pytest

from lab.cli import main
from lab.pipeline.config import ExperimentConfig, parse_run
from lab.pipeline.run import run_experiment
from lab.pipeline.summary import run_dirs


@pytest.mark.slow  # more than ~5 s; `pytest -m 'not slow'` skips it
def test_experiment_writes_contract_run_dirs_summary_and_plots(quick_experiment):
    root = quick_experiment
    runs = run_dirs(root)
    assert [r.name for r in runs] == ["empty_cot-seed0", "only_backtracking-seed0"]
    for run in runs:
        for name in ("config.json", "metrics.jsonl", "rollouts.jsonl", "rollouts_classified.jsonl"):
            assert (run / name).exists(), name
        assert (run / "sft" / "model" / "config.json").exists()
        assert (run / "traces" / "metadata.json").exists()
        rows = [json.loads(line) for line in (run / "rollouts_classified.jsonl").open()]
        assert rows and all(set(r["behaviors"]) == {"verification", "backtracking", "subgoal_setting", "backward_chaining"} for r in rows)
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()]
        assert steps == sorted(steps) and steps[-1] == 3
    table = pd.read_csv(root / "summary.csv")
    assert set(table["condition"]) == {"only_backtracking", "empty_cot"}
    assert {"acc_before", "acc_after", "avg_backtracking_before", "avg_backtracking_after", "step_acc_before", "step_acc_after"} <= set(
        table.columns
    )
    assert table["acc_after"].between(0, 1).all()
    for png in ("accuracy_vs_step.png", "behaviors_vs_step.png"):
        assert (root / "plots" / png).stat().st_size > 10_000
    # The priming traces of each condition carry its behaviours (and the control none).
    meta = json.loads((root / "runs" / "only_backtracking-seed0" / "traces" / "metadata.json").read_text())
    assert meta["condition"] == "only_backtracking" and meta["incorrect"] is False


@pytest.mark.slow  # more than ~5 s; `pytest -m 'not slow'` skips it
def test_rerun_skips_finished_runs(quick_experiment):
    before = {p: p.stat().st_mtime_ns for p in quick_experiment.rglob("metrics.jsonl")}
    run_experiment(ExperimentConfig.load("quick"), quick_experiment)
    after = {p: p.stat().st_mtime_ns for p in quick_experiment.rglob("metrics.jsonl")}
    assert before == after  # nothing retrained
    # timing.json is the last command's; timings.jsonl keeps every command's, the first (which trained) included
    timings = [json.loads(line) for line in (quick_experiment / "timings.jsonl").read_text().splitlines()]
    assert len(timings) >= 2 and json.loads((quick_experiment / "timing.json").read_text()) == timings[-1]
    assert timings[0]["minutes"] > timings[-1]["minutes"] and timings[0]["seeds"] == list(ExperimentConfig.load("quick").seeds)


@pytest.mark.slow  # more than ~5 s; `pytest -m 'not slow'` skips it
def test_shared_tasks_are_disjoint(quick_experiment):
    from countdown_env import read_tasks

    folder = quick_experiment / "tasks" / "seed-0"
    keys = {name: {t.key for t in read_tasks(folder / f"{name}.jsonl")} for name in ("sft", "rl", "eval")}
    assert not keys["sft"] & keys["rl"] and not keys["sft"] & keys["eval"] and not keys["rl"] & keys["eval"]


@pytest.mark.parametrize(
    ("name", "expected", "kind"),
    [
        ("none", None, None),
        ("dots", "dots", None),
        ("all_strategies_incorrect", "all_strategies", "slip"),
        ("all_strategies_incorrect_slip", "all_strategies", "slip"),
        ("only_backtracking_incorrect_ranout", "only_backtracking", "ranout"),
        ("empty_cot_incorrect_ranout", "empty_cot", "ranout"),
    ],
)
def test_parse_condition(name, expected, kind):
    spec = parse_run(name)
    assert (spec.condition, spec.incorrect_kind, spec.base) == (expected, kind, None)
    assert spec.folder(3) == f"{spec.label}-seed3" and spec.label == name.replace("_incorrect_slip", "_incorrect")


@pytest.mark.parametrize(
    ("name", "base", "condition", "kind", "folder"),
    [("rich/none", "rich", None, None, "rich-none-seed1"), ("poor/only_backtracking_incorrect_ranout", "poor", "only_backtracking", "ranout",
      "poor-only_backtracking_incorrect_ranout-seed1")],
)  # fmt: skip
def test_parse_organism_runs(name, base, condition, kind, folder):
    spec = parse_run(name, "organism")
    assert (spec.base, spec.condition, spec.incorrect_kind, spec.folder(1)) == (base, condition, kind, folder)


@pytest.mark.parametrize(("name", "start"), [("rich/none", "model"), ("none", "organism"), ("mid/none", "organism")])
def test_a_base_belongs_to_the_organism_start(name, start):
    with pytest.raises(ValueError, match="organism|base"):
        parse_run(name, start)


@pytest.mark.parametrize("name", ["only_backtracking_incorrect_misread", "only_backtracking_ranout", "_incorrect", "none_incorrect"])
def test_parse_condition_refuses_unknown_kinds(name):
    with pytest.raises(ValueError, match="unknown condition"):
        parse_run(name)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"conditions": ["backtrack"]}, "unknown condition"), ({"seeds": []}, "at least one"), ({"jobs": 0}, "jobs"),
     ({"judge": "openai"}, "judge_base_url"), ({"task_preset": "huge"}, "task_preset"), ({"colour": 1}, "unknown experiment field")],
)  # fmt: skip
def test_bad_configs_fail_fast(overrides, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.load("quick", **overrides)


def test_cli_reports_a_bad_preset(capsys):
    assert main(["experiment", "--preset", "nope", "--output-dir", "/tmp/never"]) == 2
    assert "unknown experiment preset" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"sft": {"learning_rat": 1}}, "unknown sft field"), ({"ppo": {"seed": 3}}, "set by the experiment"),
     ({"prompt_style": "fancy"}, "prompt_style"), ({"trace_style": "long"}, "trace_style")],
)  # fmt: skip
def test_bad_overrides_fail_fast(overrides, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.load("quick", **overrides)


@pytest.mark.slow  # more than ~5 s; `pytest -m 'not slow'` skips it
def test_resuming_with_other_settings_is_refused(quick_experiment):
    with pytest.raises(ValueError, match="different settings"):
        run_experiment(ExperimentConfig.load("quick", num_rl_tasks=65), quick_experiment)


@pytest.mark.parametrize("name", ["only_backtracking_incorrect", "only_backtracking_incorrect_ranout"])
def test_trace_stage_writes_the_kind_of_wrong_answer(tmp_path, name):
    from countdown_env import generate_tasks
    from lab.pipeline.stages import stage_traces

    config = ExperimentConfig.load("quick", conditions=[name])
    spec = parse_run(name)
    tasks = generate_tasks(6, seed=0, preset=config.task_preset)
    out = stage_traces(config, tmp_path, spec, 0, tasks)
    rows = [json.loads(line) for line in (out / "train.jsonl").open()]
    assert rows and all(r["incorrect"] and not r["correct"] and r["incorrect_kind"] == spec.incorrect_kind for r in rows)


@pytest.mark.slow  # more than ~5 s; `pytest -m 'not slow'` skips it
def test_heldout_t1_samples_are_classified_and_plotted_against_the_study(tmp_path):
    config = ExperimentConfig.load("quick", conditions=["none"], eval_samples=8)
    root = run_experiment(config, tmp_path / "exp")
    run = root / "runs" / "none-seed0"
    rows = [json.loads(line) for line in (run / "eval_completions_classified.jsonl").open()]
    assert rows and all(r["mode"] == "sample" and r["behaviors"] is not None for r in rows)
    assert len(rows) == 8 * len({r["step"] for r in rows})
    freqs = pd.read_csv(root / "frequencies.csv")
    assert set(freqs["source"]) == {"rollouts", "heldout"}
    assert set(freqs[freqs["source"] == "heldout"]["n"]) == {8}
    assert (root / "plots" / "behaviors_vs_reference.png").stat().st_size > 10_000
    assert (root / "plots" / "behaviors_vs_step_heldout.png").exists()


def test_an_experiment_made_before_a_new_field_still_resumes(tmp_path):
    from lab.pipeline.run import check_same_config

    config = ExperimentConfig.load("quick")
    saved = json.loads(json.dumps(config.to_dict()))
    del saved["eval_samples"]  # written by a version without the field
    (tmp_path / "experiment.json").write_text(json.dumps(saved))
    check_same_config(config, tmp_path / "experiment.json")
    with pytest.raises(Exception, match="eval_samples"):
        check_same_config(ExperimentConfig.load("quick", eval_samples=4), tmp_path / "experiment.json")
