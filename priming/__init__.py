"""priming package (work in progress)."""
