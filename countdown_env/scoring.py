"""Score a model completion: extract the answer, parse, check numbers, evaluate, reward.

`score_response` is a pure, total function: any string in, a typed `Score` out.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from countdown_env.expression import ExpressionError, Outcome, evaluate_study, parse_and_evaluate
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
    formatted: bool | None = None
    """Whether the answer earned the format credit, when the outcome alone does not say (the study scorer
    pays it for any answer it finds, malformed or not); None: it did iff the outcome is in `WELL_FORMED`."""

    @property
    def correct(self) -> bool:
        return self.outcome is Outcome.CORRECT

    @property
    def well_formed(self) -> bool:
        """Earned at least the format credit (what a format rate counts)."""
        return self.outcome in WELL_FORMED if self.formatted is None else self.formatted

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
    if rules.scorer == "study":
        return score_study(response, task, rules)
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
        # A value the rules forbid costs the whole reward whatever else is wrong: checked before the numbers,
        # or adding a stray literal to a disallowed step would earn the format reward (`3-6+100+1` under classic).
        if err.outcome in (Outcome.LIMIT_EXCEEDED, Outcome.DISALLOWED_OPERATION):
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


# ---- the study's scorer (Rules.scorer == "study") ------------------------------------------------------
# Its `extract_solution` receives prompt + completion, drops everything up to the first "Assistant:" (or
# "<|im_start|>assistant"), which lies in the prompt of both its templates, and keeps the last line. Both
# prompts end with "\n<think>", so that line is the completion's last line (with "<think>" before it when the
# completion has no newline, and "<think>" can never be part of an <answer> match): reading the completion's
# last line gives the same verdict. Only a prompt with neither marker (the study would score 0) differs.

#: The study's answer pattern: non-greedy, matches taken left to right, the last one wins.
_STUDY_ANSWER = re.compile(re.escape(ANSWER_OPEN) + "(.*?)" + re.escape(ANSWER_CLOSE))
#: The study's number pattern (any Unicode digits; Python then refuses the non-ASCII ones).
_DIGIT_RUN = re.compile(r"\d+")
#: The study's tolerance, `abs(result - target) < 1e-5`, as the exact value of that double.
STUDY_TOLERANCE = Fraction(1e-5)


def study_answer(response: str) -> tuple[str, str] | None:
    """(answer, text after it on the line) as the study's `extract_solution` finds it: the last match of its
    pattern on the last line (split on "\n" only), stripped; None if there is none."""
    line = response[response.rfind("\n") + 1 :]
    end = line.rfind(ANSWER_CLOSE)
    if end < 0:
        return None
    # Matching only up to the last </answer> keeps the lazy pattern linear: every <answer> it starts from has a
    # close after it (with text beyond, a line of many <answer>s would cost quadratic time). deque(maxlen=1)
    # runs through the matches at C speed and keeps the last.
    last = deque(_STUDY_ANSWER.finditer(line, 0, end + len(ANSWER_CLOSE)), maxlen=1)
    if not last:
        return None
    return last[0].group(1).strip(), line[last[0].end() :]


def study_numbers(answer: str, given: Sequence[int]) -> tuple[str, tuple[int, ...], tuple[int, ...]] | None:
    """None if the answer's digit runs are the given numbers (the study's `validate_equation`: sorted
    `int(run)` equal to the sorted numbers), else (reason, missing, extra)."""
    runs = _DIGIT_RUN.findall(answer)
    if len(runs) > 4 * len(given) + 16:  # wrong either way: do not list a megabyte of numbers
        return f"{len(runs)} numbers written, {len(given)} given", (), ()
    # Leading zeros do not count (int('007') is 7); a run of more than 16 other digits is no task number
    # (`Task` refuses numbers beyond 10**15), and is never converted (int() of a long string is slow).
    significant = [run.lstrip("0") or "0" for run in runs]
    huge = sum(len(run) > 16 for run in significant)
    used = [int(run) for run in significant if len(run) <= 16]
    if not huge and sorted(used) == sorted(given):
        return None
    missing, extra = check_numbers(used, given, DEFAULT_RULES)
    parts = [f"missing {_show_all(missing)}" if missing else "", f"extra {_show_all(extra)}" if extra else ""]
    parts.append(f"{huge} number(s) of more than 16 digits" if huge else "")
    return "; ".join(p for p in parts if p), missing, extra


def _study_score(
    rules: Rules,
    outcome: Outcome,
    reason: str,
    answer: str,
    value: Fraction | None = None,
    missing: tuple[int, ...] = (),
    extra: tuple[int, ...] = (),
) -> Score:
    """An answer the study's scorer found: the correct reward, else the format reward, whatever was wrong."""
    reward = rules.correct_reward if outcome is Outcome.CORRECT else rules.format_reward
    return Score(reward, outcome, reason, answer, value, missing, extra, formatted=True)


def score_study(response: str, task: Task, rules: Rules) -> Score:
    """The study scorer's verdict (`compute_score` of its `verl/utils/reward_score/countdown.py`): 0 without an
    answer on the last line; `correct_reward` if the answer uses exactly the given numbers and its value is
    within 1e-5 of the target; `format_reward` for any other answer. Evaluated exactly, never with `eval`."""
    found = study_answer(response)
    if found is None:
        return Score(0.0, Outcome.NO_ANSWER, "no <answer>...</answer> on the last line (the study reads only the last line)")
    answer, after = found
    shown = answer if len(answer) <= rules.max_answer_chars else answer[: rules.max_answer_chars] + "..."
    if rules.strict_ending and after.strip():
        return Score(0.0, Outcome.MALFORMED, "text after the final </answer> (strict_ending)", shown, formatted=False)
    wrong = study_numbers(answer, task.numbers)  # the study checks the numbers first
    if wrong is not None:
        reason, missing, extra = wrong
        return _study_score(rules, Outcome.WRONG_NUMBERS, reason, shown, None, missing, extra)
    if len(answer) > rules.max_answer_chars:  # bounded work; the study would evaluate it (docs/rules.md)
        return _study_score(rules, Outcome.LIMIT_EXCEEDED, f"answer longer than {rules.max_answer_chars} characters", shown)
    try:
        raw, err = evaluate_study(answer, rules)
    except ExpressionError as syntax:
        return _study_score(rules, syntax.outcome, syntax.reason, shown)
    if err is not None:
        return _study_score(rules, err.outcome, err.reason, shown)
    value = Fraction(raw)
    if abs(value - task.target) < STUDY_TOLERANCE:
        return _study_score(rules, Outcome.CORRECT, "", shown, value)
    return _study_score(rules, Outcome.WRONG_VALUE, f"reached {show_number(value)}, target {show_number(task.target)}", shown, value)
