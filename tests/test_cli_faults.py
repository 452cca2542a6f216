"""Issue 20: faults a user can cause, across the commands (eval, frequencies, export-verl, prime, generate,
pretrain, experiment, analyze, self-improve, sft, ppo/grpo): one line `error: ...`, exit 2, and no file lost
or left behind.

One table, as tests/test_cli_errors.py: each case lays out files in a temporary directory (`{d}`; `{model}`
is a tiny saved model), runs `countdown-lab` in-process through `lab.cli.main`, and checks the exit code,
the message, that every file that existed before is byte-identical afterwards, and that the files a
failed command must not write (`absent`) do not exist. Then the mechanisms behind the table: the lock of a
run folder, metrics rows on disk before the next step, GRPO checkpoints mapped to our steps.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab.cli import main

TASKS = json.dumps({"numbers": [3, 5, 7], "target": 15}) + "\n"
CLASSIFIED = json.dumps({"step": 1, "text": "x", "behaviors": {"verification": 1, "backtracking": 0, "subgoal_setting": 0,
                                                                 "backward_chaining": 0}}) + "\n"  # fmt: skip


@dataclass(frozen=True)
class Case:
    argv: list[str]
    """Arguments; `{d}` is the temporary directory, `{model}` a tiny saved model."""
    message: str
    """A fragment the one-line error must contain."""
    files: dict[str, str] = field(default_factory=dict)
    """Files to create first (a name ending in / is a directory; a value `{model}` copies the tiny model there)."""
    absent: tuple[str, ...] = ()
    """Paths (under `{d}`) the failed command must not have written."""
    code: int = 2


EVAL = ["eval", "--model", "{model}", "--quiet", "--num-ood-tasks", "0"]
TRL = ["grpo", "--model", "{model}", "--output-dir", "{d}/run", "--quiet"]
RUN = {"run/checkpoints/step-000001/policy/": "{model}"}  # a run with one checkpoint (of the tiny model)

CASES = {
    # 1. An output that is one of the command's inputs (resolved paths), refused before any work.
    "eval --output is --tasks": Case([*EVAL, "--tasks", "{d}/t.jsonl", "--output", "{d}/t.jsonl"], "also the input", {"t.jsonl": TASKS}),
    "eval --completions is --tasks": Case(
        [*EVAL, "--tasks", "{d}/t.jsonl", "--output", "{d}/r.json", "--completions", "{d}/t.jsonl"],
        "also the input",
        {"t.jsonl": TASKS},
        absent=("r.json",),
    ),
    "eval default completions is --tasks": Case(
        [*EVAL, "--tasks", "{d}/r.completions.jsonl", "--output", "{d}/r.json"],
        "also the input",
        {"r.completions.jsonl": TASKS},
        absent=("r.json",),
    ),
    "eval --completions is --output": Case(
        [*EVAL, "--tasks", "{d}/t.jsonl", "--output", "{d}/x.json", "--completions", "{d}/./x.json"],
        "its own file",
        {"t.jsonl": TASKS},
        absent=("x.json",),
    ),
    "analyze --output-dir is the run": Case(
        ["analyze", "{d}/run", "--base-model", "{model}", "--output-dir", "{d}/run/"], "is the run directory itself", RUN
    ),
    "frequencies --output is the input": Case(
        ["frequencies", "{d}/c.jsonl", "--output", "{d}/c.jsonl"], "also the input", {"c.jsonl": CLASSIFIED}
    ),
    "frequencies --plot not a png": Case(
        ["frequencies", "{d}/c.jsonl", "--plot", "{d}/x.txt"], ".png", {"c.jsonl": CLASSIFIED}, ("x.txt",)
    ),
    "export-verl --tasks is its train.parquet": Case(
        ["export-verl", "--output-dir", "{d}/v", "--tasks", "{d}/v/train.parquet", "-n", "3", "--num-test", "3", "--task-preset", "tiny"],
        "also the input",
        {"v/train.parquet": "not really parquet"},
        ("v/test.parquet", "v/countdown_reward.py"),
    ),
    "prime --tasks is its train.jsonl": Case(
        ["prime", "-c", "dots", "--tasks", "{d}/p/train.jsonl", "--output-dir", "{d}/p"],
        "also the input",
        {"p/train.jsonl": TASKS},
        ("p/metadata.json",),
    ),
    # 5. export-verl given only test tasks: nothing to train on, said instead of an empty train.parquet.
    "export-verl --tasks of test tasks": Case(
        ["export-verl", "--output-dir", "{d}/v", "--tasks", "{d}/test.jsonl", "--num-test", "5", "--task-preset", "tiny"],
        "nothing would be left to train on",
        {"test.jsonl": "{test5}"},
        ("v/train.parquet", "v/test.parquet"),
    ),
    # 6. Validated before anything is written: no settings file that would lock the folder.
    "experiment num_eval_tasks beyond the split": Case(
        ["experiment", "--config", "organism", "--set", "num_eval_tasks=5000", "--output-dir", "{d}/e"],
        "has only 201 test-split tasks",
        absent=("e",),
    ),
    "analyze --prompt-style nope": Case(
        ["analyze", "{d}/run", "--base-model", "{model}", "--output-dir", "{d}/a", "--prompt-style", "nope"], "prompt_style", RUN, ("a",)
    ),
    "analyze --base-model missing": Case(
        ["analyze", "{d}/run", "--base-model", "{d}/nope", "--output-dir", "{d}/a"], "does not exist", RUN, ("a",)
    ),
    "analyze --base-model hub id offline": Case(
        ["analyze", "{d}/run", "--base-model", "nobody/no-such-model", "--output-dir", "{d}/a"], "neither cached nor reachable", RUN, ("a",)
    ),
    "analyze --base-model of another architecture": Case(
        ["analyze", "{d}/run", "--base-model", "{d}/llama", "--output-dir", "{d}/a"], "not the model", {**RUN, "llama/": "{llama}"}, ("a",)
    ),
    "analyze a checkpoint without weights": Case(
        ["analyze", "{d}/run", "--base-model", "{model}", "--output-dir", "{d}/a"],
        "no weights",
        {"run/checkpoints/step-000001/policy/config.json": "{model-config}"},
        ("a",),
    ),
    # 7. One line instead of a traceback.
    "analyze from another folder finds the run's relative base": Case(  # then says it is not the checkpoint's architecture
        ["analyze", "{d}/x/runs/exp/run", "--output-dir", "{d}/a"],
        "x/runs/base is not the model",
        {
            "x/runs/base/": "{llama}",
            "x/runs/exp/run/config.json": '{"model": "runs/base"}',
            "x/runs/exp/run/checkpoints/step-000001/policy/": "{model}",
        },  # fmt: skip
        ("a",),
    ),
    "generate -n beyond the split": Case(
        ["generate", "-n", "5000", "--task-preset", "organism", "--split", "test", "-o", "{d}/t.jsonl"], "has only 201", absent=("t.jsonl",)
    ),
    "export-verl -n beyond the split": Case(
        ["export-verl", "--output-dir", "{d}/v", "-n", "100000", "--task-preset", "tiny"], "has only", absent=("v",)
    ),
    "pretrain --seed -1": Case(["pretrain", "--seed", "-1", "--bases-dir", "{d}/b"], "seed must be in", absent=("b",)),
    "pretrain --seed 2**32": Case(["pretrain", "--seed", str(2**32), "--bases-dir", "{d}/b"], "seed must be in", absent=("b",)),
    "experiment --seeds -1": Case(["experiment", "--config", "organism", "--seeds", "-1", "--output-dir", "{d}/e"], "seeds", absent=("e",)),
    "experiment --seeds 7 7": Case(
        ["experiment", "--config", "organism", "--seeds", "7", "7", "--output-dir", "{d}/e"], "duplicates", absent=("e",)
    ),
    "experiment --model missing": Case(["experiment", "--model", "{d}/nope", "--output-dir", "{d}/e"], "does not exist", absent=("e",)),
    "self-improve --model missing": Case(
        ["self-improve", "--model", "{d}/nope", "--output-dir", "{d}/s"], "does not exist", absent=("s/config.json",)
    ),
    "self-improve --learning-rate 2": Case(
        ["self-improve", "--model", "{model}", "--output-dir", "{d}/s", "--learning-rate", "2"], "learning_rate", absent=("s",)
    ),
    "self-improve --learning-rate nan": Case(
        ["self-improve", "--model", "{model}", "--output-dir", "{d}/s", "--learning-rate", "nan"], "learning_rate", absent=("s",)
    ),
    "sft --model missing": Case(
        ["sft", "--model", "{d}/nope", "--data", "{d}/t.jsonl", "--output-dir", "{d}/s"], "does not exist", {"t.jsonl": TASKS}, ("s",)
    ),
    "sft --model hub id offline": Case(
        ["sft", "--model", "nobody/no-such-model", "--data", "{d}/t.jsonl", "--output-dir", "{d}/s"],
        "neither cached",
        {"t.jsonl": TASKS},
        ("s",),
    ),
    "ppo --model missing": Case(["ppo", "--model", "{d}/nope", "--output-dir", "{d}/r"], "does not exist", absent=("r",)),
    "grpo --model hub id offline": Case(
        ["grpo", "--model", "nobody/no-such-model", "--output-dir", "{d}/r"], "neither cached", absent=("r",)
    ),
    "ppo --model a folder without weights": Case(
        ["ppo", "--model", "{d}/m", "--output-dir", "{d}/r"], "no weights", {"m/config.json": "{model-config}"}, ("r",)
    ),
    "eval --prompt-style chat without a chat template": Case(
        [*EVAL, "--tasks", "{d}/t.jsonl", "--output", "{d}/r.json", "--prompt-style", "chat"],
        "no chat template",
        {"t.jsonl": TASKS},
        ("r.json",),
    ),
    "eval --prompt-style nope": Case(
        [*EVAL, "--tasks", "{d}/t.jsonl", "--output", "{d}/r.json", "--prompt-style", "nope"],
        "prompt_style",
        {"t.jsonl": TASKS},
        ("r.json",),
    ),
    "eval --set temperature=nan": Case(
        [*EVAL, "--tasks", "{d}/t.jsonl", "--output", "{d}/r.json", "--set", "temperature=nan"],
        "temperature",
        {"t.jsonl": TASKS},
        ("r.json",),
    ),
    "ppo --set temperature=nan": Case(
        ["ppo", "--model", "{model}", "--output-dir", "{d}/r", "--set", "temperature=nan"], "temperature", absent=("r",)
    ),
    "ppo --set temperature=inf": Case(
        ["ppo", "--model", "{model}", "--output-dir", "{d}/r", "--set", "temperature=inf"], "finite", absent=("r",)
    ),
    "ppo --set kl_coef=inf": Case(["ppo", "--model", "{model}", "--output-dir", "{d}/r", "--set", "kl_coef=inf"], "finite", absent=("r",)),
    "grpo --trl-set unknown key": Case([*TRL, "--trl-set", "num_generatoins=4"], "did you mean num_generations", absent=("run",)),
    "grpo --trl-set wrong type": Case([*TRL, "--trl-set", "num_generations=four"], "expects a int", absent=("run",)),
    "grpo --trl-set use_vllm without vllm": Case([*TRL, "--trl-set", "use_vllm=true"], "needs the vllm package", absent=("run",)),
    "grpo --trl-set num_generations not dividing": Case(
        [*TRL, "--trl-set", "num_generations=7"], "divide the generation batch", absent=("run",)
    ),
    "grpo --trl-set report_to wandb": Case([*TRL, "--trl-set", "report_to=[wandb]"], "pip install wandb", absent=("run",)),
    "grpo --trl-set output_dir": Case([*TRL, "--trl-set", "output_dir={d}/elsewhere"], "RUN/trl", absent=("run", "elsewhere")),
    # 8. A corrupt record says what to delete.
    "pretrain over a corrupt pretrain.json": Case(
        ["pretrain", "--bases-dir", "{d}/b", "--no-gates", "--quiet"], "delete", {"b/seed-0/pretrain.json": '{"seed": 0, "arch'}
    ),
    "experiment over a corrupt experiment.json": Case(
        ["experiment", "--config", "organism", "--output-dir", "{d}/e"], "delete it", {"e/experiment.json": '{"conditions": ['}
    ),
    # 9. --push-to-hub offline: said before anything is trained or written.
    "ppo --push-to-hub offline": Case(
        ["ppo", "--model", "{model}", "--output-dir", "{d}/r", "--push-to-hub", "me/x"], "offline", absent=("r",)
    ),
    "generate --push-to-hub offline": Case(
        ["generate", "-n", "2", "--split", "train", "-o", "{d}/t.jsonl", "--push-to-hub", "me/x"], "offline", absent=("t.jsonl",)
    ),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from runtime.models import init_model

    root = tmp_path_factory.mktemp("models")
    return {"model": init_model(root / "qwen2", "qwen2", "tiny"), "llama": init_model(root / "llama", "llama", "tiny")}


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


def make_files(root: Path, files: dict[str, str], models: dict[str, Path]) -> None:
    from countdown_env import generate_tasks, write_tasks

    for name, text in files.items():
        path = root / name
        if text in ("{model}", "{llama}"):
            shutil.copytree(models[text.strip("{}")], path)
        elif name.endswith("/"):
            path.mkdir(parents=True)
        elif text == "{test5}":
            write_tasks(generate_tasks(5, seed=0, preset="tiny", split="test"), path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text((models["model"] / "config.json").read_text() if text == "{model-config}" else text)


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_fault_is_one_line_and_loses_nothing(
    name: str, tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory stays here
    make_files(tmp_path, case.files, models)
    before = snapshot(tmp_path)
    argv = [a.replace("{d}", str(tmp_path)).replace("{model}", str(models["model"])) for a in case.argv]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == case.code, err
    assert len(lines) == 1 and case.message in lines[0], err
    assert "Traceback" not in err
    after = snapshot(tmp_path)
    assert {p: after.get(p) for p in before} == before, "an existing file changed"
    assert not [p for p in after if p.name.endswith(".tmp")], "a temporary file was left behind"
    left = [a for a in case.absent if (tmp_path / a).exists()]
    assert not left, f"a failed command wrote {left}"


# ---- the mechanisms behind the table ------------------------------------------------------------


LOCKED = {  # a command on a folder another process is writing: refused at once, nothing written
    "experiment": ["experiment", "--config", "organism", "--output-dir", "{d}/e"],
    "ppo": ["ppo", "--model", "{model}", "--output-dir", "{d}/e", "--max-steps", "1", "--quiet"],
    "sft": ["sft", "--model", "{model}", "--data", "{d}/t.jsonl", "--output-dir", "{d}/e", "--max-steps", "1", "--quiet"],
}


@pytest.mark.parametrize("command", list(LOCKED))
def test_a_second_process_on_a_folder_is_refused(
    command: str, tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two processes on one run or experiment folder: the second is refused (the first holds the folder's lock)."""
    import subprocess
    import sys

    (tmp_path / "t.jsonl").write_text(TASKS)
    holder = subprocess.Popen(  # another process holding the lock, as a running command does
        [sys.executable, "-c", f"from runtime.run_dir import lock_folder\nwith lock_folder({str(tmp_path / 'e')!r}):\n"
         "    print('locked', flush=True)\n    import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = snapshot(tmp_path)
        code = main([a.replace("{d}", str(tmp_path)).replace("{model}", str(models["model"])) for a in LOCKED[command]])
        err = capsys.readouterr().err
        assert code == 2 and "in use by another process" in err, err
        assert snapshot(tmp_path) == before, "the refused command wrote into the folder"
    finally:
        holder.kill()
        holder.wait()
    from runtime.run_dir import lock_folder

    with lock_folder(tmp_path / "e"):  # the kernel released it with the process: a crashed run never locks its folder
        pass


def test_metrics_rows_are_on_disk_as_they_are_logged(tmp_path: Path) -> None:
    """sft (and pretrain, priming, self-improve): a step's row is on disk before the next step starts,
    and its evaluation, logged later in the same step, joins the same row."""
    from countdown_env.files import read_jsonl
    from priming.sft import MetricsRows

    path = tmp_path / "metrics.jsonl"
    rows = MetricsRows(path)
    rows.add(10, {"train/loss": 1.0})
    assert read_jsonl(path) == [{"step": 10, "train/loss": 1.0}]  # a kill here (after the checkpoint) keeps it
    rows.add(10, {"eval/loss": 2.0})
    rows.add(10, {"eval/accuracy": 0.5})
    assert read_jsonl(path) == [{"step": 10, "train/loss": 1.0, "eval/loss": 2.0, "eval/accuracy": 0.5}]
    rows.add(20, {"train/loss": 0.5})
    assert [r["step"] for r in read_jsonl(path)] == [10, 20]
    resumed = MetricsRows(path)  # a resumed run appends its own rows
    resumed.add(30, {"train/loss": 0.25})
    assert [r["step"] for r in read_jsonl(path)] == [10, 20, 30]


def test_analyze_maps_trl_checkpoints_to_our_steps(tmp_path: Path) -> None:
    """GRPO/RLOO with 2 optimiser steps per step of ours: trl/checkpoint-2 is step 1, checkpoint-4 step 2."""
    from lab.analysis.run import plan, run_checkpoints

    trl = {"steps_per_generation": 4, "num_iterations": 1, "gradient_accumulation_steps": 2, "save_steps": 2}
    (tmp_path / "config.json").write_text(json.dumps({"model": "m", "algo": "grpo", "save_every": 1, "trl": trl}))
    for n in (2, 4):
        (tmp_path / "trl" / f"checkpoint-{n}").mkdir(parents=True)
        (tmp_path / "trl" / f"checkpoint-{n}" / "config.json").write_text("{}")
    rows = [{"step": s, "eval/accuracy": 0.1} for s in (0, 1, 2)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_checkpoints(tmp_path) == {1: tmp_path / "trl" / "checkpoint-2", 2: tmp_path / "trl" / "checkpoint-4"}
    todo = plan(tmp_path, "base")
    assert sorted(todo.models) == [0, 1, 2] and todo.skipped == []


def test_analyze_finds_a_relative_start_model_from_another_folder(
    tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run records its start model relative to where it ran; analyze run from elsewhere still finds it."""
    from lab.analysis.run import start_model

    shutil.copytree(models["model"], tmp_path / "runs" / "base")
    run = tmp_path / "runs" / "exp" / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "runs/base"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert start_model(run) == str(tmp_path / "runs" / "base")


def test_export_verl_says_what_it_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Train tasks that are test tasks are left out with a note, never silently."""
    from countdown_env import generate_tasks, write_tasks

    test = generate_tasks(3, seed=0, preset="tiny", split="test")
    train = generate_tasks(4, seed=0, preset="tiny", split="train")
    write_tasks([*test, *train], tmp_path / "mixed.jsonl")
    argv = [
        "export-verl",
        "--output-dir",
        str(tmp_path / "v"),
        "--tasks",
        str(tmp_path / "mixed.jsonl"),
        "--num-test",
        "3",
        "--task-preset",
        "tiny",
    ]
    assert main(argv) == 0
    assert "3 of the 7 train tasks given are test tasks" in capsys.readouterr().err
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "v" / "train.parquet").num_rows == 4


def test_ppo_checks_the_configs_own_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --model, the preset's model (a hub id, offline here) is checked before anything is written."""
    code = main(["ppo", "--config", "ppo-paper-3b", "--output-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "the config's model Qwen/Qwen2.5-3B" in err, err
    assert not (tmp_path / "r").exists()


def test_valid_trl_options_pass_the_check() -> None:
    """The --trl-set check refuses only what TRL cannot take: plain options of the right type go through."""
    from lab.commands.rl import check_trl_overrides
    from rl.config import load_config

    config = load_config("ppo-tiny-cpu", {"model": "m"})
    good = {"beta": 0.0, "use_vllm": False, "report_to": "none", "logging_steps": 1, "save_strategy": "steps",
            "max_completion_length": 64, "num_generations": config.rollouts_per_prompt, "learning_rate": 1e-5}  # fmt: skip
    for algo in ("grpo", "rloo"):
        check_trl_overrides(algo, good, config)
