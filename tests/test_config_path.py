"""runtime.config: the one path from YAML presets, --set and flags to the config dataclasses, and --help."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import pytest

from lab.cli import main
from runtime.config import defaults, field_docs, help_epilog, load_dataclass, parse_set, preset_epilog, resolve_values


@dataclass(frozen=True)
class Inner:
    depth: int = 1
    """How deep."""
    rate: float = 0.5


@dataclass(frozen=True)
class Example:
    name: str
    """Required: no default."""
    steps: int = 10
    """Steps to take."""
    lr: float = 1e-3
    """Learning rate,
    on two lines."""
    on: bool = True
    seeds: tuple[int, ...] = (0,)
    pair: tuple[int, str] = (1, "a")
    limit: int | None = None
    mode: Literal["a", "b"] = "a"
    path: Path = Path(".")
    extra: dict[str, Any] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


@pytest.fixture
def preset_dir(tmp_path):
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "small.yaml").write_text("# a comment\nname: small\nsteps: 3\nlr: 1e-6   # YAML 1.1 reads this as a string\nseeds: [1, 2]\n")
    (folder / "empty.yaml").write_text("# nothing but a comment\n")
    (folder / "typo.yaml").write_text("name: x\nstepz: 3\n")
    return folder


def test_preset_by_name_or_path_then_overrides(preset_dir):
    config = load_dataclass(Example, "small", {"steps": "7", "inner": {"depth": 3}}, preset_dir)
    assert (config.name, config.steps, config.lr, config.seeds) == ("small", 7, 1e-6, (1, 2))
    assert config.inner == Inner(depth=3) and config.on is True and config.extra == {}
    assert load_dataclass(Example, preset_dir / "small.yaml", None, None) == load_dataclass(Example, "small", None, preset_dir)
    assert load_dataclass(Example, "empty", {"name": "n"}, preset_dir) == Example(name="n")
    assert load_dataclass(Example, None, {"name": "n"}) == Example(name="n")


def test_unknown_fields_name_the_file_and_the_known_fields(preset_dir):
    with pytest.raises(ValueError, match=r"unknown thing field\(s\) \['stepz'\] in .*typo\.yaml; known fields: \[.*'steps'"):
        load_dataclass(Example, "typo", None, preset_dir, what="thing")
    with pytest.raises(ValueError, match=r"\['colour'\] in the overrides"):
        load_dataclass(Example, "small", {"colour": 1}, preset_dir)
    with pytest.raises(ValueError, match=r"unknown config preset 'huge'.*\['empty', 'small', 'typo'\]"):
        load_dataclass(Example, "huge", None, preset_dir)
    with pytest.raises(ValueError, match=r"needs \['name'\]"):
        load_dataclass(Example, "empty", None, preset_dir)
    (preset_dir / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_dataclass(Example, "list", None, preset_dir)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({"steps": 4.0}, ("steps", 4)), ({"steps": "12"}, ("steps", 12)), ({"lr": "3e-5"}, ("lr", 3e-5)), ({"lr": 2}, ("lr", 2.0)),
     ({"on": "false"}, ("on", False)), ({"seeds": [3, "4"]}, ("seeds", (3, 4))), ({"seeds": 5}, ("seeds", (5,))),
     ({"pair": [2, 3]}, ("pair", (2, "3"))), ({"limit": None}, ("limit", None)), ({"limit": "8"}, ("limit", 8)),
     ({"mode": "b"}, ("mode", "b")), ({"path": "runs/x"}, ("path", Path("runs/x"))), ({"name": 3}, ("name", "3")),
     ({"inner": Inner(2)}, ("inner", Inner(2))), ({"extra": {"packing": True}}, ("extra", {"packing": True}))],
)  # fmt: skip
def test_values_are_coerced_to_their_field_type(overrides, expected):
    config = load_dataclass(Example, None, {"name": "n", **overrides})
    name, value = expected
    assert getattr(config, name) == value and type(getattr(config, name)) is type(value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"steps": "many"}, "steps must be of type int, got 'many'"), ({"steps": 2.5}, "steps must be of type int"),
     ({"steps": True}, "steps must be of type int"), ({"on": "maybe"}, "on must be of type bool"), ({"lr": None}, "lr must be of type float"),
     ({"mode": "c"}, r"mode must be .*choose one of \['a', 'b'\]"), ({"pair": [1, "a", 2]}, "expected 2 items"),
     ({"extra": [1]}, "extra must be of type"), ({"inner": {"depth": "deep"}}, "inner must be of type Inner.*depth must be of type int"),
     ({"inner": {"width": 1}}, r"unknown Inner field\(s\) \['width'\]")],
)  # fmt: skip
def test_bad_values_say_which_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_dataclass(Example, None, {"name": "n", **overrides})


def test_a_bad_value_in_a_file_names_the_file(preset_dir):
    (preset_dir / "bad.yaml").write_text("name: x\nsteps: lots\n")
    with pytest.raises(ValueError, match=r"steps must be of type int, got 'lots' \(in .*bad\.yaml\)"):
        load_dataclass(Example, "bad", None, preset_dir)


def test_parse_set_reads_yaml_values():
    assert parse_set(["lr=1e-5", "on=false", "seeds=[1, 2]", "extra={packing: true}", "name=a=b", " limit = null", "path="]) == {
        "lr": "1e-5", "on": False, "seeds": [1, 2], "extra": {"packing": True}, "name": "a=b", "limit": None, "path": None,
    }  # fmt: skip
    assert parse_set(None) == {} and parse_set([]) == {}
    for bad in ("lr", "=3"):
        with pytest.raises(ValueError, match="key=value"):
            parse_set([bad])


def test_field_docs_and_epilog(preset_dir):
    assert field_docs(Example) == {"name": "Required: no default.", "steps": "Steps to take.", "lr": "Learning rate, on two lines."}
    assert defaults(Example, "small", preset_dir)["steps"] == 3 and "name" not in defaults(Example)
    text = help_epilog(Example, defaults(Example, "small", preset_dir), title="fields")
    assert text.startswith("fields:\n") and "  steps = 3: Steps to take." in text and "  seeds = (1, 2)" in text
    assert "  name = 'small': Required" in text and "  name = (required)" in help_epilog(Example, defaults(Example))
    assert "steps = 10" in help_epilog(Example, Example(name="n"))
    assert "cannot be shown" in preset_epilog(Example, "huge", preset_dir)
    assert resolve_values(Example, "small", {"steps": 1}, preset_dir) == {"name": "small", "steps": 1, "lr": 1e-6, "seeds": (1, 2)}


# ---- the configs of the lab -----------------------------------------------------------


def test_every_config_goes_through_the_helper():
    from lab.pipeline.config import ExperimentConfig, load_experiment
    from lab.pipeline.presets import HERE as PRESET_DIR
    from priming.sft import PRESET_DIR as SFT_DIR
    from priming.sft import PRESETS, SFTRunConfig, load_sft_config
    from rl.config import load_config
    from rl.evaluate import EvalConfig

    assert load_config("paper-3b", {"actor_lr": "2e-6"}).actor_lr == 2e-6
    experiment = load_experiment("quick", parse_set(["seeds=[1, 2]", "ppo={total_steps: 5}", "trace_max_chars=null"]))
    assert experiment.seeds == (1, 2) and experiment.ppo == {"total_steps": 5} and experiment.trace_max_chars is None
    assert ExperimentConfig.load(str(PRESET_DIR / "quick.yaml")) == ExperimentConfig.load("quick")
    sft = load_sft_config("sft-tiny-cpu", {"model": "m", "data": "d", "output_dir": "o", "max_steps": "5"})
    assert (sft.max_steps, sft.learning_rate, sft.preset) == (5, 2e-3, "sft-tiny-cpu")
    assert load_sft_config("tiny-cpu", {"model": "m", "data": "d", "output_dir": "o"}) == load_sft_config("sft-tiny-cpu", {"model": "m", "data": "d", "output_dir": "o"})
    from_file = load_sft_config(SFT_DIR / "sft-tiny-cpu.yaml", {"model": "m", "data": "d", "output_dir": "o"})
    assert from_file.learning_rate == 2e-3 and from_file.preset is None
    with pytest.raises(ValueError, match="unknown SFT field"):
        load_sft_config("sft-tiny-cpu", {"model": "m", "data": "d", "output_dir": "o", "lr": 1})
    assert load_dataclass(EvalConfig, None, {"k": "4"}, what="eval") == EvalConfig(k=4)
    # One home per kind of preset: SFT presets are the YAML files; paper-3b spells out the dataclass defaults
    # but for the study's own settings (scripts/sft.sh: betas, a 64-sequence batch, 2,048 tokens; its task rules).
    assert sorted(PRESETS) == sorted(p.stem for p in SFT_DIR.glob("*.yaml")) == ["sft-paper-3b", "sft-tiny-cpu"]
    paper = SFTRunConfig(model="m", data="d", output_dir="o")
    studys = {"adam_beta2", "gradient_accumulation_steps", "max_length", "task_preset"}
    assert all(getattr(paper, k) == v for k, v in PRESETS["sft-paper-3b"].items() if k not in studys)
    assert {f.name for f in fields(SFTRunConfig)} >= set(PRESETS["sft-tiny-cpu"])


def _help(capsys, argv: list[str]) -> str:
    assert main(argv) == 0  # main returns argparse's exit code for --help instead of raising SystemExit
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "shown", "hidden"),
    [(["ppo", "--help"], ["preset 'ppo-tiny-cpu'", "max_new_tokens = 96:"], ["max_new_tokens = 64:"]),
     (["ppo", "--config", "paper-3b", "--help"], ["preset 'paper-3b'", "max_new_tokens = 1024:", "actor_lr = 1e-06:"], ["= 96:"]),
     (["ppo", "--help", "--config", "paper-3b"], ["max_new_tokens = 1024:"], []),
     (["grpo", "--config=paper-3b", "-h"], ["max_new_tokens = 1024:"], []),
     (["sft", "--help"], ["preset 'sft-paper-3b'", "learning_rate = 1e-05:", "model = (required)"], []),
     (["sft", "--preset", "tiny-cpu", "--help"], ["preset 'tiny-cpu'", "learning_rate = 0.002:", "batch_size = 16:"], ["learning_rate = 1e-05:"]),
     (["experiment", "--help"], ["preset 'tiny-cpu'", "seeds = (0, 1):", "sft_preset = 'sft-tiny-cpu'"], []),
     (["experiment", "--preset", "paper-3b", "--help"], ["model = 'meta-llama/Llama-3.2-3B'", "judge = 'openai'"], ["judge = 'heuristic'"]),
     (["eval", "--help"], ["eval fields", "k = 8:", "num_ood_tasks = 200:"], [])],
)  # fmt: skip
def test_help_lists_the_chosen_presets_values(capsys, argv, shown, hidden):
    text = _help(capsys, argv)
    for part in shown:
        assert part in text
    for part in hidden:
        assert part not in text


def test_help_of_a_file_and_of_an_unknown_preset(capsys, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("total_steps: 7\n")
    assert "total_steps = 7:" in _help(capsys, ["ppo", "--config", str(config), "--help"])
    assert "cannot be shown: unknown ppo preset 'nope'" in _help(capsys, ["ppo", "--config", "nope", "--help"])
