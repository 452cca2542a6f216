"""Experiment trackers (`--report-to`): TensorBoard, Weights & Biases or Trackio, beside metrics.jsonl.

metrics.jsonl stays the record every command and notebook reads; a tracker is a live view of the
same numbers. Our PPO loop logs through accelerate's trackers (`Accelerator(log_with=...)`), SFT and
GRPO/RLOO through TRL's `report_to`. TensorBoard event files land in the run directory: `runs/` (PPO),
`checkpoints/runs/` (SFT) or `trl/runs/` (GRPO/RLOO).
"""

from __future__ import annotations

import argparse
import importlib.util

from countdown_env.errors import UsageError

REPORT_TO = ("none", "tensorboard", "wandb", "trackio")
#: The packages each tracker needs (any one of them), and what to install.
_NEEDS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboardX"),
    "wandb": (("wandb",), "wandb"),
    "trackio": (("trackio",), "trackio"),
}


def add_report_to(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report-to",
        dest="report_to",
        choices=REPORT_TO,
        help="also log metrics to a tracker (default none; metrics.jsonl is always written)",
    )


def check_report_to(report_to: str) -> str:
    """`report_to` if it names a tracker whose package is installed (or `none`), else a one-line UsageError."""
    if report_to not in REPORT_TO:
        raise UsageError(f"report_to must be one of {REPORT_TO}, got {report_to!r}")
    if report_to != "none":
        modules, package = _NEEDS[report_to]
        if not any(importlib.util.find_spec(m) is not None for m in modules):
            raise UsageError(f"--report-to {report_to} needs the {package} package: pip install {package}")
    return report_to
