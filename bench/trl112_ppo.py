"""TRL 1.12's experimental PPOTrainer on the bench's settings (runs in bench/.venv-trl112).

Prints one JSON line: {"s_per_step": ..., "mean_length": ...}. Called by `ppo_bench.py`.

TRL's PPOTrainer takes a reward *model*: it calls `getattr(rm, rm.base_model_prefix)(input_ids=...,
output_hidden_states=True, ...)`, then `rm.score(hidden_states[-1])`, and reads the score at
each sequence's last non-pad token. `ScorerRewardModel` satisfies that contract with our
scorer: its backbone decodes each prompt + completion, scores the completion with
`countdown_env.score_response` (strict ending, as in our `tiny-cpu` config) and returns the
reward as a one-channel "hidden state"; `score` is the identity.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from types import SimpleNamespace

import torch
from torch import nn

from countdown_env import Rules, Task, generate_tasks, render_prompt, score_response

PROMPT = re.compile(r"Numbers: ([\d ]+)\nTarget: (\d+)\n")


class _Backbone(nn.Module):
    def __init__(self, tokenizer, rules: Rules) -> None:
        super().__init__()
        self.tokenizer, self.rules = tokenizer, rules

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_) -> SimpleNamespace:
        rewards = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
        for i, text in enumerate(self.tokenizer.batch_decode(input_ids, skip_special_tokens=True)):
            match = PROMPT.search(text)
            if match is None:
                continue
            task = Task(tuple(int(n) for n in match.group(1).split()), int(match.group(2)))
            rewards[i] = score_response(text[match.end() :], task, self.rules).reward
        hidden = rewards[:, None, None].expand(-1, input_ids.shape[1], 1).contiguous()
        return SimpleNamespace(hidden_states=(hidden,))


class ScorerRewardModel(nn.Module):
    """Our scorer behind the reward-model interface TRL 1.12's PPOTrainer calls."""

    base_model_prefix = "backbone"

    def __init__(self, tokenizer, rules: Rules) -> None:
        super().__init__()
        self.backbone = _Backbone(tokenizer, rules)
        self.score = nn.Identity()
        self._dummy = nn.Parameter(torch.zeros(()), requires_grad=False)  # TRL moves it with .to(device)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--rollouts", type=int, default=4)
    p.add_argument("--response_length", type=int, default=64)
    p.add_argument("--mini_batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()

    import datasets
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, dtype=torch.float32)
    value.config.pad_token_id = tokenizer.pad_token_id
    rules = Rules(strict_ending=True)
    tasks = generate_tasks(500, seed=0, preset="tiny", split="train")
    batch = args.prompts * args.rollouts
    # TRL's PPO has no "rollouts per prompt": repeat each prompt to get the same 64 completions per step.
    prompts = [render_prompt(t, "compact", rules) for t in tasks for _ in range(args.rollouts)]
    ds = datasets.Dataset.from_dict({"input_ids": [tokenizer(x, add_special_tokens=False).input_ids for x in prompts]})
    config = PPOConfig(
        output_dir="/tmp/trl112-ppo", report_to="none", per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_mini_batches=batch // args.mini_batch, num_ppo_epochs=1, response_length=args.response_length, stop_token="eos",
        learning_rate=3e-5, kl_coef=0.001, cliprange=0.2, cliprange_value=0.2, gamma=1.0, lam=1.0, whiten_rewards=False,
        total_episodes=batch * args.steps, local_rollout_forward_batch_size=batch, num_sample_generations=0, save_strategy="no",
        logging_steps=1, missing_eos_penalty=None, seed=0, bf16=False, gradient_checkpointing=False, dataloader_drop_last=True,
        temperature=1.0, vf_coef=0.1,
    )  # fmt: skip
    log_times: list[float] = []
    finished: list[float] = []

    class Timer(TrainerCallback):
        """PPOTrainer logs once per PPO step: the time between two logs is one step."""

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "objective/scores" in logs:
                log_times.append(time.perf_counter())
                finished.append(float(logs["val/num_eos_tokens"]) / batch)

    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref, reward_model=ScorerRewardModel(tokenizer, rules),
                         train_dataset=ds, value_model=value, callbacks=[Timer()])  # fmt: skip
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    # Differences between consecutive logs skip the first step (warm-up), as for ours.
    diffs = [b - a for a, b in zip(log_times, log_times[1:], strict=False)][max(0, args.warmup - 1) :]
    print(json.dumps({"s_per_step": sum(diffs) / len(diffs), "steps_timed": len(diffs), "total_seconds": total,
                      "finished_rate": sum(finished) / len(finished)}))  # fmt: skip


if __name__ == "__main__":
    main()
