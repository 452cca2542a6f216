"""Jobs in parallel processes, one thread each (pure Python until a job imports torch)."""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


def in_pool(jobs: int, calls: Sequence[tuple[Any, ...]], fn: Callable[..., Any], what: str) -> None:
    """`fn(*call)` for every call, in `jobs` processes; a failed call re-raises here.

    Processes are spawned, not forked: forking a process that has loaded torch can deadlock its
    thread pools. On 2 cores, two one-thread jobs beat one two-thread job."""
    if jobs == 1 or len(calls) == 1:
        for call in calls:
            print(f"== {what} {call[1:]}", file=sys.stderr)
            fn(*call)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=die_with_parent) as pool:
        futures = {pool.submit(fn, *call): call for call in calls}
        for future in as_completed(futures):
            future.result()
            print(f"== finished {what} {futures[future][1:]}", file=sys.stderr)


#: prctl option: the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a pool worker: end with the process that started it (Linux). Without it, killing an experiment leaves
    its workers training into run folders whose lock died with the parent, so a restarted experiment and an
    orphan write the same run (seen: an orphaned priming job wrote checkpoints into a run the restart had taken
    from the cache). Elsewhere a no-op: workers then end when their current job does."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
