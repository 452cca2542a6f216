import pytest

from rl.models import ARCHS, count_parameters, init_model, load_model, load_tokenizer

TEXT = "A conversation. Using [3, 5], make 8: (1 + 2) / 3\nNumbers: 3 5\nTarget: 8\n<think>3*5=15, no.</think>\n<answer>3 + 5</answer>"


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_saves_and_loads_by_path(tmp_path, arch):
    path = init_model(tmp_path / arch, arch, "tiny")
    model, tokenizer = load_model(path), load_tokenizer(path)
    assert count_parameters(model) < 1_000_000
    ids = tokenizer(TEXT).input_ids
    assert tokenizer.decode(ids) == TEXT  # spaces and newlines survive the round trip
    assert tokenizer.unk_token_id not in ids
    assert len(ids) < len(TEXT)  # the tags are single tokens
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
