"""Jobs in parallel processes, one thread each (pure Python until a job imports torch)."""

from __future__ import annotations

import multiprocessing
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
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, *call): call for call in calls}
        for future in as_completed(futures):
            future.result()
            print(f"== finished {what} {futures[future][1:]}", file=sys.stderr)
