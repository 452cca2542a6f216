"""`countdown-lab pretrain`: build (or reuse) the model organism's base models and print the gates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from runtime.config import add_option

DEFAULT_BASES_DIR = Path("runs/bases")


def add_commands(sub: argparse._SubParsersAction) -> None:
    from organism.pretrain import BASES, PretrainConfig

    d = PretrainConfig()
    p = sub.add_parser("pretrain", help="train (or reuse) the model organism's tiny base models (rich, poor) from a synthetic corpus")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the weights, the corpus and the data order (default %(default)s)")
    p.add_argument("--bases", nargs="+", choices=BASES, default=list(BASES), help="which bases (default: both)")
    # --cache means the judge's SQLite file in classify; here it was a folder, hence the new name.
    add_option(p, "--bases-dir", old=("--cache",), type=Path, default=DEFAULT_BASES_DIR, metavar="DIR",
               help="where bases are cached and reused (default %(default)s)")  # fmt: skip
    p.add_argument("--trunk-steps", type=int, default=d.trunk_steps, help="steps on arithmetic drills (default %(default)s)")
    p.add_argument("--base-steps", type=int, default=d.base_steps, help="steps of each base on its own text (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="(default %(default)s)")
    p.add_argument("--micro-batches", type=int, default=d.micro_batches, help="passes per step: each step's rows sorted by length "
                   "and cut into this many micro-batches of similar padded cost; the same rows and gradient, less padding "
                   "(default %(default)s)")  # fmt: skip
    p.add_argument("--verdict-share", type=float, default=d.verdict_share, help="share of drill facts that are a check with its "
                   "verdict (`28-28=0 ok`), in the trunk and both bases: what a check means, as arithmetic (default %(default)s)")  # fmt: skip
    p.add_argument("--poor-checks", type=float, default=d.poor_checks, help="share of the poor base's tries that are checked "
                   "honestly and answered whatever the verdict: verification now and then, never going back, as the study's "
                   "Llama (default %(default)s: never)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=2, help="bases trained at once, one process and one thread each, after the shared "
                   "trunk (default %(default)s: the two bases on 2 cores)")  # fmt: skip
    p.add_argument("--no-gates", action="store_true", help="skip the held-out gate evaluation")
    add_option(p, "--quiet", old=("--no-progress",), action="store_true", help="no progress bar")
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from countdown_env.errors import output_dir, user_input
    from countdown_env.files import write_text_atomic
    from organism import text as organism
    from organism.pretrain import PretrainConfig, evaluate_base, gates, pretrain

    with user_input():
        config = PretrainConfig(
            seed=args.seed,
            trunk_steps=args.trunk_steps,
            base_steps=args.base_steps,
            batch_size=args.batch_size,
            micro_batches=args.micro_batches,
            verdict_share=args.verdict_share,
            poor_checks=args.poor_checks,
        )
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    output_dir(args.bases_dir, "--bases-dir")
    from organism.bases import gate_tasks

    held_out = gate_tasks(config)
    pays = organism.search_pays(held_out, seed=config.seed)
    print(
        "search pays (held-out tasks, tries with random distinct first steps, each finished greedily): "
        + ", ".join(f"{k} tr{'y' if k == 1 else 'ies'} {v:.2f}" for k, v in pays.items())
    )
    from organism.bases import train_bases

    train_bases(lambda _: config, str(args.bases_dir), [config.seed], args.bases, jobs=args.jobs, progress=not args.quiet)
    models = pretrain(config, args.bases_dir, bases=tuple(args.bases), progress=not args.quiet)
    for stage, path in models.items():
        print(f"{stage}: {path}")
    if args.no_gates:
        return 0
    reports = {base: evaluate_base(models[base], held_out, base) for base in args.bases}
    for r in reports.values():
        print(
            f"{r.base} base: greedy accuracy {r.accuracy:.3f}, arithmetic steps right {r.step_accuracy:.3f}, "
            f"tries {r.tries:.2f}, checked {r.checks:.2f} ({len(held_out)} held-out tasks)"
        )
    out = Path(args.bases_dir) / f"seed-{config.seed}" / "gates.json"
    verdicts = gates(reports) if set(reports) == {"rich", "poor"} else []
    for text, ok in verdicts:
        print(f"gate {'PASS' if ok else 'FAIL'}: {text}")
    write_text_atomic(  # a kill mid-write leaves the old file or the new one, never a torn one
        out,
        json.dumps(
            {
                "search_pays": pays,
                "bases": {k: vars(v) for k, v in reports.items()},
                "gates": [{"gate": t, "pass": ok} for t, ok in verdicts],
            },
            indent=2,
        )
        + "\n",
    )
    return 0
