"""PPO benchmarks: (a) our seconds per step vs TRL 1.12's experimental PPOTrainer; (b) a learning figure.

    nice -n 5 .venv/bin/python bench/ppo_bench.py            # everything
    nice -n 5 .venv/bin/python bench/ppo_bench.py --stage speed [--rounds N] [--hf-too] [--set KEY=VALUE ...]
        [--variant KEY=VALUE[,KEY=VALUE] ...]
    nice -n 5 .venv/bin/python bench/ppo_bench.py --stage learn

(a) speed: same model (a `small` 2.7M Qwen2 built locally), same batch (16 prompts x 4
    rollouts = 64 completions, one PPO epoch, mini-batches of 32), same response length
    (at most 64 new tokens, a completion ends at its EOS in both), same reward (our
    scorer). TRL 1.12's PPOTrainer only takes a reward *model* (an `nn.Module` whose
    backbone TRL calls, then its `score` head), so `bench/trl112_ppo.py` wraps our scorer
    in one: its backbone decodes the token ids and puts each completion's reward in the
    hidden state, its `score` head is the identity. TRL runs in its own venv
    (`bench/.venv-trl112`: torch 2.13 CPU, trl 1.12, transformers 5.23), in a subprocess.
(b) learn: a `small` model primed by SFT (the priming helper's model under runs/bench if
    present, else SFT on optimal-path traces here), held-out greedy accuracy before and
    after 100 PPO steps of the `tiny-cpu` config, minutes taken, and a PNG of
    reward/accuracy vs step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from countdown_env.files import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench" / "ppo"
VENV = ROOT / "bench" / ".venv-trl112"
PY = ROOT / ".venv" / "bin" / "python"
CLI = ROOT / ".venv" / "bin" / "countdown-lab"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

SPEED = {"prompts": 16, "rollouts": 4, "response_length": 64, "mini_batch": 32, "steps": 6, "warmup": 1}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], env=ENV, check=True, **kwargs)


# ---- (a) speed ----------------------------------------------------------------------
def ensure_trl112_venv() -> Path:
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        run([sys.executable, "-m", "venv", VENV])
        run([python, "-m", "pip", "install", "-q", "torch==2.13.0"])
        run(
            [python, "-m", "pip", "install", "-q", "trl==1.12.*", "transformers==5.23.*", "gymnasium"]
        )  # gymnasium: countdown_env (the scorer)
        (VENV / ".installed").touch()
    return python


def ours_speed(model: Path, out_dir: Path, decoder: str, extra: Sequence[str] = ()) -> tuple[float, float, float]:
    """One `countdown-lab ppo` run on the speed workload, generating with `decoder` ($COUNTDOWN_DECODER:
    `auto` = the fast CPU decoder, `hf` = transformers' `model.generate`), with `extra` PPO overrides
    (`KEY=VALUE`, after the workload's): mean seconds per timed step, of them generating, and the share of
    completions ending with EOS."""
    import shutil

    if out_dir.exists():
        shutil.rmtree(out_dir)
    steps = SPEED["steps"]
    # truncated=keep: every completion is trained on, as in TRL (which has no masking option).
    sets = [f"prompts_per_step={SPEED['prompts']}", f"rollouts_per_prompt={SPEED['rollouts']}", f"max_response_length={SPEED['response_length']}",
            f"mini_batch_size={SPEED['mini_batch']}", "eval_every=0", f"save_every={steps + 1}", "truncated=keep", "num_train_tasks=500"]  # fmt: skip
    cmd = [CLI, "ppo", "--model", model, "--output-dir", out_dir, "--max-steps", steps, "--no-progress"]
    for s in [*sets, *extra]:
        cmd += ["--set", s]
    print("$", " ".join(map(str, cmd)), f"(COUNTDOWN_DECODER={decoder})", flush=True)
    subprocess.run([str(c) for c in cmd], env={**ENV, "COUNTDOWN_DECODER": decoder}, check=True, capture_output=True)
    rows = read_jsonl(out_dir / "metrics.jsonl")
    timed = [row for row in rows if "time/seconds_per_step" in row][SPEED["warmup"] :]
    mean = lambda key: sum(row[key] for row in timed) / len(timed)  # noqa: E731
    return mean("time/seconds_per_step"), mean("time/generation_seconds"), 1 - mean("reward/truncated_rate")


def speed(rounds: int = 2, hf_too: bool = False, sets: Sequence[str] = (), variants: Sequence[str] = ()) -> dict[str, float]:
    """Seconds per PPO step, ours and TRL 1.12's, alternating A B A B so that load from other
    jobs on the machine hits both alike; the first step of every run is warm-up, not timed.
    Ours generates with the fast CPU decoder (`COUNTDOWN_DECODER=auto`); `hf_too` also times ours
    with transformers' `model.generate` (`COUNTDOWN_DECODER=hf`) in each round (A B C A B C).
    `sets` (`KEY=VALUE` PPO overrides) apply to every run of ours, never to TRL's; each of `variants`
    (`KEY=VALUE[,KEY=VALUE]`, e.g. `micro_batch_size=8`) adds one more run of ours (fast decoder) with
    those overrides to each round, before TRL's."""
    from runtime.models import init_model

    model = init_model(OUT / "speed-model", "qwen2", "small", seed=0)
    python = ensure_trl112_venv()
    steps = SPEED["steps"]
    ours, theirs, ours_finished, theirs_finished, ours_gen = [], [], [], [], []
    ours_hf, ours_hf_finished, ours_hf_gen = [], [], []
    extra = {v: [*sets, *v.split(",")] for v in variants}
    var_runs: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    for r in range(rounds):
        s_per_step, generating, finished = ours_speed(model, OUT / f"speed-ours-{r}", "auto", sets)
        ours.append(s_per_step)
        ours_gen.append(generating)
        ours_finished.append(finished)
        if hf_too:
            s_per_step, generating, finished = ours_speed(model, OUT / f"speed-ours-hf-{r}", "hf", sets)
            ours_hf.append(s_per_step)
            ours_hf_gen.append(generating)
            ours_hf_finished.append(finished)
        for i, v in enumerate(variants):
            var_runs[v].append(ours_speed(model, OUT / f"speed-ours-v{i}-{r}", "auto", extra[v]))

        out = subprocess.run([str(python), str(ROOT / "bench" / "trl112_ppo.py"), "--model", str(model), "--steps", str(steps),
                              *[f"--{k}={v}" for k, v in SPEED.items() if k != "steps"]],
                             env={**ENV, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True, text=True)  # fmt: skip
        result = json.loads(out.stdout.strip().splitlines()[-1])
        theirs.append(result["s_per_step"])
        theirs_finished.append(result["finished_rate"])
        hf = f", ours with model.generate {ours_hf[-1]:.3f} s/step" if hf_too else ""
        hf += "".join(f", ours with {v} {var_runs[v][-1][0]:.3f} s/step" for v in variants)
        print(f"round {r}: ours {ours[-1]:.3f} s/step{hf}, TRL 1.12 {theirs[-1]:.3f} s/step", flush=True)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    result = {"ours_s_per_step": mean(ours), "trl112_s_per_step": mean(theirs), "ratio": mean(ours) / mean(theirs),
              "ours_runs": ours, "trl112_runs": theirs, "ours_generation_s_per_step": mean(ours_gen),
              "ours_finished_rate": mean(ours_finished), "trl112_finished_rate": mean(theirs_finished)}  # fmt: skip
    if hf_too:
        result |= {"ours_hf_s_per_step": mean(ours_hf), "ratio_hf": mean(ours_hf) / mean(theirs), "ours_hf_runs": ours_hf,
                   "ours_hf_generation_s_per_step": mean(ours_hf_gen), "ours_hf_finished_rate": mean(ours_hf_finished)}  # fmt: skip
    if sets:
        result["ours_sets"] = list(sets)
    if variants:
        result["variants"] = {
            v: {"s_per_step": mean([x[0] for x in rs]), "ratio": mean([x[0] for x in rs]) / mean(theirs), "runs": [x[0] for x in rs],
                "generation_s_per_step": mean([x[1] for x in rs]), "finished_rate": mean([x[2] for x in rs])}
            for v, rs in var_runs.items()
        }  # fmt: skip
    return result


# ---- (b) learning -------------------------------------------------------------------
def optimal_path_text(solution: str, target: int) -> str:
    """`<think>1*9=9, 9+9=18</think>\n<answer>9 + 1 * 9</answer>`: the solution's steps in order."""
    from countdown_env import format_completion
    from countdown_env.expression import BinOp, Num, evaluate, parse, to_text

    steps: list[str] = []

    def walk(node) -> str:
        if isinstance(node, Num):
            return str(node.value)
        if isinstance(node, BinOp):
            a, b = walk(node.left), walk(node.right)
            value = evaluate(node)
            shown = str(value.numerator) if getattr(value, "denominator", 1) == 1 else str(value)
            steps.append(f"{a}{node.op}{b}={shown}")
            return shown
        return to_text(node)

    walk(parse(solution))
    return format_completion(", ".join(steps), solution)


def task_sets() -> tuple[Path, Path, Path]:
    """SFT tasks, RL tasks (disjoint from SFT) and held-out eval tasks (the preset's test split)."""
    from countdown_env import generate_tasks, write_tasks

    train = generate_tasks(4500, seed=0, preset="tiny", split="train")  # of the 4,794 there are
    test = generate_tasks(200, seed=0, preset="tiny", split="test")
    sft = OUT / "sft-traces.jsonl"
    with sft.open("w") as f:
        for task in train[:2500]:
            f.write(
                json.dumps({"numbers": list(task.numbers), "target": task.target, "text": optimal_path_text(task.solution, task.target)})
                + "\n"
            )
    return sft, write_tasks(train[2500:], OUT / "rl-tasks.jsonl"), write_tasks(test, OUT / "eval-tasks.jsonl")


def primed_model(start: str | None = None) -> Path:
    """`start` if given (e.g. the priming helper's `runs/bench/sft-small-only_backtracking/model`),
    else a `small` model SFT'd here on 2,500 optimal-path traces (~40 characters: short
    completions keep 100 PPO steps within minutes on 2 cores)."""
    if start:
        return Path(start)
    model = OUT / "sft" / "model"
    if (model / "config.json").exists():
        return model
    from runtime.models import init_model

    sft_data, _, _ = task_sets()
    base = init_model(OUT / "small-init", "qwen2", "small", seed=0)
    run([CLI, "sft", "--model", base, "--data", sft_data, "--output-dir", OUT / "sft", "--preset", "tiny-cpu", "--epochs", "3",
         "--eval-samples", "0", "--quiet"])  # fmt: skip
    return model


def evaluate(model: Path, tasks: Path, name: str) -> dict:
    out = OUT / f"eval-{name}.json"
    run([CLI, "eval", "--model", model, "--tasks", tasks, "--output", out, "--k", "8", "--max-new-tokens", "96", "--num-ood", "200"])
    return json.loads(out.read_text())


def ppo_run(model: Path, rl_tasks: Path, run_dir: Path, steps: int, *sets: str) -> None:
    """`countdown-lab ppo --config tiny-cpu` (plus `--set` overrides), resuming a run that was cut short."""
    resume = ["--resume"] if (run_dir / "metrics.jsonl").exists() else []
    extra = [arg for item in sets for arg in ("--set", item)]
    cmd = [CLI, "ppo", "--model", model, "--output-dir", run_dir, "--config", "tiny-cpu", "--tasks", rl_tasks, "--max-steps", steps]
    run([*cmd, "--no-progress", *extra, *resume])


def summary(run_dir: Path, after: dict, wall_minutes: float) -> dict:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    s_per_step = [r["time/seconds_per_step"] for r in rows if "time/seconds_per_step" in r]
    # Minutes of PPO steps from the log (a resumed or re-run bench still reports the run's own time).
    return {"after": after, "wall_minutes": wall_minutes, "minutes": sum(s_per_step) / 60, "s_per_step": sum(s_per_step) / len(s_per_step),
            "eval_curve": [(r["step"], r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]}  # fmt: skip


def learn(steps: int = 100, start: str | None = None, variant_prompts: int = 32) -> dict:
    """The `tiny-cpu` preset (16 prompts/step) and one variant with more prompts per step, from the same start."""
    model = primed_model(start)
    _, rl_tasks, eval_tasks = task_sets()
    results = {"model": str(model), "before": evaluate(model, eval_tasks, "before")}
    runs = {"tiny-cpu": (OUT / "ppo-run", ())}
    if variant_prompts:
        runs[f"{variant_prompts} prompts/step"] = (OUT / f"ppo-run-{variant_prompts}prompts", (f"prompts_per_step={variant_prompts}",))
    for name, (run_dir, sets) in runs.items():
        t0 = time.time()
        ppo_run(model, rl_tasks, run_dir, steps, *sets)
        after = evaluate(run_dir, eval_tasks, "after" if name == "tiny-cpu" else f"after-{run_dir.name.split('-')[-1]}")
        results[name] = summary(run_dir, after, (time.time() - t0) / 60)
    plot(OUT / "ppo-run", ROOT / "bench" / "figures" / "ppo_learning.png", {name: d for name, (d, _) in runs.items() if name != "tiny-cpu"})
    return results


def plot(run_dir: Path, path: Path, others: dict[str, Path] | None = None) -> Path:
    """Rollout reward/accuracy of `run_dir` and held-out greedy accuracy of it and `others` vs step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    df = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    train = df.dropna(subset=["reward/mean"])
    smooth = train.set_index("step")[["reward/mean", "reward/accuracy"]].rolling(10, min_periods=1).mean()
    ax.plot(smooth.index, smooth["reward/mean"], label="reward (train rollouts, 10-step mean)")
    ax.plot(smooth.index, smooth["reward/accuracy"], label="accuracy (train rollouts, 10-step mean)")
    ev = df.dropna(subset=["eval/accuracy"])
    ax.plot(ev["step"], ev["eval/accuracy"], "o-", label="held-out greedy accuracy")
    for name, other in (others or {}).items():
        ev = pd.read_json(other / "metrics.jsonl", lines=True).dropna(subset=["eval/accuracy"])
        ax.plot(ev["step"], ev["eval/accuracy"], "s--", label=f"held-out greedy accuracy, {name}")
    ax.set_xlabel("PPO step")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title("PPO (tiny-cpu) from an SFT-primed small model")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("all", "speed", "sft", "learn"), default="all")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="speed: rounds of ours vs TRL (A B A B ...)")
    parser.add_argument("--hf-too", action="store_true", help="speed: also time ours generating with model.generate (COUNTDOWN_DECODER=hf)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="speed: PPO override for our runs only (not TRL's), after the workload's; repeatable",
    )
    parser.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="speed: one more run of ours per round with these overrides (e.g. micro_batch_size=8); repeatable",
    )
    parser.add_argument("--start-model", help="primed model to start PPO from (default: SFT one on optimal-path traces)")
    parser.add_argument("--variant-prompts", type=int, default=32, help="also run tiny-cpu with this many prompts per step (0 = skip)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    results = {}
    if args.stage in ("all", "speed"):
        results["speed"] = speed(args.rounds, hf_too=args.hf_too, sets=args.sets, variants=args.variants)
        print(json.dumps(results["speed"], indent=2), flush=True)
    if args.stage == "sft":
        print(primed_model(args.start_model))
    if args.stage in ("all", "learn"):
        results["learn"] = learned = learn(args.steps, args.start_model, args.variant_prompts)
        keys = ("accuracy", "pass@8", "sample_accuracy", "distinct_correct", "format_rate", "response_length", "ood/accuracy")
        print("before", {k: round(learned["before"][k], 3) for k in keys if k in learned["before"]})
        for name, res in learned.items():
            if isinstance(res, dict) and "after" in res:
                print(
                    name,
                    {k: round(res["after"][k], 3) for k in keys if k in res["after"]},
                    f"{res['minutes']:.1f} min, {res['s_per_step']:.2f} s/step",
                )
    (OUT / f"results-{args.stage}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
