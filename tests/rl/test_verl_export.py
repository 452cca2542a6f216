"""The veRL reward module: self-contained (standard library only), veRL's calling convention, the lab's verdicts."""

from __future__ import annotations

import ast
import glob
import json
import subprocess
import sys
from pathlib import Path

import pytest

from countdown_env import Task, preset_rules, score_response
from lab.cli import main
from rl.verl_export import RAW_CHAT_TEMPLATE, compute_score, export_verl, reward_module_source

TASK = Task((3, 5, 2), 16)
#: Completions as veRL passes them (the response alone), with what the lab's scorer says of them.
COMPLETIONS = [
    "<think>3 + 5 = 8, 8 * 2 = 16</think>\n<answer>(3 + 5) * 2</answer>",
    "<answer>3 + 5 + 2</answer>",
    "<answer>(3 + 5) * 2</answer> and more text",
    "<answer>3 * 5</answer>",
    "<answer>2 / (5 - 5)</answer>",
    "<answer>1</answer><answer>(3 + 5) * 2</answer>",
    "<answer>3 ** 5</answer>",
    "<answer>(3 + 5) * 2 = 16</answer>",
    "no answer at all",
    "",
    # The prompt's example answer followed by a real one: scored as passed, as the lab scores it.
    "for example <answer> (1 + 2) / 3 </answer>.\nAssistant: <answer>(3 + 5) * 2</answer>",
    "User: ... Assistant: Let me solve this step by step.\n<think>ok</think><answer>(5 + 3) * 2</answer>",
    # Where the study's scorer differs (docs/rules.md): only the last line, Python's arithmetic, '=' a number.
    "<answer>(3 + 5) * 2</answer>\nUser: thanks",
    "ok</think>\n<answer>(3 + 5) * 2 = 16</answer>",
    "ok</think>\n<answer>(3 - 5) * 2</answer> <answer>(3 + 5) * 2</answer>",
    "ok</think>\n<answer>+(3 + 5) * 2</answer>",
    "ok</think>\n<answer>(-3 - 5) * -2</answer>",
    "ok</think>\n<answer>(3 + 5) * 2.</answer>",
    "ok</think>\n<answer>9**9**9 + 3 + 5 + 2</answer>",
]


def _pythons() -> list[str]:
    """This interpreter, and a Python 3.10 when one is installed (the module's oldest supported)."""
    found = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.10*/bin/python3.10")))
    return [sys.executable, *found[:1]]


def _run_bare(python: str, directory: Path, code: str) -> str:
    """Run `code` in `python -S` (no site-packages) with an empty environment, from `directory`."""
    done = subprocess.run([python, "-S", "-c", code], cwd=directory, env={}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("preset", ["tinyzero", "classic", "study"])
def test_reward_module_runs_on_bare_python_and_agrees_with_the_lab(preset: str, tmp_path: Path) -> None:
    out = tmp_path / f'out \'q"""{preset}'  # quotes (and triple quotes) in the directory's name
    paths = export_verl(out, num_train=2, num_test=2, seed=0, preset=preset)
    rules = preset_rules(preset)
    truth = {"numbers": list(TASK.numbers), "target": TASK.target}
    expected = [{"score": s.reward, "acc": s.correct} for s in (score_response(c, TASK, rules) for c in COMPLETIONS)]
    assert expected == [compute_score("countdown", c, truth, rules=rules) for c in COMPLETIONS]
    code = (
        "import json, sys\n"
        "import countdown_reward as m\n"
        f"cases = json.loads({json.dumps(json.dumps(COMPLETIONS))})\n"
        f"truth = {truth!r}\n"
        # veRL's keywords: all by name, extra_info, and the reward loop's extra ones.
        "out = [m.compute_score(data_source='countdown', solution_str=c, ground_truth=truth, extra_info={'split': 'test'},"
        " reward_router_address=None, reward_kwargs={}) for c in cases]\n"
        "leaked = sorted({k.split('.')[0] for k in sys.modules} & {'countdown_env', 'rl', 'gymnasium', 'numpy', 'torch'})\n"
        "print(json.dumps({'out': out, 'leaked': leaked}))\n"
    )
    for python in _pythons():
        result = json.loads(_run_bare(python, paths["reward"].parent, code))
        assert result == {"out": expected, "leaked": []}, python
    if preset == "study":  # the study's verdicts, not ours: the last line only, Python's arithmetic
        assert [row["score"] for row in expected[-7:]] == [0.0, 0.1, 1.0, 1.0, 1.0, 1.0, 0.1]


def test_reward_module_is_python_3_10_and_states_its_rules(tmp_path: Path) -> None:
    source = reward_module_source(preset_rules("classic"))
    ast.parse(source, feature_version=(3, 10))
    assert "RULES = {'use_all_numbers': False" in source and "import countdown_env" not in source
    assert "from countdown_env" not in source and "import rl" not in source


BAD_TRUTHS = ["3 5 8", [3, 5, 8], None, 8, {"numbers": [3, 5]}, {"numbers": "35", "target": 8}, {"numbers": [2.5], "target": 8}]


def test_compute_score_accepts_extra_keywords_and_refuses_bad_ground_truth() -> None:
    truth = {"nums": [3, 5], "target": 8}
    assert compute_score("countdown", "<answer>3 + 5</answer>", truth, None, reward_router_address="x", reward_kwargs={}) == {
        "score": 1.0,
        "acc": True,
    }
    for bad in BAD_TRUTHS:  # a string, a list or None: the documented ValueError, never AttributeError
        with pytest.raises(ValueError, match="integer 'numbers' and 'target'"):
            compute_score("countdown", "<answer>3 + 5</answer>", bad)


def test_exported_module_refuses_bad_ground_truth_with_value_error(tmp_path: Path) -> None:
    path = export_verl(tmp_path, num_train=1, num_test=1, seed=0, preset="tiny")["reward"]
    code = (
        "import countdown_reward as m\n"
        f"for bad in {BAD_TRUTHS!r}:\n"
        "    try:\n"
        "        m.compute_score('countdown', '<answer>3 + 5</answer>', bad)\n"
        "    except ValueError as err:\n"
        "        print(type(err).__name__, 'numbers' in str(err))\n"
    )
    assert _run_bare(sys.executable, path.parent, code).split("\n")[:-1] == ["ValueError True"] * len(BAD_TRUTHS)


def test_study_module_records_its_scorer_and_reads_the_last_line(tmp_path: Path) -> None:
    source = reward_module_source(preset_rules("study"))
    ast.parse(source, feature_version=(3, 10))
    assert "'scorer': 'study'" in source and "'max_magnitude': 10**1000" in source
    paths = export_verl(tmp_path, num_train=2, num_test=1, seed=0, preset="study")
    import pyarrow.parquet as pq

    prompt = pq.read_table(paths["train"]).to_pylist()[0]["prompt"][0]["content"]
    assert prompt.endswith("Let me solve this step by step.\n<think>") and "each number can only be used once" in prompt
    truth = {"numbers": [3, 5, 7], "target": 22}
    code = (
        "import countdown_reward as m\n"
        f"truth = {truth!r}\n"
        "print(m.compute_score('countdown', '<answer>3*5+7</answer>\\nUser: thanks', truth)['score'],"
        " m.compute_score('countdown', 'ok</think>\\n<answer>3*5+7 = 22</answer>', truth)['score'],"
        " m.compute_score('countdown', 'ok</think>\\n<answer>-3*5+37</answer>', {'numbers': [3, 5, 37], 'target': 22})['acc'])\n"
    )
    assert _run_bare(sys.executable, paths["reward"].parent, code).split() == ["0.0", "0.1", "True"]


def test_export_verl_cli_shows_progress_only_for_large_exports_and_docs_name_the_template(tmp_path: Path, capsys) -> None:
    assert main(["export-verl", "--output-dir", str(tmp_path), "-n", "3", "--num-test", "2", "--preset", "tiny"]) == 0
    assert "tasks:" not in capsys.readouterr().err  # small: no bar
    docs = (Path(__file__).resolve().parents[2] / "docs" / "verl.md").read_text()
    assert RAW_CHAT_TEMPLATE in docs and "algorithm.use_kl_in_reward=True" in docs


def test_reward_module_loads_the_way_verl_loads_it(tmp_path: Path) -> None:
    """veRL's `load_module`: `spec_from_file_location` + `exec_module`, never registered in `sys.modules`."""
    import importlib.util

    path = export_verl(tmp_path, num_train=1, num_test=1, seed=0, preset="tiny")["reward"]
    spec = importlib.util.spec_from_file_location(f"custom_module_{hash(str(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert spec.name not in sys.modules
    assert module.compute_score("countdown", "<answer>3 + 5</answer>", {"numbers": [3, 5], "target": 8}) == {"score": 1.0, "acc": True}
