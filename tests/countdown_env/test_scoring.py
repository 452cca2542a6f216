"""score_response: every outcome, every known exploit, the rule options, and totality."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from countdown_env import DEFAULT_RULES, Outcome, Rules, Task, extract_answer, format_completion, preset_rules, score_response


def answer(text: str) -> str:
    return format_completion("let me think", text)


# (completion, numbers, target, outcome, reward) — one row per outcome at least.
OUTCOMES = [
    ("I think it is 8", (2, 3, 2), 8, Outcome.NO_ANSWER, 0.0),
    ("<answer>2*3+2", (2, 3, 2), 8, Outcome.NO_ANSWER, 0.0),
    ("2*3+2</answer>", (2, 3, 2), 8, Outcome.NO_ANSWER, 0.0),
    (answer(""), (2, 3, 2), 8, Outcome.MALFORMED, 0.0),
    (answer("2*3+"), (2, 3, 2), 8, Outcome.MALFORMED, 0.0),
    (answer("(2*3+2"), (2, 3, 2), 8, Outcome.MALFORMED, 0.0),
    (answer("2*3)+2"), (2, 3, 2), 8, Outcome.MALFORMED, 0.0),
    (answer("2 3 2"), (2, 3, 2), 8, Outcome.MALFORMED, 0.0),
    (answer("(2)(3)+2"), (2, 3, 2), 8, Outcome.MALFORMED, 0.0),
    (answer("+2*3+2"), (2, 3, 2), 8, Outcome.MALFORMED, 0.0),
    (answer("2*3+2 = "), (2, 3, 2), 8, Outcome.MALFORMED, 0.0),
    (answer("2*3+2 = 8 = 8"), (2, 3, 2), 8, Outcome.MALFORMED, 0.0),
    (answer("= 8"), (2, 3, 2), 8, Outcome.MALFORMED, 0.0),
    (answer("2*3+2 is 8"), (2, 3, 2), 8, Outcome.DISALLOWED_OPERATION, 0.0),
    (answer("2*3+2 @"), (2, 3, 2), 8, Outcome.MALFORMED, 0.0),
    (answer("2^3"), (2, 3), 8, Outcome.DISALLOWED_OPERATION, 0.0),
    (answer("-2+3*2"), (2, 3, 2), 4, Outcome.DISALLOWED_OPERATION, 0.0),
    (answer("9" * 17), (9,), 9, Outcome.LIMIT_EXCEEDED, 0.0),
    (answer("1" * 600), (1,), 1, Outcome.LIMIT_EXCEEDED, 0.0),
    (answer("(" * 40 + "1" + ")" * 40), (1,), 1, Outcome.LIMIT_EXCEEDED, 0.0),
    (answer("99999*99999*99999*99999"), (99999,) * 4, 1, Outcome.LIMIT_EXCEEDED, 0.0),
    (answer("2*3+3"), (2, 3, 2), 8, Outcome.WRONG_NUMBERS, 0.1),
    (answer("2*3"), (2, 3, 2), 6, Outcome.WRONG_NUMBERS, 0.1),
    (answer("2*3+2+2"), (2, 3, 2), 10, Outcome.WRONG_NUMBERS, 0.1),
    (answer("3/(2-2)"), (2, 3, 2), 8, Outcome.DIVISION_BY_ZERO, 0.1),
    (answer("2*(3+2)"), (2, 3, 2), 8, Outcome.WRONG_VALUE, 0.1),
    (answer("2*3/2"), (2, 3, 2), 8, Outcome.WRONG_VALUE, 0.1),
    (answer("2*3+2"), (2, 3, 2), 8, Outcome.CORRECT, 1.0),
    (answer(" ( 2 * 3 ) + 2 "), (2, 3, 2), 8, Outcome.CORRECT, 1.0),
    (answer("2 × 3 + 2"), (2, 3, 2), 8, Outcome.CORRECT, 1.0),
    (answer("(1 + 2) / 3"), (1, 2, 3), 1, Outcome.CORRECT, 1.0),
    (answer("6 / 4 * 2 * 1"), (6, 4, 2, 1), 3, Outcome.CORRECT, 1.0),
    (answer("2 - 3 + 2"), (2, 3, 2), 1, Outcome.CORRECT, 1.0),
]


@pytest.mark.parametrize(("completion", "numbers", "target", "outcome", "reward"), OUTCOMES)
def test_outcome_table(completion: str, numbers: tuple[int, ...], target: int, outcome: Outcome, reward: float) -> None:
    score = score_response(completion, Task(numbers, target))
    assert score.outcome is outcome, score
    assert score.reward == reward
    assert score.correct is (outcome is Outcome.CORRECT)
    assert score.reason or outcome is Outcome.CORRECT


def test_every_outcome_is_covered_by_the_table() -> None:
    assert {row[3] for row in OUTCOMES} == set(Outcome)


# Exploits that fooled other Countdown scorers: none may earn the correct reward.
# (completion, numbers, target, expected outcome)
EXPLOITS = [
    (answer("2**3"), (2, 3), 8, Outcome.DISALLOWED_OPERATION),
    (answer("7//2"), (7, 2), 3, Outcome.DISALLOWED_OPERATION),
    (answer("7%4"), (7, 4), 3, Outcome.DISALLOWED_OPERATION),
    (answer("3!"), (3,), 6, Outcome.DISALLOWED_OPERATION),
    (answer("3! + 0"), (3, 0), 6, Outcome.DISALLOWED_OPERATION),
    (answer("sqrt(4)"), (4,), 2, Outcome.DISALLOWED_OPERATION),
    (answer("math.sqrt(4)"), (4,), 2, Outcome.DISALLOWED_OPERATION),
    (answer("2.5*2"), (2, 5, 2), 5, Outcome.DISALLOWED_OPERATION),
    (answer("25e-1*2"), (25, 1, 2), 5, Outcome.MALFORMED),
    (answer("1000001/1000"), (1000, 1000001), 1000, Outcome.WRONG_VALUE),
    (answer("1000001/1000"), (1000,), 1000, Outcome.WRONG_NUMBERS),
    (answer("__import__('os')"), (1,), 1, Outcome.DISALLOWED_OPERATION),
    (answer("__import__('os').system('true') or 1"), (1,), 1, Outcome.DISALLOWED_OPERATION),
    (answer("eval('1')"), (1,), 1, Outcome.DISALLOWED_OPERATION),
    (answer("9**9**9"), (9, 9, 9), 1, Outcome.DISALLOWED_OPERATION),
    (answer("9^9^9"), (9, 9, 9), 1, Outcome.DISALLOWED_OPERATION),
    # Hedging: several answers, hoping one is checked.
    ("<answer>2+3</answer> or <answer>2*3</answer>", (2, 3), 6, Outcome.MALFORMED),
    ("<answer>2*3</answer><answer>2+3</answer>", (2, 3), 6, Outcome.MALFORMED),
    (answer("2+3, 2*3"), (2, 3), 6, Outcome.DISALLOWED_OPERATION),
    (answer("2+3; 2*3"), (2, 3), 6, Outcome.MALFORMED),
    (answer("2+3 or 2*3"), (2, 3), 6, Outcome.DISALLOWED_OPERATION),
    # The target itself as the answer, or leftover numbers.
    (answer("6"), (2, 3), 6, Outcome.WRONG_NUMBERS),
    (answer("1*81"), (1, 1, 1, 81), 81, Outcome.WRONG_NUMBERS),
    (answer("45+2"), (44, 3), 47, Outcome.WRONG_NUMBERS),
    (answer("45+2+3"), (1, 45, 2, 3), 50, Outcome.WRONG_NUMBERS),
    (answer("6*34/11-1"), (6, 34, 1, 11), 17, Outcome.WRONG_VALUE),
    # Digits the prompt never asks for (Arabic-Indic, full-width, superscript).
    (answer("٣+٥"), (3, 5), 8, Outcome.MALFORMED),
    (answer("３+５"), (3, 5), 8, Outcome.MALFORMED),
    (answer("2³"), (2, 3), 8, Outcome.MALFORMED),
    # Unary minus to undo a number; a trailing "= target" after a wrong expression.
    (answer("5 - -3"), (5, 3), 8, Outcome.DISALLOWED_OPERATION),
    (answer("2 + 3 = 6"), (2, 3), 6, Outcome.WRONG_VALUE),
]


@pytest.mark.parametrize(("completion", "numbers", "target", "outcome"), EXPLOITS)
def test_exploits_are_rejected(completion: str, numbers: tuple[int, ...], target: int, outcome: Outcome) -> None:
    score = score_response(completion, Task(numbers, target))
    assert not score.correct
    assert score.reward < DEFAULT_RULES.correct_reward
    assert score.outcome is outcome, score


@pytest.mark.parametrize(
    "answer_text",
    [
        "1" * 1_000_000,
        "(" * 1_000_000 + "1" + ")" * 1_000_000,
        "(" * 100 + "1" + ")" * 100,
        "-" * 400 + "1",
        "1+" * 250_000 + "1",
        "9**9**9**9**9",
        "9*" * 200 + "9",
    ],
)
def test_huge_and_deep_inputs_end_with_a_reason(answer_text: str) -> None:
    score = score_response(answer(answer_text), Task((9, 1), 9))
    assert not score.correct
    assert score.outcome in (Outcome.LIMIT_EXCEEDED, Outcome.DISALLOWED_OPERATION)
    assert score.reason
    assert score.answer is not None and len(score.answer) <= DEFAULT_RULES.max_answer_chars + 3


def test_generous_limits_still_never_raise() -> None:
    # Chains and unary minus are bounded by loops and max_depth, not by Python's recursion limit.
    rules = Rules(max_answer_chars=10**6, max_depth=100, allow_unary_minus=True, max_magnitude=10**300)
    assert score_response(answer("1+" * 100_000 + "1"), Task((1,), 1), rules).outcome is Outcome.WRONG_NUMBERS
    assert score_response(answer("-" * 5000 + "1"), Task((1,), 1), rules).outcome is Outcome.LIMIT_EXCEEDED
    assert score_response(answer("(" * 5000 + "1" + ")" * 5000), Task((1,), 1), rules).outcome is Outcome.LIMIT_EXCEEDED
    with pytest.raises(ValueError, match="max_depth"):
        Rules(max_depth=10_000)


def test_megabyte_completion_with_many_answer_tags() -> None:
    text = "<answer>1</answer>" * 100_000
    assert score_response(text, Task((1,), 1)).outcome is Outcome.MALFORMED


def test_trailing_equals_is_tolerated_and_not_checked() -> None:
    task = Task((2, 3, 2), 8)
    assert score_response(answer("2*3+2 = 8"), task).correct
    assert score_response(answer("2*3+2=8"), task).correct
    # The number after '=' is not a literal of the expression and is not checked.
    assert score_response(answer("2*3+2 = 9"), task).correct
    strict = score_response(answer("2*3+2 = 8"), task, allow_trailing_equals=False)
    assert strict.outcome is Outcome.MALFORMED


def test_last_answer_block_is_used_when_several_are_allowed() -> None:
    task = Task((2, 3), 6)
    text = "<answer>2+3</answer> no wait <answer>2*3</answer>"
    assert score_response(text, task, max_answers=2).correct
    assert score_response("<answer>2*3</answer> no wait <answer>2+3</answer>", task, max_answers=2).outcome is Outcome.WRONG_VALUE
    assert score_response(text, task).outcome is Outcome.MALFORMED  # default: hedging


def test_answer_tags_inside_the_reasoning_are_not_hedging() -> None:
    task = Task((2, 3), 6)
    think = "<think>I must give the final answer in <answer> </answer> tags, e.g. <answer>2+3</answer>. 2*3=6.</think>\n"
    assert score_response(think + "<answer>2*3</answer>", task).correct
    assert score_response(think + "<answer>2+3</answer> or <answer>2*3</answer>", task).outcome is Outcome.MALFORMED


def test_text_after_the_answer_is_allowed_unless_strict_ending() -> None:
    task = Task((2, 3), 6)
    tail = answer("2*3") + "\nThat is my final answer, I hope it helps."
    assert score_response(tail, task).correct
    strict = score_response(tail, task, strict_ending=True)
    assert strict.outcome is Outcome.MALFORMED and strict.reward == 0.0
    assert score_response(answer("2*3") + "  \n", task, strict_ending=True).correct
    wrong_tail = answer("2+3") + " more"
    assert score_response(wrong_tail, task, strict_ending=True).reward == 0.0


def test_unary_minus_only_when_allowed() -> None:
    task = Task((3, 5), 2)
    assert score_response(answer("-3+5"), task).outcome is Outcome.DISALLOWED_OPERATION
    assert score_response(answer("-3+5"), task, allow_unary_minus=True).correct
    assert score_response(answer("5+(-3)"), task, allow_unary_minus=True).correct
    assert score_response(answer("5-3"), task).correct


def test_integer_intermediates_rule() -> None:
    task = Task((3, 4, 8), 6)
    text = answer("3/4*8")
    assert score_response(text, task).correct
    tv = score_response(text, task, integer_intermediates=True)
    assert tv.outcome is Outcome.DISALLOWED_OPERATION and tv.reward == 0.0
    assert score_response(answer("3*8/4"), task, integer_intermediates=True).correct


def test_negative_intermediates_rule() -> None:
    task = Task((3, 5, 10), 8)
    text = answer("3-5+10")
    assert score_response(text, task).correct
    assert score_response(text, task, allow_negative_intermediates=False).outcome is Outcome.DISALLOWED_OPERATION
    assert score_response(answer("10+3-5"), task, allow_negative_intermediates=False).correct


def test_use_all_numbers_false_allows_leftovers_but_not_extras() -> None:
    task = Task((100, 75, 50, 25, 6, 3), 952)
    text = answer("((100 + 6) * 75 * 3 - 50) / 25")
    rules = Rules(use_all_numbers=False)
    assert score_response(answer("100 + 6"), Task((100, 6, 3), 106), rules).correct
    assert score_response(answer("100 + 6"), Task((100, 6, 3), 106)).outcome is Outcome.WRONG_NUMBERS
    extra = score_response(answer("100 + 6 + 6"), Task((100, 6, 3), 112), rules)
    assert extra.outcome is Outcome.WRONG_NUMBERS and extra.extra == (6,) and extra.missing == ()
    score = score_response(text, task, rules)
    assert score.correct and score.value == 952
    partial = score_response(answer("100 + 75"), Task(task.numbers, 175))
    assert partial.outcome is Outcome.WRONG_NUMBERS and partial.missing == (3, 6, 25, 50)
    assert score_response(answer("100 + 75"), Task(task.numbers, 175), rules).correct


def test_operator_subset_rule() -> None:
    task = Task((2, 3), 6)
    score = score_response(answer("2*3"), task, operators=("+", "-"))
    assert score.outcome is Outcome.DISALLOWED_OPERATION and "'*'" in score.reason


def test_reward_values_come_from_rules() -> None:
    task = Task((2, 3), 6)
    rules = Rules(correct_reward=0.8, format_reward=0.25)
    assert score_response(answer("2*3"), task, rules).reward == 0.8
    assert score_response(answer("2+3"), task, rules).reward == 0.25
    assert score_response(answer("2+3+3"), task, rules).reward == 0.25
    assert score_response(answer("2/(3-3)"), Task((2, 3, 3), 1), rules).reward == 0.25
    assert score_response(answer("2**3"), task, rules).reward == 0.0
    assert score_response("no answer", task, rules).reward == 0.0
    assert score_response(answer("2+3"), task, format_reward=0.0).reward == 0.0


def test_score_fields_value_missing_extra() -> None:
    score = score_response(answer("1 + 2 + 7 + 7"), Task((1, 2, 3, 7), 13))
    assert score.outcome is Outcome.WRONG_NUMBERS
    assert score.missing == (3,) and score.extra == (7,)
    assert score.value == 17
    wrong = score_response(answer("1/3 + 2"), Task((1, 2, 3), 2))
    assert wrong.value == Fraction(7, 3) and "7/3" in wrong.reason
    assert wrong.to_dict()["value"] == "7/3" and wrong.to_dict()["outcome"] == "wrong_value"
    assert wrong.well_formed and not score_response("nothing", Task((1,), 1)).well_formed


def test_bad_rule_overrides_raise_value_error() -> None:
    with pytest.raises(ValueError, match="unknown rule"):
        score_response("x", Task((1,), 1), no_such_rule=True)
    with pytest.raises(ValueError, match="operators"):
        Rules(operators=("+", "**"))
    with pytest.raises(ValueError, match="format_reward"):
        Rules(format_reward=0.5, correct_reward=0.2)


def test_non_string_response_is_no_answer() -> None:
    assert score_response(None, Task((1,), 1)).outcome is Outcome.NO_ANSWER  # type: ignore[arg-type]
    assert score_response(b"<answer>1</answer>", Task((1,), 1)).outcome is Outcome.NO_ANSWER  # type: ignore[arg-type]


def test_extract_answer() -> None:
    assert extract_answer("a <answer> 1+2 </answer> tail") == (" 1+2 ", " tail")
    assert extract_answer("<answer>1</answer><answer>2</answer>", Rules(max_answers=2)) == ("2", "")
    assert extract_answer("</answer><answer>").outcome is Outcome.NO_ANSWER  # type: ignore[union-attr]


# ---- properties: total, bounded ------------------------------------------------------
# Bounded time is asserted through hypothesis deadlines (per example), not wall clocks.
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=2000)
EXPRESSIONY = st.text(alphabet="0123456789+-*/()= .x^!%eE_<>a", max_size=600)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, numbers=st.lists(st.integers(0, 1000), min_size=1, max_size=6), target=st.integers(-10, 10_000))
def test_random_strings_never_raise(text: str, numbers: list[int], target: int) -> None:
    score = score_response(text, Task(numbers, target))
    assert 0.0 <= score.reward <= 1.0


@settings(max_examples=400, deadline=2000)
@given(body=st.one_of(TEXT, EXPRESSIONY), numbers=st.lists(st.integers(0, 100), min_size=1, max_size=6), target=st.integers(0, 1000))
def test_random_answers_never_raise(body: str, numbers: list[int], target: int) -> None:
    score = score_response(answer(body), Task(numbers, target))
    assert 0.0 <= score.reward <= 1.0
    assert score.outcome in Outcome
    if score.correct:
        assert score.value == target and not score.missing and not score.extra


# ---- a stray </think>, huge numbers and badly typed rules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        ("<think>r</think><answer>3 - 5</answer></think><answer>3 + 5</answer>", Outcome.MALFORMED),  # a stray </think> hid a hedge
        ("<think>r</think></think><answer>3 - 5</answer><answer>3 + 5</answer>", Outcome.MALFORMED),
        ("<think>format: <answer>x</answer></think><answer>3 + 5</answer>", Outcome.CORRECT),  # restating the format is fine
        ("<think>r</think>\n<answer>3 + 5</answer>", Outcome.CORRECT),
    ],
)
def test_hedging_is_counted_after_the_first_think_close(text: str, outcome: Outcome) -> None:
    assert score_response(text, Task((3, 5), 8)).outcome is outcome


@pytest.mark.parametrize("rules", [Rules(max_answer_chars=10**5), preset_rules("study").with_(max_answer_chars=10**5)])
def test_huge_literals_never_raise(rules: Rules) -> None:
    score = score_response("<answer>3 + " + "9" * 5000 + "</answer>", Task((3, 5), 8), rules)  # beyond str()'s 4,300 digits
    assert score.reward == rules.format_reward * (rules.scorer == "study") and len(score.reason) < 200
    assert ("beyond" if rules.scorer == "lab" else "more than 16 digits") in score.reason


@pytest.mark.parametrize(
    ("numbers", "target"),
    [((3, 5), 10**5000), ((3, 10**5000), 8), ((3, 10**15 + 1), 8), ((3, 5), 10**15 + 1), ((3, 5), -(10**15) - 1)],
    ids=["5000-digit target", "5000-digit number", "number over", "target over", "negative target over"],
)
def test_tasks_beyond_the_literal_limit_are_refused(numbers: tuple[int, ...], target: int) -> None:
    """No answer can write such a number (the scorer refuses literals beyond 10**15) or reach such a target:
    the task could only score 0, so `Task` refuses it, with a message that stays short."""
    with pytest.raises(ValueError, match=r"at most 10\*\*15") as info:
        Task(numbers, target)
    assert len(str(info.value)) < 200
    assert Task((3, 10**15), -(10**15)).numbers == (3, 10**15)  # the limit itself is fine


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_answer_chars": 2.5},
        {"max_magnitude": 1e20},
        {"max_magnitude": 10**2000},
        {"max_depth": True},
        {"max_answers": "1"},
        {"strict_ending": 1},
        {"correct_reward": "1"},
    ],
)
def test_rules_check_types(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Rules(**kwargs)


# ---- monotone: a value the rules forbid costs the whole reward, whatever else is wrong -------------------------

CLASSIC = preset_rules("classic")  # numbers at most once, whole non-negative intermediates
CLASSIC_TASK = Task((3, 6, 6, 100, 25, 50), 97)


@pytest.mark.parametrize(
    ("expression", "outcome"),
    [
        ("3-6+100", Outcome.DISALLOWED_OPERATION),  # a negative step
        ("3-6+100+1", Outcome.DISALLOWED_OPERATION),  # ... and a number not given: still 0, not 0.1
        ("(3-6)*(0-25)", Outcome.DISALLOWED_OPERATION),  # a negative step and a 0 not given
        ("100/(6-6)+(3-6)", Outcome.DISALLOWED_OPERATION),  # x/0 first, a negative step later
        ("(3-6)+100/(6-6)", Outcome.DISALLOWED_OPERATION),  # a negative step first, x/0 later
        ("100/3+1+1", Outcome.DISALLOWED_OPERATION),  # a fraction, and numbers not given
        ("100/(6-6)+3", Outcome.DIVISION_BY_ZERO),  # x/0 alone: well-formed, wrong
        ("100/(6-6)+1", Outcome.WRONG_NUMBERS),
        ("100-6+3", Outcome.CORRECT),
    ],
)
def test_classic_scoring_is_monotone(expression: str, outcome: Outcome) -> None:
    score = score_response(f"<answer>{expression}</answer>", CLASSIC_TASK, CLASSIC)
    assert score.outcome is outcome, score
    assert score.reward == {Outcome.DISALLOWED_OPERATION: 0.0, Outcome.CORRECT: 1.0}.get(outcome, 0.1)


def test_adding_to_an_answer_with_a_forbidden_step_never_raises_its_reward() -> None:
    base = "3-6+100"
    for tail in ["", "+1", "+1+1", "*0", "/(6-6)", "+25-25", "+(0-1)", "+2**2"]:
        assert score_response(f"<answer>{base}{tail}</answer>", CLASSIC_TASK, CLASSIC).reward == 0.0, tail
