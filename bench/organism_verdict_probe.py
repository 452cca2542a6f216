"""What a model's check verdicts carry: does it say `ok` to its own hits, and does it go on after `no` and stop after `ok`?

    OMP_NUM_THREADS=1 .venv/bin/python bench/organism_verdict_probe.py --models M [M ...] [--tasks 150]
    OMP_NUM_THREADS=1 .venv/bin/python bench/organism_verdict_probe.py --rollouts RUN [RUN ...] [--window 25]

`--models`: a forced-prefix probe on dev tasks. For each task, its first hitting try and one missing try (random,
seed 0) are written as the organism's text up to the verdict (`... 7*4=28, 28-28=0 `); the model's greedy next words
are read: `ok`, `no`, or neither. A base that never checks (poor) shows whether it knows what a check of distance 0
means in a Countdown context; a primed model shows what its priming taught.

`--rollouts`: a run folder's `rollouts.jsonl` (RL, T=1), per window of steps: accuracy, tries per answer, how often
the search goes on after a `no`, and the share of written hits (true arithmetic on the task's numbers reaching the
target) whose verdict is `ok` (`organism.text.verdict_use`; experiments' `steps.csv` carry both per step). A verdict
that is the same on hits and misses carries nothing RL can condition persistence on. Reads files only.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

from countdown_env import Task, generate_tasks
from countdown_env.files import read_jsonl
from countdown_env.rules import THINK_CLOSE, THINK_OPEN, render_prompt
from organism import text as organism


def probe_cases(n: int, seed: int = 0) -> list[tuple[str, bool]]:
    """(prompt and text up to a verdict, whether the checked try hits) for `n` dev tasks."""
    rng = random.Random(seed)
    cases = []
    for task in generate_tasks(n, seed=seed, preset="organism", split="dev"):
        made = organism.tries(task)
        hits = [t for t in made if t.value == task.target]
        misses = [t for t in made if t.value != task.target]
        for attempt, hit in ((hits[0] if hits else None, True), (rng.choice(misses) if misses else None, False)):
            if attempt is not None:
                before_verdict = attempt.text(True, task.target).rsplit(" ", 1)[0] + " "
                cases.append((render_prompt(task, "compact") + THINK_OPEN + before_verdict, hit))
    return cases


def probe_models(models: list[str], n: int) -> None:
    import torch

    from runtime.models import load_model, load_tokenizer

    torch.set_num_threads(1)
    cases = probe_cases(n)
    print("| model | hits: `ok` | hits: `no` | misses: `ok` | misses: `no` |")
    print("|---|---|---|---|---|")
    for path in models:
        tokenizer, model = load_tokenizer(path), load_model(path).eval()
        said: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
        for text, hit in cases:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=2, do_sample=False)
            word = tokenizer.decode(out[0, ids.shape[1] :])
            said[hit][organism.HIT if word.startswith(organism.HIT) else organism.MISS if word.startswith(organism.MISS) else "-"] += 1
        share = {h: {w: said[h][w] / max(sum(said[h].values()), 1) for w in (organism.HIT, organism.MISS)} for h in said}
        print(f"| {path} | {share[True]['ok']:.2f} | {share[True]['no']:.2f} | {share[False]['ok']:.2f} | {share[False]['no']:.2f} |")
    print(f"({sum(h for _, h in cases)} hits and {sum(not h for _, h in cases)} misses, greedy, dev tasks)")


def verdict_rows(rows: list[dict], window: int) -> list[dict[str, float]]:
    """Per window of RL steps: what the verdicts in the rollouts carry (see the module's doc)."""
    out = []
    last = max((r["step"] for r in rows), default=0)
    for lo in range(1, last + 1, window):
        c: Counter[str] = Counter()
        for r in rows:
            if not lo <= r["step"] < lo + window:
                continue
            think = r["text"].split(THINK_CLOSE)[0]
            use = organism.verdict_use(r["text"], Task(tuple(r["numbers"]), r["target"]))
            c["n"] += 1
            c["correct"] += bool(r["correct"])
            c["tries"] += think.count(organism.RETURN) + 1
            c["no"] += use.misses_said
            c["no on"] += use.went_on_after_miss
            c["hits"] += use.hits_written
            c["hits ok"] += use.hits_said_ok
            c["hits stop"] += use.hits_stopped_at
        if c["n"]:
            out.append(
                {
                    "steps": f"{lo}-{lo + window - 1}",
                    "n": c["n"],
                    "accuracy": c["correct"] / c["n"],
                    "tries": c["tries"] / c["n"],
                    "goes on after no": c["no on"] / c["no"] if c["no"] else float("nan"),
                    "hits per answer": c["hits"] / c["n"],
                    "hits said ok": c["hits ok"] / c["hits"] if c["hits"] else float("nan"),
                    "stops at hit": c["hits stop"] / c["hits"] if c["hits"] else float("nan"),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[])
    parser.add_argument("--tasks", type=int, default=150, help="dev tasks of the forced-prefix probe (default %(default)s)")
    parser.add_argument("--rollouts", nargs="+", type=Path, default=[])
    parser.add_argument("--window", type=int, default=25, help="RL steps per row (default %(default)s)")
    args = parser.parse_args()
    if not args.models and not args.rollouts:
        parser.error("give --models and/or --rollouts")
    if args.models:
        probe_models(args.models, args.tasks)
    for run in args.rollouts:
        rows = list(read_jsonl(run / "rollouts.jsonl"))
        table = verdict_rows(rows, args.window)
        print(f"\n## {run}")
        if not table:
            print("(no rollouts)")
            continue
        print("| " + " | ".join(table[0]) + " |")
        print("|" + "---|" * len(table[0]))
        for row in table:
            print("| " + " | ".join(v if isinstance(v, str) else str(v) if isinstance(v, int) else f"{v:.3f}" for v in row.values()) + " |")


if __name__ == "__main__":
    main()
