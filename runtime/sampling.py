"""The one path from tasks to scored completions: render -> generate -> score.

    tasks --Prompt.render--> prompt texts --runtime.generation.generate--> completions --Prompt.score--> Scores

Every place that samples a model on Countdown tasks goes through `sample_and_score`: PPO rollouts
(`rl.rollout.collect`, whose prompts are the env's observations), evaluation (`rl.evaluate`), the
analysis (`lab.analysis.run`), self-improvement (`lab.analysis.self_improve`), the organism's gates
(`organism.pretrain.evaluate_base`) and SFT's held-out accuracy (`priming.sft`). What differs between
them is a keyword: greedy or sampled; a local seed or the caller's RNG; batches in the tasks' order or
by prompt length; tensors for a later backward pass or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from countdown_env import Score, Task
from runtime.generation import Generation, generate
from runtime.prompt import Prompt


@dataclass(frozen=True)
class Sample:
    """One scored completion."""

    task: Task
    prompt: str
    """The prompt text the model continued."""
    text: str
    """The completion (special tokens dropped)."""
    score: Score
    finished: bool
    """The completion ended with EOS (False: cut at `max_new_tokens`)."""
    length: int
    """Tokens generated, the EOS included."""

    def row(self, **fields: Any) -> dict[str, Any]:
        """The completion row evaluation writes (eval_completions.jsonl, `eval --completions`), then `fields`."""
        s = self.score
        return {
            "text": self.text,
            "numbers": list(self.task.numbers),
            "target": self.task.target,
            "reward": s.reward,
            "correct": s.correct,
            "well_formed": s.well_formed,
            "outcome": s.outcome.value,
            "answer": s.answer,
            "finished": self.finished,
            "length": self.length,
            **fields,
        }


@dataclass
class Scored:
    """What `sample_and_score` returns: the batch as tensors, and one `Sample` per task, in the tasks' order."""

    generation: Generation | None
    """The prompts and completions as tensors (rollouts and the analysis's KL read them); None for no tasks."""
    samples: list[Sample]

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.samples]

    @property
    def scores(self) -> list[Score]:
        return [s.score for s in self.samples]

    @property
    def correct(self) -> list[bool]:
        return [s.score.correct for s in self.samples]

    @property
    def accuracy(self) -> float:
        """Share of correct completions (0.0 for none)."""
        return sum(self.correct) / len(self.samples) if self.samples else 0.0


def sample_and_score(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    prompt: Prompt,
    *,
    max_new_tokens: int,
    do_sample: bool = True,
    temperature: float = 1.0,
    batch_size: int = 0,
    seed: int | None = None,
    prompts: Sequence[str] | None = None,
    by_length: bool = False,
    return_logprobs: bool = False,
    inference_mode: bool = True,
    progress: bool = False,
) -> Scored:
    """Complete one prompt per task with `model` and score each completion under `prompt.rules`.

    - `prompts`: the prompt texts, when the caller has them (the env's observations, a dataset's
      `prompt` column); by default `prompt.render(task, tokenizer)`.
    - `do_sample`, `temperature`: pure temperature sampling, or greedy (`runtime.generation.generate`).
    - `seed`: None draws from torch's RNG as it stands (PPO rollouts: the loop reseeds it every step);
      an int draws from a forked RNG seeded with it, so the caller's state is untouched and the same
      seed gives the same samples (evaluation after a resume, the analysis at every step).
    - `by_length`: batches of similar-length prompts (less padding); the results come back in the tasks' order.
    - `inference_mode`: False when the generation's tensors feed a backward pass (PPO's update), which
      autograd refuses for tensors made under `torch.inference_mode`.
    The model samples in eval mode and is left in the mode it was in.
    """
    texts = list(prompts) if prompts is not None else [prompt.render(task, tokenizer) for task in tasks]
    if len(texts) != len(tasks):
        raise ValueError(f"{len(texts)} prompts for {len(tasks)} tasks")
    if not texts:
        return Scored(None, [])
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if by_length else list(range(len(texts)))
    with _sampling(model, seed, inference_mode):
        gen = generate(
            model, tokenizer, [texts[i] for i in order], max_new_tokens, prompt_style=prompt.style, do_sample=do_sample,
            temperature=temperature, batch_size=batch_size, return_logprobs=return_logprobs, progress=progress,
        )  # fmt: skip
    if by_length:
        gen = reorder(gen, order)
    finished, lengths = gen.finished.tolist(), gen.lengths.tolist()
    samples = [
        Sample(task, text, completion, prompt.score(completion, task), bool(done), int(length))
        for task, text, completion, done, length in zip(tasks, texts, gen.texts, finished, lengths, strict=True)
    ]
    return Scored(gen, samples)


@contextlib.contextmanager
def _sampling(model: Any, seed: int | None, inference_mode: bool) -> Iterator[None]:
    """Eval mode; with `seed`, a forked RNG (the sampling device's; the CPU's always) seeded with it."""
    was_training = model.training
    model.eval()
    rng: Any = contextlib.nullcontext()
    if seed is not None:
        device = next(model.parameters()).device
        rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    try:
        with rng, torch.inference_mode() if inference_mode else contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        model.train(was_training)


def reorder(gen: Generation, order: Sequence[int]) -> Generation:
    """`gen`, whose row i answers prompt `order[i]`, with its rows put back in the prompts' order."""
    back = torch.empty(len(order), dtype=torch.long, device=gen.query.device)
    back[torch.tensor(list(order), dtype=torch.long, device=back.device)] = torch.arange(len(order), device=back.device)
    return Generation(
        query=gen.query[back],
        query_mask=gen.query_mask[back],
        response=gen.response[back],
        response_mask=gen.response_mask[back],
        finished=gen.finished[back],
        texts=[gen.texts[i] for i in back.tolist()],
        logprobs=gen.logprobs[back] if gen.logprobs is not None else None,
    )
