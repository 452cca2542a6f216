"""The rules of Countdown, defined once, and the prompts generated from them.

The scorer (`scoring.py`), the solver (`solver.py`), the generator (`tasks.py`) and
every prompt read the same `Rules` object, so a prompt never states a rule that the
scorer does not enforce.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from countdown_env.task import LITERAL_LIMIT  # defined with Task, the lowest module: no circle

if TYPE_CHECKING:
    from countdown_env.task import Task

ALL_OPERATORS = ("+", "-", "*", "/")
MAX_DEPTH_LIMIT = 100

#: Largest `max_magnitude`: a 1000-digit bound keeps every literal and value printable and fast to compare
#: (Python refuses str() of integers over 4300 digits).
MAX_MAGNITUDE_LIMIT = 10**1000

#: The answer format, defined once: the completion reasons inside <think> and puts
#: the final expression inside <answer>.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
#: How the assistant's turn begins in the study's templates (TinyZero's `base`, the study's `qwen-instruct`):
#: the prompt opens the reasoning, so a completion starts inside `<think>`.
ASSISTANT_PREFIX = f"Let me solve this step by step.\n{THINK_OPEN}"
#: The system turn of the study's `qwen-instruct` template, verbatim (grammar included).
CHAT_SYSTEM = (
    "You are a helpful assistant. You first thinks about the reasoning process in the mind and then provides the user with the answer."
)

#: Which scorer reads a completion (`Rules.scorer`).
SCORERS = ("lab", "study")
#: Under the `study` scorer, the rules that scorer enforces whatever a `Rules` says: each field must keep
#: this value, so that a prompt never states a rule the study's scorer does not enforce.
STUDY_FIXED = {
    "operators": ALL_OPERATORS,
    "use_all_numbers": True,
    "integer_intermediates": False,
    "allow_negative_intermediates": True,
    "allow_unary_minus": True,
    "allow_trailing_equals": False,
}


@dataclass(frozen=True)
class Rules:
    """What counts as a correct Countdown answer, and how it is rewarded."""

    operators: tuple[str, ...] = ALL_OPERATORS
    """Binary operators allowed in an answer (a subset of + - * /)."""
    use_all_numbers: bool = True
    """True: every given number exactly once. False: each at most once (the TV show)."""
    integer_intermediates: bool = False
    """True: every intermediate value must be an integer (the TV show's rule)."""
    allow_negative_intermediates: bool = True
    """False: no intermediate value may be negative."""
    allow_unary_minus: bool = False
    """True: `-3 + 5` is allowed; by default a leading minus is a disallowed operation."""
    allow_trailing_equals: bool = True
    """Tolerate a trailing `= <number>` after the expression (its number is not checked)."""
    correct_reward: float = 1.0
    """Reward for an expression that reaches the target under the rules."""
    format_reward: float = 0.1
    """Reward for a well-formed expression that is wrong (wrong numbers, value, or x/0)."""
    max_answers: int = 1
    """More `<answer>` blocks than this after the reasoning is hedging and scores 0 (malformed).
    Blocks inside `<think>...</think>` (e.g. restating the format) are not counted; the answer
    is always the last block."""
    strict_ending: bool = False
    """True: reward 0 unless the completion ends at its final `</answer>` (for RL training)."""
    max_answer_chars: int = 512
    """Longest answer expression parsed; longer answers are rejected without parsing."""
    max_depth: int = 32
    """Deepest nesting of parentheses and unary minus parsed (at most `MAX_DEPTH_LIMIT`)."""
    max_magnitude: int = LITERAL_LIMIT
    """Largest absolute numerator/denominator of any literal or intermediate value."""
    scorer: str = "lab"
    """`lab`: the rules above (the last `<answer>` anywhere, exact, strict). `study`: the study's veRL scorer
    (`verl/utils/reward_score/countdown.py`), evaluated exactly: only the completion's last line is read, the
    last `<answer>` on it; any answer found that is not correct earns `format_reward`; Python's arithmetic
    (decimals, `**`, `//`, unary signs) within 1e-5 of the target is correct. The fields in `STUDY_FIXED` must
    keep the values listed there; `max_answers` is not read. See docs/rules.md."""

    def __post_init__(self) -> None:
        # Types first: a float limit (2.5) or a bool (True == 1) would pass the range checks below and then
        # fail, or quietly loosen a limit, while scoring.
        for name in ("max_answers", "max_answer_chars", "max_depth", "max_magnitude"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in ("use_all_numbers", "integer_intermediates", "allow_negative_intermediates", "allow_unary_minus",
                     "allow_trailing_equals", "strict_ending"):  # fmt: skip
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("correct_reward", "format_reward"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not isinstance(self.operators, tuple):
            raise ValueError(f"operators must be a tuple of operator strings, got {self.operators!r}")
        if not self.operators or any(op not in ALL_OPERATORS for op in self.operators):
            raise ValueError(f"operators must be a non-empty subset of {ALL_OPERATORS}, got {self.operators!r}")
        if len(set(self.operators)) != len(self.operators):
            raise ValueError(f"operators has duplicates: {self.operators!r}")
        if not 0.0 <= self.format_reward <= self.correct_reward <= 1.0:
            raise ValueError(
                "need 0 <= format_reward <= correct_reward <= 1, got "
                f"format_reward={self.format_reward}, correct_reward={self.correct_reward}"
            )
        for name in ("max_answers", "max_answer_chars", "max_depth", "max_magnitude"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_depth > MAX_DEPTH_LIMIT:
            # The parser recurses once per nesting level; this keeps it far from Python's
            # recursion limit so scoring can never raise RecursionError.
            raise ValueError(f"max_depth must be <= {MAX_DEPTH_LIMIT}, got {self.max_depth}")
        if self.max_magnitude > MAX_MAGNITUDE_LIMIT:
            raise ValueError(f"max_magnitude must be <= 10**1000, got a {self.max_magnitude.bit_length()}-bit number")
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        if self.scorer == "study":
            changed = {name: getattr(self, name) for name, value in STUDY_FIXED.items() if getattr(self, name) != value}
            if changed:
                raise ValueError(f"the study scorer enforces {STUDY_FIXED}; these cannot change under it: {changed}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Rules:
        """Build rules from keyword overrides, with a clear error for an unknown name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown rule(s) {unknown}; known rules: {sorted(known)}")
        if "operators" in kwargs:
            kwargs["operators"] = tuple(kwargs["operators"])
        return cls(**kwargs)

    def with_(self, **kwargs: Any) -> Rules:
        return replace(self, **kwargs)

    # ---- prompt text, generated from the rules -----------------------------------
    def describe(self) -> str:
        """The rules in one sentence, as stated to the model.

        With every number required, TinyZero's words ("each number can only be used once"): the prompt the
        study's models saw, whose scorer also requires every number."""
        ops = ", ".join(self.operators)
        once = "each number can only be used once" if self.use_all_numbers else "each number can be used at most once"
        extra = []
        if self.integer_intermediates:
            extra.append("every intermediate result must be a whole number")
        if not self.allow_negative_intermediates:
            extra.append("no intermediate result may be negative")
        tail = (", " + ", ".join(extra)) if extra else ""
        return f"You can use basic arithmetic operations ({ops}) and {once}{tail}."

    def example_answer(self) -> str:
        if "/" in self.operators and "+" in self.operators:
            return "(1 + 2) / 3"
        return f"(1 {self.operators[0]} 2) {self.operators[-1]} 3"

    def question(self, task: Task) -> str:
        return (
            f"Using the numbers {list(task.numbers)}, create an equation that equals {task.target}. "
            f"{self.describe()} Show your work in {THINK_OPEN} {THINK_CLOSE} tags. "
            f"And return the final answer in {ANSWER_OPEN} {ANSWER_CLOSE} tags, "
            f"for example {ANSWER_OPEN} {self.example_answer()} {ANSWER_CLOSE}."
        )


DEFAULT_RULES = Rules()


def tinyzero_prompt(task: Task, rules: Rules = DEFAULT_RULES) -> str:
    """TinyZero's base-model template (the study's `base`), verbatim under the default rules. It ends inside
    `<think>`: the completion continues the reasoning and closes it with `</think>`."""
    return (
        "A conversation between User and Assistant. The user asks a question, and the Assistant "
        "solves it. The assistant first thinks about the reasoning process in the mind and then "
        "provides the user with the answer.\n"
        f"User: {rules.question(task)}\n"
        f"Assistant: {ASSISTANT_PREFIX}"
    )


def compact_prompt(task: Task, rules: Rules = DEFAULT_RULES) -> str:
    """A short prompt for tiny character-level models (their context is a few hundred chars)."""
    return f"Numbers: {' '.join(map(str, task.numbers))}\nTarget: {task.target}\n"


def chat_messages(task: Task, rules: Rules = DEFAULT_RULES) -> list[dict[str, str]]:
    """The study's `qwen-instruct` turns: its system message, then the question as the user turn. The user
    turn keeps the template's leading space, so a Qwen chat template renders the study's prompt byte for byte;
    `chat_prompt` then adds the start of the assistant's turn (`ASSISTANT_PREFIX`)."""
    return [{"role": "system", "content": CHAT_SYSTEM}, {"role": "user", "content": " " + rules.question(task)}]


def apply_chat_template(messages: list[dict[str, str]], tokenizer: Any) -> str:
    """`messages` as prompt text, ending where the assistant's reply begins.

    `tokenizer` is any object with Hugging Face's `apply_chat_template` (and a chat template),
    or a callable `messages -> str`; passed in, so this package never imports transformers.
    """
    if tokenizer is None:
        raise ValueError("prompt style 'chat' needs a tokenizer with a chat template (or a callable messages -> text)")
    if hasattr(tokenizer, "apply_chat_template"):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt style 'chat' needs a tokenizer with a chat template; use 'tinyzero' or 'compact' for a base model")
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if callable(tokenizer):
        return tokenizer(messages)
    raise TypeError(f"tokenizer must have apply_chat_template or be callable, got {type(tokenizer).__name__}")


def chat_prompt(task: Task, rules: Rules = DEFAULT_RULES, tokenizer: Any = None) -> str:
    """`chat_messages` through the tokenizer's chat template, then `ASSISTANT_PREFIX` (the study's
    `qwen-instruct`): the completion starts inside `<think>`, as in the `tinyzero` style."""
    return apply_chat_template(chat_messages(task, rules), tokenizer) + ASSISTANT_PREFIX


#: Every prompt style. `chat` renders through a tokenizer's chat template, so it needs one.
PROMPT_STYLES = {"tinyzero": tinyzero_prompt, "compact": compact_prompt, "chat": chat_prompt}


def render_prompt(task: Task, style: str = "tinyzero", rules: Rules = DEFAULT_RULES, *, tokenizer: Any = None) -> str:
    """The prompt text for `task` in one of `PROMPT_STYLES` (`chat` needs `tokenizer`)."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {sorted(PROMPT_STYLES)}")
    if style == "chat":
        return chat_prompt(task, rules, tokenizer)
    return PROMPT_STYLES[style](task, rules)


def format_completion(think: str, answer: str) -> str:
    """The completion format every trace and model output follows."""
    return f"{THINK_OPEN}{think}{THINK_CLOSE}\n{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def continuation(prompt: str, completion: str) -> str:
    """`completion` as the text that follows `prompt`: a trace's leading `<think>` is dropped when the prompt
    already opens the reasoning (the `tinyzero` and `chat` styles end with `<think>`), so `prompt + continuation`
    reads `...<think>reasoning</think>` with one `<think>`, as the model generates it. SFT pairs use this."""
    if prompt.endswith(THINK_OPEN) and completion.startswith(THINK_OPEN):
        return completion[len(THINK_OPEN) :]
    return completion
