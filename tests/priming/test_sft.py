"""SFT through TRL on the tiny model: data loading, config validation, learning, saving, resuming, LoRA, CLI."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from countdown_env.rules import format_completion, render_prompt
from countdown_env.solver import solve
from countdown_env.tasks import Task, generate_tasks
from priming.sft import TRL_FIELDS_SET, SFTRunConfig, build_job, last_checkpoint, namespaced, run_sft
from priming.sft_data import check_prompt_style, load_sft_data, recorded_prompt_style, tasks_of


def _trace_rows(tasks: list[Task]) -> list[dict]:
    """Simple correct traces built from the solver (stand-ins for priming.generate_traces)."""
    rows = []
    for task in tasks:
        expression = solve(task.numbers, task.target)
        think = f"{expression} = {task.target}, which is the target."
        rows.append({"numbers": list(task.numbers), "target": task.target, "text": format_completion(think, expression)})
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from runtime.models import init_model

    return init_model(tmp_path_factory.mktemp("model") / "tiny", "qwen2", "tiny")


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    return _write_jsonl(
        tmp_path_factory.mktemp("data") / "traces.jsonl", _trace_rows(generate_tasks(48, seed=0, preset="tiny", split="train"))
    )


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory) -> Path:
    """A prompt/completion DatasetDict with train/test splits, as `countdown-lab prime` saves it."""
    import datasets

    def split(name: str, n: int) -> datasets.Dataset:
        rows = _trace_rows(generate_tasks(n, seed=1, preset="tiny", split=name))
        return datasets.Dataset.from_list(
            [
                {
                    "prompt": render_prompt(Task.from_dict(r), "compact"),
                    "completion": r["text"],
                    "numbers": r["numbers"],
                    "target": r["target"],
                }
                for r in rows
            ]
        )

    path = tmp_path_factory.mktemp("prime") / "dataset"
    datasets.DatasetDict({"train": split("train", 48), "test": split("test", 6)}).save_to_disk(str(path))
    return path


def _config(model: Path, data: Path, out: Path, **overrides) -> SFTRunConfig:
    base = {"max_steps": 30, "logging_steps": 2, "save_steps": 10, "eval_samples": 4, "max_new_tokens": 24}
    return SFTRunConfig.from_preset("tiny-cpu", model=str(model), data=str(data), output_dir=str(out), **{**base, **overrides})


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---- data ------------------------------------------------------------------------------


def test_trace_rows_get_the_shared_prompt_template(traces):
    data = load_sft_data(traces, prompt_style="compact")
    row = data["train"][0]
    task = Task(tuple(row["numbers"]), row["target"])
    assert row["prompt"] == render_prompt(task, "compact")
    assert row["completion"].startswith("<think>") and row["completion"].endswith("</answer>")
    assert "test" not in data
    assert load_sft_data(traces, prompt_style="tinyzero")["train"][0]["prompt"] == render_prompt(task, "tinyzero")


def test_saved_dataset_and_jsonl_directory_are_read(saved_dataset, tmp_path):
    data = load_sft_data(saved_dataset)
    assert set(data) == {"train", "test"} and len(data["test"]) == 6
    assert tasks_of(data["test"])[0] == Task(tuple(data["test"][0]["numbers"]), data["test"][0]["target"])
    # The parent folder holds exactly one saved dataset: found too.
    assert len(load_sft_data(saved_dataset.parent)["train"]) == 48
    # A directory of train.jsonl/test.jsonl with ready prompt/completion rows (no tasks).
    _write_jsonl(tmp_path / "train.jsonl", [{"prompt": "Numbers: 1 2\nTarget: 3\n", "completion": "<answer>1+2</answer>"}] * 3)
    _write_jsonl(tmp_path / "test.jsonl", [{"prompt": "Numbers: 1 2\nTarget: 2\n", "completion": "<answer>1*2</answer>"}])
    data = load_sft_data(tmp_path)
    assert len(data["train"]) == 3 and tasks_of(data["test"]) is None


def test_reads_what_prime_writes(tmp_path):
    from lab.cli import main

    out = tmp_path / "prime"
    args = ["prime", "-c", "only_backtracking", "-o", str(out), "--preset", "tiny", "--num", "40", "--prompt-style", "compact"]
    assert main([*args, "--trace-style", "compact"]) == 0
    data = load_sft_data(out)
    assert set(data) == {"train", "test"} and len(data["train"]) + len(data["test"]) == 40
    row = data["train"][0]
    assert row["prompt"] == render_prompt(Task(tuple(row["numbers"]), row["target"]), "compact")
    assert "<answer>" in row["completion"]


def test_prompt_style_of_prime_data_must_match_the_sft_config(tiny_model, tmp_path):
    from lab.cli import main

    out = tmp_path / "prime"
    assert main(["prime", "-c", "only_backtracking", "-o", str(out), "--preset", "tiny", "--num", "12"]) == 0  # compact by default
    assert recorded_prompt_style(out) == recorded_prompt_style(out / "dataset") == recorded_prompt_style(out / "train.jsonl") == "compact"
    paper = SFTRunConfig.from_preset("paper-3b", model=str(tiny_model), data=str(out / "dataset"), output_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="countdown-lab prime --prompt-style tinyzero.*sft --prompt-style compact"):
        build_job(paper, progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was built
    check_prompt_style(out, "compact")  # the matching style passes
    check_prompt_style(tmp_path / "elsewhere.jsonl", "tinyzero")  # data without prime's metadata is not judged


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "<answer>1</answer>"}, "needs 'prompt' and 'completion'"),
        ({"prompt": [{"role": "user", "content": "hi"}], "completion": "x"}, "must be strings"),
    ],
)
def test_bad_rows_are_refused_with_a_reason(tmp_path, row, message):
    with pytest.raises(ValueError, match=message):
        load_sft_data(_write_jsonl(tmp_path / "bad.jsonl", [row]))


def test_missing_or_empty_data_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_sft_data(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="holds no SFT data"):
        load_sft_data(tmp_path)


# ---- config ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_steps": 0}, "max_steps"),
        ({"lr_scheduler": "exotic"}, "lr_scheduler"),
        ({"prompt_style": "chatty"}, "prompt_style"),
        ({"lora_r": -1}, "lora_r"),
        ({"max_length": 4}, "max_length"),
        ({"extra": {"num_train_epochs": 2}}, "extra must not set"),
        ({"extra": {"report_to": "wandb"}}, "extra must not set"),
        ({"extra": {"seed": 1}}, "extra must not set"),
        ({"extra": {"eval_strategy": "epoch"}}, "extra must not set"),
        ({"model": ""}, "model is required"),
    ],
)
def test_config_validation(overrides, message):
    base = {"model": "m", "data": "d", "output_dir": "o"}
    with pytest.raises(ValueError, match=message):
        SFTRunConfig(**{**base, **overrides})


def test_task_preset_gives_the_rules_sft_scores_with():
    from countdown_env import DEFAULT_RULES, preset_rules

    base = {"model": "m", "data": "d", "output_dir": "o"}
    assert SFTRunConfig(**base).task_preset == "tinyzero" and SFTRunConfig(**base).prompt.rules == DEFAULT_RULES
    organism = SFTRunConfig(**base, task_preset="organism", prompt_style="compact")
    assert organism.prompt.rules == preset_rules("organism") and organism.prompt.style == "compact"
    with pytest.raises(ValueError, match="task_preset"):
        SFTRunConfig(**base, task_preset="nope")


def test_held_out_accuracy_is_scored_under_the_task_presets_rules(monkeypatch):
    """A completion that leaves a number unused: correct under `classic` (numbers at most once), wrong under the default."""
    from types import SimpleNamespace

    import torch

    import runtime.sampling
    from priming.sft import HeldOut, evaluate_generation
    from runtime.generation import Generation
    from runtime.prompt import Prompt

    def generate(model, tokenizer, prompts, max_new_tokens, **kwargs):
        n = len(prompts)
        ones = torch.ones(n, 1, dtype=torch.long)
        return Generation(ones, ones, ones, ones.float(), torch.ones(n, dtype=torch.bool), ["<answer>3+5</answer>"] * n)

    monkeypatch.setattr(runtime.sampling, "generate", generate)
    model = torch.nn.Linear(1, 1)
    tokenizer = lambda text, add_special_tokens: SimpleNamespace(input_ids=list(text))  # noqa: E731
    held_out = HeldOut([Task((3, 5, 7), 8)], ["Numbers: 3 5 7\nTarget: 8\n"])
    classic = evaluate_generation(model, tokenizer, held_out, Prompt.of_preset("classic", "compact"), max_new_tokens=8)
    default = evaluate_generation(model, tokenizer, held_out, Prompt.of_preset("tinyzero", "compact"), max_new_tokens=8)
    assert (classic["eval/accuracy"], default["eval/accuracy"]) == (1.0, 0.0)


def test_presets():
    paper = SFTRunConfig.from_preset("paper-3b", model="m", data="d", output_dir="o")
    assert (paper.epochs, paper.learning_rate, paper.lr_scheduler, paper.warmup_ratio, paper.weight_decay) == (
        5.0,
        1e-5,
        "cosine",
        0.1,
        0.01,
    )
    tiny = SFTRunConfig.from_preset("tiny-cpu", model="m", data="d", output_dir="o", learning_rate=None, seed=3)
    assert tiny.learning_rate == 2e-3 and tiny.batch_size == 16 and tiny.seed == 3 and tiny.preset == "sft-tiny-cpu"
    with pytest.raises(ValueError, match="unknown SFT preset"):
        SFTRunConfig.from_preset("huge", model="m", data="d", output_dir="o")
    with pytest.raises(ValueError, match="unknown SFT field"):
        SFTRunConfig.from_preset("tiny-cpu", model="m", data="d", output_dir="o", lr=1.0)


def test_trl_config_turns_off_bf16_and_checkpointing_on_cpu():
    import torch

    gpu = torch.cuda.is_available()
    trl_config = SFTRunConfig(model="m", data="d", output_dir="o").to_trl()
    # TRL's own defaults are bf16=True and gradient_checkpointing=True everywhere.
    assert trl_config.bf16 is (gpu and torch.cuda.is_bf16_supported()) and trl_config.gradient_checkpointing is gpu
    assert trl_config.use_cpu is not gpu  # DDP on CPU under torchrun needs use_cpu
    assert trl_config.completion_only_loss is True
    forced = SFTRunConfig(model="m", data="d", output_dir="o", bf16=False, gradient_checkpointing=True).to_trl()
    assert forced.bf16 is False and forced.gradient_checkpointing is True
    assert trl_config.get_warmup_steps(100) == 10 and trl_config.lr_scheduler_type.value == "cosine"


def test_extra_refuses_exactly_the_fields_to_trl_sets():
    from trl import SFTConfig

    config = SFTRunConfig(model="m", data="d", output_dir="o", eval_steps=5)
    set_by_us = set(config.trl_kwargs(SFTConfig, evaluate=True)) | set(config.trl_kwargs(SFTConfig, evaluate=False))
    assert set_by_us == TRL_FIELDS_SET - ({"activation_checkpointing"} - {f.name for f in fields(SFTConfig)})
    # Any other SFTConfig field passes through.
    assert SFTRunConfig(model="m", data="d", output_dir="o", extra={"packing": True}).to_trl().packing is True


def test_namespaced_metrics():
    logs = {"loss": 1.5, "eval_loss": 2.0, "train_loss": 1.7, "learning_rate": 1e-3, "note": "text"}
    assert namespaced(logs) == {"train/loss": 1.5, "eval/loss": 2.0, "train/mean_loss": 1.7, "train/learning_rate": 1e-3}


# ---- training ----------------------------------------------------------------------------


def test_trainer_masks_the_prompt_and_appends_eos(tiny_model, traces, tmp_path):
    job = build_job(_config(tiny_model, traces, tmp_path / "run"), progress=False)
    tokenizer = job.trainer.processing_class
    row = job.trainer.train_dataset[0]
    prompt_ids = tokenizer(load_sft_data(traces)["train"][0]["prompt"]).input_ids
    assert row["input_ids"][-1] == tokenizer.eos_token_id  # the model learns to stop
    n = len(prompt_ids)
    assert row["input_ids"][:n] == prompt_ids
    # Completion-only loss: the prompt's labels are ignored (-100), the completion's are its tokens.
    assert row["labels"] == [-100] * n + row["input_ids"][n:]
    assert job.trainer.args.bf16 is False and job.trainer.args.gradient_checkpointing is False


def test_tiny_sft_learns_saves_and_generates(tiny_model, saved_dataset, tmp_path):
    from runtime.generation import generate_completions
    from runtime.models import load_model, load_tokenizer

    run_dir = tmp_path / "run"
    result = run_sft(_config(tiny_model, saved_dataset, run_dir, eval_steps=15), progress=False)
    assert result.global_step == 30 and result.n_train == 48
    losses = [row["train/loss"] for row in _metrics(run_dir) if "train/loss" in row]
    assert losses[-1] < losses[0] - 0.5, losses
    evals = [row for row in _metrics(run_dir) if "eval/accuracy" in row]
    assert [row["step"] for row in evals] == [15, 30]  # every eval_steps, and at the end
    assert 0.0 <= result.final_eval["eval/accuracy"] <= 1.0 and result.final_eval["eval/loss"] > 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["learning_rate"] == 2e-3 and config["resolved"]["bf16"] is False and config["resolved"]["n_test"] == 6
    # The final model loads by path (the model folder or the run directory) and generates.
    model, tokenizer = load_model(run_dir), load_tokenizer(result.model_dir)
    prompts = [render_prompt(task, "compact") for task in generate_tasks(3, seed=2, preset="tiny", split="test")]
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=16)
    assert len(completions) == 3 and all(isinstance(c, str) and c for c in completions)


def test_resume_continues_from_the_last_checkpoint(tiny_model, traces, tmp_path):
    run_dir = tmp_path / "run"
    first = run_sft(_config(tiny_model, traces, run_dir, max_steps=10, save_steps=5), progress=False)
    assert first.global_step == 10 and (run_dir / "checkpoints" / "checkpoint-10").is_dir()
    # Rows past the checkpoint (and a line cut short by a crash) are dropped when resuming.
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 12, "train/loss": 9.0}\n{"step": 1')
    with pytest.raises(ValueError, match="pass --resume"):
        run_sft(_config(tiny_model, traces, run_dir, max_steps=16, save_steps=5), progress=False)
    second = run_sft(_config(tiny_model, traces, run_dir, max_steps=16, save_steps=5), resume=True, progress=False)
    assert second.resumed_from.endswith("checkpoint-10") and second.global_step == 16
    steps = [row["step"] for row in _metrics(run_dir)]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # continued, not restarted
    assert steps[0] == 1 and steps[-1] == 16


def test_length_balanced_steps_keep_their_rows_sort_them_and_resume_exactly(tiny_model, traces, tmp_path):
    import itertools
    import shutil

    import torch
    from safetensors.torch import load_file
    from transformers.trainer_pt_utils import BatchRebalanceSampler

    def config(out: Path, **overrides) -> SFTRunConfig:
        return _config(tiny_model, traces, out, batch_size=2, gradient_accumulation_steps=4, length_balanced=True,
                       eval_samples=0, max_steps=6, save_steps=3, **overrides)  # fmt: skip

    job = build_job(config(tmp_path / "probe", seed=5), progress=False)
    sampler = job.trainer._get_train_sampler()
    assert isinstance(sampler, BatchRebalanceSampler) and sampler.seed == 5  # the run's seed, not transformers' 42
    lengths = [len(row["input_ids"]) for row in job.trainer.train_dataset]
    micro = list(sampler)
    steps = [micro[k : k + 4] for k in range(0, len(micro), 4)]
    assert len(steps) == 6 and sorted(i for step in steps for m in step for i in m) == list(range(48))  # each row once
    for step in steps:
        assert sum(map(len, step)) == 8  # a step is still 8 rows
        spans = sorted((min(lengths[i] for i in m), max(lengths[i] for i in m)) for m in step)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # cut from the step's rows sorted by length
    other = list(build_job(config(tmp_path / "probe7", seed=7), progress=False).trainer._get_train_sampler())
    rows_of = lambda ms: [sorted(i for m in ms[k : k + 4] for i in m) for k in range(0, len(ms), 4)]  # noqa: E731
    assert rows_of(other) != rows_of(micro)  # another seed draws other steps

    whole = run_sft(config(tmp_path / "whole"), progress=False)
    # a run stopped after its step-3 checkpoint and resumed makes the same weights as one that never stopped
    (tmp_path / "cut" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "checkpoint-3", tmp_path / "cut" / "checkpoints" / "checkpoint-3")
    resumed = run_sft(config(tmp_path / "cut"), resume=True, progress=False)
    assert resumed.resumed_from.endswith("checkpoint-3") and resumed.global_step == whole.global_step == 6
    a, b = load_file(whole.model_dir / "model.safetensors"), load_file(resumed.model_dir / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("resume", [False, True])
def test_restart_of_a_run_killed_before_its_first_checkpoint(tiny_model, traces, tmp_path, capsys, resume):
    # What a run killed before its first save leaves: rows of its first steps, and the empty
    # checkpoints/ folder transformers creates as soon as the trainer is built.
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "train/loss": 9.0}\n{"step": 2, "train/loss": 8.0}\n{"step": 3')
    config = _config(tiny_model, traces, run_dir, max_steps=4, logging_steps=1, save_steps=100)
    assert last_checkpoint(config) is None  # the documented way to decide whether to resume
    result = run_sft(config, resume=resume, progress=False)
    assert result.global_step == 4 and result.resumed_from is None
    rows = _metrics(run_dir)
    assert [row["step"] for row in rows if "train/loss" in row] == [1, 2, 3, 4]  # started afresh, old rows gone
    assert all(row.get("train/loss") != 9.0 for row in rows)
    assert ("starting from scratch" in capsys.readouterr().err) is resume


def test_lora_run_saves_a_merged_model(tiny_model, traces, tmp_path):
    from runtime.models import count_parameters, load_model

    result = run_sft(_config(tiny_model, traces, tmp_path / "run", max_steps=4, lora_r=4), progress=False)
    merged, base = load_model(result.model_dir), load_model(tiny_model)
    assert count_parameters(merged) == count_parameters(base)
    changed = [name for name, p in merged.named_parameters() if not (p == base.get_parameter(name)).all()]
    assert changed and all("proj" in name for name in changed)  # LoRA touched the linear layers only


def test_cli(tiny_model, traces, tmp_path, capsys):
    from lab.cli import main

    out = tmp_path / "cli"
    args = ["sft", "--model", str(tiny_model), "--data", str(traces), "--output-dir", str(out), "--config", "sft-tiny-cpu", "--quiet"]
    assert main([*args, "--max-steps", "3", "--save-steps", "3"]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    assert (out / "model" / "config.json").exists()
    assert main([*args, "--lr", "-1"]) == 2
    assert "learning_rate" in capsys.readouterr().err
