"""Seconds per PPO update of one organism RL step: one pass over the whole mini-batch vs length-sorted passes.

    OMP_NUM_THREADS=1 .venv/bin/python bench/update_passes_bench.py --model runs/priming-probe/seed0-none-6000x32-lr1e-3/sft/model

One step's 128 completions (16 organism train tasks x 8 at T=1, `ppo-organism`) are sampled once from `--model`;
then `rl.train.update` runs on that batch with `micro_batch_size` 0 (one forward/backward over all 128 rows,
padded to the longest) and with each value of `--micros` (passes of completions of similar length, each cut to
its own longest by `Batch.rows`), alternating A B A B so that load from other jobs hits every setting. Each
update starts from the same weights. Prints seconds per update (median over `--repeats`) and the speed-up.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time


def main() -> None:
    import torch

    from countdown_env import generate_tasks
    from lab.pipeline.presets import load_preset_dataclass
    from rl.config import PPOConfig
    from rl.setup import load_models, make_accelerator
    from rl.train import collect_rollouts, prepare_batch, update

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--micros", type=int, nargs="+", default=[32, 16])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_preset_dataclass("ppo", PPOConfig, "ppo-organism", {"model": args.model}, what="ppo")
    accelerator = make_accelerator(config)
    models = load_models(config, accelerator)
    start = copy.deepcopy(models.module.state_dict())
    tasks = generate_tasks(200, seed=0, preset="organism", split="train")
    torch.manual_seed(0)
    rollout = collect_rollouts(models, tasks, config, 1, 0, 1, accelerator)
    lengths = rollout.generation.response_mask.sum(1).float()
    print(f"completions: {len(lengths)}, length mean {lengths.mean():.0f}, max {lengths.max():.0f} tokens")
    settings = [0, *args.micros]
    times: dict[int, list[float]] = {m: [] for m in settings}
    for _ in range(args.repeats):
        for micro in settings:
            cfg = config.replace(micro_batch_size=micro)
            models.module.load_state_dict(start)
            models.optimizer.zero_grad()
            batch = prepare_batch(models, rollout, cfg, accelerator.device, accelerator)
            t0 = time.perf_counter()
            update(models, batch, cfg, accelerator, step=1)
            times[micro].append(time.perf_counter() - t0)
    base = statistics.median(times[0])
    for micro in settings:
        med = statistics.median(times[micro])
        name = "whole mini-batch" if micro == 0 else f"length-sorted passes of {micro}"
        print(f"{name:32s} {med:6.2f} s/update  ({base / med:.2f}x)  runs: {', '.join(f'{t:.2f}' for t in times[micro])}")


if __name__ == "__main__":
    main()
