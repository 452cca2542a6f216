"""What the notebooks need beyond the packages: finding (or making) a run to show."""

from __future__ import annotations

import os
from pathlib import Path

RUN_DIR_ENV = "COUNTDOWN_RUN_DIR"
REPO = Path(__file__).resolve().parents[1]


def resolve_run_dir(default: Path | None = None) -> Path:
    """The run or experiment directory to show: `$COUNTDOWN_RUN_DIR`, else the demo's output
    (`runs/demo`), else a quick experiment made on the spot (seconds on a CPU)."""
    if os.environ.get(RUN_DIR_ENV):
        path = Path(os.environ[RUN_DIR_ENV])
        if not path.exists():
            raise FileNotFoundError(f"{RUN_DIR_ENV}={path} does not exist; point it at a run or experiment directory")
        return path
    for candidate in (REPO / "runs" / "demo", REPO / "runs" / "notebook-example"):
        if (candidate / "summary.csv").exists():
            return candidate
    from lab.pipeline.config import load_experiment
    from lab.pipeline.run import run_experiment

    return run_experiment(load_experiment("quick"), default or REPO / "runs" / "notebook-example")
