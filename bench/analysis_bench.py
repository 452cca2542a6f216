"""Goals of `countdown-lab analyze` (bench/README.md, "Analysis"): drift of an SFT-only run vs an RL run
from the same base, three rounds of `self-improve`, and the time `analyze` takes on a 100-step run.

    PYTHONPATH=. OMP_NUM_THREADS=1 nice -n 10 python bench/analysis_bench.py --experiment runs/organism --seed 1

`--experiment` is an organism experiment directory (`countdown-lab experiment --preset organism`): its
`<base>-none-seed<S>` run is RL from the base, and the priming stage of `<base>-<condition>-seed<S>` is
SFT-only from the same base. Self-improve starts from the shipped rich base (organism/bases/seed-0).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lab.analysis.run import AnalyzeConfig, analyze, run_settings, start_model
from lab.analysis.self_improve import SelfImproveConfig, self_improve

REPO = Path(__file__).resolve().parents[1]


def drift(experiment: Path, base: str, condition: str, seed: int, out: Path, config: dict) -> dict[str, dict]:
    runs = {
        "RL (none)": experiment / "runs" / f"{base}-none-seed{seed}",
        f"SFT only ({condition} priming)": experiment / "runs" / f"{base}-{condition}-seed{seed}" / "priming",
    }
    start = start_model(runs[next(iter(runs))])
    result = {}
    for name, run in runs.items():
        t0 = time.perf_counter()
        settings = {**run_settings(experiment / "runs" / f"{base}-none-seed{seed}"), **config}
        report = analyze(run, start, out / run.parent.name / run.name, AnalyzeConfig(**settings), log=lambda line: None)
        seconds = time.perf_counter() - t0
        last = {key: report[key][-1] for key in ("kl_to_base", "hidden_state_shift", "transfer", "ood_accuracy", "pass_at_k")}
        result[name] = {"steps": [r["step"] for r in report["kl_to_base"]], "seconds": round(seconds, 1), **{k: v for k, v in last.items()}}
        print(
            f"{name:32s} steps {result[name]['steps']}: KL {last['kl_to_base']['value']:.4f}/token  hidden shift {last['hidden_state_shift']['value']:.3f} "
            f"(relative {last['hidden_state_shift']['relative']:.3f})  transfer {last['transfer']['value']:.3f}  unseen-range {last['ood_accuracy']['value']:.3f}  "
            f"in-dist {last['ood_accuracy']['in_distribution']:.3f}  [{seconds:.0f}s]"
        )
    return result


def rounds(out: Path, n: int, num_tasks: int, config: dict) -> list[dict]:
    model = str(REPO / "organism" / "bases" / "seed-0" / "rich" / "model")
    si = SelfImproveConfig(rounds=n, num_tasks=num_tasks, samples=8, sft_steps=100)
    t0 = time.perf_counter()
    self_improve(model, out, si, log=lambda line: None)
    report = analyze(out, model, out / "analysis", AnalyzeConfig(**config), log=lambda line: None)
    print(f"self-improve: {n} rounds of {num_tasks} tasks x 8 samples, SFT 100 steps each, analysed in {time.perf_counter() - t0:.0f}s")
    rows = []
    for p, d, o in zip(report["pass_at_k"], report["distinct_solutions"], report["ood_accuracy"], strict=True):
        rows.append(
            {
                "round": p["step"],
                "pass@1": p["pass@1"],
                "pass@16": p["pass@16"],
                "distinct": d["value"],
                "unseen": o["value"],
                "more_numbers": o["more_numbers"],
            }
        )
        print(
            f"  round {p['step']}: pass@1 {p['pass@1']:.3f}  pass@16 {p['pass@16']:.3f}  distinct solutions/task {d['value']:.2f}  unseen-range {o['value']:.3f}  4 numbers {o['more_numbers']:.3f}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", type=Path, default=REPO / "runs" / "organism")
    parser.add_argument("--base", default="poor")
    parser.add_argument("--condition", default="only_backtracking")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-train-tasks", type=int, default=150)
    parser.add_argument("--output", type=Path, default=REPO / "runs" / "analysis-bench")
    parser.add_argument("--skip", nargs="*", default=[], choices=["drift", "self-improve"])
    args = parser.parse_args()
    config = {"num_tasks": None, "samples": 32, "num_ood_tasks": 64}  # the AnalyzeConfig defaults, stated
    results = {"config": config}
    if "drift" not in args.skip:
        results["drift"] = drift(args.experiment, args.base, args.condition, args.seed, args.output / "drift", config)
    if "self-improve" not in args.skip:
        results["self_improve"] = rounds(args.output / "self-improve", args.rounds, args.num_train_tasks, config)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
