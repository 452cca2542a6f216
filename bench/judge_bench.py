"""Judge throughput and agreement: `python bench/judge_bench.py [--llm-traces N] [--concurrency N ...]`.

Prints (Markdown):
- traces/s of the heuristic judge over a mix of hand-written and priming traces (goal >= 2,000/s);
- traces/s of the LLM judge against a local OpenAI-compatible server that answers after 50 ms
  (`behavior_classifier/local_server.py`, the same server the tests use; goal >= 100/s at the default concurrency);
- precision/recall/F1 of the heuristic judge per behaviour on the hand-written gold set and on priming
  traces whose behaviour counts are known (full and compact styles, correct and incorrect answers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's packages, installed or not

from behavior_classifier.agreement import agreement, format_table, macro_f1  # noqa: E402
from behavior_classifier.behaviors import BEHAVIORS  # noqa: E402
from behavior_classifier.client import JudgeConfig, LLMJudge  # noqa: E402
from behavior_classifier.heuristic import HeuristicJudge  # noqa: E402
from behavior_classifier.local_server import OpenAIServer, Reply  # noqa: E402
from countdown_env import generate_tasks  # noqa: E402
from countdown_env.files import read_jsonl  # noqa: E402

HANDWRITTEN = REPO / "tests" / "behavior_classifier" / "data" / "handwritten_traces.jsonl"
REASONING_CONDITIONS = (
    "all_strategies",
    "only_backtracking",
    "backtracking_verification",
    "backtracking_backward",
    "backtracking_subgoal",
    "negative_control",
)


def handwritten() -> tuple[list[str], list[dict[str, int]]]:
    rows = read_jsonl(HANDWRITTEN)
    return [r["text"] for r in rows], [r["gold"] for r in rows]


def priming_traces(n_tasks: int, style: str, incorrect: bool) -> tuple[list[str], list[dict[str, int]]]:
    from priming import generate_traces
    from priming.traces import TraceConfig

    tasks = generate_tasks(n_tasks, seed=2025, preset="priming")
    texts, gold = [], []
    for condition in REASONING_CONDITIONS:
        for trace in generate_traces(tasks, condition, seed=11, incorrect=incorrect, config=TraceConfig.for_style(style)):
            texts.append(trace.text)
            gold.append(dict(trace.behaviors))
    return texts, gold


def bench_heuristic(texts: list[str], repeat_to: int) -> float:
    judge = HeuristicJudge()
    batch = (texts * (repeat_to // len(texts) + 1))[:repeat_to]
    start = time.perf_counter()
    judge.batch(batch)
    return len(batch) / (time.perf_counter() - start)


def bench_llm(n: int, concurrency: int, delay: float) -> tuple[float, int]:
    answer = json.dumps(dict.fromkeys(BEHAVIORS, 1))
    texts = [f"<think>trace {i}: 3 + 4 = 7, not 9. Let me try 3 * 4 = 12.</think>" for i in range(n)]
    with OpenAIServer(lambda request, k: Reply.ok(answer, delay=delay)) as server:
        judge = LLMJudge(JudgeConfig(base_url=server.base_url, model="bench", concurrency=concurrency, cache_path=None))
        start = time.perf_counter()
        results = judge.batch(texts)
        elapsed = time.perf_counter() - start
        requests = len(server.requests)
    if any(r.counts is None for r in results):
        raise RuntimeError("some bench requests failed")
    return n / elapsed, requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heuristic-traces", type=int, default=20_000)
    parser.add_argument("--llm-traces", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[JudgeConfig().concurrency, 32, 64])
    parser.add_argument("--delay", type=float, default=0.05, help="server reply delay (seconds)")
    parser.add_argument("--priming-tasks", type=int, default=200, help="tasks per condition for the agreement tables")
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-local")  # the local server ignores it

    hw_texts, hw_gold = handwritten()
    sets = {"hand-written (44 traces, tests/behavior_classifier/data)": (hw_texts, hw_gold)}
    for style in ("full", "compact"):
        for incorrect in (False, True):
            texts, gold = priming_traces(args.priming_tasks, style, incorrect)
            label = f"priming traces, style={style}, incorrect={incorrect} ({len(texts)} traces, 6 reasoning conditions)"
            sets[label] = (texts, gold)

    mix = [t for texts, _ in sets.values() for t in texts]
    mean_chars = sum(map(len, mix)) / len(mix)
    print(f"## heuristic judge throughput ({args.heuristic_traces} traces, mean {mean_chars:.0f} chars)")
    print(f"- {bench_heuristic(mix, args.heuristic_traces):,.0f} traces/s (one process, one core)")
    long_texts = [t for t in mix if len(t) >= 600] or mix
    print(f"- {bench_heuristic(long_texts, args.heuristic_traces // 4):,.0f} traces/s on traces of >= 600 chars")

    print(f"\n## LLM judge throughput (local server answering after {args.delay * 1000:.0f} ms, {args.llm_traces} traces, no cache)")
    for concurrency in args.concurrency:
        rate, requests = bench_llm(args.llm_traces, concurrency, args.delay)
        default = " (default)" if concurrency == JudgeConfig().concurrency else ""
        print(
            f"- concurrency {concurrency}{default}: {rate:,.0f} traces/s ({requests} requests; ceiling {concurrency / args.delay:,.0f}/s)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache.sqlite"
        texts = [f"cached trace {i}" for i in range(args.llm_traces)]
        with OpenAIServer(lambda request, k: Reply.ok(json.dumps(dict.fromkeys(BEHAVIORS, 0)), delay=args.delay)) as server:
            config = JudgeConfig(base_url=server.base_url, model="bench", cache_path=cache)
            LLMJudge(config).batch(texts)
            start = time.perf_counter()
            LLMJudge(config).batch(texts)
            rate = len(texts) / (time.perf_counter() - start)
            print(f"- re-run from the sqlite cache: {rate:,.0f} traces/s, {len(server.requests) - len(texts)} new requests")

    judge = HeuristicJudge()
    for label, (texts, gold) in sets.items():
        table = agreement(gold, judge.batch(texts))
        print(f"\n## heuristic agreement: {label}: macro-F1 {macro_f1(table):.2f}\n")
        print(format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
