"""The PNG plots of `countdown-lab analyze`: one per measure against step, pass@k curves, and the
2-D PCA of the mean hidden states."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from lab.analysis.metrics import pca_2d

#: Extra series drawn beside `value` for some measures.
_SERIES = {
    "reflection_ratio": ("correct", "wrong"),
    "response_length": ("correct", "wrong"),
    "ood_accuracy": ("more_numbers", "in_distribution"),
}
_LABELS = {"ood_accuracy": "unseen ranges", "pass_at_k": "pass@n/2", "transfer": "any-subset accuracy"}
#: A pass@k column of a report row (not its `_lo`, `_hi` or change columns).
_PASS_AT_K = re.compile(r"^pass@(\d+)$")


def plot_report(report: dict[str, list[dict[str, Any]]], hidden: dict[int, np.ndarray], out_dir: Path) -> list[Path]:
    """Write `<metric>.png` for each measure, `pass_at_k_curves.png` and `hidden_state_pca.png`; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    for key, rows in report.items():
        if key == "degradation" or not rows:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        steps = [r["step"] for r in rows]
        ax.plot(steps, [_num(r.get("value")) for r in rows], marker="o", label=_LABELS.get(key, "all"))
        if all("value_lo" in r for r in rows):  # the 95% interval over tasks: is a change more than the noise?
            ax.fill_between(
                steps, [_num(r["value_lo"]) for r in rows], [_num(r["value_hi"]) for r in rows], alpha=0.2, label="95% interval"
            )
        for extra in _SERIES.get(key, ()):
            ax.plot(steps, [_num(r.get(extra)) for r in rows], marker=".", linestyle="--", label=extra.replace("_", " "))
        flagged = [r["step"] for r in report.get("degradation", []) if r["value"]]
        for step in flagged if key in ("reflection_ratio", "response_length") else ():
            ax.axvline(step, color="red", alpha=0.3)
        ax.set(xlabel="step", ylabel=key.replace("_", " "), title=key)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"{key}.png"))
        plt.close(fig)

    curves = report.get("pass_at_k", [])
    if curves:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        _pass_at_k_curves(ax, curves)
        ax.set(xlabel="k", ylabel="pass@k", xscale="log", title="pass@k per step (k <= n/2; bands: 95% over tasks)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "pass_at_k_curves.png"))
        plt.close(fig)

    if hidden:
        coords = pca_2d(hidden)
        fig, ax = plt.subplots(figsize=(5, 4))
        cmap = plt.get_cmap("viridis")
        steps = sorted(coords)
        for i, step in enumerate(steps):
            xy = coords[step]
            ax.scatter(xy[:, 0], xy[:, 1], s=8, color=cmap(i / max(1, len(steps) - 1)), label=f"step {step}", alpha=0.7)
            ax.scatter(*xy.mean(0), s=80, color=cmap(i / max(1, len(steps) - 1)), edgecolor="black", marker="X")
        ax.set(xlabel="PC 1", ylabel="PC 2", title="last-layer mean hidden states (held-out prompts)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "hidden_state_pca.png"))
        plt.close(fig)
    return written


def _pass_at_k_curves(ax: Any, rows: list[dict[str, Any]]) -> None:
    """One pass@k curve per step, with its 95% band over tasks where the rows carry one."""
    for row in rows:
        ks = sorted(int(m.group(1)) for k in row if (m := _PASS_AT_K.match(k)))
        line = ax.plot(ks, [row[f"pass@{k}"] for k in ks], marker=".", label=f"step {row['step']}")[0]
        if all(f"pass@{k}_lo" in row for k in ks):
            ax.fill_between(ks, [row[f"pass@{k}_lo"] for k in ks], [row[f"pass@{k}_hi"] for k in ks], color=line.get_color(), alpha=0.15)


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _save(fig: Any, path: Path) -> Path:
    from countdown_env.files import save_png_atomic

    return save_png_atomic(fig, path, dpi=100)


def plot_comparison(reports: dict[str, dict[str, list[dict[str, Any]]]], keys: tuple[str, ...], path: Path) -> Path:
    """One panel per measure in `keys`, one line per run (value against step): runs side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for name, report in reports.items():
            rows = report.get(key, [])
            ax.plot([r["step"] for r in rows], [_num(r.get("value")) for r in rows], marker="o", label=name)
        ax.set(xlabel="step", ylabel=key.replace("_", " "), title=key)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)
