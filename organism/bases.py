"""The organism's base models as the start of an experiment: made (or found) in the cache, gated.

    <cache>/seed-<s>/{init,trunk,rich,poor}/   pretrain.json, gates.json
    <cache>/primed/<key>/model/                 a primed base, keyed by everything its SFT depends on

`countdown-lab pretrain` and `start: organism` experiments share this cache; the seed-0 bases ship
with the package (`organism/bases/seed-0`), and so does the demo's primed poor base
(`organism/bases/primed/<key>`), so `countdown-lab demo` spends its minutes on RL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from countdown_env.files import write_text_atomic
from organism.pretrain import BASES, PretrainConfig, base_dir, evaluate_base, gates, pretrain

#: Base models shipped with the package (seed 0).
SHIPPED_BASES = Path(__file__).parent / "bases"


def has_model(folder: Path) -> bool:
    """A model folder with its config and weights (a folder with a config but no weights is not cached)."""
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def install_shipped_bases(cache: str | Path) -> list[str]:
    """Copy the shipped seed-0 bases into `cache` where it has none; returns what was copied.

    They are what `countdown-lab pretrain --seed 0` makes with the default settings; a cache
    that already holds seed-0 bases (made here, or copied before) is left alone."""
    source, target = SHIPPED_BASES / "seed-0", Path(cache) / "seed-0"
    if not source.is_dir():
        return []
    copied = []
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "pretrain.json").exists():  # whole or not at all: a torn copy would refuse every later run
        write_text_atomic(target / "pretrain.json", (source / "pretrain.json").read_text())
    for stage in sorted(p.name for p in source.iterdir() if p.is_dir()):
        if not has_model(target / stage / "model"):
            shutil.copytree(source / stage / "model", target / stage / "model", dirs_exist_ok=True)
            copied.append(stage)
    for primed in sorted((SHIPPED_BASES / "primed").glob("*/model")):
        if cached_primed(cache, primed.parent.name) is None:
            store_primed(cache, primed.parent.name, primed)
            copied.append(f"primed/{primed.parent.name}")
    return copied


#: SFT settings that change where a run writes or what it logs, not the weights it makes.
NOT_IN_PRIMED_KEY = ("model", "data", "output_dir", "logging_steps", "save_steps", "save_total_limit")


def primed_key(sft: Any, traces: Path, model: Path) -> str:
    """What a priming SFT's weights depend on: its settings (`sft`, an `SFTRunConfig`, but not where it reads and
    writes), the traces (`traces/train.jsonl`) and the start model's weights; 16 hex digits."""
    settings = {k: v for k, v in asdict(sft).items() if k not in NOT_IN_PRIMED_KEY}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in [Path(traces) / "train.jsonl", *sorted(Path(model).glob("*.safetensors"))]:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def cached_primed(cache: str | Path, key: str) -> Path | None:
    """The cached primed model of `key`, or None."""
    folder = Path(cache) / "primed" / key / "model"
    return folder if has_model(folder) else None


def store_primed(cache: str | Path, key: str, model: Path) -> Path:
    """Copy the primed `model` folder into the cache under `key`, whole or not at all (copied aside, then renamed)."""
    target = Path(cache) / "primed" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}-"))
    try:
        shutil.copytree(model, aside / "model")
        os.replace(aside, target)  # a missing or empty target is replaced; a filled one (a racing run's) is kept
    except OSError:
        shutil.rmtree(aside, ignore_errors=True)
        if cached_primed(cache, key) is None:
            raise
    return target / "model"


def gate_tasks(config: PretrainConfig) -> list:
    """The tasks the gates look at: up to `gate_tasks` of the dev split (the organism's design split;
    its test split is kept for reports), all of them when the split has fewer."""
    from countdown_env import TaskConfig
    from countdown_env.tasks import iter_tasks

    split = "dev" if TaskConfig.preset(config.task_preset).dev_fraction > 0 else "test"
    out = []
    try:
        for task in iter_tasks(config.seed, TaskConfig.preset(config.task_preset), split):
            out.append(task)
            if len(out) >= config.gate_tasks:
                break
    except ValueError:  # the split holds fewer tasks: all of them
        pass
    return out


def base_gates(config: PretrainConfig, cache: str | Path, bases: Sequence[str]) -> dict[str, Any]:
    """Each base's greedy accuracy, arithmetic and behaviour on the held-out tasks, and the
    pretraining gates, written once to `<cache>/seed-<s>/gates.json` (and read from there after)."""
    from organism import text

    path = Path(cache) / f"seed-{config.seed}" / "gates.json"
    if path.exists():
        try:
            known = json.loads(path.read_text())
        except ValueError as error:  # written atomically, so edited or damaged: it is derived, measure it again
            warnings.warn(f"{path} is not JSON ({error}); measuring the gates again", stacklevel=2)
            known = {}
        if set(bases) <= set(known.get("bases", {})):
            return known
    held_out = gate_tasks(config)
    reports = {base: evaluate_base(base_dir(cache, config.seed, base) / "model", held_out, base) for base in bases}
    verdicts = gates(reports) if set(reports) == set(BASES) else []
    out = {
        "search_pays": text.search_pays(held_out, seed=config.seed),
        "bases": {k: asdict(v) for k, v in reports.items()},
        "gates": [{"gate": line, "pass": ok} for line, ok in verdicts],
    }
    write_text_atomic(path, json.dumps(out, indent=2) + "\n")
    return out


def pretrain_job(config: PretrainConfig, cache: str, base: str) -> str:
    """One base in a pool worker (one thread), from the trunk already in `cache`."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    return str(pretrain(config, cache, bases=(base,), progress=False)[base])


def ensure_bases(config_of: Callable[[int], PretrainConfig], cache: str, seeds: Sequence[int], bases: Sequence[str], *, jobs: int) -> None:
    """Every (seed, base) in the cache (the shipped ones installed, the rest pretrained: `train_bases`), then each
    seed's gates."""
    for seed in seeds:
        if seed == 0 and config_of(0).identity() == PretrainConfig(seed=0).identity():
            install_shipped_bases(cache)
    train_bases(config_of, cache, seeds, bases, jobs=jobs)
    for seed in seeds:
        base_gates(config_of(seed), cache, bases)


def train_bases(
    config_of: Callable[[int], PretrainConfig], cache: str, seeds: Sequence[int], bases: Sequence[str], *, jobs: int, progress: bool = False
) -> None:
    """Pretrain every (seed, base) missing from the cache: each seed's trunk first (shared by its bases, so parallel
    base jobs never race on it), then the bases in `jobs` one-thread processes (`countdown-lab pretrain` and
    `ensure_bases`)."""
    from runtime.pool import in_pool

    for seed in seeds:
        if not all(has_model(base_dir(cache, seed, base) / "model") for base in bases):
            pretrain(config_of(seed), cache, bases=(), progress=progress)
    missing = [(config_of(seed), cache, base) for seed in seeds for base in bases if not has_model(base_dir(cache, seed, base) / "model")]
    if missing:
        in_pool(jobs, missing, pretrain_job, "base")
