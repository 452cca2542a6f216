"""One flag vocabulary across every `countdown-lab` subcommand (the house style's rule 11, issue 18 item 6).

`--config NAME|FILE` is a run preset, `--task-preset NAME` a task preset, `--output-dir DIR` a
directory, `--output FILE`/`-o FILE` one file; `--samples`, `--num-ood-tasks` and `--quiet` are the
one spelling of their idea. The walk goes over the subparsers `lab.cli.build_parser()` registers, so a
new command is checked without being listed here. Old spellings stay as hidden aliases that print a
one-line note: the table below must name every one of them (a new alias without a row fails).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from countdown_env.tasks import PRESETS
from lab.cli import build_parser, main
from runtime.config import DeprecatedSpelling


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


COMMANDS = commands()


def visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options --help shows (positionals and hidden aliases left out)."""
    return [a for a in parser._actions if a.option_strings and a.help is not argparse.SUPPRESS]


def spellings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in visible(parser) for s in a.option_strings}


def test_every_command_of_the_contract_is_walked() -> None:
    # A guard on the walk itself: an empty or partial parser would make every test below pass vacuously.
    contract = {"generate", "solve", "score", "prime", "sft", "ppo", "eval", "classify", "experiment", "demo", "export-verl"}
    assert contract | {"init-model", "plan", "pretrain", "analyze", "self-improve", "grpo"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_retired_spellings_are_not_shown(name: str) -> None:
    shown = spellings(COMMANDS[name])
    assert not shown & {"--preset", "--k", "--num-ood", "--no-progress"}, shown
    if name != "classify":  # --cache is the judge's SQLite file, and only that
        assert "--cache" not in shown


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_output_is_a_file_and_output_dir_a_directory(name: str) -> None:
    for action in visible(COMMANDS[name]):
        strings = set(action.option_strings)
        if strings & {"--output", "-o"}:
            assert strings <= {"--output", "-o"}, strings
            assert action.metavar == "FILE", f"{name} {strings}: --output/-o names one file"
            assert "director" not in (action.help or ""), f"{name} --output: a directory is --output-dir"
        if action.metavar == "DIR":
            assert all(s.endswith("-dir") for s in action.option_strings), f"{name} {strings}: a directory option ends in -dir"
        if "--output-dir" in strings:
            assert action.metavar == "DIR" and action.option_strings == ["--output-dir"], name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_presets_samples_and_quiet_have_one_spelling(name: str) -> None:
    parser = COMMANDS[name]
    for action in visible(parser):
        strings = action.option_strings
        if action.dest == "config":  # a run preset (or, for eval, a settings file)
            assert strings == ["--config"], f"{name}: the run preset is --config"
        if action.dest in ("task_preset", "preset") or (action.choices is not None and set(action.choices) == set(PRESETS)):
            assert strings == ["--task-preset"], f"{name} {strings}: a task preset is --task-preset"
        if action.dest in ("k", "samples"):
            assert strings == ["--samples"], f"{name} {strings}: samples per task is --samples"
        if action.dest == "num_ood_tasks":
            assert strings == ["--num-ood-tasks"], name
        if "progress" in (action.help or "") and action.nargs == 0:
            assert strings == ["--quiet"], f"{name} {strings}: hiding progress is --quiet"
    if parser.preset_help is not None:  # add_preset_args made the epilog follow the preset option
        assert parser.preset_help[0][0] == "--config"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_of_every_command(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: countdown-lab {name}")
    if COMMANDS[name].preset_help is not None:
        assert "fields (--set KEY=VALUE), with the values of" in text  # the chosen preset's fields


@pytest.mark.parametrize("argv", [["experiment", "--config", "organism", "--help"], ["experiment", "--preset", "organism", "--help"]])
def test_experiment_help_shows_the_organisms_fields(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "values of preset 'organism'" in text
    assert "start = 'organism'" in text and "sft_preset = 'sft-organism'" in text and "ppo_preset = 'ppo-organism'" in text


# Old spelling -> the new one it stands for: both must parse to the same values, the old one with a one-line note.
# `{d}` is a directory path. Every hidden alias of every command needs a row here (see the last test).
OLD_SPELLINGS: list[tuple[list[str], list[str]]] = [
    (["generate", "--preset", "tiny", "--output-dir", "{d}"], ["generate", "--task-preset", "tiny", "--output-dir", "{d}"]),
    (["solve", "1", "2", "--target", "3", "--preset", "classic"], ["solve", "1", "2", "--target", "3", "--task-preset", "classic"]),
    (["score", "x.jsonl", "--preset", "classic"], ["score", "x.jsonl", "--task-preset", "classic"]),
    (["prime", "-c", "dots", "-o", "{d}"], ["prime", "-c", "dots", "--output-dir", "{d}"]),
    (["prime", "-c", "dots", "--output", "{d}"], ["prime", "-c", "dots", "--output-dir", "{d}"]),
    (["prime", "-c", "dots", "--output-dir", "{d}", "--preset", "tiny"], ["prime", "-c", "dots", "--output-dir", "{d}", "--task-preset", "tiny"]),
    (["sft", "--model", "m", "--data", "d", "--output-dir", "{d}", "--preset", "tiny-cpu"],
     ["sft", "--model", "m", "--data", "d", "--output-dir", "{d}", "--config", "tiny-cpu"]),
    (["pretrain", "--cache", "{d}"], ["pretrain", "--bases-dir", "{d}"]),
    (["pretrain", "--no-progress"], ["pretrain", "--quiet"]),
    (["init-model", "--output", "{d}"], ["init-model", "--output-dir", "{d}"]),
    (["init-model", "-o", "{d}"], ["init-model", "--output-dir", "{d}"]),
    (["ppo", "--output-dir", "{d}", "--no-progress"], ["ppo", "--output-dir", "{d}", "--quiet"]),
    (["grpo", "--output-dir", "{d}", "--no-progress"], ["grpo", "--output-dir", "{d}", "--quiet"]),
    (["plan", "--preset", "paper-3b", "--gpus", "4", "--gpu-memory-gb", "80"], ["plan", "--config", "paper-3b", "--gpus", "4", "--gpu-memory-gb", "80"]),
    (["eval", "--model", "m", "--tasks", "t", "--output", "e.json", "--k", "4"], ["eval", "--model", "m", "--tasks", "t", "--output", "e.json", "--samples", "4"]),
    (["eval", "--model", "m", "--tasks", "t", "--output", "e.json", "--num-ood", "3"],
     ["eval", "--model", "m", "--tasks", "t", "--output", "e.json", "--num-ood-tasks", "3"]),
    (["eval", "--model", "m", "--tasks", "t", "--output", "e.json", "--preset", "tiny"],
     ["eval", "--model", "m", "--tasks", "t", "--output", "e.json", "--task-preset", "tiny"]),
    (["export-verl", "--output-dir", "{d}", "--preset", "tiny"], ["export-verl", "--output-dir", "{d}", "--task-preset", "tiny"]),
    (["experiment", "--preset", "organism", "--output-dir", "{d}"], ["experiment", "--config", "organism", "--output-dir", "{d}"]),
    (["analyze", "run", "--output", "{d}"], ["analyze", "run", "--output-dir", "{d}"]),
    (["self-improve", "--model", "m", "--output-dir", "{d}", "--k", "3"], ["self-improve", "--model", "m", "--output-dir", "{d}", "--train-samples", "3"]),
]  # fmt: skip


def _old_option(old: list[str], new: list[str]) -> str:
    """The one argument of `old` that `new` spells differently."""
    (differs,) = [a for a, b in zip(old, new, strict=True) if a != b]
    return differs


@pytest.mark.parametrize(("old", "new"), OLD_SPELLINGS, ids=[" ".join(o[:1] + [_old_option(o, n)]) for o, n in OLD_SPELLINGS])
def test_an_old_spelling_parses_like_the_new_one_with_a_note(
    old: list[str], new: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = ([a.replace("{d}", str(tmp_path)) for a in argv] for argv in (old, new))
    from_new = vars(build_parser().parse_args(new))
    assert capsys.readouterr().err == ""  # the new spelling is silent
    from_old = vars(build_parser().parse_args(old))
    err = capsys.readouterr().err
    assert from_old == from_new
    new_option = _old_option(new, old)
    assert err.splitlines() == [f"note: {_old_option(old, new)} is now {new_option}; the old spelling will go"]
    assert _old_option(old, new) not in spellings(COMMANDS[old[0]])  # hidden from --help


def test_the_table_names_every_hidden_alias() -> None:
    aliases = {(name, s) for name, p in COMMANDS.items() for a in p._actions if isinstance(a, DeprecatedSpelling) for s in a.option_strings}
    assert aliases == {(old[0], _old_option(old, new)) for old, new in OLD_SPELLINGS}


def test_an_aliased_required_option_is_still_required_and_shown_so(capsys: pytest.CaptureFixture[str]) -> None:
    # add_option checks these after the parse (argparse would not count the old spelling as the option given).
    assert main(["prime", "-c", "dots"]) == 2
    assert "required: --output-dir" in capsys.readouterr().err
    for name in ("prime", "init-model", "analyze"):
        usage = COMMANDS[name].format_usage()
        assert "--output-dir DIR" in usage and "[--output-dir" not in usage, usage


def test_generate_output_dir_and_the_old_output_for_both_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "-n", "3", "--no-difficulty", "--quiet"]
    assert main([*argv, "--output-dir", str(tmp_path / "new")]) == 0
    assert "note:" not in capsys.readouterr().err
    # The old spelling: --output DIR with both splits writes the same files, with a note.
    assert main([*argv, "--output", str(tmp_path / "old")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "note: generate --output DIR (with --split both) is now --output-dir DIR; the old spelling will go"
    ]
    for split in ("train", "test"):
        assert (tmp_path / "old" / f"{split}.jsonl").read_text() == (tmp_path / "new" / f"{split}.jsonl").read_text() != ""
    # With one split, --output-dir names the file after the split.
    assert main([*argv, "--split", "train", "--output-dir", str(tmp_path / "one")]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["train.jsonl"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["grpo", "--algo", "ppo"], "PPO with a critic is `countdown-lab ppo`"),
        (["ppo", "--trl-set", "use_vllm=true"], "--trl-set sets TRL's options"),
        (["ppo", "--algo", "ppo", "--trl-set", "use_vllm=true"], "--trl-set sets TRL's options"),
    ],
)
def test_rl_refuses_an_algorithm_it_does_not_run(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main([*argv, "--model", str(tmp_path / "no-model"), "--output-dir", str(run)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not run.exists()  # refused before anything ran or was written
