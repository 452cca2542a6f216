"""`runtime.models.quiet_model_io`: a model's load or save prints no per-call bar or known-harmless
warning, and nothing stays silenced after the call (the house style's rule 12, issue 18 item 9)."""

from __future__ import annotations

import logging

import pytest

from runtime.models import build_model, init_model, load_model, quiet_model_io


def test_init_and_load_print_no_per_call_bars(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    # The control: transformers itself draws both bars, so the checks below can fail.
    model, _ = build_model("qwen2", "tiny", seed=0)
    model.save_pretrained(tmp_path / "raw")
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "raw")
    raw = capsys.readouterr().err
    assert "Writing model shards" in raw and "Loading weights" in raw

    load_model(init_model(tmp_path / "quiet", "qwen2", "tiny"))
    err = capsys.readouterr().err
    assert "Writing model shards" not in err and "Loading weights" not in err


def test_the_harmless_line_is_dropped_only_inside(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("accelerate.utils.other")
    with caplog.at_level(logging.WARNING):
        with quiet_model_io():
            logger.warning("Removed shared tensor {'lm_head.weight'} while saving. This should be OK")
            logger.warning("Some other warning")  # anything else still shows
        logger.warning("Removed shared tensor {'x'} while saving")  # outside: not ours to hide
    assert [r.getMessage()[:22] for r in caplog.records] == ["Some other warning", "Removed shared tensor "]


def test_the_bar_hook_is_restored_on_exit() -> None:
    from transformers.utils import logging as hf_logging

    def mine(factory, args, kwargs):  # a hook someone else set before
        return factory(*args, **kwargs)

    previous = hf_logging.set_tqdm_hook(mine)
    try:
        with pytest.raises(RuntimeError), quiet_model_io():
            raise RuntimeError("a failed load")
        assert hf_logging.set_tqdm_hook(mine) is mine  # put back, even after an error
    finally:
        hf_logging.set_tqdm_hook(previous)
