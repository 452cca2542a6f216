"""Summaries of an experiment directory: a table (condition x seed) and plots over training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from behavior_classifier.frequencies import AVG_COLUMNS, behavior_frequencies, plot_frequencies, read_classified, reference_for
from countdown_env.files import read_jsonl, save_png_atomic
from countdown_env.steps import step_accuracy
from lab.pipeline import heldout, signals


def run_dirs(root: Path) -> list[Path]:
    """Run directories (with metrics.jsonl) under an experiment (`runs/*`), or the root itself if it is one."""
    root = Path(root)
    if (root / "metrics.jsonl").exists():
        return [root]
    return sorted(p for p in (root / "runs").glob("*") if (p / "metrics.jsonl").exists())


def run_name(run: Path) -> tuple[str, int]:
    """'only_backtracking-seed1' -> ('only_backtracking', 1); a run with a `run.json` (the organism's
    runs) names its condition there."""
    info = run_info(run)
    if info:
        return info["condition"], int(info["seed"])
    name, _, seed = run.name.rpartition("-seed")
    return (name, int(seed)) if name and seed.isdigit() else (run.name, 0)


def run_info(run: Path) -> dict[str, Any]:
    """`run.json` of a run directory (base, condition, seed), or {} if it has none."""
    path = Path(run) / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def run_base(run: Path) -> str:
    """The base model a run started from: `rich`/`poor` for the organism's runs, else `default`."""
    return run_info(run).get("base", "default")


def read_metrics(run: Path) -> pd.DataFrame:
    return pd.DataFrame(read_jsonl(run / "metrics.jsonl"))  # tolerant of a live run's torn last line


def label(run: Path) -> str:
    """How a run is named in plots and frequency tables: `base/condition` for the organism's
    runs (both bases run `none`), else the condition."""
    condition, _ = run_name(run)
    info = run_info(run)
    return f"{info['base']}/{condition}" if info.get("base") else condition


#: Classified completions a run may have: training rollouts (T=1) and held-out completions
#: written at each evaluation.
SOURCES = {"rollouts": "rollouts_classified.jsonl", "heldout": "eval_completions_classified.jsonl"}


def run_frequencies(run: Path, source: str = "rollouts") -> pd.DataFrame:
    """Behaviour frequencies per step of one run (from its classified completions of `source`),
    with `condition` (the run's label), `base`, `seed` and `source`."""
    _, seed = run_name(run)
    path = run / SOURCES[source]
    if not path.exists():
        return pd.DataFrame()
    name = label(run)
    frame = read_classified(path, condition=name).assign(condition=name)
    if "mode" in frame and frame["mode"].nunique() > 1:
        frame = frame[frame["mode"] == "greedy"]  # both decodings logged: behaviours of the greedy ones, as before
    return behavior_frequencies(frame).assign(seed=seed, base=run_base(run), source=source)


def experiment_root(run: Path) -> Path:
    """The experiment directory a run belongs to (`<root>/runs/<run>`), or the run itself."""
    return run.parent.parent if run.parent.name == "runs" else run


def summary_row(run: Path, freqs: pd.DataFrame) -> dict[str, Any]:
    condition, seed = run_name(run)
    metrics = read_metrics(run)
    evals = metrics.dropna(subset=["eval/accuracy"]) if "eval/accuracy" in metrics else pd.DataFrame()
    row: dict[str, Any] = {"base": run_base(run), "condition": condition, "seed": seed}
    split = heldout.eval_rows(run, heldout.split_keys(experiment_root(run), seed))
    if not split.empty:  # dev and test apart, both decodings, intervals (acc_* is test, greedy)
        row.update(heldout.accuracy_columns(split), last_step=int(split["step"].max()))
    if "acc_before" not in row and not evals.empty:
        row.update(
            acc_before=evals.iloc[0]["eval/accuracy"], acc_after=evals.iloc[-1]["eval/accuracy"], last_step=int(evals.iloc[-1]["step"])
        )
        row["acc_gain"] = row["acc_after"] - row["acc_before"]
    if not freqs.empty:
        first, last = freqs.iloc[0], freqs.iloc[-1]
        for column in (*AVG_COLUMNS, "response_length"):
            row[f"{column}_before"], row[f"{column}_after"] = first[column], last[column]
    row.update(step_accuracy_row(run))
    row.update(signal_row(run, metrics))
    row.update(compute_row(metrics))
    return row


def signal_row(run: Path, metrics: pd.DataFrame) -> dict[str, float]:
    """Each training signal (`lab.pipeline.signals`) at the first and the last step it was logged."""
    frame = signals.run_signals(run, metrics, organism_text=bool(run_info(run).get("base")))
    out: dict[str, float] = {}
    for column in frame.columns.drop("step", errors="ignore"):
        values = frame[column].dropna()
        if not values.empty:
            out[f"{column}_before"], out[f"{column}_after"] = float(values.iloc[0]), float(values.iloc[-1])
    return out


def compute_row(metrics: pd.DataFrame) -> dict[str, float]:
    """What a run's RL cost: tokens sampled and trained on, and wall seconds (last logged totals)."""
    out = {}
    for column, name in (
        ("compute/generated_tokens", "generated_tokens"),
        ("compute/trained_tokens", "trained_tokens"),
        ("time/elapsed_seconds", "rl_seconds"),
    ):
        if column in metrics and metrics[column].notna().any():
            out[name] = float(metrics[column].dropna().iloc[-1])
    return out


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
                rows.append({"condition": label(run), "seed": seed, "step": int(r["step"]), "accuracy": r["eval/accuracy"]})
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
    save_png_atomic(fig, path)  # a kill mid-save leaves the old plot
    plt.close(fig)
    return path


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summary_table(runs: list[Path], per_run: dict[Path, pd.DataFrame], heldout_freqs: dict[Path, pd.DataFrame]) -> pd.DataFrame:
    """One row per run: accuracies (with intervals), behaviours, signals and compute, before and after RL."""
    rows = []
    for run in runs:
        row = summary_row(run, per_run[run])
        if not heldout_freqs[run].empty:
            first, last = heldout_freqs[run].iloc[0], heldout_freqs[run].iloc[-1]
            for column in AVG_COLUMNS:
                row[f"heldout_{column}_before"], row[f"heldout_{column}_after"] = first[column], last[column]
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["base", "condition", "seed"])


#: Columns of summary.md's "over seeds" table, each as mean, sd, min and max over seeds.
OVER_SEEDS = (
    "acc_before", "acc_after", "acc_gain", "dev_acc_before", "dev_acc_after", "sample_acc_before", "sample_acc_after",
    "heldout_avg_verifications_before", "heldout_avg_verifications_after", "heldout_avg_backtracking_before",
    "heldout_avg_backtracking_after", "avg_backtracking_after", "avg_verifications_after", "truncated_rate_after",
    "mixed_groups_before", "mixed_groups_after", "tries_before", "tries_after", "response_length_after",
    "step_acc_after", "generated_tokens", "rl_seconds",
)  # fmt: skip


def over_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd, min and max over seeds per base and condition (the spread a claim over seeds rests on)."""
    keep = [c for c in OVER_SEEDS if c in table]
    stats = table.groupby(["base", "condition"])[keep].agg(["mean", "std", "min", "max"])
    stats.columns = [f"{a}_{b}" for a, b in stats.columns]
    return stats.reset_index().assign(seeds=table.groupby(["base", "condition"])["seed"].count().to_numpy())


def write_markdown(table: pd.DataFrame, path: Path) -> None:
    from countdown_env.files import write_text_atomic

    md = ["# Experiment summary", "", "acc_*: test split, greedy; dev_acc_*: dev split; sample_acc_*: test split, T=1;",
          "_lo/_hi: 95% bootstrap interval over tasks (the gain's: paired).", "", "## Per run", "", to_markdown(table), "",
          "## Over seeds (mean, sd, min, max)", "", to_markdown(over_seeds(table))]  # fmt: skip
    write_text_atomic(path, "\n".join(md) + "\n")


def plot_behaviors(freqs: pd.DataFrame, plots: Path) -> None:
    """Behaviours per response over training (mean over seeds), per source, with and against the study's curves."""
    for source, suffix, what in (("rollouts", "", "rollouts (T=1)"), ("heldout", "_heldout", "held-out completions")):
        part = freqs[freqs["source"] == source]
        if part.empty:
            continue
        mean_freqs = part.drop(columns=["seed", "base", "source"]).groupby(["condition", "step"], as_index=False).mean(numeric_only=True)
        plot_frequencies(mean_freqs, plots / f"behaviors_vs_step{suffix}.png",
                         title=f"behaviours per response (mean over seeds), accuracy and length: {what}")  # fmt: skip
        plot_frequencies(mean_freqs, plots / f"behavior_share_vs_step{suffix}.png", metric="share")


def summarize(root: str | Path) -> dict[str, Path]:
    """Write summary.csv/.md, frequencies.csv, steps.csv and plots/*.png for an experiment (or one run) directory."""
    root = Path(root)
    runs = run_dirs(root)
    if not runs:
        raise ValueError(f"no run directories with metrics.jsonl under {root}")
    per_run = {run: run_frequencies(run) for run in runs}
    heldout_freqs = {run: run_frequencies(run, "heldout") for run in runs}
    table = summary_table(runs, per_run, heldout_freqs)
    out = {"summary_csv": root / "summary.csv", "summary_md": root / "summary.md", "plots": root / "plots"}
    table.to_csv(out["summary_csv"], index=False)
    write_markdown(table, out["summary_md"])
    curves = accuracy_curves(runs)
    if not curves.empty:
        plot_accuracy(curves, out["plots"] / "accuracy_vs_step.png")
    freqs = _concat(list(per_run.values()) + list(heldout_freqs.values()))
    spread = pd.DataFrame()
    if not freqs.empty:
        freqs.to_csv(root / "frequencies.csv", index=False)
        plot_behaviors(freqs, out["plots"])
        spread = freqs[freqs["source"] == ("heldout" if (freqs["source"] == "heldout").any() else "rollouts")]
        plot_against_reference(spread, out["plots"] / "behaviors_vs_reference.png")
    steps = step_table(runs, curves, spread)
    if not steps.empty:
        steps.to_csv(root / "steps.csv", index=False)
        plot_spread(steps, out["plots"] / "spread_vs_step.png")
    return out


#: Panels of the spread plot, in order: metric -> title.
PANELS = {
    "test_greedy": "test accuracy (greedy)",
    "test_sample": "test accuracy (T=1)",
    "dev_greedy": "dev accuracy (greedy)",
    "accuracy": "held-out accuracy (greedy)",
    "truncated_rate": "truncated by the budget (rollouts)",
    "mixed_groups": "groups with mixed rewards",
    "tries": "tries per answer (rollouts)",
    "first_try_hit": "first try hits (rollouts)",
    "false_ok": "false `ok`: checked against the wrong number (rollouts)",
    "repeats": "writes a first step twice (rollouts)",
    "goes_on_after_no": "goes on after `no` (rollouts)",
    "hits_said_ok": "own hits checked `ok` (rollouts)",
    "stops_at_hit": "stops at its own hits (rollouts)",
    "avg_verifications": "checks per answer",
    "avg_backtracking": "returns per answer",
}


def step_table(runs: list[Path], curves: pd.DataFrame, freqs: pd.DataFrame) -> pd.DataFrame:
    """Every per-step quantity of every run in one long table: condition, seed, step, metric, value."""
    parts = []
    for run in runs:
        _, seed = run_name(run)
        name = label(run)
        split = heldout.curves(heldout.eval_rows(run, heldout.split_keys(experiment_root(run), seed)))
        if not split.empty:
            split = split.assign(metric=split["split"] + "_" + split["mode"], value=split["accuracy"])
            parts.append(split[["step", "metric", "value"]].assign(condition=name, seed=seed))
        sig = signals.run_signals(run, read_metrics(run), organism_text=bool(run_info(run).get("base")))
        if not sig.empty:
            parts.append(sig.melt(id_vars="step", var_name="metric", value_name="value").assign(condition=name, seed=seed))
    if not parts and not curves.empty:
        parts.append(curves.rename(columns={"accuracy": "value"}).assign(metric="accuracy"))
    for column in ("avg_verifications", "avg_backtracking"):
        if column in freqs:
            parts.append(freqs[["condition", "seed", "step", column]].rename(columns={column: "value"}).assign(metric=column))
    return pd.concat(parts, ignore_index=True).dropna(subset=["value"]) if parts else pd.DataFrame()


def plot_spread(table: pd.DataFrame, path: Path) -> Path:
    """One panel per quantity (`PANELS`) vs step per run label: the mean over seeds as a line, the
    range over seeds as a band (what a reader needs to judge a difference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in PANELS if m in set(table["metric"])]
    cols = min(4, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    colors = {name: f"C{i}" for i, name in enumerate(sorted(set(table["condition"])))}
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for name, group in table[table["metric"] == metric].groupby("condition", sort=True):
            stats = group.groupby("step")["value"].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], color=colors[name], marker="o", markersize=3, label=name)
            ax.fill_between(stats.index, stats["min"], stats["max"], color=colors[name], alpha=0.15)
        ax.set_title(PANELS[metric], fontsize=10)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("mean over seeds (band: min-max over seeds)", fontsize=10)
    fig.tight_layout()
    save_png_atomic(fig, path)  # a kill mid-save leaves the old plot
    plt.close(fig)
    return path


def plot_against_reference(freqs: pd.DataFrame, path: Path) -> Path | None:
    """Our behaviour means, accuracy and length per step (mean over seeds; held-out samples when there are,
    which is what the study measured) on the same axes as the study's curves for the same conditions (Llama
    and Qwen, `behavior_classifier/reference`). None when the study's CSVs are not found."""
    source = str(freqs["source"].iloc[0]) if not freqs.empty else "rollouts"
    ours = (
        freqs.drop(columns=["seed", "base", "source"], errors="ignore")
        .groupby(["condition", "step"], as_index=False)
        .mean(numeric_only=True)
    )
    try:
        reference = reference_for(ours["condition"].unique())
    except FileNotFoundError:
        return None
    what = "held-out samples (T=1)" if source == "heldout" else "training rollouts (T=1)"
    return plot_frequencies(
        ours, path, reference=reference, title=f"ours ({what}, solid) and the study's (dashed: Llama-3.2-3B, dotted: Qwen2.5-3B)"
    )
