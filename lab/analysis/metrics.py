"""What the field measures about a checkpoint, as small functions: reflection, pass@k, distinct
solutions, KL to the base and hidden-state shift.

Three lines of work ask how training changes a model's reasoning, and each names its measures:
- long-CoT degradation: accuracy falls while responses grow longer and more reflective
  (`reflection_ratio`, `response_length`, split by correct and wrong answers; `degradation_flags`);
- self-improvement reversal: pass@1 rises while pass@k and the number of distinct solutions fall
  (`pass_at_k_curve`, `distinct_solutions`), each a mean over tasks with a 95% bootstrap interval over
  tasks (`Estimate`), and a change between two checkpoints tested against that noise (`paired_change`);
- drift from the base: RL moves a model little from its base, SFT far (`token_kl`, `hidden_shift`).

Text measures are pure Python; model measures take models and tensors and import torch lazily.
`lab.analysis.run` runs them over a run's checkpoints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from countdown_env import DEFAULT_RULES, Rules, canonical_form
from lab.pipeline.heldout import bootstrap
from rl.evaluate import pass_at_k

#: Reflection words and phrases, defined once (matched case-insensitively, on word boundaries).
#: Natural language from the long-CoT literature (self-checks, second thoughts, restarts) ...
REFLECTION_PHRASES = (
    "wait",
    "hmm",
    "actually",
    "alternatively",
    "however",
    "but",
    "check",
    "verify",
    "recheck",
    "re-check",
    "double-check",
    "double check",
    "let me try",
    "try again",
    "again",
    "mistake",
    "reconsider",
    "instead",
    "not right",
    "that's wrong",
    "no good",
)
#: ... and the model organism's own markers (priming/organism.py): a check ends each try with
#: `ok` or `no`, and `;` returns to the start numbers (backtracking).
ORGANISM_MARKERS = ("ok", "no", ";")
_REFLECTION = re.compile(
    r"(?<![\w-])(?:"
    + "|".join(re.escape(p) for p in sorted(REFLECTION_PHRASES + ORGANISM_MARKERS[:2], key=len, reverse=True))
    + r")(?![\w-])"
    r"|;",
    re.IGNORECASE,
)


def reflection_count(text: str) -> int:
    """How many reflection words or phrases (`REFLECTION_PHRASES`, `ORGANISM_MARKERS`) `text` has."""
    return len(_REFLECTION.findall(text))


def reflection_ratio(text: str) -> float:
    """Reflection words per word (words: whitespace-separated pieces, so `5*2=10` is one); 0 for empty text."""
    words = len(text.split())
    return reflection_count(text) / words if words else 0.0


def split_mean(values: Sequence[float], correct: Sequence[bool]) -> dict[str, float | None]:
    """Mean of `values` over all, correct and wrong items (None for an empty group)."""
    if len(values) != len(correct):
        raise ValueError(f"values and correct differ in length: {len(values)} != {len(correct)}")

    def mean(xs: list[float]) -> float | None:
        return float(np.mean(xs)) if xs else None

    return {
        "all": mean(list(values)),
        "correct": mean([v for v, c in zip(values, correct, strict=True) if c]),
        "wrong": mean([v for v, c in zip(values, correct, strict=True) if not c]),
    }


@dataclass(frozen=True)
class Estimate:
    """A mean over tasks and its 95% percentile bootstrap interval over tasks: the noise of measuring on a
    finite task set, which decides whether a change of a few points means anything."""

    value: float
    lo: float
    hi: float

    @property
    def outside_noise(self) -> bool:
        """For a change (`paired_change`): whether its interval excludes 0."""
        return not self.lo <= 0.0 <= self.hi


def mean_estimate(values: Sequence[float], seed: int = 0) -> Estimate:
    """The mean of per-task `values` (pass@k, distinct solutions, a difference) with its 95% interval.

    One bootstrap for the whole lab (`lab.pipeline.heldout.bootstrap`: 2,000 resamples of the tasks, seeded),
    so analyze's intervals and the experiment summary's are the same kind. The same seed for every measure
    of a step resamples the same tasks, so the intervals of a pass@k curve rise with k as the curve does."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("no tasks: an estimate needs at least one task's value")
    return Estimate(float(array.mean()), *bootstrap(array, seed))


def paired_change(before: Sequence[float], after: Sequence[float], seed: int = 0) -> Estimate:
    """`after - before` over the same tasks (in the same order), with the interval of the per-task
    differences: a task's own difficulty cancels, so it is narrower than the two intervals suggest.
    `.outside_noise` says whether the change is more than the task set's noise."""
    if len(before) != len(after):
        raise ValueError(f"a paired change needs the same tasks before and after, got {len(before)} and {len(after)}")
    return mean_estimate(np.asarray(after, dtype=float) - np.asarray(before, dtype=float), seed)


def default_ks(n: int) -> list[int]:
    """k = 1..n//2 (just 1 when n < 2): the pass@k a report shows from `n` samples per task.

    The unbiased estimator averages over the k-subsets of the n samples; as k nears n they overlap
    more and more (at k = n there is one: "is any sample correct"), so the estimate carries little
    more than one draw's information. Half the samples keeps every reported k well averaged."""
    return list(range(1, max(1, n // 2) + 1))


def task_pass_at_k(correct_counts: Sequence[int], n: int, k: int) -> np.ndarray:
    """Unbiased pass@k of each task (`n` samples, `c` correct); refuses k > n, which `n` samples cannot estimate."""
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n samples per task, got n={n}")
    return np.array([pass_at_k(n, c, k) for c in correct_counts], dtype=float)


def pass_at_k_curve(correct_counts: Sequence[int], n: int, ks: Iterable[int] | None = None) -> dict[int, float]:
    """Mean unbiased pass@k over tasks (each with `n` samples, `c` of them correct), for k = 1..n//2
    by default (`default_ks`); a k up to n is computed when asked for, a k above n refused."""
    if not correct_counts:
        raise ValueError("no tasks: pass@k needs at least one task's samples")
    return {k: float(task_pass_at_k(correct_counts, n, k).mean()) for k in (default_ks(n) if ks is None else ks)}


def pass_at_k_estimates(correct_counts: Sequence[int], n: int, ks: Iterable[int] | None = None, seed: int = 0) -> dict[int, Estimate]:
    """`pass_at_k_curve` with each k's 95% bootstrap interval over tasks."""
    if not correct_counts:
        raise ValueError("no tasks: pass@k needs at least one task's samples")
    return {k: mean_estimate(task_pass_at_k(correct_counts, n, k), seed) for k in (default_ks(n) if ks is None else ks)}


def distinct_solutions(answers: Iterable[str | None], rules: Rules = DEFAULT_RULES) -> int:
    """How many different solutions `answers` (a task's correct answers) hold, up to commutativity
    and associativity (`countdown_env.canonical_form`: `a+b` and `b+a` are one, `a-b` and `b-a` two)."""
    return len({form for a in answers if a is not None and (form := canonical_form(a, rules)) is not None})


@dataclass(frozen=True)
class Degradation:
    """Whether a step shows long-CoT degradation relative to the previous evaluated step."""

    step: int
    flagged: bool
    """Accuracy fell while both response length and reflection ratio rose."""
    accuracy_change: float
    length_change: float
    reflection_change: float


def degradation_flags(
    steps: Sequence[int], accuracy: Sequence[float], length: Sequence[float], reflection: Sequence[float]
) -> list[Degradation]:
    """One verdict per step after the first (series in step order): flagged when accuracy fell
    while length and reflection both rose since the previous step."""
    if not len(steps) == len(accuracy) == len(length) == len(reflection):
        raise ValueError("steps, accuracy, length and reflection must have the same length")
    out = []
    for i in range(1, len(steps)):
        da, dl, dr = accuracy[i] - accuracy[i - 1], length[i] - length[i - 1], reflection[i] - reflection[i - 1]
        out.append(Degradation(int(steps[i]), bool(da < 0 and dl > 0 and dr > 0), float(da), float(dl), float(dr)))
    return out


# ---- drift from the base (torch) ------------------------------------------------------


def token_kl(model: Any, base: Any, query: Any, query_mask: Any, response: Any, response_mask: Any, *, batch_size: int = 64) -> Any:
    """(B, T) exact KL(model || base) over the vocabulary at each response position, 0 on padding.

    Computed on `response` (the model's own samples, so the positions are the ones the model
    visits) with the full next-token distributions, not a one-sample estimate: non-negative, and
    exactly 0 when `model` is `base` (the same logits are subtracted from themselves).
    """
    import torch

    from runtime.logprobs import forward_response

    out = []
    with torch.inference_mode():
        for start in range(0, query.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            args = (query[rows], query_mask[rows], response[rows], response_mask[rows])
            logp = torch.log_softmax(forward_response(model, *args).float(), -1)
            logq = logp if base is model else torch.log_softmax(forward_response(base, *args).float(), -1)
            kl = (logp.exp() * (logp - logq)).sum(-1)
            out.append(kl * response_mask[rows])
    return torch.cat(out, 0)


def mean_hidden_states(
    model: Any, tokenizer: Any, prompts: Sequence[str], *, prompt_style: str | None = None, batch_size: int = 64
) -> np.ndarray:
    """(N, H) last-layer hidden states averaged over each prompt's tokens (padding left out)."""
    import torch

    from runtime.generation import tokenize_prompts

    out = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            enc = tokenize_prompts(tokenizer, prompts[start : start + batch_size], prompt_style)
            mask = enc.attention_mask
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            hidden = model(**enc, position_ids=positions, output_hidden_states=True, use_cache=False).hidden_states[-1].float()
            weights = mask.unsqueeze(-1).float()
            out.append(((hidden * weights).sum(1) / weights.sum(1)).numpy())
    return np.concatenate(out, 0)


def hidden_shift(base_states: np.ndarray, states: np.ndarray) -> dict[str, float]:
    """How far `states` moved from `base_states` (same prompts, row by row): mean L2 distance,
    the same relative to the base states' norm, and mean cosine similarity."""
    if base_states.shape != states.shape:
        raise ValueError(f"hidden states differ in shape: {base_states.shape} != {states.shape}")
    diff = np.linalg.norm(states - base_states, axis=1)
    norms = np.linalg.norm(base_states, axis=1)
    cos = (states * base_states).sum(1) / np.maximum(np.linalg.norm(states, axis=1) * norms, 1e-12)
    return {"l2": float(diff.mean()), "relative": float((diff / np.maximum(norms, 1e-12)).mean()), "cosine": float(cos.mean())}


def pca_2d(groups: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Each group's rows projected on the first two principal components of all groups together."""
    stacked = np.concatenate(list(groups.values()), 0)
    centered = stacked - stacked.mean(0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    axes = vt[:2].T
    if axes.shape[1] < 2:  # a single feature: pad so callers always get two columns
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    mean = stacked.mean(0)
    return {step: (rows - mean) @ axes for step, rows in groups.items()}
