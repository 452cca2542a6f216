"""`countdown-lab analyze` and `countdown-lab self-improve`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from runtime.config import add_option


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="per checkpoint: reflection, length, pass@k, distinct solutions, OOD, KL to the base, hidden-state shift, transfer",
        description="Measure every evaluated checkpoint of a ppo/grpo/sft/self-improve run directory (step 0: the base model) "
        "on the whole test split by default. Writes OUTPUT_DIR/analysis.json, analysis.csv (pass@k and distinct solutions "
        "with 95% intervals over tasks) and PNG plots, and prints which changes from step 0 are outside the noise; "
        "re-running resumes after the last analysed step.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory (ppo, grpo, sft or self-improve)")
    p.add_argument("--base-model", dest="base_model", help="the base model the run started from (default: the run's config `model`)")
    # A directory: --output DIR (the contract's old spelling) still works, with a note.
    add_option(p, "--output-dir", old=("--output",), type=Path, required=True, metavar="DIR", help="where analysis.json and the plots go")
    _analysis_flags(p)
    p.set_defaults(func=_analyze)

    p = sub.add_parser(
        "self-improve",
        help="rounds of sample k per task -> keep correct -> SFT, then `analyze` over the rounds",
        description="Self-training on a model's own correct samples, resumable by round; then analyze with rounds as steps.",
    )
    p.add_argument("--model", required=True, help="start model (round 0)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--output-dir", type=Path, required=True, metavar="DIR")
    p.add_argument("--task-preset", dest="task_preset", default="organism", help="task preset of the training tasks (default %(default)s)")
    p.add_argument("--num-train-tasks", dest="num_train_tasks", type=int, default=200, help="training tasks sampled each round")
    # --samples is the analysis's samples per held-out task, as in `analyze`; the rounds' samples are --train-samples
    # (as --num-train-tasks beside --num-tasks).
    add_option(p, "--train-samples", old=("--k",), dest="train_samples", type=int, default=8, help="samples per training task per round")
    p.add_argument("--sft-steps", dest="sft_steps", type=int, default=100)
    p.add_argument("--learning-rate", dest="learning_rate", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-analyze", dest="no_analyze", action="store_true", help="only the rounds")
    p.add_argument("--num-tasks", dest="num_tasks", type=int, help="analysis: held-out tasks (default: the whole test split)")
    p.add_argument("--samples", type=int, help="analysis: samples per held-out task (>= 32; pass@k for k <= samples/2)")
    p.add_argument("--num-ood-tasks", dest="num_ood_tasks", type=int, help="analysis: tasks per greedy split")
    p.set_defaults(func=_self_improve)


def _analysis_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task-preset", dest="task_preset", help="held-out tasks' preset (default: the run's task_preset, else organism)")
    p.add_argument("--prompt-style", dest="prompt_style", help="prompt template (default: the run's)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, help="default: the run's max_response_length")
    p.add_argument(
        "--num-tasks", dest="num_tasks", type=int, help="held-out tasks, each sampled --samples times (default: the whole test split)"
    )
    p.add_argument("--samples", type=int, help="samples per task at T=1 (default and least 32; pass@k for k=1..samples/2)")
    p.add_argument(
        "--num-ood-tasks", dest="num_ood_tasks", type=int, help="tasks per greedy split: unseen ranges, +1 number, transfer (default 64)"
    )
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--seed", type=int)


def _config(args: argparse.Namespace, defaults: dict[str, Any]) -> Any:
    from countdown_env.errors import user_input
    from lab.analysis.run import AnalyzeConfig

    names = ("task_preset", "prompt_style", "max_new_tokens", "num_tasks", "samples", "num_ood_tasks", "batch_size", "seed")
    flags = {k: getattr(args, k, None) for k in names}
    with user_input():
        return AnalyzeConfig(**{**defaults, **{k: v for k, v in flags.items() if v is not None}})


def _analyze(args: argparse.Namespace) -> int:
    from countdown_env.errors import UsageError, output_dir
    from lab.analysis.run import analyze, flagged_lines, noise_table, run_settings, start_model

    if not args.run_dir.is_dir():
        raise UsageError(f"run directory {args.run_dir} does not exist")
    # The run's own `model` may be a path relative to where it ran: start_model finds it from here too.
    base = args.base_model or start_model(args.run_dir)
    if not base:
        raise UsageError("no base model: pass --base-model PATH (the model the run started from)")
    config = _config(args, run_settings(args.run_dir))
    output_dir(args.output_dir, "--output-dir")
    if args.output_dir.resolve() == args.run_dir.resolve():  # its config.json and metrics would be replaced by the analysis's
        raise UsageError(
            f"--output-dir {args.output_dir} is the run directory itself; give another folder, e.g. {args.run_dir / 'analysis'}"
        )
    report = analyze(args.run_dir, base, args.output_dir, config)
    for line in [*noise_table(report), *flagged_lines(report)]:
        print(line)
    print(f"analysis: {args.output_dir / 'analysis.json'}, {args.output_dir / 'analysis.csv'} (plots: {args.output_dir}/*.png)")
    return 0


def _self_improve(args: argparse.Namespace) -> int:
    from countdown_env.errors import output_dir, user_input
    from lab.analysis.run import analyze, noise_table
    from lab.analysis.self_improve import SelfImproveConfig, self_improve
    from runtime.models import check_model

    with user_input():
        config = SelfImproveConfig(rounds=args.rounds, task_preset=args.task_preset, num_tasks=args.num_train_tasks, samples=args.train_samples,
                                   sft_steps=args.sft_steps, learning_rate=args.learning_rate, seed=args.seed)  # fmt: skip
    output_dir(args.output_dir, "--output-dir")
    check_model(args.model)
    self_improve(args.model, args.output_dir, config)
    if not args.no_analyze:
        defaults = {"task_preset": config.task_preset, "prompt_style": config.prompt_style, "max_new_tokens": config.max_new_tokens}
        report = analyze(args.output_dir, args.model, args.output_dir / "analysis", _config(args, defaults))
        for line in noise_table(report):  # rounds are the steps: round r against round 0, the start model
            print(line)
        print(f"analysis: {args.output_dir / 'analysis' / 'analysis.json'}, {args.output_dir / 'analysis' / 'analysis.csv'}")
    return 0
