"""What RL sees per step, beside accuracy: whether its reward can teach anything, and how the model searches.

- `truncated_rate` (completions cut by the token budget; they score 0 under `truncated: zero`) and
  `mixed_groups` (share of prompts whose samples got different rewards: only those carry a group
  advantage), from metrics.jsonl;
- for the organism's text, from the logged training rollouts: `tries` per answer and
  `first_try_hit` (the first try already reaches the target): a better first guess and a longer
  search are the two ways RL can raise accuracy here, and these tell them apart; `false_ok` (a
  check that says `ok` on a try that is not a hit) and `repeats` (a first step written twice):
  the two ways the tiny models' searches fail (`organism.text.search_outcome`, bench/README.md);
  `goes_on_after_no` (of the checks that say `no`, the share another try follows) and `hits_said_ok` (of the written
  hits, the share checked `ok`): whether the verdicts can steer the search (`organism.text.verdict_use`); and
  `stops_at_hit` (of the written hits, the share no other try follows): whether the search stops where it should,
  whatever its verdict says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from countdown_env.files import read_jsonl

METRICS = {"reward/truncated_rate": "truncated_rate", "reward/mixed_groups": "mixed_groups"}


def metric_signals(metrics: pd.DataFrame) -> pd.DataFrame:
    """step, truncated_rate, mixed_groups (those logged) per RL step."""
    present = [c for c in METRICS if c in metrics]
    if not present or "step" not in metrics:
        return pd.DataFrame()
    return metrics[["step", *present]].dropna(subset=present, how="all").rename(columns=METRICS)


def search_row(row: dict[str, Any]) -> dict[str, Any]:
    """What one logged completion of the organism's text shows: its step, tries, whether the first try hits,
    which of `organism.text.SEARCH_OUTCOMES` it is (one boolean per outcome) and whether it repeats a try."""
    from countdown_env.tasks import Task
    from organism.text import SEARCH_OUTCOMES, repeats_a_try, search_outcome, try_results, verdict_use

    task = Task(tuple(int(n) for n in row["numbers"]), int(row["target"]))
    results = try_results(row["text"])
    outcome = search_outcome(row["text"], task, correct=bool(row.get("correct")), finished=bool(row.get("finished", True)))
    verdicts = verdict_use(row["text"], task)
    return {
        "step": int(row["step"]),
        "tries": len(results),
        "first_try_hit": bool(results) and results[0] == task.target,
        **{k: k == outcome for k in SEARCH_OUTCOMES},
        "repeats": repeats_a_try(row["text"]),
        "misses_said": verdicts.misses_said,
        "went_on_after_miss": verdicts.went_on_after_miss,
        "hits_written": verdicts.hits_written,
        "hits_said_ok": verdicts.hits_said_ok,
        "hits_stopped_at": verdicts.hits_stopped_at,
    }


def search_signals(run: Path) -> pd.DataFrame:
    """step, tries, first_try_hit, false_ok, repeats (means over the step's completions), goes_on_after_no,
    hits_said_ok and stops_at_hit (ratios of the step's counts; NaN when it has none) per logged step of the organism's
    rollouts."""
    path = Path(run) / "rollouts.jsonl"
    if not path.exists():
        return pd.DataFrame()
    rows = [search_row(r) for r in read_jsonl(path)]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    out = frame[["step", "tries", "first_try_hit", "false_ok", "repeats"]].groupby("step", as_index=False).mean()
    counts = frame.groupby("step")[["misses_said", "went_on_after_miss", "hits_written", "hits_said_ok", "hits_stopped_at"]].sum()
    ratios = pd.DataFrame(
        {
            "goes_on_after_no": counts["went_on_after_miss"] / counts["misses_said"].where(counts["misses_said"] > 0),
            "hits_said_ok": counts["hits_said_ok"] / counts["hits_written"].where(counts["hits_written"] > 0),
            "stops_at_hit": counts["hits_stopped_at"] / counts["hits_written"].where(counts["hits_written"] > 0),
        }
    )
    return out.merge(ratios.reset_index(), on="step")


def run_signals(run: Path, metrics: pd.DataFrame, organism_text: bool) -> pd.DataFrame:
    """Every signal of one run per step (outer join of the two sources)."""
    frames = [f for f in (metric_signals(metrics), search_signals(run) if organism_text else pd.DataFrame()) if not f.empty]
    if not frames:
        return pd.DataFrame()
    out = frames[0]
    for frame in frames[1:]:
        out = out.merge(frame, on="step", how="outer")
    return out.sort_values("step")


def heldout_outcomes(run: Path, mode: str = "greedy", keys: dict[Any, str] | None = None, split: str = "test") -> pd.DataFrame:
    """Per evaluated step of an organism run: the share of its held-out `mode` answers in each of
    `organism.text.SEARCH_OUTCOMES`, the share that writes a first step twice, tries per answer, and `n`.
    With `keys` (task key -> split, `heldout.split_keys`: an experiment evaluates dev and test tasks together),
    only the tasks of `split`; without, every evaluated task (a probe's folder)."""
    from lab.pipeline.heldout import task_key
    from organism.text import SEARCH_OUTCOMES

    rows = [
        search_row(r)
        for r in read_jsonl(Path(run) / "eval_completions.jsonl")
        if r.get("mode", "greedy") == mode and (not keys or keys.get(task_key(r["numbers"], r["target"])) == split)
    ]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)[["step", *SEARCH_OUTCOMES, "repeats", "tries"]]
    return frame.groupby("step").mean().assign(n=frame.groupby("step").size()).reset_index()
