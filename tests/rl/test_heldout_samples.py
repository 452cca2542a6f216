"""Held-out completions sampled at T=1 at each evaluation (`eval_samples`), as the study judged them."""

from __future__ import annotations

import json

from lab.cli import main
from rl.config import PPOConfig
from rl.evaluate import evaluate_policy
from rl.train import split_tasks
from runtime.models import load_model, load_tokenizer
from tests.rl.conftest import fast_args


def test_eval_samples_logs_t1_samples_instead_of_greedy_and_reports_sample_accuracy(tiny_model, tmp_path):
    model, tokenizer = load_model(tiny_model), load_tokenizer(tiny_model)
    greedy_log, sample_log = tmp_path / "greedy.jsonl", tmp_path / "sample.jsonl"
    base = {"num_eval_tasks": 6, "max_new_tokens": 12, "seed": 3}
    _, tasks = split_tasks(PPOConfig(**base))
    greedy = evaluate_policy(model, tokenizer, tasks, PPOConfig(**base), log=greedy_log, step=0)
    sampled = evaluate_policy(model, tokenizer, tasks, PPOConfig(**base, eval_samples=4), log=sample_log, step=5)
    assert "eval/sample_accuracy" not in greedy and {"eval/sample_accuracy", "eval/sample_response_length"} <= set(sampled)
    assert sampled["eval/accuracy"] == greedy["eval/accuracy"]  # the greedy numbers are still measured
    greedy_rows = [json.loads(line) for line in greedy_log.open()]
    rows = [json.loads(line) for line in sample_log.open()]
    assert len(greedy_rows) == 6 and {r["mode"] for r in greedy_rows} == {"greedy"}
    assert len(rows) == 4 and all(r["mode"] == "sample" and r["temperature"] == 1.0 and r["step"] == 5 for r in rows)
    assert [r["target"] for r in rows] == [t.target for t in tasks[:4]]
    # Seeded by (seed, step): the same samples again (a resumed run), other samples at another step.
    again = tmp_path / "again.jsonl"
    evaluate_policy(model, tokenizer, tasks, PPOConfig(**base, eval_samples=4), log=again, step=5)
    assert [json.loads(line)["text"] for line in again.open()] == [r["text"] for r in rows]


def test_ppo_run_with_eval_samples(tiny_model, tmp_path):
    out = tmp_path / "run"
    assert main(fast_args(tiny_model, out, "--set", "total_steps=2", "--set", "eval_samples=3")) == 0
    rows = [json.loads(line) for line in (out / "eval_completions.jsonl").open()]
    assert sorted({r["step"] for r in rows}) == [0, 2] and all(r["mode"] == "sample" for r in rows) and len(rows) == 6
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert all("eval/sample_accuracy" in m for m in metrics if "eval/accuracy" in m)
