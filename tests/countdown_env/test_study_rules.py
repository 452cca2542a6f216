"""The `study` rules: the verdict of the study's scorer, reproduced without `eval`, and the study's prompts.

The study's scorer is `verl/utils/reward_score/countdown.py` in kanishkg/cognitive-behaviors (TinyZero's, nearly
verbatim). Every expected value below was worked out by hand from its code; it is never run here (it calls `eval`):

    extract_solution: text after the first "Assistant:" (always in the prompt) -> .split('\\n')[-1] ->
                      re.finditer(r'<answer>(.*?)</answer>') -> last match .group(1).strip(), else None
    compute_score:    None -> 0; validate_equation fails -> 0.1; evaluate_equation is None -> 0.1;
                      abs(result - target) < 1e-5 -> 1.0; else 0.1
    validate_equation: sorted(int(n) for n in re.findall(r'\\d+', eq)) == sorted(numbers)
    evaluate_equation: re.match(r'^[\\d+\\-*/().\\s]+$', eq) else None; eval(eq) (any exception -> None)

The prompt ends with "\\n<think>", so the last line of prompt + completion is the completion's last line (see
`countdown_env.scoring`); the completions below are completions, as `score_response` takes them.
"""

from __future__ import annotations

import re
import time
import warnings
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from countdown_env import ASSISTANT_PREFIX, Outcome, Rules, Task, continuation, preset_rules, render_prompt, score_response
from countdown_env.env import CountdownEnv
from countdown_env.expression import ExpressionError, evaluate_study
from countdown_env.rules import CHAT_SYSTEM, STUDY_FIXED
from countdown_env.scoring import study_answer
from countdown_env.steps import written_steps

STUDY = preset_rules("study")
A = (3, 5, 7)  # 3*5+7 = 22

# (completion, numbers, target, the study's reward, why). Each row is one where the study's scorer and our
# default rules disagree (checked below), with the study's value computed by hand from its code.
DISAGREE = [
    # The examples.
    ("</think>\n<answer>3*5+7</answer>\nUser: thanks", A, 22, 0.0, "the last line has no answer"),
    ("</think>\n<answer>3*5+7 = 22</answer>", A, 22, 0.1, "'22' is a fourth number: validate fails"),
    ("</think>\n<answer>3*5-7</answer> <answer>3*5+7</answer>", A, 22, 1.0, "the last answer on the line is right"),
    ("</think>\n<answer>-3+5*7</answer>", A, 32, 1.0, "unary minus: eval gives 32"),
    # The last line, and only it.
    ("</think>\n<answer>3*5+7</answer>\n", A, 22, 0.0, "a final newline: the last line is empty"),
    ("</think>\n<answer>\n3*5+7\n</answer>", A, 22, 0.0, "the answer spans lines: no match on the last one"),
    ("</think>\n<answer>3*5</answer>\nDone.", A, 22, 0.0, "a wrong answer, then a line of text: no answer"),
    ("maybe <answer>3*5+7</answer></think>\nso the answer is above", A, 22, 0.0, "the answer is not on the last line"),
    ("<answer>3*5-7</answer>\n<answer>3*5+7</answer>", A, 22, 1.0, "two answers on two lines: the last line's counts"),
    ("</think>\n<answer>3*5+7</answer> or <answer>3*5-7</answer>", A, 22, 0.1, "hedging: the last one (8) is read"),
    ("</think>\n<answer><answer>3*5+7</answer>", A, 22, 0.1, "the lazy match starts at the first <answer>: '<' fails"),
    ("</think>\n<answer></answer>", A, 22, 0.1, "an empty answer is found ('' is not None): no numbers"),
    # The number check: digit runs, before anything else.
    ("</think>\n<answer>3*5+7 is 22</answer>", A, 22, 0.1, "digit runs 3, 5, 7, 22"),
    ("</think>\n<answer>3*5+7 (= 22)</answer>", A, 22, 0.1, "digit runs 3, 5, 7, 22"),
    ("</think>\n<answer>3*5+7.0</answer>", A, 22, 0.1, "'7.0' is the runs 7 and 0"),
    ("</think>\n<answer>3*5</answer>\nsince 3*5+7=22", A, 22, 0.0, "the answer line is not the last"),
    # Characters outside [\d+\-*/().\s]: the format reward (our default reads them as operators).
    ("</think>\n<answer>3×5+7</answer>", A, 22, 0.1, "'×' is outside the study's characters"),
    ("</think>\n<answer>3x5+7</answer>", A, 22, 0.1, "'x' is outside the study's characters"),
    ("</think>\n<answer>5−3+7</answer>", (5, 3, 7), 9, 0.1, "a Unicode minus is outside the study's characters"),
    # Characters the study's pattern allows and Python's compiler refuses: the format reward.
    ("</think>\n<answer>03+5</answer>", (3, 5), 8, 0.1, "int('03') is 3, but Python refuses the literal 03"),
    ("</think>\n<answer>3*5\r+7</answer>", A, 22, 0.1, "'\\r' is \\s, but Python reads two lines"),
    ("</think>\n<answer>3*5\xa0+7</answer>", A, 22, 0.1, "a no-break space is \\s, but no Python whitespace"),
    ("</think>\n<answer>３*5+7</answer>", A, 22, 0.1, "a full-width 3 is \\d (int gives 3), but no Python digit"),
    ("</think>\n<answer>(3)(5)+7</answer>", A, 22, 0.1, "compiles, then 'int' object is not callable"),
    ("</think>\n<answer>3*5+7+</answer>", A, 22, 0.1, "the numbers are right; a syntax error: None"),
    # Python's arithmetic: decimals, powers, floor division, unary signs.
    ("</think>\n<answer>2.5*4</answer>", (2, 5, 4), 10, 1.0, "runs 2, 5, 4; 2.5*4 = 10.0"),
    ("</think>\n<answer>.5*4*5</answer>", (5, 4, 5), 10, 1.0, "runs 5, 4, 5; 0.5*4*5 = 10.0"),
    ("</think>\n<answer>07.5*2</answer>", (7, 5, 2), 15, 1.0, "'07.5' is a valid float literal; int('07') is 7"),
    ("</think>\n<answer>3*5+7.</answer>", A, 22, 1.0, "'7.' is the float 7.0"),
    ("</think>\n<answer>3**2*1</answer>", (3, 2, 1), 9, 1.0, "power"),
    ("</think>\n<answer>4**0.5*2</answer>", (4, 0, 5, 2), 4, 1.0, "4**0.5 is 2.0"),
    ("</think>\n<answer>7//2+1</answer>", (7, 2, 1), 4, 1.0, "floor division"),
    ("</think>\n<answer>1//0.1</answer>", (1, 0, 1), 9, 1.0, "1//0.1 is 9.0 in Python (0.1 is above 1/10)"),
    ("</think>\n<answer>99**99//99**98</answer>", (99, 99, 99, 98), 99, 1.0, "exact integers beyond 10**15"),
    ("</think>\n<answer>+2+3</answer>", (2, 3), 5, 1.0, "unary plus"),
    ("</think>\n<answer>5*7-(+3)</answer>", (5, 7, 3), 32, 1.0, "unary plus in parentheses"),
    ("</think>\n<answer>3--5</answer>", (3, 5), 8, 1.0, "minus a negative"),
    # The float comparison, and no limits of ours below Python's.
    ("</think>\n<answer>1000001/1000000</answer>", (1000001, 1000000), 1, 1.0, "1.000001 is within 1e-5 of 1"),
    ("</think>\n<answer>" + "(" * 40 + "3*5+7" + ")" * 40 + "</answer>", A, 22, 1.0, "40 nested parentheses"),
    ("</think>\n<answer>3*5" + " " * 600 + "+7</answer>", A, 22, 1.0, "an answer of 605 characters"),
]

# Rows where both agree: the study's scorer is not just "different".
AGREE = [
    ("</think>\n<answer>3*5+7</answer>", A, 22, 1.0),
    ("</think>\n<answer> 3 * 5 + 7 </answer> is my answer.", A, 22, 1.0),
    ("</think>\n<answer>(3*5\r+7)</answer>", A, 22, 1.0),  # a line break inside parentheses is whitespace
    ("</think>\n<answer>3*7+5</answer>", A, 22, 0.1),
    ("</think>\n<answer>3*5+7+7</answer>", A, 29, 0.1),
    ("</think>\n<answer>3/(5-5)+7</answer>", (3, 5, 5, 7), 22, 0.1),
    ("no answer at all", A, 22, 0.0),
    ("</think>\n<answer>3*5+7", A, 22, 0.0),
]


@pytest.mark.parametrize(("completion", "numbers", "target", "study", "why"), DISAGREE, ids=[row[4] for row in DISAGREE])
def test_study_rules_give_the_study_scorers_verdict_where_our_default_differs(completion, numbers, target, study, why) -> None:
    task = Task(numbers, target)
    score = score_response(completion, task, STUDY)
    assert score.reward == study, (why, score)
    assert score.correct is (study == 1.0) and score.well_formed is (study > 0)
    assert score_response(completion, task).reward != study, "not a disagreement: move the row to AGREE"


@pytest.mark.parametrize(("completion", "numbers", "target", "study"), AGREE)
def test_study_rules_agree_with_ours_where_the_study_does(completion, numbers, target, study) -> None:
    task = Task(numbers, target)
    assert score_response(completion, task, STUDY).reward == study == score_response(completion, task).reward


def test_the_table_is_large_and_each_study_value_occurs() -> None:
    assert len(DISAGREE) >= 30 and {row[3] for row in DISAGREE} == {0.0, 0.1, 1.0}


def test_study_verdicts_say_why() -> None:
    assert score_response("<answer>3*5+7 = 22</answer>", Task(A, 22), STUDY).extra == (22,)
    wrong = score_response("<answer>3*5-7</answer>", Task(A, 22), STUDY)
    assert wrong.outcome is Outcome.WRONG_VALUE and wrong.value == 8 and "target 22" in wrong.reason
    assert score_response("<answer>03+5</answer>", Task((3, 5), 8), STUDY).reason.startswith("leading zeros")
    assert score_response("<answer>2.5*4</answer>", Task((2, 5, 4), 10), STUDY).value == Fraction(10)
    none = score_response("<answer>3*5+7</answer>\nok", Task(A, 22), STUDY)
    assert none.outcome is Outcome.NO_ANSWER and "last line" in none.reason and not none.well_formed


def test_study_rules_keep_rewards_and_strict_ending_but_refuse_rules_the_study_does_not_enforce() -> None:
    assert STUDY.scorer == "study" and STUDY.format_reward == 0.1 and STUDY.correct_reward == 1.0
    assert score_response("<answer>3*5</answer>", Task(A, 22), STUDY.with_(format_reward=0.2)).reward == 0.2
    strict = preset_rules("study", strict_ending=True)
    assert score_response("<answer>3*5+7</answer> thanks", Task(A, 22), strict).reward == 0.0
    assert score_response("<answer>3*5+7</answer>  ", Task(A, 22), strict).reward == 1.0
    for name, value in STUDY_FIXED.items():
        other = ("+", "-") if name == "operators" else not value
        with pytest.raises(ValueError, match=name):
            STUDY.with_(**{name: other})
    with pytest.raises(ValueError, match="scorer"):
        Rules(scorer="reasoning-gym")


def test_study_tasks_are_tinyzeros_and_solvable() -> None:
    from countdown_env import generate_tasks

    tasks = generate_tasks(20, seed=3, preset="study")
    assert tasks == generate_tasks(20, seed=3, preset="tinyzero")
    assert all(score_response(f"x</think>\n<answer>{t.solution}</answer>", t, STUDY).correct for t in tasks)


# ---- bounded work where Python would hang or run out of memory ------------------------------------------


@pytest.mark.parametrize(
    ("completion", "numbers", "target", "study"),
    [
        ("<answer>(2**3322)*(2**3322)</answer>", (2, 3322, 2, 3322), 1, 0.1),  # each power within 10**1000, the product not
        ("<answer>" + "1+" * 2500 + "1</answer>", (1,) * 2501, 2501, 0.1),  # Python: RecursionError compiling; ours: too long
        ("<answer>" + "-" * 1000 + "22</answer>", (22,), 22, 1.0),  # a run of signs is a loop here, as Python allows
        ("<answer>" + "(" * 100 + "3*5+7" + ")" * 100 + "</answer>", A, 22, 1.0),  # the deepest nesting we parse
    ],
    ids=["product", "2501 terms", "1000 signs", "depth 100"],
)
def test_long_and_large_answers_are_bounded_and_agree(completion, numbers, target, study) -> None:
    start = time.perf_counter()
    assert score_response(completion, Task(numbers, target), STUDY).reward == study
    assert time.perf_counter() - start < 1.0


# Where our bounds part from the study (docs/rules.md): (completion, numbers, target, the study's value, ours).
DEVIATIONS = [
    ("<answer>9**9**9</answer>", (9, 9, 9), 1, None, 0.1),  # the study's eval does not return (a 370-million-digit power)
    ("<answer>" + "(" * 150 + "3*5+7" + ")" * 150 + "</answer>", A, 22, 1.0, 0.1),  # Python nests 200; we parse 100
    ("<answer>3*5" + " " * 5000 + "+7</answer>", A, 22, 1.0, 0.1),  # we evaluate answers of up to 4096 characters
    ("<answer>" + "-" * 3500 + "22</answer>", (22,), 22, 0.1, 1.0),  # Python 3.11's compiler: RecursionError (~3000 deep)
]


@pytest.mark.parametrize(
    ("completion", "numbers", "target", "study", "ours"), DEVIATIONS, ids=["tower", "depth 150", "5005 chars", "3500 signs"]
)
def test_documented_deviations_are_bounded(completion, numbers, target, study, ours) -> None:
    start = time.perf_counter()
    assert score_response(completion, Task(numbers, target), STUDY).reward == ours != study
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "line",
    [
        "<answer>" * 2_000_000,  # many openings without a close: the lazy pattern must not rescan the line
        "<answer>1</answer>" * 500_000,
        "<answer>" * 1_000_000 + "3*5+7</answer>" + "<answer>" * 1_000_000,
        "x" * 20_000_000 + "<answer>3*5+7</answer>",
    ],
    ids=["opens", "matches", "opens around", "20 MB"],
)
def test_megabyte_lines_are_linear(line: str) -> None:
    start = time.perf_counter()
    score_response("</think>\n" + line, Task(A, 22), STUDY)
    assert time.perf_counter() - start < 2.0


def test_the_last_match_is_the_studys_even_after_a_stray_close() -> None:
    # finditer: '1' matches, then a lone '</answer>', then nothing: the study's answer is '1', not '1</answer>'.
    assert study_answer("<answer>1</answer></answer>") == ("1", "</answer>")
    assert study_answer("<answer> a </answer>x<answer>b</answer>y\nlast <answer> c </answer>!") == ("c", "!")
    assert study_answer("<answer>a</answer>\n") is None and study_answer("<answer>a") is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="0123456789+-*/().= \t\r\x0c\n<>answer/x×３", max_size=60))
def test_study_scoring_is_total(text: str) -> None:
    for completion in (text, f"<answer>{text}</answer>", f"</think>\n<answer>{text}</answer>"):
        score = score_response(completion, Task(A, 22), STUDY)
        assert score.reward in (0.0, 0.1, 1.0)


# The study's two functions that do not call eval, verbatim, as oracles (its compute_score calls eval: never run).
def extract_solution(solution_str):  # noqa: ANN001, ANN201
    """Extract the equation from the solution string."""
    # Remove everything before the first "Assistant:"
    if "Assistant:" in solution_str:
        solution_str = solution_str.split("Assistant:", 1)[1]
    elif "<|im_start|>assistant" in solution_str:
        solution_str = solution_str.split("<|im_start|>assistant", 1)[1]
    else:
        return None
    solution_str = solution_str.split("\n")[-1]

    answer_pattern = r"<answer>(.*?)</answer>"
    match = re.finditer(answer_pattern, solution_str)
    matches = list(match)
    if matches:  # noqa: SIM108 (verbatim)
        final_answer = matches[-1].group(1).strip()
    else:
        final_answer = None
    return final_answer


def validate_equation(equation_str, available_numbers):  # noqa: ANN001, ANN201
    """Validate that equation only uses available numbers and each number once."""
    try:
        # Extract all numbers from the equation
        numbers_in_eq = [int(n) for n in re.findall(r"\d+", equation_str)]

        # Check if all numbers in equation are available
        available_numbers = sorted(available_numbers)
        numbers_in_eq = sorted(numbers_in_eq)

        # Each number should be used exactly once
        return numbers_in_eq == available_numbers
    except:  # noqa: E722
        return False


def pieces(*items: str, max_size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(items), max_size=max_size).map("".join)


COMPLETION_TEXT = pieces(*"<answer>/ \n\r\t357+*().0=x", "<answer>", "</answer>", "３", "\xa0", max_size=40)


@settings(max_examples=500, deadline=None)
@given(COMPLETION_TEXT)
def test_extraction_and_number_check_are_the_studys(completion: str) -> None:
    for prompt in (STUDY_BASE, STUDY_QWEN_INSTRUCT):
        expected = extract_solution(prompt + completion)
        found = study_answer(completion)
        assert (found and found[0]) == expected or (found is None and expected is None)
    score = score_response(completion, Task(A, 22), STUDY)
    if expected is None:
        assert score.outcome is Outcome.NO_ANSWER and score.reward == 0.0
    else:
        assert (score.outcome is Outcome.WRONG_NUMBERS) is (not validate_equation(expected, list(A)))
        assert score.reward in (0.1, 1.0)


@settings(max_examples=300, deadline=None)
@given(pieces(*"0123456789+-*/(). \t\r\x0c", "**", "//", "...", "07", max_size=20))
def test_study_evaluator_accepts_what_python_compiles(text: str) -> None:
    """Python's own compiler (never eval) decides which answers are syntax errors; ours must agree."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # `(3)(5)` compiles with a warning
            compile(text.strip(), "<answer>", "eval")
        compiles = True
    except SyntaxError:
        compiles = False
    try:
        evaluate_study(text.strip(), STUDY)
        parses = True
    except ExpressionError:
        parses = False
    assert parses == compiles, text


# ---- completions that start inside <think> ----------------------------------------------------------------

STUDY_BASE = (  # the study's `base` template (examples/data_preprocess/countdown.py), verbatim
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant "
    "first thinks about the reasoning process in the mind and then provides the user with the answer.\n"
    "User: Using the numbers [44, 19, 35], create an equation that equals 98. You can use basic arithmetic operations "
    "(+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. And return the final "
    "answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.\n"
    "Assistant: Let me solve this step by step.\n<think>"
)
STUDY_QWEN_INSTRUCT = (  # the study's `qwen-instruct` template, verbatim
    "<|im_start|>system\nYou are a helpful assistant. You first thinks about the reasoning process in the mind and "
    "then provides the user with the answer.<|im_end|>\n<|im_start|>user\n Using the numbers [44, 19, 35], create an "
    "equation that equals 98. You can use basic arithmetic operations (+, -, *, /) and each number can only be used "
    "once. Show your work in <think> </think> tags. And return the final answer in <answer> </answer> tags, for "
    "example <answer> (1 + 2) / 3 </answer>.<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>"
)
TASK = Task((44, 19, 35), 98)


class QwenTemplate:
    """Qwen2.5's chat template for system/user turns, as text (the lab never imports transformers here)."""

    chat_template = "qwen"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


@pytest.mark.parametrize("preset", ["tinyzero", "study"])
def test_prompts_are_the_studys_templates_verbatim(preset: str) -> None:
    rules = preset_rules(preset)
    assert render_prompt(TASK, "tinyzero", rules) == STUDY_BASE
    assert render_prompt(TASK, "chat", rules, tokenizer=QwenTemplate()) == STUDY_QWEN_INSTRUCT
    assert CHAT_SYSTEM in STUDY_QWEN_INSTRUCT and STUDY_BASE.endswith(ASSISTANT_PREFIX)


def test_prompts_keep_the_rules_wording() -> None:
    classic = render_prompt(Task((25, 50, 3, 7, 1, 2), 75), "tinyzero", preset_rules("classic"))
    assert "each number can be used at most once, every intermediate result must be a whole number" in classic
    assert classic.endswith(ASSISTANT_PREFIX)
    assert "(+, *)" in render_prompt(TASK, "tinyzero", Rules(operators=("+", "*")))


INSIDE_THINK = [  # completions as the model writes them after a prompt that opened <think>
    ("44 + 19 = 63, 63 + 35 = 98</think>\n<answer>44 + 19 + 35</answer>", True),
    ("the format is <answer>x</answer>, so 44 + 19 + 35 = 98</think>\n<answer>44 + 19 + 35</answer>", True),
    ("<answer>44 + 19 - 35</answer> no.</think>\n<answer>44 + 19 + 35</answer>", True),
    ("44 + 19 = 63</think>\n<answer>44 + 19</answer>", False),
]


@pytest.mark.parametrize(("completion", "correct"), INSIDE_THINK)
def test_completions_that_start_inside_think_are_scored(completion: str, correct: bool) -> None:
    for rules in (preset_rules("tinyzero"), STUDY):
        assert score_response(completion, TASK, rules).correct is correct
    # The study's scorer read prompt + completion; on the last line that is the same verdict (our default
    # reads the completion alone, as the contract says: the prompt's example <answer> would count as hedging).
    assert score_response(STUDY_BASE + completion, TASK, STUDY).correct is correct
    assert [s.written for s in written_steps(INSIDE_THINK[0][0])] == [63, 98]


def test_env_prompts_end_inside_think_and_score_such_completions() -> None:
    env = CountdownEnv(tasks=[TASK], preset="study", max_attempts=2)
    obs, _ = env.reset(seed=0)
    assert obs == STUDY_BASE
    _, reward, terminated, _, _ = env.step(INSIDE_THINK[0][0])
    assert reward == 1.0 and terminated


def test_continuation_drops_a_doubled_think() -> None:
    trace = "<think>44 + 19 + 35 = 98</think>\n<answer>44 + 19 + 35</answer>"
    assert STUDY_BASE + continuation(STUDY_BASE, trace) == STUDY_BASE + trace[len("<think>") :]
    assert continuation("Numbers: 1 2\nTarget: 3\n", trace) == trace  # a prompt that does not open <think>
    assert continuation(STUDY_BASE, "44 + 19</think>") == "44 + 19</think>"
