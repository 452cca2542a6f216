"""Parse and evaluate an answer expression: bounded work, exact fractions, no `eval`.

Written by hand because Python's `ast`/`eval` accept far more than Countdown allows
(`**`, `//`, names, calls) and have unbounded cost (`9**9**9`); a 60-line recursive
descent parser over five tokens is smaller than any sandbox around them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from typing import Union

from countdown_env.rules import DEFAULT_RULES, Rules


class Outcome(str, Enum):
    """Why an answer earned what it earned."""

    NO_ANSWER = "no_answer"
    MALFORMED = "malformed"
    DISALLOWED_OPERATION = "disallowed_operation"
    LIMIT_EXCEEDED = "limit_exceeded"
    WRONG_NUMBERS = "wrong_numbers"
    DIVISION_BY_ZERO = "division_by_zero"
    WRONG_VALUE = "wrong_value"
    CORRECT = "correct"


Value = Union[int, Fraction]


@dataclass(frozen=True)
class Num:
    value: int


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Neg:
    operand: Node


Node = Union[Num, BinOp, Neg]


class ExpressionError(Exception):
    """An answer that cannot be scored, with the outcome that explains why."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


# Characters models commonly write for the four operators.
_ALIASES = str.maketrans({"×": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-"})
_TOKEN = re.compile(r"\s*(?:(\d+)|(\*\*|//|[-+*/()=])|(\S))")
_NAMED_BAD = {"**": "power (**)", "//": "floor division (//)"}
_CHAR_BAD = {"%": "modulo (%)", "!": "factorial (!)", "^": "power (^)", ".": "decimal point", ",": "comma"}


def tokenize(text: str, rules: Rules = DEFAULT_RULES) -> list[str]:
    """Split an answer into integer literals and operator tokens, rejecting anything else."""
    if len(text) > rules.max_answer_chars:
        raise ExpressionError(Outcome.LIMIT_EXCEEDED, f"answer longer than {rules.max_answer_chars} characters")
    if re.search(r"[A-Za-z_]{2,}", text):
        name = re.search(r"[A-Za-z_]{2,}", text).group(0)  # type: ignore[union-attr]
        raise ExpressionError(Outcome.DISALLOWED_OPERATION, f"names and functions are not allowed ({name!r})")
    text = text.translate(_ALIASES)
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        number, op, other = match.groups()
        if number is not None:
            if len(number) > len(str(rules.max_magnitude)):
                raise ExpressionError(Outcome.LIMIT_EXCEEDED, f"literal with {len(number)} digits")
            tokens.append(number)
        elif op is not None:
            if op in _NAMED_BAD:
                raise ExpressionError(Outcome.DISALLOWED_OPERATION, f"{_NAMED_BAD[op]} is not allowed")
            tokens.append(op)
        else:
            if other in _CHAR_BAD:
                raise ExpressionError(Outcome.DISALLOWED_OPERATION, f"{_CHAR_BAD[other]} is not allowed")
            raise ExpressionError(Outcome.MALFORMED, f"unexpected character {other!r}")
    if not tokens:
        raise ExpressionError(Outcome.MALFORMED, "empty answer")
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ;
    factor := INT | '(' expr ')' | '-' factor (only if unary minus is allowed)."""

    def __init__(self, tokens: list[str], rules: Rules) -> None:
        self.tokens = tokens
        self.pos = 0
        self.rules = rules
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def binary(self, op: str, left: Node, right: Node) -> Node:
        if op not in self.rules.operators:
            raise ExpressionError(Outcome.DISALLOWED_OPERATION, f"operator {op!r} is not allowed by the rules")
        return BinOp(op, left, right)

    def expr(self) -> Node:
        node = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            node = self.binary(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while self.peek() in ("*", "/"):
            op = self.take()
            node = self.binary(op, node, self.factor())
        return node

    def factor(self) -> Node:
        token = self.peek()
        if token is None:
            raise ExpressionError(Outcome.MALFORMED, "expression ends too early")
        if token.isdigit():
            self.take()
            return Num(int(token))
        if token == "(":
            self.take()
            self.depth += 1
            if self.depth > self.rules.max_depth:
                raise ExpressionError(Outcome.LIMIT_EXCEEDED, f"parentheses nested deeper than {self.rules.max_depth}")
            node = self.expr()
            if self.peek() != ")":
                raise ExpressionError(Outcome.MALFORMED, "unbalanced parentheses")
            self.take()
            self.depth -= 1
            return node
        if token == "-":
            if not self.rules.allow_unary_minus:
                raise ExpressionError(Outcome.DISALLOWED_OPERATION, "unary minus is not allowed")
            self.take()
            return Neg(self.factor())
        raise ExpressionError(Outcome.MALFORMED, f"unexpected {token!r}")


def parse(text: str, rules: Rules = DEFAULT_RULES) -> Node:
    """Parse an answer into a tree; a trailing `= <int>` is dropped if the rules allow it."""
    tokens = tokenize(text, rules)
    if "=" in tokens:
        at = tokens.index("=")
        tail = tokens[at + 1 :]
        if not rules.allow_trailing_equals:
            raise ExpressionError(Outcome.MALFORMED, "'=' is not allowed in the answer")
        if len(tail) != 1 or not tail[0].isdigit():
            raise ExpressionError(Outcome.MALFORMED, "'=' must be followed by a single number")
        tokens = tokens[:at]
        if not tokens:
            raise ExpressionError(Outcome.MALFORMED, "nothing before '='")
    parser = _Parser(tokens, rules)
    node = parser.expr()
    if parser.pos != len(tokens):
        raise ExpressionError(Outcome.MALFORMED, f"unexpected {tokens[parser.pos]!r} after a complete expression")
    return node


def literals(node: Node) -> list[int]:
    """The integer literals of a tree, left to right."""
    out: list[int] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Num):
            out.append(item.value)
        elif isinstance(item, Neg):
            stack.append(item.operand)
        else:
            stack.extend((item.right, item.left))
    return out


def apply(op: str, a: Value, b: Value) -> Value | None:
    """One exact operation; None for division by zero. Integers stay ints (fast path)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return a // b if a % b == 0 else Fraction(a, b)
    out = Fraction(a) / b
    return out.numerator if out.denominator == 1 else out


def check_value(value: Value, rules: Rules) -> None:
    """Enforce the rules on one intermediate value."""
    if isinstance(value, Fraction):
        if rules.integer_intermediates:
            raise ExpressionError(Outcome.DISALLOWED_OPERATION, f"non-integer intermediate {value}")
        big = max(abs(value.numerator), value.denominator)
    else:
        big = abs(value)
    if big > rules.max_magnitude:
        raise ExpressionError(Outcome.LIMIT_EXCEEDED, f"intermediate value beyond {rules.max_magnitude}")
    if value < 0 and not rules.allow_negative_intermediates:
        raise ExpressionError(Outcome.DISALLOWED_OPERATION, f"negative intermediate {value}")


def evaluate(node: Node, rules: Rules = DEFAULT_RULES) -> Value:
    """Exact value of a parsed tree under the rules (depth is bounded by the parser)."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Neg):
        value = -evaluate(node.operand, rules)
        check_value(value, rules)
        return value
    left, right = evaluate(node.left, rules), evaluate(node.right, rules)
    value = apply(node.op, left, right)
    if value is None:
        raise ExpressionError(Outcome.DIVISION_BY_ZERO, "division by zero")
    check_value(value, rules)
    return value


def to_text(node: Node) -> str:
    """Render a tree with the parentheses it needs."""
    if isinstance(node, Num):
        return str(node.value)
    if isinstance(node, Neg):
        return f"-{_wrap(node.operand, True)}"
    prec = _PREC[node.op]
    left = _wrap(node.left, _prec(node.left) < prec)
    right = _wrap(node.right, _prec(node.right) < prec or (_prec(node.right) == prec and node.op in "-/"))
    return f"{left} {node.op} {right}"


_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def _prec(node: Node) -> int:
    return _PREC[node.op] if isinstance(node, BinOp) else 3


def _wrap(node: Node, paren: bool) -> str:
    text = to_text(node)
    return f"({text})" if paren else text
