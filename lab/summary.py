"""Summaries of an experiment directory: a table (condition x seed) and plots over training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from behavior_classifier.frequencies import AVG_COLUMNS, behavior_frequencies, plot_frequencies, read_classified
from countdown_env.steps import step_accuracy
from runtime.jsonl import read_jsonl


def run_dirs(root: Path) -> list[Path]:
    """Run directories (with metrics.jsonl) under an experiment (`runs/*`), or the root itself if it is one."""
    root = Path(root)
    if (root / "metrics.jsonl").exists():
        return [root]
    return sorted(p for p in (root / "runs").glob("*") if (p / "metrics.jsonl").exists())


def run_name(run: Path) -> tuple[str, int]:
    """'only_backtracking-seed1' -> ('only_backtracking', 1)."""
    name, _, seed = run.name.rpartition("-seed")
    return (name, int(seed)) if name and seed.isdigit() else (run.name, 0)


def read_metrics(run: Path) -> pd.DataFrame:
    return pd.DataFrame(read_jsonl(run / "metrics.jsonl"))  # tolerant of a live run's torn last line


def run_frequencies(run: Path) -> pd.DataFrame:
    """Behaviour frequencies per step of one run (from its classified rollouts), with condition and seed."""
    condition, seed = run_name(run)
    path = run / "rollouts_classified.jsonl"
    if not path.exists():
        return pd.DataFrame()
    frame = read_classified(path, condition=condition).assign(condition=condition)
    return behavior_frequencies(frame).assign(seed=seed)


def summary_row(run: Path, freqs: pd.DataFrame) -> dict[str, Any]:
    condition, seed = run_name(run)
    metrics = read_metrics(run)
    evals = metrics.dropna(subset=["eval/accuracy"]) if "eval/accuracy" in metrics else pd.DataFrame()
    row: dict[str, Any] = {"condition": condition, "seed": seed}
    if not evals.empty:
        row.update(
            acc_before=evals.iloc[0]["eval/accuracy"], acc_after=evals.iloc[-1]["eval/accuracy"], last_step=int(evals.iloc[-1]["step"])
        )
        row["acc_gain"] = row["acc_after"] - row["acc_before"]
    if not freqs.empty:
        first, last = freqs.iloc[0], freqs.iloc[-1]
        for column in (*AVG_COLUMNS, "response_length"):
            row[f"{column}_before"], row[f"{column}_after"] = first[column], last[column]
    row.update(step_accuracy_row(run))
    return row


def step_accuracy_row(run: Path) -> dict[str, float]:
    """Share of arithmetic steps written in the rollouts that are right, first vs last logged step.

    Tiny models learn the form of reasoning before its arithmetic; without this column a
    flat accuracy curve cannot be told apart from a model that cannot add.
    """
    path = run / "rollouts.jsonl"
    if not path.exists():
        return {}
    rows = read_jsonl(path)
    if not rows:
        return {}
    steps = sorted({r["step"] for r in rows})
    first = [r["text"] for r in rows if r["step"] == steps[0]]
    last = [r["text"] for r in rows if r["step"] == steps[-1]]
    return {"step_acc_before": step_accuracy(first)[1], "step_acc_after": step_accuracy(last)[1]}


def to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub markdown table (by hand: pandas' to_markdown needs the optional `tabulate`)."""

    def cell(v: Any) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def accuracy_curves(runs: list[Path]) -> pd.DataFrame:
    rows = []
    for run in runs:
        condition, seed = run_name(run)
        metrics = read_metrics(run)
        if "eval/accuracy" in metrics:
            for _, r in metrics.dropna(subset=["eval/accuracy"]).iterrows():
                rows.append({"condition": condition, "seed": seed, "step": int(r["step"]), "accuracy": r["eval/accuracy"]})
    return pd.DataFrame(rows)


def plot_accuracy(curves: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (condition, group) in enumerate(curves.groupby("condition", sort=True)):
        color = f"C{i}"
        for _, seed_group in group.groupby("seed"):
            ax.plot(seed_group["step"], seed_group["accuracy"], color=color, alpha=0.3, linewidth=1)
        mean = group.groupby("step")["accuracy"].mean()
        ax.plot(mean.index, mean.values, color=color, linewidth=2, marker="o", markersize=3, label=condition)
    ax.set_xlabel("PPO step")
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_title("accuracy vs step (thick: mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summarize(root: str | Path) -> dict[str, Path]:
    """Write summary.csv/.md, frequencies.csv and plots/*.png for an experiment (or one run) directory."""
    root = Path(root)
    runs = run_dirs(root)
    if not runs:
        raise ValueError(f"no run directories with metrics.jsonl under {root}")
    per_run = {run: run_frequencies(run) for run in runs}
    table = pd.DataFrame([summary_row(run, per_run[run]) for run in runs]).sort_values(["condition", "seed"])
    freqs = (
        pd.concat([f for f in per_run.values() if not f.empty], ignore_index=True)
        if any(not f.empty for f in per_run.values())
        else pd.DataFrame()
    )
    out = {"summary_csv": root / "summary.csv", "summary_md": root / "summary.md", "plots": root / "plots"}
    table.to_csv(out["summary_csv"], index=False)
    numeric = table.drop(columns=["seed"]).groupby("condition").agg(["mean", "std"])
    numeric.columns = [f"{a}_{b}" for a, b in numeric.columns]
    keep = [
        c
        for c in (
            "acc_before_mean",
            "acc_after_mean",
            "acc_after_std",
            "acc_gain_mean",
            "avg_backtracking_after_mean",
            "avg_verifications_after_mean",
            "response_length_after_mean",
            "step_acc_before_mean",
            "step_acc_after_mean",
        )
        if c in numeric
    ]
    md = [
        "# Experiment summary",
        "",
        "## Per run",
        "",
        to_markdown(table),
        "",
        "## Mean over seeds",
        "",
        to_markdown(numeric[keep].reset_index()),
    ]
    out["summary_md"].write_text("\n".join(md) + "\n")
    curves = accuracy_curves(runs)
    if not curves.empty:
        plot_accuracy(curves, out["plots"] / "accuracy_vs_step.png")
    if not freqs.empty:
        freqs.to_csv(root / "frequencies.csv", index=False)
        mean_freqs = freqs.drop(columns=["seed"]).groupby(["condition", "step"], as_index=False).mean(numeric_only=True)
        plot_frequencies(
            mean_freqs,
            out["plots"] / "behaviors_vs_step.png",
            title="behaviours per response (mean over seeds), accuracy and length of rollouts",
        )
        plot_frequencies(mean_freqs, out["plots"] / "behavior_share_vs_step.png", metric="share")
    return out
