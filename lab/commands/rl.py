"""`countdown-lab init-model`, `ppo` (and `grpo`/`rloo`), `plan`, `eval`, `export-verl`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from countdown_env.errors import UsageError, output_dir, output_file, user_input
from countdown_env.tasks import PRESETS
from runtime.config import add_option

#: `eval` flags named after the EvalConfig field they set.
_EVAL_FLAGS = ("k", "max_new_tokens", "prompt_style", "batch_size", "seed", "num_ood_tasks")
#: What each RL subcommand runs: its algorithms (the first is its default) and its one-line help.
_RL_COMMANDS = {
    "ppo": (("ppo", "grpo", "rloo"), "RL on Countdown: PPO with a critic (default), or --algo grpo|rloo through TRL"),
    "grpo": (("grpo", "rloo"), "GRPO through TRL's GRPOTrainer (same as `ppo --algo grpo`)"),
}


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_init_model(sub)
    for name in _RL_COMMANDS:
        _add_rl(sub, name)
    _add_plan(sub)
    _add_eval(sub)
    _add_export_verl(sub)


def _add_init_model(sub: argparse._SubParsersAction) -> None:
    from runtime.models import ARCHS, SIZES

    p = sub.add_parser("init-model", help="build a tiny randomly initialised model + tokenizer, saved like a hub checkpoint")
    p.add_argument("--arch", choices=ARCHS, default="qwen2")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    # A model is a folder: --output DIR (the contract's old spelling) still works, with a note.
    add_option(p, "--output-dir", old=("--output", "-o"), type=Path, required=True, metavar="DIR", help="model folder to write")
    p.set_defaults(func=_init_model)


def _add_rl(sub: argparse._SubParsersAction, name: str) -> None:
    from lab.pipeline.presets import shelf
    from rl.config import DEFAULT_PRESET, PPOConfig
    from runtime.config import add_preset_args, preset_names
    from runtime.tracking import add_report_to

    algos, text = _RL_COMMANDS[name]
    p = sub.add_parser(name, help=text, description=text + ". Writes config.json, metrics.jsonl, rollouts.jsonl, checkpoints/.")
    p.add_argument("--model", help="start model: a local folder, hub id or SFT run directory (default: the config's `model`)")
    p.add_argument("--output-dir", type=Path, required=True, metavar="DIR", help="run directory")
    # No default: on --resume without --config the run's own config.json is the config.
    add_preset_args(p, PPOConfig, shelf("ppo"), shown=DEFAULT_PRESET, what="ppo",
                    help=f"RL preset ({', '.join(preset_names(shelf('ppo')))}) or a YAML file; default {DEFAULT_PRESET}")  # fmt: skip
    p.add_argument("--max-steps", type=int, help="stop after this many steps in total (overrides total_steps)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    p.add_argument(
        "--tasks", type=Path, help="RL tasks file (JSONL or parquet) or hub dataset org/name[:split]; default: generated from the preset"
    )
    # A type rather than `choices`, so that `grpo --algo ppo` says where PPO is instead of only listing the choices.
    p.add_argument("--algo", type=_algo(name, algos), default=algos[0], metavar="{" + ",".join(algos) + "}",
                   help="ppo (ours, with a critic) or TRL's grpo / rloo" if "ppo" in algos else "TRL's grpo or rloo")  # fmt: skip
    p.add_argument("--trl-set", dest="trl_overrides", action="append", metavar="KEY=VALUE",
                   help="grpo/rloo only: extra TRL config options, e.g. --trl-set use_vllm=true")  # fmt: skip
    add_option(p, "--quiet", old=("--no-progress",), action="store_true", help="no progress bar")
    add_report_to(p)
    p.add_argument("--push-to-hub", metavar="REPO",
                   help="also push the run's rollouts.jsonl when training ends to this hub dataset repository (needs a login token)")  # fmt: skip
    p.set_defaults(func=_ppo)


def _algo(command: str, algos: tuple[str, ...]):  # noqa: ANN202 - an argparse type
    def parse(text: str) -> str:
        if text in algos:
            return text
        if text == "ppo":  # `grpo --algo ppo` used to run PPO without a word
            raise argparse.ArgumentTypeError(f"`{command}` runs TRL's {' or '.join(algos)}; PPO with a critic is `countdown-lab ppo`")
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(algos)}, got {text!r}")

    return parse


def _add_plan(sub: argparse._SubParsersAction) -> None:
    from lab.pipeline.presets import shelf
    from rl.config import PPOConfig
    from runtime.config import add_preset_args, preset_names

    text = "per-GPU memory of a PPO config (weights, gradients, optimiser, activations of policy, critic, reference)"
    p = sub.add_parser(
        "plan", help=text, description=text + "; exits 0 when it fits, 1 with what to change (ZeRO stage, micro-batch, LoRA) when not."
    )
    add_preset_args(p, PPOConfig, shelf("ppo"), default="ppo-paper-3b", what="ppo", old=("--preset",),
                    help=f"RL preset ({', '.join(preset_names(shelf('ppo')))}) or a YAML file; default ppo-paper-3b")  # fmt: skip
    p.add_argument("--gpus", type=_positive, required=True, help="GPUs (one PPO process each)")
    p.add_argument(
        "--gpu-memory-gb", dest="gpu_memory_gb", type=float, required=True, help="memory of one GPU in GB (80 for an A100/H100 80GB)"
    )
    p.add_argument("--model", help="model (local folder or a known hub id, e.g. Qwen/Qwen2.5-3B); default: the config's")
    p.set_defaults(func=_plan)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from runtime.config import add_preset_args

    p = sub.add_parser("eval", help="accuracy, pass@k, diversity, OOD accuracy and length of a model on a tasks file")
    p.add_argument(
        "--model", required=True, help="model folder, hub id, or run directory (a PPO run's newest checkpoint, an SFT run's model)"
    )
    p.add_argument("--tasks", type=Path, required=True, help="tasks file (JSONL or parquet)")
    p.add_argument("--output", "-o", type=Path, required=True, metavar="FILE", help="report JSON")
    p.add_argument(
        "--completions",
        type=Path,
        metavar="FILE",
        help="completions JSONL for `countdown-lab classify` (default: OUTPUT with .completions.jsonl)",
    )
    # Flags for the common EvalConfig fields (default None: the config's value stands); --set reaches every field.
    add_option(
        p, "--samples", old=("--k",), dest="k", type=int, metavar="N", help="samples per task at temperature 1 (pass@k up to this; field k)"
    )
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    p.add_argument("--prompt-style", dest="prompt_style", help="compact (tiny models), tinyzero, chat")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--seed", type=int)
    add_option(p, "--task-preset", old=("--preset",), default="tinyzero", choices=sorted(PRESETS), metavar="NAME",
               help="task preset whose rules the prompts state and the scorer enforces (classic: numbers at most once)")  # fmt: skip
    p.add_argument("--limit", type=_positive, help="evaluate only the first N tasks (N >= 1)")
    p.add_argument("--ood-tasks", type=Path, help="harder tasks file; default: generated with one more number than --tasks")
    add_option(p, "--num-ood-tasks", old=("--num-ood",), dest="num_ood_tasks", type=int, help="generated OOD tasks (0 = skip)")
    add_preset_args(p, _eval_config_class, None, option="--config", what="eval", help="YAML file of eval settings (the fields below)")
    p.add_argument("--strict-ending", action="store_true", help="score with the training rule (reward 0 unless the text ends at </answer>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_eval)


def _add_export_verl(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-verl", help="train/test parquet in veRL's (TinyZero's) schema and a compute_score reward module")
    p.add_argument("--output-dir", type=Path, required=True, metavar="DIR")
    p.add_argument("-n", "--num-train", type=_positive, default=327_680, help="train tasks (TinyZero: 327,680)")
    p.add_argument("--num-test", type=_positive, default=1024)
    p.add_argument("--seed", type=int, default=0)
    add_option(p, "--task-preset", old=("--preset",), default="tinyzero", choices=sorted(PRESETS), metavar="NAME",
               help=f"task preset ({', '.join(sorted(PRESETS))}; default %(default)s)")  # fmt: skip
    p.add_argument(
        "--template",
        choices=("base", "instruct"),
        default="base",
        help="base: TinyZero's template as one user turn; instruct: the question as one user turn (chat_messages)",
    )
    p.add_argument("--tasks", type=Path, help="train tasks file instead of generated ones")
    p.set_defaults(func=_export_verl)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _distinct_outputs(paths: dict[str, Path]) -> None:
    """A one-line error when two outputs (flag -> path) are one file: the second write would replace the first."""
    seen: dict[Path, str] = {}
    for flag, path in paths.items():
        key = Path(path).resolve()
        if key in seen:
            raise UsageError(f"{flag} {path} is also {seen[key]}: give each output its own file")
        seen[key] = flag


def _eval_config_class() -> type:
    from rl.evaluate import EvalConfig  # imports torch: only when `eval` runs

    return EvalConfig


def _init_model(args: argparse.Namespace) -> int:
    from runtime.models import count_parameters, init_model, load_model

    path = init_model(args.output_dir, args.arch, args.size, seed=args.seed)
    print(f"{args.arch}/{args.size}: {count_parameters(load_model(path)):,} parameters, saved to {path}")
    return 0


def resolve_config(args: argparse.Namespace) -> Any:
    """The run's config: --config (or, on --resume, the run's own config.json), then --set, --model, --max-steps."""
    from lab.pipeline.presets import resolve
    from rl.config import DEFAULT_PRESET, PPOConfig, load_config, parse_overrides, run_settings
    from runtime.models import PACKAGED_MODELS, check_model, resolve_model_path

    saved = args.output_dir / "config.json"
    overrides: dict[str, Any] = {}
    source: str | None = args.config
    if args.resume and not args.config and saved.exists():
        known = set(PPOConfig.__dataclass_fields__)  # a field since removed from PPOConfig: an old run still resumes
        overrides = {k: v for k, v in (run_settings(saved) or {}).items() if k in known}
    elif source is None:
        source = DEFAULT_PRESET
    overrides.update(parse_overrides(args.overrides))
    if args.model:
        # A packaged hub id stays an id (config.json then names the model, not this machine's cache).
        overrides["model"] = args.model if args.model in PACKAGED_MODELS else resolve_model_path(check_model(args.model))
    if args.max_steps is not None:
        overrides["total_steps"] = args.max_steps
    with user_input():
        return load_config(resolve("ppo", source) if source is not None else None, overrides)


def _ppo(args: argparse.Namespace) -> int:
    from rl.config import parse_overrides
    from runtime.hub import check_reachable, load_tasks, offline
    from runtime.models import PACKAGED_MODELS, check_model
    from runtime.run_dir import lock_folder
    from runtime.tracking import check_report_to

    if args.trl_overrides and args.algo == "ppo":
        raise UsageError("--trl-set sets TRL's options: it needs --algo grpo or rloo (PPO is our own loop: use --set)")
    # Every check before the first file is written or the first model is loaded.
    report_to = check_report_to(args.report_to or "none")
    if args.tasks:
        check_reachable(args.tasks)
    if args.push_to_hub and offline():
        raise UsageError(f"--push-to-hub {args.push_to_hub}: the hub is offline (HF_HUB_OFFLINE=1); nothing was trained")
    output_dir(args.output_dir, "--output-dir")
    config = resolve_config(args)
    if config.model and not args.model and config.model not in PACKAGED_MODELS:  # --model was checked in resolve_config
        check_model(config.model, "the config's model")
    with user_input("--trl-set"):
        trl_overrides = parse_overrides(args.trl_overrides)
    if args.algo != "ppo":
        check_trl_overrides(args.algo, trl_overrides, config)
    tasks = load_tasks(args.tasks) if args.tasks else None
    with lock_folder(args.output_dir, "--output-dir"):
        run = _train(args, config, tasks, trl_overrides, report_to)
    print(f"run directory: {run}")
    if args.push_to_hub and (run / "rollouts.jsonl").exists() and int(os.environ.get("RANK", "0")) == 0:
        from countdown_env.files import read_jsonl
        from runtime.hub import push_rows

        push_rows(read_jsonl(run / "rollouts.jsonl"), args.push_to_hub)
    return 0


def _train(args: argparse.Namespace, config: Any, tasks: Any, trl_overrides: dict[str, Any], report_to: str) -> Path:
    if args.algo == "ppo":
        from rl.train import train

        return train(config, args.output_dir, tasks=tasks, resume=args.resume, progress=not args.quiet, report_to=report_to)
    from rl.trl_algos import train_trl

    return train_trl(args.algo, config, args.output_dir, tasks=tasks, resume=args.resume, trl_overrides=trl_overrides, report_to=report_to)


#: Trackers TRL's `report_to` may name -> the module that must be importable.
_TRACKER_MODULES = {"wandb": "wandb", "tensorboard": "tensorboard", "trackio": "trackio", "mlflow": "mlflow", "comet_ml": "comet_ml",
                    "clearml": "clearml", "neptune": "neptune", "dvclive": "dvclive", "swanlab": "swanlab", "codecarbon": "codecarbon"}  # fmt: skip


def _plain_type(annotation: Any) -> type | None:
    """bool, int, float or str when a field's annotation is one of them (or it `| None`); None for anything else
    (unions, lists: left to TRL)."""
    import typing

    plain = {"bool": bool, "int": int, "float": float, "str": str}
    if isinstance(annotation, str):
        parts = [part.strip() for part in annotation.split("|") if part.strip() not in ("None", "NoneType")]
        return plain.get(parts[0]) if len(parts) == 1 else None
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return args[0] if len(args) == 1 and args[0] in plain.values() else None


def check_trl_overrides(algo: str, overrides: dict[str, Any], config: Any) -> None:
    """`--trl-set` options TRL's config of `algo` takes with the right types, before anything loads: an unknown key,
    a wrong type, a package it needs that is not installed, or a setting that breaks the run folder is one line."""
    import dataclasses
    import difflib
    import importlib.util
    import math

    from rl.trl_algos import trl_classes

    config_class, _ = trl_classes(algo)
    known = {f.name: f for f in dataclasses.fields(config_class)}
    for key, value in overrides.items():
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            raise UsageError(
                f"--trl-set {key}: not an option of TRL's {config_class.__name__}" + (f" (did you mean {near[0]}?)" if near else "")
            )
        if key == "output_dir":
            raise UsageError(
                "--trl-set output_dir: TRL's checkpoints must stay in RUN/trl (resume and analyze read them there); use --output-dir"
            )
        kind = _plain_type(known[key].type)
        ok = (
            kind is None
            or value is None
            or (kind is bool and isinstance(value, bool))
            or (kind is int and isinstance(value, int) and not isinstance(value, bool))
            or (kind is float and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value))
            or (kind is str and isinstance(value, str))
        )
        if not ok:
            raise UsageError(
                f"--trl-set {key}={value!r}: TRL expects a {'finite ' if kind is float else ''}{kind.__name__ if kind else ''}"
            )
    if overrides.get("use_vllm") and importlib.util.find_spec("vllm") is None:
        raise UsageError("--trl-set use_vllm=true needs the vllm package (pip install vllm, on a GPU machine)")
    report_to = overrides.get("report_to", [])
    for name in [report_to] if isinstance(report_to, str) else report_to or []:
        if name in ("none", "all"):
            continue
        module = _TRACKER_MODULES.get(str(name))
        if module is None or importlib.util.find_spec(module) is None:
            raise UsageError(
                f"--trl-set report_to: {name} "
                + ("is not a tracker TRL knows" if module is None else f"needs the {name} package: pip install {name}")
            )
    if "num_generations" in overrides:
        n, batch = overrides["num_generations"], overrides.get("generation_batch_size", config.batch_size)
        if n < 2 or batch % n:
            raise UsageError(f"--trl-set num_generations={n} must be >= 2 and divide the generation batch of {batch} completions")


def _plan(args: argparse.Namespace) -> int:
    from lab.pipeline.presets import resolve
    from rl.config import load_config, parse_overrides
    from rl.plan import advice, format_plan, plan

    overrides = parse_overrides(args.overrides)
    if args.model:
        overrides["model"] = args.model
    with user_input():
        config = load_config(resolve("ppo", args.config), overrides)
    result = plan(config, args.gpus, args.gpu_memory_gb)
    print(format_plan(result))
    if result.fits:
        return 0
    for line in advice(config, args.gpus, args.gpu_memory_gb):
        print(line)
    return 1


def _eval(args: argparse.Namespace) -> int:
    import torch

    from countdown_env import preset_rules
    from countdown_env.files import write_jsonl_atomic, write_text_atomic
    from rl.evaluate import EvalConfig, evaluate
    from runtime.config import load_dataclass, parse_set
    from runtime.hub import load_tasks
    from runtime.models import PACKAGED_MODELS, check_model, load_model, load_tokenizer, resolve_model_path

    with user_input():
        rules = preset_rules(args.task_preset, strict_ending=args.strict_ending)
        flags = {name: getattr(args, name) for name in _EVAL_FLAGS if getattr(args, name) is not None}
        config = load_dataclass(EvalConfig, args.config, {**parse_set(args.overrides), **flags}, what="eval")
    tasks = load_tasks(args.tasks)[: args.limit]
    ood = load_tasks(args.ood_tasks) if args.ood_tasks else None
    # The completions' default path is OUTPUT.completions.jsonl: it too must not be an input (earlier
    # completions are valid tasks rows, so `--tasks` naming one is easy) nor the report itself.
    completions = args.completions or args.output.with_suffix(".completions.jsonl")
    inputs = (args.tasks, *([args.ood_tasks] if args.ood_tasks else []))
    output_file(args.output, "--output", inputs=inputs)
    output_file(completions, "--completions" if args.completions else "--output's completions file", inputs=inputs)
    _distinct_outputs({"--output": args.output, "--completions": completions})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_path = resolve_model_path(check_model(args.model))
    try:
        model, tokenizer = load_model(model_path, device=device).eval(), load_tokenizer(model_path)
    except OSError as err:  # a hub id that is not cached (offline) or a folder without a model
        raise UsageError(f"--model {args.model}: cannot load a model from it ({str(err).splitlines()[0] if str(err) else err!r})") from err
    if config.prompt_style == "chat" and not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"--prompt-style chat: the tokenizer of {args.model} has no chat template; use compact or tinyzero")
    report, rows = evaluate(model, tokenizer, tasks, config, rules=rules, ood_tasks=ood, progress=not args.quiet)
    report["model"] = args.model if args.model in PACKAGED_MODELS else model_path
    report["tasks"] = str(args.tasks)
    report["preset"] = args.task_preset
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(completions, rows)
    report["completions"] = str(completions)
    write_text_atomic(args.output, json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, str)}, indent=2))
    return 0


def _export_verl(args: argparse.Namespace) -> int:
    from countdown_env import TaskConfig
    from lab.commands.env import check_split_sizes
    from rl.verl_export import export_verl
    from runtime.hub import load_tasks

    output_dir(args.output_dir, "--output-dir")
    with user_input("--task-preset"):
        TaskConfig.preset(args.task_preset)
    check_split_sizes(args.task_preset, {"test": args.num_test, **({} if args.tasks else {"train": args.num_train})}, "-n/--num-test")
    if args.tasks:  # the files it writes must not be the file it reads
        for name in ("train.parquet", "test.parquet", "countdown_reward.py"):
            output_file(args.output_dir / name, "--output-dir", inputs=(args.tasks,))
    tasks = load_tasks(args.tasks) if args.tasks else None
    paths = export_verl(
        args.output_dir,
        num_train=args.num_train,
        num_test=args.num_test,
        seed=args.seed,
        preset=args.task_preset,
        template=args.template,
        train_tasks=tasks,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    print("veRL: see docs/verl.md for the training command")
    return 0
