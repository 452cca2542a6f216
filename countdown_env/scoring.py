"""Score a model completion: extract the answer, parse, check numbers, evaluate, reward.

`score_response` is a pure, total function: any string in, a typed `Score` out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from countdown_env.expression import ExpressionError, Outcome, parse_and_evaluate
from countdown_env.rules import ANSWER_CLOSE, ANSWER_OPEN, DEFAULT_RULES, THINK_CLOSE, Rules
from countdown_env.tasks import Task

#: Outcomes whose answer was a well-formed expression (earns the format reward).
WELL_FORMED = frozenset({Outcome.WRONG_NUMBERS, Outcome.DIVISION_BY_ZERO, Outcome.WRONG_VALUE, Outcome.CORRECT})


@dataclass(frozen=True)
class Score:
    """The verdict on one completion."""

    reward: float
    outcome: Outcome
    reason: str = ""
    answer: str | None = None
    """The text inside the last `<answer>` block, if any (cut to `rules.max_answer_chars`
    plus an ellipsis when longer, so a megabyte answer does not travel in every log row)."""
    value: Fraction | None = None
    """The exact value the answer reached, when it could be evaluated."""
    missing: tuple[int, ...] = ()
    """Given numbers the answer did not use (when every number must be used)."""
    extra: tuple[int, ...] = ()
    """Literals in the answer beyond the given numbers."""

    @property
    def correct(self) -> bool:
        return self.outcome is Outcome.CORRECT

    @property
    def well_formed(self) -> bool:
        return self.outcome in WELL_FORMED

    def to_dict(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "correct": self.correct,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "answer": self.answer,
            "value": None if self.value is None else str(self.value),
            "missing": list(self.missing),
            "extra": list(self.extra),
        }


def extract_answer(response: str, rules: Rules = DEFAULT_RULES) -> tuple[str, str] | Score:
    """(answer, text after it) for the last `<answer>...</answer>` pair, or a zero `Score`
    saying why there is none (no complete pair, or more pairs than allowed: hedging)."""
    end = response.rfind(ANSWER_CLOSE)
    if end < 0:
        return Score(0.0, Outcome.NO_ANSWER, "no </answer> tag")
    start = response.rfind(ANSWER_OPEN, 0, end)
    if start < 0:
        return Score(0.0, Outcome.NO_ANSWER, "no <answer> before the last </answer>")
    # Hedging is counted after the reasoning: a model that restates the answer format inside
    # <think> has not hedged, one that writes two answers after it has. The reasoning ends at the
    # FIRST </think>: counting from the last one would let a stray `</think>` hide earlier answers.
    think_end = response.find(THINK_CLOSE, 0, start)
    count = response.count(ANSWER_OPEN, think_end + len(THINK_CLOSE) if think_end >= 0 else 0)
    if count > rules.max_answers:
        return Score(0.0, Outcome.MALFORMED, f"{count} <answer> blocks (hedging); at most {rules.max_answers} allowed")
    return response[start + len(ANSWER_OPEN) : end], response[end + len(ANSWER_CLOSE) :]


def check_numbers(used: Sequence[int], given: Sequence[int], rules: Rules) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(missing, extra) between the literals used and the numbers given, as multisets."""
    if len(used) == len(given) and sorted(used) == sorted(given):  # the common case, without Counters
        return (), ()
    used_c, given_c = Counter(used), Counter(given)
    extra = tuple(sorted((used_c - given_c).elements()))
    missing = tuple(sorted((given_c - used_c).elements())) if rules.use_all_numbers else ()
    return missing, extra


def score_response(response: str, task: Task, rules: Rules | None = None, **overrides: Any) -> Score:
    """Score a completion against a task. Never raises, never evaluates code, bounded time.

    `rules` (or keyword overrides of `Rules` fields) select the rules; defaults follow the
    public contract.
    """
    if rules is None:
        rules = Rules.from_kwargs(**overrides) if overrides else DEFAULT_RULES
    elif overrides:
        rules = rules.with_(**overrides)
    if not isinstance(response, str):
        return Score(0.0, Outcome.NO_ANSWER, f"response is {type(response).__name__}, not str")
    extracted = extract_answer(response, rules)
    if isinstance(extracted, Score):
        return extracted
    answer, after = extracted
    if len(answer) > rules.max_answer_chars:
        return Score(
            0.0,
            Outcome.LIMIT_EXCEEDED,
            f"answer longer than {rules.max_answer_chars} characters",
            answer=answer[: rules.max_answer_chars] + "...",
        )
    try:
        raw, used, err = parse_and_evaluate(answer, rules)
    except ExpressionError as syntax:
        return Score(0.0, syntax.outcome, syntax.reason, answer=answer)
    missing, extra = check_numbers(used, task.numbers, rules)
    value = None if raw is None else Fraction(raw)
    if err is not None:
        if err.outcome is Outcome.LIMIT_EXCEEDED or (err.outcome is Outcome.DISALLOWED_OPERATION and not (missing or extra)):
            return Score(0.0, err.outcome, err.reason, answer=answer, missing=missing, extra=extra)
        if not (missing or extra):
            return _finish(rules, Outcome.DIVISION_BY_ZERO, err.reason, answer, None, missing, extra, after)
    if missing or extra:
        parts = [f"missing {_show_all(missing)}" if missing else "", f"extra {_show_all(extra)}" if extra else ""]
        return _finish(rules, Outcome.WRONG_NUMBERS, "; ".join(p for p in parts if p), answer, value, missing, extra, after)
    if value != task.target:
        return _finish(
            rules, Outcome.WRONG_VALUE, f"reached {show_number(value)}, target {show_number(task.target)}", answer, value, (), (), after
        )
    return _finish(rules, Outcome.CORRECT, "", answer, value, (), (), after)


def show_number(x: int | Fraction | None) -> str:
    """`x` as text, or its size when it is too long to be worth printing (and Python refuses str() of an
    integer over 4,300 digits): the scorer's reasons must never raise, whatever the task."""
    if isinstance(x, Fraction):
        return show_number(x.numerator) + ("" if x.denominator == 1 else "/" + show_number(x.denominator))
    if not isinstance(x, int) or abs(x).bit_length() <= 200:  # up to ~60 digits in full
        return str(x)
    digits = int((abs(x).bit_length() - 1) * 0.30102999566398) + 1  # floor(log10) + 1, within one digit
    return f"{'-' if x < 0 else ''}<a number of about {digits:,} digits>"


def _show_all(numbers: Sequence[int]) -> str:
    return "[" + ", ".join(show_number(n) for n in numbers) + "]"


def _finish(
    rules: Rules,
    outcome: Outcome,
    reason: str,
    answer: str,
    value: Fraction | None,
    missing: tuple[int, ...],
    extra: tuple[int, ...],
    after: str,
) -> Score:
    if rules.strict_ending and after.strip():
        return Score(0.0, Outcome.MALFORMED, "text after the final </answer> (strict_ending)", answer, value, missing, extra)
    reward = rules.correct_reward if outcome is Outcome.CORRECT else rules.format_reward
    return Score(reward, outcome, reason, answer, value, missing, extra)
