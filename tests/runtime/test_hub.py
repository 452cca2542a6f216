"""Hub dataset ids as inputs: parsing, local paths first, Countdown-Tasks-3to4's columns, offline errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from countdown_env.errors import UsageError
from runtime.hub import hub_ref, load_tasks


def test_hub_ref_parses_ids_and_splits_and_leaves_local_paths_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub_ref("Jiayi-Pan/Countdown-Tasks-3to4") == ("Jiayi-Pan/Countdown-Tasks-3to4", "train")
    assert hub_ref("Jiayi-Pan/Countdown-Tasks-3to4:test") == ("Jiayi-Pan/Countdown-Tasks-3to4", "test")
    assert hub_ref("data/tasks.jsonl") is None and hub_ref("./a/b") is None and hub_ref("tasks") is None
    local = tmp_path / "org" / "name"
    local.parent.mkdir()
    local.write_text(json.dumps({"numbers": [3, 5], "target": 8}) + "\n")
    monkeypatch.chdir(tmp_path)
    assert hub_ref("org/name") is None  # a local path that exists wins
    assert [t.target for t in load_tasks("org/name")] == [8]


def test_read_tasks_from_a_hub_dataset_with_nums_and_target(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = {}

    def load_dataset(repo: str, split: str) -> datasets.Dataset:
        seen.update(repo=repo, split=split)
        return datasets.Dataset.from_dict({"nums": [[3, 5, 2], [1, 2, 3]], "target": [16, 6]})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    tasks = load_tasks("Jiayi-Pan/Countdown-Tasks-3to4:test")
    assert seen == {"repo": "Jiayi-Pan/Countdown-Tasks-3to4", "split": "test"}
    assert [(t.numbers, t.target) for t in tasks] == [((3, 5, 2), 16), ((1, 2, 3), 6)]


def test_hub_id_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="hub is offline") as err:
        load_tasks("Jiayi-Pan/Countdown-Tasks-3to4")
    assert "\n" not in str(err.value)
