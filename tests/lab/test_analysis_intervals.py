"""pass@k (k <= n/2) and distinct solutions with bootstrap intervals over tasks, and changes tested against
that noise (lab/analysis/metrics.py), as `analyze` reports them (lab/analysis/run.py)."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from lab.analysis import metrics as analysis


# ---- the estimator ---------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
def test_pass_at_k_is_unbiased_over_every_outcome_of_n_samples(p):
    # Enumerate every count c of correct samples out of n (with its binomial probability): the
    # estimator's expectation is the true pass@k, 1 - (1 - p)^k, for every k up to n.
    n = 7
    for k in range(1, n + 1):
        expected = sum(math.comb(n, c) * p**c * (1 - p) ** (n - c) * analysis.task_pass_at_k([c], n, k)[0] for c in range(n + 1))
        assert expected == pytest.approx(1 - (1 - p) ** k, abs=1e-12)


def test_the_default_k_range_stops_at_half_the_samples():
    assert analysis.default_ks(32) == list(range(1, 17))
    assert analysis.default_ks(15) == list(range(1, 8))
    assert analysis.default_ks(1) == [1] and analysis.default_ks(3) == [1]  # pass@1 (accuracy) always
    assert sorted(analysis.pass_at_k_curve([3, 0, 8], 8)) == [1, 2, 3, 4]
    assert sorted(analysis.pass_at_k_estimates([3, 0, 8], 8)) == [1, 2, 3, 4]
    # asked for explicitly, a k above n/2 is computed ...
    assert analysis.pass_at_k_curve([3, 0, 8], 8, [6, 8])[8] == pytest.approx(2 / 3)
    # ... and one above n refused, with the reason
    for bad in ([9], [0]):
        with pytest.raises(ValueError, match="n=8"):
            analysis.pass_at_k_curve([3, 0, 8], 8, bad)
        with pytest.raises(ValueError, match="n=8"):
            analysis.pass_at_k_estimates([3, 0, 8], 8, bad)


# ---- intervals over tasks ------------------------------------------------------------------
def _counts(tasks: int, n: int = 16, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return rng.binomial(n, rng.uniform(0, 0.6, size=tasks)).tolist()  # tasks of varying difficulty


def test_the_interval_holds_the_estimate_and_rises_with_k_as_the_curve_does():
    counts = _counts(60)
    estimates = analysis.pass_at_k_estimates(counts, 16)
    curve = analysis.pass_at_k_curve(counts, 16)
    for k, e in estimates.items():
        assert e.value == pytest.approx(curve[k])
        assert e.lo <= e.value <= e.hi and e.lo < e.hi
    ks = sorted(estimates)
    assert all(estimates[a].lo <= estimates[b].lo + 1e-12 and estimates[a].hi <= estimates[b].hi + 1e-12 for a, b in pairwise(ks))


def test_the_interval_shrinks_with_more_tasks():
    # The width falls as 1/sqrt(tasks): 16 times the tasks, about a quarter of the width.
    few, many = (analysis.pass_at_k_estimates(_counts(t, seed=1), 16)[1] for t in (25, 400))
    assert many.hi - many.lo < 0.4 * (few.hi - few.lo)
    assert many.lo <= many.value <= many.hi


def test_intervals_are_seeded_and_are_the_labs_one_bootstrap():
    from lab.pipeline.heldout import bootstrap

    values = [analysis.distinct_solutions(["1+2", "2+1"]), 0, 3, 2, 5, 1]
    e = analysis.mean_estimate(values)
    assert e == analysis.mean_estimate(values)  # the same numbers every time
    assert (e.lo, e.hi) == bootstrap(np.asarray(values, dtype=float))  # the summary's bootstrap, not a second copy
    with pytest.raises(ValueError):
        analysis.mean_estimate([])


# ---- changes against the noise ----------------------------------------------------------------
def test_a_paired_change_is_inside_the_noise_when_nothing_changed():
    before = [0.1, 0.5, 0.9, 0.0, 1.0]
    change = analysis.paired_change(before, before)
    assert (change.value, change.lo, change.hi) == (0.0, 0.0, 0.0) and not change.outside_noise
    with pytest.raises(ValueError, match="same tasks"):
        analysis.paired_change(before, before[:-1])


def test_pairing_by_task_sees_a_small_change_the_two_intervals_do_not():
    # Tasks differ a lot in difficulty, the change is small but on every task: the two steps'
    # intervals overlap (inside the noise, judged apart), the paired one excludes 0 (outside).
    rng = np.random.default_rng(0)
    before = rng.uniform(0, 1, size=200)
    after = before + 0.03 + rng.normal(0, 0.02, size=200)
    b, a = analysis.mean_estimate(before), analysis.mean_estimate(after)
    assert a.lo < b.hi  # overlapping intervals
    change = analysis.paired_change(before, after)
    assert change.outside_noise and change.lo > 0 and change.value == pytest.approx(a.value - b.value)
    noise = analysis.paired_change(before, before + rng.normal(0, 0.2, size=200))
    assert not noise.outside_noise


# ---- the report: analysis.json rows, analysis.csv, the printed table ---------------------------
def _step(step: int, correct: list[int], distinct: list[int], n: int = 8, per_task: bool = True) -> dict:
    from lab.analysis.run import METRICS, interval_fields

    curve = analysis.pass_at_k_estimates(correct, n)
    k = max(curve)
    metrics = {key: {"value": 0.0} for key in METRICS}
    metrics["ood_accuracy"] = {"value": 0.0, "in_distribution": 0.0}
    metrics["pass_at_k"] = {**interval_fields("value", curve[k]), "k": k, "n": n, "tasks": len(correct),
                            **{f: v for j, e in curve.items() for f, v in interval_fields(f"pass@{j}", e).items()}}  # fmt: skip
    metrics["distinct_solutions"] = interval_fields("value", analysis.mean_estimate(distinct))
    return {"step": step, "metrics": metrics, **({"per_task": {"correct": correct, "distinct": distinct}} if per_task else {})}


def test_the_report_tests_each_steps_change_from_step_0_and_marks_it():
    from lab.analysis.run import build_report, csv_text, noise_rows, noise_table

    tasks = 80
    base = _step(0, [1] * tasks, [1] * tasks)
    same = _step(10, [1] * (tasks - 1) + [2], [1] * tasks)  # one task one sample better: noise
    better = _step(20, [6] * tasks, [3] * tasks)  # every task better: outside the noise
    report = build_report([better, base, same])
    rows = {r["step"]: r for r in report["pass_at_k"]}
    assert "pass@1_change" not in rows[0]  # step 0 is the reference
    assert rows[10]["pass@1_outside_noise"] is False and rows[20]["pass@1_outside_noise"] is True
    assert rows[20]["pass@4_change"] == pytest.approx(rows[20]["pass@4"] - rows[0]["pass@4"])
    assert rows[20]["pass@4_change_lo"] <= rows[20]["pass@4_change"] <= rows[20]["pass@4_change_hi"]
    distinct = {r["step"]: r for r in report["distinct_solutions"]}
    assert distinct[20]["change"] == pytest.approx(2.0) and distinct[20]["outside_noise"] is True

    table = noise_rows(report)
    assert [r["step"] for r in table] == [0, 10, 20]
    for column in ("pass@1_lo", "pass@4_hi", "distinct_solutions", "distinct_solutions_lo", "distinct_solutions_hi",
                   "pass@1_change_lo", "pass@4_outside_noise", "distinct_solutions_change_hi", "distinct_solutions_outside_noise"):  # fmt: skip
        assert column in table[-1], column
    assert "pass@5" not in table[-1]  # n = 8: k stops at 4
    header = csv_text(table).splitlines()[0].split(",")
    assert header[:4] == ["step", "tasks", "samples", "pass@1"] and "distinct_solutions_outside_noise" in header

    lines = noise_table(report)
    assert "pass@1 [95%]" in lines[0] and "pass@4 [95%]" in lines[0] and "distinct [95%]" in lines[0]
    assert "*" not in lines[2] and lines[3].count("*") == 3  # step 10 inside the noise; step 20 outside on all three
    assert "outside the noise" in lines[-1]


def test_steps_analysed_before_intervals_still_make_a_report():
    from lab.analysis.run import build_report, noise_rows, noise_table

    old = _step(0, [1, 2, 3], [1, 1, 1], per_task=False)
    new = _step(5, [2, 2, 3], [1, 2, 1])
    report = build_report([old, new])
    assert "pass@1_change" not in report["pass_at_k"][1]  # nothing to pair with
    assert len(noise_rows(report)) == 2 and len(noise_table(report)) == 4


# ---- what analyze measures on -------------------------------------------------------------------
def test_analyze_defaults_to_samples_for_pass_at_16_with_k_at_most_half():
    from lab.analysis.run import AnalyzeConfig

    assert AnalyzeConfig().samples == 32 and AnalyzeConfig().num_tasks is None
    assert AnalyzeConfig(samples=16).samples == 16  # fewer samples: pass@k stops at k = 8
    with pytest.raises(ValueError, match="samples must be >= 2"):
        AnalyzeConfig(samples=1)
    with pytest.raises(ValueError, match="num_tasks"):
        AnalyzeConfig(num_tasks=0)


def test_held_out_tasks_are_the_test_split():
    from countdown_env import TaskConfig, generate_tasks
    from countdown_env.tasks import split_of
    from lab.analysis.run import held_out_tasks

    config = TaskConfig.preset("organism")
    tasks = held_out_tasks("organism", 0, 12)
    assert tasks == generate_tasks(12, seed=0, preset="organism", split="test")
    assert all(split_of(t.key, config.test_fraction, config.dev_fraction) == "test" for t in tasks)


@pytest.mark.slow  # draws until the split is exhausted: ~6 s
def test_held_out_tasks_default_to_the_whole_test_split():
    from countdown_env import TaskConfig
    from countdown_env.tasks import split_of
    from lab.analysis.run import held_out_tasks
    from lab.pipeline.config import split_sizes

    config = TaskConfig.preset("organism")
    tasks = held_out_tasks("organism", 0)
    size = split_sizes("organism")["test"]  # an upper bound: the generator may miss a rare hard task
    assert size - 2 <= len(tasks) <= size and len({t.key for t in tasks}) == len(tasks)
    assert all(split_of(t.key, config.test_fraction, config.dev_fraction) == "test" for t in tasks)
