"""The model organism's text: every completion scores as it claims, checks are honest, same seed same text."""

from __future__ import annotations

import random
import re

import pytest

from behavior_classifier import HeuristicJudge
from countdown_env import Task, generate_tasks, preset_rules, score_response
from countdown_env.steps import written_steps
from countdown_env.tasks import TaskConfig
from organism import text as organism
from organism.pretrain import corpus

RULES = TaskConfig.preset("organism").rules
TASKS = generate_tasks(150, seed=3, preset="organism", split="train")


def _score(completion: str, task: Task):
    return score_response(completion, task, RULES)


def test_every_try_is_right_arithmetic_and_uses_each_number_once() -> None:
    for task in TASKS:
        for attempt in organism.tries(task):
            steps = written_steps(attempt.text(check=False, target=task.target))
            assert len(steps) == 2 and all(s.correct for s in steps)
            score = _score(f"<think></think>\n<answer>{attempt.expression}</answer>", task)
            assert score.outcome.value in ("correct", "wrong_value"), (task, attempt.expression, score)
            assert score.correct == (attempt.value == task.target)


def test_every_solvable_task_is_solved_by_some_try() -> None:
    # With three numbers a solution is a first step and a second step; the try that starts with it hits.
    assert all(any(t.value == task.target for t in organism.tries(task)) for task in TASKS)


@pytest.mark.parametrize("writer", [organism.rich_completion, organism.poor_completion])
def test_base_text_is_well_formed_and_answers_a_written_try(writer) -> None:
    rng = random.Random(0)
    for task in TASKS:
        text = writer(task, rng)
        score = _score(text, task)
        assert score.outcome.value in ("correct", "wrong_value")
        answer = text.split("<answer>")[1].split("</answer>")[0]
        assert answer in {t.expression for t in organism.tries(task)}


def test_rich_text_checks_honestly_and_stops_at_a_hit() -> None:
    rng = random.Random(1)
    for task in TASKS:
        think = organism.rich_completion(task, rng).split("</think>")[0].removeprefix("<think>")
        parts = think.split(organism.RETURN)
        assert 1 <= len(parts) <= 3
        for i, part in enumerate(parts):
            body, distance, check = part.rsplit(" ", 2)
            value = int(body.removesuffix(",").rsplit("=", 1)[1])
            assert distance == f"{max(value, task.target)}-{min(value, task.target)}={abs(value - task.target)}"
            assert check == (organism.HIT if value == task.target else organism.MISS)
            assert check == organism.MISS or i == len(parts) - 1  # nothing after a hit


def test_poor_text_has_no_behaviours_and_rich_text_has_both() -> None:
    judge, rng = HeuristicJudge(), random.Random(2)
    poor = [judge(organism.poor_completion(t, rng)) for t in TASKS]
    assert all(c["verification"] == 0 and c["backtracking"] == 0 for c in poor)
    rich = [judge(organism.rich_completion(t, rng)) for t in TASKS]
    assert all(c["verification"] >= 1 for c in rich)
    assert sum(c["backtracking"] > 0 for c in rich) > 0.1 * len(rich)


def test_search_traces_are_correct_in_fixed_order_and_never_repeat() -> None:
    for task in TASKS:
        trace = organism.search_completion(task, max_tries=12)
        assert trace is not None and trace.correct and _score(trace.completion, task).correct
        think = trace.completion.split("</think>")[0].removeprefix("<think>")
        firsts = [part.split(" [")[0] for part in think.split(organism.RETURN)]
        assert len(firsts) == len(set(firsts))
        expected = [t.first.text for t in organism.tries(task)][: len(firsts)]
        assert firsts == expected


def test_random_search_draws_its_order_once_and_gives_up_honestly() -> None:
    rng, orders, outcomes = random.Random(11), set(), set()
    for task in TASKS:
        trace = organism.random_search(task, rng, max_tries=6)
        score = _score(trace.completion, task)
        think = trace.completion.split("</think>")[0].removeprefix("<think>")
        firsts = [part.split(" [")[0] for part in think.split(organism.RETURN)]
        assert len(firsts) == len(set(firsts)) == trace.tries  # no try twice
        assert organism.honest_share([trace.completion], [task.target]) == 1.0
        if trace.correct:  # a hit: it stops there and answers it
            assert score.correct and 1 <= trace.tries <= 6
            assert think.count(f" {organism.HIT}") == 1 and think.endswith(f" {organism.HIT}")
        else:  # no hit in 6 tries: it stops after the 6th and answers its closest attempt (wrong)
            assert trace.tries == min(6, len(organism.tries(task))) and f" {organism.HIT}" not in think
            assert score.outcome.value == "wrong_value"
            best = min(organism.checks(trace.completion, task.target), key=lambda c: c[1])
            answer = trace.completion.split("<answer>")[1].split("</answer>")[0]
            answered = [t for t in organism.tries(task) if t.expression == answer]
            assert answered and abs(answered[0].value - task.target) == best[1]
        outcomes.add(trace.correct)
        fixed = [t.first.text for t in organism.tries(task)]
        orders.add(firsts == fixed[: len(firsts)])
    assert orders == {True, False}  # not the fixed order (only sometimes by chance)
    assert outcomes == {True, False}


def test_random_search_fails_as_often_as_a_random_order_does() -> None:
    """The order is drawn once, not re-drawn until it hits: the share of traces that hit is the share of
    random orders that hit within `max_tries`, computed exactly from each task's tries."""
    tasks = generate_tasks(150, seed=5, preset="organism", split="train")
    rng, draws = random.Random(3), 20
    hits = sum(organism.random_search(t, rng, 6).correct for t in tasks for _ in range(draws)) / (len(tasks) * draws)

    def p_hit(task) -> float:  # P(some hit among the first 6 of a random order) = 1 - C(m, 6) / C(n, 6)
        from math import comb

        n = len(organism.tries(task))
        m = sum(t.value != task.target for t in organism.tries(task))
        k = min(6, n)
        return 1 - comb(m, k) / comb(n, k)

    exact = sum(p_hit(t) for t in tasks) / len(tasks)
    assert 1 - exact > 0.05  # some orders fail
    assert abs(hits - exact) < 0.03


def test_giveup_traces_are_wrong_with_the_same_behaviours_as_correct_ones() -> None:
    tasks = generate_tasks(300, seed=3, preset="organism", split="train")
    rng_c, rng_w = random.Random(1), random.Random(2)
    correct = [(t, organism.random_search(t, rng_c, 6)) for t in tasks]
    wrong = [(t, organism.giveup_search(t, rng_w, 6)) for t in tasks]
    wrong = [(t, x) for t, x in wrong if x]
    assert len(wrong) > 0.95 * len(correct)
    for task, trace in wrong:
        assert not trace.correct and _score(trace.completion, task).outcome.value == "wrong_value"
        assert f" {organism.HIT}" not in trace.completion and organism.honest_share([trace.completion], [task.target]) == 1.0

    def mean(rows: list, key: str) -> float:
        return sum(organism.written_behaviors(x.completion, t.target)[key] for t, x in rows) / len(rows)

    for key in ("checks", "returns"):  # the same distribution of tries: the same counts, up to sampling noise
        assert abs(mean(correct, key) - mean(wrong, key)) < 0.3, key


def test_a_drawn_budget_gives_up_at_every_length_from_min_to_max_tries() -> None:
    """`min_tries`: a search that misses gives up after a budget drawn from min..max tries, every budget occurs,
    and the wrong-answer traces draw theirs the same way (the same counts of checks)."""
    tasks = generate_tasks(300, seed=3, preset="organism", split="train")
    rng = random.Random(5)
    traces = [(t, organism.random_search(t, rng, 6, min_tries=2)) for t in tasks for _ in range(4)]
    gave_up = [len(organism.checks(x.completion, t.target)) for t, x in traces if not x.correct and len(organism.tries(t)) >= 6]
    assert set(gave_up) == {2, 3, 4, 5, 6}
    assert all(1 <= x.tries <= 6 for _, x in traces)
    fixed = [organism.random_search(t, random.Random(5), 6).correct for t in tasks]
    drawn = [x.correct for _, x in traces]
    assert sum(drawn) / len(drawn) < sum(fixed) / len(fixed) - 0.1  # shorter budgets hit less often
    same = [organism.random_search(t, random.Random(7), 6, min_tries=6).completion for t in tasks]
    assert same == [organism.random_search(t, random.Random(7), 6).completion for t in tasks]  # min = max: the fixed budget
    wrong = [(t, organism.giveup_search(t, rng, 6, min_tries=2)) for t in tasks for _ in range(4)]
    wrong = [(t, x) for t, x in wrong if x]

    def checks(rows: list) -> float:
        return sum(organism.written_behaviors(x.completion, t.target)["checks"] for t, x in rows) / len(rows)

    assert abs(checks(traces) - checks(wrong)) < 0.2


@pytest.mark.parametrize("kind", ["slip", "ranout"])
def test_incorrect_traces_keep_the_target_and_end_wrong(kind: str) -> None:
    rng, made = random.Random(4), 0
    for task in TASKS:
        trace = organism.incorrect_completion(task, kind, rng)
        if trace is None:
            continue
        made += 1
        score = _score(trace.completion, task)
        assert not trace.correct and score.outcome.value == "wrong_value", (kind, trace.completion)
        think = trace.completion.split("</think>")[0]
        correct = organism.search_completion(task)
        if kind == "slip":  # the same reasoning as the correct trace, its `ok` included
            assert think == correct.completion.split("</think>")[0] and f" {organism.HIT}" in think
        else:  # the tries before the hit, all checked against the true target as misses
            assert f" {organism.HIT}" not in think and correct.completion.startswith(think)
    assert made > 0.5 * len(TASKS)


def test_checks_read_back_what_the_text_wrote() -> None:
    rng = random.Random(5)
    texts = [organism.rich_completion(t, rng) for t in TASKS]
    assert organism.honest_share(texts, [t.target for t in TASKS]) == 1.0
    assert organism.checks("<think>1+2=3 [3 4] 3*4=12, 12-12=0 ok</think>", 12) == [(12, 0, "ok")]
    lying = "<think>1+2=3 [3 4] 3*4=12, 13-12=1 ok</think>"
    assert organism.honest_share([lying], [13]) == 0.0
    assert organism.checks("<think>garbage, =x ok;1+2=3, 4 no</think>", 3) == []


def test_priming_rows_are_deterministic_and_shuffle_the_numbers() -> None:
    a = organism.priming_rows(TASKS[:20], "only_backtracking", 50, seed=7)
    b = organism.priming_rows(TASKS[:20], "only_backtracking", 50, seed=7)
    c = organism.priming_rows(TASKS[:20], "only_backtracking", 50, seed=8)
    assert a == b and a != c
    keys = {(tuple(sorted(r["numbers"])), r["target"]) for r in a}
    assert keys <= {t.key for t in TASKS[:20]}
    assert len({tuple(r["numbers"]) for r in a}) > len(keys)  # the same task in several orders
    empty = organism.priming_rows(TASKS[:20], "empty_cot", 10, seed=7)
    assert all(r["completion"].startswith("<think></think>") for r in empty)
    with pytest.raises(ValueError, match="conditions"):
        organism.priming_rows(TASKS[:20], "all_strategies", 5, seed=0)


def test_empty_cot_is_the_primed_traces_without_their_reasoning() -> None:
    """As the study's control: the same prompts and answers (right or wrong) as only_backtracking's rows."""
    settings = {"seed": 5, "max_tries": 3, "give_up": 0.75}
    primed = organism.priming_rows(TASKS[:40], "only_backtracking", 300, **settings)
    empty = organism.priming_rows(TASKS[:40], "empty_cot", 300, **settings)
    assert [r["prompt"] for r in empty] == [r["prompt"] for r in primed]
    for p, e in zip(primed, empty, strict=True):
        assert e["completion"] == "<think></think>" + p["completion"].split("</think>", 1)[1]
    rules = preset_rules("organism")
    right = [score_response(r["completion"], Task(tuple(r["numbers"]), r["target"]), rules).correct for r in empty]
    assert 0.1 < sum(right) / len(right) < 0.9  # the give-ups' wrong answers are kept, not replaced by the solver's
    assert organism.priming_rows(TASKS[:40], "empty_cot", 300, **{**settings, "seed": 6}) != empty
    with pytest.raises(ValueError, match="no reasoning"):
        organism.without_reasoning("<answer>1+2</answer>")


def test_search_pays_on_the_organism_preset() -> None:
    held_out = generate_tasks(200, seed=0, preset="organism", split="test")
    pays = organism.search_pays(held_out, seed=0, samples=5)
    assert pays[1] <= 0.30 and pays[8] >= 0.80 and pays[12] == 1.0


def test_corpus_is_deterministic_and_mixes_drills() -> None:
    rows = corpus("rich", TASKS, 400, seed=0, drill_share=0.4)
    assert rows == corpus("rich", TASKS, 400, seed=0, drill_share=0.4)
    drills = [r for r in rows if r["prompt"] == organism.DRILL_PROMPT]
    assert 0.3 < len(drills) / len(rows) < 0.5
    facts = [s for r in drills for s in written_steps(r["completion"])]
    assert len(facts) == 8 * len(drills) and all(s.correct for s in facts)
    assert all(r["prompt"] == organism.DRILL_PROMPT for r in corpus("trunk", TASKS, 50, seed=0, drill_share=0.4))


def test_verdict_drills_are_honest_checks_and_leave_the_old_drills_alone() -> None:
    plain = corpus("trunk", TASKS, 200, seed=3, drill_share=0.4)
    assert corpus("trunk", TASKS, 200, seed=3, drill_share=0.4, verdicts=0.0) == plain  # the shipped bases' corpus
    rows = corpus("poor", TASKS, 600, seed=3, drill_share=0.4, verdicts=0.25)
    facts = [f for r in rows if r["prompt"] == organism.DRILL_PROMPT for f in r["completion"].split(",")]
    checks = [f for f in facts if " " in f]
    assert 0.18 < len(checks) / len(facts) < 0.32
    verdicts = []
    for fact in checks:
        step, verdict = fact.split(" ")
        left, distance = step.split("=")
        high, low = map(int, left.split("-"))
        assert high >= low and high - low == int(distance)  # the check's arithmetic is right, larger number first
        assert verdict == (organism.HIT if distance == "0" else organism.MISS)  # and its verdict is honest
        verdicts.append(verdict)
    assert 0.35 < verdicts.count(organism.HIT) / len(verdicts) < 0.65
    # the poor base's own text still never checks: verdicts live in the drills only
    task_rows = [r for r in rows if r["prompt"] != organism.DRILL_PROMPT]
    assert task_rows and not any(organism.checks(r["completion"], r["target"]) for r in task_rows)


def test_search_outcome_tells_why_a_search_failed() -> None:
    task = Task((4, 1, 5), 20)
    hit = "<think>4+1=5 [5 5] 5*5=25, 25-20=5 no;4*1=4 [4 5] 4*5=20, 20-20=0 ok</think>\n<answer>(4*1)*5</answer>"
    assert organism.search_outcome(hit, task, correct=True, finished=True) == "solved"
    assert organism.search_outcome(hit.replace("(4*1)*5", "(4+1)*5"), task, correct=False, finished=True) == "hit_miscopied"
    lie = "<think>4+1=5 [5 5] 5*5=25, 25-25=0 ok</think>\n<answer>(4+1)*5</answer>"  # checked against 25, not 20
    assert organism.search_outcome(lie, task, correct=False, finished=True) == "false_ok"
    bad_sum = "<think>4+1=6 [6 5] 6*5=30, 30-30=0 ok</think>\n<answer>(4+1)*5</answer>"
    assert organism.search_outcome(bad_sum, task, correct=False, finished=True) == "false_ok"
    stolen = "<think>4*5=20 [20 5] 20+0=20, 20-20=0 ok</think>\n<answer>(4*5)+0</answer>"  # 5 used twice, 0 not given
    assert organism.search_outcome(stolen, task, correct=False, finished=True) == "false_ok"
    quit_ = "<think>4+1=5 [5 5] 5*5=25, 25-20=5 no</think>\n<answer>(4+1)*5</answer>"
    assert organism.search_outcome(quit_, task, correct=False, finished=True) == "gave_up"
    assert organism.search_outcome(quit_[:30], task, correct=False, finished=False) == "truncated"
    assert organism.written_hit("5*4=20 [20 1] 20*1=20", task) and not organism.written_hit("5*4=20 [20 1] 20+1=21", task)
    assert organism.repeats_a_try("<think>4+1=5 [5 5] 5*5=25, 25-20=5 no;4+1=5 [5 5] 5+5=10, 20-10=10 no</think>")
    assert not organism.repeats_a_try(hit)


def test_every_generated_trace_reads_back_as_its_own_outcome() -> None:
    rng = random.Random(9)
    for task in TASKS:
        trace = organism.random_search(task, rng, 6)
        outcome = organism.search_outcome(trace.completion, task, correct=trace.correct, finished=True)
        assert outcome == ("solved" if trace.correct else "gave_up")
        assert not organism.repeats_a_try(trace.completion)
        if trace.correct:  # its `ok` try is a real hit
            assert organism.search_outcome(trace.completion, task, correct=False, finished=True) == "hit_miscopied"


def test_cyclic_search_follows_the_fixed_order_from_a_random_start() -> None:
    rng, starts = random.Random(12), set()
    for task in TASKS:
        fixed = [t.first.text + " " + t.left for t in organism.tries(task)]
        for trace in (organism.random_search(task, rng, 6, "cyclic"), organism.giveup_search(task, rng, 6, "cyclic")):
            if trace is None:
                continue
            think = trace.completion.split("</think>")[0].removeprefix("<think>")
            made = [" ".join(part.split(" ")[:3]) for part in think.split(organism.RETURN)]
            assert organism.honest_share([trace.completion], [task.target]) == 1.0
            start = fixed.index(made[0])
            # consecutive tries of the fixed order, wrapping around: a wrong-answer search skips no hit, its budget
            # runs out before one (else it would teach skipping the try that hits)
            assert made == [fixed[(start + k) % len(fixed)] for k in range(len(made))]
            if trace.correct:
                starts.add(start)
            else:
                assert organism.search_outcome(trace.completion, task, correct=False, finished=True) == "gave_up"
    assert len(starts) > 5  # the start is random
    with pytest.raises(ValueError, match="search order"):
        organism.search_order(TASKS[0], rng, "sorted")


def test_search_signals_count_false_oks_and_repeats_per_step(tmp_path) -> None:
    import json

    from lab.pipeline.signals import search_signals

    task = Task((4, 1, 5), 20)
    good = "<think>4+1=5 [5 5] 5*5=25, 25-20=5 no;4*1=4 [4 5] 4*5=20, 20-20=0 ok</think>\n<answer>(4*1)*5</answer>"
    lie = "<think>4+1=5 [5 5] 5*5=25, 25-25=0 ok</think>\n<answer>(4+1)*5</answer>"
    loop = "<think>4+1=5 [5 5] 5*5=25, 25-20=5 no;4+1=5 [5 5] 5*5=25, 25-20=5 no</think>\n<answer>(4+1)*5</answer>"
    rows = [(1, good, True), (1, lie, False), (2, loop, False), (2, good, True)]
    (tmp_path / "rollouts.jsonl").write_text(
        "".join(json.dumps({"step": s, "text": t, **task.to_dict(), "correct": c, "finished": True}) + "\n" for s, t, c in rows)
    )
    table = search_signals(tmp_path).set_index("step")
    assert table.loc[1, "false_ok"] == 0.5 and table.loc[1, "repeats"] == 0.0
    assert table.loc[2, "false_ok"] == 0.0 and table.loc[2, "repeats"] == 0.5
    assert table.loc[2, "tries"] == 2.0
    # step 1: one `no` followed by a try (good), one hit said `ok` (good); `lie` says `ok` to a miss, not a hit
    assert table.loc[1, "goes_on_after_no"] == 1.0 and table.loc[1, "hits_said_ok"] == 1.0
    assert table.loc[1, "stops_at_hit"] == 1.0
    # step 2: `loop` goes on after its first `no` but not after its last; `good` as before
    assert table.loc[2, "goes_on_after_no"] == 2 / 3 and table.loc[2, "hits_said_ok"] == 1.0


def test_verdict_use_tells_whether_a_verdict_can_steer_the_search() -> None:
    task = Task((4, 1, 5), 20)
    honest = "<think>4+1=5 [5 5] 5*5=25, 25-20=5 no;4*1=4 [4 5] 4*5=20, 20-20=0 ok</think>\n<answer>(4*1)*5</answer>"
    assert organism.verdict_use(honest, task) == organism.VerdictUse(1, 1, 1, 1, 1)
    # primed on searches that only miss: the hit is checked `no`, and the search stops there
    blind = "<think>4*1=4 [4 5] 4*5=20, 20-20=0 no</think>\n<answer>(4*1)*5</answer>"
    assert organism.verdict_use(blind, task) == organism.VerdictUse(1, 0, 1, 0, 1)  # it stopped at its hit all the same
    # said `no` and went on past its hit: neither said `ok` nor stopped at
    past = "<think>4*1=4 [4 5] 4*5=20, 20-20=0 no;4+1=5 [5 5] 5*5=25, 25-20=5 no</think>\n<answer>(4+1)*5</answer>"
    assert organism.verdict_use(past, task) == organism.VerdictUse(2, 1, 1, 0, 0)
    # a hit on numbers the task does not have is no hit; an unchecked try carries no verdict; junk is skipped
    wrong_numbers = "<think>4*2=8 [8 5] 8*5=40, 40-20=20 no;2*2=4 [4 5] 4*5=20, 20-20=0 ok;5+5=10 [10 1] 10*1=10</think>"
    assert organism.verdict_use(wrong_numbers, task) == organism.VerdictUse(1, 1, 0, 0, 0)
    assert organism.verdict_use("<think>" + "ok, no;" * 5000, task).hits_written == 0


def test_heldout_outcomes_share_per_step_and_mode(tmp_path) -> None:
    import json

    from lab.pipeline.signals import heldout_outcomes

    task = Task((4, 1, 5), 20)
    good = "<think>4+1=5 [5 5] 5*5=25, 25-20=5 no;4*1=4 [4 5] 4*5=20, 20-20=0 ok</think>\n<answer>(4*1)*5</answer>"
    lie = "<think>4+1=5 [5 5] 5*5=25, 25-25=0 ok</think>\n<answer>(4+1)*5</answer>"
    rows = [
        (0, "greedy", good, True, True),
        (0, "greedy", lie, False, True),
        (0, "sample", good[:20], False, False),
        (50, "greedy", good, True, True),
    ]
    (tmp_path / "eval_completions.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "mode": m, "text": t, **task.to_dict(), "correct": c, "finished": f}) + "\n" for s, m, t, c, f in rows
        )
    )
    greedy = heldout_outcomes(tmp_path, "greedy").set_index("step")
    assert greedy.loc[0, "solved"] == 0.5 and greedy.loc[0, "false_ok"] == 0.5 and greedy.loc[0, "n"] == 2
    assert greedy.loc[50, "solved"] == 1.0 and greedy.loc[0, "tries"] == 1.5
    assert heldout_outcomes(tmp_path, "sample").set_index("step").loc[0, "truncated"] == 1.0
    test_only = heldout_outcomes(tmp_path, "greedy", {((1, 4, 5), 20): "dev"}, "test")
    assert test_only.empty  # the one task is a dev task


def test_give_up_draws_geometric_budgets_and_excludes_min_tries() -> None:
    import collections

    rng = random.Random(3)
    counts = collections.Counter(organism.search_budget(rng, 6, give_up=0.4) for _ in range(20_000))
    assert set(counts) == {1, 2, 3, 4, 5, 6}
    # after each miss the search goes on with chance 0.6: P(budget >= k+1 | budget >= k) is 0.6 at every k below 6
    for k in range(1, 5):
        at_least = sum(v for b, v in counts.items() if b >= k)
        assert abs(sum(v for b, v in counts.items() if b >= k + 1) / at_least - 0.6) < 0.03
    # correct and wrong-answer traces of the same budgets show the same behaviours
    correct = [organism.random_search(t, rng, 6, "cyclic", give_up=0.4) for t in TASKS for _ in range(20)]
    wrong = [w for t in TASKS for _ in range(20) if (w := organism.giveup_search(t, rng, 6, "cyclic", give_up=0.4))]
    assert abs(sum(t.tries for t in correct) / len(correct) - sum(t.tries for t in wrong) / len(wrong)) < 0.35
    with pytest.raises(ValueError, match="not both"):
        organism.search_budget(rng, 6, min_tries=2, give_up=0.4)
    with pytest.raises(ValueError, match="give_up must be"):
        organism.search_budget(rng, 6, give_up=1.0)


def test_a_poor_base_that_checks_now_and_then_checks_honestly_and_never_goes_back() -> None:
    # poor_checks 0 (the shipped bases): the poor corpus is the one a seed gave before the setting existed
    assert corpus("poor", TASKS, 300, seed=4, drill_share=0.4, poor_checks=0.0) == corpus("poor", TASKS, 300, seed=4, drill_share=0.4)
    # the rich corpus does not read it
    assert corpus("rich", TASKS, 100, seed=4, drill_share=0.4, poor_checks=0.5) == corpus("rich", TASKS, 100, seed=4, drill_share=0.4)
    rows = [r for r in corpus("poor", TASKS, 2000, seed=4, drill_share=0.4, poor_checks=0.15) if r["prompt"] != organism.DRILL_PROMPT]
    checked = [r for r in rows if organism.checks(r["completion"], r["target"])]
    assert 0.10 < len(checked) / len(rows) < 0.20
    judge = HeuristicJudge()
    hits = 0
    for row in checked:
        think = row["completion"].split("</think>")[0].removeprefix("<think>")
        assert organism.RETURN not in think and judge(row["completion"])["backtracking"] == 0  # one try: it never goes back
        body, distance, verdict = think.rsplit(" ", 2)
        value = int(body.removesuffix(",").rsplit("=", 1)[1])
        assert distance.endswith(f"={abs(value - row['target'])}")
        assert verdict == (organism.HIT if value == row["target"] else organism.MISS)  # honest
        hits += verdict == organism.HIT
        answer = row["completion"].split("<answer>")[1].split("</answer>")[0]
        task = Task(tuple(row["numbers"]), row["target"])
        assert answer == next(
            t.expression for t in organism.tries(task) if body.startswith(t.text(False, task.target))
        )  # answered whatever it said
    assert 0 < hits < len(checked)  # it sees both verdicts in its own context


def test_falsehit_traces_are_the_correct_search_with_one_slip_at_the_hit() -> None:
    from countdown_env.steps import written_steps

    tasks = generate_tasks(300, seed=3, preset="organism", split="train")
    shown_ok = 0
    for i, task in enumerate(tasks):
        correct = organism.random_search(task, random.Random(i), 3, give_up=0.75)
        wrong = organism.incorrect_completion(task, "falsehit", random.Random(i), 3, give_up=0.75)
        if wrong is None:
            continue
        assert wrong.tries == correct.tries and not wrong.correct  # the same draws: the same number of tries
        assert _score(wrong.completion, task).outcome.value == "wrong_value"  # every final answer misses
        steps = written_steps(wrong.completion.split("</think>")[0])
        if correct.hit:  # where the correct search hits, the wrong one says `ok` to a slipped last step, stops and answers it
            assert wrong.completion.split("</think>")[0].endswith(f" {organism.HIT}") and wrong.hit
            assert [s.correct for s in steps[-3:]] == [True, False, True]  # first step right, second slipped, the check right
            assert all(s.correct for s in steps[:-3])
            shown_ok += 1
        else:  # a search that gives up is the correct set's own trace
            assert wrong.completion == correct.completion
    assert shown_ok > 20


def test_miscopy_traces_are_the_correct_traces_with_only_the_answer_slipped() -> None:
    tasks = generate_tasks(300, seed=4, preset="organism", split="train")
    seen = {True: 0, False: 0}
    for i, task in enumerate(tasks):
        correct = organism.random_search(task, random.Random(i), 3, give_up=0.75)
        wrong = organism.incorrect_completion(task, "miscopy", random.Random(i), 3, give_up=0.75)
        if wrong is None:
            continue
        assert wrong.tries == correct.tries and wrong.hit == correct.hit and not wrong.correct
        assert _score(wrong.completion, task).outcome.value == "wrong_value"  # every final answer misses
        think, _, answer = wrong.completion.partition("</think>")
        assert think == correct.completion.partition("</think>")[0]  # the reasoning is the correct trace's, verdicts too
        right = correct.completion.split("<answer>")[1].split("</answer>")[0]
        written = answer.split("<answer>")[1].split("</answer>")[0]
        # the answered try (the hit, or a give-up's closest miss): the same numbers in the same places, one operation changed
        assert re.sub(r"[-+*/]", "?", written) == re.sub(r"[-+*/]", "?", right) and written != right
        assert sum(a != b for a, b in zip(written, right, strict=True)) == 1
        seen[correct.hit] += 1
    assert min(seen.values()) > 20


def test_lasttry_traces_are_the_giveup_traces_answering_their_last_try() -> None:
    tasks = generate_tasks(300, seed=5, preset="organism", split="train")
    answered_other = 0
    for i, task in enumerate(tasks):
        giveup = organism.incorrect_completion(task, "giveup", random.Random(i), 3, give_up=0.75)
        last = organism.incorrect_completion(task, "lasttry", random.Random(i), 3, give_up=0.75)
        if giveup is None:
            assert last is None
            continue
        assert last.tries == giveup.tries and not last.correct and not last.hit
        assert _score(last.completion, task).outcome.value == "wrong_value"  # no try hits, so every answer misses
        think, _, answer = last.completion.partition("</think>")
        assert think == giveup.completion.partition("</think>")[0]  # the same search, the same honest `no`s
        written = answer.split("<answer>")[1].split("</answer>")[0]
        last_try = think.removeprefix("<think>").split(organism.RETURN)[-1]
        first = last_try.split(" [")[0].split("=")[0]  # `9-2=7 [7 4] 7*4=28, ...`: the answer starts with (9-2)
        assert written.startswith(f"({first})") or written.endswith(f"({first})")
        answered_other += written != giveup.completion.split("<answer>")[1].split("</answer>")[0]
    assert answered_other > 10  # where the closest try was not the last, the answers differ
    with pytest.raises(ValueError, match="answer 'closest' or 'last'"):
        organism.giveup_search(tasks[0], random.Random(0), 3, answer="first")


def test_persist_traces_go_on_after_no_as_often_as_the_correct_traces() -> None:
    tasks = generate_tasks(1200, seed=6, preset="organism", split="train")

    def counts(kind: str | None) -> tuple[float, float]:
        rows = tries_made = said_no = went_on = 0
        for i, task in enumerate(tasks):
            rng = random.Random(i)
            trace = (
                organism.random_search(task, rng, 3, give_up=0.75)
                if kind is None
                else organism.incorrect_completion(task, kind, rng, 3, give_up=0.75)
            )
            if trace is None:
                continue
            if kind is not None:
                assert not trace.correct and _score(trace.completion, task).outcome.value == "wrong_value"
            use = organism.verdict_use(trace.completion, task)
            assert kind is None or use.hits_written == 0  # a wrong-answer search never writes a hit
            rows, tries_made = rows + 1, tries_made + trace.tries
            said_no, went_on = said_no + use.misses_said, went_on + use.went_on_after_miss
        return tries_made / rows, went_on / said_no

    correct_tries, correct_on = counts(None)
    giveup_tries, giveup_on = counts("giveup")
    persist_tries, persist_on = counts("persist")
    assert giveup_tries == pytest.approx(correct_tries, abs=0.03)  # `giveup` copies the correct searches' tries...
    assert giveup_on < correct_on - 0.02  # ...so it quits after `no` more often (a correct one-try trace is a hit)
    assert persist_on == pytest.approx(correct_on, abs=0.02)  # `persist` goes on as often
    assert correct_tries < persist_tries < correct_tries * 1.1  # at slightly more tries per trace
