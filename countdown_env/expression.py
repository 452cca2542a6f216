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


Value = int | Fraction


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


Node = Num | BinOp | Neg


class ExpressionError(Exception):
    """An answer that cannot be scored, with the outcome that explains why."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


# Characters models commonly write for the four operators.
_ALIASES = str.maketrans({"×": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-"})
# ASCII digits only: `\d` would also take Arabic-Indic or full-width digits, which
# the prompt never asks for and which make "which literal is which" ambiguous.
_TOKEN = re.compile(r"\s*(?:([0-9]+)|(\*\*|//|[-+*/()=])|(\S))")
_NAME = re.compile(r"[A-Za-z_]{2,}")
# Fast path for the common answer made only of digits, operators, parentheses and
# spaces: one findall instead of a Python loop over matches. `**` and `//` are excluded
# here so they still get their own "not allowed" reason from the full tokenizer.
_PLAIN = re.compile(r"[0-9+\-*/()= ]*")
_PLAIN_TOKEN = re.compile(r"[0-9]+|[-+*/()=]")
_NAMED_BAD = {"**": "power (**)", "//": "floor division (//)"}
_CHAR_BAD = {"%": "modulo (%)", "!": "factorial (!)", "^": "power (^)", ".": "decimal point", ",": "comma"}


def tokenize(text: str, rules: Rules = DEFAULT_RULES) -> list[str]:
    """Split an answer into integer literals and operator tokens, rejecting anything else."""
    if len(text) > rules.max_answer_chars:
        raise ExpressionError(Outcome.LIMIT_EXCEEDED, f"answer longer than {rules.max_answer_chars} characters")
    if _PLAIN.fullmatch(text) and "**" not in text and "//" not in text:
        tokens = _PLAIN_TOKEN.findall(text)
        digits = len(str(rules.max_magnitude))
        for token in tokens:
            if len(token) >= digits and token.isdigit() and (len(token) > digits or int(token) > rules.max_magnitude):
                raise ExpressionError(
                    Outcome.LIMIT_EXCEEDED, f"literal {token[:20]}{'...' if len(token) > 20 else ''} beyond {rules.max_magnitude}"
                )
        if not tokens:
            raise ExpressionError(Outcome.MALFORMED, "empty answer")
        return tokens
    name = _NAME.search(text)
    if name:
        raise ExpressionError(Outcome.DISALLOWED_OPERATION, f"names and functions are not allowed ({name.group(0)!r})")
    text = text.translate(_ALIASES)
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        number, op, other = match.groups()
        if number is not None:
            # The length test comes first: int() of a huge digit string is itself slow
            # (and refused beyond 4300 digits).
            if len(number) > len(str(rules.max_magnitude)) or int(number) > rules.max_magnitude:
                raise ExpressionError(
                    Outcome.LIMIT_EXCEEDED, f"literal {number[:20]}{'...' if len(number) > 20 else ''} beyond {rules.max_magnitude}"
                )
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
    factor := INT | '(' expr ')' | '-' factor (only if unary minus is allowed).

    Chains (`1+1+...`) are loops; only parentheses and unary minus recurse, and both
    count toward `rules.max_depth`, which `Rules` caps so the recursion stays far
    below Python's limit."""

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

    def enter(self, what: str) -> None:
        self.depth += 1
        if self.depth > self.rules.max_depth:
            raise ExpressionError(Outcome.LIMIT_EXCEEDED, f"{what} nested deeper than {self.rules.max_depth}")

    # Tree-building hooks; `_EvaluatingParser` overrides them to compute values instead.
    def num(self, token: str) -> Node:
        return Num(int(token))

    def neg(self, operand: Node) -> Node:
        return Neg(operand)

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
            return self.num(token)
        if token == "(":
            self.take()
            self.enter("parentheses")
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
            self.enter("unary minus")
            node = self.neg(self.factor())
            self.depth -= 1
            return node
        raise ExpressionError(Outcome.MALFORMED, f"unexpected {token!r}")


def parse(text: str, rules: Rules = DEFAULT_RULES) -> Node:
    """Parse an answer into a tree; a trailing `= <int>` is dropped if the rules allow it."""
    tokens = _drop_trailing_equals(tokenize(text, rules), rules)
    parser = _Parser(tokens, rules)
    node = parser.expr()
    if parser.pos != len(tokens):
        raise ExpressionError(Outcome.MALFORMED, f"unexpected {tokens[parser.pos]!r} after a complete expression")
    return node


class _EvaluatingParser(_Parser):
    """The same grammar, computing values while parsing (the scorer's hot path).

    Gives exactly what `parse` then `literals` and `evaluate` give, without building a
    tree: literals are collected as they are read, and evaluation errors (x/0, a rule
    broken by an intermediate) are recorded rather than raised (`worse` keeps the one
    that decides the verdict), so that a syntax error later in the text still wins and
    the numbers can still be checked. Values are propagated as None after an error.
    """

    def __init__(self, tokens: list[str], rules: Rules) -> None:
        super().__init__(tokens, rules)
        self.used: list[int] = []
        self.error: ExpressionError | None = None
        self.limit = rules.max_magnitude
        self.plain_ints_ok = rules.allow_negative_intermediates

    def num(self, token: str) -> Value:  # type: ignore[override]
        value = int(token)
        self.used.append(value)
        return value

    def neg(self, operand: Value | None) -> Value | None:  # type: ignore[override]
        return None if operand is None else self.check(-operand)

    def binary(self, op: str, left: Value | None, right: Value | None) -> Value | None:  # type: ignore[override]
        if op not in self.rules.operators:
            raise ExpressionError(Outcome.DISALLOWED_OPERATION, f"operator {op!r} is not allowed by the rules")
        if left is None or right is None:
            return None
        value = apply(op, left, right)
        if value is None:
            return self.fail(ExpressionError(Outcome.DIVISION_BY_ZERO, "division by zero"))
        return self.check(value)

    def check(self, value: Value) -> Value | None:
        # Fast accept for the common case; everything else goes through check_value.
        if type(value) is int and -self.limit <= value <= self.limit and (value >= 0 or self.plain_ints_ok):
            return value
        try:
            check_value(value, self.rules)
        except ExpressionError as err:
            return self.fail(err)
        return value

    def fail(self, err: ExpressionError) -> None:
        self.error = worse(self.error, err)
        return None


def parse_and_evaluate(text: str, rules: Rules = DEFAULT_RULES) -> tuple[Value | None, list[int], ExpressionError | None]:
    """(value, literals, evaluation error) in one pass; raises ExpressionError for
    text that does not parse (exactly when `parse` raises). The value is None iff there
    is an evaluation error, which is the one `evaluate(parse(text))` would raise (`worse`)."""
    tokens = _drop_trailing_equals(tokenize(text, rules), rules)
    parser = _EvaluatingParser(tokens, rules)
    value = parser.expr()
    if parser.pos != len(tokens):
        raise ExpressionError(Outcome.MALFORMED, f"unexpected {tokens[parser.pos]!r} after a complete expression")
    return value, parser.used, parser.error  # type: ignore[return-value]


def _drop_trailing_equals(tokens: list[str], rules: Rules) -> list[str]:
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
    return tokens


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


def worse(first: ExpressionError | None, new: ExpressionError) -> ExpressionError:
    """The evaluation error that decides the verdict: the first one, except that a value the rules forbid
    (disallowed or over the limit: reward 0) beats a division by zero (the format reward). Otherwise adding
    a division by zero to an answer with a disallowed step would raise its reward."""
    if first is None or (first.outcome is Outcome.DIVISION_BY_ZERO and new.outcome is not Outcome.DIVISION_BY_ZERO):
        return new
    return first


def apply(op: str, a: Value, b: Value) -> Value | None:
    """One exact operation; None for division by zero. Integers stay ints (fast path)."""
    if isinstance(a, int) and isinstance(b, int):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            return None
        return a // b if a % b == 0 else Fraction(a, b)
    if op == "+":
        out = a + b
    elif op == "-":
        out = a - b
    elif op == "*":
        out = a * b
    elif b == 0:
        return None
    else:
        out = Fraction(a) / b
    # Whole results go back to int so equal values have one representation (and the
    # int fast path above applies again).
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
    """Exact value of a parsed tree under the rules, left operand first; raises the error `worse` picks.

    Iterative post-order walk: a chain like `1+1+...+1` parses to a tree as deep as the
    chain is long, so recursion would hit Python's limit on long answers. After an error
    the walk goes on with None values, so a forbidden value elsewhere is still found.
    """
    values: list[Value | None] = []
    error: ExpressionError | None = None
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:
        item, children_done = stack.pop()
        if isinstance(item, Num):
            values.append(item.value)
            continue
        if not children_done:
            stack.append((item, True))
            if isinstance(item, Neg):
                stack.append((item.operand, False))
            else:
                stack.append((item.right, False))
                stack.append((item.left, False))
            continue
        if isinstance(item, Neg):
            operand = values.pop()
            value: Value | None = None if operand is None else -operand
            problem = None
        else:
            right, left = values.pop(), values.pop()
            value = None if left is None or right is None else apply(item.op, left, right)
            problem = "division by zero" if value is None and left is not None and right is not None else None
        try:
            if problem:
                raise ExpressionError(Outcome.DIVISION_BY_ZERO, problem)
            if value is not None:
                check_value(value, rules)
        except ExpressionError as err:
            error, value = worse(error, err), None
        values.append(value)
    if error is not None:
        raise error
    return values[0]  # type: ignore[return-value]


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


# ---- the study's answers: Python's arithmetic, evaluated exactly -------------------------------------
# The study's scorer checks an answer against r'^[\d+\-*/().\s]+$' and then runs Python's `eval` on it, so
# what it accepts is Python's grammar over those characters: decimals ('2.5', '5.', '.5'), '**', '//',
# unary '+' and '-'. Python refuses at compile time integers with leading zeros ('07'), every non-ASCII
# digit or space (checked over all of Unicode), vertical tab and \x1c-\x1f, and a line break ('\r': the
# answer is one line, split on '\n' only) outside parentheses. `evaluate_study` reproduces all of this
# without `eval`, with exact values; the comparison with the target (within 1e-5) is the scorer's.

# Whitespace Python's tokenizer skips (space, tab, form feed, and '\r' inside parentheses), then one token:
# a number (longest first, as Python's tokenizer reads '1.2.3' as '1.2' '.3'), an operator, or anything else.
_STUDY_TOKEN = re.compile(r"([ \t\x0c\r]*)(?:([0-9]*\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+)|(\*\*|//|\.\.\.|[-+*/()])|([^ \t\x0c\r]))", re.S)


def study_tokens(text: str) -> list[str]:
    """Python's tokens of an answer, or ExpressionError(MALFORMED) where Python's compiler refuses it."""
    tokens: list[str] = []
    depth = 0
    for match in _STUDY_TOKEN.finditer(text):
        space, number, op, other = match.groups()
        if "\r" in space and depth <= 0:
            raise ExpressionError(Outcome.MALFORMED, "a line break ('\\r') outside parentheses: Python reads two lines")
        if other is not None:
            raise ExpressionError(Outcome.MALFORMED, f"{other!r} is not in the study's arithmetic (digits, + - * / ( ) . and spaces)")
        if number is not None:
            if "." not in number and number[0] == "0" and number.strip("0"):
                raise ExpressionError(Outcome.MALFORMED, f"leading zeros in {number[:20]!r} (Python refuses them)")
            tokens.append(number)
            continue
        depth += {"(": 1, ")": -1}.get(op, 0)
        tokens.append(op)
    if not tokens:
        raise ExpressionError(Outcome.MALFORMED, "empty answer")
    return tokens


class _StudyParser(_Parser):
    """Python's grammar over the study's characters, computing exact values:
    expr := term (('+'|'-') term)* ; term := factor (('*'|'/'|'//') factor)* ;
    factor := ('+'|'-')* power ; power := atom ['**' factor] ; atom := NUMBER | '(' expr ')', then calls.

    Python compiles the whole answer before running it, so a syntax error anywhere (raised) beats an error
    at run time (x/0, a value over the limit, `()` or a call: recorded in `error`, values None after it).
    A run of signs is a loop (Python accepts long runs); parentheses and `**` count toward `max_depth`."""

    def __init__(self, tokens: list[str], rules: Rules) -> None:
        super().__init__(tokens, rules)
        self.error: ExpressionError | None = None
        self.digits = len(str(rules.max_magnitude))  # once: str() of a 1000-digit bound is not free

    def fail(self, outcome: Outcome, reason: str) -> None:
        if self.error is None:
            self.error = ExpressionError(outcome, reason)
        return None

    def check(self, value: Value) -> Value | None:
        big = max(abs(value.numerator), value.denominator) if isinstance(value, Fraction) else abs(value)
        if big > self.rules.max_magnitude:
            return self.fail(Outcome.LIMIT_EXCEEDED, f"a value beyond {self.rules.max_magnitude}")
        return value.numerator if isinstance(value, Fraction) and value.denominator == 1 else value

    def term(self) -> Value | None:  # type: ignore[override]
        value = self.factor()
        while self.peek() in ("*", "/", "//"):
            op = self.take()
            value = self.binary(op, value, self.factor())
        return value

    def binary(self, op: str, left: Value | None, right: Value | None) -> Value | None:  # type: ignore[override]
        if left is None or right is None:
            return None
        if op in ("/", "//") and right == 0:
            return self.fail(Outcome.DIVISION_BY_ZERO, "division by zero")
        return self.check((left // right) if op == "//" else apply(op, left, right))  # type: ignore[arg-type]

    def factor(self) -> Value | None:
        negative = False
        while self.peek() in ("+", "-"):
            negative ^= self.take() == "-"
        value = self.power()
        return -value if negative and value is not None else value

    def power(self) -> Value | None:
        base = self.atom()
        if self.peek() != "**":
            return base
        self.take()
        self.enter("powers")
        exponent = self.factor()
        self.depth -= 1
        return None if base is None or exponent is None else self.raise_to(base, exponent)

    def raise_to(self, base: Value, exponent: Value) -> Value | None:
        """`base ** exponent` as Python computes it, exactly when the exponent is whole."""
        if base == 0 and exponent < 0:
            return self.fail(Outcome.DIVISION_BY_ZERO, "zero to a negative power")
        if isinstance(exponent, Fraction):  # Python's float power; a negative base gives a complex number
            if base < 0:
                return self.fail(Outcome.MALFORMED, "a negative number to a fractional power is complex, not a number")
            try:
                result = float(base) ** float(exponent)
            except OverflowError:
                return self.fail(Outcome.LIMIT_EXCEEDED, "a power beyond Python's floats")
            return self.check(Fraction(result))
        size = max(abs(base.numerator), base.denominator) if isinstance(base, Fraction) else abs(base)
        # |base| >= 2**(bits-1): beyond the limit's bits the power cannot be computed in bounded time (9**9**9).
        if size > 1 and (size.bit_length() - 1) * abs(exponent) > self.rules.max_magnitude.bit_length():
            return self.fail(Outcome.LIMIT_EXCEEDED, f"a power beyond {self.rules.max_magnitude}")
        return self.check(Fraction(base) ** exponent if exponent < 0 else base**exponent)

    def atom(self) -> Value | None:
        token = self.peek()
        if token is None:
            raise ExpressionError(Outcome.MALFORMED, "expression ends too early")
        self.take()
        if token == "(":
            value = self.fail(Outcome.MALFORMED, "() is an empty tuple, not a number") if self.peek() == ")" else self.inner()
            self.close()
        elif token == "...":
            value = self.fail(Outcome.MALFORMED, "... is Python's Ellipsis, not a number")
        elif token[0].isdigit() or token[0] == ".":
            value = self.literal(token)
        else:
            raise ExpressionError(Outcome.MALFORMED, f"unexpected {token!r}")
        while self.peek() == "(":  # a call: Python compiles `(3)(5)` and `(3)(*5)`, and fails when it runs them
            self.take()
            if self.peek() in ("*", "**"):
                self.take()
                self.inner()  # an unpacked argument is required after the star
            elif self.peek() != ")":
                self.inner()
            self.close()
            value = self.fail(Outcome.MALFORMED, "a number called like a function, as in (3)(5)")
        return value

    def inner(self) -> Value | None:
        self.enter("parentheses")
        value = self.expr()
        self.depth -= 1
        return value

    def close(self) -> None:
        if self.peek() != ")":
            raise ExpressionError(Outcome.MALFORMED, "unbalanced parentheses")
        self.take()

    def literal(self, token: str) -> Value | None:
        if "." in token:  # a float literal: exactly the double Python reads
            number = float(token)
            if number == float("inf"):
                return self.fail(Outcome.LIMIT_EXCEEDED, f"literal {token[:20]}... beyond Python's floats")
            return self.check(Fraction(number))
        if len(token.lstrip("0")) > self.digits:  # before int(): converting a huge string is slow
            return self.fail(Outcome.LIMIT_EXCEEDED, f"literal {token[:20]}... beyond {self.rules.max_magnitude}")
        return self.check(int(token))


def evaluate_study(text: str, rules: Rules = DEFAULT_RULES) -> tuple[Value | None, ExpressionError | None]:
    """(exact value, run-time error) of an answer as the study's scorer evaluates it with Python's `eval`;
    raises ExpressionError where Python would not compile it. The value is None iff there is an error."""
    tokens = study_tokens(text)
    parser = _StudyParser(tokens, rules)
    value = parser.expr()
    if parser.pos != len(tokens):
        raise ExpressionError(Outcome.MALFORMED, f"unexpected {tokens[parser.pos]!r} after a complete expression")
    return value, parser.error
