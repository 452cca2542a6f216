"""`countdown-lab sft`: fine-tune a model on priming traces with TRL's SFTTrainer."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from countdown_env.rules import PROMPT_STYLES

# Flag -> SFTRunConfig field, for the options that map one to one. Every default is None
# so that the preset's value stands unless the flag is given.
_OPTIONS: tuple[tuple[str, str, type, str], ...] = (
    ("--epochs", "epochs", float, "passes over the training split (paper-3b: 5)"),
    ("--max-steps", "max_steps", int, "stop after this many optimiser steps (overrides --epochs)"),
    ("--lr", "learning_rate", float, "peak learning rate (paper-3b: 1e-5, tiny-cpu: 2e-3)"),
    ("--warmup-ratio", "warmup_ratio", float, "share of steps spent warming up (default 0.1)"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay (default 0.01)"),
    ("--batch-size", "batch_size", int, "sequences per device per forward pass"),
    ("--grad-accum", "gradient_accumulation_steps", int, "forward passes per optimiser step"),
    ("--max-length", "max_length", int, "truncate prompt + completion to this many tokens"),
    ("--max-train-samples", "max_train_samples", int, "train on the first N rows only"),
    ("--seed", "seed", int, "seed of data order, dropout and LoRA init (default 0)"),
    ("--logging-steps", "logging_steps", int, "steps between metrics.jsonl rows"),
    ("--save-steps", "save_steps", int, "steps between checkpoints"),
    ("--save-total-limit", "save_total_limit", int, "checkpoints kept"),
    ("--eval-steps", "eval_steps", int, "steps between evaluations on the test split (default: only at the end)"),
    ("--eval-samples", "eval_samples", int, "held-out tasks scored by greedy generation (0: loss only)"),
    ("--eval-max-new-tokens", "eval_max_new_tokens", int, "generation budget per held-out task"),
    ("--lora-r", "lora_r", int, "LoRA rank (default 0: full fine-tuning)"),
    ("--lora-alpha", "lora_alpha", int, "LoRA alpha (default 32)"),
    ("--lora-dropout", "lora_dropout", float, "LoRA dropout (default 0.05)"),
)


def add_commands(sub: argparse._SubParsersAction) -> None:
    from priming.sft import PRESETS, SCHEDULERS

    p = sub.add_parser(
        "sft",
        help="fine-tune a model on prompt/completion traces (TRL SFTTrainer, completion-only loss)",
        description="Fine-tune a model on priming traces. Writes OUTPUT_DIR/config.json, metrics.jsonl, checkpoints/ and model/ "
        "(the final model; later commands accept OUTPUT_DIR or OUTPUT_DIR/model as --model).",
    )
    p.add_argument("--model", required=True, help="model path (init-model output, a run directory) or hub id")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="directory written by `countdown-lab prime`, or a JSONL file of prompt/completion or trace rows",
    )
    p.add_argument("--output-dir", type=Path, required=True, help="run directory")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="paper-3b",
        help="paper-3b: the study's recipe for 3B models; tiny-cpu: tiny models on a CPU",
    )
    p.add_argument("--scheduler", dest="lr_scheduler", choices=SCHEDULERS, help="learning-rate schedule (default cosine)")
    p.add_argument(
        "--prompt-style", choices=sorted(PROMPT_STYLES), help="prompt template for trace rows (paper-3b: tinyzero, tiny-cpu: compact)"
    )
    for flag, dest, kind, text in _OPTIONS:
        p.add_argument(flag, dest=dest, type=kind, help=text)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, help="bf16 mixed precision (default: on only on a bf16-capable GPU)")
    p.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        help="recompute activations to save memory (default: on only on a GPU)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in OUTPUT_DIR/checkpoints (from scratch if there is none yet)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_sft)


def _sft(args: argparse.Namespace) -> int:
    from countdown_env.errors import user_input
    from priming.sft import SFTRunConfig, run_sft

    fields = {dest: getattr(args, dest) for _, dest, _, _ in _OPTIONS}
    with user_input():
        config = SFTRunConfig.from_preset(
            args.preset,
            model=str(args.model),
            data=str(args.data),
            output_dir=str(args.output_dir),
            lr_scheduler=args.lr_scheduler,
            prompt_style=args.prompt_style,
            bf16=args.bf16,
            gradient_checkpointing=args.gradient_checkpointing,
            **fields,
        )
    result = run_sft(config, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate launch, report once
        return 0
    shown = ("eval/loss", "eval/accuracy", "eval/well_formed")
    evals = "".join(f", {k} {result.final_eval[k]:.3f}" for k in shown if k in result.final_eval)
    print(
        f"trained {result.global_step} steps on {result.n_train} rows in {result.seconds / 60:.1f} min "
        f"(mean loss {result.train_loss:.3f}{evals}); model saved to {result.model_dir}"
    )
    return 0
