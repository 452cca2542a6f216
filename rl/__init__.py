"""rl package (work in progress)."""
