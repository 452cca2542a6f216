"""`countdown-lab`: one console script, one subcommand per job.

Each module of `lab.commands` contributes its subcommands through `add_commands(subparsers)`; handlers import heavy dependencies (torch, transformers, openai) lazily so
that `countdown-lab solve` starts in a fraction of a second.

Flags mean one thing in every subcommand: `--config NAME|FILE` a run preset (ppo, grpo, sft, plan,
eval, experiment), `--task-preset NAME` a task preset, `--output-dir DIR` a directory, `--output FILE`
(`-o`) one file, `--samples N` samples per task, `--num-ood-tasks N`, `--quiet` no progress bars. Old
spellings stay as hidden aliases that print a one-line note (`runtime.config.add_option`);
tests/test_cli_vocabulary.py holds every subcommand to this.

Errors: a mistake the user can fix (`UsageError`, a bad flag, a missing or unwritable path)
prints one line, ``error: <what, which file>``, and exits 2. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from countdown_env.errors import UsageError
from runtime.config import PresetArgumentParser

# Modules that define subcommands, in --help order. A module missing from a partial
# checkout is skipped rather than breaking the whole CLI.
COMMAND_MODULES = (
    "lab.commands.env",
    "lab.commands.prime",
    "lab.commands.sft",
    "lab.commands.pretrain",
    "lab.commands.rl",
    "lab.commands.judge",
    "lab.commands.experiment",
    "lab.commands.analyze",
)

# OS errors about a path the user gave (the handlers open user paths before any internal one).
USER_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


class Parser(PresetArgumentParser):
    """argparse with one-line errors and, for subcommands, the chosen preset's values in --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="countdown-lab", description="Study how language models learn to reason with RL on Countdown.")
    # Parser is a PresetArgumentParser: a subcommand's --help lists its config with the values of the preset on its command line.
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        module.add_commands(sub)
    return parser


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename}"
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a bad flag (already reported in one line): a code, also in-process
        return stop.code if isinstance(stop.code, int) else 2
    try:
        result = args.func(args)
    except (UsageError, *USER_OS_ERRORS) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
