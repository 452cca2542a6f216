"""Moved to `runtime.jsonl` (one JSONL reader for every package); `read_jsonl` is re-exported here."""

from runtime.jsonl import read_jsonl

__all__ = ["read_jsonl"]
