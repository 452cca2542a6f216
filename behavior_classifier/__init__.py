"""Count the four cognitive behaviours (verification, backtracking, subgoal setting, backward chaining) in
Countdown reasoning traces, with an offline heuristic judge or an LLM judge over any OpenAI-compatible
endpoint, and turn the counts into frequencies over training.

A judge is a callable ``judge(text) -> dict[str, int]`` with the four `BEHAVIORS` as keys.
Importing this package does not import openai, torch, matplotlib or pandas (the frequency functions, which
need pandas, are loaded on first use; every CLI command imports this package).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from behavior_classifier.agreement import Agreement, agreement, macro_f1
from behavior_classifier.behaviors import BEHAVIORS, DEFINITIONS, Counts
from behavior_classifier.classify import RunSummary, classify_file
from behavior_classifier.client import JudgeConfig, JudgeInput, JudgeResult, LLMJudge
from behavior_classifier.heuristic import HeuristicJudge, count_behaviors
from behavior_classifier.judge import PROMPT_VERSION, MalformedReply, build_messages, parse_counts

if TYPE_CHECKING:
    from behavior_classifier.frequencies import behavior_frequencies, classified_frame, load_reference, plot_frequencies, read_classified

_LAZY: Final = frozenset({"behavior_frequencies", "classified_frame", "load_reference", "plot_frequencies", "read_classified"})
"""Names served from `behavior_classifier.frequencies` on first access (PEP 562), so pandas loads only when used."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from behavior_classifier import frequencies

        return getattr(frequencies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BEHAVIORS",
    "DEFINITIONS",
    "PROMPT_VERSION",
    "Agreement",
    "Counts",
    "HeuristicJudge",
    "JudgeConfig",
    "JudgeInput",
    "JudgeResult",
    "LLMJudge",
    "MalformedReply",
    "RunSummary",
    "agreement",
    "behavior_frequencies",
    "build_messages",
    "classified_frame",
    "classify_file",
    "count_behaviors",
    "load_reference",
    "macro_f1",
    "parse_counts",
    "plot_frequencies",
    "read_classified",
]
