"""Offline, pattern-based behaviour counting for Countdown reasoning traces.

No library counts these behaviours: the study used an LLM judge, and generic NLP tooling knows nothing
of Countdown's "combine two numbers, check, go back" rhythm. This judge is the offline default: pure
Python regular expressions over sentences, fast (thousands of traces per second) and deterministic.

How it reads a trace:
- The text inside ``<think>`` (or the whole text) is lower-cased and split into clauses at ``;`` and into sentences
  (lines, ``. ! ?``,
  ``...`` and commas, since terse traces put one step between commas).
- Each sentence counts at most once per behaviour.
- verification: the sentence judges a value against the target or the rules (``not 30``, ``too big``,
  ``off by one``, ``that works``, ``✓``, ``left over``...). An announcement ("Let me double-check:")
  and the verdict that follows count once.
- backtracking: an explicit switch ("let me try again", "scrap that", "alternatively", "what about") or an
  equation that starts a new combination not built on the previous chain's results, once a previous attempt
  has ended (a verdict, a chain of two or more steps, or a sentence boundary after a full chain), or an
  equation that opens a ``;`` clause after a verdict (terse traces: ``...=11, 11-10=1 no;5-1=4 ...``). The first
  attempt never counts.
- subgoal_setting: an intermediate goal worded as such ("first make 15", "get close to 80", "sub-goal").
- backward_chaining: reasoning from the target back ("32 is 8 times 4, so ...", "93 = 100 - 7", "work
  backwards", "I need 8 from 25, 30 and 3"). A need derived this way is backward chaining, not a subgoal,
  unless it is also worded as a goal.

Model outputs are untrusted: the text is capped at `MAX_CHARS` before any regular expression runs, and every
pattern is linear (no nested quantifiers over the same characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from behavior_classifier.behaviors import BEHAVIORS, Counts

MAX_CHARS = 20_000
"""Longest text looked at (characters); the rest is ignored so a runaway completion costs bounded time."""
MAX_SENTENCE_CHARS = 400
"""Longest sentence matched (characters): pattern work per sentence stays small whatever the input."""

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S | re.I)
_ANSWER = re.compile(r"<answer>.*?(?:</answer>|$)", re.S | re.I)
# Sentence ends: newlines, ". ", "! ", "? ", "; ", "..." (a decimal point has no space after it).
# Commas split too: terse traces ("2+3=5, 5!=14, back, 5*15=75") put one step between commas.
_SPLIT = re.compile(r"\n+|(?<=[.!?])\s+|\.\.\.|…|,\s+(?!(?:the|our)\s+target|which\b)|(?<=\*\*)\s+(?=\*\*)")

_NUM = r"\d{1,12}(?:\.\d{1,6})?"
_OP = r"[-+*/×x÷−–]"
# "a op b [op c ...] = r" (forward arithmetic). Parentheses are allowed around operands.
# Bounded repeats ({0,3}) keep matching linear: untrusted text like "((((((...1" cannot make the engine backtrack
# over long runs of parentheses or spaces.
_S = r"\s{0,3}"
# One operator step: closing parens, the operator, opening parens, a number. Every optional run is either
# bounded and anchored by a required character, so there is one way to match (no exponential backtracking).
_STEP = rf"(?:{_S}\)){{0,3}}{_S}{_OP}{_S}(?:\({_S}){{0,3}}{_NUM}"
_EXPR = rf"(?:\({_S}){{0,3}}-?{_NUM}(?:{_STEP}){{0,12}}(?:{_S}\)){{0,3}}"
# "a op b [op c ...] = r", possibly chained ("(30 - 25 + 3) * 4 = 8 * 4 = 32"): the result is the last value.
_EQUATION = re.compile(rf"((?:\({_S}){{0,3}}{_NUM}(?:{_STEP}){{1,12}}(?:{_S}\)){{0,3}})((?:{_S}={_S}{_EXPR}){{1,4}})")
_NUMBER = re.compile(_NUM)
_NOT_LEFT = r"[\d)*+\-/×x÷−–=.]"  # characters that, before "N =", show N ends an expression


def _rx(*parts: str) -> re.Pattern[str]:
    # Sentences are lower-cased once, so no re.I: case-insensitive matching is about twice as slow.
    return re.compile("|".join(f"(?:{p})" for p in parts))


_VERIFY = _rx(
    rf"\bnot\s+(?:equal\s+to\s+)?(?:the\s+target|{_NUM})",
    rf"\b(?:is|was|it's|that's|its)n'?t\s+(?:the\s+target|{_NUM})",
    rf"\b{_NUM}\s+(?:isn't|is\s+not|does\s+not\s+equal|doesn't\s+equal|≠|!=)",
    r"≠|!=|✓|✔|✗|❌",
    r"\btoo\s+(?:big|large|high|small|low|much|many|little|far)\b",
    r"\b(?:overshoot|undershoot|overshoots|undershoots|over\s+by|under\s+by|off\s+by|short\s+(?:of|by)|\d+\s+short|one\s+away|\d+\s+away|way\s+off)\b",
    r"\b(?:close\s+but|so\s+close|closer|almost|nearly|not\s+quite|not\s+it|no\s+good|still\s+not|still\s+\d+)\b",
    r"\b(?:doesn't|does\s+not|won't|didn't|don't)\s+work\b|\bthat\s+fails\b|\bfails\s+the\b|\binvalid\b|\bwrong\b",
    r"\b(?:that|this|it)\s+works\b|\bthat's\s+it\b|\bthat\s+is\s+it\b|\bgot\s+it\b|\bperfect\b|\bcorrect\b|\bbingo\b",
    r"\b(?:which|that|this|it)\s+(?:is|equals|gives(?:\s+us)?|makes)\s+(?:exactly\s+)?(?:the\s+target|our\s+target)\b",
    rf"(?:gives|makes|is|get|got|=)\s+{_NUM},?\s+(?:which\s+is\s+)?(?:the|our)\s+target\b",
    r"\bequals\s+the\s+target\b|\bis\s+the\s+target\b|\bhits\s+the\s+target\b|\breach(?:es|ed)?\s+the\s+target\b|\bexactly\s+\d+",
    r"\b(?:double[-\s]?check|sanity\s+check|let\s+me\s+check|let's\s+check|check:|checking|verify|verifying|verified|confirm)\b",
    r"\bleft\s+over\b|\bleftover\b|\bunused\b|\bused\s+twice\b|\breuse\b|\bnot\s+(?:a\s+)?whole\b|\bnot\s+an\s+integer\b",
    r"^\s*(?:no|nope|nah|yes|yep|right|argh|hmm,?\s+no)\b[.!,]?",
    # Terse verdicts after a result ("4+5=9 no", "2*5=10 ok"): the model organism's notation.
    rf"={_S}{_NUM}\s+ok\s*$",
    rf"\bvs\.?\s+{_NUM}|\b(?:no|nope)\s*[.!]?\s*$|\b(?:reached|found)\s*[.!]?\s*$|^\s*got\s+{_NUM}",
    rf"\bis\s+{_NUM}\s*=\s*{_NUM}\s*\?",
)
# "Let me double-check:"-style announcements: counted once together with the verdict that follows.
_VERIFY_ANNOUNCE = re.compile(r"^\s*(?:ok(?:ay)?,?\s+)?(?:let\s+me|let's|i'll|now)\s+(?:double[-\s]?check|verify|check)\b[^.]*:?\s*$")

_BACKTRACK = _rx(
    r"\b(?:let\s+me|let's|lets|i'll|i\s+will|we\s+can|i\s+can|now)\s+(?:try|attempt)\b",
    r"^\s*(?:try|trying)\b",
    r"\btry\s+(?:again|another|something\s+else|a\s+different)\b",
    r"\banother\s+(?:approach|way|idea|attempt|option|thing|combination|route|possibility|try)\b",
    r"\bdifferent\s+(?:approach|idea|combination|way|route|sequence|order|strategy)\b|\bdifferently\b",
    r"\binstead\b|\balternatively\b|\bwhat\s+about\b|\bhow\s+about\b|\bwhat\s+if\b",
    r"\bscrap\b|\bstart\s+over\b|\brestart\b|\bgo(?:ing)?\s+back\b|\bback\s+to\b|\bchange\s+of\s+plan\b|\bdrop\s+that\b|\breconsider\b",
    r"\bnew\s+(?:approach|idea|plan|attempt|intermediate)\b|\bdead\s+end\b|\banother\s+look\b|\blook\s+at\s+it\s+another\s+way\b",
    rf"^\s*(?:or|maybe|perhaps|oh\s+wait|wait|actually|hmm|ok(?:ay)?|so\s+maybe)\b[,:]?\s*(?:\(|{_NUM}|maybe|what|how|if|i|we|let)",
    r"^\s*option\s+[b-z]\b",
    r"^\s*(?:back|undo|go\s+back)\b",
)

_SUBGOAL = _rx(
    r"\bsub-?\s?goals?\b|\bintermediate\s+(?:target|goal|step|value|result)\b|\b(?:first|second|third|next|new)\s+goal\b",
    r"\bbreak(?:ing)?\s+(?:this|it|the\s+problem)\s+down\b|\bbreaking\s+down\b|\bmy\s+plan\b|\bplan:",
    r"\b(?:get|come|aim|go|start|land)\s+(?:close\s+to|near|to\s+around|around)\s+\d+",
    r"^\s*(?:plan|first)\b.*\bthen\b",
    r"\baim(?:ing)?\s+for\s+\d+|\bfirst\s+(?:make|get|reach|build|form|find|create|aim)\b",
    rf"\b(?:make|get|reach|build)\s+{_NUM}\s+(?:first|and\s+then|and\s+(?:subtract|add|multiply|divide))",
    rf"\b(?:what\s+if\s+i|if\s+i\s+can|i'll\s+try\s+to|try\s+to|let\s+me|let's)\s+(?:make|get|reach|build)\s+(?:a\s+)?{_NUM}\s+(?:to|and|then|first|so)\b",
)

# "24 = 12 * 2": a number first, then what makes it (forward work writes "12 * 2 = 24"). The lookbehinds
# skip chained equalities such as "77 - 9 * 2 = 77 - 18". Kept apart: it is the one backward cue without words.
_BACKWARD_EQUATION = re.compile(rf"(?<!{_NOT_LEFT})(?<!{_NOT_LEFT}\s)(?<!{_NOT_LEFT}\s\s)\b{_NUM}\s*=\s*\(?\s*{_NUM}\s*{_OP}")
_BACKWARD = _rx(
    r"\b(?:work(?:ing|ed)?|think(?:ing)?|reason(?:ing)?|go(?:ing)?)\s+backwards?\b|\bbackward\s+from\b",
    r"\bfrom\s+the\s+(?:target|goal|answer|end)\b|\b(?:start|begin)(?:ing)?\s+(?:from|with|at)\s+the\s+(?:target|goal|answer)\b",
    rf"\b{_NUM}\s+(?:is|equals|could\s+be|would\s+be|can\s+be|must\s+be)\s+(?:also\s+)?(?:just\s+)?{_NUM}\s*(?:times|plus|minus|divided\s+by|multiplied\s+by|[-+*/×x÷])\s*{_NUM}",
    rf"\bit's\s+{_NUM}\s*(?:[-+*/×x÷]|times|plus|minus)\s*{_NUM}",
    r"\bneed\s+to\s+(?:subtract|add|multiply|divide|take\s+away)\b|\bclose\s+the\s+gap\b|\bhow\s+far\b|\bthe\s+difference\s+is\b",
    r"\bcomes?\s+from\s+a\b|\bwhat\s+(?:times|plus|multiplied\s+by|divided\s+by)\b|\bfactors?\s+of\s+\d+",
)
# "so I need 8 from 25, 30 and 3": a need derived from the target, unless the number is the target itself
# ("I need to make 32 from 25, 30, 3 and 4" restates the task).
_NEED_FROM = re.compile(
    rf"\b(?:need|needs|needed|needing|require|requires|must\s+make)\s+(?:to\s+(?:make|get|find|reach)\s+)?(?:a\s+|an\s+)?({_NUM})\s+(?:from|out\s+of|using|with)\b",
)
_TARGET_MENTION = re.compile(rf"\b(?:target|goal|make|reach|get|want|answer)(?:\s+(?:is|of|number|to))?\s*:?\s*({_NUM})\b")
_BACKWARD_ANNOUNCE = re.compile(
    r"^\s*(?:let\s+me\s+|let's\s+|i'll\s+|we\s+can\s+)?(?:think|work|reason|go)(?:ing)?\s+backwards?(?:\s+from\s+(?:the\s+target|\d+))?\s*[.:]?\s*$",
)
# Worded as a goal even when derived from the target: such sentences count as a subgoal too.
_STRONG_SUBGOAL = re.compile(r"\bsub-?\s?goal|\bintermediate\s+(?:target|goal)|\b(?:first|second|third|next|new)\s+goal\b|\bbreak")


_LETTER = re.compile(r"[a-z]")
_VERIFY_SYMBOLS = ("≠", "!=", "✓", "✔", "✗", "❌")


@dataclass(frozen=True)
class _Equation:
    operands: tuple[str, ...]
    result: str


def _thinking(text: str) -> str:
    """The reasoning part of a completion: inside <think> if present, else the text without its answer."""
    text = text[:MAX_CHARS]
    match = _THINK.search(text)
    body = match.group(1) if match else text
    return _ANSWER.sub(" ", body)


def _sentences(text: str) -> list[tuple[str, bool]]:
    """(sentence, whether it opens a `;`-separated clause): terse traces separate attempts with `;`
    ("...=11, 11-10=1 no;5-1=4 ..."), so a clause that starts after a verdict is a return."""
    out = []
    for i, clause in enumerate(_thinking(text).lower().split(";")):
        parts = [s.strip()[:MAX_SENTENCE_CHARS] for s in _SPLIT.split(clause) if s and s.strip()]
        out += [(part, i > 0 and j == 0) for j, part in enumerate(parts)]
    return out


def _equations(sentence: str) -> list[_Equation]:
    if "=" not in sentence:  # cheap filter: most sentences hold no equation
        return []
    return [_Equation(tuple(_NUMBER.findall(m.group(1))), _NUMBER.findall(m.group(2))[-1]) for m in _EQUATION.finditer(sentence)]


def _target(sentences: list[str]) -> str | None:
    """The target as the trace states it at the start ("make 32 from...", "The target is 47"), if it does."""
    for sentence in sentences[:2]:
        match = _TARGET_MENTION.search(sentence)
        if match:
            return match.group(1)
    return None


def _is_backward(sentence: str, target: str | None, words: bool) -> bool:
    if "=" in sentence and _BACKWARD_EQUATION.search(sentence):
        return True
    if not words:
        return False
    if _BACKWARD.search(sentence):
        return True
    if "need" not in sentence and "requir" not in sentence and "must" not in sentence:
        return False
    return any(m.group(1) != target for m in _NEED_FROM.finditer(sentence))


def count_behaviors(text: str) -> Counts:
    """Count the four behaviours in one completion (see the module docstring for the rules)."""
    counts = dict.fromkeys(BEHAVIORS, 0)
    clauses = _sentences(text)
    sentences = [sentence for sentence, _ in clauses]
    target = _target(sentences)
    chain: set[str] = set()  # values produced by the current attempt
    chain_steps = 0  # equations in the current attempt
    attempts = 0  # attempts started so far
    attempt_closed = False  # the current attempt ended with a verdict
    pending_verify = pending_backward = False
    previous_planning = False  # the previous sentence set a goal or reasoned backward
    for sentence, after_return in clauses:
        equations = _equations(sentence)
        # Pure arithmetic ("13 * 9 = 117") is common after comma splitting and can only match the symbol cues
        # and the "24 = 12 * 2" form, so the word patterns are skipped for it (a large share of the run time).
        words = _LETTER.search(sentence) is not None
        verify = bool(_VERIFY.search(sentence)) if words else any(sym in sentence for sym in _VERIFY_SYMBOLS)
        if _VERIFY_ANNOUNCE.match(sentence):
            pending_verify, verify = True, False
        elif verify or (pending_verify and equations):
            counts["verification"] += 1
            pending_verify, verify = False, True

        explicit_switch = (words and _BACKTRACK.search(sentence) is not None) or (after_return and attempt_closed and bool(equations))
        backward = _is_backward(sentence, target, words)
        if _BACKWARD_ANNOUNCE.match(sentence):
            pending_backward = True
        elif backward:
            # Consecutive backward sentences are one step ("44 - 24 = 20." "So I need 20 from 3 and 17.")
            # unless the second explicitly switches to another decomposition.
            if pending_backward or not previous_planning or explicit_switch:
                counts["backward_chaining"] += 1
            pending_backward = False
        subgoal = words and _SUBGOAL.search(sentence) is not None and (not backward or bool(_STRONG_SUBGOAL.search(sentence)))
        counts["subgoal_setting"] += int(subgoal)

        fresh = bool(equations) and not (set(equations[0].operands) & chain)
        # A fresh equation right after a goal or a backward step computes a part of that plan, not a new attempt.
        implicit_switch = fresh and (attempt_closed or chain_steps >= 2) and not (backward or previous_planning)
        new_attempt = explicit_switch or implicit_switch or (backward and attempt_closed)
        if new_attempt and (attempts > 0 or chain_steps > 0):
            counts["backtracking"] += 1
        if new_attempt or (equations and attempts == 0):
            attempts += 1
            chain, chain_steps, attempt_closed = set(), 0, False
        for eq in equations:
            chain.add(eq.result)
            chain_steps += 1
        if verify and chain_steps:
            attempt_closed = True
        previous_planning = backward or subgoal
    counts["verification"] += int(pending_verify)
    counts["backward_chaining"] += int(pending_backward)
    return counts


class HeuristicJudge:
    """The offline judge: ``judge(text) -> counts``; ``judge.batch(texts)`` for many."""

    name = "heuristic"
    version = "2"

    def __call__(self, text: str) -> Counts:
        return count_behaviors(text)

    def batch(self, texts: Iterable[str]) -> list[Counts]:
        return [count_behaviors(t) for t in texts]
