"""`countdown-lab self-improve`: rounds of self-training (sample, keep the correct ones, SFT on them).

The loop whose reversal the self-improvement literature describes: pass@1 rises round after round
while pass@k, the number of distinct solutions and out-of-distribution accuracy fall. Each round
samples `samples` completions per training task from the previous round's model at T=1, keeps
the correct ones (each distinct text once per task) and fine-tunes that model on them with the
organism's SFT recipe (`organism.pretrain.train_on_rows`: compact prompts, cosine schedule).

    D/config.json                   the settings
    D/rounds/round-N/rows.jsonl     round N's kept completions (prompt/completion)
    D/rounds/round-N/model/         round N's model (a round with a model is done: resume skips it)
    D/analysis/                     `countdown-lab analyze` over the rounds (round = step, 0 = the start model)

The rounds train on the preset's train split; the analysis measures every round on the whole test
split with 95% intervals over tasks, and tests each round's change from round 0 (pass@1, pass@k with
k = samples/2, distinct solutions) by a paired bootstrap over tasks: a reversal counts only where
the change is outside that noise (`analysis/analysis.csv`, the table `self-improve` prints).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from countdown_env import generate_tasks, preset_rules
from countdown_env.errors import UsageError
from countdown_env.files import write_text_atomic


@dataclass(frozen=True)
class SelfImproveConfig:
    """Rounds of sample -> filter correct -> SFT."""

    rounds: int = 3
    task_preset: str = "organism"
    """Training tasks: this preset's train split (analysis uses its test split)."""
    prompt_style: str = "compact"
    """The SFT recipe trains on compact prompts (tiny character-level models)."""
    num_tasks: int = 200
    samples: int = 8
    """Completions sampled per task per round."""
    temperature: float = 1.0
    max_new_tokens: int = 224
    sft_steps: int = 100
    """SFT steps per round (batch `batch_size`)."""
    batch_size: int = 32
    learning_rate: float = 3e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "num_tasks", "samples", "max_new_tokens", "sft_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if not 0 < self.learning_rate < 1:  # the organism's SFT recipe (AdamW) diverges at 1 and beyond
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.prompt_style != "compact":
            raise ValueError("self-improve trains with the organism's SFT recipe, which uses compact prompts")
        preset_rules(self.task_preset)


def round_dir(root: Path, round_: int) -> Path:
    return Path(root) / "rounds" / f"round-{round_:03d}"


def keep_correct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The correct rows, each (prompt, completion) once: the round's SFT data."""
    seen: set[tuple[str, str]] = set()
    out = []
    for row in rows:
        key = (row["prompt"], row["completion"])
        if row["correct"] and key not in seen:
            seen.add(key)
            out.append(row)
    return out


#: Prompts per `generate` call when a round samples.
SAMPLE_BATCH_SIZE = 128


def sample_round(model_path: str, config: SelfImproveConfig, round_: int) -> list[dict[str, Any]]:
    """`samples` completions per training task from `model_path`, scored (prompt, completion, correct, numbers, target)."""
    from runtime.models import load_model, load_tokenizer
    from runtime.prompt import Prompt
    from runtime.sampling import sample_and_score

    prompt = Prompt.of_preset(config.task_preset, config.prompt_style)
    tasks = generate_tasks(config.num_tasks, seed=config.seed, preset=config.task_preset, split="train")
    repeated = [t for t in tasks for _ in range(config.samples)]
    model, tokenizer = load_model(model_path), load_tokenizer(model_path)
    # A seed per round: each round's samples are new, and the same after a resume.
    scored = sample_and_score(model, tokenizer, repeated, prompt, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                              batch_size=SAMPLE_BATCH_SIZE, seed=config.seed * 1000 + round_, by_length=True)  # fmt: skip
    return [
        {"prompt": s.prompt, "completion": s.text, "correct": s.score.correct, "numbers": list(s.task.numbers), "target": s.task.target}
        for s in scored.samples
    ]


def self_improve(model: str, output_dir: Path, config: SelfImproveConfig, *, log: Callable[[str], None] = print) -> list[Path]:
    """Run the rounds not done yet; returns every round's model folder (round 1 first)."""
    from organism.pretrain import train_on_rows

    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    settings = {**asdict(config), "model": str(model)}
    path = root / "config.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            raise UsageError(
                f"{path} is not valid JSON; delete it if these are the settings the run was made with (its finished rounds are kept), or use another --output-dir"
            ) from None
        if {k: v for k, v in old.items() if k != "rounds"} != {k: v for k, v in settings.items() if k != "rounds"}:
            raise UsageError(f"{root} holds a self-improve run with other settings ({path}); choose another --output-dir")
    write_text_atomic(path, json.dumps(settings, indent=2))
    models = []
    current = str(model)
    for r in range(1, config.rounds + 1):
        folder = round_dir(root, r)
        if (folder / "model" / "config.json").is_file():
            log(f"self-improve: round {r} done already")
        else:
            rows = [] if (folder / "rows.jsonl").exists() else keep_correct(sample_round(current, config, r))
            if not rows and not (folder / "rows.jsonl").exists():
                raise UsageError(
                    f"round {r}: no correct sample among {config.num_tasks * config.samples}; the model cannot self-improve from here"
                )
            if rows:
                log(f"self-improve: round {r}: {len(rows)} distinct correct completions kept; SFT for {config.sft_steps} steps")
            train_on_rows(current, rows, folder, steps=config.sft_steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
                          seed=config.seed + r, progress=False)  # fmt: skip
        current = str(folder / "model")
        models.append(Path(current))
    return models
