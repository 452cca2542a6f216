"""What the LLM judge's tests script the local server with: traces tagged ``TRACE-<i>`` and the counts trace i gets."""

from __future__ import annotations

import re

TRACE_ID = re.compile(r"TRACE-(\d+)")


def expected(i: int) -> dict[str, int]:
    """The counts the scripted server gives trace i (so a test can tell results apart)."""
    return {"verification": i % 3, "backtracking": i % 5, "subgoal_setting": i % 2, "backward_chaining": (i // 2) % 3}


def trace_id(request: dict) -> int:
    """The i of the trace a chat request asks about (from its last message)."""
    return int(TRACE_ID.search(request["messages"][-1]["content"]).group(1))  # type: ignore[union-attr]
