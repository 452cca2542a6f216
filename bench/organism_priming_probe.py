"""How much priming leaves RL room: prime the poor base at several doses, measure it on the DEV split.

    OMP_NUM_THREADS=1 .venv/bin/python bench/organism_priming_probe.py --seed 0 --output-dir runs/priming-probe \
        --dose 1000:16:1e-3 1000:8:1e-3 --kinds none giveup

A dose is `traces:batch:lr` (one epoch of SFT over that many random-order priming traces). For each
dose and kind (`none` = correct traces, else a wrong-answer kind) it prints rows, SFT steps and tokens,
and the primed model's greedy and sampled (T=1) accuracy, tries and checks per answer on the dev split:
the issue asks for a primed poor base between 0.20 and 0.45 there. Only dev is read: the test split is
for reports. Resumable: a finished dose is read back from its `probe.json`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from countdown_env import Task, generate_tasks
from countdown_env.files import write_text_atomic
from lab.pipeline.config import ExperimentConfig, parse_run
from lab.pipeline.stages import make_tasks, trace_rows
from organism import text
from organism.pretrain import base_dir


def prime(
    config: ExperimentConfig, seed: int, out: Path, dose: tuple[int, int, float], kind: str, micro_batches: int = 1
) -> tuple[str, dict]:
    """Priming rows of `kind` at `dose`, then one epoch of SFT from the poor base; (model folder, what it cost)."""
    from priming.export import write_prime_output
    from priming.sft import last_checkpoint, run_sft

    n, batch, lr = dose
    tasks = make_tasks(config, seed, out.parent / "experiment")["sft"]
    # The pipeline's own priming rows (text, scored `correct`), as an experiment's run of this kind writes them.
    name = "poor/only_backtracking" + ("" if kind == "none" else f"_incorrect_{kind}")
    spec = parse_run(name, config.start, config.incorrect_kinds())
    rows, _ = trace_rows(replace(config, num_traces=n), spec, seed, tasks)
    if not (out / "traces" / "metadata.json").exists():
        write_prime_output(rows, out / "traces", {"kind": kind, "dose": list(dose)}, test_size=0.0, seed=seed)
    poor = str(base_dir(config.bases_cache, seed, "poor") / "model")
    sft = config.sft_config(poor, str(out / "traces"), str(out / "sft"), seed)
    sft = type(sft)(**{**sft.__dict__, "batch_size": batch // micro_batches, "learning_rate": lr, "epochs": 1.0, "max_steps": None,
                       "gradient_accumulation_steps": micro_batches, "length_balanced": micro_batches > 1})  # fmt: skip
    result = run_sft(sft, resume=last_checkpoint(sft) is not None, progress=False)
    behaviors = [text.written_behaviors(r["completion"], r["target"]) for r in rows]
    cost = {"rows": len(rows), "steps": result.global_step, "tokens": sum(len(r["completion"]) for r in rows),
            "trace_checks": sum(b["checks"] for b in behaviors) / len(rows), "trace_returns": sum(b["returns"] for b in behaviors) / len(rows)}  # fmt: skip
    return str(result.model_dir), cost


def measure(model_dir: str, seed: int, max_new_tokens: int) -> dict:
    """Greedy and sampled accuracy, tries and checks per answer of `model_dir` on the organism's dev split."""
    from rl.evaluate import greedy_eval, sampled_eval
    from runtime.models import load_model, load_tokenizer
    from runtime.prompt import Prompt

    dev = generate_tasks(200, seed=seed, preset="organism", split="dev")
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    prompt = Prompt.of_preset("organism", "compact")
    greedy: list[dict] = []
    sampled: list[dict] = []
    out = {
        **greedy_eval(model, tokenizer, dev, prompt, max_new_tokens=max_new_tokens, rows=greedy),
        **sampled_eval(model, tokenizer, dev, prompt, max_new_tokens=max_new_tokens, seed=seed, rows=sampled),
    }
    for name, rows in (("greedy", greedy), ("sample", sampled)):
        counts = [text.written_behaviors(r["text"], r["target"]) for r in rows]
        out[f"{name}_checks"] = sum(c["checks"] for c in counts) / len(rows)
        out[f"{name}_truncated"] = sum(not r.get("finished", True) for r in rows) / len(rows)
        out[f"{name}_honest"] = text.honest_share([r["text"] for r in rows], [r["target"] for r in rows])
        use = [text.verdict_use(r["text"], Task(tuple(r["numbers"]), r["target"])) for r in rows]
        hits, nos = sum(u.hits_written for u in use), sum(u.misses_said for u in use)
        # does its verdict carry anything RL can use: `ok` on its own hits, going on after `no`
        out[f"{name}_hits_said_ok"] = sum(u.hits_said_ok for u in use) / hits if hits else float("nan")
        out[f"{name}_goes_on_after_no"] = sum(u.went_on_after_miss for u in use) / nos if nos else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--dose", nargs="+", default=["1000:16:1e-3"], help="traces:batch:lr")
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["none"],
        help="none (the correct condition's traces) or a wrong-answer kind (giveup, slip, ranout)",
    )
    parser.add_argument("--order", default="random", help="the search order of the traces (organism.text.SEARCH_ORDERS)")
    parser.add_argument("--max-tries", type=int, default=None, help="the longest search of a trace (default: the preset's)")
    parser.add_argument("--min-tries", type=int, default=None, help="the shortest search budget (default: every search checks max tries)")
    parser.add_argument("--give-up", type=float, default=None, help="the chance a search gives up after each miss (instead of --min-tries)")
    parser.add_argument("--bases-dir", default=None, help="the bases' cache (default: the organism preset's, with the "
                        "shipped seed-0 bases)")  # fmt: skip
    parser.add_argument("--micro-batches", type=int, default=1, help="each SFT step's batch in this many micro-batches of "
                        "similar length (SFTRunConfig.length_balanced): the same rows per step, less padding")  # fmt: skip
    args = parser.parse_args()
    config = ExperimentConfig.load(
        "organism",
        seeds=[args.seed],
        max_tries=args.max_tries,
        search_order=args.order,
        min_tries=args.min_tries,
        give_up=args.give_up,
    )
    if args.bases_dir:
        config = replace(config, bases_cache=args.bases_dir)
    elif args.seed == 0:
        from organism.bases import install_shipped_bases

        install_shipped_bases(config.bases_cache)
    ppo = config.ppo_config("m", 0)
    budget = getattr(ppo, "max_new_tokens", None) or ppo.max_response_length
    for spec in args.dose:
        n, batch, lr = spec.split(":")
        dose = (int(n), int(batch), float(lr))
        for kind in args.kinds:
            order = "" if args.order == "random" and not args.max_tries else f"-{args.order}{args.max_tries or ''}"
            order += f"-min{args.min_tries}" if args.min_tries else ""
            order += f"-giveup{args.give_up}" if args.give_up else ""
            order += f"-mb{args.micro_batches}" if args.micro_batches > 1 else ""
            out = args.output_dir / f"seed{args.seed}-{kind}{order}-{n}x{batch}-lr{lr}"
            if (out / "probe.json").exists():
                result = json.loads((out / "probe.json").read_text())
            else:
                model_dir, cost = prime(config, args.seed, out, dose, kind, args.micro_batches)
                result = {"kind": kind, "dose": spec, **cost, **measure(model_dir, args.seed, budget)}
                write_text_atomic(out / "probe.json", json.dumps(result, indent=2))
            print(json.dumps(result))


if __name__ == "__main__":
    main()
