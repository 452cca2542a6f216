"""Reasoning traces from an OpenAI-compatible chat model, as the study made them with a strong model.

One system prompt per condition (written for this project) asks for the condition's
behaviours and forbids the others; the user message is the task as `Rules.question` states
it. Requests go through the client every LLM caller shares (`runtime.llm_client`): at most
`concurrency` in flight, the `openai` client's retries (`max_retries`, exponential back-off,
`Retry-After`), a deadline per request attempt (`timeout`) and the key from OPENAI_API_KEY only.
Each reply is appended to a JSONL file as it arrives, so an interrupted run resumes where it
stopped: tasks already in the file are not requested again.

Replies are untrusted text: they are only parsed for the two tag pairs and scored with
`score_response` (which never evaluates code); nothing is filtered out unless asked
(`keep="correct"` or `"incorrect"`). The behaviours of an LLM trace are not known when it is
written (`behaviors` is null); `countdown-lab classify` labels them.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from countdown_env.files import append_jsonl, read_jsonl
from countdown_env.rules import ANSWER_CLOSE, ANSWER_OPEN, DEFAULT_RULES, THINK_CLOSE, THINK_OPEN, Rules, format_completion
from countdown_env.scoring import score_response
from countdown_env.tasks import Task
from priming.conditions import CONDITIONS, get_condition
from runtime.llm_client import ClientConfig, LLMClient, redact

if TYPE_CHECKING:
    import openai

#: Bumped when the prompts or the row format change.
LLM_GENERATOR_VERSION = "openai-1"
KEEP = ("all", "correct", "incorrect")

# ---- prompts --------------------------------------------------------------------------

_COMMON = f"""You write worked solutions for the Countdown numbers game, to be used as training data.
The user gives a list of numbers and a target. Combine the numbers with +, -, * and / (each number used exactly once; parentheses allowed) to make the target.

Format, exactly:
{THINK_OPEN}your reasoning{THINK_CLOSE}
{ANSWER_OPEN}the final expression only, e.g. (1 + 2) / 3{ANSWER_CLOSE}

Write the reasoning in the first person, as someone solving the puzzle for the first time, in plain sentences. Write every computation as `a op b = c`, and get every computation right. Nothing after {ANSWER_CLOSE}."""

_BEHAVIOURS = {
    "verification": 'verification: explicitly check results against the target or a value you need ("52 is not 32", "that gives 32, which is the target")',
    "backtracking": 'backtracking: when a path fails, say that you go back and try a different combination ("let me go back to 25, 30 and 3")',
    "subgoal_setting": 'subgoal setting: before combining, state intermediate goals ("first get close to 30, then use 4 and 3 to make up the difference")',
    "backward_chaining": 'backward chaining: reason from the target back to the inputs ("32 = 8 * 4, so I need 8 from 25, 30 and 3")',
}

_ABSENT = {
    "verification": 'Do not compare any result with the target or with a value you need: no "is not 32", "too big", "too small", "close", "correct" or "that works".',
    "backtracking": "Do not abandon a path or go back: no failed attempts.",
    "subgoal_setting": "Do not state plans or intermediate goals before acting.",
    "backward_chaining": "Do not reason backwards from the target; only combine the given numbers forwards.",
}

_NO_VERIFY_FAILURE = (
    "When a path fails, write its last computation and then say you go back, without saying why it failed "
    "(the decision to go back is the only sign of failure)."
)

_INCORRECT = (
    "This dataset needs WRONG final answers: the expression in the answer tags must use each given number exactly once "
    "and be well-formed, but must NOT equal the target. Keep the reasoning style described above, make every written "
    "computation arithmetically correct, and never say that the answer is wrong."
)


def system_prompt(condition: str, *, incorrect: bool = False) -> str:
    """The system prompt that asks for `condition`'s behaviours and forbids the others.

    The controls (`empty_cot`, `dots`) ask for `all_strategies` traces; their reasoning is
    removed afterwards (`control_text`).
    """
    cond = get_condition(condition)
    if cond.control is not None:
        cond = CONDITIONS["all_strategies"]
    parts = [_COMMON]
    if cond.behaviors:
        shown = "\n".join(f"- {_BEHAVIOURS[b]}" for b in _BEHAVIOURS if b in cond.behaviors)
        parts.append(f"Your reasoning must show these behaviours, each at least once:\n{shown}")
        if "backtracking" in cond.behaviors:
            parts.append("Explore: try at least one combination that fails before you find the one that works.")
    else:
        parts.append("Go straight to a solution: write only the computations of one path that works, then the answer.")
    absent = [_ABSENT[b] for b in _BEHAVIOURS if b not in cond.behaviors]
    if absent:
        parts.append("Avoid everything else:\n" + "\n".join(f"- {a}" for a in absent))
    if "backtracking" in cond.behaviors and "verification" not in cond.behaviors:
        parts.append(_NO_VERIFY_FAILURE)
    if incorrect:
        parts.append(_INCORRECT)
    return "\n\n".join(parts)


def messages(task: Task, condition: str, *, incorrect: bool = False, rules: Rules = DEFAULT_RULES) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt(condition, incorrect=incorrect)},
        {"role": "user", "content": rules.question(task)},
    ]


# ---- replies --------------------------------------------------------------------------

_THINK = re.compile(re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE), re.S)
_ANSWER = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.S)


@dataclass(frozen=True)
class ParsedReply:
    text: str
    """The completion: normalised to `<think>..</think>\\n<answer>..</answer>` when both parts
    were found, else the reply as it came."""
    well_formed: bool
    think: str | None
    answer: str | None


def parse_reply(content: str) -> ParsedReply:
    """Find the reasoning (the first think block) and the answer (the last answer block)."""
    think = _THINK.search(content)
    answers = _ANSWER.findall(content)
    if think is None or not answers:
        return ParsedReply(content, False, think.group(1) if think else None, answers[-1] if answers else None)
    thought, answer = think.group(1).strip(), answers[-1].strip()
    return ParsedReply(format_completion(thought, answer), True, thought, answer)


def control_text(parsed: ParsedReply, condition: str) -> str:
    """The completion of a control condition made from an all_strategies reply."""
    control = get_condition(condition).control
    if control is None or not parsed.well_formed:
        return parsed.text
    assert parsed.think is not None and parsed.answer is not None  # well_formed guarantees both
    return format_completion("." * len(parsed.think) if control == "dots" else "", parsed.answer)


# ---- the run --------------------------------------------------------------------------


@dataclass(frozen=True)
class LLMConfig:
    """How traces are requested from a chat model."""

    model: str
    """Model name sent in each request."""
    condition: str = "all_strategies"
    """Priming condition (its system prompt)."""
    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (None: the client's default)."""
    incorrect: bool = False
    """Ask for wrong (but well-formed) final answers."""
    concurrency: int = 8
    """Requests in flight at once."""
    max_retries: int = 3
    """Retries per request (the openai client's back-off, honouring Retry-After)."""
    timeout: float = 120.0
    """Seconds one request attempt may take in all (a finite number > 0), then it is retried."""
    temperature: float = 0.7
    max_tokens: int = 2048
    """Completion budget per reply."""
    seed: int = 0
    """Sent as `seed + index` with each request, for servers that support sampling seeds."""
    keep: str = "all"
    """Which traces the dataset keeps: all, correct or incorrect (the JSONL of replies keeps all)."""

    def __post_init__(self) -> None:
        get_condition(self.condition)
        if not self.model:
            raise ValueError("model must be a non-empty model name (--model)")
        self.client_config  # noqa: B018 -- validates base_url, timeout, max_retries and concurrency
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {KEEP}, got {self.keep!r}")

    @property
    def client_config(self) -> ClientConfig:
        """The endpoint as the shared client takes it; a missing OPENAI_API_KEY is an error before any request."""
        return ClientConfig(self.base_url, self.timeout, self.max_retries, self.concurrency, key_required=True)


@dataclass(frozen=True)
class LLMRun:
    """What one call of `generate_llm_traces` did."""

    requested: int
    written: int
    skipped: int
    """Tasks already in the output file (resumed)."""
    failed: int
    """Requests that still failed after retries (not written; a re-run retries them)."""
    errors: tuple[str, ...]


def task_key(index: int, task: Task) -> str:
    """Identity of a row in the output file: position and content, so a changed task list is not mistaken for the old one."""
    return f"{index}:{' '.join(map(str, task.numbers))}:{task.target}"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a replies file; a last line cut off by a crash is ignored (it is re-requested)."""
    if not path.exists():
        return []
    return [row for row in read_jsonl(path) if "key" in row]


def reply_identity(config: LLMConfig) -> dict[str, Any]:
    """What a stored reply must share with a run to be reused by it: the prompt and who answered it."""
    return {"condition": config.condition, "incorrect": config.incorrect, "model": config.model, "generator": LLM_GENERATOR_VERSION}


def check_resumable(rows: Iterable[dict[str, Any]], config: LLMConfig, path: Path) -> None:
    """Refuse to resume from replies asked of another model, with another prompt or by another generator version.

    Rows are matched to tasks by `task_key` alone, so without this check a run with another
    --condition, --incorrect or --model in the same folder would silently reuse the old replies.
    """
    want = reply_identity(config)
    for row in rows:
        got = {name: row.get(name) for name in want}
        if got != want:
            differ = ", ".join(f"{name} {got[name]!r} (now {want[name]!r})" for name in want if got[name] != want[name])
            raise ValueError(
                f"{path} holds replies made with another setup: {differ}; use another --output-dir (or delete that file to start over)"
            )


async def request_trace(api: openai.AsyncOpenAI, task: Task, index: int, config: LLMConfig, rules: Rules = DEFAULT_RULES) -> dict[str, Any]:
    """Ask for one trace and return its output row."""
    reply = await api.chat.completions.create(
        model=config.model,
        messages=messages(task, config.condition, incorrect=config.incorrect, rules=rules),
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        seed=config.seed + index,
    )
    choice = reply.choices[0]
    content = choice.message.content or ""
    parsed = parse_reply(content)
    text = control_text(parsed, config.condition)
    score = score_response(text, task, rules)
    usage = reply.usage.model_dump() if reply.usage is not None else None
    return {
        "key": task_key(index, task),
        "index": index,
        "numbers": list(task.numbers),
        "target": task.target,
        "condition": config.condition,
        "incorrect": config.incorrect,
        "text": text,
        "raw": content,
        "well_formed_reply": parsed.well_formed,
        "answer": score.answer,
        "correct": score.correct,
        "outcome": score.outcome.value,
        "behaviors": None,
        "model": config.model,
        "finish_reason": choice.finish_reason,
        "usage": usage,
        "generator": LLM_GENERATOR_VERSION,
    }


def generate_llm_traces(
    tasks: Sequence[Task],
    config: LLMConfig,
    output: str | Path,
    *,
    client: LLMClient | None = None,
    rules: Rules = DEFAULT_RULES,
    progress: bool = True,
) -> LLMRun:
    """Request a trace for every task not yet in `output` (JSONL), appending each reply as it arrives.

    At most `config.concurrency` requests are in flight. A request that still fails after the
    client's retries is reported in the result and left out of the file, so running the same
    call again requests exactly the missing tasks. `client` defaults to one built from `config`.
    """
    client = client or LLMClient(config.client_config)  # a missing key fails here, before anything is written
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    existing = read_rows(output)
    check_resumable(existing, config, output)
    done = {row["key"] for row in existing}
    todo = [(i, task) for i, task in enumerate(tasks) if task_key(i, task) not in done]
    append_jsonl(output, [])  # creates the file, and cuts a line torn by a crash so no new row gets glued to it
    written, errors = asyncio.run(_request_all(client, todo, config, rules, output, progress))
    for line in errors[:5]:
        print(f"prime: request failed after retries: {line}", file=sys.stderr)
    return LLMRun(len(todo), written, len(done & {task_key(i, t) for i, t in enumerate(tasks)}), len(errors), tuple(errors))


async def _request_all(
    client: LLMClient, todo: Sequence[tuple[int, Task]], config: LLMConfig, rules: Rules, output: Path, progress: bool
) -> tuple[int, list[str]]:
    """Request the `todo` traces concurrently, appending each row to `output` as it arrives; (rows written, errors)."""
    import openai
    from tqdm import tqdm

    async with client.open() as api:

        async def ask(k: int) -> dict[str, Any] | str:
            index, task = todo[k]
            try:
                return await request_trace(api, task, index, config, rules)
            except openai.OpenAIError as err:
                # A server may echo the API key in its error text: never store or print it.
                return redact(f"task {index} {list(task.numbers)} -> {task.target}: {type(err).__name__}: {err}")

        written, errors = 0, []
        with tqdm(total=len(todo), desc="llm traces", file=sys.stderr, disable=not progress) as bar:
            async for _, row in client.as_completed(ask, len(todo)):
                if isinstance(row, str):
                    errors.append(row)
                else:
                    append_jsonl(output, [row])  # a crash loses at most the replies in flight
                    written += 1
                bar.update(1)
    return written, errors


def select_rows(rows: Iterable[dict[str, Any]], tasks: Sequence[Task], keep: str) -> list[dict[str, Any]]:
    """The rows of `tasks` (in task order) that `keep` admits."""
    by_key = {row["key"]: row for row in rows}
    out = []
    for i, task in enumerate(tasks):
        row = by_key.get(task_key(i, task))
        if row is None:
            continue
        if keep == "all" or (keep == "correct") == bool(row["correct"]):
            out.append(row)
    return out


def config_dict(config: LLMConfig) -> dict[str, Any]:
    """The config as written to metadata (no key: it never leaves the environment)."""
    return asdict(config)
