"""Shared runtime below priming and rl: models, generation, run directories, JSONL and config loading."""
