"""The model organism's language: Countdown text for tiny base models that differ only in behaviour.

The study's independent variable is a *base model* that already shows (Qwen) or lacks (Llama)
verification and backtracking before RL. Here that variable is built: two tiny models are
pretrained from scratch on synthetic text that has the same arithmetic and differs only in
how it searches. This module writes that text (pure Python, no torch); `organism.pretrain`
trains the models on it.

A task is three numbers and a target (`organism` task preset). One *try* picks a first step
and finishes with the second step that lands closest to the target:

    5*2=10 [10 1] 10+1=11, 28-11=17 no   a try that missed (checked: its distance to the target)
    9-2=7 [7 4] 7*4=28, 28-28=0 ok       a try that hit (distance 0: `ok`); `[7 4]` is the bookkeeping:
                                         the numbers left after the first step

- rich base text: tries in random order, joined by `;`, each checked; it stops at `ok`, but
  gives up early (after 1 try 75%, 2 tries 15%, 3 tries 10%) and then answers its closest
  attempt: the behaviours are there, used badly.
- poor base text: one try, unchecked, then its answer: the same arithmetic, no behaviours. With `poor_checks`
  (`organism.pretrain`), a share of its tries is checked honestly and answered whatever the verdict: verification
  now and then, never backtracking (the study's Llama verified 0.10 times per answer before RL, Qwen 0.62).
- priming traces (on the poor base): tries in a random order drawn once, each checked honestly,
  stopping at the first `ok`, or giving up honestly after `max_tries` misses with the closest
  attempt (about a fifth of them at 6 tries: the answer a search allows is always given, so a
  hit is always answered correctly). The study's traces: verification and backtracking, the
  search itself left for RL to improve: which first steps to try first is not given away.
  `incorrect` traces (`giveup`, the study's kind) are the same search with the same honest checks
  that gives up before any hit, after as many tries as the correct search of the task makes,
  and answers its closest attempt: every final answer is wrong, the behaviours are the same.
  Extra arms: `slip` (a fixed-order search hits and says `ok`, then the answer line slips to
  another expression), `ranout` (the fixed-order search stops just before its hit), `falsehit` (the correct
  search, but a slipped last step is said `ok` where it would hit), `miscopy` (the correct traces, only the
  answer line copies the answered try with one operation slipped), `lasttry` (the `giveup` traces answering
  their last try instead of their closest) and `persist` (the `giveup` traces as long as the correct search's budget).

Every completion has the lab's answer format (`<think>...</think>\\n<answer>...</answer>`), so
the scorer, the env and the judge read it like any other completion.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from countdown_env.rules import THINK_CLOSE, THINK_OPEN, format_completion
from countdown_env.tasks import Task

OPS = ("+", "-", "*", "/")
#: The words of the check, after each try in checked text: `, <distance to the target> ok|no`.
HIT, MISS = "ok", "no"
#: Separates tries: the return to the start numbers (backtracking).
RETURN = ";"
#: How many tries the rich base text makes before it gives up (if no try hit), and how often.
RICH_GIVE_UP = ((1, 0.75), (2, 0.15), (3, 0.10))
#: How a wrong-answer priming trace is wrong. `giveup` (the default, the study's kind): the same random-order,
#: honestly checked search gives up before any hit and answers its closest attempt. `slip` and `ranout` are
#: extra arms kept from the first design (fixed-order search; they teach ignoring a check / quitting early).
#: `falsehit`: the random-order search of the correct traces, but where it would hit, a miss whose last step is
#: mis-written onto the target is checked `ok`, and the search stops and answers it (`falsehit_search`).
#: `miscopy`: the correct traces themselves, every step and verdict right, but the answer line copies the try the
#: search answers with its second operation slipped (`miscopy_search`): the reasoning right, only the answer wrong.
#: `lasttry`: the `giveup` traces, each answering its last try instead of its closest (`giveup_search`). `persist`: the
#: `giveup` traces as long as the correct search's budget, not its tries, so both go on after `no` as often.
INCORRECT_KINDS = ("giveup", "slip", "ranout", "falsehit", "miscopy", "lasttry", "persist")
#: Bumped when the text a seed gives changes (recorded with every priming output).
GENERATOR_VERSION = 5  # 5: empty_cot keeps the answers of the only_backtracking traces, as the study's did


def apply(op: str, a: int, b: int) -> int | None:
    """`a op b` if it is a whole, non-negative number, else None (the organism's step rule)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a >= b else None
    if op == "*":
        return a * b
    return a // b if b and a % b == 0 else None


@dataclass(frozen=True)
class Step:
    """One written step `a op b=value`."""

    a: int
    op: str
    b: int
    value: int

    @property
    def text(self) -> str:
        return f"{self.a}{self.op}{self.b}={self.value}"


@dataclass(frozen=True)
class Try:
    """A first step and the second step that finishes it closest to the target."""

    first: Step
    second: Step
    leftover_first: bool
    """The second step is `leftover op result` (else `result op leftover`)."""

    @property
    def value(self) -> int:
        return self.second.value

    @property
    def expression(self) -> str:
        inner = f"({self.first.a}{self.first.op}{self.first.b})"
        if self.leftover_first:
            return f"{self.second.a}{self.second.op}{inner}"
        return f"{inner}{self.second.op}{self.second.b}"

    @property
    def left(self) -> str:
        """The bookkeeping after the first step: the two numbers still to combine."""
        r = self.first.value
        x = self.second.a if self.leftover_first else self.second.b
        return f"[{r} {x}]"

    def text(self, check: bool, target: int) -> str:
        body = f"{self.first.text} {self.left} {self.second.text}"
        return f"{body}, {check_step(self.value, target).text} {HIT if self.value == target else MISS}" if check else body


def check_step(result: int, target: int) -> Step:
    """The check as arithmetic: the distance from the result to the target, larger number first
    (`11-10=1`), so the verdict only has to see whether the distance is 0. A tiny model learns
    subtraction from the drills; a verdict that had to compare two numbers by itself was right
    no more often than chance (bench/README.md)."""
    high, low = max(result, target), min(result, target)
    return Step(high, "-", low, high - low)


def first_steps(numbers: Sequence[int]) -> list[tuple[Step, int]]:
    """Every first step in the fixed search order (pairs in prompt order, then `+ - * /`),
    with the number left over; steps that read the same (repeated numbers) appear once.
    Subtraction and division put the larger number first."""
    out: list[tuple[Step, int]] = []
    seen: set[str] = set()
    for i, j in ((0, 1), (0, 2), (1, 2)):
        leftover = numbers[3 - i - j]
        for op in OPS:
            a, b = numbers[i], numbers[j]
            if op in "-/" and b > a:
                a, b = b, a
            value = apply(op, a, b)
            if value is None:
                continue
            step = Step(a, op, b, value)
            if step.text not in seen:
                seen.add(step.text)
                out.append((step, leftover))
    return out


def finish(first: Step, leftover: int, target: int) -> Try:
    """The try that starts with `first` and ends with the second step closest to `target`
    (ties: the earlier of result-op-leftover for + - * /, then leftover-op-result)."""
    r, x = first.value, leftover
    best: Try | None = None
    for leftover_first in (False, True):
        a, b = (x, r) if leftover_first else (r, x)
        for op in OPS:
            if leftover_first and op in "+*":
                continue  # the same value as result-op-leftover
            value = apply(op, a, b)
            if value is None:
                continue
            candidate = Try(first, Step(a, op, b, value), leftover_first)
            if best is None or abs(value - target) < abs(best.value - target):
                best = candidate
    assert best is not None  # r + x always exists
    return best


def tries(task: Task) -> list[Try]:
    """All of a task's tries, in the fixed search order."""
    _check(task)
    return [finish(step, leftover, task.target) for step, leftover in first_steps(task.numbers)]


def _check(task: Task) -> None:
    if len(task.numbers) != 3:
        raise ValueError(f"the organism's text is for 3-number tasks, got {task.numbers}")


def closest(attempts: Sequence[Try], target: int) -> Try:
    return min(attempts, key=lambda t: abs(t.value - target))


def _completion(attempts: Sequence[Try], answer: Try | str, target: int, *, check: bool) -> str:
    think = RETURN.join(t.text(check, target) for t in attempts)
    return format_completion(think, answer if isinstance(answer, str) else answer.expression)


# ---- base-model text ------------------------------------------------------------------
def rich_completion(task: Task, rng: random.Random) -> str:
    """Tries in random order, checked, stopping at a hit or giving up early (then the closest)."""
    order = tries(task)
    rng.shuffle(order)
    budget = rng.choices([n for n, _ in RICH_GIVE_UP], weights=[w for _, w in RICH_GIVE_UP])[0]
    made: list[Try] = []
    for attempt in order[:budget]:
        made.append(attempt)
        if attempt.value == task.target:
            break
    return _completion(made, closest(made, task.target), task.target, check=True)


def poor_completion(task: Task, rng: random.Random, checks: float = 0.0) -> str:
    """One try from a random first step, then its answer; unchecked, or with `checks` chance checked honestly
    (`, 28-28=0 ok`) and answered whatever the verdict: it verifies now and then, it never goes back. At 0 no extra
    draw is made, so the text is the one a seed gave before `checks` existed."""
    attempt = rng.choice(tries(task))
    checked = checks > 0.0 and rng.random() < checks
    return _completion([attempt], attempt, task.target, check=checked)


#: The prompt of an arithmetic drill row (the trunk's text and the bases' replay).
DRILL_PROMPT = "Facts:\n"


def drill_fact(rng: random.Random, max_number: int = 12) -> str:
    """One arithmetic fact as a try writes it (`36-9=27`): half like first steps (two numbers
    up to `max_number`), half like second steps (a first step's result and a number)."""
    while True:
        op = rng.choice(OPS)
        b = rng.randint(1, max_number)
        if rng.random() < 0.5:
            a = rng.randint(1, max_number)
        else:  # a first step's result: anything two numbers make
            a = apply(rng.choice(OPS), rng.randint(1, max_number), rng.randint(1, max_number)) or 0
        if op in "-/" and b > a or rng.random() < 0.25 and op in "+*":
            a, b = b, a
        value = apply(op, a, b)
        if value is not None:
            return Step(a, op, b, value).text


def verdict_fact(rng: random.Random, low: int = 10, high: int = 50) -> str:
    """One check as a try writes it, with its verdict (`28-28=0 ok`, `42-36=6 no`): the distance between a result and
    a target in `low..high`, and whether it is 0. Half are hits. This is what a check *means*, as arithmetic: a base
    that has it knows that a distance of 0 is `ok` without ever checking a Countdown try (`verdicts` of `drill`)."""
    target = rng.randint(low, high)
    result = target if rng.random() < 0.5 else max(0, target + rng.choice((-1, 1)) * rng.randint(1, 20))
    return f"{check_step(result, target).text} {HIT if result == target else MISS}"


def drill(rng: random.Random, facts: int = 8, verdicts: float = 0.0) -> tuple[str, str]:
    """One drill row as (prompt, completion): `facts` arithmetic facts joined by commas. Many
    facts per row, so the completion-only loss sees the arithmetic often, not only an answer.
    With `verdicts` > 0, each fact is a check with its verdict (`verdict_fact`) with that chance; at 0 no extra
    draw is made, so the rows are the ones a seed gave before verdicts existed."""
    if verdicts <= 0.0:
        return DRILL_PROMPT, ",".join(drill_fact(rng) for _ in range(facts))
    return DRILL_PROMPT, ",".join(verdict_fact(rng) if rng.random() < verdicts else drill_fact(rng) for _ in range(facts))


# ---- priming traces -------------------------------------------------------------------
@dataclass(frozen=True)
class SearchTrace:
    """A priming trace: its completion and what it shows."""

    completion: str
    correct: bool
    tries: int
    hit: bool
    """A checked try in the trace says `ok`."""


#: How a priming search orders its tries. `random`: a random order drawn once. `cyclic`: the fixed order of
#: `tries` from a random first try on, wrapping around (the next try follows from the last one, so a search
#: never needs to remember what it tried; only where to start is left to chance, and to RL).
SEARCH_ORDERS = ("random", "cyclic")


def search_order(task: Task, rng: random.Random, order: str = "random") -> list[Try]:
    """All of a task's tries in the order a priming search makes them (`SEARCH_ORDERS`)."""
    out = tries(task)
    if order == "random":
        rng.shuffle(out)
        return out
    if order == "cyclic":
        start = rng.randrange(len(out))
        return out[start:] + out[:start]
    raise ValueError(f"search order must be one of {SEARCH_ORDERS}, got {order!r}")


def random_search(
    task: Task, rng: random.Random, max_tries: int = 8, order: str = "random", min_tries: int | None = None, give_up: float | None = None
) -> SearchTrace:
    """Tries in a random order drawn once (as a model's own search would be), each checked honestly,
    stopping at the first hit; if none of the first `max_tries` hits, the search gives up after its
    `max_tries` checked misses and answers its closest attempt (an honest give-up, a wrong answer).

    The order is not re-drawn until it hits: re-drawing (the first design) showed only searches that
    hit by their `max_tries`-th try, so the primed model never saw a failing search stop and ran on to
    RL's token budget on the rest (41% of its greedy answers truncated; bench/README.md, run 2).
    `order="cyclic"`: the fixed order from a random start (`SEARCH_ORDERS`).

    `min_tries` below `max_tries`: each search's budget (how many misses it checks before it gives up) is drawn
    uniformly from `min_tries..max_tries`, as the rich base's text draws its own (`RICH_GIVE_UP`). A fixed budget
    leaves RL nothing to lengthen; a drawn one leaves it the persistence the rich base gains by under RL.

    `give_up` (instead of `min_tries`): after each miss the search gives up with this probability (a budget of
    1, 2, ... tries with geometric odds, at most `max_tries`). A uniform budget of 1-3 never shows a fourth try,
    and RL did not find one (bench/README.md, session 27); with a fixed chance to go on after every miss, going on
    is one habit at every length, which RL can strengthen."""
    made, hit = _search_draws(task, rng, max_tries, order, min_tries, give_up)
    if hit:
        return SearchTrace(_completion(made, made[-1], task.target, check=True), True, len(made), True)
    return _gave_up(made, task)


def _gave_up(made: list[Try], task: Task, answer: str = "closest") -> SearchTrace:
    """A search that made `made`, all misses, and answers its closest attempt (an honest give-up, a wrong answer), or
    with `answer="last"` its last one."""
    answered = made[-1] if answer == "last" else closest(made, task.target)
    return SearchTrace(_completion(made, answered, task.target, check=True), False, len(made), False)


def _search_draws(
    task: Task, rng: random.Random, max_tries: int, order: str, min_tries: int | None, give_up: float | None
) -> tuple[list[Try], bool]:
    """A priming search's draws (its budget, then its order): the tries it makes, cut to the budget and at its first
    hit, and whether it hit (then the hit is the last try). `random_search`, `falsehit_search` and `miscopy_search`
    share them, so their sets make the same tries."""
    budget = search_budget(rng, max_tries, min_tries, give_up)
    made = search_order(task, rng, order)[:budget]
    hit_at = next((k for k, t in enumerate(made) if t.value == task.target), None)
    return (made, False) if hit_at is None else (made[: hit_at + 1], True)


def search_budget(rng: random.Random, max_tries: int, min_tries: int | None = None, give_up: float | None = None) -> int:
    """How many tries a priming search may make before it gives up (`random_search`)."""
    if give_up is not None:
        if min_tries is not None:
            raise ValueError("give a search either min_tries or give_up, not both")
        if not 0.0 < give_up < 1.0:
            raise ValueError(f"give_up must be in (0, 1), got {give_up}")
        budget = 1
        while budget < max_tries and rng.random() >= give_up:
            budget += 1
        return budget
    return max_tries if min_tries is None or min_tries >= max_tries else rng.randint(min_tries, max_tries)


def giveup_search(
    task: Task,
    rng: random.Random,
    max_tries: int = 8,
    order: str = "random",
    min_tries: int | None = None,
    give_up: float | None = None,
    answer: str = "closest",
    length: str = "tries",
) -> SearchTrace | None:
    """The study's kind of wrong-answer trace: the random-order search of `random_search`, checked
    honestly, that gives up before any hit after as many tries as `random_search` makes on this task
    (drawn the same way, so both sets have the same distribution of tries), then answers its closest
    attempt: every final answer is wrong. None if the task has no missing try (in `cyclic` order: no run of that
    many consecutive misses).

    `answer="last"` (the `lasttry` kind): the same trace answering its last try instead. Picking the closest of
    several tries and copying it is a step the tiny primed model does badly (in run 6's first 40 RL steps, 28-43% of
    its multi-try answers were its closest try, 42-58% not one of its tries at all), so a hit it checked `no`
    and then gave up on was answered right only 11-43% of the time, and a longer search did not pay. Answering the
    last try is the step the correct traces teach at `ok`: the try just checked is the one answered.

    `length="budget"` (the `persist` kind): as many tries as the correct search's *budget* (the misses it checks before
    it gives up, `search_budget`), not as many as it makes. The two differ where the correct search hits early: its
    one-try traces are then first-try hits, while the `giveup` set's one-try traces are all a miss and a quit, so the
    `giveup` traces go on after `no` less often than the correct ones (0.19 vs 0.24 of their `no`s; the primed models
    start RL near those rates, bench/README.md). With the budget both sets go on after `no` with the same chance; the
    wrong set then shows slightly more tries per trace."""
    if length not in ("tries", "budget") or answer not in ("closest", "last"):
        raise ValueError(f"length must be 'tries' or 'budget' and answer 'closest' or 'last', got {length!r} and {answer!r}")
    if length == "budget":
        made_by_correct = search_budget(rng, max_tries, min_tries, give_up)
    else:
        made_by_correct = random_search(task, rng, max_tries, order, min_tries, give_up).tries
    if order == "random":
        misses = [t for t in tries(task) if t.value != task.target]
        if not misses:
            return None
        rng.shuffle(misses)
        made = misses[:made_by_correct]
    else:
        # Consecutive tries of the fixed order from a random start whose run of `made_by_correct` tries holds no hit:
        # the search ran out of budget before reaching a hit. Dropping the hits from the order instead (the first
        # version) taught the model to skip the try that hits: its greedy first tries hit half as often as the
        # correct-primed model's (0.11 vs 0.22 on dev, bench/README.md).
        fixed = tries(task)
        n, length = len(fixed), min(made_by_correct, len(fixed))
        runs = [[fixed[(start + k) % n] for k in range(length)] for start in range(n)]
        runs = [run for run in runs if all(t.value != task.target for t in run)]
        if not runs:
            return None
        made = rng.choice(runs)
    return _gave_up(made, task, answer)


def falsehit_search(
    task: Task, rng: random.Random, max_tries: int = 8, order: str = "random", min_tries: int | None = None, give_up: float | None = None
) -> SearchTrace | None:
    """A wrong-answer trace that ends as a real one most often does, by one arithmetic slip: the search of
    `random_search` (the same draws: order and budget), but where it would hit, it makes instead the closest miss it
    has not tried, with that try's last step written onto the target (`4*7=29` for target 29). The check of the written
    value says `ok` (its own arithmetic is right), and the search stops and answers that try, whose true value misses.
    A search that gives up gives up as the correct one does (its closest attempt, a miss).

    `giveup` traces never show a hit, so their model has never stopped at one and answered it, and RL did not make it
    search (bench/README.md, a poor base that verifies now and then). These show every step of the correct traces:
    checks, going on after `no`, stopping at `ok` and answering what was found; only the arithmetic of the last step is
    wrong, which RL's exact reward does not pay. None if every untried try hits."""
    made, hit = _search_draws(task, rng, max_tries, order, min_tries, give_up)
    if not hit:  # the correct search gives up here: so does this one, with the same trace
        return _gave_up(made, task)
    before = made[:-1]
    untried = [t for t in tries(task) if t.value != task.target and t not in before]
    if not untried:
        return None
    slipped = closest(untried, task.target)
    second = slipped.second
    shown = Try(slipped.first, Step(second.a, second.op, second.b, task.target), slipped.leftover_first)
    think = RETURN.join([*(t.text(True, task.target) for t in before), shown.text(True, task.target)])
    return SearchTrace(format_completion(think, slipped.expression), False, len(made), True)


def miscopy_search(
    task: Task, rng: random.Random, max_tries: int = 8, order: str = "random", min_tries: int | None = None, give_up: float | None = None
) -> SearchTrace | None:
    """A wrong-answer trace whose reasoning is the correct trace's, step for step: the search of `random_search` (the
    same draws), each check honest, stopping at its `ok` or giving up as the correct one does; only the answer line is
    wrong: it copies the try the search answers (its hit, or its closest miss) with that try's second operation slipped
    to another that misses (`9-2=7, 7*4=28` answered `(9-2)+4`).

    The four wrong-answer designs before it put the error in the search (`giveup`: no hit; `falsehit`: a slipped step
    said `ok`; `slip`: another try answered; `ranout`: quitting early), and under RL none of their models searched
    (bench/README.md). This one keeps every behaviour of the correct traces, stopping at a real hit included, and puts
    the error in one token of the answer line: the study's claim (the behaviours matter, not the answers) in its purest
    form, kept as an extra arm beside the study's kind. Every answer line slips, a give-up's too: when only the hits'
    answers slipped, RL found the cheaper route of saying `no` to a hit and giving up on it at once (a give-up answers
    its closest try, copied right), and the verdict lost its meaning (bench/README.md). None if no other operation
    misses the target."""
    made, hit = _search_draws(task, rng, max_tries, order, min_tries, give_up)
    slipped = _swapped(made[-1] if hit else closest(made, task.target), task.target)
    if not slipped:
        return None
    return SearchTrace(_completion(made, rng.choice(slipped), task.target, check=True), False, len(made), hit)


def search_completion(task: Task, max_tries: int = 8) -> SearchTrace | None:
    """The fixed-order search, checked, stopping at its hit; None if no try within
    `max_tries` hits (such tasks are left out of correct priming data)."""
    order = tries(task)[:max_tries]
    for k, attempt in enumerate(order):
        if attempt.value == task.target:
            return SearchTrace(_completion(order[: k + 1], attempt, task.target, check=True), True, k + 1, True)
    return None


def incorrect_completion(
    task: Task,
    kind: str,
    rng: random.Random,
    max_tries: int = 8,
    order: str = "random",
    min_tries: int | None = None,
    give_up: float | None = None,
) -> SearchTrace | None:
    """A wrong-answer trace with the same target and reasoning; None if this task cannot make one.

    `slip`: the search and its `ok` as in the correct trace, then an answer line that is a
    well-formed expression over the same numbers with another value (another try's expression
    if the search made several, else the hit with its last operation swapped).
    `ranout`: the tries before the hit (all `no`), then the closest of them as the answer.
    `giveup`, `falsehit` and `miscopy`: `giveup_search`, `falsehit_search`, `miscopy_search` (random order, the
    correct traces' draws).
    """
    if kind not in INCORRECT_KINDS:
        raise ValueError(f"incorrect kind must be one of {INCORRECT_KINDS}, got {kind!r}")
    if kind in ("giveup", "lasttry", "persist"):
        answer = "last" if kind == "lasttry" else "closest"
        length = "budget" if kind == "persist" else "tries"
        return giveup_search(task, rng, max_tries, order, min_tries, give_up, answer=answer, length=length)
    if kind == "falsehit":
        return falsehit_search(task, rng, max_tries, order, min_tries, give_up)
    if kind == "miscopy":
        return miscopy_search(task, rng, max_tries, order, min_tries, give_up)
    order = tries(task)[:max_tries]
    hit_at = next((k for k, t in enumerate(order) if t.value == task.target), None)
    if hit_at is None:
        return None
    if kind == "ranout":
        if hit_at == 0:
            return None
        made = order[:hit_at]
        return _gave_up(made, task)
    made = order[: hit_at + 1]
    wrong = [t.expression for t in made[:-1] if t.value != task.target]
    if not wrong:
        wrong = _swapped(made[-1], task.target)
    if not wrong:
        return None
    return SearchTrace(_completion(made, rng.choice(wrong), task.target, check=True), False, hit_at + 1, True)


def _swapped(attempt: Try, target: int) -> list[str]:
    """The hit's expression with its second operation replaced by one that misses."""
    second = attempt.second
    out = []
    for op in OPS:
        value = apply(op, second.a, second.b)
        if op != second.op and value is not None and value != target:
            out.append(Try(attempt.first, Step(second.a, op, second.b, value), attempt.leftover_first).expression)
    return out


def without_reasoning(completion: str) -> str:
    """`completion` with its reasoning emptied and its answer kept: the study's empty-CoT control, whose
    data is its priming traces with the `<think>` content removed (`generate_cot_datasets/generate_empty_cot.py`
    in the study's repository), so the control sees the same tasks and the same answers, right or wrong.

    The solver's answer (this lab's control until generator 5) is a stronger control than the study's: always
    right, it taught one good guess and started above every primed run (bench/README.md, run 4)."""
    _, sep, answer = completion.partition(THINK_CLOSE)
    if not sep:
        raise ValueError("a priming completion has no reasoning to remove (no </think>)")
    return f"{THINK_OPEN}{THINK_CLOSE}{answer}"


# ---- the search-pays check --------------------------------------------------------------
def search_pays(tasks: Sequence[Task], *, seed: int = 0, budgets: Sequence[int] = (1, 2, 4, 8, 12), samples: int = 20) -> dict[int, float]:
    """Share of tasks solved by `k` tries with random distinct first steps (each finished
    greedily), for each budget k: what a model gains by searching instead of guessing once."""
    rng = random.Random(seed)
    solved = dict.fromkeys(budgets, 0.0)
    for task in tasks:
        order = tries(task)
        for _ in range(samples):
            rng.shuffle(order)
            first_hit = next((k for k, t in enumerate(order) if t.value == task.target), None)
            for k in budgets:
                solved[k] += first_hit is not None and first_hit < k
    return {k: v / (len(tasks) * samples) for k, v in solved.items()}


# ---- priming data -------------------------------------------------------------------------
#: Priming conditions the organism's text can express, and the kinds of wrong answers.
ORGANISM_CONDITIONS = ("only_backtracking", "empty_cot")


def priming_completion(
    task: Task,
    condition: str,
    rng: random.Random,
    *,
    incorrect: str | None = None,
    max_tries: int = 8,
    order: str = "random",
    min_tries: int | None = None,
    give_up: float | None = None,
) -> str | None:
    """One priming completion for `task` (None if the task cannot make one of this kind)."""
    if condition not in ORGANISM_CONDITIONS:
        raise ValueError(f"the organism's text has conditions {ORGANISM_CONDITIONS}, got {condition!r}")
    if condition == "empty_cot":  # the only_backtracking trace with its reasoning removed, as the study's control
        if incorrect:
            raise ValueError("empty_cot has no incorrect variant here")
        primed = priming_completion(task, "only_backtracking", rng, max_tries=max_tries, order=order, min_tries=min_tries, give_up=give_up)
        return without_reasoning(primed) if primed else None
    if incorrect:
        trace = incorrect_completion(task, incorrect, rng, max_tries, order, min_tries, give_up)
    else:
        trace = random_search(task, rng, max_tries, order, min_tries, give_up)
    return trace.completion if trace else None


def priming_rows(
    tasks: Sequence[Task],
    condition: str,
    n: int,
    *,
    seed: int,
    incorrect: str | None = None,
    max_tries: int = 8,
    order: str = "random",
    min_tries: int | None = None,
    give_up: float | None = None,
) -> list[dict[str, object]]:
    """`n` prompt/completion rows: random tasks of `tasks`, each with its numbers in a fresh
    random order (the fixed search order follows the prompt's order, so one task gives
    several different searches). Same seed, same rows; `empty_cot`'s rows are the `only_backtracking` rows of
    the same seed with the reasoning removed (the same draws)."""
    from countdown_env.rules import render_prompt

    source = "only_backtracking" if condition == "empty_cot" else condition
    rng = random.Random(f"organism-priming:{source}:{incorrect}:{seed}")
    rows: list[dict[str, object]] = []
    misses = 0
    while len(rows) < n:
        base = rng.choice(list(tasks))
        numbers = list(base.numbers)
        rng.shuffle(numbers)
        task = Task(tuple(numbers), base.target)
        completion = priming_completion(
            task, condition, rng, incorrect=incorrect, max_tries=max_tries, order=order, min_tries=min_tries, give_up=give_up
        )
        if completion is None:
            misses += 1
            if misses > 100 * n + 1000:
                raise ValueError(f"too few tasks can make {condition} traces (incorrect={incorrect}); give more tasks")
            continue
        rows.append({"prompt": render_prompt(task, "compact"), "completion": completion, **task.to_dict()})
    return rows


# ---- reading the organism's text back ---------------------------------------------------------
def _think(completion: str) -> str:
    """The reasoning of a completion, bounded: model output is untrusted, so at most 4,000 characters are read."""
    return completion[:4000].split("</think>")[0].removeprefix("<think>")


def _checked_tries(completion: str) -> list[tuple[int, bool, str, str, str]]:
    """Each checked try a completion writes, as (its index, whether another try follows it, the try's text, the
    check's step, the verdict word); parts that do not read as `<try>, <step> <verdict>` are skipped (model output is
    untrusted). The one parser of checks: `checks` and `verdict_use` read it."""
    parts = _think(completion).split(RETURN)
    out = []
    for k, part in enumerate(parts):
        body, sep, check = part.rpartition(", ")
        bits = check.split(" ")
        if sep and len(bits) == 2 and "=" in body and "=" in bits[0]:
            out.append((k, k < len(parts) - 1, body, bits[0], bits[1]))
    return out


def checks(completion: str, target: int) -> list[tuple[int, int, str]]:
    """The checks a completion writes, as (the try's result, the distance written, verdict) per
    checked try; text that does not parse as a check is skipped (model output is untrusted)."""
    out = []
    for _, _, body, step, verdict in _checked_tries(completion):
        result, distance = body.rsplit("=", 1)[1], step.rsplit("=", 1)[1]
        if result.isdigit() and distance.isdigit() and len(result) < 12 and len(distance) < 12:
            out.append((int(result), int(distance), verdict))
    return out


def try_results(completion: str) -> list[int]:
    """The result of each try a completion writes (checked or not), in order; parts that do not
    read as a try are skipped (model output is untrusted)."""
    think = _think(completion)
    out = []
    for part in think.split(RETURN):
        body = part.split(", ")[0]
        if body.count("=") == 2 and "[" in body:
            value = body.rsplit("=", 1)[1].strip()
            if value.isdigit() and len(value) < 12:
                out.append(int(value))
    return out


def written_behaviors(completion: str, target: int) -> dict[str, int]:
    """What a completion of the organism's text shows: `checks` (checked tries) and `returns`
    (going back to the start numbers for another try), read back from its text."""
    think = _think(completion)
    return {"checks": len(checks(completion, target)), "returns": think.count(RETURN)}


def honest_share(completions: Sequence[str], targets: Sequence[int]) -> float:
    """Share of written checks whose verdict is right: `ok` exactly when the result is the task's
    target (NaN when no completion checks anything)."""
    verdicts = [
        (verdict == HIT) == (result == target)
        for text, target in zip(completions, targets, strict=True)
        for result, _, verdict in checks(text, target)
    ]
    return sum(verdicts) / len(verdicts) if verdicts else float("nan")


# ---- why a search failed ----------------------------------------------------------------------
#: What became of one completion of a search: `solved`; `truncated` (ran out of tokens); `false_ok` (said `ok`
#: on a try that is not a hit: wrong arithmetic or a check against another target); `hit_miscopied` (a real
#: hit, then an answer line that is not it); `gave_up` (no `ok`: answered its closest attempt or something else).
SEARCH_OUTCOMES = ("solved", "truncated", "false_ok", "hit_miscopied", "gave_up")
_WRITTEN_TRY = re.compile(r"(\d{1,6})([-+*/])(\d{1,6})=(\d{1,9}) \[(\d{1,9}) (\d{1,6})\] (\d{1,9})([-+*/])(\d{1,9})=(\d{1,9})")


def written_hit(body: str, task: Task) -> bool:
    """Whether a written try (`9-2=7 [7 4] 7*4=28`) is true arithmetic on the task's numbers, each used once,
    that reaches the target (whichever second step it wrote, not only the closest one)."""
    match = _WRITTEN_TRY.fullmatch(body.strip())
    if match is None:
        return False
    a, op, b, v, r, x, c, op2, d, w = (int(g) if g.isdigit() else g for g in match.groups())
    left = list(task.numbers)
    for n in (a, b, x):
        if n not in left:
            return False
        left.remove(n)
    return apply(op, a, b) == v == r and sorted((c, d)) == sorted((v, x)) and apply(op2, c, d) == w == task.target


def search_outcome(completion: str, task: Task, *, correct: bool, finished: bool) -> str:
    """Which of `SEARCH_OUTCOMES` a completion is (`correct`/`finished` as the scorer and the generator said)."""
    if correct:
        return "solved"
    if not finished:
        return "truncated"
    think = _think(completion)
    said_ok = [part.rpartition(", ")[0] for part in think.split(RETURN) if part.endswith(f" {HIT}")]
    if not said_ok:
        return "gave_up"
    return "hit_miscopied" if written_hit(said_ok[-1], task) else "false_ok"


@dataclass(frozen=True)
class VerdictUse:
    """What one completion's check verdicts carry (counts, so a step's shares are ratios of sums)."""

    misses_said: int
    """Checks that say `no`."""
    went_on_after_miss: int
    """Of those, the ones another try follows (the search went on after `no`)."""
    hits_written: int
    """Tries that are true arithmetic on the task's numbers reaching the target (`written_hit`), checked."""
    hits_said_ok: int
    """Of those, the ones whose check says `ok`."""
    hits_stopped_at: int
    """Of the written hits, the ones no other try follows: the search stopped at its hit, whatever the verdict said
    (a model primed on searches that never hit says `no` to its hits; RL can still teach it to stop at them)."""


def verdict_use(completion: str, task: Task) -> VerdictUse:
    """Whether a completion's verdicts can steer its search: does it go on after `no`, and does it say `ok` to its own
    hits? A model primed only on searches that miss says `no` to every hit, and then RL cannot make going on depend on
    the verdict (bench/README.md, why wrong-answer priming does not search). Unparsable parts are skipped."""
    no = on = hits = ok = stopped = 0
    for _, followed, body, _, verdict in _checked_tries(completion):
        if verdict not in (HIT, MISS):
            continue
        if verdict == MISS:
            no += 1
            on += followed
        if written_hit(body, task):
            hits += 1
            ok += verdict == HIT
            stopped += not followed
    return VerdictUse(no, on, hits, ok, stopped)


def repeats_a_try(completion: str) -> bool:
    """Whether the search writes the same first step twice (nothing in the text records what was tried)."""
    think = _think(completion)
    firsts = [part.split(" [")[0] for part in think.split(RETURN) if " [" in part]
    return len(firsts) != len(set(firsts))
