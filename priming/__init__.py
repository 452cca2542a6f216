"""Priming: synthetic reasoning traces with chosen behaviours, and traces from an LLM.

Pure Python at import time (no torch): `priming.sft` imports its heavy dependencies itself.
"""

from __future__ import annotations

from priming.conditions import BEHAVIORS, CONDITIONS, Condition, get_condition
from priming.search import SearchConfig, SearchResult, search
from priming.traces import GENERATOR_VERSION, INCORRECT_KINDS, Trace, TraceConfig, generate_trace, generate_traces

__all__ = [
    "BEHAVIORS",
    "CONDITIONS",
    "GENERATOR_VERSION",
    "INCORRECT_KINDS",
    "Condition",
    "SearchConfig",
    "SearchResult",
    "Trace",
    "TraceConfig",
    "generate_trace",
    "generate_traces",
    "get_condition",
    "search",
]
