"""`countdown-lab prime`: priming traces (synthetic or from an LLM) as a dataset for SFT."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from countdown_env.rules import PROMPT_STYLES
from countdown_env.tasks import PRESETS
from priming.conditions import CONDITIONS
from priming.render import STYLES
from priming.traces import INCORRECT_KINDS, incorrect_kind_for
from runtime.config import add_option


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prime",
        help="write priming traces with chosen behaviours (HF dataset + JSONL)",
        description="Generate reasoning traces of one priming condition for a set of tasks and write OUTPUT_DIR/dataset "
        "(train/test, prompt/completion), OUTPUT_DIR/train.jsonl, test.jsonl and metadata.json.",
    )
    p.add_argument("--condition", "-c", required=True, choices=sorted(CONDITIONS), help="which behaviours the traces show")
    add_option(p, "--output-dir", old=("-o", "--output"), type=Path, required=True, metavar="DIR",
               help="where the dataset, train.jsonl, test.jsonl and metadata.json go")  # fmt: skip
    p.add_argument("--incorrect", action="store_true", help="every final answer wrong but well-formed, same target and behaviours")
    p.add_argument(
        "--incorrect-kind",
        choices=INCORRECT_KINDS,
        help="with --incorrect (synthetic): slip = correct reasoning, wrong answer line (default); "
        "ranout = the search stops before the solution and answers its closest attempt",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the traces (and of the tasks, unless --task-seed)")
    tasks = p.add_argument_group("tasks (a file, or generated)")
    tasks.add_argument("--tasks", type=Path, help="tasks file (JSONL numbers/target, or parquet nums/target)")
    add_option(tasks, "--task-preset", old=("--preset",), default="priming", choices=sorted(PRESETS),
               help="task preset: generated tasks when no --tasks, and the rules traces follow and prompts state (default: priming)")  # fmt: skip
    tasks.add_argument("--num", "-n", type=int, default=1000, help="tasks to generate when no --tasks")
    tasks.add_argument("--task-seed", type=int, help="seed of the generated tasks (default: --seed)")
    tasks.add_argument("--task-split", default="train", choices=["train", "test", "all"], help="split generated tasks come from")
    fmt = p.add_argument_group("format and length")
    fmt.add_argument("--prompt-style", default="compact", choices=sorted(PROMPT_STYLES), help="prompt template (compact for tiny models)")
    fmt.add_argument(
        "--trace-style", choices=STYLES, help="full sentences or compact phrases (default: compact for --prompt-style compact)"
    )
    fmt.add_argument("--max-chars", type=int, help="longest completion in characters (compact default: 320)")
    fmt.add_argument("--max-dead-ends", type=int, help="failed paths a trace may show (full: 3, compact: 2)")
    fmt.add_argument("--min-dead-ends", type=int, help="failed paths a trace shows at least (default 1)")
    fmt.add_argument("--max-nodes", type=int, help="search steps before heading for the solution (default 40)")
    fmt.add_argument("--test-size", type=float, default=0.1, help="held-out share of the traces (0: train only)")
    llm = p.add_argument_group("LLM generator (--generator openai; key from OPENAI_API_KEY)")
    llm.add_argument("--generator", default="synthetic", choices=["synthetic", "openai"])
    llm.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    llm.add_argument("--model", help="model name for the endpoint")
    llm.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    llm.add_argument("--max-retries", type=int, default=3)
    llm.add_argument("--timeout", type=float, default=120.0, help="seconds per request attempt")
    llm.add_argument("--temperature", type=float, default=0.7)
    llm.add_argument("--max-tokens", type=int, default=2048)
    llm.add_argument(
        "--keep", default="all", choices=["all", "correct", "incorrect"], help="correctness filter on LLM traces (default: none)"
    )
    p.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="also push the traces (train and test splits) to this hub dataset repository (needs a login token)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_prime)


def _tasks(args: argparse.Namespace) -> tuple[list, dict]:
    from countdown_env.errors import UsageError
    from countdown_env.tasks import generate_tasks
    from runtime.hub import load_tasks

    if args.tasks is not None:
        return load_tasks(args.tasks), {"file": str(args.tasks)}
    if args.num < 1:
        raise UsageError(f"--num must be >= 1, got {args.num}")
    seed = args.seed if args.task_seed is None else args.task_seed
    split = None if args.task_split == "all" else args.task_split
    return generate_tasks(args.num, seed=seed, preset=args.task_preset, split=split), {
        "preset": args.task_preset,
        "num": args.num,
        "seed": seed,
        "split": split,
    }


def _prime(args: argparse.Namespace) -> int:
    from countdown_env.errors import UsageError, output_dir, output_file, user_input
    from countdown_env.rules import render_prompt
    from countdown_env.tasks import Task, preset_rules
    from priming.export import write_prime_output

    if args.incorrect_kind is not None and not args.incorrect:
        raise UsageError("--incorrect-kind needs --incorrect")
    if args.incorrect_kind is not None and args.generator != "synthetic":
        raise UsageError("--incorrect-kind applies to the synthetic generator only")
    output_dir(args.output_dir, "--output-dir")
    if args.tasks:  # an earlier prime's train.jsonl is a valid tasks file: it must not be rewritten while read
        for name in ("train.jsonl", "test.jsonl", "responses.jsonl", "metadata.json"):
            output_file(args.output_dir / name, "--output-dir", inputs=(args.tasks,))
    if args.push_to_hub:
        from runtime.hub import offline

        if offline():  # before the traces are written, not after
            raise UsageError(f"--push-to-hub {args.push_to_hub}: the hub is offline (HF_HUB_OFFLINE=1)")
    with user_input():
        kind = incorrect_kind_for(args.incorrect, args.incorrect_kind) if args.generator == "synthetic" else None
        rules = preset_rules(args.task_preset)
        # Fail before any work on a style prime cannot render (chat needs the model's tokenizer).
        if args.prompt_style != "chat":  # chat prompts are rendered by SFT with the model's tokenizer
            render_prompt(Task((1, 2), 3), args.prompt_style, rules)
        tasks, task_source = _tasks(args)
    metadata = {
        "condition": args.condition,
        "incorrect": args.incorrect,
        "incorrect_kind": kind,
        "seed": args.seed,
        "generator": args.generator,
    }
    metadata.update(prompt_style=args.prompt_style, tasks=task_source, rules_preset=args.task_preset)
    if args.generator == "synthetic":
        rows, more, status = *_synthetic_rows(args, tasks, rules, kind), 0
    else:
        rows, more, status = _llm_rows(args, tasks, rules)
    metadata = write_prime_output(rows, args.output_dir, {**metadata, **more}, test_size=args.test_size, seed=args.seed)
    if args.push_to_hub:
        _push(args.output_dir, args.push_to_hub)
    print(json.dumps({"output_dir": str(args.output_dir), **{k: metadata[k] for k in ("condition", "splits", "summary")}}, indent=2))
    return status


def _synthetic_rows(args: argparse.Namespace, tasks: list, rules: object, kind: str | None) -> tuple[list[dict], dict]:
    """The synthetic generator's rows (prompt added) and what metadata.json records about it."""
    from dataclasses import asdict

    from tqdm import tqdm

    from countdown_env.errors import user_input
    from priming.export import with_prompt
    from priming.traces import GENERATOR_VERSION, TraceConfig, generate_trace

    style = args.trace_style or ("compact" if args.prompt_style == "compact" else "full")
    given = {
        "max_chars": args.max_chars,
        "max_dead_ends": args.max_dead_ends,
        "min_dead_ends": args.min_dead_ends,
        "max_nodes": args.max_nodes,
    }
    with user_input():
        config = TraceConfig.for_style(style, **{k: v for k, v in given.items() if v is not None})
    bar = tqdm(tasks, desc=f"prime {args.condition}", file=sys.stderr, disable=args.quiet)
    traces = [
        generate_trace(
            task, args.condition, seed=args.seed, index=i, incorrect=args.incorrect, incorrect_kind=kind, config=config, rules=rules
        )
        for i, task in enumerate(bar)
    ]
    rows = [with_prompt(trace.to_dict(), args.prompt_style, rules) for trace in traces]
    return rows, {"generator_version": GENERATOR_VERSION, "trace_config": asdict(config)}


def _llm_rows(args: argparse.Namespace, tasks: list, rules: object) -> tuple[list[dict], dict, int]:
    """The LLM generator's rows (resumed from OUTPUT_DIR/responses.jsonl), metadata, and exit status (1: some requests failed)."""
    from countdown_env.errors import UsageError, user_input
    from priming.export import with_prompt
    from priming.llm import LLM_GENERATOR_VERSION, LLMConfig, config_dict, generate_llm_traces, read_rows, select_rows

    if not args.model:
        raise UsageError("--generator openai needs --model (and usually --base-url)")
    with user_input():
        config = LLMConfig(
            model=args.model,
            condition=args.condition,
            base_url=args.base_url,
            incorrect=args.incorrect,
            concurrency=args.concurrency,
            max_retries=args.max_retries,
            timeout=args.timeout,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            seed=args.seed,
            keep=args.keep,
        )
    replies = args.output_dir / "responses.jsonl"
    run = generate_llm_traces(tasks, config, replies, rules=rules)
    print(f"prime: {run.written} new replies, {run.skipped} resumed from {replies}, {run.failed} failed", file=sys.stderr)
    if run.failed:
        print(f"prime: {run.failed} requests failed after retries; run the same command again to retry only those", file=sys.stderr)
    rows = [with_prompt(row, args.prompt_style, rules) for row in select_rows(read_rows(replies), tasks, config.keep)]
    more = {"generator_version": LLM_GENERATOR_VERSION, "llm": config_dict(config), "complete": not run.failed}
    return rows, more, 1 if run.failed else 0


def _push(output_dir: Path, repo: str) -> None:
    from countdown_env.files import read_jsonl
    from runtime.hub import push_rows

    for split in ("train", "test"):
        if (output_dir / f"{split}.jsonl").exists():
            push_rows(read_jsonl(output_dir / f"{split}.jsonl"), repo, split=split)
