"""classify and frequencies on veRL's rollout dumps (`trainer.rollout_data_dir`: N.jsonl for step N, rows with
`input`, `output`, `gts`, `score`, `step` and the reward's extra keys, e.g. `acc`), JSONL or parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cli import main

TRACE = "Let me try 3*5+7 = 22. Let me verify: 15+7 = 22, correct.</think>\\n<answer>3*5+7</answer>"
WRONG = "Maybe 3+5+7 = 15. That is not 22, let me go back and try again. 3*7 = 21, 21+5 = 26.</think>\\n<answer>3*7+5</answer>"


def dump_rows(step: bool = True) -> list[dict]:
    rows = []
    for output, score, acc in ((TRACE, 1.0, True), (WRONG, 0.1, False)):
        row = {"input": "Using the numbers [3, 5, 7] ...<think>", "output": output, "gts": {"target": 22, "numbers": [3, 5, 7]},
               "score": score, "acc": acc}  # fmt: skip
        rows.append({**row, "step": 7} if step else row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_classify_judges_a_verl_dump_with_text_field_output(tmp_path, capsys):
    dump = write_jsonl(tmp_path / "7.jsonl", dump_rows())
    out = tmp_path / "classified.jsonl"
    assert main(["classify", str(dump), "--output", str(out), "--text-field", "output", "--quiet"]) == 0
    rows = read(out)
    assert [r["text"] for r in rows] == [r["output"] for r in dump_rows()]
    assert all(set(r["behaviors"]) == {"verification", "backtracking", "subgoal_setting", "backward_chaining"} for r in rows)
    assert [(r["step"], r["numbers"], r["target"], r["correct"]) for r in rows] == [(7, [3, 5, 7], 22, True), (7, [3, 5, 7], 22, False)]
    assert rows[0]["behaviors"]["verification"] >= 1 and rows[1]["behaviors"]["backtracking"] >= 1
    # Without the flag: one line saying where the completion is.
    capsys.readouterr()
    assert main(["classify", str(dump), "--output", str(tmp_path / "x.jsonl"), "--quiet"]) == 2
    assert "--text-field output" in capsys.readouterr().err


@pytest.mark.parametrize("write", [write_jsonl, write_parquet])
def test_the_step_comes_from_the_rows_the_file_name_or_the_flag(tmp_path, write):
    from behavior_classifier.classify import input_rows

    named = write(tmp_path / f"12.{'parquet' if write is write_parquet else 'jsonl'}", dump_rows(step=False))
    assert {r["step"] for r in input_rows(named, text_field="output")} == {12}
    assert {r["step"] for r in input_rows(named, text_field="output", step=5)} == {5}
    assert {r["step"] for r in input_rows(write(tmp_path / "3.x", dump_rows()), text_field="output")} == {7}  # the rows' own


def test_frequencies_of_a_classified_parquet_dump(tmp_path, capsys):
    dump = write_parquet(tmp_path / "dump.parquet", dump_rows(step=False))
    classified = tmp_path / "classified.jsonl"
    assert main(["classify", str(dump), "-o", str(classified), "--text-field", "output", "--step", "40", "--quiet"]) == 0
    table = tmp_path / "freq.csv"
    assert main(["frequencies", str(classified), "--output", str(table), "--condition", "verl"]) == 0
    import pandas as pd

    frame = pd.read_csv(table)
    assert frame[["condition", "step", "n"]].values.tolist() == [["verl", 40, 2]] and frame["accuracy"].tolist() == [0.5]
    # Straight from the parquet with classify's output columns under veRL's names: frequencies takes the same flags.
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: v for k, v in r.items() if k != "text"} for r in read(classified)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "judged.parquet")
    assert main(["frequencies", str(tmp_path / "judged.parquet"), "--text-field", "output", "--condition", "verl"]) == 0
    assert "verl" in capsys.readouterr().out


def test_batch_judges_a_verl_dump_too(tmp_path, monkeypatch):
    """`classify --batch --text-field output` reads the rows as the request path does."""
    from behavior_classifier.batch import classify_file_batch
    from behavior_classifier.local_server import OpenAIServer
    from tests.behavior_classifier.scripted import expected
    from tests.behavior_classifier.test_batch import config, handler

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-batch")
    rows = [{"output": f"TRACE-{i}: 3 + 4 = 7, not 9.", "gts": {"numbers": [3, 4], "target": 9}, "score": 0.1} for i in range(3)]
    dump = write_jsonl(tmp_path / "5.jsonl", rows)
    with OpenAIServer(handler) as server:
        summary = classify_file_batch(dump, tmp_path / "out.jsonl", config(server), poll_interval=0.01, progress=False, text_field="output")
    assert summary.labelled == 3
    out = read(tmp_path / "out.jsonl")
    assert [r["behaviors"] for r in out] == [expected(i) for i in range(3)] and {r["step"] for r in out} == {5}
