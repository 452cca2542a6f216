"""Classify a JSONL file of completions, resumably: the job behind `countdown-lab classify`.

Input rows need ``text`` (or the field named by ``text_field``, e.g. ``output`` in veRL's rollout dumps,
copied to ``text``); every other field is copied. JSONL or parquet. Output rows get ``behaviors`` (the counts), or
``behaviors: null`` and ``judge_error`` for a trace the judge could not label, plus ``input_row`` (the
0-based line of the input row) and ``judge`` (which judge and version labelled it). An input row's own
``behaviors`` (e.g. the counts a priming trace was generated with) is kept as ``behaviors_input``, so the
judge's agreement with it can be computed from the output alone; a row that already has ``behaviors_input``
(an output classified again) keeps it. Under the study's protocol, ``judge_parse_failures`` lists the behaviours
whose reply held no count tag (counted as 0, as the study did).

Output is appended and fsynced as results arrive, so a killed job loses at most the requests in flight;
re-running the same command skips every row already in the output (failures included, unless
``retry_failed``) and so repeats no finished request. When all rows are done the file is rewritten in input
order (atomically, via a temporary file and ``os.replace``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from behavior_classifier.behaviors import Counts
from behavior_classifier.client import JudgeInput, LLMJudge, Usage
from countdown_env.errors import UsageError, user_input
from countdown_env.files import append_jsonl, cut_torn_tail, is_parquet, iter_jsonl, read_jsonl, read_parquet, write_jsonl_atomic
from runtime.llm_client import ERROR_CHARS, redact


class Judge(Protocol):
    """The small interface every judge offers: ``judge(text) -> counts``."""

    name: str
    version: str

    def __call__(self, text: str) -> Counts: ...


@dataclass(frozen=True)
class RunSummary:
    """What a classify run did."""

    total: int
    """Rows in the input."""
    already_done: int
    """Rows found in the output before this run (skipped)."""
    labelled: int
    """Rows labelled in this run."""
    failed: int
    """Rows recorded as failures in this run."""
    usage: Usage
    """Requests, tokens and cache hits of this run (LLM judge only; zeros for the heuristic)."""
    seconds: float
    failed_total: int = 0
    """Rows of the output that are failures now, this run's and earlier runs' (re-judged only with ``retry_failed``)."""

    def describe(self) -> str:
        u = self.usage
        return (
            f"{self.total} rows: {self.already_done} already done, {self.labelled} labelled, {self.failed} failed "
            f"({self.failed_total} failed in the output) "
            f"in {self.seconds:.1f}s; requests {u.requests}, cache hits {u.cache_hits}, "
            f"tokens {u.prompt_tokens} prompt + {u.completion_tokens} completion = {u.prompt_tokens + u.completion_tokens}"
        )


def read_rows(path: Path, *, text_field: str = "text", step: int | None = None) -> list[dict[str, Any]]:
    """Input rows (`input_rows`); each must have a string `text` (or `text_field`, copied to `text`). A half-written
    last JSONL line (a run still appending) is left for the next run, which labels it then."""
    rows = input_rows(path, text_field=text_field, step=step)
    for i, row in enumerate(rows):
        if not isinstance(row.get("text"), str):
            raise UsageError(
                f"{path}: row {i + 1} (of non-blank lines): each row needs a string field {text_field!r} (the completion)"
                + ("; veRL's rollout dumps keep it in 'output': --text-field output" if "output" in row and text_field == "text" else "")
            )
    return rows


def input_rows(path: Path | str, *, text_field: str = "text", step: int | None = None) -> list[dict[str, Any]]:
    """The rows of a JSONL or parquet file of completions, read as this lab's rollout rows (`as_rollout_row`)."""
    path = Path(path)
    with user_input():
        rows = read_parquet(path) if is_parquet(path) else read_jsonl(path)
    return [as_rollout_row(row, text_field=text_field, step=step if step is not None else step_of_file(path)) for row in rows]


def as_rollout_row(row: dict[str, Any], *, text_field: str = "text", step: int | None = None) -> dict[str, Any]:
    """`row` with what this lab's rollout rows carry, taken from a veRL rollout dump's fields where it lacks them:
    `text` from `text_field` (veRL: `output`), `step` (the row's own, else `step`), `numbers`/`target` from `gts`
    (the ground truth `export-verl` writes), `correct` from `acc` (what its reward module returns)."""
    row = dict(row)
    if text_field != "text" and text_field in row:
        row["text"] = row[text_field]
    if "step" not in row and step is not None:
        row["step"] = step
    truth = row.get("gts")
    if isinstance(truth, dict) and "numbers" not in row and "target" in truth:
        row["numbers"], row["target"] = truth.get("numbers"), truth["target"]
    if "correct" not in row and isinstance(row.get("acc"), bool | int | float):
        row["correct"] = bool(row["acc"])
    return row


def step_of_file(path: Path) -> int | None:
    """The step a file is named after (veRL dumps step N's rollouts to `N.jsonl`), or None."""
    return int(path.stem) if path.stem.isdigit() else None


def _read_done(output: Path, rows: list[dict[str, Any]], retry_failed: bool) -> dict[int, dict[str, Any]]:
    """Rows already in `output`, by input row. Cuts a torn last line (a kill mid-write) and, if asked, drops failures.

    Anything else in `output` (rows of another file, a line that is not a classify row) is refused with a
    `UsageError` before the file is touched: classify appends to and rewrites its output, and a file that is
    not ours must never be changed.
    """
    if not output.exists():
        return {}
    done: dict[int, dict[str, Any]] = {}
    dropped = False
    refuse = f"; choose a new --output, or delete {output} to start over"
    try:
        found = list(iter_jsonl(output))  # skips a torn last line, which is cut below once the file is known to be ours
    except ValueError as err:
        raise UsageError(f"{err}: so {output} is not an output of classify{refuse}") from None
    for line_no, row in found:
        index = row.get("input_row")
        if not isinstance(index, int) or isinstance(index, bool) or "behaviors" not in row:
            raise UsageError(f"{output}:{line_no} has no 'input_row' and 'behaviors', so {output} is not an output of classify{refuse}")
        if not 0 <= index < len(rows) or row.get("text") != rows[index]["text"]:
            raise UsageError(f"{output} holds rows of another input (row {index} differs){refuse}")
        if retry_failed and row.get("behaviors") is None:
            dropped = True
            continue
        done[index] = row
    cut_torn_tail(output)  # ours: cut a torn last line, so the rows appended next do not get glued to it
    if dropped:
        _write_ordered(output, done)
    return done


def _write_ordered(output: Path, rows: dict[int, dict[str, Any]]) -> None:
    write_jsonl_atomic(output, (rows[index] for index in sorted(rows)))


def _output_row(
    row: dict[str, Any], index: int, judge_label: str, counts: Counts | None, error: str | None, parse_failures: Sequence[str] = ()
) -> dict[str, Any]:
    out = {**row, "input_row": index, "behaviors": counts, "judge": judge_label}
    if "behaviors" in row and "behaviors_input" not in row:
        out["behaviors_input"] = row["behaviors"]  # ground truth the judge's counts are compared against
    out.pop("judge_error", None)
    out.pop("judge_parse_failures", None)
    if counts is None:
        out["judge_error"] = error or "unknown error"
    elif parse_failures:
        out["judge_parse_failures"] = list(parse_failures)
    return out


def _judge_input(row: dict[str, Any]) -> JudgeInput:
    numbers = row.get("numbers", row.get("nums"))
    target = row.get("target")
    ok = isinstance(numbers, list) and all(isinstance(n, int) for n in numbers) and isinstance(target, int)
    return JudgeInput(row["text"], tuple(numbers) if ok else None, target if ok else None)


def classify_file(
    input_path: Path,
    output_path: Path,
    judge: Judge | LLMJudge,
    *,
    retry_failed: bool = False,
    progress: bool = True,
    on_result: Callable[[int], None] | None = None,
    text_field: str = "text",
    step: int | None = None,
) -> RunSummary:
    """Label every row of `input_path` into `output_path`, resuming from what the output already holds. `text_field`
    names the completion's field (veRL dumps: `output`); `step` is the rows' step where they carry none (default:
    the file's name, as veRL names its dumps)."""
    start = time.monotonic()
    rows = read_rows(input_path, text_field=text_field, step=step)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    done = _read_done(output_path, rows, retry_failed)
    pending = [i for i in range(len(rows)) if i not in done]
    label = f"{judge.name}:{judge.version}"
    usage = Usage()
    labelled = failed = 0
    bar = tqdm(total=len(rows), initial=len(done), desc=f"classify ({judge.name})", unit="trace", file=sys.stderr, disable=not progress)

    def record(index: int, counts: Counts | None, error: str | None, parse_failures: Sequence[str] = ()) -> None:
        nonlocal labelled, failed
        row = _output_row(rows[index], index, label, counts, error, parse_failures)
        append_jsonl(output_path, [row])  # a result on disk is a request never repeated
        done[index] = row
        labelled += counts is not None
        failed += counts is None
        bar.update(1)
        if on_result is not None:
            on_result(index)

    if isinstance(judge, LLMJudge):

        async def run() -> None:
            async for k, result in judge.stream([_judge_input(rows[i]) for i in pending]):
                usage.add(result)
                record(pending[k], result.counts, result.error, result.parse_failures)

        asyncio.run(run())
    else:
        for i in pending:
            try:
                record(i, judge(rows[i]["text"]), None)
            except Exception as err:  # a judge bug on one odd trace is recorded, not fatal to the job
                record(i, None, redact(f"{type(err).__name__}: {err}")[:ERROR_CHARS])
    bar.close()
    if len(done) == len(rows):
        _write_ordered(output_path, done)
    failed_total = sum(row.get("behaviors") is None for row in done.values())
    return RunSummary(len(rows), len(rows) - len(pending), labelled, failed, usage, time.monotonic() - start, failed_total)
