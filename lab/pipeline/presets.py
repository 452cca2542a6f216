"""Where the run presets of each kind live, and loading one into its config dataclass.

Presets are YAML files named for what they are: experiment presets (`tiny-cpu`, `paper-3b`, `quick`
here; `organism`, `demo` in `organism/presets`), RL presets `ppo-*` (`rl/configs`, `organism/presets`)
and SFT presets `sft-*` (`priming/configs`, `organism/presets`). The lab is the one layer that knows
every package, so it is the one place that puts the organism's presets beside the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import organism
from runtime.config import Shelf, load_dataclass, resolve_source

T = TypeVar("T")

HERE = Path(__file__).parent / "presets"
ORGANISM = Path(organism.__file__).parent / "presets"


def shelf(kind: str) -> Shelf:
    """The shelf of `kind`: `experiment`, `ppo` (PPO, GRPO, RLOO) or `sft`."""
    if kind == "experiment":
        return Shelf((HERE, ORGANISM))
    if kind == "ppo":
        from rl.config import CONFIG_DIR

        return Shelf((CONFIG_DIR, ORGANISM), prefix="ppo")
    if kind == "sft":
        from priming.sft import PRESET_DIR

        return Shelf((PRESET_DIR, ORGANISM), prefix="sft")
    raise ValueError(f"unknown preset kind {kind!r}")


def resolve(kind: str, source: str | Path) -> Path:
    """The YAML file of a preset name (old unprefixed names too, with a note) or a path."""
    return resolve_source(source, shelf(kind), what=kind)


def load_preset_dataclass(kind: str, cls: type[T], source: str | Path | None, overrides: dict[str, Any], *, what: str) -> T:
    """`cls` from a preset of `kind` (name or file), then `overrides` (typed and checked, one-line errors)."""
    return load_dataclass(cls, source, overrides, shelf(kind), what=what)
