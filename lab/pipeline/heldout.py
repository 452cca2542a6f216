"""Held-out accuracy of a run per split (dev, test) and decoding (greedy, T=1), with intervals.

An experiment whose task preset has a dev split evaluates its dev and test tasks together at every
evaluation (`lab.pipeline.stages.make_tasks`) and logs both decodings (`eval_log_greedy`); this
module tells the rows apart again by the task files of the run's seed. Intervals are 95% percentile
bootstraps over tasks (2,000 resamples, seeded): the noise of evaluating on a finite task set, which
is what decides whether a change of a few points means anything. The gain's interval resamples
tasks in pairs (the same task before and after), so it is narrower than the two intervals suggest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from countdown_env import read_tasks
from countdown_env.files import read_jsonl

SPLITS = ("dev", "test")
RESAMPLES = 2000
#: Column prefix per (split, mode): test greedy is the headline `acc_*`.
PREFIX = {("test", "greedy"): "acc", ("dev", "greedy"): "dev_acc", ("test", "sample"): "sample_acc", ("dev", "sample"): "dev_sample_acc"}


def task_key(numbers: Any, target: Any) -> tuple[tuple[int, ...], int]:
    return tuple(sorted(int(n) for n in numbers)), int(target)


def split_keys(root: Path, seed: int) -> dict[tuple[tuple[int, ...], int], str]:
    """Task key -> split for the seed's dev and test task files ({} when the experiment has no dev split)."""
    folder = Path(root) / "tasks" / f"seed-{seed}"
    if not all((folder / f"{split}.jsonl").exists() for split in SPLITS):
        return {}
    return {task.key: split for split in SPLITS for task in read_tasks(folder / f"{split}.jsonl")}


def eval_rows(run: Path, keys: dict[tuple[tuple[int, ...], int], str]) -> pd.DataFrame:
    """One row per held-out completion: step, split, mode, key, correct."""
    path = Path(run) / "eval_completions.jsonl"
    if not keys or not path.exists():
        return pd.DataFrame()
    rows = []
    for r in read_jsonl(path):
        key = task_key(r["numbers"], r["target"])
        if key in keys:
            rows.append(
                {"step": int(r["step"]), "split": keys[key], "mode": r.get("mode", "greedy"), "key": key, "correct": bool(r["correct"])}
            )
    return pd.DataFrame(rows)


def bootstrap(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of `values` (resampled with replacement)."""
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def per_task(frame: pd.DataFrame, step: int) -> pd.Series:
    """Correctness per task at `step` (a task evaluated twice counts once: its mean)."""
    return frame[frame["step"] == step].groupby("key")["correct"].mean()


def accuracy_columns(frame: pd.DataFrame) -> dict[str, float]:
    """`<prefix>_before`, `_after`, `_gain` and their 95% intervals (`_lo`, `_hi`) for every split and mode."""
    out: dict[str, float] = {}
    for (split, mode), prefix in PREFIX.items():
        part = frame[(frame["split"] == split) & (frame["mode"] == mode)]
        if part.empty:
            continue
        first, last = part["step"].min(), part["step"].max()
        before, after = per_task(part, first), per_task(part, last)
        both = pd.concat([before.rename("before"), after.rename("after")], axis=1).dropna()
        out[f"{prefix}_before"], out[f"{prefix}_after"] = float(before.mean()), float(after.mean())
        out[f"{prefix}_gain"] = out[f"{prefix}_after"] - out[f"{prefix}_before"]
        for name, values in (("before", before.to_numpy(float)), ("after", after.to_numpy(float)),
                             ("gain", (both["after"] - both["before"]).to_numpy(float))):  # fmt: skip
            out[f"{prefix}_{name}_lo"], out[f"{prefix}_{name}_hi"] = bootstrap(values)
        out[f"{prefix}_tasks"] = float(len(after))
    return out


def curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per step for every split and mode (columns step, split, mode, accuracy)."""
    if frame.empty:
        return frame
    return frame.groupby(["step", "split", "mode"], as_index=False)["correct"].mean().rename(columns={"correct": "accuracy"})
