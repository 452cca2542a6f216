"""countdown_env vs reasoning-gym's countdown, side by side in one run.

    nice -n 5 .venv/bin/python bench/env_bench.py [--copy-venv-from DIR] [--rg-python PATH]

Measures tasks generated per second (comparable configs: 3-4 numbers in 1..99, targets
1..100), completions scored per second (the same completions for both), the share of
exploit probes each scorer gives full reward, and solver timings. Prints a markdown
table and writes `bench/out/env_bench.json`.

reasoning-gym is not a dependency of this project: it lives in its own venv
(`bench/.venv-rg`, created on first run with `python3 -m venv` + `pip install
reasoning-gym`, or copied from `--copy-venv-from`), and its part runs in a subprocess of
that interpreter (this same file with `--rg-worker`), which answers in JSON. Each
exploit probe runs there in a forked child with a timeout, because reasoning-gym's
scorer evaluates the answer with sympy and some probes (`9**9**9`) do not return.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RG_VENV = HERE / ".venv-rg"
RG_VERSION = "0.1.25"  # the version measured; pinned so reruns compare like with like
PROBE_TIMEOUT_S = 10.0

# Comparable generation configs: reasoning-gym's CountdownConfig fields vs our tinyzero preset.
RG_CONFIG = {"min_numbers": 3, "max_numbers": 4, "min_value": 1, "max_value": 99, "min_target": 1, "max_target": 100}

# Exploit probes: (name, answer text or full completion, numbers, target). Every one is a
# wrong or illegal answer; "accepted" means the scorer gave it full reward. The first
# group is the list, the second reasoning-gym's own tests (tests/test_countdown.py),
# the third more of the same kind.
EXPLOITS: list[tuple[str, str, list[int], int]] = [
    ("power **", "2**3", [2, 3], 8),
    ("floor division //", "7//2", [7, 2], 3),
    ("modulo %", "7%4", [7, 4], 3),
    ("factorial !", "3!", [3], 6),
    ("sqrt()", "sqrt(4)", [4], 2),
    ("decimal 2.5*2 as 2,5,2", "2.5*2", [2, 5, 2], 5),
    ("float tolerance 1000001/1000", "1000001/1000", [1000001, 1000], 1000),
    ("hedging, several <answer> tags", "<answer>2+3</answer> or maybe <answer>2*3</answer>", [2, 3], 6),
    ("code __import__", "__import__('operator').add(3, 5)", [3, 5], 8),
    ("9**9**9 (must not hang)", "9**9**9", [9, 9, 9], 1),
    ("megabyte answer (must not hang)", "1+" * 500_000 + "1", [1, 1], 2),
    ("deep nesting (must not hang)", "(" * 100_000 + "1+1" + ")" * 100_000, [1, 1], 2),
    ("rg test: unused numbers 1*81", "1*81", [1, 1, 1, 81], 81),
    ("rg test: wrong value 6*34/11-1", "6*34/11-1", [6, 34, 1, 11], 17),
    ("rg test: wrong numbers 45+2", "45+2", [44, 3], 47),
    ("rg test: missing number 45+2+3", "45+2+3", [1, 45, 2, 3], 50),
    ("xor ^", "2^3", [2, 3], 1),
    ("function Abs()", "Abs(2-10)", [2, 10], 8),
    ("target itself", "8", [2, 4], 8),
    ("number used twice", "3*3", [3, 6], 9),
]


def completion_for(answer: str) -> str:
    """Wrap an answer like a model would, unless the probe is a whole completion."""
    return answer if "<answer>" in answer else f"<think>let me try</think>\n<answer>{answer}</answer>"


# ---- reasoning-gym side (runs under bench/.venv-rg's interpreter) ------------------------
def rg_worker(spec_path: str) -> None:
    from multiprocessing import get_context

    from reasoning_gym.games.countdown import CountdownConfig, CountdownDataset
    from reasoning_gym.utils import extract_answer

    spec = json.loads(Path(spec_path).read_text())
    out: dict[str, Any] = {}
    dataset = CountdownDataset(CountdownConfig(**RG_CONFIG, seed=0, size=spec["n_generate"]))

    start = time.perf_counter()
    items = [dataset[i] for i in range(spec["n_generate"])]
    out["generate_per_s"] = len(items) / (time.perf_counter() - start)
    out["generated"] = [{"numbers": it["metadata"]["numbers"], "target": it["metadata"]["target"]} for it in items[:5]]

    def score(text: str, numbers: list[int], target: int) -> float:
        return dataset.score_answer(extract_answer(text), {"metadata": {"numbers": numbers, "target": target}})

    rows = spec["completions"]
    start = time.perf_counter()
    rewards = [score(r["text"], r["numbers"], r["target"]) for r in rows]
    out["score_per_s"] = len(rows) / (time.perf_counter() - start)
    out["rewards"] = rewards

    def probe(conn: Any, text: str, numbers: list[int], target: int) -> None:
        t0 = time.perf_counter()
        try:
            conn.send({"reward": score(text, numbers, target), "seconds": time.perf_counter() - t0})
        except BaseException as err:  # report, don't hide: this is the scorer under test
            conn.send({"reward": None, "error": repr(err)[:200], "seconds": time.perf_counter() - t0})

    ctx = get_context("fork")  # children inherit the imported sympy: no re-import per probe
    out["probes"] = []
    for name, text, numbers, target in spec["probes"]:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=probe, args=(child, text, numbers, target))
        proc.start()
        if parent.poll(PROBE_TIMEOUT_S):
            result = parent.recv()
        else:
            result = {"reward": None, "error": f"timeout after {PROBE_TIMEOUT_S:.0f} s", "seconds": PROBE_TIMEOUT_S}
        proc.kill()
        proc.join()
        out["probes"].append({"name": name, **result})
    print(json.dumps(out))


def ensure_rg_python(copy_from: Path | None) -> Path:
    python = RG_VENV / "bin" / "python"
    if python.exists():
        return python
    if copy_from is not None:
        # A venv's interpreter finds its site-packages from pyvenv.cfg's location, so a
        # copied venv runs `python` fine (only console-script shebangs keep the old path).
        shutil.copytree(copy_from, RG_VENV, symlinks=True)
    else:
        subprocess.run(["python3", "-m", "venv", str(RG_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"reasoning-gym=={RG_VERSION}"], check=True)
    return python


def run_rg(python: Path, spec: dict[str, Any]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([str(python), __file__, "--rg-worker", f.name], capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"reasoning-gym worker failed:\n{done.stderr[-3000:]}")
        version = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('reasoning-gym'))"],
            capture_output=True,
            text=True,
            check=True,
        )
        return {**json.loads(done.stdout.strip().splitlines()[-1]), "version": version.stdout.strip()}
    finally:
        os.unlink(f.name)


# ---- our side -------------------------------------------------------------------------------
def make_completions(tasks: list[Any]) -> list[dict[str, Any]]:
    """A fixed mix: 1/5 correct, and wrong value, wrong numbers, malformed, no answer."""
    rows = []
    for i, task in enumerate(tasks):
        nums = [str(n) for n in task.numbers]
        kind = i % 5
        if kind == 0:
            answer = task.solution
        elif kind == 1:
            answer = " + ".join(nums)  # the sum: trivial tasks are filtered, so wrong
        elif kind == 2:
            answer = f"{nums[0]} + {nums[1]}"  # leaves numbers out
        elif kind == 3:
            answer = f"{task.solution} +"
        else:
            answer = None
        think = f"<think>Let me try {' and '.join(nums)} to get {task.target}.</think>\n"
        text = think + (f"<answer>{answer}</answer>" if answer is not None else "I give up.")
        rows.append({"text": text, "numbers": list(task.numbers), "target": task.target})
    return rows


def best_rate(fn: Any, n: int, repeats: int = 5) -> float:
    """Items per second of the fastest of `repeats` runs (least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def solver_timings() -> dict[str, Any]:
    from countdown_env import Rules, TaskConfig, generate_tasks, reachable, solve
    from countdown_env.solver import _reachable_cached

    out: dict[str, Any] = {}
    four = generate_tasks(500, seed=7, min_numbers=4, max_numbers=4)
    _reachable_cached.cache_clear()  # a cold cache: the first tasks of a run pay for it too
    times = [timed(solve, t.numbers, t.target)[1] for t in four]
    out["solve4_median_ms"] = statistics.median(times) * 1e3
    out["solve4_p95_ms"] = statistics.quantiles(times, n=20)[-1] * 1e3
    out["solve4_max_ms"] = max(times) * 1e3
    # Unsolvable 4-number tasks: the search must exhaust every tree.
    none_times = []
    for t in four[:200]:
        found, seconds = timed(solve, t.numbers, 10**6 + 7)
        assert found is None
        none_times.append(seconds)
    out["solve4_none_median_ms"] = statistics.median(none_times) * 1e3

    tv = TaskConfig.preset("classic").rules
    classic = (100, 75, 50, 25, 6, 3)
    out["classic_952_tv"], out["classic_952_tv_s"] = timed(solve, classic, 952, tv)
    out["classic_952_default"], out["classic_952_default_s"] = timed(solve, classic, 952, Rules())
    # A no-solution six-number game under TV rules: the first classic task's numbers and
    # the first target in 100..999 they cannot reach.
    numbers = generate_tasks(1, seed=0, preset="classic")[0].numbers
    values = reachable(numbers, tv)
    target = next((t for t in range(100, 1000) if t not in values), None)
    if target is None:  # rich numbers reach every target; fall back to a poor draw
        numbers, target = (1, 1, 2, 2, 3, 3), 997
    found, seconds = timed(solve, numbers, target, tv)
    assert found is None
    out["classic_none_tv"] = f"{' '.join(map(str, numbers))} -> {target}"
    out["classic_none_tv_s"] = seconds
    found, seconds = timed(solve, classic, 10**6 + 7, Rules())
    assert found is None
    out["classic_none_default_s"] = seconds
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rg-worker", help=argparse.SUPPRESS)
    parser.add_argument("--rg-python", type=Path, help="interpreter with reasoning-gym installed (default: bench/.venv-rg)")
    parser.add_argument("--copy-venv-from", type=Path, help="create bench/.venv-rg by copying this venv instead of pip-installing")
    parser.add_argument("--n-generate", type=int, default=5000, help="tasks generated by countdown_env (reasoning-gym: n/10)")
    parser.add_argument("--n-score", type=int, default=2000, help="completions scored by each scorer")
    args = parser.parse_args()
    if args.rg_worker:
        rg_worker(args.rg_worker)
        return 0

    sys.path.insert(0, str(HERE.parent))
    from countdown_env import Task, generate_tasks, score_response

    rg_python = args.rg_python or ensure_rg_python(args.copy_venv_from)

    # Our generation (the fastest of 3 fresh runs; generation has no cache to warm).
    n_ours = args.n_generate
    gen_rate = best_rate(lambda: generate_tasks(n_ours, seed=0, preset="tinyzero"), n_ours, repeats=3)

    tasks = generate_tasks(args.n_score, seed=1, preset="tinyzero")
    completions = make_completions(tasks)
    task_objs = [Task(tuple(r["numbers"]), r["target"]) for r in completions]
    ours = [score_response(r["text"], t) for r, t in zip(completions, task_objs, strict=True)]
    score_rate = best_rate(lambda: [score_response(r["text"], t) for r, t in zip(completions, task_objs, strict=True)], len(completions))

    probes = []
    for name, text, numbers, target in EXPLOITS:
        score, seconds = timed(score_response, completion_for(text), Task(tuple(numbers), target))
        probes.append({"name": name, "reward": score.reward, "outcome": score.outcome.value, "seconds": seconds})

    spec = {
        "n_generate": max(50, n_ours // 10),
        "completions": completions,
        "probes": [[name, completion_for(text), numbers, target] for name, text, numbers, target in EXPLOITS],
    }
    rg = run_rg(rg_python, spec)
    solver = solver_timings()

    rg_correct = [r == 1.0 for r in rg["rewards"]]
    our_correct = [s.correct for s in ours]
    agree = sum(a == b for a, b in zip(rg_correct, our_correct, strict=True))
    ours_accepted = [p["name"] for p in probes if p["reward"] >= 1.0]
    rg_accepted = [p["name"] for p in rg["probes"] if p["reward"] is not None and p["reward"] >= 1.0]
    rg_hangs = [p["name"] for p in rg["probes"] if "timeout" in str(p.get("error", ""))]
    load = os.getloadavg()

    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg": load},
        "ours": {"generate_per_s": gen_rate, "score_per_s": score_rate, "probes": probes, "accepted": ours_accepted},
        "reasoning_gym": {k: v for k, v in rg.items() if k != "rewards"} | {"accepted": rg_accepted, "hangs": rg_hangs},
        "agreement_on_correct": agree / len(completions),
        "n_correct": {"ours": sum(our_correct), "reasoning_gym": sum(rg_correct)},
        "solver": solver,
    }
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "env_bench.json").write_text(json.dumps(result, indent=2, default=str))

    n_probes = len(EXPLOITS)
    lines = [
        f"reasoning-gym {rg['version']} vs countdown_env; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs",
        "",
        "| Measure | countdown_env | reasoning-gym | Ratio | Goal |",
        "|---|---|---|---|---|",
        f"| Tasks generated / s (3-4 numbers in 1..99, targets 1..100) | {gen_rate:,.0f} | {rg['generate_per_s']:,.0f} | "
        f"{gen_rate / rg['generate_per_s']:,.0f}x | >= 30x |",
        f"| Completions scored / s ({len(completions)}, 1/5 correct) | {score_rate:,.0f} | {rg['score_per_s']:,.0f} | "
        f"{score_rate / rg['score_per_s']:,.0f}x | >= 10x |",
        f"| Exploit probes given full reward | {len(ours_accepted)}/{n_probes} | {len(rg_accepted)}/{n_probes} | | 0 |",
        f"| Probes still running after {PROBE_TIMEOUT_S:.0f} s | 0/{n_probes} (slowest {max(p['seconds'] for p in probes) * 1e3:.1f} ms) | {len(rg_hangs)}/{n_probes} | | 0 |",
        f"| Same verdict (correct or not) on the scored completions | {agree}/{len(completions)} | | | |",
        "",
        "| Solver | Time | Goal |",
        "|---|---|---|",
        f"| 4 numbers, generated tasks (500): median / p95 / max | {solver['solve4_median_ms']:.2f} / {solver['solve4_p95_ms']:.2f} / {solver['solve4_max_ms']:.2f} ms | median < 2 ms |",
        f"| 4 numbers, no solution (200): median | {solver['solve4_none_median_ms']:.2f} ms | |",
        f"| 100 75 50 25 6 3 -> 952, TV rules (`{solver['classic_952_tv']}`) | {solver['classic_952_tv_s'] * 1e3:.0f} ms | < 2 s |",
        f"| 100 75 50 25 6 3 -> 952, default rules (`{solver['classic_952_default']}`) | {solver['classic_952_default_s'] * 1e3:.0f} ms | < 2 s |",
        f"| {solver['classic_none_tv']}, TV rules, no solution | {solver['classic_none_tv_s'] * 1e3:.0f} ms | |",
        f"| 100 75 50 25 6 3 -> 1000007, default rules, no solution | {solver['classic_none_default_s']:.2f} s | |",
        "",
        "| Exploit probe | countdown_env | reasoning-gym |",
        "|---|---|---|",
    ]
    for mine, theirs in zip(probes, rg["probes"], strict=True):
        their = f"{theirs['reward']}" if theirs["reward"] is not None else theirs.get("error", "error")
        lines.append(f"| {mine['name']} | {mine['reward']} ({mine['outcome']}) | {their} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
