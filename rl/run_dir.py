"""Moved to `runtime.run_dir` (priming needs it too); re-exported so `rl.run_dir` imports keep working.

The JSONL helpers it used to define live in `runtime.jsonl`; `write_atomic` is `write_text_atomic`.
"""

from runtime.jsonl import append_jsonl, read_jsonl
from runtime.jsonl import write_text_atomic as write_atomic
from runtime.run_dir import CHECKPOINT, RunDir, publish_checkpoint, truncate_after

__all__ = ["CHECKPOINT", "RunDir", "append_jsonl", "publish_checkpoint", "read_jsonl", "truncate_after", "write_atomic"]
