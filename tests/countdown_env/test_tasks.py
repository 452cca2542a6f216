"""Generator: solvable by construction, regenerable from (seed, index), disjoint splits, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from countdown_env import (
    PRESETS,
    Rules,
    Task,
    TaskConfig,
    count_solutions,
    generate_tasks,
    iter_tasks,
    read_tasks,
    solve,
    split_of,
    task_at,
    to_dataset,
    write_tasks,
)
from countdown_env import tasks as tasks_module
from countdown_env.tasks import with_difficulty
from tests.countdown_env.test_expression import exact_eval

SIZES = {
    "tinyzero": 150,
    "priming": 150,
    "tiny": 150,
    "classic": 25,
    "organism": 150,
    "organism-unseen": 150,
    "organism-subset": 150,
    "study": 150,
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_task_is_solvable_under_the_preset_rules_and_in_range(preset: str) -> None:
    config = TaskConfig.preset(preset)
    tasks = generate_tasks(SIZES[preset], seed=11, preset=preset)
    assert len(tasks) == SIZES[preset]
    lo, hi = config.target_range
    for task in tasks:
        assert config.min_numbers <= len(task.numbers) <= config.max_numbers
        assert lo <= task.target <= hi
        if config.large_numbers:
            small = [n for n in task.numbers if n not in config.large_numbers]
            assert all(config.number_range[0] <= n <= config.number_range[1] for n in small)
            assert len(small) >= 2 and all(small.count(n) <= 2 for n in small)
        else:
            assert all(config.number_range[0] <= n <= config.number_range[1] for n in task.numbers)
        assert solve(task.numbers, task.target, config.rules) is not None
        # The reference solution is exact and correct under the preset's rules.
        assert task.solution is not None and exact_eval(task.solution) == task.target
        from countdown_env import score_response

        assert score_response(f"<answer>{task.solution}</answer>", task, config.rules).correct


def test_trivial_tasks_are_filtered_by_default() -> None:
    tasks = generate_tasks(400, seed=5, preset="tiny")
    assert not any(task.target == sum(task.numbers) for task in tasks)
    unfiltered = generate_tasks(400, seed=5, preset="tiny", filter_trivial=False)
    assert any(task.target == sum(task.numbers) for task in unfiltered)


def test_same_seed_same_tasks_and_different_seeds_differ() -> None:
    a = generate_tasks(100, seed=3)
    assert a == generate_tasks(100, seed=3)
    b = generate_tasks(100, seed=4)
    assert [t.key for t in a] != [t.key for t in b]
    assert len({t.key for t in a} & {t.key for t in b}) < 10


@pytest.mark.parametrize("preset", ["tinyzero", "classic"])
def test_task_at_regenerates_any_task(preset: str) -> None:
    config = TaskConfig.preset(preset)
    tasks = generate_tasks(40, seed=9, preset=preset, split="train")
    for task in tasks[::5]:
        assert task.seed == 9 and task.index is not None
        assert task_at(9, task.index, config) == task
    # Out of order, and indices no list ever produced.
    assert task_at(9, 10_000, config) == task_at(9, 10_000, config)
    assert task_at(9, 10_000, config) != task_at(10, 10_000, config)


def test_train_and_test_splits_are_disjoint_and_duplicate_free() -> None:
    train = generate_tasks(600, seed=1, preset="tiny", split="train", test_fraction=0.2)
    test = generate_tasks(150, seed=1, preset="tiny", split="test", test_fraction=0.2)
    train_keys, test_keys = [t.key for t in train], [t.key for t in test]
    assert len(set(train_keys)) == len(train_keys) and len(set(test_keys)) == len(test_keys)
    assert not set(train_keys) & set(test_keys)
    assert all(split_of(k, 0.2) == "train" for k in train_keys) and all(split_of(k, 0.2) == "test" for k in test_keys)
    # The split depends on content only: another seed puts the same key in the same split.
    other = generate_tasks(300, seed=2, preset="tiny", split="test", test_fraction=0.2)
    assert not {t.key for t in other} & set(train_keys)
    everything = generate_tasks(200, seed=1, preset="tiny")
    share = sum(split_of(t.key, 0.2) == "test" for t in everything) / len(everything)
    assert 0.1 < share < 0.3


def test_difficulty_metadata() -> None:
    rules = Rules()
    tasks = generate_tasks(30, seed=2, difficulty=True)
    assert all(t.solution_count is not None and t.plus_minus_only is not None for t in tasks)
    plus_minus = Rules(operators=("+", "-"))
    for task in tasks:
        assert task.solution_count == count_solutions(task.numbers, task.target, rules)
        assert 1 <= task.solution_count <= 100
        assert task.plus_minus_only is (solve(task.numbers, task.target, plus_minus) is not None)
        assert task.min_operations == len(task.numbers) - 1
    assert any(t.plus_minus_only for t in tasks) and not all(t.plus_minus_only for t in tasks)
    hand = with_difficulty(Task((1, 2, 3), 6))
    assert hand.plus_minus_only is True and hand.min_operations == 2 and hand.solution_count == 3  # 1+2+3, 1*2*3, 2*3/1
    hard = with_difficulty(Task((2, 3, 7), 42))
    assert hard.plus_minus_only is False and hard.solution_count == 1


def test_min_operations_under_tv_rules() -> None:
    tv = TaskConfig.preset("classic").rules
    assert with_difficulty(Task((100, 75, 50, 25, 6, 3), 175), tv).min_operations == 1
    assert with_difficulty(Task((100, 75, 50, 25, 6, 3), 100), tv).min_operations == 0
    for task in generate_tasks(5, seed=0, preset="classic", difficulty=True):
        assert 1 <= task.min_operations <= 5  # type: ignore[operator]
        assert task.solution_count and task.solution_count >= 1


def test_jsonl_round_trip(tmp_path: Path) -> None:
    tasks = generate_tasks(20, seed=0, difficulty=True)
    path = write_tasks(tasks, tmp_path / "sub" / "tasks.jsonl")
    assert read_tasks(path) == tasks
    first = json.loads(path.read_text().splitlines()[0])
    assert isinstance(first["numbers"], list) and isinstance(first["target"], int)
    # Rows with only numbers/target (and unknown extra fields) are accepted.
    path.write_text('{"numbers": [1, 2, 3], "target": 6, "source": "hand"}\n\n')
    assert read_tasks(path) == [Task((1, 2, 3), 6)]


def test_parquet_nums_target_round_trip(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"nums": [[44, 19, 35], [1, 2, 3, 4]], "target": [98, 10], "data_source": ["countdown", "countdown"]}), path)
    assert read_tasks(path) == [Task((44, 19, 35), 98), Task((1, 2, 3, 4), 10)]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"nums": [[1, 2]], "answer": [3]}), bad)
    with pytest.raises(ValueError, match="row 0"):
        read_tasks(bad)


def test_to_dataset() -> None:
    tasks = generate_tasks(10, seed=0, difficulty=True)
    ds = to_dataset(tasks)
    assert len(ds) == 10
    assert {"numbers", "target", "solution", "solution_count"} <= set(ds.column_names)
    assert [Task.from_dict(row) for row in ds] == tasks


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_numbers": 0}, "min_numbers"),
        ({"min_numbers": 5, "max_numbers": 4}, "min_numbers"),
        ({"number_range": (10, 1)}, "number_range"),
        ({"target_range": (10, 1)}, "target_range"),
        ({"number_range": (-5, 5)}, "non-negative"),
    ],
)
def test_bad_configs_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TaskConfig(**kwargs)


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="unknown task preset"):
        generate_tasks(1, seed=0, preset="nope")
    with pytest.raises(ValueError, match="unknown task option"):
        generate_tasks(1, seed=0, bogus=1)
    with pytest.raises(ValueError, match="split"):
        generate_tasks(1, seed=0, split="validation")
    with pytest.raises(ValueError, match="test_fraction"):
        generate_tasks(1, seed=0, split="test", test_fraction=1.5)
    with pytest.raises(ValueError, match="n must be"):
        generate_tasks(-1, seed=0)
    assert generate_tasks(0, seed=0) == []
    with pytest.raises(ValueError, match="no solvable task"):
        task_at(0, 0, TaskConfig(number_range=(1, 1), target_range=(500, 600)))


def test_exhausted_config_raises_instead_of_looping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks_module, "MAX_MISSES", 300)
    config = TaskConfig(min_numbers=2, max_numbers=2, number_range=(1, 2), target_range=(0, 10))
    # 2 numbers in 1..2 reach only a handful of targets.
    with pytest.raises(ValueError, match="distinct"):
        generate_tasks(50, seed=0, config=config)
    with pytest.raises(ValueError, match="distinct"):
        list(iter_tasks(0, config))


@pytest.mark.parametrize(
    "row",
    [
        {"numbers": [1, 2]},
        {"target": 3},
        {"numbers": "1 2", "target": 3},
        {"numbers": [2.5, 2], "target": 5},
        {"numbers": [True, 2], "target": 3},
        {"numbers": [1, 2], "target": "3"},
        {"numbers": [], "target": 3},
        {"numbers": [-1, 2], "target": 1},
        {"numbers": 7, "target": 7},
    ],
)
def test_bad_rows_raise_value_error(row: dict) -> None:
    with pytest.raises(ValueError):
        Task.from_dict(row)


def test_int_like_values_are_accepted_exactly() -> None:
    import numpy as np

    task = Task.from_dict({"nums": np.array([3, 4]), "target": np.int64(7)})
    assert task == Task((3, 4), 7) and type(task.target) is int
    assert Task((3.0, 4), 7.0) == Task((3, 4), 7)  # type: ignore[arg-type]


def test_bad_jsonl_line_reports_its_number(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"numbers": [1, 2], "target": 3}\n{"numbers": [1, 2]\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2"):
        read_tasks(path)
    with pytest.raises(FileNotFoundError):
        read_tasks(tmp_path / "missing.jsonl")


def test_a_torn_last_line_of_a_tasks_file_is_an_error_not_dropped(tmp_path: Path) -> None:
    """The JSONL reader skips a last line without a newline that is not JSON (a log row still being written);
    a tasks file is the user's finished input, so read_tasks refuses it, naming file:line."""
    path = tmp_path / "t.jsonl"
    path.write_text('{"numbers": [1, 2], "target": 3}\n\n{"numbers": [3, 5], "tar')
    with pytest.raises(ValueError, match=r"t.jsonl:3: not JSON, and the file ends without a newline"):
        read_tasks(path)
    # A complete last line without a newline is a task like any other; blank lines at the end are fine.
    path.write_text('{"numbers": [1, 2], "target": 3}\n{"numbers": [3, 5], "target": 8}')
    assert read_tasks(path) == [Task((1, 2), 3), Task((3, 5), 8)]
    path.write_text('{"numbers": [1, 2], "target": 3}\n\n  ')
    assert read_tasks(path) == [Task((1, 2), 3)]
