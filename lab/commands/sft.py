"""`countdown-lab sft`: fine-tune a model on priming traces with TRL's SFTTrainer."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from countdown_env.rules import PROMPT_STYLES

# Flag -> SFTRunConfig field, for the options that map one to one (help: the field's doc). Every default is
# None so that the preset's value stands unless the flag is given; --set reaches every field.
_OPTIONS: tuple[tuple[str, str, type], ...] = (
    ("--epochs", "epochs", float),
    ("--max-steps", "max_steps", int),
    ("--lr", "learning_rate", float),
    ("--warmup-ratio", "warmup_ratio", float),
    ("--weight-decay", "weight_decay", float),
    ("--batch-size", "batch_size", int),
    ("--grad-accum", "gradient_accumulation_steps", int),
    ("--max-length", "max_length", int),
    ("--max-train-samples", "max_train_samples", int),
    ("--seed", "seed", int),
    ("--logging-steps", "logging_steps", int),
    ("--save-steps", "save_steps", int),
    ("--save-total-limit", "save_total_limit", int),
    ("--eval-steps", "eval_steps", int),
    ("--eval-samples", "eval_samples", int),
    ("--eval-max-new-tokens", "eval_max_new_tokens", int),
    ("--lora-r", "lora_r", int),
    ("--lora-alpha", "lora_alpha", int),
    ("--lora-dropout", "lora_dropout", float),
    ("--prompt-field", "prompt_field", str),
    ("--completion-field", "completion_field", str),
)
#: The other flags that set a field of the same name.
_OTHER_FIELDS = ("lr_scheduler", "prompt_style", "bf16", "gradient_checkpointing", "report_to", "merge_lora")


def add_commands(sub: argparse._SubParsersAction) -> None:
    from lab.pipeline.presets import shelf
    from priming.sft import DEFAULT_PRESET, SCHEDULERS, SFTRunConfig
    from runtime.config import add_preset_args, field_docs, preset_names
    from runtime.tracking import add_report_to

    docs = field_docs(SFTRunConfig)

    p = sub.add_parser(
        "sft",
        help="fine-tune a model on prompt/completion traces (TRL SFTTrainer, completion-only loss)",
        description="Fine-tune a model on priming traces. Writes OUTPUT_DIR/config.json, metrics.jsonl, checkpoints/ and model/ "
        "(the final model; later commands accept OUTPUT_DIR or OUTPUT_DIR/model as --model).",
    )
    p.add_argument("--model", required=True, help="model path (init-model output, a run directory) or hub id")
    p.add_argument(
        "--data",
        required=True,
        help="directory written by `countdown-lab prime`, a JSONL or parquet file (or a folder with train.jsonl/train.parquet)"
        " of prompt/completion, query/completion, chat `messages` or trace rows, or a hub dataset org/name[:split]"
        " (default split train; a local path that exists wins)",
    )
    p.add_argument("--output-dir", type=Path, required=True, metavar="DIR", help="run directory")
    add_preset_args(p, SFTRunConfig, shelf("sft"), default=DEFAULT_PRESET, what="SFT", old=("--preset",),
                    help=f"SFT preset ({', '.join(preset_names(shelf('sft')))}) or a YAML file; default {DEFAULT_PRESET}: the study's "
                    "recipe for 3B models; sft-tiny-cpu: tiny models on a CPU")  # fmt: skip
    p.add_argument("--scheduler", dest="lr_scheduler", choices=SCHEDULERS, help=docs["lr_scheduler"])
    p.add_argument("--prompt-style", choices=sorted(PROMPT_STYLES), help=docs["prompt_style"])
    for flag, dest, kind in _OPTIONS:
        p.add_argument(flag, dest=dest, type=kind, help=docs[dest], metavar="NAME" if kind is str else None)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, help=docs["bf16"])
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, help=docs["gradient_checkpointing"])
    p.add_argument("--merge-lora", action=argparse.BooleanOptionalAction, help=docs["merge_lora"])
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in OUTPUT_DIR/checkpoints (from scratch if there is none yet)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_report_to(p)
    p.set_defaults(func=_sft)


def _sft(args: argparse.Namespace) -> int:
    from countdown_env.errors import output_dir
    from lab.pipeline.presets import resolve
    from priming.sft import load_sft_config, run_sft
    from runtime.config import parse_set
    from runtime.hub import check_reachable
    from runtime.models import PACKAGED_MODELS, check_model
    from runtime.run_dir import lock_folder

    flags = {dest: getattr(args, dest) for dest in (*(o[1] for o in _OPTIONS), *_OTHER_FIELDS)}
    given = {k: v for k, v in flags.items() if v is not None}
    paths = {"model": str(args.model), "data": str(args.data), "output_dir": str(args.output_dir)}
    config = load_sft_config(resolve("sft", args.config), {**parse_set(args.overrides), **given, **paths})
    # Before any file is written or model loaded: the data, the model, the folder.
    check_reachable(args.data)
    if args.model not in PACKAGED_MODELS:
        check_model(args.model)
    output_dir(args.output_dir, "--output-dir")
    with lock_folder(args.output_dir, "--output-dir"):
        result = run_sft(config, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate launch, report once
        return 0
    shown = ("eval/loss", "eval/accuracy", "eval/format_rate")
    evals = "".join(f", {k} {result.final_eval[k]:.3f}" for k in shown if k in result.final_eval)
    print(
        f"trained {result.global_step} steps on {result.n_train} rows in {result.seconds / 60:.1f} min "
        f"(mean loss {result.train_loss:.3f}{evals}); model saved to {result.model_dir}"
    )
    return 0
