"""Primed organism bases are cached with the bases, keyed by everything their SFT depends on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from organism.bases import SHIPPED_BASES, cached_primed, install_shipped_bases, primed_key, store_primed
from priming.sft import SFTRunConfig


def fake_model(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def fake_traces(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text(text)
    return folder


def test_the_key_follows_settings_traces_and_weights_not_paths(tmp_path: Path) -> None:
    model = fake_model(tmp_path / "poor", b"weights")
    traces = fake_traces(tmp_path / "traces", '{"prompt": "a", "completion": "b"}\n')
    sft = SFTRunConfig(model=str(model), data=str(traces), output_dir=str(tmp_path / "out"), learning_rate=1e-3)
    key = primed_key(sft, traces, model)
    assert len(key) == 16
    # where it writes, how often it logs or saves: the same weights, the same key
    assert primed_key(replace(sft, output_dir="elsewhere", logging_steps=1, save_steps=7), traces, model) == key
    assert primed_key(replace(sft, learning_rate=2e-3), traces, model) != key
    assert primed_key(replace(sft, seed=sft.seed + 1), traces, model) != key
    other_traces = fake_traces(tmp_path / "traces2", '{"prompt": "a", "completion": "c"}\n')
    assert primed_key(sft, other_traces, model) != key
    assert primed_key(sft, traces, fake_model(tmp_path / "poor2", b"weightz")) != key


def test_store_then_find_whole_and_a_second_store_keeps_the_first(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert cached_primed(cache, "k") is None
    first = store_primed(cache, "k", fake_model(tmp_path / "a", b"one"))
    assert cached_primed(cache, "k") == first and (first / "model.safetensors").read_bytes() == b"one"
    store_primed(cache, "k", fake_model(tmp_path / "b", b"two"))  # a racing run's copy: the first one stays
    assert (cached_primed(cache, "k") / "model.safetensors").read_bytes() == b"one"
    assert not [p for p in (cache / "primed").iterdir() if p.name.startswith(".")], "no temporary folder left behind"


def test_the_shipped_primed_bases_are_installed_with_the_bases(tmp_path: Path) -> None:
    shipped = sorted((SHIPPED_BASES / "primed").glob("*/model"))
    assert shipped, "the demo's primed poor base ships with the package"
    copied = install_shipped_bases(tmp_path / "cache")
    for model in shipped:
        key = model.parent.name
        assert f"primed/{key}" in copied
        found = cached_primed(tmp_path / "cache", key)
        assert found is not None and (found / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    assert not any(c.startswith("primed/") for c in install_shipped_bases(tmp_path / "cache")), "installed once"


def test_the_demo_finds_its_primed_base_in_the_shipped_ones(tmp_path: Path) -> None:
    """The demo's priming (seed 0, its preset, the shipped poor base) has the key of a shipped primed base, so
    `make demo` is RL only. A change to the trace text or the SFT settings fails here, not as a slow demo."""
    from lab.pipeline.config import ExperimentConfig
    from lab.pipeline.stages import make_tasks, stage_traces
    from organism.pretrain import base_dir

    config = ExperimentConfig.load("demo")
    seed = config.seeds[0]
    spec = next(s for s in config.runs() if s.condition)
    tasks = make_tasks(config, seed, tmp_path / "exp")
    run = tmp_path / "run"
    traces = stage_traces(config, run, spec, seed, tasks["sft"])
    install_shipped_bases(tmp_path / "cache")
    poor = base_dir(tmp_path / "cache", config.bases_seed(seed), "poor") / "model"
    key = primed_key(config.sft_config(str(poor), str(traces), str(run / "sft"), seed), traces, poor)
    assert key in {m.parent.name for m in (SHIPPED_BASES / "primed").glob("*/model")}, key
