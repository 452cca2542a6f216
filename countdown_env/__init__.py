"""Countdown: rules, exact scoring, solver, task generator and a Gymnasium environment.

Pure Python: importing this package never imports torch, transformers or openai.
"""

from __future__ import annotations

import gymnasium

from countdown_env.expression import Outcome
from countdown_env.rules import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    ASSISTANT_PREFIX,
    DEFAULT_RULES,
    PROMPT_STYLES,
    THINK_CLOSE,
    THINK_OPEN,
    Rules,
    apply_chat_template,
    chat_messages,
    chat_prompt,
    compact_prompt,
    continuation,
    format_completion,
    render_prompt,
    tinyzero_prompt,
)
from countdown_env.scoring import Score, extract_answer, score_response
from countdown_env.solver import Closest, all_solutions, canonical_form, closest, count_solutions, reachable, solve
from countdown_env.task import Task
from countdown_env.tasks import (
    PRESETS,
    TaskConfig,
    generate_tasks,
    iter_tasks,
    preset_rules,
    read_tasks,
    split_of,
    subset_config,
    task_at,
    to_dataset,
    unseen_range_config,
    write_tasks,
)

ENV_ID = "countdown_env/Countdown-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="countdown_env.env:CountdownEnv")

__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "ASSISTANT_PREFIX",
    "DEFAULT_RULES",
    "ENV_ID",
    "PRESETS",
    "PROMPT_STYLES",
    "THINK_CLOSE",
    "THINK_OPEN",
    "Closest",
    "Outcome",
    "Rules",
    "Score",
    "Task",
    "TaskConfig",
    "all_solutions",
    "apply_chat_template",
    "canonical_form",
    "chat_messages",
    "chat_prompt",
    "closest",
    "compact_prompt",
    "continuation",
    "count_solutions",
    "extract_answer",
    "format_completion",
    "generate_tasks",
    "iter_tasks",
    "preset_rules",
    "reachable",
    "read_tasks",
    "render_prompt",
    "score_response",
    "solve",
    "split_of",
    "subset_config",
    "task_at",
    "tinyzero_prompt",
    "to_dataset",
    "unseen_range_config",
    "write_tasks",
]
