import subprocess
import sys

from countdown_env import Task, generate_tasks, score_response, solve


def test_import_does_not_pull_torch():
    code = (
        "import sys, countdown_env; assert 'torch' not in sys.modules and 'transformers' not in sys.modules and 'openai' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generated_tasks_are_solvable_and_scored_correct():
    for task in generate_tasks(50, seed=3):
        expression = solve(task.numbers, task.target)
        assert expression is not None
        assert score_response(f"<think></think>\n<answer>{expression}</answer>", task).correct


def test_exploit_rejected():
    assert not score_response("<answer>2**3</answer>", Task((2, 3), 8)).correct
