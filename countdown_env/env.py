"""Countdown as a Gymnasium environment (single- or multi-turn text episodes)."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from countdown_env.rules import ASSISTANT_PREFIX, Rules, apply_chat_template, chat_messages, render_prompt
from countdown_env.scoring import Score, score_response
from countdown_env.tasks import Task, TaskConfig, preset_rules, task_at

#: Characters of observations and sampled actions: printable ASCII, newlines included.
CHARSET = frozenset(string.printable)
MAX_TEXT = 16_384
_OUTSIDE_CHARSET = re.compile(f"[^{re.escape(''.join(sorted(CHARSET)))}]")


def _observation(transcript: str) -> str:
    """The last MAX_TEXT characters, with characters outside CHARSET shown as '?', so
    every observation lies in `observation_space` whatever text the agent sent."""
    return _OUTSIDE_CHARSET.sub("?", transcript[-MAX_TEXT:])


class CountdownEnv(gym.Env[str, str]):
    """Reach a target number from given numbers with + - * / (each number once).

    ## Description
    Each episode is one Countdown task. The observation is the prompt text; the action is
    the model's completion, whose last `<answer>...</answer>` block is scored exactly (no
    `eval`, exact fractions) by `countdown_env.score_response` under the env's `Rules`.

    ## Observation Space
    `spaces.Text(max_length=16384, charset=printable ASCII)`: the prompt, followed in
    multi-turn mode by each earlier attempt and its feedback (the last 16384 characters;
    characters outside the charset appear as `?`). In the `chat` style the observation is the
    conversation so far (user question, assistant attempts, user feedback) rendered with the
    tokenizer's chat template, ending where the next assistant turn begins.

    ## Action Space
    `spaces.Text(max_length=16384, charset=printable ASCII)`: the completion. Any `str`
    is accepted by `step`; characters outside the charset are scored like any others.

    ## Rewards
    `rules.correct_reward` (1.0) for a correct answer. A wrong answer on the episode's last
    turn earns what the scorer gives it: `rules.format_reward` (0.1) if well-formed, else 0.0.
    A wrong answer on an earlier turn earns 0.0: the episode's return is the verdict on its
    last attempt, so a later right answer never pays more than an immediate one (paying the
    format reward on every wrong turn would pay 1.2 for wrong, wrong, right against 1.0 for
    right at once). `info["score"]` keeps each attempt's own verdict. Single-turn episodes
    (`max_attempts=1`) pay the verdict of their one attempt.

    ## Episode End
    Single-turn (`max_attempts=1`, the default): after one step, `terminated=True`.
    Multi-turn: `terminated=True` on a correct answer; `truncated=True` when the attempt
    budget runs out. A wrong attempt returns feedback (what was wrong, the value reached).
    A `step` after the episode ended raises `RuntimeError` (call `reset()`): it would otherwise
    pay for the same task again.

    ## Arguments
    - `tasks`: tasks to draw episodes from (uniformly, with `np_random`): `Task`s or dicts
      like `{"numbers": [...], "target": n}` (converted and validated here); if None, tasks
      are generated from `preset`.
    - `preset`: task preset name for generated tasks (`tinyzero`, `priming`, `tiny`, `classic`, `organism`,
      `study`: TinyZero's tasks under the study's scorer, docs/rules.md).
    - `rules`: a `Rules`, or a dict of rule overrides on top of the preset's rules.
    - `prompt_style`: one of `countdown_env.rules.PROMPT_STYLES` (`tinyzero`, `compact`, `chat`).
    - `tokenizer`: for `chat` only: an object with `apply_chat_template` (a Hugging Face
      tokenizer) or a callable `messages -> str`; the env itself never imports transformers.
    - `max_attempts`: attempts per episode, an integer >= 1 (1 = single-turn).
    - `render_mode`: None or `"ansi"`.

    `reset(options={"task": Task | {"numbers": [...], "target": n}})` fixes the task; `task` is
    the only option (another key raises ValueError).
    """

    #: The keys `reset(options=...)` takes.
    RESET_OPTIONS = ("task",)

    # render_fps is meaningless for text but Gymnasium's checker expects it declared.
    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        tasks: Sequence[Task] | None = None,
        preset: str = "tinyzero",
        rules: Rules | dict[str, Any] | None = None,
        prompt_style: str = "tinyzero",
        max_attempts: int = 1,
        render_mode: str | None = None,
        tokenizer: Any = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        # The preset's rules (e.g. `classic`: each number at most once) unless given; a dict
        # overrides single rules on top of them (unknown ones are refused). Generated tasks are
        # solvable under the same rules, so prompt, tasks and scorer always agree.
        if not isinstance(rules, Rules):
            if rules is not None and not isinstance(rules, dict):
                raise TypeError(f"rules must be a Rules, a dict of rule overrides or None, got {type(rules).__name__}")
            rules = preset_rules(preset, **(rules or {}))
        self.rules = rules
        self.task_config = TaskConfig.preset(preset, difficulty=False, rules=rules)
        self.tasks = [_as_task(t, f"tasks[{i}]") for i, t in enumerate(tasks)] if tasks is not None else None
        if self.tasks is not None and not self.tasks:
            raise ValueError("tasks is empty; pass at least one task or None to generate them")
        render_prompt(Task((1, 2), 3), prompt_style, self.rules, tokenizer=tokenizer)  # fail fast on a bad style or tokenizer
        self.prompt_style = prompt_style
        self.tokenizer = tokenizer
        self.messages: list[dict[str, str]] = []
        """The conversation so far, in the `chat` style."""
        self.max_attempts = max_attempts
        self.render_mode = render_mode
        self.observation_space = spaces.Text(max_length=MAX_TEXT, charset=CHARSET)
        self.action_space = spaces.Text(max_length=MAX_TEXT, charset=CHARSET)
        self.task: Task | None = None
        self.transcript = ""
        self.attempts = 0
        self.last_score: Score | None = None
        self.done = False
        """True once the episode has terminated or been truncated (until the next reset)."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        if options is not None and not isinstance(options, dict):
            raise TypeError(f'options must be a dict like {{"task": ...}} or None, got {type(options).__name__}')
        unknown = sorted(set(options or {}) - set(self.RESET_OPTIONS), key=str)
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; known options: {list(self.RESET_OPTIONS)}")
        super().reset(seed=seed)
        task = (options or {}).get("task")
        if task is None:
            if self.tasks is not None:
                task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
            else:
                task = task_at(int(self.np_random.integers(2**31)), 0, self.task_config)
        else:
            task = _as_task(task, "options['task']")
        self.task = task
        self.done = False
        self.messages = chat_messages(task, self.rules) if self.prompt_style == "chat" else []
        self.transcript = render_prompt(task, self.prompt_style, self.rules, tokenizer=self.tokenizer)
        self.attempts = 0
        self.last_score = None
        return _observation(self.transcript), {"task": task}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        # Every check comes before any state changes: a refused action leaves the episode as it was.
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        if self.done:
            raise RuntimeError("the episode is over (terminated or truncated); call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"action must be a str (the completion text), got {type(action).__name__}")
        score = score_response(action, self.task, self.rules)
        self.attempts += 1
        self.last_score = score
        terminated = score.correct or self.max_attempts == 1
        truncated = not terminated and self.attempts >= self.max_attempts
        self.done = terminated or truncated
        self._record(action, score)
        # Only the last turn pays a wrong answer's format reward (see Rewards).
        reward = score.reward if score.correct or self.done else 0.0
        info = {"score": score, "verdict": score.to_dict(), "task": self.task, "attempt": self.attempts}
        return _observation(self.transcript), reward, terminated, truncated, info

    def _record(self, action: str, score: Score) -> None:
        """Add the attempt (and, if the episode goes on, the feedback) to the transcript."""
        if self.prompt_style == "chat":
            # The next prompt is the whole conversation, rendered by the same chat template; the assistant's
            # turn began with ASSISTANT_PREFIX (in the prompt), so the turn on record includes it.
            self.messages.append({"role": "assistant", "content": ASSISTANT_PREFIX + action})
            if not self.done:
                self.messages.append({"role": "user", "content": feedback(score)})
                self.transcript = apply_chat_template(self.messages, self.tokenizer) + ASSISTANT_PREFIX
            else:
                self.transcript += action
        else:
            self.transcript += action
            if not self.done:
                self.transcript += f"\n{feedback(score)}\n"

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self.task is None:
            return "(no task: call reset())"
        status = "no attempt yet" if self.last_score is None else f"{self.last_score.outcome.value} ({self.last_score.reward})"
        return f"numbers={list(self.task.numbers)} target={self.task.target} attempts={self.attempts}/{self.max_attempts} last={status}"


def _as_task(task: Any, where: str) -> Task:
    """A `Task` from a Task or a task dict, with a clear error naming `where` otherwise."""
    if isinstance(task, Task):
        return task
    if isinstance(task, dict):
        try:
            return Task.from_dict(task)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{where}: not a valid task ({err})") from None
    raise TypeError(f'{where} must be a Task or a dict like {{"numbers": [3, 5], "target": 8}}, got {type(task).__name__}')


def feedback(score: Score) -> str:
    """What a multi-turn episode tells the model after a wrong attempt."""
    reached = f" Your expression equals {score.value}." if score.value is not None else ""
    return f"Feedback: that is not correct ({score.outcome.value}: {score.reason}).{reached} Try again."
