"""Moved to `runtime.generation` (priming needs it too); re-exported so `rl.generation` imports keep working."""

from runtime.generation import generate_completions

__all__ = ["generate_completions"]
