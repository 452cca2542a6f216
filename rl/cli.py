"""`countdown-lab init-model` (and the RL commands)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    from rl.models import ARCHS, SIZES

    p = sub.add_parser("init-model", help="build a tiny randomly initialised model + tokenizer, saved like a hub checkpoint")
    p.add_argument("--arch", choices=ARCHS, default="qwen2")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", "-o", type=Path, required=True)
    p.set_defaults(func=_init_model)


def _init_model(args: argparse.Namespace) -> int:
    from rl.models import count_parameters, init_model, load_model

    path = init_model(args.output, args.arch, args.size, seed=args.seed)
    print(f"{args.arch}/{args.size}: {count_parameters(load_model(path)):,} parameters, saved to {path}")
    return 0
