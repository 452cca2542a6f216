"""What RL sees per step, beside accuracy: whether its reward can teach anything, and how the model searches.

- `truncated_rate` (completions cut by the token budget; they score 0 under `truncated: zero`) and
  `mixed_groups` (share of prompts whose samples got different rewards: only those carry a group
  advantage), from metrics.jsonl;
- for the organism's text, from the logged training rollouts: `tries` per answer and
  `first_try_hit` (the first try already reaches the target): a better first guess and a longer
  search are the two ways RL can raise accuracy here, and these tell them apart; `false_ok` (a
  check that says `ok` on a try that is not a hit) and `repeats` (a first step written twice):
  the two ways the tiny models' searches fail (`organism.text.search_outcome`, bench/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from countdown_env.files import read_jsonl

METRICS = {"reward/truncated_rate": "truncated_rate", "reward/mixed_groups": "mixed_groups"}


def metric_signals(metrics: pd.DataFrame) -> pd.DataFrame:
    """step, truncated_rate, mixed_groups (those logged) per RL step."""
    present = [c for c in METRICS if c in metrics]
    if not present or "step" not in metrics:
        return pd.DataFrame()
    return metrics[["step", *present]].dropna(subset=present, how="all").rename(columns=METRICS)


def search_signals(run: Path) -> pd.DataFrame:
    """step, tries, first_try_hit, false_ok, repeats per logged step of the organism's training rollouts."""
    from countdown_env.tasks import Task
    from organism.text import repeats_a_try, search_outcome, try_results

    path = Path(run) / "rollouts.jsonl"
    if not path.exists():
        return pd.DataFrame()
    rows = []
    for r in read_jsonl(path):
        results = try_results(r["text"])
        task = Task(tuple(int(n) for n in r["numbers"]), int(r["target"]))
        outcome = search_outcome(r["text"], task, correct=bool(r.get("correct")), finished=bool(r.get("finished", True)))
        rows.append(
            {
                "step": int(r["step"]),
                "tries": len(results),
                "first_try_hit": bool(results) and results[0] == task.target,
                "false_ok": outcome == "false_ok",
                "repeats": repeats_a_try(r["text"]),
            }
        )
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).groupby("step", as_index=False).mean()


def run_signals(run: Path, metrics: pd.DataFrame, organism_text: bool) -> pd.DataFrame:
    """Every signal of one run per step (outer join of the two sources)."""
    frames = [f for f in (metric_signals(metrics), search_signals(run) if organism_text else pd.DataFrame()) if not f.empty]
    if not frames:
        return pd.DataFrame()
    out = frames[0]
    for frame in frames[1:]:
        out = out.merge(frame, on="step", how="outer")
    return out.sort_values("step")


def heldout_outcomes(run: Path, mode: str = "greedy", split: str | None = "test") -> pd.DataFrame:
    """Per evaluated step of an organism run: the share of its held-out `mode` answers in each of
    `organism.text.SEARCH_OUTCOMES`, the share that writes a first step twice, and tries per answer.
    `split` picks the dev or test tasks of an experiment's run folder (`<root>/runs/<name>-seed<S>`, whose
    evaluations hold both); other folders (a probe's) are read whole."""
    from countdown_env.tasks import Task
    from lab.pipeline.heldout import split_keys, task_key
    from organism.text import SEARCH_OUTCOMES, repeats_a_try, search_outcome, try_results

    run = Path(run)
    name, _, seed = run.name.rpartition("-seed")
    keys = split_keys(run.parent.parent, int(seed)) if split and name and seed.isdigit() and run.parent.name == "runs" else {}
    rows = []
    for r in read_jsonl(run / "eval_completions.jsonl"):
        if r.get("mode", "greedy") != mode or (keys and keys.get(task_key(r["numbers"], r["target"])) != split):
            continue
        task = Task(tuple(int(n) for n in r["numbers"]), int(r["target"]))
        outcome = search_outcome(r["text"], task, correct=bool(r["correct"]), finished=bool(r.get("finished", True)))
        rows.append(
            {
                "step": int(r["step"]),
                **{k: k == outcome for k in SEARCH_OUTCOMES},
                "repeats": repeats_a_try(r["text"]),
                "tries": len(try_results(r["text"])),
            }
        )
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return frame.groupby("step").mean().assign(n=frame.groupby("step").size()).reset_index()
