"""`sft --data` beyond prime's output: parquet and JSONL with prompt/completion, query/completion (the study's
released data), chat messages, or columns named by --prompt-field/--completion-field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from priming.sft_data import load_sft_data

ROWS = [
    {"query": "Using the numbers [3, 5, 7], create an equation that equals 22.", "completion": " 3*5+7</think>\n<answer>3*5+7</answer>"},
    {"query": "Using the numbers [2, 4], create an equation that equals 8.", "completion": " 2*4</think>\n<answer>2*4</answer>"},
]


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def pairs(dataset) -> list[tuple[str, str]]:
    return list(zip(dataset["prompt"], dataset["completion"], strict=True))


EXPECTED = [(r["query"], r["completion"]) for r in ROWS]


def test_the_studys_parquet_with_query_and_completion(tmp_path):
    data = load_sft_data(write_parquet(tmp_path / "study.parquet", ROWS))
    assert list(data) == ["train"] and pairs(data["train"]) == EXPECTED


def test_a_folder_with_train_and_test_parquet(tmp_path):
    write_parquet(tmp_path / "train.parquet", ROWS)
    write_parquet(tmp_path / "test.parquet", ROWS[:1])
    data = load_sft_data(tmp_path)
    assert pairs(data["train"]) == EXPECTED and pairs(data["test"]) == EXPECTED[:1]


@pytest.mark.parametrize("write", [write_parquet, write_jsonl])
def test_prompt_completion_and_mapped_fields(tmp_path, write):
    plain = [{"prompt": q, "completion": c} for q, c in EXPECTED]
    assert pairs(load_sft_data(write(tmp_path / f"plain{write.__name__}", plain))["train"]) == EXPECTED
    other = [{"question": q, "answer": c, "score": 1.0} for q, c in EXPECTED]
    mapped = load_sft_data(write(tmp_path / f"other{write.__name__}", other), prompt_field="question", completion_field="answer")
    assert pairs(mapped["train"]) == EXPECTED and set(mapped["train"].column_names) == {"prompt", "completion"}
    with pytest.raises(ValueError, match="no field 'questions'"):
        load_sft_data(tmp_path / f"other{write.__name__}", prompt_field="questions", completion_field="answer")


class ChatTokenizer:
    """What `_from_messages` reads of a tokenizer: a chat template that marks each turn."""

    chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_chat_messages_through_the_tokenizers_template(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}, {"role": "assistant", "content": c}]}
            for q, c in EXPECTED]  # fmt: skip
    path = write_parquet(tmp_path / "chat.parquet", rows)
    data = load_sft_data(path, tokenizer=ChatTokenizer())
    assert pairs(data["train"]) == [(f"<system>Be brief.<user>{q}<assistant>", c) for q, c in EXPECTED]
    with pytest.raises(ValueError, match="chat template"):
        load_sft_data(path)
    with pytest.raises(ValueError, match="must end with the assistant's turn"):
        load_sft_data(write_jsonl(tmp_path / "open.jsonl", [{"messages": rows[0]["messages"][:2]}]), tokenizer=ChatTokenizer())


def test_a_file_that_is_not_parquet_is_one_clear_error(tmp_path):
    bad = tmp_path / "study.parquet"
    bad.write_bytes(b"\x89PNG not parquet")
    with pytest.raises(ValueError, match="not a parquet file"):
        load_sft_data(bad)


@pytest.mark.slow  # trains a tiny model for 2 steps
def test_sft_cli_trains_on_a_query_completion_parquet(tmp_path, capsys):
    from lab.cli import main
    from runtime.models import init_model

    tiny_model = init_model(tmp_path / "tiny", "llama", "tiny", seed=0)

    data = write_parquet(tmp_path / "study.parquet", ROWS * 4)
    args = ["sft", "--model", str(tiny_model), "--data", str(data), "--output-dir", str(tmp_path / "run"), "--config", "sft-tiny-cpu"]
    assert main([*args, "--quiet", "--max-steps", "2", "--save-steps", "2", "--eval-samples", "0"]) == 0
    assert "trained 2 steps on 8 rows" in capsys.readouterr().out


def test_paper_3b_sft_is_the_studys_recipe():
    """scripts/sft.sh over veRL's fsdp_sft_trainer: 64 sequences a step, 2,048 tokens, AdamW (0.9, 0.95), decay 0.01."""
    from priming.sft import SFTRunConfig

    trl = SFTRunConfig.from_preset("paper-3b", model="m", data="d", output_dir="o").to_trl()
    assert (trl.adam_beta1, trl.adam_beta2, trl.weight_decay, trl.learning_rate) == (0.9, 0.95, 0.01, 1e-5)
    assert trl.per_device_train_batch_size * trl.gradient_accumulation_steps == 64 and trl.max_length == 2048
    assert trl.num_train_epochs == 5 and trl.lr_scheduler_type.value == "cosine" and trl.max_grad_norm == 1.0
    with pytest.raises(ValueError, match="adam_beta2"):
        SFTRunConfig(model="m", data="d", output_dir="o", adam_beta2=1.0)
