"""The one prompt object: the rules a model is asked to follow and the template that states them.

`Prompt(rules, style)` renders a task as prompt text (`countdown_env.render_prompt`) and scores a
completion under the same rules (`countdown_env.score_response`), so what a prompt states and what
its answer is judged by travel together and cannot drift apart. Every sampler takes one
(`runtime.sampling.sample_and_score`): PPO rollouts, evaluation, the analysis, self-improvement,
the organism's gates and SFT's held-out accuracy.

Also here, because every sampler reads it: the one name of the token budget, `max_new_tokens`,
and the old names configs written before the rename still carry (`adopt_old_name`).

Pure Python on `countdown_env` (no torch), so configs can import it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any

from countdown_env import DEFAULT_RULES, PROMPT_STYLES, Rules, Score, Task, preset_rules, render_prompt, score_response


@dataclass(frozen=True)
class Prompt:
    """What a model is shown for a task and what its completion is judged by."""

    rules: Rules = DEFAULT_RULES
    """Stated in the prompt (tinyzero, chat) and enforced by the scorer; a task preset's: `Prompt.of_preset`."""
    style: str = "tinyzero"
    """Template: one of `countdown_env.rules.PROMPT_STYLES` (`tinyzero`, `compact`, `chat`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.rules, Rules):
            raise TypeError(f"rules must be a countdown_env.Rules, got {type(self.rules).__name__}")
        if self.style not in PROMPT_STYLES:
            raise ValueError(f"prompt style must be one of {sorted(PROMPT_STYLES)}, got {self.style!r}")

    @classmethod
    def of_preset(cls, task_preset: str, style: str, **rule_changes: Any) -> Prompt:
        """The prompt of a task preset's rules (with single rules changed, e.g. `strict_ending=False`)."""
        return cls(preset_rules(task_preset, **rule_changes), style)

    def render(self, task: Task, tokenizer: Any = None) -> str:
        """The prompt text for `task` (`chat` goes through `tokenizer`'s chat template)."""
        return render_prompt(task, self.style, self.rules, tokenizer=tokenizer)

    def score(self, completion: str, task: Task) -> Score:
        """The verdict on `completion` (the text after the prompt) under these rules."""
        return score_response(completion, task, self.rules)

    def with_rules(self, **changes: Any) -> Prompt:
        """The same template over rules with single rules changed (evaluation: `strict_ending=False`)."""
        return replace(self, rules=self.rules.with_(**changes))


# ---- the token budget -------------------------------------------------------------------
#: The one name of the most tokens generated per completion, in every config and sampler.
TOKEN_BUDGET = "max_new_tokens"
#: Names the same budget had before (PPOConfig, SFTRunConfig); configs keep them as deprecated fields.
OLD_BUDGET_NAMES = ("max_response_length", "eval_max_new_tokens")


def adopt_old_name(config: Any, old: str, new: str = TOKEN_BUDGET) -> None:
    """In a frozen config's `__post_init__`: move a value given under the deprecated field `old` to `new`,
    with a one-line note on stderr, and clear `old` (so config.json records the new name only).

    The old name wins when both are set: presets and run directories written before the rename (a run's
    config.json, an experiment's `ppo: {max_response_length: ...}` overrides) name only the old field,
    over a preset that now names the new one. The config loader cannot tell which layer set a field,
    so the one that can only have been set on purpose is taken."""
    value = getattr(config, old)
    if value is None:
        return
    print(f"note: config field {old} is now {new}; the old name will go", file=sys.stderr)
    object.__setattr__(config, new, value)
    object.__setattr__(config, old, None)
