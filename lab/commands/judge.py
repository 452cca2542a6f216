"""`countdown-lab classify` (and `countdown-lab frequencies`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from behavior_classifier.judge import MODES, PROTOCOLS


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="count the four reasoning behaviours in completions (heuristic or an OpenAI-compatible LLM judge)",
        description="Rows need 'text'; other fields are copied and 'behaviors' is added (null plus 'judge_error' when the "
        "judge fails); an input 'behaviors' field (e.g. a priming trace's counts) is kept as 'behaviors_input'. Re-running the same command resumes. The LLM judge's key comes from OPENAI_API_KEY only.",
    )
    p.add_argument(
        "input", type=Path, help="JSONL or parquet with a 'text' field per row (e.g. a run's rollouts.jsonl; veRL's N.jsonl dumps)"
    )
    _add_rollout_fields(p)
    p.add_argument("--output", "-o", type=Path, required=True, metavar="FILE", help="output JSONL (appended as results arrive; resumable)")
    p.add_argument("--judge", choices=("heuristic", "openai"), default=None, help="default: openai if --base-url is given, else heuristic")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM)")
    p.add_argument("--model", default="gpt-4o-mini", help="judge model name")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="json",
        help="'json' (fast): our definitions, one JSON reply per trace, malformed replies asked again then failed; 'study': "
        "as Gandhi et al. (2025), one request per behaviour, the count read from <count>N</count>, a reply without it counted as 0 "
        "(listed in 'judge_parse_failures'), no temperature sent",
    )
    p.add_argument("--mode", choices=MODES, default="all", help="json protocol: 'per_behavior' asks one JSON request per behaviour")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at most")
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds one HTTP request may take in all (a slow reply is abandoned and retried)"
    )
    p.add_argument("--max-retries", type=int, default=6, help="retries on 429/5xx/timeouts/connection errors (honours Retry-After)")
    p.add_argument("--malformed-retries", type=int, default=2, help="re-asks when a reply holds no valid counts")
    p.add_argument("--no-json-mode", action="store_true", help="do not send response_format=json_object")
    p.add_argument(
        "--cache", type=Path, default=None, metavar="FILE", help="SQLite cache of judge results (default: OUTPUT + '.cache.sqlite')"
    )
    p.add_argument("--no-cache", action="store_true", help="disable the on-disk cache")
    p.add_argument("--retry-failed", action="store_true", help="re-judge rows recorded as failures by an earlier run")
    p.add_argument(
        "--batch",
        action="store_true",
        help="submit through the OpenAI Batch API (half the price, results within 24 h); a re-run after a kill polls the same batch "
        "(its ids are kept in OUTPUT.batch.json)",
    )
    p.add_argument("--poll-interval", type=float, default=60.0, help="--batch: seconds between status checks of the batch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_classify)

    p = sub.add_parser("frequencies", help="behaviour frequencies per step (and condition) of classified rollouts")
    p.add_argument("inputs", type=Path, nargs="+", help="classified JSONL files (output of classify)")
    p.add_argument("--condition", action="append", default=None, help="condition name per input (default: the file's parent folder name)")
    p.add_argument("--output", "-o", type=Path, metavar="FILE", help="write the table as CSV here")
    p.add_argument("--plot", type=Path, metavar="FILE", help="write a PNG of frequencies vs step here")
    p.add_argument("--metric", choices=("avg", "share"), default="avg")
    _add_rollout_fields(p)
    p.set_defaults(func=_frequencies)


def _add_rollout_fields(p: argparse.ArgumentParser) -> None:
    """Where rows keep the completion and the step: veRL's rollout dumps (`trainer.rollout_data_dir`) write
    `output` (and `input`, `score`, `step`) to `N.jsonl` for step N."""
    p.add_argument("--text-field", default="text", metavar="NAME",
                   help="field holding the completion (default text; veRL's rollout dumps: output), copied to 'text'")  # fmt: skip
    p.add_argument("--step", type=int, default=None, metavar="N",
                   help="step of rows that carry none (default: the file's name when it is a number, as veRL's N.jsonl)")  # fmt: skip


def _classify(args: argparse.Namespace) -> int:
    from behavior_classifier.classify import classify_file
    from countdown_env.errors import UsageError, input_file, output_file

    input_file(args.input)
    # The output is appended to while the job runs, so it must not be the input (a kill would lose rows).
    output_file(args.output, "--output", inputs=(args.input,))
    judge_name = args.judge or ("openai" if args.base_url else "heuristic")
    config = _judge_config(args) if judge_name == "openai" else None
    rows = {"retry_failed": args.retry_failed, "progress": not args.quiet, "text_field": args.text_field, "step": args.step}
    if args.batch:
        if config is None:
            raise UsageError("--batch needs the LLM judge: give --base-url (e.g. https://api.openai.com/v1)")
        if not 0 < args.poll_interval < float("inf"):  # nan fails too
            raise UsageError(f"--poll-interval must be a finite number of seconds > 0, got {args.poll_interval}")
        from behavior_classifier.batch import classify_file_batch

        summary = classify_file_batch(args.input, args.output, config, poll_interval=args.poll_interval, **rows)
    else:
        if config is None:
            from behavior_classifier.heuristic import HeuristicJudge

            judge = HeuristicJudge()
        else:
            from behavior_classifier.client import LLMJudge

            judge = LLMJudge(config)  # a batch (above) keeps no result cache, so only here
        summary = classify_file(args.input, args.output, judge, **rows)
    print(summary.describe(), file=sys.stderr)
    print(f"wrote {args.output}")
    if summary.failed_total:
        print(
            f"classify: {summary.failed_total} of {summary.total} rows failed (null 'behaviors', see 'judge_error'); "
            "run the same command with --retry-failed to judge them again",
            file=sys.stderr,
        )
        return 1
    return 0


def _judge_config(args: argparse.Namespace) -> object:
    """The LLM judge's `JudgeConfig` from the flags (its cache beside the output unless --cache or --no-cache)."""
    from behavior_classifier.client import JudgeConfig
    from countdown_env.errors import UsageError, user_input

    if not args.base_url:
        raise UsageError("--judge openai needs --base-url, e.g. --base-url https://api.openai.com/v1 or http://localhost:8000/v1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cache = None if args.no_cache else (args.cache or args.output.with_name(args.output.name + ".cache.sqlite"))
    with user_input():
        return JudgeConfig(
            base_url=args.base_url,
            model=args.model,
            mode=args.mode,
            protocol=args.protocol,
            concurrency=args.concurrency,
            timeout=args.timeout,
            max_retries=args.max_retries,
            malformed_retries=args.malformed_retries,
            json_mode=not args.no_json_mode,
            cache_path=cache,
        )


def _frequencies(args: argparse.Namespace) -> int:
    import pandas as pd

    from behavior_classifier.frequencies import behavior_frequencies, plot_frequencies, read_classified
    from countdown_env.errors import UsageError, input_file, output_file, user_input

    if args.condition and len(args.condition) != len(args.inputs):
        raise UsageError(f"give one --condition per input ({len(args.inputs)}), or none")
    for path in args.inputs:
        input_file(path)
    # Before any work: neither output may replace a classified input (paid judge results) or the other output.
    if args.output:
        output_file(args.output, "--output", inputs=tuple(args.inputs))
    if args.plot:
        output_file(args.plot, "--plot", inputs=tuple(args.inputs) + ((args.output,) if args.output else ()))
        if args.plot.suffix.lower() != ".png":
            raise UsageError(f"--plot {args.plot}: the plot is a PNG; give a file name ending in .png")
        if args.output and args.plot.resolve() == args.output.resolve():
            raise UsageError(f"--plot {args.plot} is also --output; give each its own file")
    names = args.condition or [path.resolve().parent.name for path in args.inputs]
    with user_input():  # a line that is not JSON (countdown_env.files names file:line)
        frames = [read_classified(p, c, text_field=args.text_field, step=args.step) for p, c in zip(args.inputs, names, strict=True)]
    frame = behavior_frequencies(pd.concat(frames, ignore_index=True))
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(frame.drop(columns=[c for c in frame if c.startswith("total_")]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.output:
        from countdown_env.files import atomic_output

        with atomic_output(args.output) as f:
            frame.to_csv(f, index=False)
        print(f"wrote {args.output}")
    if args.plot:
        print(f"wrote {plot_frequencies(frame, args.plot, metric=args.metric)}")
    return 0
