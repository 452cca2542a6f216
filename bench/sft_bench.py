"""Priming figure: a `small` model SFT'd on CPU on compact `only_backtracking` traces.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/sft_bench.py [--out runs/bench/sft-small-only_backtracking]

1. Traces: `priming.generate_traces` over 3-number `priming`-preset tasks (compact style),
   timed (traces per second, both styles).
2. SFT: `priming.sft.run_sft` with the `tiny-cpu` preset on a freshly initialised qwen2
   `small` model (one thread), evaluating on the held-out tasks every `--eval-steps`.
3. Greedy generation on 200 held-out tasks (`split="test"`, disjoint from training):
   well-formed share, accuracy, share that stops at `</answer>`, mean length.
Prints a markdown table, writes OUT/bench.json and OUT/sft_learning.png. The final model
(OUT/model, or OUT itself as --model) is the starting point of the PPO figure. Re-running
resumes an interrupted SFT from its last checkpoint and skips a finished one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from countdown_env.files import read_jsonl
from countdown_env.rules import render_prompt
from countdown_env.scoring import score_response
from countdown_env.tasks import generate_tasks
from priming import TraceConfig, generate_traces
from priming.sft import SFTRunConfig, last_checkpoint, run_sft
from runtime.generation import generate_completions
from runtime.models import count_parameters, init_model, load_model, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/sft-small-only_backtracking"))
    parser.add_argument("--condition", default="only_backtracking")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--eval-steps", type=int, default=250)
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the tiny-cpu preset's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machine is shared; one thread per job (bench/README.md, Calibration)
    out: Path = args.out
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)

    # 1. Tasks and traces -------------------------------------------------------------
    train_tasks = generate_tasks(args.n_train, seed=args.seed, preset="priming", max_numbers=3, split="train")
    test_tasks = generate_tasks(args.n_test, seed=args.seed, preset="priming", max_numbers=3, split="test")
    speed = {}
    for style in ("compact", "full"):
        start = time.perf_counter()
        traces = generate_traces(train_tasks, args.condition, seed=args.seed, config=TraceConfig.for_style(style))
        speed[style] = len(traces) / (time.perf_counter() - start)
    config = TraceConfig.for_style("compact")
    train_traces = generate_traces(train_tasks, args.condition, seed=args.seed, config=config)
    test_traces = generate_traces(test_tasks, args.condition, seed=args.seed + 1, config=config)
    for name, rows in (("train", train_traces), ("test", test_traces)):
        with (data / f"{name}.jsonl").open("w") as f:
            for trace in rows:
                f.write(json.dumps(trace.to_dict()) + "\n")
    trace_chars = sum(len(t.text) for t in train_traces) / len(train_traces)

    # 2. SFT ---------------------------------------------------------------------------
    init_dir = init_model(out / "init", "qwen2", "small", seed=args.seed)
    sft = SFTRunConfig.from_preset(
        "tiny-cpu",
        model=str(init_dir),
        data=str(data),
        output_dir=str(out),
        epochs=args.epochs,
        learning_rate=args.lr,
        seed=args.seed,
        eval_steps=args.eval_steps,
        eval_samples=args.n_test,
        eval_max_new_tokens=320,
        save_steps=100,
    )
    if (out / "model" / "config.json").exists() and (out / "sft_result.json").exists():
        trained = json.loads((out / "sft_result.json").read_text())
        print(f"SFT already finished ({trained['global_step']} steps); delete {out} to redo it")
    else:
        result = run_sft(sft, resume=last_checkpoint(sft) is not None)
        trained = {
            "global_step": result.global_step,
            "seconds": result.seconds,
            "train_loss": result.train_loss,
            "resumed": result.resumed_from,
        }
        (out / "sft_result.json").write_text(json.dumps(trained, indent=2) + "\n")

    # 3. Held-out evaluation -------------------------------------------------------------
    model, tokenizer = load_model(out), load_tokenizer(out)
    prompts = [render_prompt(task, "compact") for task in test_tasks]
    start = time.perf_counter()
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=320, batch_size=50, progress=True)
    gen_seconds = time.perf_counter() - start
    scores = [score_response(c, t) for c, t in zip(completions, test_tasks, strict=True)]
    n = len(scores)
    # Training time without the periodic held-out evaluations that ran inside the loop.
    rows = read_jsonl(out / "metrics.jsonl")
    eval_seconds = sum(r.get("eval/runtime", 0.0) + r.get("eval/generation_seconds", 0.0) for r in rows)
    train_seconds = trained["seconds"] - eval_seconds
    figures = {
        "condition": args.condition,
        "learning_rate": sft.learning_rate,
        "n_train_traces": len(train_traces),
        "mean_trace_chars": round(trace_chars, 1),
        "traces_per_second": {k: round(v) for k, v in speed.items()},
        "parameters": count_parameters(model),
        "sft_steps": trained["global_step"],
        "sft_minutes": round(train_seconds / 60, 2),
        "sft_minutes_with_evals": round(trained["seconds"] / 60, 2),
        "seconds_per_step": round(train_seconds / trained["global_step"], 3),
        "n_eval": n,
        "well_formed": sum(s.well_formed for s in scores) / n,
        "accuracy": sum(s.correct for s in scores) / n,
        "stops_at_answer": sum(c.rstrip().endswith("</answer>") for c in completions) / n,
        "mean_completion_chars": round(sum(len(c) for c in completions) / n, 1),
        "generation_seconds": round(gen_seconds, 1),
    }
    (out / "bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    (out / "samples.jsonl").write_text(
        "".join(
            json.dumps({"numbers": list(t.numbers), "target": t.target, "text": c, **s.to_dict()}) + "\n"
            for t, c, s in zip(test_tasks, completions, scores, strict=True)
        )
    )
    _plot(out)
    print(json.dumps(figures, indent=2))
    print(
        "\n| condition | traces | chars/trace | steps | minutes | s/step | well-formed | accuracy | stops at </answer> |\n|---|---|---|---|---|---|---|---|---|\n"
        f"| {args.condition} | {len(train_traces)} | {trace_chars:.0f} | {figures['sft_steps']} | {figures['sft_minutes']} | "
        f"{figures['seconds_per_step']} | {figures['well_formed']:.3f} | {figures['accuracy']:.3f} | {figures['stops_at_answer']:.3f} |"
    )


def _plot(run_dir: Path) -> None:
    """Training loss and held-out accuracy / well-formedness against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(run_dir / "metrics.jsonl")
    loss = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
    evals = [r for r in rows if "eval/accuracy" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(*zip(*loss, strict=True), label="train loss (completion tokens)")
    if any("eval/loss" in r for r in evals):
        left.plot([r["step"] for r in evals], [r["eval/loss"] for r in evals], "o-", label="held-out loss")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.legend()
    for key, label in (("eval/format_rate", "well-formed"), ("eval/accuracy", "accuracy")):
        right.plot([r["step"] for r in evals], [r[key] for r in evals], "o-", label=label)
    right.set_xlabel("step")
    right.set_ylim(0, 1)
    right.set_title("200 held-out tasks, greedy")
    right.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "sft_learning.png", dpi=110)


if __name__ == "__main__":
    main()
