"""Parser and exact evaluator, cross-checked against an independent evaluator over Python's `ast`."""

from __future__ import annotations

import ast
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from countdown_env import Outcome, Rules, Task, score_response
from countdown_env.expression import BinOp, ExpressionError, Neg, Num, apply, evaluate, literals, parse, to_text, tokenize


def exact_eval(text: str) -> Fraction | None:
    """Independent reference: Python's own parser, walked with Fractions (None on x/0).

    Only used on text the test itself generated (integers, + - * /, parentheses).
    """

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.BinOp):
            a, b = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Div):
                return a / b  # ZeroDivisionError handled below
        raise AssertionError(f"unexpected node {ast.dump(node)}")

    try:
        return walk(ast.parse(text, mode="eval").body)
    except ZeroDivisionError:
        return None


# ---- random expression trees, rendered by the test (not by to_text) -----------------
@st.composite
def expression_text(draw: st.DrawFn, leaves: int | None = None) -> tuple[str, list[int]]:
    """A random expression over random numbers, with random spacing and redundant parentheses."""
    n = leaves or draw(st.integers(1, 6))
    numbers = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))

    def build(nums: list[int]) -> str:
        if len(nums) == 1:
            text = str(nums[0])
        else:
            cut = draw(st.integers(1, len(nums) - 1))
            op = draw(st.sampled_from("+-*/"))
            space = draw(st.sampled_from(["", " ", "  "]))
            text = f"({build(nums[:cut])}){space}{op}{space}({build(nums[cut:])})"
        # Drop the parentheses around a leaf sometimes, keep them otherwise (always safe).
        return text

    text = build(numbers)
    # Removing the parentheses around single literals keeps the meaning.
    for value in set(numbers):
        if draw(st.booleans()):
            text = text.replace(f"({value})", str(value))
    return text, numbers


@settings(max_examples=400, deadline=2000)
@given(data=expression_text(), offset=st.sampled_from([0, 0, 0, 1, -1, 7]), seed=st.integers(0, 2**16))
def test_random_expressions_correct_iff_independent_evaluation_agrees(data: tuple[str, list[int]], offset: int, seed: int) -> None:
    text, numbers = data
    reference = exact_eval(text)
    random.Random(seed).shuffle(numbers)
    if reference is None:
        score = score_response(f"<answer>{text}</answer>", Task(numbers, 1))
        assert score.outcome is Outcome.DIVISION_BY_ZERO
        return
    target = int(reference) + offset if reference.denominator == 1 else int(reference)
    score = score_response(f"<answer>{text}</answer>", Task(numbers, target))
    assert score.value == reference
    assert score.correct is (reference == target)
    assert score.outcome in (Outcome.CORRECT, Outcome.WRONG_VALUE)


@settings(max_examples=200, deadline=2000)
@given(data=expression_text())
def test_to_text_round_trips_with_minimal_parentheses(data: tuple[str, list[int]]) -> None:
    text, numbers = data
    tree = parse(text)
    rendered = to_text(tree)
    assert sorted(literals(parse(rendered))) == sorted(numbers)
    assert exact_eval(rendered) == exact_eval(text)
    assert rendered.count("(") <= text.count("(")


@settings(max_examples=200, deadline=2000)
@given(data=expression_text(leaves=4))
def test_evaluate_agrees_with_reference_under_tv_rules(data: tuple[str, list[int]]) -> None:
    """Under integer/non-negative rules, evaluate rejects exactly when some step breaks them."""
    text, _ = data
    rules = Rules(integer_intermediates=True, allow_negative_intermediates=False)

    def steps_ok(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return True
        value = exact_eval(ast.unparse(node))
        return steps_ok(node.left) and steps_ok(node.right) and value is not None and value.denominator == 1 and value >= 0  # type: ignore[attr-defined]

    reference = exact_eval(text)
    try:
        value = evaluate(parse(text, rules), rules)
    except ExpressionError as err:
        assert err.outcome in (Outcome.DISALLOWED_OPERATION, Outcome.DIVISION_BY_ZERO)
        assert reference is None or not steps_ok(ast.parse(text, mode="eval").body)
    else:
        assert value == reference and steps_ok(ast.parse(text, mode="eval").body)


# ---- units ------------------------------------------------------------------------
def test_tokenize() -> None:
    assert tokenize("12 + (3*4) = 24") == ["12", "+", "(", "3", "*", "4", ")", "=", "24"]
    assert tokenize("6 ÷ 3 × 2 − 1") == ["6", "/", "3", "*", "2", "-", "1"]
    for text, outcome in [
        ("2**3", Outcome.DISALLOWED_OPERATION),
        ("7//2", Outcome.DISALLOWED_OPERATION),
        ("   ", Outcome.MALFORMED),
        ("a", Outcome.MALFORMED),
    ]:
        with pytest.raises(ExpressionError) as info:
            tokenize(text)
        assert info.value.outcome is outcome


def test_parse_precedence_and_associativity() -> None:
    assert parse("1 - 2 - 3") == BinOp("-", BinOp("-", Num(1), Num(2)), Num(3))
    assert parse("8 / 4 / 2") == BinOp("/", BinOp("/", Num(8), Num(4)), Num(2))
    assert parse("1 + 2 * 3") == BinOp("+", Num(1), BinOp("*", Num(2), Num(3)))
    assert parse("-(1)", Rules(allow_unary_minus=True)) == Neg(Num(1))
    assert evaluate(parse("8 / 4 / 2")) == 1 and evaluate(parse("1 - 2 - 3")) == -4


def test_depth_limit_counts_parentheses_and_unary_minus() -> None:
    rules = Rules(max_depth=3, allow_unary_minus=True)
    assert evaluate(parse("(((1)))", rules)) == 1
    for text in ["((((1))))", "----1", "-(-(-(-1)))"]:
        with pytest.raises(ExpressionError) as info:
            parse(text, rules)
        assert info.value.outcome is Outcome.LIMIT_EXCEEDED


def test_magnitude_limit_on_literals_and_intermediates() -> None:
    rules = Rules(max_magnitude=1000)
    assert evaluate(parse("1000 - 1", rules), rules) == 999
    with pytest.raises(ExpressionError):
        parse("1001", rules)
    with pytest.raises(ExpressionError) as info:
        evaluate(parse("999 * 2", rules), rules)
    assert info.value.outcome is Outcome.LIMIT_EXCEEDED
    with pytest.raises(ExpressionError):  # a denominator counts too
        evaluate(parse("1 / 999 / 999", rules), rules)


def test_apply_is_exact_and_normalises_whole_fractions() -> None:
    half = apply("/", 1, 2)
    assert half == Fraction(1, 2)
    whole = apply("+", half, half)
    assert whole == 1 and type(whole) is int
    assert apply("/", 6, 3) == 2 and type(apply("/", 6, 3)) is int
    assert apply("/", -6, 4) == Fraction(-3, 2)
    assert apply("/", 5, 0) is None and apply("/", half, 0) is None
    assert apply("*", Fraction(2, 3), 3) == 2 and type(apply("*", Fraction(2, 3), 3)) is int


RULE_VARIANTS = [
    Rules(),
    Rules(integer_intermediates=True, allow_negative_intermediates=False),
    Rules(allow_unary_minus=True, max_magnitude=10**4, max_depth=4),
    Rules(operators=("+", "*"), allow_trailing_equals=False),
]


@settings(max_examples=500, deadline=2000)
@given(
    text=st.one_of(
        st.text(alphabet="0123456789+-*/()= ", max_size=40),
        st.text(alphabet="0123456789+-*/()=. x^!", max_size=40),
        expression_text().map(lambda d: d[0]),
    ),
    variant=st.integers(0, len(RULE_VARIANTS) - 1),
)
def test_one_pass_evaluation_agrees_with_parse_then_evaluate(text: str, variant: int) -> None:
    from countdown_env.expression import parse_and_evaluate

    rules = RULE_VARIANTS[variant]
    try:
        tree = parse(text, rules)
    except ExpressionError as err:
        with pytest.raises(ExpressionError) as info:
            parse_and_evaluate(text, rules)
        assert (info.value.outcome, info.value.reason) == (err.outcome, err.reason)
        return
    value, used, error = parse_and_evaluate(text, rules)
    assert used == literals(tree)
    try:
        expected = evaluate(tree, rules)
    except ExpressionError as err:
        assert value is None and error is not None and (error.outcome, error.reason) == (err.outcome, err.reason)
    else:
        assert error is None and value == expected and type(value) is type(expected)
