"""`countdown-lab`: one console script, one subcommand per job.

Each package contributes its subcommands through `add_commands(subparsers)` in its own
`cli.py`; handlers import heavy dependencies (torch, transformers, openai) lazily so
that `countdown-lab solve` starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from runtime.config import PresetArgumentParser

# Modules that define subcommands, in --help order. A module missing from a partial
# checkout is skipped rather than breaking the whole CLI.
COMMAND_MODULES = (
    "countdown_env.cli",
    "priming.cli",
    "priming.sft_cli",
    "priming.pretrain_cli",
    "rl.cli",
    "behavior_classifier.cli",
    "lab.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="countdown-lab", description="Study how language models learn to reason with RL on Countdown.")
    # PresetArgumentParser: a subcommand's --help lists its config with the values of the preset on its command line.
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=PresetArgumentParser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        # Bad input: a one-line message that says what to change, not a traceback.
        print(f"countdown-lab {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
