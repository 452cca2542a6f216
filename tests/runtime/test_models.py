import pytest

from runtime.models import ARCHS, count_parameters, init_model, load_model, load_tokenizer

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


def test_build_model_leaves_the_global_rng_alone():
    import torch

    from runtime.models import build_model

    torch.manual_seed(5)
    before = torch.get_rng_state()
    a, _ = build_model("llama", "tiny", seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    b, _ = build_model("llama", "tiny", seed=1)
    c, _ = build_model("llama", "tiny", seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))
