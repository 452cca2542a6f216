"""Behaviour frequencies over training: per step and condition, beside accuracy and response length.

The long-CoT studies found that reflection words can rise while accuracy falls, so every frequency table
carries accuracy and response length next to the behaviour numbers.

Column names follow the study's published results (``behavior_classifier/reference/*.csv``, see its README):
``avg_verifications, avg_backtracking, avg_subgoals, avg_backwards`` (mean count per response),
``total_*`` (sums), ``accuracy`` and ``response_length`` (characters), so our tables and theirs plot
with the same code. We add ``n`` (responses with counts), ``failed`` (responses the judge could not label;
left out of the averages) and ``share_*`` (fraction of responses showing the behaviour at least once).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pandas as pd

from behavior_classifier.behaviors import BEHAVIORS
from countdown_env.files import save_png_atomic

REFERENCE_NAMES: Final = {
    "verification": "verifications",
    "backtracking": "backtracking",
    "subgoal_setting": "subgoals",
    "backward_chaining": "backwards",
}
"""Behaviour name -> suffix of the study's columns (avg_<suffix>, total_<suffix>, share_<suffix>)."""

REFERENCE_FILES: Final = {"llama": "cognitive_behaviors_llama_results.csv", "qwen": "cognitive_behaviors_qwen_results.csv"}
REFERENCE_CONDITIONS: Final = {"none": "base_ppo", "all_strategies_incorrect": "no_positive_all_strategies"}
"""Our condition name -> the study's, where they differ (the rest, e.g. `only_backtracking`, are spelled alike)."""
REFERENCE_DIR_ENV: Final = "COUNTDOWN_REFERENCE_DIR"
"""Environment variable naming the folder of the study's CSVs (default: the copy shipped in `behavior_classifier/reference/`)."""

AVG_COLUMNS: Final = tuple(f"avg_{REFERENCE_NAMES[b]}" for b in BEHAVIORS)
TOTAL_COLUMNS: Final = tuple(f"total_{REFERENCE_NAMES[b]}" for b in BEHAVIORS)
SHARE_COLUMNS: Final = tuple(f"share_{REFERENCE_NAMES[b]}" for b in BEHAVIORS)
COLUMNS: Final = ("condition", "step", "n", "failed", *AVG_COLUMNS, *TOTAL_COLUMNS, *SHARE_COLUMNS, "accuracy", "response_length")


def read_classified(path: Path | str, condition: str | None = None, *, text_field: str = "text", step: int | None = None) -> pd.DataFrame:
    """Classified rollouts (JSONL or parquet with `text` and `behaviors`, e.g. from `countdown-lab classify`) as a DataFrame.

    `condition` fills the `condition` column where rows lack one (e.g. the run's name). `text_field` names the
    completion's field (veRL dumps: `output`); `step` is the rows' step where they carry none (default: the file's
    name, veRL's `N.jsonl`; see `classify.as_rollout_row`). A half-written last line (a run still appending, watched
    from a notebook) is skipped; a bad line elsewhere raises ValueError.
    """
    from behavior_classifier.classify import input_rows

    return classified_frame(input_rows(path, text_field=text_field, step=step), condition)


def classified_frame(rows: Iterable[Mapping[str, Any]], condition: str | None = None) -> pd.DataFrame:
    """One row per response: condition, step, the four counts (NaN when unlabelled), correct, length."""
    records = []
    for row in rows:
        behaviors = row.get("behaviors")
        record: dict[str, Any] = {
            "condition": row.get("condition", condition if condition is not None else "run"),
            "step": row.get("step", 0),
            "labelled": isinstance(behaviors, Mapping),
            "correct": row.get("correct"),
            "response_length": len(row.get("text") or ""),
        }
        for name in BEHAVIORS:
            record[name] = behaviors.get(name) if isinstance(behaviors, Mapping) else None
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=["condition", "step", "labelled", "correct", "response_length", *BEHAVIORS])
    for name in BEHAVIORS:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    frame["correct"] = frame["correct"].map(lambda v: float(v) if isinstance(v, bool | int | float) else float("nan"))
    return frame


def behavior_frequencies(classified: pd.DataFrame, by: Sequence[str] = ("condition", "step")) -> pd.DataFrame:
    """Per group (default: condition and step), mean and total count, share of responses showing each behaviour,
    accuracy (mean of `correct` over all responses) and mean response length (characters). Columns: `COLUMNS`."""
    groups = classified.groupby(list(by), sort=True, dropna=False)
    labelled = classified[classified["labelled"]]
    lab_groups = labelled.groupby(list(by), sort=True, dropna=False)
    out = pd.DataFrame(index=groups.size().index)
    out["n"] = lab_groups.size().reindex(out.index, fill_value=0).astype(int)
    out["failed"] = (groups.size() - out["n"]).astype(int)
    for name, avg, total, share in zip(BEHAVIORS, AVG_COLUMNS, TOTAL_COLUMNS, SHARE_COLUMNS, strict=True):
        out[avg] = lab_groups[name].mean().reindex(out.index)
        out[total] = lab_groups[name].sum().reindex(out.index, fill_value=0).astype(int)
        out[share] = lab_groups[name].apply(lambda s: float((s > 0).mean())).reindex(out.index)
    out["accuracy"] = groups["correct"].mean()
    out["response_length"] = groups["response_length"].mean()
    out = out.reset_index()
    for column in ("condition", "step"):
        if column not in out:
            out[column] = None
    return out[list(COLUMNS)]


def reference_dir() -> Path:
    env = os.environ.get(REFERENCE_DIR_ENV)
    # The CSVs ship with the package (data only, Apache-2.0, see reference/README.md), so
    # notebooks and CI find them on any machine.
    return Path(env) if env else Path(__file__).parent / "reference"


def load_reference(model: str = "llama", directory: Path | str | None = None) -> pd.DataFrame:
    """The study's per-step results for `model` ('llama', 'qwen', or a CSV path) in our columns.

    Duplicated (condition, step) rows (Qwen's `human_cot`) keep their first occurrence. The study did not
    publish shares, failures or n per step, so those columns are NaN.
    """
    path = Path(model) if model.endswith(".csv") else Path(directory or reference_dir()) / REFERENCE_FILES.get(model, "")
    if model not in REFERENCE_FILES and not model.endswith(".csv"):
        raise ValueError(f"model must be one of {sorted(REFERENCE_FILES)} or a .csv path, got {model!r}")
    if not path.is_file():
        raise FileNotFoundError(
            f"reference results not found at {path}; set {REFERENCE_DIR_ENV} to the folder holding {REFERENCE_FILES.get(model, path.name)}"
        )
    frame = pd.read_csv(path).drop_duplicates(subset=["condition", "step"], keep="first").reset_index(drop=True)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = float("nan")
    return frame[list(COLUMNS)]


def reference_for(
    conditions: Iterable[str], models: Sequence[str] = ("llama", "qwen"), directory: Path | str | None = None
) -> pd.DataFrame:
    """The study's curves for our `conditions` (an organism's `base/condition` labels too), from each of `models`,
    labelled ``study <model>: <condition>``; its no-priming curve (`base_ppo`) when none of ours is in the study."""
    frames = []
    for model in models:
        reference = load_reference(model, directory)
        names = {REFERENCE_CONDITIONS.get(c.rpartition("/")[2], c.rpartition("/")[2]) for c in conditions}
        names &= set(reference["condition"])
        part = reference[reference["condition"].isin(names or {"base_ppo"})]
        frames.append(part.assign(condition=f"study {model}: " + part["condition"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))


def plot_frequencies(
    frame: pd.DataFrame, path: Path | str, *, metric: str = "avg", title: str | None = None, reference: pd.DataFrame | None = None
) -> Path:
    """PNG of each behaviour (``metric`` 'avg' or 'share'), accuracy and response length vs step, one line per condition.

    `reference` (e.g. `reference_for`) is drawn on the same axes (dashed: Llama, dotted: Qwen), in the panels whose
    column it has values for (the study published means, accuracy and length, not shares)."""
    if metric not in ("avg", "share"):
        raise ValueError(f"metric must be 'avg' or 'share', got {metric!r}")
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a training box
    import matplotlib.pyplot as plt

    panels = [(f"{metric}_{REFERENCE_NAMES[b]}", b.replace("_", " ")) for b in BEHAVIORS]
    panels += [("accuracy", "accuracy"), ("response_length", "response length (chars)")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    for ax, (column, label) in zip(axes.flat, panels, strict=True):
        for condition, group in frame.sort_values("step").groupby("condition", sort=True):
            ax.plot(group["step"], group[column], marker="o", markersize=3, label=str(condition))
        if reference is not None and column in reference and reference[column].notna().any():
            ours = frame["condition"].nunique()
            for k, (condition, group) in enumerate(reference.sort_values("step").groupby("condition", sort=True)):
                style = "--" if "llama" in str(condition) else ":"  # one line style per model, colours after ours
                ax.plot(group["step"], group[column], linestyle=style, linewidth=1.2, color=f"C{(ours + k) % 10}", label=str(condition))
        ax.set_title(label + (" (share of responses)" if metric == "share" and column.startswith("share") else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or ("mean count per response" if metric == "avg" else "share of responses showing each behaviour"))
    fig.tight_layout()
    path = Path(path)
    save_png_atomic(fig, path)  # a kill mid-save leaves the old plot
    plt.close(fig)
    return path
